"""B-SNN's variant table for one architecture: FULL / MID / FIRST+MID / LAST+MID, each trained hardware-exact and
exported, with integer test accuracy, memory saving and computation saving.

    .venv/bin/python bench/variant_table.py --dataset fashion-mnist --arch 32c3-p2-64c3-p2-256-10 -T 16 --epochs 20
    .venv/bin/python bench/variant_table.py --dataset digits --arch 8c3-p2-32-10 -T 8 --epochs 15     # a minute

How the two savings are computed (the B-SNN paper compares against a 32-bit float network of the same topology;
its exact operation weighting is not given, so this script states its own):

- memory saving = 32 x (number of weights) / (sum over layers of weights x their width): binary layers 1 bit per
  weight, multi-bit layers k bits (the paper keeps them at 32-bit float; here they are k-bit integers, --bits);
- computation saving = (float MACs per inference) / (equivalent operations per inference), where the float network
  does T x (sum over layers of n_out x fan_in) multiply-accumulates and the SNN does the same synaptic operations as
  XNOR-popcounts for binary layers, counted as 1/64 of an operation each (one 64-bit XNOR + popcount covers 64
  synapses, XNOR-Net's accounting), and as spike-gated k-bit adds for multi-bit layers, counted as 1 operation each.
  Pooling and neuron updates are the same in both and left out.

The 1.00x row is that float reference's arithmetic; the trainer has no float-weight layer, so it has no accuracy
here. Every accuracy is the exported integer network's (golden model = trainer's integer evaluation).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

VARIANTS = ("full", "mid", "first+mid", "last+mid")


def savings(net) -> dict:
    weights = sum(layer.weights.size for layer in net.layers if layer.has_neurons)
    bits = net.weight_bits()
    macs = binary = kbit = 0
    for layer in net.layers:
        if not layer.has_neurons:
            continue
        ops = net.timesteps * layer.synaptic_ops_per_step
        macs += ops
        if layer.weight_bits == 1:
            binary += ops
        else:
            kbit += ops
    return dict(weights=weights, weight_memory_bits=bits, memory_saving=32 * weights / bits, float_macs=macs,
                binary_ops=binary, kbit_adds=kbit, computation_saving=macs / (binary / 64 + kbit))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--arch", default="32c3-p2-64c3-p2-256-10")
    ap.add_argument("-T", "--timesteps", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--bits", type=int, default=8, help="width of the multi-bit first/last layers")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default="out/variants", help="directory for the artifacts")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from bsnn_hw.train import TrainConfig, fit, variant_bits
    rows = []
    for variant in args.variants.split(","):
        first, last = variant_bits(variant, args.bits)
        cfg = TrainConfig(dataset=args.dataset, arch=args.arch, timesteps=args.timesteps, epochs=args.epochs,
                          lr=args.lr, batch_size=args.batch_size, first_bits=first, last_bits=last)
        t0 = time.perf_counter()
        res = fit(cfg, out=Path(args.out) / f"{variant}.bsnn", progress=False,
                  log=lambda m: print(m, file=sys.stderr))
        seconds = time.perf_counter() - t0
        m = res.metrics
        rows.append(dict(variant=variant, first_bits=first, last_bits=last, integer_accuracy=m["integer_accuracy"],
                         float_accuracy=m["float_accuracy"], gap_pp=m["gap_pp"],
                         epoch_seconds=sum(m["epoch_seconds"]) / len(m["epoch_seconds"]), train_seconds=seconds,
                         **savings(res.network)))
        print(f"{variant}: {100 * m['integer_accuracy']:.2f}% in {seconds:.0f} s", file=sys.stderr)
    if args.json:
        print(json.dumps(dict(dataset=args.dataset, arch=args.arch, timesteps=args.timesteps, epochs=args.epochs,
                              bits=args.bits, rows=rows), indent=2))
        return 0
    t = Table(title=f"B-SNN variants, {args.dataset}, {args.arch}, T={args.timesteps}, {args.epochs} epochs, "
                    f"multi-bit layers {args.bits}-bit")
    for c in ("network", "integer accuracy", "gap", "weight memory", "memory saving", "computation saving",
              "s/epoch"):
        t.add_column(c, justify="right")
    ref = rows[0]
    t.add_row("float32 reference (arithmetic only)", "-", "-", f"{32 * ref['weights']:,} bits", "1.00x", "1.00x", "-")
    for r in rows:
        t.add_row(f"B-SNN {r['variant'].upper()}", f"{100 * r['integer_accuracy']:.2f}%", f"{r['gap_pp']:+.2f} pp",
                  f"{r['weight_memory_bits']:,} bits", f"{r['memory_saving']:.2f}x", f"{r['computation_saving']:.2f}x",
                  f"{r['epoch_seconds']:.1f}")
    Console(width=140).print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
