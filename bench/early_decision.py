"""Early decision and zero-word skipping, measured: the same network and folding generated twice - plain, and with
``early_exit`` + ``skip_zero`` - run on the same test images in simulation; cycles per inference of both (every
sample's measured figure, checked against the per-sample formula), their ratio, the decision steps, and whether the
predictions are identical (they must be: the early decision does not change the class).

    .venv/bin/python bench/early_decision.py --model bstdg.bsnn --data fashion-mnist --samples 200
    .venv/bin/python bench/early_decision.py --model bstdg.bsnn --samples 50 -P 8,2 -W 16,16 --sim icarus

The model needs the "first" readout (a BSTDG network: IF neurons, latency code, fire-once). Throughput figures
count, for the early design, the input beats it takes and drops after deciding (``drain``), since the next sample
cannot start before them.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def run(args) -> dict:
    from bsnn_hw import load
    from bsnn_hw.hdl import HwConfig
    from bsnn_hw.hdl.cli import parse_list
    from bsnn_hw.hdl.config import sample_cycles
    from bsnn_hw.sim.verify import load_inputs, verify

    net = load(args.model)
    if net.readout != "first":
        raise ValueError(f"the model's readout is {net.readout!r}: the early decision needs 'first'")
    P, W = parse_list("--parallel", args.parallel), parse_list("--width", args.width)
    plain = HwConfig.from_lists(net, P, W)
    early = HwConfig.from_lists(net, P, W, early_exit=True, skip_zero=True)
    x, spikes, labels, what = load_inputs(net, args.data, args.samples, seed=0, offset=args.offset)
    rep = dict(model=args.model, samples=what, simulator=args.sim, timesteps=net.timesteps,
               parallel=[lc.parallel for lc in plain.layers], width=[lc.width for lc in plain.layers])
    runs = {}
    for name, cfg in (("plain", plain), ("early+skip", early)):
        r = verify(net, spikes, labels, sim=args.sim, config=cfg, data=args.data, offset=args.offset)
        measured = np.array([s["cycles"] for s in r["per_sample"]])
        want = sample_cycles(net, cfg, spikes[:len(measured)], trace=True)
        drain = np.array([w["drain"] for w in want])
        runs[name] = dict(agree=r["agree"], checked=r["checked"], accuracy=r["accuracy"],
                          predictions=[s["hw_class"] for s in r["per_sample"]],
                          cycles_median=float(np.median(measured)), cycles_mean=float(measured.mean()),
                          cycles_min=int(measured.min()), cycles_max=int(measured.max()),
                          formula_equal=int(sum(m == w["cycles"] for m, w in zip(measured, want))),
                          period_mean=float((measured + drain).mean()),
                          decision_steps=[w["step"] for w in want])
    a, b = runs["plain"], runs["early+skip"]
    steps = np.array(b["decision_steps"])
    rep.update(runs=runs, identical_predictions=a["predictions"] == b["predictions"],
               ratio_mean=a["cycles_mean"] / b["cycles_mean"], ratio_median=a["cycles_median"] / b["cycles_median"],
               ratio_period=a["period_mean"] / b["period_mean"],
               decision_step_median=float(np.median(steps)), decision_step_target=net.timesteps / 3)
    for r in runs.values():
        del r["predictions"], r["decision_steps"]
    return rep


def show(rep: dict) -> None:
    print(f"{rep['model']}: T = {rep['timesteps']}, P = {rep['parallel']}, W = {rep['width']}; {rep['samples']}; "
          f"{rep['simulator']}")
    for name, r in rep["runs"].items():
        print(f"  {name:>10}: {r['agree']}/{r['checked']} bit-exact, accuracy {r['accuracy'].get('hardware', 0):.2%}; "
              f"cycles median {r['cycles_median']:,.0f} mean {r['cycles_mean']:,.0f} (range {r['cycles_min']:,}.."
              f"{r['cycles_max']:,}), formula on {r['formula_equal']}/{r['checked']}; mean period with the input "
              f"drain {r['period_mean']:,.0f}")
    print(f"  fewer cycles: x{rep['ratio_mean']:.2f} (mean), x{rep['ratio_median']:.2f} (median), "
          f"x{rep['ratio_period']:.2f} (period incl. drain); identical predictions: {rep['identical_predictions']}; "
          f"median decision step {rep['decision_step_median']:g} (T/3 = {rep['decision_step_target']:.1f})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("-P", "--parallel", default=None)
    ap.add_argument("-W", "--width", default=None)
    ap.add_argument("--sim", default="verilator", choices=["verilator", "icarus"])
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
    print(json.dumps(rep, indent=1, default=str)) if args.json else show(rep)
    ok = rep["identical_predictions"] and all(r["agree"] == r["checked"] for r in rep["runs"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
