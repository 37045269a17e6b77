"""The generated Verilog, exactly as `generate` writes it, in a plain Verilog bench (no cocotb, no patching): Icarus
with and without -g2012, and Verilator --binary; results equal the golden model's. Includes the wide-word (W > 64)
weight-ROM case that once shipped wrong."""
import shutil

import numpy as np
import pytest

from bsnn_hw import golden
from bsnn_hw.hdl import HwConfig, LayerConfig, generate
from bsnn_hw.network import Layer, Network, random_network
from bsnn_hw.sim.plain_bench import run_plain

needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog not installed")


def _expected(net, spikes):
    ref = golden.simulate(net, spikes)
    rows = []
    for b in range(spikes.shape[0]):
        for j in range(net.n_out):
            rows.append(dict(index=j, count=int(ref.counts[-1][b, j]) if net.readout != "membrane" else 0,
                             membrane=int(ref.membrane[-1][b, j]), cls=int(ref.prediction[b]),
                             last=int(j == net.n_out - 1)))
    return rows


def _check(net, spikes, config, tmp_path, **kw):
    d = generate(net, config)
    run = run_plain(d.verilog, d.manifest, net, spikes, workdir=tmp_path, **kw)
    assert not run.timeout, run.log[-2000:]
    assert run.xstates == [], run.xstates[:3]
    assert run.results == _expected(net, spikes)


def minimal_w65() -> Network:
    """One layer 65 -> 1, W = 65, every weight +1 but input 64's, T = 1, membrane readout: one spike on input 64
    must give membrane -1 (a ROM that lost bit 64 gives +1)."""
    w = np.ones((1, 65), dtype=bool)
    w[0, 64] = False
    return Network([Layer(w, None, membrane_bits=16)], 1, "membrane", "direct")


def test_minimal_w65_golden_and_rom():
    from bsnn_hw.hdl import WeightROM
    net = minimal_w65()
    s = np.zeros((1, 1, 65), dtype=bool)
    s[0, 0, 64] = True
    assert golden.simulate(net, s).membrane[0][0, 0] == -1
    assert WeightROM.contents(net.layers[0].weights, 1, 65) == [(1 << 64) - 1]


@needs_icarus
@pytest.mark.parametrize("generation", ["2012", None])
def test_generated_file_runs_unmodified_in_plain_icarus_bench(tmp_path, generation):
    net = random_network([20, 7, 3], timesteps=5, seed=3, encoding="direct")
    spikes = np.random.default_rng(1).random((3, 5, 20)) < 0.5
    _check(net, spikes, HwConfig((LayerConfig(2, 6), LayerConfig(3, 7))), tmp_path, generation=generation)


@needs_icarus
def test_minimal_w65_in_plain_icarus_bench(tmp_path):
    net = minimal_w65()
    s = np.zeros((2, 1, 65), dtype=bool)
    s[0, 0, 64] = True
    s[1] = np.random.default_rng(2).random((1, 65)) < 0.5
    _check(net, s, HwConfig((LayerConfig(1, 65),)), tmp_path, stall=False)


@needs_icarus
@pytest.mark.parametrize("width", [65, 100, 128, 200, 257, 300])
def test_wide_words_plain_icarus(tmp_path, width):
    """A W sweep past 64 up to n_in = 300 (W = n_in included), two layers, P not dividing n_out."""
    net = random_network([300, 5, 3], timesteps=3, seed=width, encoding="direct", leak_shift=None)
    spikes = np.random.default_rng(width).random((2, 3, 300)) < 0.4
    _check(net, spikes, HwConfig((LayerConfig(2, width), LayerConfig(2, 5))), tmp_path)


def test_verilator_binary_plain_bench(tmp_path):
    from bsnn_hw.sim.runner import simulator_missing
    reason = simulator_missing("verilator")
    if reason:
        pytest.skip(reason)
    net = random_network([70, 6, 4], timesteps=4, seed=9, encoding="direct", readout="first")
    spikes = np.random.default_rng(4).random((2, 4, 70)) < 0.5
    _check(net, spikes, HwConfig((LayerConfig(3, 70), LayerConfig(2, 6))), tmp_path, sim="verilator")
