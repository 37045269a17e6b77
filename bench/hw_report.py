"""Hardware report for issue 4: resources, Fmax and throughput of a 784-128-10 binary SNN, and the B-SNN paper's
memory / computation table.

For each folding point (per-layer P and W; default: the generator's defaults, then a few more with --points):
- iCE40 UP5K (SG48): LUT4, DFF, EBR (SB_RAM40_4K), carry cells (Yosys synth_ice40) and Fmax (nextpnr-ice40) against
  issue 4's targets: <= 5,280 LUT4 (aim <= 2,000 at P = 1), weights <= 30 EBR, Fmax >= 30 MHz;
- ECP5 LFE5U-25F (synth_ecp5 + nextpnr-ecp5) and Xilinx 7-series (synth_xilinx; no place-and-route) resources;
- cycles per inference from the manifest, and latency and inferences/s at the measured Fmax.
Then the B-SNN paper's table (Karimah et al., Electronics 2025, Table "memory saving / computational saving") for this
network: weight memory against 32-bit float weights, and the T * sum(n_in * n_out) multiply-accumulates per inference
that the hardware replaces by W-bit XNOR-popcounts and adds.

    .venv/bin/python bench/hw_report.py                          # default point, all three targets
    .venv/bin/python bench/hw_report.py --points default,p1,p2,w32   # more folding points
    .venv/bin/python bench/hw_report.py --points bound --targets ice40,ecp5   # the block-RAM-bandwidth point
    .venv/bin/python bench/hw_report.py --targets ice40 --no-pnr      # resources only, fastest
    .venv/bin/python bench/hw_report.py --model trained.bsnn --json -o report.json

Resources are the core top's alone; the Fmax is measured with the core inside a synthesis-only IO wrapper that
narrows the ports to a few registered pins (docs/synthesis.md). Results are cached by content hash
(``~/.cache/bsnn-hw/synth``, or ``$BSNN_HW_CACHE/synth``): a rerun prints at once. A fresh run takes minutes per point
and target on a shared 2-core machine; the tool times printed are noisy there. A random network's weights are fair coin
flips, so its ROM contents (and the LUT count of anything that is not block RAM) are those of a trained network of
the same size to within noise; pass --model for a trained one.
"""
from __future__ import annotations

import argparse
import json
import sys

POINTS = {
    # name: (per-layer P, per-layer W) for a two-layer network; None = the generator's default for that layer
    "default": (None, None),
    "p1": ([1, 1], [16, 16]),
    "p2": ([2, 1], [16, 16]),
    "p4": ([4, 1], [16, 16]),
    "w8": ([1, 1], [8, 8]),
    "w32": ([1, 1], [32, 32]),
    # issue 11's block-RAM-bandwidth point for the UP5K: 784 inputs as 4 words of 196 bits, 2 lanes (392 weight bits
    # per cycle from 25 EBRs at depth 256), the threshold and second weight ROMs in 3 spare EBRs
    "bound": ([2, 1], [196, 16], dict(logic_rom_bits=1024)),
}
TARGETS = {"ice40": "up5k", "ecp5": "25k", "xilinx": "xc7a35t"}
GOALS = {"lut4_max": 5280, "lut4_aim_p1": 2000, "weight_ebr_max": 30, "fmax_min_mhz": 30.0}


def folding(net, name):
    from bsnn_hw.hdl import HwConfig
    if name not in POINTS:
        raise SystemExit(f"error: --points: unknown point {name!r}; known: {', '.join(POINTS)}")
    parallel, width, *kw = POINTS[name]
    if parallel is not None and len(parallel) != len(net.layers):
        parallel = [parallel[0]] + [1] * (len(net.layers) - 1)
    if width is not None and len(width) != len(net.layers):
        width = [width[0]] * len(net.layers)
    if width is not None:
        width = [min(w, layer.n_in) for w, layer in zip(width, net.layers)]
    return HwConfig.from_lists(net, parallel, width, **(kw[0] if kw else {}))


def operations(net, config) -> dict:
    """Per inference: the multiply-accumulates of a float network of the same topology and what replaces them here.

    A float SNN computes T * sum_l n_in_l * n_out_l synaptic multiply-accumulates (32-bit weight times spike, summed).
    The hardware computes, per step, layer and neuron, ceil(n_in / W) W-bit XNOR-popcounts (each covering W synapses)
    and as many adds of their partial sums into the neuron's sum, then one membrane update (leak, add, saturate,
    compare, reset) per neuron and step."""
    from bsnn_hw.contract import ceil_div
    macs = popcounts = adds = updates = 0
    for layer, lc in zip(net.layers, config.layers):
        nw = ceil_div(layer.n_in, lc.width)
        macs += net.timesteps * layer.n_in * layer.n_out
        popcounts += net.timesteps * layer.n_out * nw
        adds += net.timesteps * layer.n_out * nw
        updates += net.timesteps * layer.n_out
    return {"macs_float": macs, "xnor_popcounts": popcounts, "popcount_width": [lc.width for lc in config.layers],
            "adds": adds, "neuron_updates": updates, "synapses_per_popcount": macs / popcounts}


def memory(net) -> dict:
    """Parameter memory: binary weights (1 bit) and integer thresholds (membrane width) here, against 32-bit float
    weights and 32-bit float thresholds/biases in a float network of the same topology."""
    weights = net.weight_bits()
    neurons = sum(layer.n_out for layer in net.layers)
    thr_bits = sum(layer.n_out * layer.membrane_bits for i, layer in enumerate(net.layers) if net.layer_fires(i))
    return {"weight_bits": weights, "float_weight_bits": 32 * weights, "threshold_bits": thr_bits,
            "float_parameter_bits": 32 * (weights + neurons),
            "saving_weights": 32.0, "saving_parameters": 32 * (weights + neurons) / (weights + thr_bits)}


def weight_ebr(manifest, target="ice40") -> int:
    from bsnn_hw.hdl.synth import expected_brams
    return expected_brams([m for m in manifest["memories"] if m["name"].endswith("_weights")], target)


def run(args):
    from bsnn_hw import load
    from bsnn_hw.hdl import generate
    from bsnn_hw.hdl.synth import ToolError, implement
    from bsnn_hw.network import random_network

    if args.model:
        net = load(args.model)
        source = args.model
    else:
        sizes = [int(s) for s in args.sizes.split("-")]
        net = random_network(sizes, timesteps=args.timesteps, seed=args.seed)
        source = f"random {args.sizes}, T={args.timesteps}, seed {args.seed}"
    points = []
    for name in args.points.split(","):
        config = folding(net, name)
        design = generate(net, config)
        m = design.manifest
        entry = {"point": name, "parallel": [lc.parallel for lc in config.layers],
                 "width": [lc.width for lc in config.layers], "cycles_per_inference": m["cycles_per_inference"],
                 "memory_bits": m["memory_bits"], "weight_ebr_estimate": weight_ebr(m), "targets": {},
                 "operations": operations(net, config)}
        for target in args.targets.split(","):
            if target not in TARGETS:
                raise SystemExit(f"error: --targets: unknown target {target!r}; known: {', '.join(TARGETS)}")
            pnr = (not args.no_pnr) and target != "xilinx"
            print(f"[{name}] {target}: synthesis{' and place-and-route' if pnr else ''} ...", file=sys.stderr,
                  flush=True)
            try:
                seeds = args.seeds if pnr else [1]
                runs = [implement(net, target=target, device=TARGETS[target], pnr=pnr, design=design, seed=s)
                        if pnr else implement(net, target=target, device=TARGETS[target], pnr=False, design=design)
                        for s in seeds]
                res = runs[0]
                if pnr:
                    # nextpnr's placement is seeded; report every seed and check the worst
                    res["fmax_by_seed"] = {str(r["seed"]): r["fmax_mhz"] for r in runs}
                    worst = min(runs, key=lambda r: r["fmax_mhz"])
                    res["fmax_min_mhz"] = worst["fmax_mhz"]
                    res["fmax_max_mhz"] = max(r["fmax_mhz"] for r in runs)
            except ToolError as e:
                res = {"error": str(e)}
            entry["targets"][target] = res
        points.append(entry)
    return {"source": source, "sizes": net.sizes, "timesteps": net.timesteps, "goals": GOALS,
            "memory": memory(net), "points": points, "checks": checks(points)}


def checks(points) -> list[dict]:
    out = []
    for p in points:
        ice = p["targets"].get("ice40")
        if not ice or "error" in ice:
            continue
        r = ice["resources"]
        out.append({"point": p["point"], "check": "LUT4 <= 5,280", "value": r["lut"], "ok": r["lut"] <= 5280})
        if all(x == 1 for x in p["parallel"]):
            out.append({"point": p["point"], "check": "LUT4 <= 2,000 at P = 1 (aim)", "value": r["lut"],
                        "ok": r["lut"] <= 2000})
        out.append({"point": p["point"], "check": "weight ROMs <= 30 EBR (estimate from the ROM shapes)",
                    "value": p["weight_ebr_estimate"], "ok": p["weight_ebr_estimate"] <= 30})
        out.append({"point": p["point"], "check": "all block RAM <= 30 EBR (UP5K has 30; Yosys' count)",
                    "value": r["bram"], "ok": r["bram"] <= 30})
        if ice.get("fmax_mhz") is not None:
            fmax = ice.get("fmax_min_mhz", ice["fmax_mhz"])
            out.append({"point": p["point"], "check": f"Fmax >= 30 MHz on UP5K (lowest of "
                        f"{len(ice.get('fmax_by_seed', [1]))} seed(s))", "value": fmax, "ok": fmax >= 30})
    return out


def show(rep):
    from rich.console import Console
    from rich.table import Table
    con = Console(width=max(Console().width, 150))
    con.print(f"[bold]{rep['source']}[/]: {'-'.join(map(str, rep['sizes']))}, T={rep['timesteps']}")

    t = Table(title="iCE40 UP5K (SG48): core resources (Yosys), Fmax (nextpnr, IO-wrapped)")
    for c in ("point", "P", "W", "LUT4", "DFF", "EBR", "weight EBR", "carry", "LCs", "Fmax MHz (seeds)",
              "cycles/inf.", "latency us", "inf./s"):
        t.add_column(c, justify="right")
    for p in rep["points"]:
        ice = p["targets"].get("ice40")
        if not ice:
            continue
        if "error" in ice:
            t.add_row(p["point"], str(p["parallel"]), str(p["width"]), ice["error"][:60], *[""] * 9)
            continue
        r = ice["resources"]
        fmax = ice.get("fmax_min_mhz", ice.get("fmax_mhz"))
        lcs = (ice.get("utilization") or {}).get("ICESTORM_LC", {}).get("used")
        frange = "-" if fmax is None else (f"{fmax:.1f}" if ice.get("fmax_max_mhz", fmax) == fmax
                                           else f"{fmax:.1f}..{ice['fmax_max_mhz']:.1f}")
        cyc = p["cycles_per_inference"]
        t.add_row(p["point"], ",".join(map(str, p["parallel"])), ",".join(map(str, p["width"])), f"{r['lut']:,}",
                  f"{r['ff']:,}", str(r["bram"]), str(p["weight_ebr_estimate"]), f"{r['carry']:,}",
                  "-" if lcs is None else f"{lcs:,}", frange, f"{cyc:,}",
                  "-" if fmax is None else f"{cyc / fmax:,.0f}", "-" if fmax is None else f"{fmax * 1e6 / cyc:,.0f}")
    con.print(t)
    con.print("LUT4/DFF/EBR/carry: the core alone (Yosys); LCs: logic cells nextpnr used for the IO-wrapped design; "
              "Fmax: lowest..highest over the seeds (latency and inferences/s at the lowest).")

    t = Table(title="ECP5 LFE5U-25F and Xilinx 7-series (XC7A35T): core resources (Yosys)")
    for c in ("point", "target", "LUTs", "FFs", "block RAM", "carry", "LUT RAM", "Fmax MHz"):
        t.add_column(c, justify="right")
    for p in rep["points"]:
        for target in ("ecp5", "xilinx"):
            res = p["targets"].get(target)
            if not res:
                continue
            if "error" in res:
                t.add_row(p["point"], target, res["error"][:70], *[""] * 5)
                continue
            r = res["resources"]
            unit = "DP16KD" if target == "ecp5" else "RAMB18"
            t.add_row(p["point"], target, f"{r['lut']:,}", f"{r['ff']:,}", f"{r['bram']} {unit}", f"{r['carry']:,}",
                      f"{r.get('lutram', 0):,}", "-" if res.get("fmax_mhz") is None else f"{res['fmax_mhz']:.1f}")
    con.print(t)

    t = Table(title="issue 4 targets (iCE40 UP5K)")
    for c in ("point", "check", "value", "met"):
        t.add_column(c)
    for c in rep["checks"]:
        t.add_row(c["point"], c["check"], f"{c['value']:,}", "[green]yes[/]" if c["ok"] else "[red]NO[/]")
    con.print(t)

    mem = rep["memory"]
    p0 = rep["points"][0]
    ops = p0["operations"]
    t = Table(title="B-SNN paper's table for this network (per inference; operation counts, not measured energy)")
    for c in ("network", "parameter memory", "memory saving", "synaptic operations", "computational saving"):
        t.add_column(c, justify="right")
    t.add_row("float32 SNN, same topology", f"{mem['float_parameter_bits']:,} bits", "1.00x",
              f"{ops['macs_float']:,} MAC (32-bit)", "1.00x")
    t.add_row(f"B-SNN FULL (binary weights), W={','.join(map(str, ops['popcount_width']))}",
              f"{mem['weight_bits'] + mem['threshold_bits']:,} bits", f"{mem['saving_parameters']:.2f}x",
              f"{ops['xnor_popcounts']:,} XNOR-popcount + {ops['adds']:,} add",
              f"{ops['macs_float'] / (ops['xnor_popcounts'] + ops['adds']):.2f}x")
    con.print(t)
    con.print(f"weights alone: {mem['weight_bits']:,} bits against {mem['float_weight_bits']:,} (32.00x); with "
              f"thresholds ({mem['threshold_bits']:,} bits, integer) against float weights and biases: "
              f"{mem['saving_parameters']:.2f}x. Each XNOR-popcount covers W synapses "
              f"({ops['synapses_per_popcount']:.1f} on average); {ops['neuron_updates']:,} membrane updates (leak, "
              f"add, saturate, compare, reset) per inference in both networks.")
    con.print("For reference, the paper's B-SNN (FULL) on CIFAR-10 (VGG): 31.79x memory, 144.54x computational saving; "
              "its computational figure weighs binary operations as cheaper than MACs (XNOR-Net style), the count "
              "above does not.")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a .bsnn artifact (default: a random network of --sizes)")
    ap.add_argument("--sizes", default="784-128-10")
    ap.add_argument("--timesteps", "-T", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--points", default="default", help=f"comma list of folding points: {', '.join(POINTS)}")
    ap.add_argument("--targets", default="ice40,ecp5,xilinx")
    ap.add_argument("--no-pnr", action="store_true", help="resources only (no Fmax)")
    ap.add_argument("--seeds", default="1,2,3", help="nextpnr placement seeds (default 1,2,3); the table shows the "
                    "lowest Fmax and the range")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the tables")
    ap.add_argument("-o", "--out", default=None, help="also write the JSON report here")
    args = ap.parse_args(argv)
    args.seeds = [int(x) for x in args.seeds.split(",")]
    rep = run(args)
    if args.out:
        from bsnn_hw.io import write_json
        write_json(args.out, rep)
    if args.json:
        from bsnn_hw.cli import _json_default
        print(json.dumps(rep, indent=2, default=_json_default))
    else:
        show(rep)


if __name__ == "__main__":
    main()
