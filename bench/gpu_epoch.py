"""GPU training speed: B-SNN epochs eager and as CUDA graphs (issue 11: a 784-512-10, T = 32 Fashion-MNIST epoch in
<= 3 s on a GPU), with the exactness checks.

    python bench/gpu_epoch.py [--hidden 512] [--timesteps 32] [--batch-sizes 64,256] [--epochs 2] [--data-root DIR]

Needs a CUDA GPU. For each batch size it trains ``--epochs`` epochs eagerly (``cuda_graphs=False``) and as CUDA graphs
(train/graphs.py) from the same seed and prints every epoch's training seconds (the first graph epoch includes the
capture), whether both modes end with bit-identical weights, and for the graph run the exported network's integer
test accuracy and whether the golden model (bsnn_hw.golden, NumPy) predicts exactly the trainer's integer classes
on the whole test split. ``--eager-epochs`` limits the (slow) eager runs; with fewer eager than graph epochs the
weights are compared on a separate graph run of that many epochs. Exits 1 if a check fails.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time

import numpy as np


def weights_digest(model) -> str:
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data-root")
    ap.add_argument("--hidden", default="512", help="hidden sizes, e.g. 512 or 512,512")
    ap.add_argument("--timesteps", type=int, default=32)
    ap.add_argument("--batch-sizes", default="64", help="comma-separated")
    ap.add_argument("--epochs", type=int, default=2, help="graph epochs per batch size")
    ap.add_argument("--eager-epochs", type=int, default=1, help="eager epochs per batch size (0: none)")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu only smoke-tests this script")
    args = ap.parse_args(argv)

    import torch
    from bsnn_hw import data, golden
    from bsnn_hw.train.trainer import Encoder, TrainConfig, fit, integer_accuracy

    if args.device != "cpu" and not torch.cuda.is_available():
        print("bench/gpu_epoch.py: torch sees no CUDA GPU; run it where one is", file=sys.stderr)
        return 2
    hidden = [int(h) for h in args.hidden.split(",")]
    name = torch.cuda.get_device_name(0) if args.device != "cpu" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; "
          f"{args.dataset} {'-'.join(map(str, hidden))} hidden, T={args.timesteps}")
    rows, ok = [], True

    def run(batch, epochs, graphs):
        cfg = TrainConfig(dataset=args.dataset, data_root=args.data_root, hidden=hidden, timesteps=args.timesteps,
                          batch_size=batch, epochs=epochs, device=args.device, cuda_graphs=graphs)
        t0 = time.perf_counter()
        r = fit(cfg, progress=False)
        if args.device != "cpu":
            torch.cuda.synchronize()
        return r, time.perf_counter() - t0

    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        row = {"batch_size": batch}
        g, g_wall = run(batch, args.epochs, True)
        row["graph_epoch_seconds"] = [round(h["epoch_seconds"], 3) for h in g.history]
        row["graph_integer_accuracy"] = round(100 * g.metrics["integer_accuracy"], 2)
        row["graph_run_seconds"] = round(g_wall, 1)
        row["graph"] = g.metrics.get("cuda_graphs")
        if args.eager_epochs:
            e, e_wall = run(batch, args.eager_epochs, False)
            row["eager_epoch_seconds"] = [round(h["epoch_seconds"], 3) for h in e.history]
            same = g if args.eager_epochs == args.epochs else run(batch, args.eager_epochs, True)[0]
            row["same_weights"] = weights_digest(same.model) == weights_digest(e.model)
            row["speedup"] = round(np.mean(row["eager_epoch_seconds"]) / row["graph_epoch_seconds"][-1], 2)
            ok &= row["same_weights"]
        # The exported network on the whole test split: the trainer's integer classes against the golden model's.
        net = g.network
        x, y = data.load_dataset(args.dataset, "test", root=args.data_root)
        enc = Encoder(net.encoding, x.shape[1], net.timesteps, args.device)
        acc, trainer_pred = integer_accuracy(net, enc, torch.from_numpy(x).to(args.device),
                                             torch.from_numpy(y).to(args.device))
        t0 = time.perf_counter()
        gold = np.concatenate([golden.run(net, x[i:i + 1000]).prediction for i in range(0, len(y), 1000)])
        row["golden_seconds"] = round(time.perf_counter() - t0, 1)
        row["golden_equals_trainer"] = bool(np.array_equal(gold, trainer_pred))
        ok &= row["golden_equals_trainer"]
        rows.append(row)
        print(json.dumps(row), flush=True)

    print()
    print("| batch | eager s/epoch | graph s/epoch (first, ..., last) | speed-up | same weights | integer acc. | "
          "golden = trainer |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch_size']} | {', '.join(map(str, r.get('eager_epoch_seconds', ['-'])))} | "
              f"{', '.join(map(str, r['graph_epoch_seconds']))} | {r.get('speedup', '-')} | "
              f"{r.get('same_weights', '-')} | {r['graph_integer_accuracy']}% | {r['golden_equals_trainer']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
