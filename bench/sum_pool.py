"""OR pooling against sum pooling on one conv architecture: each trained hardware-exact and exported, with integer
test accuracy, weight memory, synaptic operations and hardware cycles per inference.

    .venv/bin/python bench/sum_pool.py --dataset fashion-mnist --arch 16c3-p2-32c3-p2-10 -T 8 --epochs 4 --threads 1
    .venv/bin/python bench/sum_pool.py --dataset digits --arch 8c3-p2-32-10 -T 8 --epochs 10          # a minute

``--arch`` is written with OR pools (``p<n>``); the sum-pooled twin replaces every ``p<n>`` by ``s<n>``. Sum pooling
is folded at export into the layer it feeds (docs/spec.md 8.5), so its price shows in that layer: n^2 times its
weights and synaptic operations, and cycles from the manifest's formula (``HwConfig.default``: P = 1, W = the map's
channels) with the default folding, or ``-P`` for both.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def hardware(net, parallel: str | None) -> dict:
    from bsnn_hw.hdl.config import HwConfig, LayerConfig, cycles_per_inference
    cfg = HwConfig.default(net)
    if parallel:
        ps = [int(p) for p in parallel.split(",")]
        if len(ps) != len(net.layers):
            raise SystemExit(f"-P gives {len(ps)} values but the network has {len(net.layers)} layers")
        cfg = HwConfig(tuple(LayerConfig(p, lc.width) for p, lc in zip(ps, cfg.layers)))
    return dict(cycles=cycles_per_inference(net, cfg), layers=len(net.layers),
                synaptic_ops=net.timesteps * sum(layer.synaptic_ops_per_step for layer in net.layers),
                weight_memory_bits=net.weight_bits())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--arch", default="16c3-p2-32c3-p2-10", help="the OR-pooled network (p<n>)")
    ap.add_argument("-T", "--timesteps", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-P", "--parallel", help="P per layer of the exported networks (they have different layer counts:"
                                             " give it for one pooling only with --only)")
    ap.add_argument("--only", choices=("or", "sum"), help="train one of the two")
    ap.add_argument("--out", default="out/sum_pool", help="directory for the artifacts")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from bsnn_hw.train import TrainConfig, fit
    from bsnn_hw.train.model import parse_arch
    parse_arch(args.arch)
    if "-s" in f"-{args.arch}":
        raise SystemExit(f"--arch {args.arch}: write it with OR pools (p<n>); the sum-pooled twin is made from it")
    archs = {"or": args.arch, "sum": "-".join("s" + t[1:] if t.startswith("p") else t for t in args.arch.split("-"))}
    rows = []
    for kind, arch in archs.items():
        if args.only and kind != args.only:
            continue
        cfg = TrainConfig(dataset=args.dataset, arch=arch, timesteps=args.timesteps, epochs=args.epochs, lr=args.lr,
                          batch_size=args.batch_size, threads=args.threads, seed=args.seed)
        t0 = time.perf_counter()
        res = fit(cfg, out=Path(args.out) / f"{kind}.bsnn", progress=False, log=lambda m: print(m, file=sys.stderr))
        seconds = time.perf_counter() - t0
        m = res.metrics
        rows.append(dict(pooling=kind, arch=arch, integer_accuracy=m["integer_accuracy"],
                         float_accuracy=m["float_accuracy"], gap_pp=m["gap_pp"], train_seconds=seconds,
                         epoch_seconds=sum(m["epoch_seconds"]) / len(m["epoch_seconds"]),
                         model=str(Path(args.out) / f"{kind}.bsnn"), **hardware(res.network, args.parallel)))
        print(f"{arch}: {100 * m['integer_accuracy']:.2f}% in {seconds:.0f} s", file=sys.stderr)
    if args.json:
        print(json.dumps(dict(dataset=args.dataset, timesteps=args.timesteps, epochs=args.epochs, rows=rows),
                         indent=2))
        return 0
    t = Table(title=f"OR vs sum pooling, {args.dataset}, T={args.timesteps}, {args.epochs} epochs")
    for c in ("arch", "exported layers", "integer accuracy", "gap", "weight memory", "synaptic ops", "cycles",
              "s/epoch"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(r["arch"], str(r["layers"]), f"{100 * r['integer_accuracy']:.2f}%", f"{r['gap_pp']:+.2f} pp",
                  f"{r['weight_memory_bits']:,} bits", f"{r['synaptic_ops']:,}", f"{r['cycles']:,}",
                  f"{r['epoch_seconds']:.1f}")
    Console(width=140).print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
