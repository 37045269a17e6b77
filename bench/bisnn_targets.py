"""BiSNN targets (issue 13): trains a B-SNN network and a BiSNN posterior of the same size on Fashion-MNIST, picks the
ensemble's confidence function on a held-out validation slice of the training split, and prints the calibration
table of the test split (accuracy, NLL, Brier, ECE over 15 bins) for the MAP network, the ensemble and B-SNN.

    .venv/bin/python bench/bisnn_targets.py                        # 784-256-10, T=8, S=8 (models in /work/models)
    .venv/bin/python bench/bisnn_targets.py --skip-train            # only evaluate the saved models
    .venv/bin/python bench/bisnn_targets.py --epochs 1 --out-dir out/   # time one epoch of each

Targets: ensemble ECE <= 0.5 x the MAP network's ECE and <= the B-SNN network's ECE; ensemble accuracy within 1 pp of
the B-SNN network's. Every figure is the golden model's (the contract), on inputs encoded with each network's own
encoder seed. Both networks train on the training split minus its last --val samples (the validation slice); one
torch thread by default.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import bsnn_hw
from bsnn_hw import calibrate
from bsnn_hw import ensemble as ens


def _rho(text):
    """--rho, parsed as the trainer parses it (argparse reports the one-line error)."""
    from bsnn_hw.train import bisnn
    try:
        return bisnn.parse_rho(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def settings(args) -> dict:
    return dict(dataset="fashion-mnist", hidden=[args.hidden], timesteps=args.timesteps, epochs=args.epochs,
                batch_size=args.batch_size, lr=args.lr, threads=args.threads, device="cpu",
                val_samples=args.val, seed=args.seed)


def train_both(args, bsnn_out: Path, bisnn_out: Path) -> dict:
    from bsnn_hw.train import bisnn
    from bsnn_hw.train.trainer import TrainConfig, fit

    def log_epoch(tag):
        return lambda epoch, h: print(f"  {tag} epoch {epoch}: loss {h['loss']:.4f} train "
                                      f"{100 * h['train_accuracy']:.2f}% test {100 * h['test_accuracy']:.2f}% "
                                      f"({h['epoch_seconds']:.1f} s)", file=sys.stderr, flush=True)
    times = {}
    if not args.only or args.only == "bsnn":
        t0 = time.perf_counter()
        cfg = TrainConfig.from_dict(dict(settings(args), dropout=args.dropout)).validate()
        fit(cfg, out=bsnn_out, resume=args.resume, progress=False, on_epoch_end=log_epoch("B-SNN"))
        times["bsnn_train_s"] = round(time.perf_counter() - t0, 1)
    if not args.only or args.only == "bisnn":
        t0 = time.perf_counter()
        given = {k: v for k, v in (("bisnn_mc", args.mc), ("bisnn_rho", args.rho)) if v is not None}  # else default
        cfg = bisnn.config(**settings(args), dropout=0.0, bisnn_members=args.members, bisnn_lr=args.bisnn_lr,
                           bisnn_init=args.init, bisnn_tau=args.tau, **given)
        fit(cfg, out=bisnn_out, resume=args.resume, progress=False, on_epoch_end=log_epoch("BiSNN"))
        times["bisnn_train_s"] = round(time.perf_counter() - t0, 1)
    return times


def sweep(model_path: Path, sizes: list, x, y, confidence: str):
    """(S, test row) for ensembles of S members sampled (seed 0) from the posterior in the model's checkpoint."""
    import torch

    from bsnn_hw.train import bisnn
    from bsnn_hw.train.trainer import TrainConfig, build_model, load_checkpoint
    state = load_checkpoint(Path(str(model_path) + ".ckpt"))
    cfg = TrainConfig.from_dict(TrainConfig.own_settings(state["config"])).validate()
    net = bsnn_hw.load(model_path)
    model = build_model(cfg, net.n_in, net.n_out, "fp32")
    model.load_state_dict(state["model"])
    with torch.no_grad():
        for size in sizes:
            members = bisnn.sample_members(model, size, cfg.bisnn_member_seed)
            e = bsnn_hw.Network(net.layers, net.timesteps, net.readout, net.encoding, net.seed,
                                metadata=net.metadata, ensemble=members)
            yield size, calibrate.evaluate(e, x, y, name="sweep", confidence=confidence)[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("-T", "--timesteps", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-4, help="Adam lr (B-SNN weights; both methods' scales)")
    ap.add_argument("--dropout", type=float, default=0.05, help="B-SNN hidden dropout")
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--bisnn-lr", type=float, default=0.05)
    ap.add_argument("--init", type=float, default=1.5)
    ap.add_argument("--tau", type=float, default=1.0)
    ap.add_argument("--mc", type=int, help="weight samples per training step (default: the trainer's)")
    ap.add_argument("--rho", type=_rho,
                    help="weight of the prior (KL) term: a number, 'X/N' (X / training samples) or 'elbo' (1 / "
                         "training samples); default: the trainer's (0.03/N)")
    ap.add_argument("--val", type=int, default=5000, help="training samples held out for the confidence choice")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", default="/work/models")
    ap.add_argument("--only", choices=["bsnn", "bisnn"], help="train only this one (the other must exist)")
    ap.add_argument("--skip-train", action="store_true", help="evaluate the saved models only")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--sweep", help="also score ensembles of these sizes drawn from the saved posterior, e.g. 1,4,32")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out_dir)
    bsnn_out, bisnn_out = out / f"bsnn_fashion{args.hidden}.bsnn", out / "bisnn_fashion.bsnn"
    times = {} if args.skip_train else train_both(args, bsnn_out, bisnn_out)

    from bsnn_hw import data
    from bsnn_hw.train.trainer import TrainConfig, validation_split
    b, m = bsnn_hw.load(bsnn_out), bsnn_hw.load(bisnn_out)
    _, _, xv, yv = validation_split(TrainConfig(dataset="fashion-mnist", val_samples=args.val))
    xt, yt = data.load_dataset("fashion-mnist", "test")
    t0 = time.perf_counter()
    # 1. the confidence function, chosen on the validation slice (lowest ECE; NLL shown beside it)
    val = {}
    for kind in ens.CONFIDENCES:
        row = calibrate.evaluate(m, xv, yv, name="val", confidence=kind)[1]
        val[kind] = {k: row[k] for k in ("accuracy", "nll", "brier", "ece")}
    chosen = min(val, key=lambda k: val[k]["ece"])
    # 2. the test table
    rows = calibrate.evaluate(m, xt, yt, name="BiSNN", confidence=chosen)
    rows[0]["model"] = "BiSNN MAP"
    rows += calibrate.evaluate(b, xt, yt, name="B-SNN")
    eval_s = round(time.perf_counter() - t0, 1)
    calibrate.plot(rows, out / "bisnn_fashion_reliability.png", title="Fashion-MNIST test, 10000 samples")
    by = {r["kind"] if r["model"].startswith("BiSNN") else "bsnn": r for r in rows}
    mp, en, bs = by["single"], by["ensemble"], by["bsnn"]
    targets = {"ece_half_of_map": en["ece"] <= 0.5 * mp["ece"], "ece_le_bsnn": en["ece"] <= bs["ece"],
               "accuracy_within_1pp": abs(en["accuracy"] - bs["accuracy"]) <= 0.01}
    result = {"sizes": f"784-{args.hidden}-10", "T": args.timesteps, "epochs": args.epochs, "members": len(m.ensemble),
              "validation": val, "confidence": chosen,
              "test": [{k: r[k] for k in ("model", "accuracy", "nll", "brier", "ece", "mean_confidence")}
                       for r in rows],
              "targets": targets, "eval_s": eval_s, **times, "threads": args.threads,
              "models": [str(bsnn_out), str(bisnn_out)], "plot": str(out / "bisnn_fashion_reliability.png")}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0 if all(targets.values()) else 1
    print(f"validation ({args.val} held-out training samples), ensemble confidence:")
    for kind, v in val.items():
        print(f"  {kind:<11} ECE {v['ece']:.4f}  NLL {v['nll']:.4f}  Brier {v['brier']:.4f}"
              f"{'   <- chosen' if kind == chosen else ''}")
    print(f"Fashion-MNIST test, 784-{args.hidden}-10, T={args.timesteps}, {args.epochs} epochs, "
          f"S={len(m.ensemble)}, confidence {chosen}:")
    print(f"  {'model':<28} {'accuracy':>9} {'NLL':>8} {'Brier':>8} {'ECE':>8}")
    for r in rows:
        print(f"  {r['model']:<28} {100 * r['accuracy']:>8.2f}% {r['nll']:>8.4f} {r['brier']:>8.4f} "
              f"{r['ece']:>8.4f}")
    print(f"targets: ensemble ECE {en['ece']:.4f} <= 0.5 x MAP ECE {0.5 * mp['ece']:.4f}: "
          f"{'met' if targets['ece_half_of_map'] else 'NOT met'}; <= B-SNN ECE {bs['ece']:.4f}: "
          f"{'met' if targets['ece_le_bsnn'] else 'NOT met'}; ensemble accuracy {100 * en['accuracy']:.2f}% within "
          f"1 pp of B-SNN {100 * bs['accuracy']:.2f}%: {'met' if targets['accuracy_within_1pp'] else 'NOT met'}")
    if args.sweep:
        print("ensemble size (members drawn from the saved posterior, --member-seed 0; test split):")
        for size, row in sweep(bisnn_out, [int(v) for v in args.sweep.split(",")], xt, yt, chosen):
            print(f"  S={size:<3} accuracy {100 * row['accuracy']:.2f}%  NLL {row['nll']:.4f}  "
                  f"Brier {row['brier']:.4f}  ECE {row['ece']:.4f}")
    print(f"  times: {times} evaluation {eval_s} s, {args.threads} thread(s); reliability diagram {result['plot']}")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
