"""The `lstm` workload of `cargo xtask bench` in PyTorch, for an A/B in one window.

LSTM(128) -> Dense(10) over MNIST rows (each image as 28 steps of 28 pixels), batch
128, Adam(1e-3), cross-entropy, shuffled, 2 epochs on the 60,000 training images;
prints each epoch's seconds, the steady (second) epoch, test accuracy and the time to
predict the 10,000 test images. Uses the same IDX files as kiln.

    python3 benches/peers/lstm_pytorch.py [path/to/mnist] [threads]
"""
import sys
import time

from mnist_idx import idx
import torch


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets/mnist"
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    x = torch.tensor(idx(f"{root}/train-images-idx3-ubyte.gz"), dtype=torch.float32) / 255.0
    y = torch.tensor(idx(f"{root}/train-labels-idx1-ubyte.gz"), dtype=torch.long)
    xt = torch.tensor(idx(f"{root}/t10k-images-idx3-ubyte.gz"), dtype=torch.float32) / 255.0
    yt = torch.tensor(idx(f"{root}/t10k-labels-idx1-ubyte.gz"), dtype=torch.long)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(28, 128, batch_first=True)
            self.out = torch.nn.Linear(128, 10)

        def forward(self, v):
            _, (h, _) = self.lstm(v)
            return self.out(h[-1])

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        order = torch.randperm(x.shape[0])
        for i in range(0, x.shape[0], 128):
            b = order[i : i + 128]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x[b]), y[b])
            loss.backward()
            opt.step()
        seconds.append(time.perf_counter() - start)
    with torch.no_grad():
        start = time.perf_counter()
        pred = torch.cat([net(xt[i : i + 128]) for i in range(0, xt.shape[0], 128)])
        predict_s = time.perf_counter() - start
    acc = (pred.argmax(1) == yt).float().mean().item()
    print(
        f"pytorch {torch.__version__} threads={threads} epochs_s={[round(s, 3) for s in seconds]} "
        f"steady_epoch_s={seconds[-1]:.3f} test_acc={acc:.4f} predict_10k_s={predict_s:.3f}"
    )


if __name__ == "__main__":
    main()
