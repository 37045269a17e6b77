"""cocotb bench of the UART host link (run through ``bsnn_hw.sim.board_run.run_in_simulator``).

The toplevel is ``bsnn_uart``, the Verilog of :class:`bsnn_hw.hdl.uart.UartHost` (ports clk, rst, uart_rx, uart_tx).
cocotbext-uart's UartSource drives ``uart_rx`` and its UartSink reads ``uart_tx`` at ``divisor`` clock periods per
bit; :func:`bsnn_hw.sim.board_run.run_link` - the host loop that ``bsnn-hw board-run`` runs on a serial port - runs in
a thread bridged into the simulator (``cocotb.task.bridge``) and talks to a :class:`SimPort`, whose ``write`` and
``read`` resume the simulation until the bytes are queued / received (``read`` gives up after ``read_timeout``
simulated ns, returning what arrived, as pyserial does). Results (run_link's dict, times in simulated seconds) go to
``results.json``; with ``strict`` the test fails unless every answer is bit-exact with the golden model.
"""
import logging
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, Timer
from cocotb.utils import get_sim_time
from cocotbext.uart import UartSink, UartSource

from bsnn_hw import load
from bsnn_hw.hdl.config import HwConfig
from bsnn_hw.hdl.uart import BITS_PER_BYTE, Framing
from bsnn_hw.sim.board_run import run_link
from bsnn_hw.sim.runner import load_params, write_results
from bsnn_hw.sim.tb import CLOCK_NS


class SimPort:
    """A pyserial-like port on the simulated UART pins (call from a bridged thread only)."""

    def __init__(self, source: UartSource, sink: UartSink, byte_ns: int, read_timeout_ns: int):
        self.source, self.sink = source, sink
        self.byte_ns, self.read_timeout_ns = byte_ns, read_timeout_ns

    def write(self, data: bytes) -> int:
        resume(self.source.write)(bytes(data))
        return len(data)

    async def _read(self, n: int) -> bytes:
        waited = 0
        while self.sink.count() < n and waited < self.read_timeout_ns:
            await Timer(self.byte_ns, "ns")
            waited += self.byte_ns
        return bytes(self.sink.read_nowait(min(n, self.sink.count())))

    def read(self, n: int) -> bytes:
        return resume(self._read)(n)

    def reset_input_buffer(self) -> None:
        self.sink.clear()


@cocotb.test()
async def uart_link(dut):
    p = load_params()
    net = load(p["model"])
    config = HwConfig.from_dict(p["hw_config"]) if p.get("hw_config") else HwConfig.from_lists(net, encoder=True)
    framing = Framing(net, config)
    pixels = np.load(p["pixels"])
    labels = np.load(p["labels"]) if p.get("labels") else None
    divisor = int(p["divisor"])
    bit_ns = divisor * CLOCK_NS          # cocotbext-uart times a bit as int(1e9 / baud) ns: exact here
    baud = 1e9 / bit_ns
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    source = UartSource(dut.uart_rx, baud=baud, bits=8, stop_bits=1)
    sink = UartSink(dut.uart_tx, baud=baud, bits=8, stop_bits=1)
    for model in (source, sink):
        model.log.setLevel(logging.WARNING)     # no log line per byte (thousands per image)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    from bsnn_hw.hdl.config import cycles_per_inference
    byte_ns = BITS_PER_BYTE * bit_ns
    # an answer is due within the inference and its own bytes; allow 4x before giving up on it
    read_timeout = 4 * (cycles_per_inference(net, config) * CLOCK_NS + framing.answer_bytes * byte_ns)
    port = SimPort(source, sink, byte_ns, read_timeout)
    t0 = time.perf_counter()
    res = await bridge(run_link)(port, framing, pixels, labels, clock=lambda: get_sim_time("ns") * 1e-9)
    res["sim_wall_s"] = time.perf_counter() - t0
    res["divisor"], res["clock_ns"] = divisor, CLOCK_NS
    write_results(res)
    if p.get("strict") and res["agree"] != res["n"]:
        raise AssertionError(f"{res['n'] - res['agree']} of {res['n']} answers differ from the golden model "
                             f"(errors {res['errors']}); first: {res['mismatches'][:2]}")
