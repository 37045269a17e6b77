"""cocotb side of tests/test_sim_runner.py: a stream adder (out = in + 1, through a 4-deep FIFO) checked with the
stream driver and monitor of bsnn_hw.sim.stream. Parameters come from bsnn_hw.sim.runner.load_params()."""
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from bsnn_hw.sim.runner import load_params, write_results
from bsnn_hw.sim.stream import StreamDriver, StreamMonitor, field


@cocotb.test()
async def adder_stream(dut):
    p = load_params()
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    drv = StreamDriver(dut, "i_data", dut.clk, p["stall"], 5, seed=p["seed"])
    mon = StreamMonitor(dut, "o_data", dut.clk, p["stall"], 5, seed=p["seed"] + 1)
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    mon.start()
    rng = random.Random(p["seed"])
    beats = [rng.randrange(256) for _ in range(p["n"])]
    send = cocotb.start_soon(drv.send(beats))
    got = []
    for _ in beats:
        value, _t = await mon.recv()
        got.append(field(value, 0, 9))
    await send
    expected = [b + 1 + p.get("bug", 0) for b in beats]
    bad = [(i, e, g) for i, (e, g) in enumerate(zip(expected, got)) if e != g]
    write_results({"beats": len(got), "mismatches": len(bad), "sim_ns": cocotb.utils.get_sim_time("ns")})
    assert not bad, f"{len(bad)} mismatches; first: beat {bad[0][0]} expected {bad[0][1]} got {bad[0][2]}"
