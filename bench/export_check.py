"""The exported artifact against the trainer: the golden model's class, the trainer's int64 model's class
(``bsnn_hw.train.model.integer_simulate``) and the float model's class (stored in the artifact's metadata) on every
test sample, in batches (a conv network's currents for 10,000 images at once would take tens of GB).

    .venv/bin/python bench/export_check.py MODEL.bsnn [MODEL2.bsnn ...] [--data fashion-mnist] [--data-root DIR]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from bsnn_hw import artifact, data, golden
from bsnn_hw.io import decode_predictions
from bsnn_hw.train.model import integer_simulate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--data-root")
    ap.add_argument("--samples", type=int, help="the first N test samples (default: all)")
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args(argv)
    x, y = data.load_dataset(args.data, "test", root=args.data_root)
    n = len(y) if args.samples is None else min(args.samples, len(y))
    x, y = x[:n], y[:n]
    ok = True
    for path in args.models:
        net = artifact.load(path)
        t0 = time.perf_counter()
        gold = np.concatenate([golden.run(net, x[i:i + args.batch]).prediction for i in range(0, n, args.batch)])
        t_gold = time.perf_counter() - t0
        trainer = []
        for i in range(0, n, args.batch):
            inputs = torch.from_numpy(net.encode(x[i:i + args.batch]))
            inputs = inputs.float()[:, None, :] if net.encoding == "pixel" else inputs
            trainer.append(integer_simulate(net, inputs)[0].numpy())
        trainer = np.concatenate(trainer)
        m = net.meta("metrics")
        floats = decode_predictions(m["float_predictions"])[:n] if "float_predictions" in m else None
        same = bool((gold == trainer).all())
        ok &= same
        reported = f" (trainer reported {100 * m['integer_accuracy']:.2f}%)" if "integer_accuracy" in m else ""
        agree_float = "n/a" if floats is None else f"{int((gold == floats).sum())}/{n}"
        print(f"{path}: {n} samples, golden = trainer's integer model: {same} ({int((gold == trainer).sum())}/{n}); "
              f"golden = float model: {agree_float}; golden accuracy {100 * (gold == y[:n]).mean():.2f}%{reported}; "
              f"golden {t_gold:.0f} s", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
