"""B-SNN against BNTT in hardware: what batch norm through time costs, measured (issue 15).

    .venv/bin/python bench/bntt_compare.py --model B-SNN=bsnn512.bsnn --model BNTT=bntt512.bsnn \
        --model "BNTT shared=bntt512_shared.bsnn" --exit BNTT --targets ice40,ecp5 -P 16,2 -W 16,16 \
        --sims verilator,icarus --samples 100 -o bntt_compare.json --markdown bntt_compare.md

Every ``--model NAME=PATH`` is a trained artifact of the same topology and T (B-SNN from ``bsnn-hw train``, BNTT from
``bsnn-hw train --method bntt``, per-step or shared variant). ``--exit NAME`` adds that model cut to the exit step
its trainer stored (``metadata.bntt.exit_step``, :func:`bsnn_hw.truncate`): BNTT with its early exit. For each
model, under the same folding (-P/-W), it prints:

- integer test accuracy: the golden model on the whole test split (``--test-samples`` to cut it), the rate code
  seeded as the artifact says: the same integers the RTL computes; with ``--curve`` also every model cut to T' = 1..T
  steps (a static exit, B-SNN included) and the smallest T' within 0.3 pp of its full-T accuracy;
- ROM bits: weights, thresholds and the per-step affine tables (manifest), and every memory bit;
- cycles per inference (the design's formula; ``--sims`` also measures it in simulation);
- with ``--targets``: LUT4 (LUT), FF, block RAM, DSP and Fmax from Yosys + nextpnr (``bsnn-hw synth``), or the fit
  check's refusal with its numbers; latency = cycles / Fmax;
- with ``--sims``: ``bsnn-hw verify`` on ``--samples`` test images per simulator: every layer's spikes at every
  step, counts and membranes, the class, against the golden model.

Nothing here trains: the accuracies are those of the artifacts given.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def _rom_bits(design) -> dict:
    out = {"weights": 0, "threshold": 0, "affine": 0, "other_rom": 0}
    for layer in design.manifest["layers"]:
        for mem in layer["memories"]:
            if mem["kind"] != "rom":
                continue
            key = mem["name"] if mem["name"] in out else "other_rom"
            out[key] += mem["bits"]
    out["rom_total"] = sum(out.values())
    out["memory_bits"] = design.manifest["memory_bits"]
    return out


def run(args) -> dict:
    from bsnn_hw import golden, load, truncate
    from bsnn_hw.hdl import HwConfig, generate
    from bsnn_hw.hdl import synth as hsynth
    from bsnn_hw.hdl.cli import parse_list
    from bsnn_hw.sim.verify import load_inputs, verify

    models = {}
    for item in args.model:
        name, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"error: --model must be NAME=PATH, not {item!r}")
        models[name] = load(path)
    for name in args.exit:
        if name not in models:
            raise SystemExit(f"error: --exit {name!r} names no --model (have {', '.join(models)})")
        step = models[name].meta("bntt").get("exit_step")
        if not isinstance(step, int):
            raise SystemExit(f"error: {name} has no metadata.bntt.exit_step (train it with --method bntt)")
        models[f"{name} exit@{step}"] = truncate(models[name], step)
    first = next(iter(models.values()))
    for name, net in models.items():
        if net.sizes != first.sizes:
            raise SystemExit(f"error: {name} is {'-'.join(map(str, net.sizes))}, the first model "
                             f"{'-'.join(map(str, first.sizes))}: compare one topology")
    rep = dict(sizes=first.sizes, models={}, data=args.data)
    for name, net in models.items():
        config = HwConfig.from_lists(net, parse_list("--parallel", args.parallel), parse_list("--width", args.width))
        config.validate(net)
        design = generate(net, config)
        r = dict(timesteps=net.timesteps, contract_version=net.contract_version, identity=net.identity(),
                 parallel=[lc.parallel for lc in config.layers], width=[lc.width for lc in config.layers],
                 rom=_rom_bits(design), cycles_per_inference=design.manifest["cycles_per_inference"],
                 variant=net.meta("bntt").get("variant"), sims={}, targets={})
        x, spikes, labels, what = load_inputs(net, args.data, args.test_samples)
        pred = golden.simulate(net, spikes).prediction
        r["accuracy"] = float((pred == labels).mean())
        r["test"] = what
        if args.curve and net.encoding == "rate":
            # every model cut to T' steps (a static exit), B-SNN included: what BNTT's rule buys over plain truncation
            curve = [float((golden.simulate(truncate(net, s), spikes[:, :s]).prediction == labels).mean())
                     for s in range(1, net.timesteps + 1)]
            r["accuracy_vs_steps"] = curve
            r["steps_within_0.3pp"] = next(s for s in range(1, net.timesteps + 1)
                                          if curve[s - 1] >= curve[-1] - 0.003)
        for sim in [s for s in args.sims.split(",") if s]:
            n = args.icarus_samples if sim == "icarus" else args.samples
            t0 = time.perf_counter()
            v = verify(net, spikes[:n], labels[:n], sim=sim, config=config, data=args.data)
            r["sims"][sim] = dict(agree=v["agree"], samples=v["samples"], mismatches=v["mismatches"],
                                  first_mismatch=v["first_mismatch_text"],
                                  cycles_measured=v["cycles_per_inference"]["measured"],
                                  seconds=round(time.perf_counter() - t0, 1))
        for target in [t for t in args.targets.split(",") if t]:
            device = {"ice40": args.ice40_device, "ecp5": args.ecp5_device}.get(target)
            r["targets"][target] = hsynth.fit_and_implement(design, target, device, pnr=not args.no_pnr,
                                                            freq=args.freq)
        rep["models"][name] = r
        print(f"[{name}] done", file=sys.stderr, flush=True)
    return rep


def _target_cells(t: dict | None) -> list[str]:
    if t is None:
        return ["-"] * 6
    if "refused" in t or "failed" in t:
        return ["does not fit" if "refused" in t else "failed"] + [""] * 5
    res = t["resources"]
    lat = t.get("latency_us")
    return [f"{res.get('lut', 0):,}", f"{res.get('ff', 0):,}", str(res.get("bram", 0)), str(res.get("dsp", 0)),
            "-" if t.get("fmax_mhz") is None else f"{t['fmax_mhz']:.1f}", "-" if lat is None else f"{lat:,.0f}"]


def markdown(rep: dict) -> str:
    targets = sorted({t for r in rep["models"].values() for t in r["targets"]})
    curve = any("accuracy_vs_steps" in r for r in rep["models"].values())
    head = ["model", "T", "test acc."] + (["T' within 0.3 pp"] if curve else []) + ["weight ROM", "affine ROM", "threshold ROM", "cycles/inf."]
    for t in targets:
        head += [f"{t} LUT4" if t == "ice40" else f"{t} LUT", f"{t} FF", f"{t} BRAM", f"{t} DSP", f"{t} Fmax MHz",
                 f"{t} latency us"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rep["models"].items():
        rom = r["rom"]
        row = [name, str(r["timesteps"]), f"{100 * r['accuracy']:.2f}%"] + (
            [str(r.get("steps_within_0.3pp", "-"))] if curve else []) + [f"{rom['weights']:,}", f"{rom['affine']:,}",
               f"{rom['threshold']:,}", f"{r['cycles_per_inference']:,}"]
        for t in targets:
            row += _target_cells(r["targets"].get(t))
        lines.append("| " + " | ".join(row) + " |")
    notes = []
    for name, r in rep["models"].items():
        for t, v in r["targets"].items():
            if "refused" in v or "failed" in v:
                notes.append(f"- {name}, {t}: {v.get('refused') or v.get('failed')}")
        for sim, s in r["sims"].items():
            notes.append(f"- {name}, {sim}: {s['agree']}/{s['samples']} test images bit-exact, cycles measured "
                         f"{s['cycles_measured']}, {s['seconds']} s")
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, help="NAME=PATH (repeat)")
    ap.add_argument("--exit", action="append", default=[], help="NAME of a BNTT model to add cut at its exit step")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--test-samples", type=int, default=10 ** 9, help="test images for the accuracy (default all)")
    ap.add_argument("--samples", type=int, default=100, help="test images per simulator")
    ap.add_argument("--icarus-samples", type=int, default=None, help="Icarus's share (default --samples)")
    ap.add_argument("-P", "--parallel", default=None)
    ap.add_argument("-W", "--width", default=None)
    ap.add_argument("--sims", default="")
    ap.add_argument("--targets", default="")
    ap.add_argument("--ice40-device", default="up5k")
    ap.add_argument("--ecp5-device", default="85k")
    ap.add_argument("--no-pnr", action="store_true")
    ap.add_argument("--freq", type=float, default=12.0)
    ap.add_argument("--curve", action="store_true", help="also each model's accuracy cut to T' = 1..T steps")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("-o", "--out", default=None, help="also write the JSON report here")
    ap.add_argument("--markdown", default=None, help="also write the table as Markdown here")
    args = ap.parse_args(argv)
    if args.icarus_samples is None:
        args.icarus_samples = args.samples
    rep = run(args)
    from bsnn_hw.io import atomic_write
    if args.out:
        with atomic_write(args.out) as f:
            json.dump(rep, f, indent=2)
    table = markdown(rep)
    if args.markdown:
        with atomic_write(args.markdown) as f:
            f.write(table + "\n")
    if args.json:
        json.dump(rep, sys.stdout, indent=2)
        print()
    else:
        print(f"{'-'.join(map(str, rep['sizes']))} on {rep['data']}\n")
        print(table)
    ok = all(s["agree"] == s["samples"] for r in rep["models"].values() for s in r["sims"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
