"""How early can a latency-coded Fashion-MNIST classifier decide? An information bound for issue 12's decision target.

For every step k of the contract's latency code (``bsnn_hw.contract.latency_step``: bright pixels first), a float
MLP (784-H-10, ReLU, Adam with cosine decay; not binary, not spiking) is trained on exactly the input that has
arrived by the end of step k: an arrived pixel's feature is how long ago it spiked, (k + 1 - t) / (k + 1), every
other pixel 0. Its test accuracy is what any network could hope for when every image must decide at step k.

A network with a first-spike readout decides early on some images and late on others. The anytime policy models an
ideal one: each image decides at the first step k whose MLP is at least c confident (softmax), or at the last step.
For each limit L on the median decision step, c is chosen on a held-out part of the training split (10,000 images,
never trained on) for the best accuracy there with median <= L; the table gives that policy's test accuracy and test
median. The BSTDG network's own frontier (its thresholds moved, docs/experiments/bstdg.md) is far below this one: the
policy is the ceiling, not a prediction.

    .venv/bin/python bench/decision_bound.py                      # T=32, 784-600-10 MLPs, 15 epochs (~7 min, 2 threads)
    .venv/bin/python bench/decision_bound.py --epochs 2 --steps 4,10,31   # a quick look
    .venv/bin/python bench/decision_bound.py --weights binary     # the same with +-1 weights (BinaryLinear)

``--weights binary`` asks how much of the bound survives binary weights alone: each MLP's two layers have +-1 weights
times one learned scale (activations, biases and the softmax stay real), trained as BinaryConnect.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from bsnn_hw.contract import latency_step
from bsnn_hw.data import load_dataset

HELD_OUT = 10_000


def arrived(t: np.ndarray, k: int) -> torch.Tensor:
    """The input arrived by the end of step k: (k + 1 - t) / (k + 1) for a pixel that spiked at t <= k, else 0."""
    return torch.from_numpy(np.where((t >= 0) & (t <= k), k + 1 - t, 0).astype(np.float32) / (k + 1))


class BinaryLinear(torch.nn.Linear):
    """+-1 weights (the sign of a latent real weight, straight-through gradient, latent clipped to [-1, 1] as in
    BinaryConnect) times one learned scale per layer; the bias stays real."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__(n_in, n_out)
        self.scale = torch.nn.Parameter(torch.tensor(n_in ** -0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight + (torch.sign(self.weight) - self.weight).detach()
        return torch.nn.functional.linear(x, w * self.scale, self.bias)


def train_mlp(x: torch.Tensor, y: torch.Tensor, hidden: int, epochs: int, seed: int,
              binary: bool = False) -> torch.nn.Module:
    torch.manual_seed(seed)
    lin = BinaryLinear if binary else torch.nn.Linear
    net = torch.nn.Sequential(lin(x.shape[1], hidden), torch.nn.ReLU(), lin(hidden, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    batches = (len(y) + 127) // 128
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * batches)
    for _ in range(epochs):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 128):
            b = perm[i:i + 128]
            loss = torch.nn.functional.cross_entropy(net(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if binary:
                with torch.no_grad():
                    for m in net:
                        if isinstance(m, BinaryLinear):
                            m.weight.clamp_(-1, 1)
    return net


def anytime(conf: np.ndarray, correct: np.ndarray, steps: list, c: float) -> tuple[float, float]:
    """(accuracy, median decision step) when each image decides at the first step with confidence >= c.
    ``conf``, ``correct``: (K, N) per step; the last step decides every image still undecided."""
    hit = conf >= c
    hit[-1] = True
    first = hit.argmax(0)
    return float(correct[first, np.arange(conf.shape[1])].mean()), float(np.median(np.asarray(steps)[first]))


# the confidence levels c tried: a coarse grid, and finely near 1
CANDIDATES = np.unique(np.concatenate([np.linspace(0.1, 1.0, 91), 1 - np.logspace(-6, -1, 60)]))


def best_confidence(conf: np.ndarray, correct: np.ndarray, steps: list, limit: float):
    """(accuracy, c) of the level c in :data:`CANDIDATES` with the best :func:`anytime` accuracy whose median decision
    step is <= ``limit`` (the first such c among equals); None when no c reaches the limit."""
    best = None
    for c in CANDIDATES:
        acc, med = anytime(conf, correct, steps, c)
        if med <= limit and (best is None or acc > best[0]):
            best = (acc, c)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-T", "--timesteps", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--steps", help="steps k to train an MLP for, comma separated (default: every step 0..T-1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", choices=("float", "binary"), default="float",
                    help="the MLPs' weights: real, or +-1 times a learned scale per layer")
    args = ap.parse_args(argv)
    if args.timesteps < 1 or args.hidden < 1 or args.epochs < 1 or args.threads < 1:
        ap.error("-T, --hidden, --epochs and --threads must be >= 1")
    T = args.timesteps
    try:
        steps = (sorted({int(s) for s in args.steps.split(",")}) if args.steps else list(range(T)))
    except ValueError:
        ap.error(f"--steps must be integers separated by commas, not {args.steps!r}")
    if steps[0] < 0 or steps[-1] != T - 1:
        ap.error(f"--steps must lie in 0..{T - 1} and include the last step {T - 1} (where every image decides)")
    torch.set_num_threads(args.threads)

    xtr, ytr = load_dataset("fashion-mnist", "train")
    xte, yte = load_dataset("fashion-mnist", "test")
    ttr, tte = latency_step(xtr.reshape(len(xtr), -1), T), latency_step(xte.reshape(len(xte), -1), T)
    perm = np.random.default_rng(args.seed).permutation(len(ytr))
    fit, val = perm[HELD_OUT:], perm[:HELD_OUT]
    y_fit = torch.from_numpy(ytr[fit].astype(np.int64))
    print(f"# latency code, T={T}; a {args.weights}-weight 784-{args.hidden}-10 MLP per step on the input arrived by "
          f"then, "
          f"{args.epochs} epochs on {len(fit):,} training images; {HELD_OUT:,} held out", flush=True)
    print("| step k | pixels arrived / image | test accuracy deciding every image at k | s |")
    print("|---:|---:|---:|---:|")
    conf = {"val": [], "test": []}
    correct = {"val": [], "test": []}
    for k in steps:
        t0 = time.perf_counter()
        x = arrived(ttr, k)
        net = train_mlp(x[fit], y_fit, args.hidden, args.epochs, args.seed, binary=args.weights == "binary")
        with torch.no_grad():
            for split, xs, ys in (("val", x[val], ytr[val]), ("test", arrived(tte, k), yte)):
                p = torch.softmax(net(xs), 1).numpy()
                conf[split].append(p.max(1))
                correct[split].append(p.argmax(1) == ys)
        n_arrived = ((tte >= 0) & (tte <= k)).sum(1).mean()
        print(f"| {k} | {n_arrived:.0f} | {100 * correct['test'][-1].mean():.2f}% | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)
    cv, kv = np.stack(conf["val"]), np.stack(correct["val"])
    ct, kt = np.stack(conf["test"]), np.stack(correct["test"])
    print("\n| median decision step <= | c (held out) | held-out accuracy | test accuracy | test median step | "
          "test images deciding at the last step |")
    print("|---:|---:|---:|---:|---:|---:|")
    limits = sorted({max(0, T // 8), T // 4, T // 3, T // 2, T - 1})
    for lim in limits:
        best = best_confidence(cv, kv, steps, lim)
        if best is None:
            print(f"| {lim} | - | no threshold reaches it | | | |")
            continue
        acc, c = best
        tacc, tmed = anytime(ct, kt, steps, c)
        last = ~(ct[:-1] >= c).any(0)          # no earlier step was confident enough
        print(f"| {lim}{' (T/3)' if lim == T // 3 else ''} | {c:.6f} | {100 * acc:.2f}% | {100 * tacc:.2f}% | "
              f"{tmed:g} | {100 * last.mean():.1f}% |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
