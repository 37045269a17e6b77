"""An ensemble in hardware against its MAP network: bit-exact on real test images, and what the ensemble costs.

    .venv/bin/python bench/ensemble_hw.py --model bisnn.bsnn --data fashion-mnist --samples 100 -P 16,2
    .venv/bin/python bench/ensemble_hw.py --model bisnn.bsnn --sims verilator,icarus --icarus-samples 10 \
        --targets ecp5 --device 85k --json -o ensemble_hw.json

For the ensemble (the artifact's S members: weight banks run one after another, totals and votes on chip) and for
its MAP network (``--map-only``), under the same folding, it prints:

- ROM bits and all memory bits (manifest), cycles per inference (the formula, and measured in simulation);
- with ``--targets``: LUT4, FF, block RAM and Fmax from Yosys + nextpnr (``bsnn-hw synth``), or the fit check's
  refusal with its numbers; latency = cycles / Fmax;
- per simulator: ``bsnn-hw verify`` of the ensemble on ``--samples`` test images (Icarus: ``--icarus-samples``,
  it simulates ~50x slower): every member's spikes at every step, the last member's counts and membranes, the
  per-class totals and votes, the ensemble's class, against ``bsnn_hw.ensemble`` (golden); hardware accuracy next
  to the golden ensemble's and the MAP network's.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def _costs(design) -> dict:
    m = design.manifest
    rom = sum(mem["bits"] for layer in m["layers"] for mem in layer["memories"] if mem["kind"] == "rom")
    return dict(members=m["members"], rom_bits=rom, memory_bits=m["memory_bits"],
                cycles_per_inference=m["cycles_per_inference"],
                memories=[dict(name=d["name"], depth=d["depth"], width=d["width"]) for d in m["memories"]])


def run(args) -> dict:

    from bsnn_hw import ensemble, golden, load
    from bsnn_hw.hdl import HwConfig, generate
    from bsnn_hw.hdl import synth as hsynth
    from bsnn_hw.hdl.cli import parse_list, select_network
    from bsnn_hw.sim.verify import load_inputs, verify

    net = load(args.model)
    if len(net.ensemble) < 2:
        raise SystemExit(f"error: {args.model} carries no ensemble of 2 or more members (it has "
                         f"{len(net.ensemble)}); train one with `bsnn-hw train --method bisnn`")
    map_net = select_network(net, True)
    config = HwConfig.from_lists(net, parse_list("--parallel", args.parallel), parse_list("--width", args.width))
    config.validate(net)
    designs = {"ensemble": generate(net, config), "map": generate(map_net, config)}
    rep = dict(model=args.model, sizes=net.sizes, timesteps=net.timesteps, readout=net.readout,
               members=len(net.ensemble), parallel=[lc.parallel for lc in config.layers],
               width=[lc.width for lc in config.layers], cost={k: _costs(d) for k, d in designs.items()},
               sims={}, targets={})
    c_e, c_m = rep["cost"]["ensemble"], rep["cost"]["map"]
    rep["ratios"] = dict(rom_bits=round(c_e["rom_bits"] / c_m["rom_bits"], 2),
                         memory_bits=round(c_e["memory_bits"] / c_m["memory_bits"], 2),
                         cycles=round(c_e["cycles_per_inference"] / c_m["cycles_per_inference"], 2))

    x, spikes, labels, what = load_inputs(net, args.data, args.samples, seed=0, offset=args.offset)
    rep["inputs"] = what
    if labels is not None:
        ens = ensemble.simulate(net, spikes)
        rep["golden_accuracy"] = dict(ensemble=float((ens.prediction == labels).mean()),
                                      map=float((golden.simulate(map_net, spikes).prediction == labels).mean()))
    for sim in [s for s in args.sims.split(",") if s]:
        n = args.icarus_samples if sim == "icarus" else args.samples
        t0 = time.perf_counter()
        r = verify(net, spikes[:n], None if labels is None else labels[:n], sim=sim, config=config, data=args.data,
                   offset=args.offset)
        rep["sims"][sim] = dict(agree=r["agree"], samples=r["samples"], mismatches=r["mismatches"],
                                first_mismatch=r["first_mismatch_text"], accuracy=r["accuracy"],
                                cycles_measured=r["cycles_per_inference"]["measured"],
                                cycles_formula_with_trace=r["cycles_per_inference"]["manifest"],
                                seconds=round(time.perf_counter() - t0, 1), speed=r["speed"])
    for target in [t for t in args.targets.split(",") if t]:
        device = args.device or {"ice40": "up5k", "ecp5": "85k"}.get(target)
        rep["targets"][target] = {}
        for kind, design in designs.items():
            rep["targets"][target][kind] = hsynth.fit_and_implement(design, target, device, pnr=not args.no_pnr,
                                                                    freq=args.freq)
    return rep


def show(rep: dict) -> None:
    print(f"{rep['model']}: {'-'.join(map(str, rep['sizes']))}, T={rep['timesteps']}, readout {rep['readout']}, "
          f"an ensemble of {rep['members']}; P={rep['parallel']}, W={rep['width']}")
    print(f"\n{'':10} {'ROM bits':>12} {'memory bits':>12} {'cycles/inference':>17}")
    for kind in ("map", "ensemble"):
        c = rep["cost"][kind]
        print(f"{kind:10} {c['rom_bits']:>12,} {c['memory_bits']:>12,} {c['cycles_per_inference']:>17,}")
    r = rep["ratios"]
    print(f"{'ratio':10} {r['rom_bits']:>11}x {r['memory_bits']:>11}x {r['cycles']:>16}x")
    if "golden_accuracy" in rep:
        g = rep["golden_accuracy"]
        print(f"\ngolden accuracy on {rep['inputs']}: ensemble {100 * g['ensemble']:.2f}%, MAP {100 * g['map']:.2f}%")
    for sim, s in rep["sims"].items():
        acc = s["accuracy"].get("hardware")
        print(f"{sim}: {s['agree']}/{s['samples']} samples bit-exact ({s['mismatches']} mismatches"
              f"{'; first: ' + s['first_mismatch'] if s['first_mismatch'] else ''}); hardware accuracy "
              f"{'-' if acc is None else f'{100 * acc:.2f}%'}; cycles measured {s['cycles_measured']} = formula "
              f"{s['cycles_formula_with_trace']} (with trace); {s['seconds']} s")
    for target, kinds in rep["targets"].items():
        for kind, t in kinds.items():
            if "refused" in t or "failed" in t:
                print(f"{target} {kind}: {t.get('refused') or t.get('failed')}")
                continue
            res = t["resources"]
            print(f"{target} {kind} ({t['part']}): " + ", ".join(f"{k} {v}" for k, v in res.items()) +
                  f"; Fmax {t['fmax_mhz']} MHz; latency {t['latency_us']} us; {t['seconds']} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--icarus-samples", type=int, default=10)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("-P", "--parallel", default=None)
    ap.add_argument("-W", "--width", default=None)
    ap.add_argument("--sims", default="verilator")
    ap.add_argument("--targets", default="")
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-pnr", action="store_true")
    ap.add_argument("--freq", type=float, default=12.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("-o", "--out", default=None, help="also write the JSON report here")
    args = ap.parse_args(argv)
    rep = run(args)
    if args.out:
        from bsnn_hw.io import atomic_write
        with atomic_write(args.out) as f:
            json.dump(rep, f, indent=2)
    if args.json:
        json.dump(rep, sys.stdout, indent=2)
        print()
    else:
        show(rep)
    ok = all(s["agree"] == s["samples"] for s in rep["sims"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
