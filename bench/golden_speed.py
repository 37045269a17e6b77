"""Golden-model throughput: images/s of ``bsnn_hw.golden.simulate`` on a 784-256-10 network, T = 32, rate-coded,
side by side with a plain PyTorch loop of the same integer math and with snnTorch on the same network.

Prints, in one run and with one thread count for all (default 2, ``--threads``), the best of several repeats of:

- the golden model, per method ("auto", the default, which picks per layer; "matmul" and "popcount", the
  cross-checks; "packed" where asked): simulation alone and encode + simulate; rate encoding alone;
- a plain PyTorch loop of the same integer math (:func:`torch_loop`): per step, a float32 product of the spikes and
  the +-1 (or k-bit) weights, then the LIF update with the shift leak ``v - floor(v / 2^k)``;
- snnTorch 1.0.0 (:func:`snntorch_net`): ``nn.Linear`` with the same weights, ``snn.Leaky`` with beta = 1 - 2^-k,
  the same thresholds and reset, ``reset_delay=False`` (the reset in the step of the spike, as the contract does).

The repeats run round-robin (golden, torch loop, snnTorch, golden, ...) so that load from other work on a shared
machine hits all of them alike; each figure is the best repeat, of wall-clock time (images/s) and of this process's
CPU time (images/CPU-s: on a busy machine the fairer comparison with one thread; with several threads it also counts
time that BLAS and OpenMP threads spend spinning). Both PyTorch runs get their input spikes as float32
tensors made before the clock starts (the golden model's figure includes its own conversions). The run also checks
that the PyTorch loop and snnTorch agree with the golden model on every prediction and prints the agreement: the loop
computes the same integers (100 % expected); snnTorch's leak is the float product beta * V, not the floor shift, so
membranes drift apart by fractions and a few predictions may differ.

Issue 2's target: >= 2,000 images/s (simulation) on 2 cores. Issue 11's: golden >= 2x the PyTorch loop and >= 5x
snnTorch.

    .venv/bin/python bench/golden_speed.py                 # defaults: 2,000 images, batch 1,000, 5 repeats, 2 threads
    .venv/bin/python bench/golden_speed.py --threads 1
    .venv/bin/python bench/golden_speed.py --no-torch      # the golden model only
    .venv/bin/python bench/golden_speed.py --layer-table   # per-layer timings behind the "auto" choice
    .venv/bin/python bench/golden_speed.py --json

Thread settings: numpy's BLAS (OpenBLAS) threads are set with threadpoolctl when it is installed, else through
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS set before numpy is imported; PyTorch's with ``torch.set_num_threads``. The
figures depend on what else runs on the machine: on a shared machine, take the best of several runs and say so (the
load average is printed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000, help="images per repeat (default 2000)")
    ap.add_argument("--batch", type=int, default=1000, help="images per simulate() call (default 1000)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats; the best is reported (default 5)")
    ap.add_argument("--timesteps", "-T", type=int, default=32)
    ap.add_argument("--sizes", default="784-256-10")
    ap.add_argument("--membrane-bits", "-M", type=int, default=16)
    ap.add_argument("--leak-shift", type=int, default=4, help="leak shift k of every layer (0: no leak)")
    ap.add_argument("--reset", default="subtract", choices=("subtract", "zero"))
    ap.add_argument("--threads", type=int, default=2, help="threads for BLAS and PyTorch alike (default 2)")
    ap.add_argument("--methods", default="auto,matmul,popcount",
                    help="golden methods to time, comma-separated (default auto,matmul,popcount)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch loop and snnTorch")
    ap.add_argument("--per-sample-seeds", action="store_true",
                    help="rate-encode every image from its own LFSR seed (default: the network's one seed)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--layer-table", action="store_true",
                    help="print instead the per-layer timings behind golden's 'auto' choice (CPU ms, one thread)")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error(f"--threads must be at least 1, not {args.threads}")
    if args.layer_table:
        return layer_table(args.repeats)

    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np

    from bsnn_hw import encode, golden, kernels, random_network

    threads = _blas_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split("-")]
    net = random_network(sizes, timesteps=args.timesteps, membrane_bits=args.membrane_bits,
                         leak_shift=args.leak_shift or None, reset=args.reset, seed=1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.images, sizes[0]), dtype=np.uint8)
    starts = range(0, args.images, args.batch)
    batches = [x[i:i + args.batch] for i in starts]
    seeds = [(1 + np.arange(i, i + len(b)) % 65535) if args.per_sample_seeds else 1 for i, b in zip(starts, batches)]
    spikes = [encode.rate(b, args.timesteps, seed=s) for b, s in zip(batches, seeds)]   # also warms the LFSR tables
    methods = args.methods.split(",")
    for method in methods:
        golden.simulate(net, spikes[0][:8], method=method)                    # warm-up (BLAS threads, caches)

    # name -> function of no arguments returning the predictions of all images; timed round-robin below
    runs = {"encode": lambda: [encode.rate(b, args.timesteps, seed=s) for b, s in zip(batches, seeds)]}
    for method in methods:
        runs[f"simulate {method}"] = lambda m=method: np.concatenate(
            [golden.simulate(net, s, method=m).prediction for s in spikes])
        runs[f"encode + simulate {method}"] = lambda m=method: np.concatenate(
            [golden.simulate(net, encode.rate(b, args.timesteps, seed=s), method=m).prediction
             for b, s in zip(batches, seeds)])
    torch_info = "not run (--no-torch)"
    if not args.no_torch:
        import torch
        torch.set_num_threads(args.threads)
        torch_spikes = [torch.from_numpy(np.ascontiguousarray(s.transpose(1, 0, 2))).float() for s in spikes]
        loop = torch_loop(net)
        runs["PyTorch loop"] = lambda: np.concatenate([loop(s) for s in torch_spikes])
        try:
            snn_run = snntorch_net(net)
        except ImportError as e:
            print(f"snnTorch not available ({e}); skipped", file=sys.stderr)
        else:
            runs["snnTorch"] = lambda: np.concatenate([snn_run(s) for s in torch_spikes])
        torch_info = f"torch {torch.__version__}, {torch.get_num_threads()} threads"

    best = {name: float("inf") for name in runs}
    best_cpu = dict(best)
    predictions = {}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
            best_cpu[name] = min(best_cpu[name], time.process_time() - c0)
            predictions.setdefault(name, out)
    rate = {name: args.images / t for name, t in best.items()}
    rate_cpu = {name: args.images / max(t, 1e-9) for name, t in best_cpu.items()}
    reference = predictions[f"simulate {methods[0]}"]
    agreement = {name: float(np.mean(predictions[name] == reference)) * 100 if len(reference) else 100.0
                 for name in runs if name != "encode"}
    main_rate, main_cpu = rate[f"simulate {methods[0]}"], rate_cpu[f"simulate {methods[0]}"]
    ratios = {name: main_rate / rate[name] for name in ("PyTorch loop", "snnTorch") if name in rate}
    ratios_cpu = {name: main_cpu / rate_cpu[name] for name in ("PyTorch loop", "snnTorch") if name in rate}
    report = {
        "network": args.sizes, "timesteps": args.timesteps, "membrane_bits": args.membrane_bits,
        "leak_shift": args.leak_shift or None, "reset": args.reset,
        "encoding": "rate", "per_sample_seeds": args.per_sample_seeds, "images": args.images, "batch": args.batch,
        "repeats": args.repeats, "threads": args.threads, "blas_threads": threads, "cpu_count": os.cpu_count(),
        "cpu_target": kernels.cpu_target(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "numpy": np.__version__, "torch": torch_info,
        "layer_methods": {m: [golden._layer_method(layer, m) if layer.has_neurons else "pool" for layer in net.layers]
                          for m in methods},
        "encode_images_per_s": rate["encode"],
        "methods": {m: {"simulate_images_per_s": rate[f"simulate {m}"],
                        "encode_plus_simulate_images_per_s": rate[f"encode + simulate {m}"]} for m in methods},
        "images_per_s": {name: r for name, r in rate.items()},
        "images_per_cpu_s": {name: r for name, r in rate_cpu.items()},
        "prediction_agreement_percent": agreement,
        f"golden_{methods[0]}_speedup": ratios,
        f"golden_{methods[0]}_speedup_cpu": ratios_cpu,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"golden model, {args.sizes} network, T = {args.timesteps}, M = {args.membrane_bits}, leak shift "
          f"{args.leak_shift or 'none'}, reset {args.reset}, rate-coded, {args.images} images in batches of "
          f"{args.batch}, best of {args.repeats} round-robin repeats"
          + (", one LFSR seed per image" if args.per_sample_seeds else ", one LFSR seed for all images"))
    print(f"numpy {np.__version__}, BLAS threads: {threads}, {torch_info}, cores: {os.cpu_count()} "
          f"({report['cpu_target']}), load average (1 min) at the end: {report['load_average_1min']:.2f}")
    print("golden methods per layer: " + "; ".join(f"{m}: {', '.join(v)}" for m, v in report["layer_methods"].items()))
    print(f"{'':<28}{'images/s':>10}{'golden ' + methods[0] + ' is':>16}{'images/CPU-s':>14}"
          f"{'golden ' + methods[0] + ' is':>16}{'same prediction':>17}")
    for name, r in rate.items():
        ratio = f"{main_rate / r:.2f}x" if name != "encode" else ""
        ratio_cpu = f"{main_cpu / rate_cpu[name]:.2f}x" if name != "encode" else ""
        agree = f"{agreement[name]:.2f} %" if name in agreement else ""
        print(f"{name:<28}{r:>10,.0f}{ratio:>16}{rate_cpu[name]:>14,.0f}{ratio_cpu:>16}{agree:>17}")
    return 0


def layer_table(repeats: int = 3) -> int:
    """The synaptic input of one layer alone, per method: CPU ms (best of ``repeats``), one BLAS thread, 30 % spike
    density; dense layers over 16,000 (step, sample) rows, conv layers over 1,600. Printed as a Markdown table with
    the method "auto" picks (docs/golden.md)."""
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    import numpy as np

    from bsnn_hw import golden
    from bsnn_hw.network import Conv2d, Layer
    _blas_threads(1)
    rng = np.random.default_rng(0)
    cases = [(f"dense {k} -> {m}", Layer(rng.random((m, k)) < 0.5, 5), rng.random((32, 500, k)) < 0.3)
             for k, m in ((256, 10), (784, 32), (784, 64), (128, 256), (256, 128), (784, 256))]
    for (h, w, c), co in (((7, 7, 16), 32), ((14, 14, 8), 16), ((28, 28, 1), 16)):
        cases.append((f"conv {h}x{w}x{c}, 3x3 -> {co} (fan-in {9 * c})",
                      Conv2d(rng.random((co, 3, 3, c)) < 0.5, (h, w, c), 5, padding=1),
                      rng.random((16, 100, h * w * c)) < 0.3))
    for k, m, bits in ((784, 256, 2), (784, 256, 4), (256, 10, 8), (784, 32, 8)):
        cases.append((f"dense {k} -> {m}, {bits}-bit", Layer(rng.integers(-(1 << bits - 1), 1 << bits - 1, (m, k)), 5,
                                                              weight_bits=bits), rng.random((32, 500, k)) < 0.3))
    print("| layer | popcount | packed | matmul | \"auto\" |\n|---|---|---|---|---|")
    for name, layer, x in cases:
        methods = ("popcount", "packed", "matmul")
        ms = {}
        for method in methods:
            best = float("inf")
            for _ in range(repeats):
                t0 = time.process_time()
                golden._layer_input(x, layer, method, np.int16)
                best = min(best, time.process_time() - t0)
            ms[method] = best * 1e3
        cells = [f"{ms[m]:.1f}" if m in ms else "" for m in ("popcount", "packed", "matmul")]
        print(f"| {name} | " + " | ".join(cells) + f" | {golden._layer_method(layer, 'auto')} |")
    print(f"(load average (1 min): {os.getloadavg()[0]:.2f})")
    return 0


def torch_loop(net):
    """A plain PyTorch loop of the network's integer math, as a user would write it: per step and layer, a float32
    product of the spikes and the weights, then V <- V - floor(V / 2^k) + I, fire where V > theta, subtract theta (or
    zero V) where it fired; count readout. float32 holds every value exactly (integers below 2^24). Returns a
    function: time-major float32 spikes (T, B, n_in) -> predictions (B,) numpy int64. Only what the bench's networks
    use: dense layers, no fire-once, no saturation (refused when it could act), the count readout."""
    import numpy as np
    import torch

    from bsnn_hw import contract
    layers = []
    for layer in net.layers:
        if layer.kind != "dense" or layer.fire_once:
            raise ValueError(f"the PyTorch loop covers dense layers without fire-once, not {layer!r}")
        if net.timesteps * layer.max_abs_current > contract.membrane_range(layer.membrane_bits)[1]:
            raise ValueError(f"the PyTorch loop has no saturation, which {layer!r} can reach in {net.timesteps} steps")
        w = torch.from_numpy(contract.weight_values(layer.weights, layer.weight_bits).T.astype(np.float32))
        layers.append((w, torch.from_numpy(layer.threshold.astype(np.float32)), layer.leak_shift,
                       layer.reset == "subtract"))
    if net.readout != "count":
        raise ValueError(f"the PyTorch loop covers the count readout, not {net.readout!r}")

    @torch.inference_mode()
    def run(spikes):
        batch = spikes.shape[1]
        v = [torch.zeros(batch, w.shape[1]) for w, *_ in layers]
        counts = torch.zeros(batch, layers[-1][0].shape[1])
        for t in range(spikes.shape[0]):
            s = spikes[t]
            for i, (w, theta, k, subtract) in enumerate(layers):
                current = s @ w
                if k is not None:
                    v[i] = v[i] - torch.floor(v[i] / 2 ** k) + current
                else:
                    v[i] = v[i] + current
                s = (v[i] > theta).float()
                v[i] = v[i] - s * theta if subtract else v[i] * (1 - s)
            counts += s
        return counts.argmax(dim=1).numpy()
    return run


def snntorch_net(net):
    """The network in snnTorch 1.0.0: per layer ``nn.Linear`` (no bias) holding the weights and ``snn.Leaky`` with
    beta = 1 - 2^-k (1 without a leak), the per-neuron thresholds, the same reset and ``reset_delay=False``; count
    readout. Returns a function: time-major float32 spikes (T, B, n_in) -> predictions (B,) numpy int64."""
    import numpy as np
    import snntorch as snn
    import torch
    from torch import nn

    from bsnn_hw import contract
    blocks = []
    for layer in net.layers:
        if layer.kind != "dense" or layer.fire_once:
            raise ValueError(f"the snnTorch network covers dense layers without fire-once, not {layer!r}")
        fc = nn.Linear(layer.n_in, layer.n_out, bias=False)
        with torch.no_grad():
            fc.weight.copy_(torch.from_numpy(contract.weight_values(layer.weights, layer.weight_bits)
                                             .astype(np.float32)))
        beta = 1.0 if layer.leak_shift is None else 1.0 - 2.0 ** -layer.leak_shift
        lif = snn.Leaky(beta=beta, threshold=torch.from_numpy(layer.threshold.astype(np.float32)),
                        reset_mechanism=layer.reset, reset_delay=False)
        blocks.append((fc, lif))
    if net.readout != "count":
        raise ValueError(f"the snnTorch network covers the count readout, not {net.readout!r}")

    @torch.inference_mode()
    def run(spikes):
        mems = [lif.reset_mem() for _, lif in blocks]
        counts = 0
        for t in range(spikes.shape[0]):
            s = spikes[t]
            for i, (fc, lif) in enumerate(blocks):
                s, mems[i] = lif(fc(s), mems[i])
            counts = counts + s
        return counts.argmax(dim=1).numpy()
    return run


def _blas_threads(requested):
    """Set (if asked) and report the BLAS thread count."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return requested if requested is not None else f"library default ({os.cpu_count()} cores)"
    if requested is not None:
        threadpool_limits(requested)
    counts = sorted({p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"})
    return ",".join(map(str, counts)) or "none found"


if __name__ == "__main__":
    sys.exit(main())
