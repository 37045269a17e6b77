"""Trainer targets (issue 3): trains each target network and prints its integer test accuracy and timings.

    .venv/bin/python bench/train_targets.py                      # the MLP targets (Fashion-MNIST ones take a while)
    .venv/bin/python bench/train_targets.py --only digits        # one target
    .venv/bin/python bench/train_targets.py --only fmnist256 --epochs 1   # time one Fashion-MNIST epoch
    .venv/bin/python bench/train_targets.py --only conv_full --device cuda   # a conv target, on a GPU

Targets: digits 64-128-10 >= 96% in <= 120 s; Fashion-MNIST 784-256-10 or 784-512-10 (all binary, T <= 32) >= 88.5%
with one epoch <= 60 s (the issue asks for either size; each is checked against it here); Fashion-MNIST 784-128-10
(reported, epoch <= 60 s). Issue targets of the conv stacks and the longer MLP run, all on Fashion-MNIST with T <= 32:
conv FULL (all binary) >= 91.5%, conv MID (8-bit first and last layers) >= 92.5%, 784-512-10 all binary >= 89.5%
(fmnist512_long: 88.93%; fmnist1024_t64, 784-1024-10 fine-tuned at T=64 from fmnist1024's checkpoint: 89.72%, run
``--only fmnist1024 --only fmnist1024_t64 --threads 1``, 1.5-2 hours on one core). conv_full_vgg is a deeper FULL
stack with the pixel input that meets FULL's target (92.13% after 10 epochs, 91.59-92.04% after 8-9, on an H200:
``--only conv_full_vgg --epochs 10 --device cuda``, ~40 s per epoch then; 8.6 s since the dropout draws are made on
the card); conv_small is the small all-binary conv network of the hardware demo (reported). These run only when
named with --only (the conv ones take hours on 2 CPU cores). Threads default to 2 (the reference machine). The
reported accuracy is the exported integer network's (hardware-exact); models are written to out/bench_<name>.bsnn.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bsnn_hw.train import TrainConfig, fit

TARGETS = {
    # name: (settings, accuracy target or None, total-time target in s or None, epoch-time target in s or None)
    "digits": (dict(dataset="digits"), 0.96, 120.0, None),
    "fmnist256": (dict(dataset="fashion-mnist", hidden=[256], timesteps=32, epochs=25, batch_size=128, lr=5e-4),
                  0.885, None, 60.0),
    "fmnist512": (dict(dataset="fashion-mnist", hidden=[512], timesteps=32, epochs=25, batch_size=128, lr=5e-4),
                  0.885, None, 60.0),
    "fmnist128": (dict(dataset="fashion-mnist", hidden=[128], timesteps=32, epochs=20, batch_size=128, lr=5e-4),
                  None, None, 60.0),
    "fmnist512_long": (dict(dataset="fashion-mnist", hidden=[512], timesteps=32, epochs=40, batch_size=128, lr=5e-4,
                            label_smoothing=0.1), 0.895, None, None),
    # the FC network that meets the 89.5% target: 784-1024-10 at T=32, then fine-tuned at T=64 from its checkpoint
    "fmnist1024": (dict(dataset="fashion-mnist", hidden=[1024], timesteps=32, epochs=30, batch_size=128, lr=5e-4,
                        label_smoothing=0.1), None, None, None),
    "fmnist1024_t64": (dict(dataset="fashion-mnist", hidden=[1024], timesteps=64, epochs=10, batch_size=128, lr=2e-4,
                            label_smoothing=0.1), 0.895, None, None),
    "conv_full": (dict(dataset="fashion-mnist", arch="32c3-p2-64c3-p2-256-10", timesteps=8, epochs=20,
                       batch_size=128, lr=5e-4), 0.915, None, None),
    "conv_mid": (dict(dataset="fashion-mnist", arch="32c3-p2-64c3-p2-256-10", timesteps=8, epochs=20,
                      batch_size=128, lr=5e-4, first_bits=8, last_bits=8), 0.925, None, None),
    # the deeper all-binary stack that did best per epoch on a GPU (91.22% after 6 epochs); a GPU run
    "conv_full_vgg": (dict(dataset="fashion-mnist", arch="64c3-64c3-p2-128c3-128c3-p2-512-10", timesteps=8,
                           epochs=20, batch_size=128, lr=1e-3, encoding="pixel"), 0.915, None, None),
    "conv_small": (dict(dataset="fashion-mnist", arch="16c3-p2-32c3-p2-10", timesteps=8, epochs=4, batch_size=64,
                        lr=1e-3), None, None, None),
}

DEFAULT = ("digits", "fmnist256", "fmnist512", "fmnist128")
# a target that starts from another's checkpoint (--init): run that one first (--only fmnist1024 --only fmnist1024_t64)
INIT = {"fmnist1024_t64": "fmnist1024"}


def _log_epoch(epoch, h):
    print(f"  epoch {epoch}: loss {h['loss']:.4f} train {100 * h['train_accuracy']:.2f}% "
          f"test {100 * h['test_accuracy']:.2f}% ({h['epoch_seconds']:.1f} s)", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=sorted(TARGETS), help="run only these targets")
    ap.add_argument("--epochs", type=int, help="override the number of epochs (e.g. 1 to time an epoch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda")
    ap.add_argument("--data-root", help="directory of the Fashion-MNIST IDX files (default: the Debian package's)")
    ap.add_argument("--out", default="out", help="directory for the models")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--resume", action="store_true",
                    help="continue from out/bench_<name>.bsnn.ckpt (finished epochs are kept; timings cover this run)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a TrainConfig setting (JSON value), e.g. --set augment_flip=true "
                         "--set hidden=[512,512]; the row lists the overrides")
    ap.add_argument("--budget", type=float, metavar="SECONDS",
                    help="time one epoch first (a 1-epoch run, not kept), then train as many epochs as fit in this "
                         "many seconds in all (at most the target's or --epochs), export included")
    args = ap.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in TrainConfig.__dataclass_fields__:
            ap.error(f"--set {item!r}: expected KEY=VALUE with KEY a TrainConfig field")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value                    # a bare string, e.g. --set arch=16c3-p2-10
    rows = []
    for name in args.only or DEFAULT:
        settings, acc_target, time_target, epoch_target = TARGETS[name]
        settings = dict(settings, threads=args.threads, device=args.device)
        if args.data_root and settings["dataset"] != "digits":
            settings["data_root"] = args.data_root
        if args.epochs:
            settings["epochs"] = args.epochs
        settings.update(overrides)
        if name in INIT:
            ckpt = Path(args.out) / f"bench_{INIT[name]}.bsnn.ckpt"
            if not ckpt.exists():
                print(f"{name} starts from {ckpt}, which does not exist: run --only {INIT[name]} first",
                      file=sys.stderr)
                return 2
            settings["init_from"] = str(ckpt)
        t0 = time.perf_counter()
        if args.budget:
            probe = fit(TrainConfig(**dict(settings, epochs=1)), progress=False)
            spent = time.perf_counter() - t0
            epoch_s = probe.metrics["epoch_seconds"][0]
            # what a run costs besides its epochs (data, evaluation, export) is about the probe's
            settings["epochs"] = max(1, min(settings["epochs"], int((args.budget - 2 * spent + epoch_s) // epoch_s)))
            print(f"{name}: probe epoch {epoch_s:.1f} s ({spent:.1f} s in all): {settings['epochs']} epochs fit in "
                  f"the {args.budget:.0f} s budget", file=sys.stderr, flush=True)
        cfg = TrainConfig(**settings)
        t0 = time.perf_counter()
        res = fit(cfg, out=Path(args.out) / f"bench_{name}.bsnn", resume=args.resume, progress=sys.stderr.isatty(),
                  on_epoch_end=None if sys.stderr.isatty() else _log_epoch)
        total = time.perf_counter() - t0
        m = res.metrics
        epoch_s = m["epoch_seconds"]
        row = {"target": name, "sizes": "-".join(map(str, m["sizes"])), "T": cfg.timesteps, "epochs": cfg.epochs,
               "integer_accuracy": round(100 * m["integer_accuracy"], 2),
               "float_accuracy": round(100 * m["float_accuracy"], 2), "gap_pp": m["gap_pp"],
               "total_s": round(total, 1), "epoch_s_median": round(sorted(epoch_s)[len(epoch_s) // 2], 1),
               "precision": m["precision"], "threads": args.threads, "device": m["device"],
               "accuracy_target": acc_target, "time_target_s": time_target, "epoch_target_s": epoch_target,
               "overrides": overrides, "cuda_graphs": m.get("cuda_graphs")}
        ok = []
        if acc_target is not None:
            ok.append(m["integer_accuracy"] >= acc_target)
        if time_target is not None:
            ok.append(total <= time_target)
        if epoch_target is not None:
            ok.append(row["epoch_s_median"] <= epoch_target)
        row["met"] = all(ok) if ok else None
        rows.append(row)
        if not args.json:
            print(f"{name:10s} {row['sizes']:>11s} T={row['T']:<3d} epochs={row['epochs']:<3d} "
                  f"integer acc {row['integer_accuracy']:6.2f}% (float {row['float_accuracy']:.2f}%, "
                  f"gap {row['gap_pp']:+.2f} pp)  total {row['total_s']:7.1f} s  epoch {row['epoch_s_median']:5.1f} s"
                  f"  [{row['device']}, {row['precision']}, {args.threads} threads]  target met: {row['met']}",
                  flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
