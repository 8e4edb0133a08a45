"""The `resnet` workload of `cargo xtask bench` in PyTorch, for an A/B in one window.

DESIGN.md's residual convnet — Conv2D(32, 3, same, relu); a residual block of two
3x3/32 convolutions (no bias) with BatchNormalization; ReLU; a strided block (3x3/64
stride 2 relu, 3x3/64) with a 1x1 stride-2 projection shortcut; global average pooling;
Dense(10) — batch 128, Adam(1e-3), cross-entropy, shuffled, on the first N training
images (default 12,800), 2 epochs; prints the seconds of each epoch and the steady
(second) epoch scaled to 60,000 images. `channels_last` uses PyTorch's NHWC memory
format (its fastest on CPU for this network). Uses the same IDX files as kiln.

    python3 benches/peers/resnet_pytorch.py [path/to/mnist] [threads] [images] [channels_last|contiguous]
"""
import sys
import time

from mnist_idx import idx
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 32, 3, padding="same")
        self.a1 = nn.Conv2d(32, 32, 3, padding="same", bias=False)
        self.bn1 = nn.BatchNorm2d(32, eps=1e-3, momentum=0.01)
        self.a2 = nn.Conv2d(32, 32, 3, padding="same", bias=False)
        self.bn2 = nn.BatchNorm2d(32, eps=1e-3, momentum=0.01)
        # Keras's "same" with stride 2 on an even size pads bottom/right only.
        self.b1 = nn.Conv2d(32, 64, 3, stride=2)
        self.b2 = nn.Conv2d(64, 64, 3, padding="same")
        self.short = nn.Conv2d(32, 64, 1, stride=2)
        self.out = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = self.bn2(self.a2(torch.relu(self.bn1(self.a1(x)))))
        x = torch.relu(x + y)
        y = self.b2(torch.relu(self.b1(nn.functional.pad(x, (0, 1, 0, 1)))))
        x = y + self.short(x)
        return self.out(x.mean((2, 3)))


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets/mnist"
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 12800
    layout = sys.argv[4] if len(sys.argv) > 4 else "channels_last"
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    x = torch.tensor(idx(f"{root}/train-images-idx3-ubyte.gz")[:n], dtype=torch.float32) / 255.0
    x = x.unsqueeze(1).contiguous(memory_format=fmt)
    y = torch.tensor(idx(f"{root}/train-labels-idx1-ubyte.gz")[:n], dtype=torch.long)
    net = Net().to(memory_format=fmt)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        order = torch.randperm(n)
        for i in range(0, n, 128):
            b = order[i : i + 128]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x[b].contiguous(memory_format=fmt)), y[b])
            loss.backward()
            opt.step()
        seconds.append(time.perf_counter() - start)
    print(
        f"pytorch {torch.__version__} threads={threads} layout={layout} images={n} "
        f"epochs_s={[round(s, 3) for s in seconds]} steady_epoch_s={seconds[-1]:.3f} "
        f"epoch_s_60k={seconds[-1] * 60000 / n:.1f}"
    )


if __name__ == "__main__":
    main()
