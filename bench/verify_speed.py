"""How fast `bsnn-hw verify` checks a 784-128-10 network on Fashion-MNIST, and cycles/s on both simulators.

    .venv/bin/python bench/verify_speed.py                       # random 784-128-10 model, T = 16
    .venv/bin/python bench/verify_speed.py --model out/fashion.bsnn --samples 200 --icarus-samples 5

Target (issue 5): 200 Fashion-MNIST test images through the Verilator RTL, bit-exact against the golden model, in at
most 5 minutes on 2 cores. The wall time printed includes everything `verify` does: Verilog generation, the
simulator build (a cold build unless --warm), the simulation and the comparison. Icarus is run on fewer samples
(it is ~20x slower) for its cycles/s. Timings on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a .bsnn with 784 inputs (default: a random 784-128-10, T=16, rate coded)")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--icarus-samples", type=int, default=3, help="0 to skip Icarus")
    ap.add_argument("--timesteps", type=int, default=16, help="T of the random model")
    ap.add_argument("--warm", action="store_true", help="reuse a cached simulator build if there is one")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import bsnn_hw
    from bsnn_hw.sim import verify as vmod
    if args.model:
        net = bsnn_hw.load(args.model)
        origin = f"trained model {args.model}"
    else:
        net = bsnn_hw.random_network([784, 128, 10], timesteps=args.timesteps, seed=0)
        origin = f"random 784-128-10 model (seed 0, T={args.timesteps}, rate coded, untrained)"
    cache = None if args.warm else Path(tempfile.mkdtemp(prefix="bsnn-verify-speed-"))
    out = {"model": origin, "sizes": net.sizes, "timesteps": net.timesteps}
    for sim, n in (("verilator", args.samples), ("icarus", args.icarus_samples)):
        if n <= 0:
            continue
        t0 = time.perf_counter()
        x, spikes, labels, what = vmod.load_inputs(net, "fashion-mnist", n)
        r = vmod.verify(net, spikes, labels, sim=sim, cache_dir=cache)
        wall = time.perf_counter() - t0
        out[sim] = dict(samples=n, inputs=what, wall_seconds=round(wall, 1), mismatches=r["mismatches"],
                        agree=r["agree"], cycles_per_inference=r["cycles_per_inference"]["measured"],
                        manifest_cycles=r["cycles_per_inference"]["manifest"], **r["speed"],
                        accuracy=r["accuracy"])
        if not args.json:
            s = out[sim]
            print(f"{sim:9s}: {n} samples ({what}) in {s['wall_seconds']:.1f} s wall "
                  f"(build {s['build_seconds']} s{' cold' if cache else ''}, simulation {s['sim_seconds']:.1f} s); "
                  f"{s['agree']}/{n} bit-exact, {s['mismatches']} mismatches; "
                  f"{s['cycles_per_inference']} cycles/inference (manifest {s['manifest_cycles']}); "
                  f"{s['cycles_per_second']:,} cycles/s", flush=True)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"model: {origin}")
        v = out.get("verilator")
        if v:
            verdict = "meets" if v["wall_seconds"] <= 300 else "MISSES"
            print(f"target: {args.samples} samples on Verilator in <= 300 s: {v['wall_seconds']:.0f} s ({verdict})")
    bad = any(out[s]["mismatches"] for s in ("verilator", "icarus") if s in out)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
