"""Where a B-SNN training step spends its time: step times eager and as a CUDA graph, and torch.profiler's table of
the kernels of a few eager steps, with torch's deterministic algorithms on and off.

    python bench/step_profile.py [--arch 64c3-64c3-p2-128c3-128c3-p2-512-10] [-T 8] [--batch-size 128]
        [--encoding pixel] [--steps 20] [--deterministic both] [--top 15] [--noise both]
        [--device cuda] [--precision auto|fp32|bf16]

The trainer runs with deterministic algorithms (train/trainer.py ``deterministic``: same seed, same weights; without
filling new tensors); ``off`` shows what they cost (cuDNN's deterministic convolution algorithms, for conv
networks). The network is built as ``bsnn-hw train`` builds it (``build_model``) and trained on random images and
labels: the timing of the dense work does not depend on the data. Every timed step includes its dropout draws
(``--dropout``, the trainer's 0.05 by default), made on the device as the trainer makes them and, with ``--noise
both``, on the CPU as it made them before (a conv network's draws are tens of MB per step). Run from a source
checkout on a GPU machine with ``PYTHONPATH`` set as in bench/gpu_train.sh, or installed. ``--device cpu``
smoke-tests the script (CPU kernels only, no graphs).
"""
from __future__ import annotations

import argparse
import sys
import time


def _time_steps(step, batches, sync, draw) -> float:
    """Median seconds per step over ``batches``, each step with its dropout draws (``draw()``, timed: the trainer
    draws them every step)."""
    times = []
    for args in batches:
        t0 = time.perf_counter()
        step.step(*args, draw())
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="64c3-64c3-p2-128c3-128c3-p2-512-10")
    ap.add_argument("-T", "--timesteps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--encoding", default="pixel", choices=["rate", "latency", "pixel"])
    ap.add_argument("--first-bits", type=int, default=1)
    ap.add_argument("--last-bits", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per mode (default 20)")
    ap.add_argument("--profile-steps", type=int, default=3, help="eager steps under the profiler (default 3)")
    ap.add_argument("--deterministic", default="both", choices=["on", "off", "both"])
    ap.add_argument("--top", type=int, default=15, help="rows of the profiler's table")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                    help="the synaptic products' arithmetic, as bsnn-hw train --precision (default auto)")
    ap.add_argument("--dropout", type=float, default=0.05, help="the trainer's default (0: no draws)")
    ap.add_argument("--noise", default="both", choices=["device", "cpu", "both"],
                    help="where the dropout draws are made: on the device (the trainer) or the CPU (before)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.profile_steps < 1:
        ap.error("--steps and --profile-steps must be at least 1")

    import torch
    from torch.profiler import ProfilerActivity, profile

    from bsnn_hw.train.graphs import TrainStep, make_adam
    from bsnn_hw.train.trainer import Encoder, TrainConfig, build_model, deterministic, pick_precision

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench/step_profile.py: torch sees no CUDA GPU (use --device cpu to smoke-test)", file=sys.stderr)
        return 2
    cfg = TrainConfig(dataset="fashion-mnist", arch=args.arch, timesteps=args.timesteps, encoding=args.encoding,
                      batch_size=args.batch_size, first_bits=args.first_bits, last_bits=args.last_bits,
                      dropout=args.dropout, device=args.device, precision=args.precision)
    cfg.validate()
    precision = pick_precision(cfg.precision, device, dense=cfg.arch is None)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    b, n_in = args.batch_size, 784

    def batches(count, model):
        return [(torch.randint(0, 256, (b, n_in), dtype=torch.uint8, generator=gen).to(device),
                 torch.randint(1, 65536, (b,), generator=gen).to(device),
                 torch.randint(0, 10, (b,), generator=gen).to(device)) for _ in range(count)]

    def drawer(model, where):
        g = torch.Generator(device=device if where == "device" else "cpu").manual_seed(1)
        return (lambda: model.dropout_noise(g, b)) if args.dropout > 0 else (lambda: None)

    modes = {"on": [True], "off": [False], "both": [True, False]}[args.deterministic]
    print(f"{args.arch}, T={args.timesteps}, batch {b}, {args.encoding} input, {precision} products, "
          f"{device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), torch "
          f"{torch.__version__}")
    for det in modes:
        deterministic(det)                        # as the trainer sets it (on: train/trainer.py setup_run)
        torch.manual_seed(0)
        model = build_model(cfg, n_in, 10, precision).to(device).train()
        encoder = Encoder(cfg.encoding, n_in, cfg.timesteps, device)
        opt = make_adam(model.parameters(), 1e-3, 0.0, device)
        row = {}
        wheres = {"both": ["device", "cpu"], "device": ["device"], "cpu": ["cpu"]}[args.noise]
        wheres = wheres if device.type == "cuda" else ["device"]                  # on the CPU they are the same
        for where in (wheres if args.dropout > 0 else ["device"]):
            for graphs in ([False, True] if device.type == "cuda" else [False]):
                name = ("graph" if graphs else "eager") + (f" ({where} draws)" if args.dropout > 0 else "")
                step = TrainStep(model, model, encoder, opt, 0.0, b, device, graphs=graphs)
                draw = drawer(model, where)
                _time_steps(step, batches(5, model), sync, draw)          # warm-up (and the graph's capture)
                row[name] = _time_steps(step, batches(args.steps, model), sync, draw)
                if graphs and step.graph_error:
                    row[name] = None
                    print(f"  CUDA graph failed: {step.graph_error}")
        print(f"deterministic {'on' if det else 'off'}: " + ", ".join(
            f"{k} {1e3 * v:.1f} ms/step" if v is not None else f"{k} -" for k, v in row.items()))
        step = TrainStep(model, model, encoder, opt, 0.0, b, device, graphs=False)
        work = batches(args.profile_steps, model)
        draw = drawer(model, "device")
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for a in work:
                step.step(*a, draw())
            sync()
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
