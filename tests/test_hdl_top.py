"""NetworkTop in Amaranth's simulator against bsnn_hw.golden.simulate(record=True), bit for bit, plus cycle counts."""
from __future__ import annotations

import numpy as np
import pytest

from bsnn_hw import golden
from bsnn_hw.hdl import HwConfig, LayerConfig, cycles_per_inference
from bsnn_hw.hdl.testbench import simulate_top
from bsnn_hw.network import Layer, Network, random_network


def make_net(sizes, T, seed, readout="count", leak=4, reset="subtract", M=16, fire_once=False, threshold=None):
    return random_network(sizes, timesteps=T, leak_shift=leak, reset=reset, membrane_bits=M, fire_once=fire_once,
                          readout=readout, threshold=threshold, seed=seed)


def spikes_for(net, batch, seed, density=0.5):
    rng = np.random.default_rng(seed)
    return rng.random((batch, net.timesteps, net.n_in)) < density


def check(net, config, spikes, trace=False, **kw):
    out = simulate_top(net, config, spikes, trace=trace, **kw)
    if config is not None and config.early_exit:
        ref, decided = golden.decide(net, spikes, record=True)
        np.testing.assert_array_equal(out.steps, decided, err_msg="decision step")
    else:
        ref = golden.simulate(net, spikes, record=True)
    batch = spikes.shape[0]
    n_out = net.n_out
    assert (out.indices == np.arange(n_out)).all(), out.indices
    assert (out.last_flags == (np.arange(n_out) == n_out - 1)).all()
    assert (out.cls_per_beat == out.prediction[:, None]).all(), "cls must be the same on every beat"
    np.testing.assert_array_equal(out.membrane, ref.membrane[-1], err_msg="last-layer membranes")
    if net.readout != "membrane":
        np.testing.assert_array_equal(out.counts, ref.counts[-1], err_msg="last-layer counts")
    else:
        assert (out.counts == 0).all()
    np.testing.assert_array_equal(out.prediction, ref.prediction, err_msg="class")
    if trace:
        L = len(net.layers)
        for b in range(batch):
            beats = out.trace[b]
            assert len(beats) == (out.steps[b] + 1) * L
            for k, (layer, step, bits) in enumerate(beats):
                assert (layer, step) == (k % L, k // L)
                n = net.layers[layer].n_out
                if net.layers[layer].kind != "dense":     # a map layer's beat: its spike count at that step
                    assert bits == int(ref.spikes[layer][b, step].sum()), (b, step, layer)
                    continue
                expect = sum(1 << j for j in np.flatnonzero(ref.spikes[layer][b, step]))
                assert bits == expect, f"trace sample {b} step {step} layer {layer}: {bits:#x} != {expect:#x}"
                assert bits >> n == 0
    return out


CASES = [
    # sizes, T, P per layer, W per layer, net kwargs
    ([12, 8, 4], 3, (1, 1), (12, 8), dict()),
    ([12, 8, 4], 4, (3, 2), (5, 3), dict(readout="membrane", leak=None, reset="zero")),
    ([10, 7, 5], 5, (2, 5), (4, 7), dict(readout="first", fire_once=True, M=6, leak=1)),
    ([9, 6, 3], 4, (6, 1), (1, 2), dict(readout="count", M=4, leak=2, reset="zero", threshold=1)),
]


@pytest.mark.parametrize("sizes,T,P,W,kw", CASES)
def test_top_matches_golden_and_cycles(sizes, T, P, W, kw):
    net = make_net(sizes, T, seed=len(sizes) * T + sum(P), **kw)
    config = HwConfig(tuple(LayerConfig(p, w) for p, w in zip(P, W)))
    out = check(net, config, spikes_for(net, 4, seed=T), trace=True)
    assert out.cycles == [cycles_per_inference(net, config, trace=True)] * 4


def test_top_stalls_gaps_and_padding_garbage():
    net = make_net([11, 6, 4], 4, seed=3, readout="first", fire_once=True)
    config = HwConfig((LayerConfig(2, 4), LayerConfig(3, 4)))
    check(net, config, spikes_for(net, 3, seed=5), trace=True, src_gap=0.3, sink_stall=0.4, seed=7,
          pad_garbage=True)


@pytest.mark.parametrize("junk,wait", [(2, 0), (5, 17), (12, 200)])
def test_top_reset_mid_inference(junk, wait):
    net = make_net([12, 8, 4], 3, seed=11)
    config = HwConfig((LayerConfig(2, 5), LayerConfig(1, 8)))
    check(net, config, spikes_for(net, 2, seed=junk), trace=True, reset_junk_beats=junk, reset_wait=wait,
          sink_stall=0.2, seed=junk)


def test_top_saturation_and_ties():
    # all-positive weights and dense input drive membranes into saturation; equal neurons force argmax ties
    rng = np.random.default_rng(4)
    w0 = np.ones((6, 10), bool)
    w1 = np.tile(rng.random((1, 6)) < 0.5, (4, 1))
    layers = [Layer(w0, 3, None, "subtract", 5, False), Layer(w1, None, 3, "subtract", 4, False)]
    net = Network(layers, 5, readout="membrane", encoding="direct")
    check(net, HwConfig((LayerConfig(2, 3), LayerConfig(2, 2))), spikes_for(net, 3, seed=1, density=0.9))


def test_single_layer_single_neuron():
    net = make_net([5, 1], 2, seed=2, readout="first")
    check(net, HwConfig((LayerConfig(1, 5),)), spikes_for(net, 3, seed=2), trace=True)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(24))
def test_top_random_sweep(seed):
    rng = np.random.default_rng(1000 + seed)
    L = int(rng.integers(1, 4))
    sizes = [int(rng.integers(2, 20))] + [int(rng.integers(1, 12)) for _ in range(L)]
    M = int(rng.integers(3, 18))
    leak = None if rng.random() < 0.3 else int(rng.integers(1, M))
    kw = dict(readout=str(rng.choice(["count", "membrane", "first"])), leak=leak,
              reset=str(rng.choice(["subtract", "zero"])), M=M, fire_once=bool(rng.random() < 0.4))
    T = int(rng.integers(1, 7))
    net = make_net(sizes, T, seed=seed, **kw)
    config = HwConfig(tuple(LayerConfig(int(rng.integers(1, n_out + 1)), int(rng.integers(1, n_in + 1)))
                            for n_in, n_out in zip(sizes[:-1], sizes[1:])))
    out = check(net, config, spikes_for(net, 3, seed=seed, density=float(rng.uniform(0.2, 0.9))), trace=True,
                src_gap=0.2, sink_stall=0.2, seed=seed, pad_garbage=True)
    assert len(out.cycles) == 3


def test_top_medium_network_16bit_words():
    # the shape of the real target at small scale: 16-bit words, several groups, padding in the last word
    net = make_net([100, 32, 10], 4, seed=1)
    config = HwConfig((LayerConfig(2, 16), LayerConfig(1, 16)))
    out = check(net, config, spikes_for(net, 2, seed=0, density=0.3))
    assert out.cycles == [cycles_per_inference(net, config)] * 2 == [707, 707]


@pytest.mark.slow
def test_top_target_network_784_128_10():
    # the target shape (T = 2 to keep it to ~13k simulated cycles)
    net = make_net([784, 128, 10], 2, seed=9)
    config = HwConfig.default(net)
    out = check(net, config, spikes_for(net, 1, seed=9, density=0.2))
    assert out.cycles == [cycles_per_inference(net, config)]


@pytest.mark.parametrize("M,leak,reset", [(2, 1, "zero"), (2, None, "subtract"), (32, 31, "subtract"), (32, None, "zero")])
def test_top_membrane_width_extremes(M, leak, reset):
    for readout in ("count", "membrane"):
        net = make_net([7, 5, 3], 3, seed=M, M=M, leak=leak, reset=reset, readout=readout)
        check(net, HwConfig((LayerConfig(2, 3), LayerConfig(3, 5))), spikes_for(net, 2, seed=M, density=0.7),
              trace=True)


# --- contract v2: conv, pool, k-bit ----------------------------------------------------------------------------------

def _v2_net(seed, T=3, readout="count"):
    from bsnn_hw.network import Conv2d, Pool
    rng = np.random.default_rng(seed)
    c1 = Conv2d(rng.random((3, 3, 3, 2)) < 0.6, (6, 5, 2), threshold=rng.integers(1, 4, 3), padding=1, leak_shift=2,
                membrane_bits=8)
    p1 = Pool(c1.out_shape, 2)
    c2 = Conv2d(rng.integers(-8, 8, (4, 2, 2, 3)), p1.out_shape, threshold=rng.integers(1, 6, 4), stride=2,
                padding=1, weight_bits=4, membrane_bits=10, fire_once=True)
    d = Layer(rng.integers(-2, 2, (5, c2.n_out)), threshold=rng.integers(1, 3, 5), weight_bits=2, membrane_bits=9,
              reset="zero")
    return Network([c1, p1, c2, d], timesteps=T, readout=readout)


@pytest.mark.parametrize("P,readout", [((2, 1, 3, 2), "count"), ((3, 1, 4, 5), "first"), ((1, 1, 1, 1), "membrane")])
def test_conv_pool_kbit_top_matches_golden_and_cycles(P, readout):
    """A conv (padding 1, C_in 2) -> OR pool (drops a row) -> 4-bit conv (stride 2) -> 2-bit dense network, with
    trace (map layers report their per-step spike counts): bit-exact with the golden model, cycles = formula."""
    net = _v2_net(sum(P), readout=readout)
    widths = [lc.width for lc in HwConfig.default(net).layers]
    config = HwConfig(tuple(LayerConfig(p, w) for p, w in zip(P, widths)))
    out = check(net, config, spikes_for(net, 3, seed=4, density=0.6), trace=True)
    assert out.cycles == [cycles_per_inference(net, config, trace=True)] * 3
    ref = golden.simulate(net, spikes_for(net, 3, seed=4, density=0.6), record=True)
    assert all(ref.counts[i].sum() > 0 for i in range(3)), "every map layer should spike in this test"


def test_conv_top_stalls_and_reset():
    net = _v2_net(9, T=2, readout="first")
    check(net, HwConfig.default(net), spikes_for(net, 2, seed=2), trace=True, src_gap=0.3, sink_stall=0.4, seed=3,
          reset_junk_beats=7, reset_wait=11)


# --- early decision and zero-word skipping ---------------------------------------------------------------------------

@pytest.mark.parametrize("early,skip,P,W", [(True, True, (2, 3), (6, 4)), (True, False, (1, 1), (40, 12)),
                                            (False, True, (12, 5), (1, 1)), (True, True, (1, 5), (40, 3))])
def test_early_decision_and_skipping_match_golden_and_sample_cycles(early, skip, P, W):
    """IF neurons, fire-once, "first" readout, sparse (latency-like) input: the class, the decision step, the state at
    the decision, every traced step up to it, and each sample's cycles against sample_cycles (data dependent)."""
    from bsnn_hw.hdl.config import sample_cycles
    net = make_net([40, 12, 5], 8, seed=sum(P) + 7 * W[0], readout="first", leak=None, fire_once=True)
    config = HwConfig(tuple(LayerConfig(p, w) for p, w in zip(P, W)), early_exit=early, skip_zero=skip)
    spikes = spikes_for(net, 5, seed=sum(W), density=0.06)
    spikes[0] = False                                     # a silent sample: every group's empty word, no decision
    out = check(net, config, spikes, trace=True)
    want = sample_cycles(net, config, spikes, trace=True)
    assert out.cycles == [w["cycles"] for w in want]
    assert max(out.cycles) <= cycles_per_inference(net, config, trace=True)
    if skip:
        full = HwConfig(config.layers)
        assert sum(out.cycles) < sum(w["cycles"] for w in sample_cycles(net, full, spikes, trace=True))


def test_early_exit_with_stalls_gaps_and_reset():
    net = make_net([30, 9, 4], 6, seed=21, readout="first", leak=None, fire_once=True)
    config = HwConfig((LayerConfig(3, 7), LayerConfig(2, 9)), early_exit=True, skip_zero=True)
    check(net, config, spikes_for(net, 4, seed=9, density=0.1), trace=True, src_gap=0.3, sink_stall=0.4, seed=5,
          reset_junk_beats=9, reset_wait=13)


def test_early_and_skip_are_refused_where_they_do_not_apply():
    from bsnn_hw.network import Conv2d
    net = make_net([10, 4], 3, seed=1, readout="count")
    with pytest.raises(ValueError, match="early_exit needs the 'first' readout"):
        HwConfig((LayerConfig(1, 10),), early_exit=True).validate(net)
    conv = Network([Conv2d(np.ones((2, 3, 3, 1), bool), (4, 4, 1), 1, padding=1),
                    Layer(np.ones((3, 32), bool), 1)], 2, "first", "direct")
    with pytest.raises(ValueError, match="skip_zero applies to dense layers that read a vector"):
        HwConfig.from_lists(conv, skip_zero=True).validate(conv)
    with pytest.raises(TypeError, match="early_exit must be a bool, not 1"):
        HwConfig((LayerConfig(1, 10),), early_exit=1)
