"""cocotb benches of each hardware block alone (WeightROM, SynapseArray, NeuronCore, LayerEngine) against the
contract, on Icarus and Verilator; all instances of one test share one simulator build (bsnn_hw.sim.blocks)."""
import numpy as np
import pytest

from bsnn_hw.network import Layer
from bsnn_hw.sim.blocks import BlockUnit, random_block_units, run_blocks

SEEDS = {"icarus": 10, "verilator": 20}


def directed_block_units():
    rng = np.random.default_rng(5)
    w = rng.random((3, 30)) < 0.5
    return [
        # Saturation at both ends and V == theta: sums of +-30 into M = 4 (-8..7), theta 7 (the maximum).
        BlockUnit("neuron", Layer(w, 7, None, "subtract", 4), 3, timesteps=6, seed=1, name="neuron-saturate"),
        # Negative membranes through a floor-rounding leak, zero reset, fire-once, P = 2 over 3 neurons.
        BlockUnit("neuron", Layer(w, np.array([1, 2, 3]), 1, "zero", 6, True), 2, timesteps=6, seed=2,
                  name="neuron-leak-fire-once"),
        # A layer that never fires (membrane readout's last layer).
        BlockUnit("neuron", Layer(w, None, 2, "subtract", 8), 1, timesteps=4, fires=False, seed=3,
                  name="neuron-no-fire"),
        # Widest and narrowest folding of one layer.
        BlockUnit("engine", Layer(w, 2, 3, "subtract", 8), 3, 30, timesteps=3, seed=4, name="engine-P3-W30"),
        BlockUnit("engine", Layer(w, 2, 3, "zero", 8, True), 1, 1, timesteps=3, seed=5, name="engine-P1-W1"),
        BlockUnit("synapse", width=1, seed=6, name="synapse-W1"),
        BlockUnit("synapse", width=64, seed=7, name="synapse-W64"),
        BlockUnit("rom", Layer(w, 2), 3, 7, seed=8, name="rom-P3-W7"),
    ]


def test_blocks(sim, sim_cache, waves):
    units = directed_block_units() + random_block_units(SEEDS[sim], 3)
    run, results = run_blocks(units, sim, cache_dir=sim_cache, waves=waves)
    assert len(results) == len(units)
    for u, r in zip(units, results):
        assert r["checks"] > 0, u.name
        assert r["errors"] == [], u.name


@pytest.mark.slow
def test_blocks_random_slow(sim, sim_cache):
    units = random_block_units(SEEDS[sim] + 1, 12)
    run, results = run_blocks(units, sim, cache_dir=sim_cache)
    assert all(r["errors"] == [] and r["checks"] > 0 for r in results)
