"""Hardware figures of a conv (or any v2) network: bit-exact on real test images on both simulators, cycles measured
against the formula, resources and Fmax on ECP5-25F and the iCE40 UP5K (or the UP5K's refusal, with its numbers).

    .venv/bin/python bench/conv_hw.py --model conv.bsnn --data fashion-mnist --samples 100 -P 4,1,4,1,1
    .venv/bin/python bench/conv_hw.py --model conv.bsnn --sims verilator --targets ecp5 --json -o conv_hw.json

Each simulator run is `bsnn-hw verify` (sim/verify.py): every dense layer's spikes and every conv/pool layer's spike
count at every step, the last layer's counts and membranes and the class, against the golden model. Synthesis is
`bsnn-hw synth` (hdl/synth.py): Yosys + nextpnr, core resources, Fmax of the wrapped design; results are cached by
content. A fresh run takes minutes per simulator and target on a shared 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def run(args) -> dict:
    from bsnn_hw import load
    from bsnn_hw.hdl import HwConfig, cycles_per_inference, generate
    from bsnn_hw.hdl import synth as hsynth
    from bsnn_hw.hdl.cli import parse_list
    from bsnn_hw.sim.verify import load_inputs, verify

    net = load(args.model)
    config = HwConfig.from_lists(net, parse_list("--parallel", args.parallel), parse_list("--width", args.width))
    config.validate(net)
    rep = dict(model=args.model, layers=[repr(layer) for layer in net.layers], timesteps=net.timesteps,
               parallel=[lc.parallel for lc in config.layers], width=[lc.width for lc in config.layers],
               cycles_formula=cycles_per_inference(net, config), sims={}, targets={})
    x, spikes, labels, what = load_inputs(net, args.data, args.samples, seed=0, offset=args.offset)
    rep["samples"] = what
    for sim in [s for s in args.sims.split(",") if s]:
        t0 = time.perf_counter()
        r = verify(net, spikes, labels, sim=sim, config=config, data=args.data, offset=args.offset)
        rep["sims"][sim] = dict(agree=r["agree"], samples=r["samples"], mismatches=r["mismatches"],
                                first_mismatch=r["first_mismatch_text"], accuracy=r["accuracy"],
                                cycles_measured=r["cycles_per_inference"]["measured"],
                                cycles_manifest_trace=r["cycles_per_inference"]["manifest"],
                                spikes_per_layer=r["spikes_per_layer"], seconds=round(time.perf_counter() - t0, 1),
                                speed=r["speed"])
    design = generate(net, config)
    for target in [t for t in args.targets.split(",") if t]:
        device = {"ice40": "up5k", "ecp5": "25k"}.get(target)
        rep["targets"][target] = hsynth.fit_and_implement(
            design, target, device, pnr=not args.no_pnr, freq=args.freq,
            fields=("part", "resources", "capacity", "fmax_mhz", "latency_us", "images_per_s", "memory_plan"))
    return rep


def show(rep: dict) -> None:
    print(f"model {rep['model']}: T = {rep['timesteps']}, P = {rep['parallel']}, W = {rep['width']}")
    for layer in rep["layers"]:
        print(f"  {layer}")
    print(f"cycles per inference (formula, no trace): {rep['cycles_formula']:,}")
    print(f"samples: {rep['samples']}")
    for sim, r in rep["sims"].items():
        acc = r["accuracy"]
        print(f"{sim:>9}: {r['agree']}/{r['samples']} bit-exact, {r['mismatches']} mismatches"
              + (f" (first: {r['first_mismatch']})" if r["first_mismatch"] else "")
              + f"; hardware accuracy {acc.get('hardware', float('nan')):.2%}, golden {acc.get('golden', float('nan')):.2%}"
              + f"; cycles measured {r['cycles_measured']} = formula with trace {r['cycles_manifest_trace']}"
              + f"; {r['seconds']} s ({r['speed']['cycles_per_second']} cycles/s)")
    for target, r in rep["targets"].items():
        if "refused" in r:
            print(f"{target:>9}: refused before synthesis: {r['refused']}")
            continue
        if "failed" in r:
            print(f"{target:>9}: the flow failed: {r['failed']}")
            continue
        res, cap = r["resources"], r.get("capacity") or {}
        line = (f"{target:>9} ({r['part']}): LUT4 {res.get('lut')}/{cap.get('luts')}, FF {res.get('ff')}/"
                f"{cap.get('ffs')}, block RAM {res.get('bram')}/{cap.get('brams')}")
        if r.get("fmax_mhz"):
            line += f", Fmax {r['fmax_mhz']:.1f} MHz -> {r['latency_us']:,} us/inference, {r['images_per_s']:,}/s"
        print(line + f" [{r['seconds']} s]")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a .bsnn artifact (conv, pool, k-bit or dense layers)")
    ap.add_argument("--data", default="fashion-mnist", help="test split to run (default fashion-mnist)")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("-P", "--parallel", default=None, help="neuron lanes per layer (as generate)")
    ap.add_argument("-W", "--width", default=None, help="word width per layer (as generate)")
    ap.add_argument("--sims", default="verilator,icarus")
    ap.add_argument("--targets", default="ecp5,ice40")
    ap.add_argument("--no-pnr", action="store_true")
    ap.add_argument("--freq", type=float, default=12.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("-o", "--out", default=None)
    args = ap.parse_args(argv)
    try:
        rep = run(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rep, f, indent=1, default=str)
    if args.json:
        print(json.dumps(rep, indent=1, default=str))
    else:
        show(rep)
    ok = all(r["agree"] == r["samples"] for r in rep["sims"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
