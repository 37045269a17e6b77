"""Accuracy against decision step for one trained BSTDG network: issue 12's two targets as a curve.

A BSTDG network's integer thresholds are calibrated after training (docs/training.md "Threshold calibration"); a
decision budget (`--bstdg-decision-step L`) makes the calibration keep the median decision step on the training
split at L or below and trades accuracy for it. This bench exports one checkpoint at each budget asked for, exactly
as `bench/bstdg_targets.py --from-checkpoint CKPT --decision-step L` would (`bstdg.from_checkpoint`: the anytime
readout fit of `--readout-epochs`, then the calibration within the budget; nothing is written), and prints, per
budget, the exported integer network's test accuracy, its median decision step on the test set (a sample with no
output spike decides at T), the fallback rate, and whether both targets (accuracy >= 87.5%, median <= T/3) hold.
A budget that no thresholds reach is reported as refused, not skipped.

    .venv/bin/python bench/bstdg_frontier.py --checkpoint out/bench_bstdg.bsnn.ckpt                # as trained
    .venv/bin/python bench/bstdg_frontier.py --checkpoint out/bench_bstdg.bsnn.ckpt --readout-epochs 8
    .venv/bin/python bench/bstdg_frontier.py --checkpoint CKPT --budgets 6,9,12,none --json

Each point is a calibration within its budget on the whole training split plus, with `--readout-epochs`, the
readout fit, repeated per budget so that every point is the export a user gets: 7-11 minutes a point for
784-600-10 on one thread of the shared Zen 5 with two runs at a time (the budgets farthest below the network's own
median take longest). One torch thread by default.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from pathlib import Path

import torch

from bsnn_hw.train import bstdg

sys.path.insert(0, str(Path(__file__).resolve().parent))    # the targets live in the sibling bench script
from bstdg_targets import ACCURACY_TARGET, targets_met  # noqa: E402
DEFAULT_BUDGETS = "6,8,9,10,12,14,16,20,none"


def parse_budgets(text: str) -> list[int | None]:
    """"6,9,none" -> [6, 9, None]: decision budgets (steps >= 0), "none" for the calibration without one."""
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip()
        if part.lower() == "none":
            out.append(None)
        elif part.isdigit():
            out.append(int(part))
        else:
            raise ValueError(f"--budgets: {part!r} is not a decision step (an integer >= 0) or 'none'")
    if not out or len(set(out)) != len(out):
        raise ValueError(f"--budgets must list distinct budgets, not {text!r}")
    return out


def point(checkpoint: str, budget: int | None, readout_epochs) -> dict:
    """One export of ``checkpoint`` within ``budget`` (None: no budget): the bench's row. A budget the calibration
    cannot reach gives ``{"budget", "refused": message}``."""
    t0 = time.perf_counter()
    try:
        res = bstdg.from_checkpoint(checkpoint, calibrate_thresholds=True, decision_step=budget,
                                    readout_epochs=readout_epochs, search_sweeps=0)
    except ValueError as err:
        if "no thresholds give a median decision step" not in str(err):
            raise
        return {"budget": budget, "refused": str(err)}
    m = res.metrics
    steps = res.network.timesteps
    return {"budget": budget, "integer_accuracy": round(100 * m["integer_accuracy"], 2),
            "median_decision_step": m["median_decision_step"], "mean_decision_step": round(m["mean_decision_step"], 2),
            "fallback_rate_pct": round(100 * m["fallback_rate"], 2), "thresholds": m["thresholds"], "T": steps,
            "both_met": all(targets_met(m["integer_accuracy"], m["median_decision_step"], steps)),
            "seconds": round(time.perf_counter() - t0, 1)}


def table(rows: list[dict]) -> str:
    lines = ["| budget (training median <=) | integer test accuracy | test median step | mean step | fallback | "
             "thresholds hidden / output | both targets | s |", "|---|---:|---:|---:|---:|---|---|---:|"]
    for r in rows:
        b = "none" if r["budget"] is None else str(r["budget"])
        if "refused" in r:
            lines.append(f"| {b} | refused: {r['refused']} | | | | | | |")
            continue
        th = r["thresholds"]
        out = th[-1] if not isinstance(th[-1], list) else f"{th[-1][0]}-{th[-1][-1]}"
        hidden = " / ".join(str(h if not isinstance(h, list) else f"{h[0]}-{h[-1]}") for h in th[:-1])
        lines.append(f"| {b} | {r['integer_accuracy']:.2f}% | {r['median_decision_step']:g} | "
                     f"{r['mean_decision_step']:.2f} | {r['fallback_rate_pct']:.2f}% | {hidden} / {out} | "
                     f"{'met' if r['both_met'] else '-'} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a --method bstdg checkpoint (<model>.bsnn.ckpt)")
    ap.add_argument("--budgets", default=DEFAULT_BUDGETS,
                    help=f"decision budgets, comma separated, 'none' for none (default {DEFAULT_BUDGETS})")
    ap.add_argument("--readout-epochs", type=int, default=0,
                    help="the anytime readout fit before each calibration (--bstdg-readout-epochs; 0: none)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    try:
        budgets = parse_budgets(args.budgets)
        if args.readout_epochs < 0:
            raise ValueError(f"--readout-epochs must be >= 0, not {args.readout_epochs}")
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, not {args.threads}")
    except ValueError as err:
        ap.error(str(err))
    torch.set_num_threads(args.threads)
    rows = []
    for budget in budgets:
        try:
            rows.append(point(args.checkpoint, budget, args.readout_epochs))
        except (OSError, ValueError) as err:
            print(f"bstdg_frontier: {err}", file=sys.stderr)
            return 2
        r = rows[-1]
        print(f"  budget {budget}: " + (f"refused ({r['refused']})" if "refused" in r else
                                        f"{r['integer_accuracy']:.2f}% at a test median of "
                                        f"{r['median_decision_step']:g} ({r['seconds']:.0f} s)"),
              file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"# {args.checkpoint}, readout fit {args.readout_epochs} epochs; targets: accuracy >= "
              f"{100 * ACCURACY_TARGET:.1f}%, test median decision step <= T/3")
        print(table(rows))
        met = [r["budget"] for r in rows if r.get("both_met")]
        print(f"both targets at budget(s): {', '.join(map(str, met)) if met else 'none of those tried'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
