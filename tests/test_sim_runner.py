"""The cocotb runner and stream driver/monitor on a tiny Amaranth stream component (no dependency on bsnn_hw.hdl)."""
import pytest
from amaranth import Module
from amaranth.back import verilog
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from bsnn_hw.sim import runner


class AddOne(wiring.Component):
    """out.sum = in + 1 through a 4-deep FIFO, so backpressure on o_data reaches i_data.ready."""

    def __init__(self, width=8):
        self.width = width
        super().__init__({"i_data": In(stream.Signature(width)),
                          "o_data": Out(stream.Signature(data.StructLayout({"sum": width + 1, "zero": 1})))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = f = fifo.SyncFIFOBuffered(width=self.width, depth=4)
        m.d.comb += [f.w_data.eq(self.i_data.payload), f.w_en.eq(self.i_data.valid),
                     self.i_data.ready.eq(f.w_rdy),
                     self.o_data.payload.sum.eq(f.r_data + 1), self.o_data.payload.zero.eq(f.r_data == 0),
                     self.o_data.valid.eq(f.r_rdy), f.r_en.eq(self.o_data.ready)]
        return m


@pytest.fixture(scope="module")
def adder_verilog():
    return verilog.convert(AddOne(), name="addone")


@pytest.mark.parametrize("stall", [0.0, 0.4])
def test_stream_roundtrip(sim, adder_verilog, sim_cache, stall):
    run = runner.run_cocotb(adder_verilog, "addone", "cocotb_selftest", sim,
                            {"stall": stall, "seed": 3, "n": 200}, cache_dir=sim_cache)
    assert run.results["beats"] == 200 and run.results["mismatches"] == 0
    if stall == 0.0:
        # Back to back with an always-ready sink: one beat per clock (plus the FIFO latency).
        assert run.results["sim_ns"] < 10 * (200 + 10)
    # A second run of the same design reuses the build.
    again = runner.run_cocotb(adder_verilog, "addone", "cocotb_selftest", sim,
                              {"stall": stall, "seed": 4, "n": 20}, cache_dir=sim_cache)
    assert not again.built and again.build_dir == run.build_dir


def test_failure_surfaces_message(sim, adder_verilog, sim_cache):
    with pytest.raises(runner.SimFailure, match=r"mismatches; first: beat 0 expected"):
        runner.run_cocotb(adder_verilog, "addone", "cocotb_selftest", sim,
                          {"stall": 0.0, "seed": 1, "n": 5, "bug": 1}, cache_dir=sim_cache)


def test_build_key_follows_content(adder_verilog):
    a = runner.build_key(adder_verilog, "addone", "icarus", False)
    assert a == runner.build_key(adder_verilog, "addone", "icarus", False)
    assert a != runner.build_key(adder_verilog + "\n", "addone", "icarus", False)
    assert a != runner.build_key(adder_verilog, "addone", "icarus", True)


def test_waves_write_fst(sim, adder_verilog, sim_cache):
    run = runner.run_cocotb(adder_verilog, "addone", "cocotb_selftest", sim,
                            {"stall": 0.2, "seed": 5, "n": 10}, cache_dir=sim_cache, waves=True)
    assert run.waves is not None and run.waves.stat().st_size > 0
    if sim == "icarus" or runner.verilator_fst_ok():
        assert run.waves.suffix == ".fst" and run.waves.read_bytes()[:1] != b"$"   # FST is binary, not VCD text
    else:   # Verilator without the lz4 header writes VCD
        assert run.waves.suffix == ".vcd" and b"$var" in run.waves.read_bytes()


def test_missing_simulator_reason(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert "Icarus" in runner.simulator_missing("icarus")
    assert "unknown simulator" in runner.simulator_missing("modelsim")
