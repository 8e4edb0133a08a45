"""Reading MNIST's gzipped IDX files, shared by the peer scripts beside it."""
import gzip

import numpy as np


def idx(path):
    """The array stored in a gzipped IDX file (uint8 data, big-endian dimensions)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
