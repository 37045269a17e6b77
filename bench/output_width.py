"""How much do wider output weights buy a BSTDG network at a decision budget? A reference for issue 12's targets.

The package's BSTDG output layer is +-1. This bench keeps a trained network's hidden layers (the exported integer
ones) and refits its output layer by the package's anytime readout fit (`bstdg.fit_output`: `bstdg.readout_loss`,
scale 4, Adam, from the exported +-1 weights and thresholds) with **real-valued** weights and thresholds; then quantises that fit after
training to k-bit integers: weights and thresholds times one layer scale s = (2^(k-1) - 1) / max|w|, rounded (a
first crossing does not change under a common scale). Each output layer is calibrated the same way: the one common
shift of its thresholds with the most training images right at a training median decision step <= L (a silent
output counts as T), then scored on the test images. A k-bit row is the exact integer network of the contract
(a k-bit dense last layer, its M wide enough that the membrane never saturates); `--out PREFIX` writes it as
PREFIX-<k>bit.bsnn for golden and the RTL.

    .venv/bin/python bench/output_width.py --model out/h1200s0.bsnn --budget 10    # ~4 min on one thread

The +-1 row with a common shift only is simpler than the package's calibration (no per-class moves), so it can
differ from the export's own figure by a few tenths.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bsnn_hw import artifact, contract
from bsnn_hw.network import Layer, Network
from bsnn_hw.train import bstdg

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/ is not a package
from bstdg_targets import targets_met  # noqa: E402
from readout_bound import hidden_times, load_network_and_data  # noqa: E402

SCALE = 4.0          # the readout loss's membrane steps per unit of log odds (the package's default)
REAL_SHIFTS = 801    # shifts tried for the real-valued layer, evenly over +-max|V - theta|


def membranes(t_in: torch.Tensor, w: torch.Tensor, steps: int) -> torch.Tensor:
    """Output membranes (N, T, n_out) before any reset, from hidden spike steps ``t_in`` through weights ``w``."""
    return torch.cat([bstdg.membrane_of(t_in[i:i + 2000].long(), w, steps) for i in range(0, len(t_in), 2000)])


def best_shift(v: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, shifts, steps: int, budget: int):
    """The shift u (of ``shifts``) of all thresholds with the most right among (v, y) at a median decision step
    <= ``budget`` (ties: the first); None when none reaches the budget."""
    right, hist = bstdg._scan_outputs(v, y, theta, shifts, steps)
    med = torch.tensor([bstdg._median_step(h) for h in hist])
    ok = med <= budget
    if not bool(ok.any()):
        return None
    return shifts[int(torch.where(ok, right, torch.full_like(right, -1)).argmax())]


def score(v: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, steps: int) -> dict:
    """Accuracy (fraction), median decision step and fallback fraction of the first-spike readout of ``v``."""
    right, hist = bstdg._scan_outputs(v, y, theta, [0], steps)
    return {"accuracy": int(right[0]) / len(y), "median": bstdg._median_step(hist[0]),
            "fallback": int(hist[0][-1]) / len(y)}


def quantise(w: torch.Tensor, theta: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """k-bit integer weights and integer thresholds of a real layer (one scale s = (2^(k-1) - 1) / max|w|), and the
    membrane width M whose range holds every membrane (n_in * (2^(k-1) - 1)), at least 16."""
    top = 2 ** (bits - 1) - 1
    s = top / float(w.abs().max())
    wq = (w * s).round().clamp(-top, top)
    need = w.shape[1] * top
    m = max(16, next(m for m in range(2, contract.MEMBRANE_BITS_MAX + 1) if contract.membrane_range(m)[1] >= need))
    return wq, (theta * s).round(), m


def k_bit_network(net: Network, wq: torch.Tensor, theta: torch.Tensor, bits: int, m: int) -> Network:
    """``net`` with its output layer replaced by the k-bit IF fire-once layer (wq, theta), M = ``m``."""
    hi = contract.membrane_range(m)[1]
    th = theta.round().to(torch.int64)
    if bool((th < 1).any()) or bool((th > hi).any()):
        raise ValueError(f"a {bits}-bit output threshold of {int(th.min())}..{int(th.max())} is outside 1..{hi}")
    last = Layer(wq.to(torch.int64).numpy(), th.numpy(), None, "subtract", m, True, weight_bits=bits)
    return Network([*net.layers[:-1], last], net.timesteps, "first", "latency", seed=net.seed,
                   metadata={**net.metadata, "output_width": f"{bits}-bit, bench/output_width.py"})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a BSTDG model (.bsnn) trained on fashion-mnist")
    ap.add_argument("--budget", type=int, help="median decision step on the training images (default: T // 3)")
    ap.add_argument("--bits", default="6,8", help="comma-separated output weight widths, 2..8 (default 6,8)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.01, help="Adam lr of the real-valued weights")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write each k-bit network as OUT-<k>bit.bsnn")
    args = ap.parse_args(argv)
    try:
        bits = [int(b) for b in args.bits.split(",")]
    except ValueError:
        ap.error(f"--bits takes comma-separated integers, not {args.bits!r}")
    if any(not 2 <= b <= 8 for b in bits) or len(set(bits)) != len(bits):
        ap.error(f"--bits takes distinct widths in 2..8 (contract v2's k-bit weights), not {args.bits!r}")
    if args.epochs < 1 or args.threads < 1 or not args.lr > 0:
        ap.error("--epochs and --threads must be >= 1 and --lr > 0")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    net, xtr, ytr, xte, yte = load_network_and_data(args.model)
    T = net.timesteps
    budget = T // 3 if args.budget is None else args.budget
    if not 0 <= budget < T:
        ap.error(f"--budget must be a step in 0..{T - 1}, not {budget}")
    t0 = time.perf_counter()
    htr, hte = hidden_times(net, xtr), hidden_times(net, xte)
    ytr_t, yte_t = torch.from_numpy(ytr.astype(np.int64)), torch.from_numpy(yte.astype(np.int64))
    out = net.layers[-1]
    w_sign = torch.from_numpy(contract.bit_to_weight(out.weights).astype(np.float32))
    th_sign = torch.from_numpy(np.broadcast_to(out.threshold, (out.n_out,)).astype(np.float32).copy())
    rows = []

    def row(name, w, theta, shifts):
        """Calibrate one output layer (its best shift at the budget) and score it; the shifted thresholds, or None."""
        vtr, vte = membranes(htr, w, T), membranes(hte, w, T)
        u = best_shift(vtr, ytr_t, theta, shifts, T, budget)
        if u is None:
            rows.append((name, None, None))
            return None
        theta = theta + u
        rows.append((name, score(vtr, ytr_t, theta, T), score(vte, yte_t, theta, T)))
        return theta

    def integer_shifts(w, theta):
        """Integer shifts keeping every threshold >= 1, up to past the largest membrane (nothing fires)."""
        top = int(membranes(htr[:2000], w, T).abs().max()) + 1
        return list(range(1 - int(theta.min()), top - int(theta.min()) + 1))

    row("+-1", w_sign, th_sign, integer_shifts(w_sign, th_sign))
    w_real, th_real = bstdg.fit_output(htr, ytr_t, w_sign, th_sign, T, args.epochs, SCALE, args.lr,
                                       lambda epoch: args.seed * 1000 + epoch, binary=False)
    s = float((membranes(htr, w_real, T) - th_real).abs().max())
    row("real-valued", w_real, th_real, torch.linspace(-s, s, REAL_SHIFTS).tolist())
    for k in bits:
        wq, thq, m = quantise(w_real, th_real, k)
        theta = row(f"{k}-bit", wq, thq, integer_shifts(wq, thq))
        if theta is not None and args.out:
            path = f"{args.out}-{k}bit.bsnn"
            try:
                artifact.save(k_bit_network(net, wq, theta, k, m), path)
            except (OSError, ValueError) as e:
                raise SystemExit(f"error: {path}: {e}")
            print(f"wrote {path} (M = {m} on the output layer)")
    print(f"# {args.model}: {htr.shape[1]} hidden neurons, T = {T}; output layers calibrated by one threshold "
          f"shift at a training median <= {budget}; readout loss fit {args.epochs} epochs "
          f"({time.perf_counter() - t0:.0f} s)")
    print("| output weights | training images right (median) | test accuracy | test median step | fallback | "
          "both targets |")
    print("|---|---|---|---|---|---|")
    for name, tr, te in rows:
        if tr is None:
            print(f"| {name} | no shift reaches the budget | | | | |")
            continue
        both = all(targets_met(te["accuracy"], te["median"], T))
        print(f"| {name} | {100 * tr['accuracy']:.2f}% ({tr['median']:g}) | {100 * te['accuracy']:.2f}% | "
              f"{te['median']:g} | {100 * te['fallback']:.2f}% | {'yes' if both else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
