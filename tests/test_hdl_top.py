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
                expect = sum(1 << int(j) for j in np.flatnonzero(ref.spikes[layer][b, step]))
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


@pytest.mark.parametrize("n_in,W,junk,wait", [(150, 65, 2, 0), (150, 150, 1, 9), (200, 67, 7, 40)])
def test_input_ring_with_stalls_gaps_padding_and_reset(n_in, W, junk, wait):
    """Layer 0 at W > 64 keeps its input in a ring of registers (config.input_ring; NW_0 = 3, 1 and 3 here): bit-exact
    under source gaps, sink stalls, garbage in the padding bits and a reset mid-inference (junk beats shifted into
    the ring before it)."""
    from bsnn_hw.hdl.top import NetworkTop
    net = make_net([n_in, 9, 4], 3, seed=n_in + W, readout="first", fire_once=True)
    config = HwConfig((LayerConfig(2, W), LayerConfig(3, 9)))
    top = NetworkTop(net, config)
    top._MustUse__silence = True     # built for its plan only
    assert top.ring and [m for m in top.memories() if m["name"] == "input_buffer"][0]["ring"]
    spikes = spikes_for(net, 3, seed=W)
    check(net, config, spikes, trace=True, src_gap=0.3, sink_stall=0.4, seed=W, pad_garbage=True)
    check(net, config, spikes, trace=True, reset_junk_beats=junk, reset_wait=wait, sink_stall=0.2, seed=junk)


def spram_net(seed=1, T=2):
    """A conv (8 x 8 map, 24 channels, k = 3: state 64 x 24 x 12 bits >= SPRAM_MIN_BITS) -> OR pool -> dense."""
    from bsnn_hw.network import Conv2d, Pool
    rng = np.random.default_rng(seed)
    c = Conv2d(rng.random((24, 3, 3, 2)) < 0.5, (8, 8, 2), threshold=rng.integers(1, 4, 24), padding=1,
               membrane_bits=12, leak_shift=2)
    p = Pool(c.out_shape, 2)
    d = Layer(rng.random((5, p.n_out)) < 0.5, threshold=rng.integers(2, 12, 5), membrane_bits=12)
    return Network([c, p, d], timesteps=T)


def test_spram_state_matches_golden_with_stalls_and_reset():
    """HwConfig.spram: the conv layer's state RAM is one-port (one address for the read and the write-back, marked
    for the SPRAM, no initial contents): bit-exact, cycles unchanged, under stalls and a reset mid-inference."""
    from bsnn_hw.hdl.generate import generate
    net = spram_net()
    config = HwConfig.from_lists(net, [2, 1, 1], None, spram=True)
    design = generate(net, config)
    placed = {m["name"]: m["placement"] for m in design.manifest["memories"]}
    assert placed["layer0_state"] == "spram" and placed["layer2_state"] != "spram"     # 5 x 12 bits: too small
    assert design.verilog.count('ram_style = "huge"') == 1
    assert "initial state[" not in design.verilog.split('ram_style = "huge"')[1].split("endmodule")[0]
    spikes = spikes_for(net, 2, seed=3, density=0.4)
    out = check(net, config, spikes, trace=True)
    assert out.cycles == [cycles_per_inference(net, config, trace=True)] * 2
    check(net, config, spikes, trace=True, src_gap=0.2, sink_stall=0.3, seed=4, reset_junk_beats=3, reset_wait=50)


def test_spram_feature_maps_match_golden_with_stalls_and_reset():
    """HwConfig.spram with spram_min_bits = 1,536: the conv layer's output map (64 positions x 24 channels) goes to
    the SPRAM too, one address shared by the conv engine's writes and the pool engine's reads (never in one cycle);
    the pool's 384-bit map stays a two-port RAM. Bit-exact under stalls and a reset mid-inference, cycles unchanged."""
    import dataclasses
    from bsnn_hw.hdl.generate import generate
    net = spram_net(seed=2)
    config = dataclasses.replace(HwConfig.from_lists(net, [3, 1, 2], None, spram=True), spram_min_bits=1536)
    design = generate(net, config)
    placed = {m["name"]: m["placement"] for m in design.manifest["memories"]}
    assert placed["layer0_map"] == "spram" and placed["layer1_map"] != "spram" and placed["layer0_state"] == "spram"
    assert design.verilog.count('ram_style = "huge"') == 2
    spikes = spikes_for(net, 2, seed=5, density=0.5)
    out = check(net, config, spikes, trace=True)
    assert out.cycles == [cycles_per_inference(net, config, trace=True)] * 2
    check(net, config, spikes, trace=True, src_gap=0.3, sink_stall=0.3, seed=6, reset_junk_beats=5, reset_wait=40)


def test_spram_only_where_reads_and_writes_never_meet():
    """An engine whose groups come every 1 or 5 cycles (k = 1 conv, NW = 5 dense) would read and write its state in
    one cycle: it keeps a two-port RAM under spram; so does a skipping engine."""
    from bsnn_hw.hdl.config import spram_legal
    assert [w for w in range(1, 12) if not spram_legal(w)] == [1, 5]
    assert not spram_legal(9, skip=True)
    net = make_net([150, 1100, 4], 2, seed=2)     # state 1,100 x 16 bits >= SPRAM_MIN_BITS
    for W, where in ((30, "block"), (38, "spram")):     # 5 words per neuron, then 4
        top_mems = generate_memories(net, HwConfig((LayerConfig(1, W), LayerConfig(1, 8)), spram=True))
        assert top_mems["layer0_state"] == where, W


def generate_memories(net, config):
    from bsnn_hw.hdl.dse import design_memories
    return {m["name"]: m["placement"] for m in design_memories(net, config)}


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


def test_wide_engines_match_golden_and_cycles():
    """Engines over more than WIDE_TREE = 64 inputs (tree registered every second level, no word register): a conv
    with C_in = 70 and padding, a 1-bit dense layer at W = 65 over 72 inputs (a padded second word) and a 3-bit dense layer at
    W = n_in = 80; bit-exact with the golden model, cycles = formula (which counts the shorter latency)."""
    from bsnn_hw.hdl.config import WIDE_TREE, engine_latency, word_register
    from bsnn_hw.network import Conv2d
    assert not word_register(WIDE_TREE + 1) and engine_latency(WIDE_TREE + 1) < engine_latency(WIDE_TREE) + 2
    rng = np.random.default_rng(5)
    c = Conv2d(rng.random((8, 3, 3, 70)) < 0.5, (3, 3, 70), threshold=rng.integers(2, 9, 8), padding=1,
               membrane_bits=9, leak_shift=2)
    d = Layer(rng.random((5, c.n_out)) < 0.5, threshold=rng.integers(1, 6, 5), membrane_bits=10)
    d1 = Layer(rng.random((80, 72)) < 0.5, threshold=rng.integers(1, 6, 80), membrane_bits=10)
    d2 = Layer(rng.integers(-4, 4, (5, 80)), threshold=rng.integers(1, 9, 5), weight_bits=3, membrane_bits=12)
    for net, config in ((Network([c, d], timesteps=3), HwConfig((LayerConfig(3, 70), LayerConfig(2, 8)))),
                        (Network([d1, d2], timesteps=3), HwConfig((LayerConfig(3, 65), LayerConfig(2, 80))))):
        spikes = spikes_for(net, 3, seed=9, density=0.4)
        out = check(net, config, spikes, trace=True)
        assert out.cycles == [cycles_per_inference(net, config, trace=True)] * 3


def test_wide_skipping_engine_with_early_decision():
    """Zero-word skipping and the early decision on a 1-bit dense engine at W = 70 > WIDE_TREE."""
    from bsnn_hw.hdl.config import sample_cycles
    net = make_net([140, 12, 5], 6, seed=3, readout="first", leak=None, fire_once=True)
    config = HwConfig((LayerConfig(3, 70), LayerConfig(2, 12)), early_exit=True, skip_zero=True)
    spikes = spikes_for(net, 4, seed=2, density=0.05)
    spikes[0, :, :70] = False                              # a silent first word at every step
    out = check(net, config, spikes, trace=True)
    assert out.cycles == [w["cycles"] for w in sample_cycles(net, config, spikes, trace=True)]


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


# --- ensembles (members run one after another, totals and votes on chip) --------------------------------------------

def _with_ensemble(net, S, seed):
    """``net`` carrying S random member weight sets (1-bit and k-bit, extremes of the k-bit range included)."""
    from bsnn_hw import contract
    rng = np.random.default_rng(seed)
    ens = []
    for _ in range(S):
        ws = []
        for layer in net.layers:
            if not layer.has_neurons:
                continue
            if layer.weight_bits == 1:
                ws.append(rng.random(layer.weights.shape) < 0.5)
            else:
                lo, hi = contract.weight_range(layer.weight_bits)
                ws.append(rng.integers(lo, hi + 1, layer.weights.shape).astype(layer.weights.dtype))
        ens.append(ws)
    return Network(net.layers, net.timesteps, net.readout, net.encoding, net.seed, ensemble=ens)


def check_ensemble(net, config, spikes, trace=True, **kw):
    """The hardware ensemble against bsnn_hw.ensemble (totals, votes, class) and every member's golden run (the last
    member's counts/membranes in the beats; each member's spikes in the trace)."""
    from bsnn_hw import ensemble
    mems = ensemble.members(net)
    out = simulate_top(net, config, spikes, trace=trace, members=mems, **kw)
    want = ensemble.simulate(net, spikes)
    refs = [golden.simulate(m, spikes, record=True) for m in mems]
    np.testing.assert_array_equal(out.totals, want.totals, err_msg="ensemble totals")
    np.testing.assert_array_equal(out.votes, want.votes, err_msg="ensemble votes")
    np.testing.assert_array_equal(out.prediction, want.prediction, err_msg="ensemble class")
    assert (out.cls_per_beat == out.prediction[:, None]).all()
    np.testing.assert_array_equal(out.membrane, refs[-1].membrane[-1], err_msg="last member's membranes")
    if net.readout == "count":
        np.testing.assert_array_equal(out.counts, refs[-1].counts[-1], err_msg="last member's counts")
    if trace:
        L, T = len(net.layers), net.timesteps
        for b in range(spikes.shape[0]):
            beats = out.trace[b]
            assert len(beats) == len(mems) * T * L
            for k, (member, layer, step, bits) in enumerate(beats):
                assert (member, step, layer) == (k // (T * L), (k // L) % T, k % L)
                spk = refs[member].spikes[layer][b, step]
                want_bits = (int(spk.sum()) if net.layers[layer].kind != "dense"
                             else sum(1 << int(j) for j in np.flatnonzero(spk)))
                assert bits == want_bits, (b, member, step, layer)
    return out


@pytest.mark.parametrize("S,readout,P,W", [(3, "count", (2, 3), (5, 4)), (2, "membrane", (1, 5), (12, 8)),
                                           (4, "count", (8, 1), (1, 1))])
def test_ensemble_top_matches_golden_and_cycles(S, readout, P, W):
    net = _with_ensemble(make_net([12, 8, 5], 4, seed=S, readout=readout, leak=None if S == 2 else 3), S, seed=S)
    config = HwConfig(tuple(LayerConfig(p, w) for p, w in zip(P, W)))
    out = check_ensemble(net, config, spikes_for(net, 3, seed=S))
    assert out.cycles == [cycles_per_inference(net, config, trace=True, members=S)] * 3
    assert out.votes.sum(axis=1).tolist() == [S] * 3


def test_ensemble_of_conv_pool_kbit_members():
    net = _with_ensemble(_v2_net(5, T=2), 3, seed=7)
    config = HwConfig.from_lists(net, parallel=[2, 1, 3, 2])
    out = check_ensemble(net, config, spikes_for(net, 2, seed=1, density=0.6))
    assert out.cycles == [cycles_per_inference(net, config, trace=True, members=3)] * 2


def test_ensemble_with_stalls_gaps_and_reset():
    net = _with_ensemble(make_net([11, 6, 4], 3, seed=2), 2, seed=3)
    check_ensemble(net, HwConfig((LayerConfig(2, 4), LayerConfig(3, 4))), spikes_for(net, 3, seed=5),
                   src_gap=0.3, sink_stall=0.4, seed=7, pad_garbage=True, reset_junk_beats=20, reset_wait=9)


def test_single_member_top_runs_the_member():
    from bsnn_hw import ensemble
    net = _with_ensemble(make_net([9, 5, 3], 3, seed=4), 1, seed=1)
    member = ensemble.members(net)
    spikes = spikes_for(net, 2, seed=3)
    out = simulate_top(net, HwConfig.default(net), spikes, members=member)
    assert out.totals is None
    np.testing.assert_array_equal(out.counts, golden.simulate(member[0], spikes).counts[-1])


def test_ensembles_refused_where_the_hardware_does_not_build_them():
    from bsnn_hw import ensemble
    from bsnn_hw.hdl.top import NetworkTop
    first = _with_ensemble(make_net([8, 4], 3, seed=1, readout="first"), 2, seed=1)
    with pytest.raises(ValueError, match="ensemble needs the 'count' or 'membrane' readout"):
        NetworkTop(first, members=ensemble.members(first))
    net = _with_ensemble(make_net([8, 4], 3, seed=1), 2, seed=1)
    with pytest.raises(ValueError, match="not built for ensembles"):
        NetworkTop(net, HwConfig.from_lists(net, skip_zero=True), members=ensemble.members(net))
    other = make_net([8, 4], 3, seed=2, leak=2)
    with pytest.raises(ValueError, match=r"members\[1\] differs from the network in more than its weights"):
        NetworkTop(net, members=[ensemble.members(net)[0], other])


# --- on-chip input encoder (pixels in) ------------------------------------------------------------------------------

def check_encoder(net, config, x, **kw):
    """A pixels-in top against the golden model run on ``net.encode(x)`` (the contract's encoder)."""
    spikes = net.encode(x)
    out = simulate_top(net, config, None, trace=True, pixels=x, **kw)
    if config.early_exit:
        ref, decided = golden.decide(net, spikes, record=True)
        np.testing.assert_array_equal(out.steps, decided)
    else:
        ref = golden.simulate(net, spikes, record=True)
    np.testing.assert_array_equal(out.counts, ref.counts[-1])
    np.testing.assert_array_equal(out.membrane, ref.membrane[-1])
    np.testing.assert_array_equal(out.prediction, ref.prediction)
    for b in range(x.shape[0]):           # layer 0's spikes at every step: the encoder's words went in exactly
        for k, (layer, step, bits) in enumerate(out.trace[b]):
            if layer == 0:
                assert bits == sum(1 << int(j) for j in np.flatnonzero(ref.spikes[0][b, step])), (b, step)
    return out, spikes


def pixels_for(n_in, batch, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (batch, n_in), dtype=np.uint8)
    x[0, : n_in // 3] = 0                 # never spikes, in either code
    x[-1, -1] = 255
    return x


@pytest.mark.parametrize("encoding,W,lanes,T", [("rate", (5, 4), None, 4), ("rate", (16, 8), 4, 3),
                                                ("latency", (6, 3), 1, 5), ("latency", (19, 8), None, 1)])
def test_encoder_top_matches_golden_and_cycles(encoding, W, lanes, T):
    net = random_network([19, 8, 5], timesteps=T, encoding=encoding, seed=sum(W) + T, leak_shift=3)
    net = Network(net.layers, T, "count", encoding, seed=4321)
    config = HwConfig((LayerConfig(2, W[0]), LayerConfig(3, W[1])), encoder=True, encoder_lanes=lanes)
    out, _ = check_encoder(net, config, pixels_for(19, 3, T))
    assert out.cycles == [cycles_per_inference(net, config, trace=True)] * 3


def test_encoder_with_early_exit_skipping_stalls_and_reset():
    from bsnn_hw.hdl.config import sample_cycles
    net = make_net([24, 9, 4], 8, seed=5, readout="first", leak=None, fire_once=True)
    net = Network(net.layers, 8, "first", "latency")
    config = HwConfig((LayerConfig(3, 8), LayerConfig(2, 9)), early_exit=True, skip_zero=True, encoder=True,
                      encoder_lanes=2)
    x = pixels_for(24, 4, 1)
    out, spikes = check_encoder(net, config, x)
    assert out.cycles == [c["cycles"] for c in sample_cycles(net, config, spikes, trace=True)]
    check_encoder(net, config, x, src_gap=0.3, sink_stall=0.4, seed=2, reset_junk_beats=13, reset_wait=5)


def test_encoder_feeds_a_conv_front_and_an_ensemble():
    base = _v2_net(3, T=2)
    net = _with_ensemble(Network(base.layers, 2, "count", "rate", seed=99), 2, seed=4)
    config = HwConfig.from_lists(net, parallel=[1, 1, 2, 1], encoder=True)
    from bsnn_hw import ensemble
    x = pixels_for(net.n_in, 2, 3)
    out = simulate_top(net, config, None, pixels=x, members=ensemble.members(net))
    want = ensemble.simulate(net, net.encode(x))
    np.testing.assert_array_equal(out.totals, want.totals)
    np.testing.assert_array_equal(out.prediction, want.prediction)
    assert out.cycles == [cycles_per_inference(net, config, members=2)] * 2


def test_encoder_refusals():
    from bsnn_hw.hdl.encoder import InputEncoder
    direct = make_net([8, 5, 4], 2, seed=1)
    with pytest.raises(ValueError, match="on-chip encoder needs the 'rate' or 'latency' encoding, not 'direct'"):
        HwConfig((LayerConfig(1, 8), LayerConfig(1, 4)), encoder=True).validate(
            Network(direct.layers, 2, "count", "direct"))
    rate = Network(direct.layers, 2, "count", "rate")
    with pytest.raises(ValueError, match="encoder_lanes must divide layer 0's width 8 .*, not 3"):
        HwConfig((LayerConfig(1, 8), LayerConfig(1, 4)), encoder=True, encoder_lanes=3).validate(rate)
    with pytest.raises(ValueError, match="encoder_lanes applies to the on-chip encoder"):
        HwConfig((LayerConfig(1, 8), LayerConfig(1, 4)), encoder_lanes=2).validate(rate)
    with pytest.raises(ValueError, match="lanes .* must divide the input word width 6, not 4"):
        InputEncoder(10, 6, 3, "rate", 1, lanes=4)
    with pytest.raises(ValueError, match="rate-encoding seed must be in 1..65535"):
        InputEncoder(10, 6, 3, "rate", 0)


# --- contract v4: the "pixel" input, 8 bit planes per step, partial sums shifted by the plane ------------------------

def _pixel_dense(n_in, bits, T=3, readout="count", seed=0, fire_once=False):
    from bsnn_hw import contract
    rng = np.random.default_rng(seed)
    lo, hi = contract.weight_range(bits)
    w0 = rng.random((6, n_in)) < 0.5 if bits == 1 else rng.integers(lo, hi + 1, (6, n_in))
    l0 = Layer(w0, rng.integers(1, 255 * n_in * max(1, hi) // 4 + 2, 6), leak_shift=2, membrane_bits=22,
               weight_bits=bits, fire_once=fire_once)
    l1 = Layer(rng.random((4, 6)) < 0.5, rng.integers(1, 3, 4), membrane_bits=8, fire_once=fire_once)
    return Network([l0, l1], T, readout, "pixel")


def _pixels(n, batch, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (batch, n)).astype(np.uint8)
    x[:, ::5] = 255          # every bit plane set
    x[:, 1::7] = 0           # none
    return x


@pytest.mark.parametrize("n_in,bits,P,W,kw", [
    (12, 1, (1, 1), (5, 6), dict()),
    (12, 8, (3, 2), (12, 3), dict(pad_garbage=True)),
    (20, 2, (6, 1), (7, 6), dict(src_gap=0.3, sink_stall=0.3, pad_garbage=True)),
    (70, 1, (2, 4), (70, 6), dict()),                 # a wide engine (W > 64): no input ring for bit planes
])
def test_pixel_input_top_matches_golden_and_cycles(n_in, bits, P, W, kw):
    """The intensities' 8 bit planes per step (plane b's NW_0 words b-th, hdl.testbench.input_beats), each plane's
    partial sums shifted left by b: bit-exact with the golden model's sum_i x_i w_ji, cycles = formula (8 x layer 0's
    words per group)."""
    from bsnn_hw.hdl.config import input_planes
    net = _pixel_dense(n_in, bits, seed=n_in + bits)
    config = HwConfig(tuple(LayerConfig(p, w) for p, w in zip(P, W)))
    out = check(net, config, _pixels(n_in, 3, seed=bits), trace=True, seed=3, **kw)
    assert input_planes(net) == 8
    if not kw:
        assert out.cycles == [cycles_per_inference(net, config, trace=True)] * 3


@pytest.mark.parametrize("P", [1, 3])
def test_pixel_input_conv_front(P):
    """An 8-bit conv first layer on intensities (B-SNN's MID front), OR pooling, a dense readout."""
    from bsnn_hw.network import Conv2d, Pool
    rng = np.random.default_rng(P)
    conv = Conv2d(rng.integers(-128, 128, (3, 3, 3, 1)), (4, 4, 1), rng.integers(1, 5000, 3), 1, 1, leak_shift=3,
                  membrane_bits=22, weight_bits=8)
    pool = Pool(conv.out_shape, 2)
    net = Network([conv, pool, Layer(rng.random((4, pool.n_out)) < 0.5, None, membrane_bits=12)], 2, "membrane",
                  "pixel")
    config = HwConfig.from_lists(net, [P, 1, 2], None)
    out = check(net, config, _pixels(16, 2, seed=P), trace=True)
    assert out.cycles == [cycles_per_inference(net, config, trace=True)] * 2


def test_pixel_input_early_exit_reset_and_ensemble():
    net = _pixel_dense(10, 2, T=5, readout="first", seed=4, fire_once=True)
    config = HwConfig((LayerConfig(2, 4), LayerConfig(2, 6)), early_exit=True)
    check(net, config, _pixels(10, 3, seed=5), trace=True, reset_junk_beats=9, reset_wait=5, sink_stall=0.2, seed=2)
    ens = _with_ensemble(_pixel_dense(10, 8, T=2, readout="count", seed=6), 2, seed=7)
    check_ensemble(ens, HwConfig((LayerConfig(3, 5), LayerConfig(1, 6))), _pixels(10, 2, seed=8))


def test_pixel_input_refusals():
    from bsnn_hw.hdl.engine import LayerEngine
    net = _pixel_dense(10, 1)
    with pytest.raises(ValueError, match="the on-chip encoder makes spikes; a 'pixel' network takes"):
        HwConfig(HwConfig.default(net).layers, encoder=True).validate(net)
    with pytest.raises(ValueError, match="skip_zero applies to dense layers that read a vector"):
        HwConfig((LayerConfig(1, 10),), skip_zero=True).validate(Network(net.layers[:1], 2, "count", "pixel"))
    with pytest.raises(ValueError, match=r"planes must be 1 \(spikes\) or 8"):
        LayerEngine(net.layers[0], 1, 10, 2, planes=4)
    with pytest.raises(ValueError, match="a 'pixel' input's bit planes are not skipped"):
        LayerEngine(net.layers[0], 1, 10, 2, skip=True, planes=8)
