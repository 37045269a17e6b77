"""cocotb test module for the network top (run through ``bsnn_hw.sim.network.run_network``).

The toplevel is the generated wrapper ``bsnn_bench`` holding one or more network tops (units); every unit gets a
:class:`bsnn_hw.sim.tb.NetworkTB` and all run concurrently on the shared clock. The test fails if any unit has a
mismatch; every unit's hardware values come back through ``results.json`` either way.
"""
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotb.utils import get_sim_time

from bsnn_hw.sim.network import describe
from bsnn_hw.sim.runner import load_params, write_results
from bsnn_hw.sim.tb import CLOCK_NS, NetworkTB


@cocotb.test()
async def network(dut):
    params = load_params()
    clk = dut.clk
    cocotb.start_soon(Clock(clk, CLOCK_NS, unit="ns").start())
    tbs = [NetworkTB(dut, u, clk) for u in params["units"]]
    for tb in tbs:
        tb.rst.value = 1
    await ClockCycles(clk, 2)
    for tb in tbs:
        await tb.reset(1)
    t0 = time.perf_counter()
    tasks = [cocotb.start_soon(tb.run_all()) for tb in tbs]
    units = [await task for task in tasks]
    wall = time.perf_counter() - t0
    sim_cycles = int(get_sim_time("ns") // CLOCK_NS)
    write_results({"units": units, "wall_s": wall, "sim_cycles": sim_cycles})
    bad = [(u["name"], m) for u in units for m in u["mismatches"]]
    if bad:
        first = "; ".join(f"{name}: {describe(m)}" for name, m in bad[:3])
        raise AssertionError(f"{len(bad)} mismatches against the golden model in "
                             f"{len({n for n, _ in bad})} of {len(units)} networks; first: {first}")
