"""How early could a readout of a trained BSTDG network's hidden layer decide? A reference for issue 12's targets.

`bench/decision_bound.py` asks what the latency-coded *input* allows. This bench asks the same of a trained
network's last hidden layer: its spikes are all the output layer ever sees. For every step t, the features are the
hidden neurons that have fired by the end of t (the contract's fire-once spikes of the exported integer network).
A real-valued linear softmax readout per step (its own weights and bias at every step) is trained by cross-entropy
on 50,000 training images; the ideal anytime policy decides each image at the first step whose softmax
is at least c confident, or at the last step; c is chosen on the 10,000 held-out training images for the best
accuracy with a median decision step <= L. A reference for the network's own readout, not a proof: the +-1 output
layer's membrane is a linear function of the same features, but its first crossing also depends on the path there,
which these readouts do not see.

    .venv/bin/python bench/readout_bound.py --model out/bench_bstdg.bsnn      # ~3 min on one thread
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from pathlib import Path

from bsnn_hw import artifact
from bsnn_hw.data import load_dataset
from bsnn_hw.train import bstdg

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/ is not a package
from decision_bound import HELD_OUT, anytime, best_confidence  # noqa: E402


def hidden_times(net, x: np.ndarray, batch: int = 2000) -> torch.Tensor:
    """The last hidden layer's spike steps (N, n) (T: none) of the integer network ``net`` on images ``x``."""
    out = []
    for i in range(0, len(x), batch):
        t = bstdg.input_times(torch.from_numpy(x[i:i + batch]), net.timesteps)
        for layer in net.layers[:-1]:
            w = torch.from_numpy(np.asarray(layer.weights).astype(np.float32) * 2 - 1)
            th = torch.from_numpy(np.asarray(layer.threshold).astype(np.float32))
            t = bstdg.first_spikes(bstdg.membrane_of(t, w, net.timesteps), th)
        out.append(t.to(torch.int16))
    return torch.cat(out)


def check_network(net, path: str) -> None:
    """Refuse (SystemExit, one line) a network that is not a BSTDG one with a hidden layer."""
    ok = (net.encoding == "latency" and net.readout == "first" and len(net.layers) >= 2
          and all(layer.kind == "dense" and layer.weight_bits == 1 and layer.leak_shift is None and layer.fire_once
                  for layer in net.layers))
    if not ok:
        raise SystemExit(f"error: {path} is not a BSTDG network (latency code, 'first' readout, binary IF fire-once "
                         f"dense layers, at least one hidden layer)")


def load_network_and_data(path: str):
    """The BSTDG network at ``path`` and Fashion-MNIST: (net, x_train, y_train, x_test, y_test), images flattened;
    SystemExit (one line) for a model that does not load, is not a BSTDG network or does not take 784 inputs."""
    try:
        net = artifact.load(path)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    check_network(net, path)
    xtr, ytr = load_dataset("fashion-mnist", "train")
    xte, yte = load_dataset("fashion-mnist", "test")
    xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    if xtr.shape[1] != net.layers[0].n_in:
        raise SystemExit(f"error: {path} takes {net.layers[0].n_in} inputs, Fashion-MNIST has {xtr.shape[1]}")
    return net, xtr, ytr, xte, yte


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a BSTDG model (.bsnn) trained on fashion-mnist")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.threads < 1:
        ap.error("--epochs and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    net, xtr, ytr, xte, yte = load_network_and_data(args.model)
    T = net.timesteps
    t0 = time.perf_counter()
    htr, hte = hidden_times(net, xtr), hidden_times(net, xte)
    n = htr.shape[1]
    perm = torch.from_numpy(np.random.default_rng(args.seed).permutation(len(ytr)))
    fit, val = perm[HELD_OUT:], perm[:HELD_OUT]
    ytr_t = torch.from_numpy(ytr.astype(np.int64))
    steps = torch.arange(T)
    w = torch.nn.Parameter(torch.zeros(T, 10, n))
    bias = torch.nn.Parameter(torch.zeros(T, 10))

    def logits(h):
        fired = (h.long()[:, None, :] <= steps[None, :, None]).float()                         # (B, T, n)
        return torch.einsum("btn,tcn->btc", fired, w) + bias                                  # (B, T, 10)

    opt = torch.optim.Adam([w, bias], lr=3e-3)
    for epoch in range(args.epochs):
        order = fit[torch.randperm(len(fit))]
        for i in range(0, len(order), 256):
            b = order[i:i + 256]
            loss = F.cross_entropy(logits(htr[b]).reshape(-1, 10), ytr_t[b].repeat_interleave(T))
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        def probs(h):
            return torch.cat([F.softmax(logits(h[i:i + 1000]), -1) for i in range(0, len(h), 1000)]).numpy()
        pv, pt = probs(htr[val]), probs(hte)
    yv = ytr[val.numpy()]
    # (T, N) per step: confidence and correctness
    cv, kv = pv.max(-1).T, (pv.argmax(-1) == yv[:, None]).T
    ct, kt = pt.max(-1).T, (pt.argmax(-1) == yte[:, None]).T
    print(f"# {args.model}: {n} hidden neurons, {float((hte < T).sum(1).float().mean()):.0f} hidden spikes per test "
          f"image, T={T}; a linear softmax readout per step of the hidden spikes fired by then, {args.epochs} "
          f"epochs on {len(fit):,} training images, {HELD_OUT:,} held out ({time.perf_counter() - t0:.0f} s)")
    shown = sorted({k for k in (4, 8, 10, 12, 16, 20, 24) if k < T} | {T - 1})
    print("| step t | " + " | ".join(str(k) for k in shown) + " |")
    print("|---|" + "---:|" * len(shown))
    print("| test accuracy deciding every image at t | " + " | ".join(f"{100 * kt[k].mean():.2f}%" for k in shown)
          + " |")
    print("\n| median decision step <= (held out) | c | held-out accuracy | test accuracy | test median step | "
          "test images deciding at the last step |")
    print("|---:|---:|---:|---:|---:|---:|")
    for lim in sorted({T // 4, T // 3 - 1, T // 3, T // 2, T - 1}):
        best = best_confidence(cv, kv, list(range(T)), lim)
        if best is None:
            print(f"| {lim} | - | no threshold reaches it | | | |")
            continue
        acc, c = best
        tacc, tmed = anytime(ct, kt, list(range(T)), c)
        last = ~(ct[:-1] >= c).any(0)
        print(f"| {lim} | {c:.6f} | {100 * acc:.2f}% | {100 * tacc:.2f}% | {tmed:g} | {100 * last.mean():.1f}% |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
