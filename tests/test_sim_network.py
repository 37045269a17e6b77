"""cocotb benches of the generated network top against the golden model, on Icarus and Verilator.

Each test packs many networks into one simulator build (see bsnn_hw.sim.network): directed corner cases and seeded
random configurations over every hardware parameter (sizes, T, P, W, M, leak, reset, fire-once, readout, trace,
stalls on both streams, reset mid-inference). The default suite runs the directed cases plus RANDOM_DEFAULT random
networks per simulator (different seeds per simulator); `pytest -m slow` adds SLOW_BATCHES x RANDOM_SLOW more.
"""
import numpy as np
import pytest

from bsnn_hw.sim import configs, runner
from bsnn_hw.sim.network import Unit, expected_cycles, run_network

RANDOM_DEFAULT = 20        # small v1 networks; the full-range and v2 generators below reach the corners
RANDOM_SLOW = 60
SLOW_BATCHES = 3
FULL_DEFAULT = len(configs.CORNERS)        # one unit aimed at each corner of the whole legal space
FULL_SLOW = 3 * len(configs.CORNERS)
FULL_SHARDS = 4          # the full-range and v2 sets in 4 parts, so pytest-xdist keeps both workers busy to the end
V2_DEFAULT = 2 * len(configs.V2_CORNERS)   # conv / pool / k-bit: two passes over the v2 corners (with V2_COVER)
V2_SLOW = 3 * len(configs.V2_CORNERS)
V2_COVER = 2                               # default suite: every v2 corner hit by at least 2 units
SEEDS = {"icarus": 1000, "verilator": 2000}


def _check(units, sim, sim_cache, waves=False):
    run, results = run_network(units, sim, cache_dir=sim_cache, waves=waves, quick_build=True)
    assert len(results) == len(units)
    for u, r in zip(units, results):
        assert r["checked"] == u.spikes.shape[0], configs.describe_unit(u)
        assert r["mismatches"] == [], configs.describe_unit(u)
    return run, results


def test_network_directed_and_random(sim, sim_cache, waves):
    units = configs.directed_units() + configs.random_units(SEEDS[sim], RANDOM_DEFAULT, max_in=24, max_hidden=8)
    run, results = _check(units, sim, sim_cache, waves)
    # Cycles per inference measured against the documented formula (units without stalls).
    from bsnn_hw.hdl import HwConfig, cycles_per_inference
    for u, r in zip(units, results):
        if u.stall_in == 0 and u.stall_out == 0:
            cfg = u.config or HwConfig.default(u.net)
            assert {s["cycles"] for s in r["samples"]} == {cycles_per_inference(u.net, cfg, u.trace)}, \
                configs.describe_unit(u)


def test_full_range_generator_reaches_every_corner():
    """The tally is read from the drawn units themselves; print it (pytest -s shows it) and require every corner."""
    for seed in SEEDS.values():
        units = configs.random_full_units(seed, FULL_DEFAULT)
        tally = configs.coverage(units)
        print(f"\nfull-range units, seed {seed}:\n{configs.format_coverage(tally)}")
        assert all(tally.values()), [k for k, v in tally.items() if not v]
        assert max(u.net.n_in for u in units) >= 300
        assert max(lc.width for u in units for lc in u.config.layers) > 256
        assert max(u.net.timesteps for u in units) >= 128
    again = configs.random_full_units(SEEDS["icarus"], 3)
    assert [configs.describe_unit(u) for u in again] == \
        [configs.describe_unit(u) for u in configs.random_full_units(SEEDS["icarus"], 3)]


def _check_full(units, sim, sim_cache):
    """Icarus evaluates every unit's logic on every clock edge, so one build of many large units costs the longest
    unit's cycles times all units' logic: there each unit runs in its own (cheap) build. Verilator builds are
    expensive and its cycles cheap: one build per shard."""
    groups = [[u] for u in units] if sim == "icarus" else [units]
    for group in groups:
        run, results = _check(group, sim, sim_cache)
        for u, r in zip(group, results):
            if u.stall_in == 0 and u.stall_out == 0:       # each sample's cycles: the formula (data dependent with
                assert [s["cycles"] for s in r["samples"]] == expected_cycles(u), \
                    configs.describe_unit(u)                # early exit or zero-word skipping)


@pytest.mark.parametrize("shard", range(FULL_SHARDS))
def test_network_full_range(sim, sim_cache, shard):
    """Every corner of the legal space (W > 64, W = n_in up to 320 inputs, T >= 128, M = 2 and 32, ...) on both
    simulators, bit-exact, cycles = formula where nothing stalls. The units are drawn once and split into shards
    (so pytest-xdist spreads them); together the shards cover every corner."""
    units = configs.random_full_units(SEEDS[sim] + 7, FULL_DEFAULT)
    assert all(configs.coverage(units).values())
    _check_full(units[shard::FULL_SHARDS], sim, sim_cache)


@pytest.mark.slow
@pytest.mark.parametrize("batch", range(SLOW_BATCHES))
def test_network_full_range_slow(sim, sim_cache, batch):
    units = configs.random_full_units(SEEDS[sim] + 100 + batch, FULL_SLOW, samples=3, max_cycles=60_000,
                                      max_lane_bits=4096)
    assert all(configs.coverage(units).values())
    for shard in range(FULL_SHARDS):
        _check_full(units[shard::FULL_SHARDS], sim, sim_cache)


@pytest.mark.slow
@pytest.mark.parametrize("batch", range(SLOW_BATCHES))
def test_network_random_slow(sim, sim_cache, batch):
    units = configs.random_units(SEEDS[sim] + 1 + batch, RANDOM_SLOW, samples=3)
    _check(units, sim, sim_cache)


def test_bench_catches_a_wrong_model(sim, sim_cache):
    """The scoreboard can fail: hardware built from one threshold, checked against the golden model of another."""
    from bsnn_hw.network import Layer, Network
    rng = np.random.default_rng(0)
    w = rng.random((4, 10)) < 0.5
    spikes = rng.random((2, 3, 10)) < 0.6
    hw_net = Network([Layer(w, 1, None, "subtract", 8)], 3, "count", "direct")
    ref_net = Network([Layer(w, 4, None, "subtract", 8)], 3, "count", "direct")
    unit = Unit(hw_net, spikes, name="wrong", check_net=ref_net)
    with pytest.raises(runner.SimFailure, match=r"mismatches against the golden model.*first: wrong: "
                                                r"spike mismatch at sample \d+, layer 0, neuron \d+, step \d+: "
                                                r"expected [01], got [01]"):
        run_network([unit], sim, cache_dir=sim_cache, quick_build=True)


def test_v2_generator_reaches_every_corner():
    """Conv, pool and k-bit units: the tally read from the units, printed, every corner required."""
    for seed in SEEDS.values():
        units = configs.random_v2_units(seed + 11, V2_DEFAULT, cover=V2_COVER)
        tally = configs.v2_coverage(units)
        print(f"\nv2 units, seed {seed + 11}:\n{configs.format_coverage(tally)}")
        print(f"per-step affines in the v2 units:\n{configs.format_coverage(configs.affine_coverage(units))}")
        assert all(tally.values()), [k for k, v in tally.items() if not v]


@pytest.mark.parametrize("shard", range(FULL_SHARDS))
def test_network_v2(sim, sim_cache, shard):
    """Random conv / OR-pool / k-bit networks over every v2 corner on both simulators: bit-exact (class, last-layer
    counts and membranes, and with trace every map layer's spike count and every dense layer's spikes at every
    step), cycles = formula where nothing stalls."""
    units = configs.random_v2_units(SEEDS[sim] + 11, V2_DEFAULT, cover=V2_COVER)
    assert all(configs.v2_coverage(units).values())
    _check_full(units[shard::FULL_SHARDS], sim, sim_cache)


@pytest.mark.slow
@pytest.mark.parametrize("batch", range(SLOW_BATCHES))
def test_network_v2_slow(sim, sim_cache, batch):
    units = configs.random_v2_units(SEEDS[sim] + 200 + batch, V2_SLOW, samples=3, max_side=14, max_channels=12,
                                    max_cycles=120_000, max_lane_bits=2048)
    assert all(configs.v2_coverage(units).values())
    for shard in range(FULL_SHARDS):
        _check_full(units[shard::FULL_SHARDS], sim, sim_cache)


def test_bench_catches_a_wrong_conv_model(sim, sim_cache):
    """The map layers' trace check can fail: a conv layer built with one threshold, checked against another."""
    from bsnn_hw.network import Conv2d, Layer, Network
    rng = np.random.default_rng(1)
    w = rng.random((2, 3, 3, 1)) < 0.7
    dense = Layer(rng.random((3, 32)) < 0.5, 1, None, "subtract", 8)
    nets = [Network([Conv2d(w, (4, 4, 1), th, padding=1, membrane_bits=8), dense], 3, "count", "direct")
            for th in (1, 3)]
    spikes = rng.random((2, 3, 16)) < 0.7
    unit = Unit(nets[0], spikes, trace=True, name="wrong-conv", check_net=nets[1])
    with pytest.raises(runner.SimFailure, match=r"first: wrong-conv: map spike count mismatch at sample \d+, "
                                                r"layer 0, step \d+: expected \d+, got \d+"):
        run_network([unit], sim, cache_dir=sim_cache, quick_build=True)


def test_bench_catches_a_wrong_ensemble_member(sim, sim_cache):
    """The ensemble scoreboard can fail: a design whose member 1 has one weight set, checked against another
    (member 0 identical), is caught in member 1's trace and in the totals."""
    from bsnn_hw.network import Network, random_network
    base = random_network([10, 6, 4], timesteps=3, leak_shift=None, seed=4)
    rng = np.random.default_rng(2)
    m0 = [rng.random(l.weights.shape) < 0.5 for l in base.layers]
    m1 = [rng.random(l.weights.shape) < 0.5 for l in base.layers]
    m1_wrong = [~w for w in m1]
    nets = [Network(base.layers, 3, "count", "direct", ensemble=[m0, m]) for m in (m1, m1_wrong)]
    spikes = rng.random((2, 3, 10)) < 0.6
    unit = Unit(nets[0], spikes, trace=True, name="wrong-member", check_net=nets[1])
    with pytest.raises(runner.SimFailure, match=r"wrong-member: member 1 spike mismatch at sample \d+, layer \d+"):
        run_network([unit], sim, cache_dir=sim_cache, quick_build=True)


def test_spram_state_on_both_simulators(sim, sim_cache):
    """The SPRAM-marked state RAM (no initial contents: X on Icarus until written) in the generated Verilog: bit-exact
    on both simulators, with stalls and a reset mid-inference (a sample's first step never reads the old state)."""
    from bsnn_hw.hdl import HwConfig
    from tests.test_hdl_top import spram_net
    net = spram_net(seed=5)
    config = HwConfig.from_lists(net, [3, 1, 1], None, spram=True)
    rng = np.random.default_rng(6)
    spikes = rng.random((3, net.timesteps, net.n_in)) < 0.4
    units = [Unit(net, spikes, config, name="spram"),
             Unit(net, spikes, config, stall_in=0.2, stall_out=0.3, seed=7, reset_mid=True, name="spram-stalls")]
    _check(units, sim, sim_cache)
