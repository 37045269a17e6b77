"""`bsnn-hw board-run MODEL --port /dev/ttyUSB1 --data fashion-mnist -n 100`: send test images to a board built by
`bsnn-hw build`, compare every answer with the golden model, print the agreement and the throughput.

One host loop, :func:`run_link`, talks to any object with pyserial's ``write(bytes)`` and ``read(n) -> bytes`` (fewer
bytes on a timeout): a ``serial.Serial`` on a real port (or any pyserial URL, ``serial_for_url``), or, with
``--port sim:icarus`` / ``sim:verilator``, a port backed by the cocotb simulation of the same UartHost Verilog
(:mod:`bsnn_hw.sim.cocotb_uart`: the bench runs :func:`run_link` itself in a thread bridged into the simulator, and
cocotbext-uart drives and reads the UART pins). Without a board the same code path is thus tested against the RTL.

An answer agrees when it is bit-exact with the golden model's (class and every class's count and membrane).
Throughput is images per second of wall time on a board (simulated time in a simulation); the link's bound is the
baud rate over the bits of one request and one answer (docs/board.md).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import click
import numpy as np

from bsnn_hw.checks import check_positive
from bsnn_hw.cli import POSITIVE

SIM_PREFIX = "sim:"
SIM_BAUD = 12.5e6          # a simulation's default: 8 cycles per bit at its 100 MHz clock
SIM_CLOCK_HZ = 100e6       # sim/tb.py's CLOCK_NS = 10


def run_link(port, framing, pixels, labels=None, *, clock=time.perf_counter, progress=None, keep=5) -> dict:
    """Send each row of ``pixels`` (uint8 (N, n_in)) as a request on ``port``, read its answer and compare it with
    :meth:`Framing.expected`. Returns ``n``, ``agree`` (bit-exact answers), ``class_agree``, ``errors`` (error
    answers or malformed frames, by kind), ``accuracy`` (against ``labels``, if given), ``seconds`` (by ``clock``,
    from the first request to the last answer), ``images_per_s`` and the first ``keep`` ``mismatches``."""
    from bsnn_hw.hdl.uart import STATUS_NAMES, FrameError
    from bsnn_hw.data import check_labels
    from bsnn_hw.encode import intensities
    pixels = intensities(pixels, framing.n_in)
    labels = check_labels(labels, len(pixels), framing.n_out)
    want = framing.expected(pixels)
    agree = class_agree = correct = 0
    errors: dict[str, int] = {}
    mismatches = []
    t0 = clock()
    for b, px in enumerate(pixels):
        port.write(framing.request(px))
        try:
            ans = framing.read_answer(port.read)
        except FrameError as e:
            errors["malformed"] = errors.get("malformed", 0) + 1
            if len(mismatches) < keep:
                mismatches.append(dict(sample=b, error=str(e)))
            if hasattr(port, "reset_input_buffer"):
                port.reset_input_buffer()
            continue
        if not ans.ok:
            kind = STATUS_NAMES[ans.status]
            errors[kind] = errors.get(kind, 0) + 1
            if len(mismatches) < keep:
                mismatches.append(dict(sample=b, error=f"the board answered {kind}"))
            continue
        w = want[b]
        same = ans.cls == w.cls and all(np.array_equal(ans.values[k], w.values[k]) for k in w.values)
        agree += same
        class_agree += ans.cls == w.cls
        if labels is not None:
            correct += ans.cls == int(labels[b])
        if not same and len(mismatches) < keep:
            mismatches.append(dict(sample=b, cls=ans.cls, expected_cls=w.cls,
                                   values={k: v.tolist() for k, v in ans.values.items()},
                                   expected={k: v.tolist() for k, v in w.values.items()}))
        if progress and (b + 1) % 10 == 0:
            progress(f"{b + 1}/{len(pixels)} images, {agree} bit-exact")
    seconds = clock() - t0
    n = len(pixels)
    return dict(n=n, agree=agree, class_agree=class_agree, errors=errors,
                accuracy=(correct / n if labels is not None and n else None), seconds=seconds,
                images_per_s=(n / seconds if seconds > 0 else None), mismatches=mismatches)


def open_port(port: str, baud: float, timeout: float):
    """A pyserial port: a device path or any pyserial URL (``loop://``, ``socket://host:port``, ...)."""
    import serial
    if not isinstance(port, str) or not port:
        raise TypeError(f"port must be a device path or pyserial URL, not {port!r}")
    if isinstance(baud, bool) or not isinstance(baud, (int, float)) or not 0 < baud < math.inf or baud != int(baud):
        raise ValueError(f"baud must be a positive whole number of bits per second, not {baud!r}")
    check_positive("timeout", timeout, "a positive number of seconds")
    try:
        return serial.serial_for_url(port, baudrate=int(baud), timeout=timeout)
    except (serial.SerialException, ValueError) as e:
        raise OSError(f"cannot open serial port {port}: {e}") from None


def bench_params(model: str, config, pixels_file: Path, labels_file: Path | None, divisor: int,
                 strict: bool, timeout_bits: int | None = None) -> dict:
    """Parameters of :mod:`bsnn_hw.sim.cocotb_uart` (JSON-able)."""
    return dict(model=str(Path(model).resolve()), hw_config=config.to_dict() if hasattr(config, "to_dict") else None,
                pixels=str(pixels_file), labels=str(labels_file) if labels_file else None, divisor=divisor,
                strict=strict, timeout_bits=timeout_bits)


def run_in_simulator(model: str, net, config, pixels, labels, sim: str, divisor: int, strict: bool = False,
                     progress=None, quick_build: bool = False) -> dict:
    """The UartHost Verilog of ``net`` under ``config`` on ``sim`` (icarus / verilator), with :func:`run_link` driving
    its UART pins through the cocotb bench; returns run_link's dict (times in simulated seconds) plus ``sim``,
    ``wall_s`` and ``build_s``. ``strict``: the bench fails (SimFailure) unless every answer is bit-exact.
    ``quick_build``: Verilator compiles without optimization (for small designs: faster to build than to run)."""
    import tempfile

    from bsnn_hw.hdl.generate import to_verilog
    from bsnn_hw.hdl.uart import UartHost
    from bsnn_hw.data import check_labels
    from bsnn_hw.encode import intensities
    from bsnn_hw.sim.runner import check_simulator, run_cocotb
    check_simulator(sim)
    pixels = intensities(pixels, net.n_in)
    labels = check_labels(labels, len(pixels), net.n_out)
    host = UartHost(net, config, divisor=divisor)
    verilog = to_verilog(host, "bsnn_uart")
    with tempfile.TemporaryDirectory(prefix="bsnn-uart-") as d:
        pf = Path(d) / "pixels.npy"
        np.save(pf, np.asarray(pixels, dtype=np.uint8))
        lf = None
        if labels is not None:
            lf = Path(d) / "labels.npy"
            np.save(lf, np.asarray(labels, dtype=np.int64))
        params = bench_params(model, config, pf, lf, divisor, strict)
        t0 = time.perf_counter()
        run = run_cocotb(verilog, "bsnn_uart", "bsnn_hw.sim.cocotb_uart", sim, params, progress=progress,
                         quick_build=quick_build)
    res = dict(run.results)
    res.update(sim=sim, wall_s=round(time.perf_counter() - t0, 1), build_s=round(run.build_seconds, 1))
    return res


@click.command("board-run")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--port", required=True, help="Serial port of the board (e.g. /dev/ttyUSB1, or a pyserial URL), or "
              "sim:icarus / sim:verilator to run the same host code against the simulated design.")
@click.option("--data", "data", default="fashion-mnist", show_default=True, help="Data set name or IDX directory "
              "(its test split).")
@click.option("-n", "count", default=100, show_default=True, type=click.IntRange(min=1), help="Images to send.")
@click.option("--baud", default=None, type=POSITIVE, help="Baud rate (default 115200 on a port; 12.5e6 in a simulation, "
              "8 cycles per bit at its 100 MHz clock). Must match the build's.")
@click.option("--timeout", default=5.0, show_default=True, type=POSITIVE, help="Seconds to wait for an answer.")
@click.option("--parallel", "-P", default=None, help="(sim: only) Neuron lanes P per layer, as for build.")
@click.option("--width", "-W", default=None, help="(sim: only) Input bits per word W per layer, as for build.")
@click.option("--encoder-lanes", type=click.IntRange(min=1), default=None, help="(sim: only) as for build.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def board_run(model, port, data, count, baud, timeout, parallel, width, encoder_lanes, as_json):
    """Send COUNT test images to the board on PORT, compare each answer with the golden model, print the agreement
    and the throughput (docs/board.md)."""
    from bsnn_hw import load
    from bsnn_hw.cli import UserError, emit_json, progress_printer
    from bsnn_hw.data import load_dataset
    from bsnn_hw.hdl.cli import parse_list
    from bsnn_hw.hdl.config import HwConfig
    from bsnn_hw.hdl.uart import Framing, link_bound, uart_divisor
    net = load(model)
    sim = port[len(SIM_PREFIX):] if port.startswith(SIM_PREFIX) else None
    if sim is not None:
        from bsnn_hw.sim.runner import SIMULATORS, simulator_missing
        if sim not in SIMULATORS:
            raise UserError(f"--port {port}: unknown simulator {sim!r}, expected {SIM_PREFIX}icarus or "
                            f"{SIM_PREFIX}verilator")
        missing = simulator_missing(sim)
        if missing:
            raise UserError(f"--port {port}: {missing}")
    if sim is None and baud is not None and baud != int(baud):
        raise UserError(f"--baud {baud}: a serial port's baud rate is a whole number")
    x, y = load_dataset(data, "test")
    x = x.reshape(len(x), -1)
    if x.shape[1] != net.n_in:
        raise UserError(f"{data} has {x.shape[1]} values per image but {model} takes {net.n_in} inputs")
    if count > len(x):
        raise UserError(f"-n {count}: {data}'s test split has {len(x)} images")
    x, y = x[:count], y[:count]
    say = None if as_json else progress_printer()
    if sim is None and (parallel or width or encoder_lanes):
        raise UserError("-P/-W/--encoder-lanes describe the simulated design (--port sim:...); a board runs what "
                        "it was built with")
    framing = Framing(net)
    if sim is not None:
        baud = SIM_BAUD if baud is None else baud
        divisor = uart_divisor(SIM_CLOCK_HZ, baud)
        config = HwConfig.from_lists(net, parse_list("--parallel", parallel), parse_list("--width", width),
                                     encoder=True, encoder_lanes=encoder_lanes)
        res = run_in_simulator(model, net, config, x, y, sim, divisor, progress=say)
        baud = SIM_CLOCK_HZ / divisor
        where = f"{sim} simulation of the UartHost RTL (100 MHz clock, {baud:,.0f} baud; simulated time)"
    else:
        baud = 115200.0 if baud is None else baud
        with open_port(port, baud, timeout) as p:
            p.reset_input_buffer()
            res = run_link(p, framing, x, y, progress=say)
        where = f"{port} at {baud:,.0f} baud"
    res["link_bound_images_per_s"] = link_bound(framing, baud)
    res["where"] = where
    if as_json:
        emit_json(res)
    else:
        n = res["n"]
        click.echo(f"{where}: {res['agree']}/{n} answers bit-exact with the golden model "
                   f"({100 * res['agree'] / n:.1f}%), classes {res['class_agree']}/{n}"
                   + (f", accuracy {100 * res['accuracy']:.1f}%" if res.get("accuracy") is not None else ""))
        if res["errors"]:
            click.echo("errors: " + ", ".join(f"{k} {v}" for k, v in res["errors"].items()))
        for mm in res["mismatches"][:3]:
            click.echo(f"  sample {mm['sample']}: {mm.get('error') or 'class %s, expected %s' % (mm['cls'], mm['expected_cls'])}")
        ips = res["images_per_s"]
        click.echo(f"throughput {ips:,.1f} images/s ({n} images in {res['seconds']:.4g} s); link bound "
                   f"{res['link_bound_images_per_s']:,.1f} images/s ({framing.request_bytes}-byte requests, "
                   f"{framing.answer_bytes}-byte answers, 10 bits a byte)")
    if res["agree"] != res["n"]:
        raise SystemExit(1)
