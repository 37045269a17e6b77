"""Golden-model throughput: images/s of ``bsnn_hw.golden.simulate`` on a 784-256-10 network, T = 32, rate-coded.

Prints, for each method ("matmul", the default, and "popcount", the cross-check path), the best of several repeats:
simulation alone, rate encoding alone, and both together (encode + simulate). Issue 2's target: >= 2,000 images/s
(simulation) on 2 cores.

    .venv/bin/python bench/golden_speed.py                 # defaults: 2,000 images, batch 1,000, 5 repeats
    .venv/bin/python bench/golden_speed.py --threads 1     # one BLAS thread
    .venv/bin/python bench/golden_speed.py --json

Thread settings: numpy's BLAS (OpenBLAS) threads are set with threadpoolctl when it is installed, else through
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS set before numpy is imported (this script does that when --threads is given).
torch is not used by the golden model. The figures depend on what else runs on the machine: on a shared machine,
take the best of several runs and say so.
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
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS threads (default: the library's default, normally one per core)")
    ap.add_argument("--methods", default="matmul,popcount")
    ap.add_argument("--per-sample-seeds", action="store_true",
                    help="rate-encode every image from its own LFSR seed (default: the network's one seed)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)

    if args.threads is not None:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    import numpy as np

    from bsnn_hw import encode, golden, random_network

    threads = _blas_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split("-")]
    net = random_network(sizes, timesteps=args.timesteps, membrane_bits=args.membrane_bits, seed=1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.images, sizes[0]), dtype=np.uint8)
    batches = [x[i:i + args.batch] for i in range(0, args.images, args.batch)]
    seeds = [(1 + np.arange(i, i + len(b)) % 65535) if args.per_sample_seeds else 1
             for i, b in zip(range(0, args.images, args.batch), batches)]

    def timed(fn):
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best

    spikes = [encode.rate(b, args.timesteps, seed=s) for b, s in zip(batches, seeds)]   # also warms the LFSR tables
    t_enc = timed(lambda: [encode.rate(b, args.timesteps, seed=s) for b, s in zip(batches, seeds)])
    results = {}
    for method in args.methods.split(","):
        golden.simulate(net, spikes[0][:8], method=method)                    # warm-up (BLAS threads, caches)
        t_sim = timed(lambda: [golden.simulate(net, s, method=method) for s in spikes])
        t_both = timed(lambda: [golden.simulate(net, encode.rate(b, args.timesteps, seed=s), method=method)
                                for b, s in zip(batches, seeds)])
        results[method] = {"simulate_images_per_s": args.images / t_sim,
                           "encode_plus_simulate_images_per_s": args.images / t_both}
    report = {
        "network": args.sizes, "timesteps": args.timesteps, "membrane_bits": args.membrane_bits,
        "encoding": "rate", "per_sample_seeds": args.per_sample_seeds, "images": args.images, "batch": args.batch, "repeats": args.repeats,
        "blas_threads": threads, "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "numpy": np.__version__, "torch": "not used", "encode_images_per_s": args.images / t_enc, "methods": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"golden model, {args.sizes} network, T = {args.timesteps}, M = {args.membrane_bits}, rate-coded, "
          f"{args.images} images in batches of {args.batch}, best of {args.repeats}"
          + (", one LFSR seed per image" if args.per_sample_seeds else ", one LFSR seed for all images"))
    print(f"numpy {np.__version__}, BLAS threads: {threads}, cores: {os.cpu_count()}, torch: not used by the golden "
          f"model, load average (1 min) at the end: {report['load_average_1min']:.2f}")
    print(f"{'rate encoding alone':<28}{report['encode_images_per_s']:>12,.0f} images/s")
    for method, r in results.items():
        print(f"{'simulate, ' + method:<28}{r['simulate_images_per_s']:>12,.0f} images/s")
        print(f"{'encode + simulate, ' + method:<28}{r['encode_plus_simulate_images_per_s']:>12,.0f} images/s")
    return 0


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
