"""Event-driven (input-major) layers against the dense organization, measured: the same network and P per layer
generated as dense, dense with zero-word skipping, and event-driven (every dense layer that reads spikes), run on the
same test images in RTL simulation. Prints, per organization, each sample's measured cycles (median, mean, range),
how many equal the per-sample formula, whether every sample is bit-exact and the predictions identical, the DSE's
predicted LUT4/FF/block RAM, and with ``--synth`` the synthesized resources and Fmax (so microseconds per inference
at the measured mean cycles) and the cost model's error on them.

    .venv/bin/python bench/event_compare.py --model fashion128.bsnn --data fashion-mnist --samples 100 \\
        -P 16,2 -W 16,16 --synth ice40
    .venv/bin/python bench/event_compare.py --model bstdg.bsnn --data fashion-mnist --samples 100 -P 32,2 \\
        -W 16,16 --early-exit --synth ecp5 --device 85k

``--early-exit`` (a "first" readout model) adds the early decision to all three. The spike density of each layer's
input is printed too: an event-driven layer costs G * max(1, spikes) cycles per step where a dense one costs G * NW.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np


def configs(net, P, W, early):
    from bsnn_hw.hdl import HwConfig
    from bsnn_hw.hdl.config import reads_spike_vector
    dense = HwConfig.from_lists(net, P, W, early_exit=early)
    ev = dataclasses.replace(dense, layers=tuple(dataclasses.replace(lc, events=reads_spike_vector(net, i))
                                                 for i, lc in enumerate(dense.layers)))
    return {"dense": dense, "skip": dataclasses.replace(dense, skip_zero=True), "events": ev}


def run(args) -> dict:
    from bsnn_hw import load
    from bsnn_hw.hdl import dse
    from bsnn_hw.hdl.cli import parse_list
    from bsnn_hw.hdl.config import sample_cycles
    from bsnn_hw.sim.verify import load_inputs, verify

    net = load(args.model)
    P, W = parse_list("--parallel", args.parallel), parse_list("--width", args.width)
    cfgs = configs(net, P, W, args.early_exit)
    x, spikes, labels, what = load_inputs(net, args.data, args.samples, seed=0, offset=args.offset)
    stats = dse.spike_statistics(net, spikes)
    density = {i: float(c.mean() / net.layers[i].n_in) for i, c in stats.items()}
    rep = dict(model=args.model, sizes=net.sizes, timesteps=net.timesteps, encoding=net.encoding, samples=what,
               simulator=args.sim, parallel=P, width=W, early_exit=args.early_exit,
               input_density_per_step=density, runs={})
    preds = {}
    for name, cfg in cfgs.items():
        r = verify(net, spikes, labels, sim=args.sim, config=cfg, data=args.data, offset=args.offset)
        measured = np.array([s["cycles"] for s in r["per_sample"]])
        want = sample_cycles(net, cfg, spikes[:len(measured)], trace=True)
        preds[name] = [s["hw_class"] for s in r["per_sample"]]
        run_ = dict(agree=r["agree"], checked=r["checked"], accuracy=r["accuracy"].get("hardware"),
                    cycles_median=float(np.median(measured)), cycles_mean=float(measured.mean()),
                    cycles_min=int(measured.min()), cycles_max=int(measured.max()),
                    formula_equal=int(sum(m == w["cycles"] for m, w in zip(measured, want))),
                    worst_case=r["cycles_per_inference"]["manifest"])
        if args.target:
            est = dse.estimate(net, dataclasses.replace(cfg, early_exit=False, skip_zero=False), args.target,
                               args.device, stats=stats)
            run_["predicted"] = dict(lut=est.lut, ff=est.ff, bram=est.bram)
        if args.synth:
            from bsnn_hw.hdl.synth import implement
            res = implement(net, cfg, target=args.synth, device=args.device, pnr=True)
            rr = res["resources"]
            fmax = res.get("fmax_mhz")
            run_["measured"] = dict(lut=int(rr["lut"]), ff=int(rr["ff"]), bram=int(rr["bram"]), fmax_mhz=fmax,
                                    us_mean=round(run_["cycles_mean"] / fmax, 2) if fmax else None)
            if "predicted" in run_:
                run_["lut_error_pct"] = round(100 * (run_["predicted"]["lut"] - rr["lut"]) / rr["lut"], 1)
                run_["ff_error_pct"] = round(100 * (run_["predicted"]["ff"] - rr["ff"]) / rr["ff"], 1)
        rep["runs"][name] = run_
    rep["identical_predictions"] = preds["dense"] == preds["skip"] == preds["events"]
    d, e = rep["runs"]["dense"], rep["runs"]["events"]
    rep["speedup_mean_events_vs_dense"] = round(d["cycles_mean"] / e["cycles_mean"], 2)
    rep["speedup_mean_events_vs_skip"] = round(rep["runs"]["skip"]["cycles_mean"] / e["cycles_mean"], 2)
    return rep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("-P", "--parallel", required=True)
    ap.add_argument("-W", "--width", required=True)
    ap.add_argument("--early-exit", action="store_true")
    ap.add_argument("--sim", default="verilator", choices=["verilator", "icarus"])
    ap.add_argument("--target", default=None, choices=["ice40", "ecp5"], help="predict resources for this target")
    ap.add_argument("--synth", default=None, choices=["ice40", "ecp5"], help="synthesize and place each design")
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", default=None, help="also write the report here")
    args = ap.parse_args(argv)
    if args.synth and not args.target:
        args.target = args.synth
    rep = run(args)
    print(f"{rep['model']}: {'-'.join(map(str, rep['sizes']))}, T={rep['timesteps']}, {rep['encoding']}; "
          f"{rep['samples']}; P={rep['parallel']} W={rep['width']}"
          + (", early exit" if rep["early_exit"] else ""))
    print("input spike density per step: " + ", ".join(f"layer {i}: {d:.3f}"
                                                       for i, d in rep["input_density_per_step"].items()))
    hdr = f"{'organization':<10} {'bit-exact':>10} {'=formula':>9} {'cycles median':>14} {'mean':>10} " \
          f"{'range':>17} {'worst case':>11}"
    print(hdr)
    for name, r in rep["runs"].items():
        print(f"{name:<10} {r['agree']:>4}/{r['checked']:<5} {r['formula_equal']:>9} {r['cycles_median']:>14,.0f} "
              f"{r['cycles_mean']:>10,.0f} {r['cycles_min']:>8,}-{r['cycles_max']:<8,} {r['worst_case']:>11,}")
    for name, r in rep["runs"].items():
        if "predicted" in r or "measured" in r:
            p, m = r.get("predicted", {}), r.get("measured", {})
            print(f"{name:<10} predicted {p.get('lut', '-')} LUT4 {p.get('ff', '-')} FF {p.get('bram', '-')} BRAM"
                  + (f"; measured {m['lut']} LUT4 {m['ff']} FF {m['bram']} BRAM, "
                     f"{m['fmax_mhz']} MHz -> {m['us_mean']} us per inference (mean cycles); "
                     f"LUT error {r.get('lut_error_pct')}%, FF error {r.get('ff_error_pct')}%" if m else ""))
    print(f"identical predictions: {rep['identical_predictions']}; events vs dense {rep['speedup_mean_events_vs_dense']}x, "
          f"vs skip {rep['speedup_mean_events_vs_skip']}x fewer cycles (means)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rep, f, indent=2)
    ok = all(r["agree"] == r["checked"] and r["formula_equal"] == r["checked"] for r in rep["runs"].values())
    return 0 if ok and rep["identical_predictions"] else 1


if __name__ == "__main__":
    sys.exit(main())
