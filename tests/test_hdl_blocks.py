"""Each hardware block alone in Amaranth's simulator against the contract / golden model (random + corner cases)."""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from bsnn_hw import contract, golden
from bsnn_hw.hdl import LayerEngine, NeuronCore, SynapseArray, WeightROM
from bsnn_hw.hdl.config import NEURON_LATENCY, engine_latency, synapse_latency
from bsnn_hw.network import Layer, random_network


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


# --- WeightROM -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_out,n_in,P,W", [(5, 7, 1, 7), (5, 7, 2, 3), (4, 16, 4, 16), (3, 10, 3, 1), (6, 9, 4, 4)])
def test_weight_rom_layout_and_reads(n_out, n_in, P, W):
    rng = np.random.default_rng(n_out * n_in + P)
    weights = rng.random((n_out, n_in)) < 0.5
    rom = WeightROM(weights, P, W)
    G, NW = -(-n_out // P), -(-n_in // W)
    assert rom.depth == G * NW
    # the layout, checked bit by bit independently of pack_words: lane p bit i of word g*NW+w = B[g*P+p, w*W+i]
    for g in range(G):
        for w in range(NW):
            word = rom.init[g * NW + w]
            for p in range(P):
                for i in range(W):
                    j, k = g * P + p, w * W + i
                    expect = bool(weights[j, k]) if (j < n_out and k < n_in) else False
                    assert bool((word >> (p * W + i)) & 1) == expect
    assert max(rom.init) < 1 << (P * W)

    async def bench(ctx):
        order = list(range(rom.depth))[::-1] + [0, rom.depth - 1]
        for a in order:
            ctx.set(rom.i_addr, a)
            await ctx.tick()
            assert ctx.get(rom.o_data) == rom.init[a], a
        ctx.set(rom.i_en, 0)            # data holds while the read is disabled
        held = ctx.get(rom.o_data)
        ctx.set(rom.i_addr, 0 if rom.depth == 1 else 1)
        await ctx.tick()
        assert ctx.get(rom.o_data) == held
    run(rom, bench)


def test_weight_rom_arguments():
    w = np.ones((4, 6), bool)
    with pytest.raises(TypeError, match="weights must be a bool array"):
        WeightROM(np.ones((4, 6)), 1, 1)
    with pytest.raises(ValueError, match=r"parallel must be in 1..4 \(the layer's n_out\), not 5"):
        WeightROM(w, 5, 2)
    with pytest.raises(ValueError, match=r"width must be in 1..6 \(the layer's n_in\), not 0"):
        WeightROM(w, 1, 0)
    with pytest.raises(TypeError, match="parallel must be an int, not 1.0"):
        WeightROM(w, 1.0, 2)


# --- SynapseArray ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("W", [1, 2, 3, 5, 8, 16, 33, 64, 65, 196])
def test_synapse_array_matches_contract(W):
    rng = np.random.default_rng(W)
    syn = SynapseArray(W)
    levels = max(0, (W - 1).bit_length())
    # every level registered up to 64 inputs, every second one (and the last) above
    assert syn.latency == synapse_latency(W) == (levels if W <= 64 else (levels + 1) // 2) + 1
    full = (1 << W) - 1
    def draw():   # W random bits (W may exceed 63)
        return int.from_bytes(rng.bytes((W + 7) // 8), "little") & full

    pairs = [(0, 0), (full, full), (full, 0), (0, full)] + [(draw(), draw()) for _ in range(40)]

    def expect(s, b):
        sb = np.array([(s >> i) & 1 for i in range(W)], bool)
        bb = np.array([(b >> i) & 1 for i in range(W)], bool)
        via_contract = int(contract.synaptic_sum(sb[None], bb[None])[0, 0])
        assert via_contract == 2 * bin(s & b).count("1") - bin(s).count("1")
        return via_contract

    async def bench(ctx):
        got = []
        for cyc in range(len(pairs) + syn.latency + 2):
            if cyc < len(pairs):
                s, b = pairs[cyc]
                ctx.set(syn.i_valid, 1)
                ctx.set(syn.i_spikes, s)
                ctx.set(syn.i_weights, b)
            else:
                ctx.set(syn.i_valid, 0)
            if ctx.get(syn.o_valid):
                got.append((cyc, ctx.get(syn.o_sum)))
            await ctx.tick()
        assert [c for c, _ in got] == [k + syn.latency for k in range(len(pairs))]   # the documented latency
        assert [v for _, v in got] == [expect(s, b) for s, b in pairs]
    run(syn, bench)


@pytest.mark.parametrize("W,k", [(1, 2), (3, 8), (5, 4), (16, 2), (7, 8), (33, 3), (80, 3)])
def test_kbit_synapse_array_and_rom_match_contract(W, k):
    """k-bit lanes: the ROM packs each weight's two's complement (contract.pack_weight_words, checked here against a
    plain per-bit reading), the synapse array sums the spike-gated signed weights; extremes of the range on purpose."""
    rng = np.random.default_rng(W * 10 + k)
    lo, hi = contract.weight_range(k)
    n_out, n_in, P = 3, W * 2 + 1, 2
    weights = rng.integers(lo, hi + 1, (n_out, n_in))
    weights[0] = hi
    weights[1, ::2] = lo
    rom = WeightROM(weights, P, W, k)
    NW = -(-n_in // W)
    for g in range(2):
        for w in range(NW):
            word = rom.init[g * NW + w]
            for p in range(P):
                for i in range(W):
                    j, c = g * P + p, w * W + i
                    raw = (word >> ((p * W + i) * k)) & ((1 << k) - 1)
                    value = raw - (1 << k) if raw >> (k - 1) else raw
                    assert value == (int(weights[j, c]) if j < n_out and c < n_in else 0)
    syn = SynapseArray(W, k)
    assert syn.latency == synapse_latency(W)
    full = (1 << W) - 1
    cases = [(full, 0), (full, 1), (0, 0)] + [
        (int.from_bytes(rng.bytes((W + 7) // 8), "little") & full, int(rng.integers(0, 2))) for _ in range(30)]
    words = [contract.pack_weight_words(weights[j], W, k) for j in range(n_out)]

    def expect(s, j):
        sb = np.array([(s >> i) & 1 for i in range(W)], bool)
        return int((sb * weights[j, :W]).sum())       # the contract's sum of section 8.2, by hand

    async def bench(ctx):
        got = []
        for cyc in range(len(cases) + syn.latency + 2):
            if cyc < len(cases):
                s, j = cases[cyc]
                ctx.set(syn.i_valid, 1)
                ctx.set(syn.i_spikes, s)
                ctx.set(syn.i_weights, words[j][0])
            else:
                ctx.set(syn.i_valid, 0)
            if ctx.get(syn.o_valid):
                got.append((cyc, ctx.get(syn.o_sum)))
            await ctx.tick()
        assert [c for c, _ in got] == [n + syn.latency for n in range(len(cases))]
        assert [v for _, v in got] == [expect(s, j) for s, j in cases]
    run(syn, bench)
    with pytest.raises(ValueError, match="bits must be in 1..8 \\(the weight bits\\), not 9"):
        SynapseArray(4, 9)
    with pytest.raises(ValueError, match=r"4-bit weights must be in -8..7, not 8"):
        contract.pack_weight_words(np.array([8]), 1, 4)


def test_synapse_array_arguments():
    with pytest.raises(ValueError, match=r"width must be in 1..65536 \(inputs per word.*\), not 0"):
        SynapseArray(0)
    with pytest.raises(TypeError, match="width must be an int, not '8'"):
        SynapseArray("8")


# --- NeuronCore -------------------------------------------------------------------------------------------------------

def drive_core(core, currents_per_sample):
    """Present each step's groups back to back (i_first on step 0), drain between steps as the engine does; a core
    with per-step tables gets i_step_base = t*G on its issue cycles and 0 on the others (only the issue cycle's base
    may matter). Returns per sample: spikes (T, n_out), membrane after each step (T, n_out), counts (n_out) from the
    readout port, final membrane from the readout port; and the observed latencies."""
    P, G, n_out = core.parallel, core.groups, core.layer.n_out
    step_base = getattr(core, "i_step_base", None)
    out = []
    lat = []

    async def bench(ctx):
        for currents in currents_per_sample:                    # (T, n_out)
            T = currents.shape[0]
            spikes = np.zeros((T, n_out), bool)
            mem = np.zeros((T, n_out), np.int64)
            for t in range(T):
                pending = {}
                cyc = 0
                for step_cycle in range(G + NEURON_LATENCY + 2):
                    if step_cycle < G:
                        g = step_cycle
                        ctx.set(core.i_valid, 1)
                        ctx.set(core.i_group, g)
                        ctx.set(core.i_first, t == 0)
                        if step_base is not None:
                            ctx.set(step_base, t * G)
                        for p in range(P):
                            j = g * P + p
                            ctx.set(core.i_sum[p], int(currents[t, j]) if j < n_out else 0)
                        pending[g] = cyc
                    else:
                        ctx.set(core.i_valid, 0)
                        if step_base is not None:
                            ctx.set(step_base, 0)
                    if ctx.get(core.o_valid):
                        g = ctx.get(core.o_group)
                        lat.append(cyc - pending[g])
                        sp = ctx.get(core.o_spikes)
                        for p in range(P):
                            j = g * P + p
                            if j < n_out:
                                spikes[t, j] = (sp >> p) & 1
                                mem[t, j] = ctx.get(core.o_membrane[p])
                    await ctx.tick()
                    cyc += 1
            counts = np.zeros(n_out, np.int64)
            final = np.zeros(n_out, np.int64)
            for g in range(G):
                ctx.set(core.i_rd_addr, g)
                ctx.set(core.i_rd_en, 1)
                await ctx.tick()
                for p in range(P):
                    j = g * P + p
                    if j < n_out:
                        counts[j] = ctx.get(core.o_rd_count[p])
                        final[j] = ctx.get(core.o_rd_membrane[p])
            ctx.set(core.i_rd_en, 0)
            out.append((spikes, mem, counts, final))
    run(core, bench)
    return out, lat


def reference_layer(layer, currents, fires):
    """Per-neuron loop over the contract's rules (for per-step membranes): (spikes, membranes) each (T, n_out)."""
    T, n = currents.shape
    v = np.zeros(n, np.int64)
    fired = np.zeros(n, bool)
    spikes = np.zeros((T, n), bool)
    mems = np.zeros((T, n), np.int64)
    for t in range(T):
        for j in range(n):
            x = int(v[j]) - int(contract.leak(int(v[j]), layer.leak_shift)) + int(currents[t, j])
            x = contract.saturate(x, layer.membrane_bits)
            fire = fires and x > int(layer.threshold[j])
            if fire:
                x = x - int(layer.threshold[j]) if layer.reset == "subtract" else 0
            spikes[t, j] = fire and not (layer.fire_once and fired[j])
            fired[j] |= fire
            v[j] = x
            mems[t, j] = x
    return spikes, mems


CORE_CASES = [
    # n_in, n_out, P, M, leak, reset, fire_once, fires, uniform threshold
    (12, 7, 1, 16, 4, "subtract", False, True, False),
    (12, 7, 3, 5, 1, "zero", True, True, False),
    (30, 6, 6, 4, None, "subtract", True, True, True),
    (9, 5, 2, 3, 2, "subtract", False, False, False),
    (40, 4, 4, 6, 5, "zero", False, True, True),
]


@pytest.mark.parametrize("n_in,n_out,P,M,leak,reset,fire_once,fires,uniform", CORE_CASES)
def test_neuron_core_matches_contract(n_in, n_out, P, M, leak, reset, fire_once, fires, uniform):
    rng = np.random.default_rng(n_in + n_out + P + M)
    hi = (1 << (M - 1)) - 1
    th = (np.full(n_out, max(1, hi // 3)) if uniform else rng.integers(1, hi + 1, n_out)) if fires else None
    layer = Layer(rng.random((n_out, n_in)) < 0.5, th, leak, reset, M, fire_once)
    T = 6
    core = NeuronCore(layer, P, T, fires=fires, keep_count=True)
    samples = []
    for _ in range(2):   # the second sample checks the start-of-sample clear (i_first) without any clear pass
        spikes_in = rng.random((T, n_in)) < rng.uniform(0.1, 0.9)
        samples.append(contract.synaptic_sum(spikes_in, layer.weights))
    # corner currents: full +n_in / -n_in drive both saturation ends
    samples.append(np.array([[n_in] * n_out] * 3 + [[-n_in] * n_out] * 3))
    out, lat = drive_core(core, samples)
    assert set(lat) == {NeuronCore.latency}
    for currents, (spikes, mems, counts, final) in zip(samples, out):
        ref_spikes, ref_mems = reference_layer(layer, currents, fires)
        np.testing.assert_array_equal(mems, ref_mems)
        np.testing.assert_array_equal(spikes, ref_spikes)
        np.testing.assert_array_equal(counts, ref_spikes.sum(0))
        np.testing.assert_array_equal(final, ref_mems[-1])


def test_neuron_core_reference_agrees_with_golden():
    # the loop reference above is checked against the golden model, so the core is tied to the contract's owner
    net = random_network([10, 6], timesteps=5, leak_shift=2, reset="zero", membrane_bits=5, fire_once=True, seed=3)
    spikes = np.random.default_rng(1).random((1, 5, 10)) < 0.6
    ref = golden.simulate(net, spikes, record=True)
    currents = contract.synaptic_sum(spikes[0], net.layers[0].weights)
    s, v = reference_layer(net.layers[0], currents, True)
    np.testing.assert_array_equal(s, ref.spikes[0][0])
    np.testing.assert_array_equal(v[-1], ref.membrane[0][0])


def test_neuron_core_arguments():
    layer = Layer(np.ones((4, 6), bool), 2, None, "subtract", 8, False)
    with pytest.raises(ValueError, match=r"parallel must be in 1..4 \(the layer's n_out\), not 0"):
        NeuronCore(layer, 0, 4)
    with pytest.raises(ValueError, match="timesteps must be at least 1, not 0"):
        NeuronCore(layer, 1, 0)
    with pytest.raises(ValueError, match=r"sum_width must be in 4..64 \(at least signed \+-6, the layer's largest synaptic input\), not 3"):
        NeuronCore(layer, 1, 4, sum_width=3)
    with pytest.raises(TypeError, match="layer must be a bsnn_hw.Layer or Conv2d, not str"):
        NeuronCore("layer", 1, 4)
    no_th = Layer(np.ones((4, 6), bool), None, None, "subtract", 8, False)
    with pytest.raises(ValueError, match="cannot fire"):
        NeuronCore(no_th, 1, 4)


# --- LayerEngine -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_in,n_out,P,W,fire_once", [(13, 5, 1, 4, False), (8, 6, 3, 8, True), (7, 4, 4, 1, False)])
def test_layer_engine_steps_and_timing(n_in, n_out, P, W, fire_once):
    T = 4
    net = random_network([n_in, n_out], timesteps=T, leak_shift=3, membrane_bits=8, fire_once=fire_once,
                         seed=n_in)
    layer = net.layers[0]
    spikes = np.random.default_rng(n_out).random((1, T, n_in)) < 0.5
    ref = golden.simulate(net, spikes, record=True)
    eng = LayerEngine(layer, P, W, T, keep_count=True)
    G, NW = -(-n_out // P), -(-n_in // W)
    assert eng.step_cycles == G * NW + engine_latency(W)
    words = [contract.pack_words(spikes[0, t], W) for t in range(T)]
    seen = []

    async def bench(ctx):
        for t in range(T):
            ctx.set(eng.i_start, 1)
            ctx.set(eng.i_first, t == 0)
            cyc = 0
            data = 0
            while True:
                # a synchronous RAM: the word named this cycle is on i_in_data next cycle
                ctx.set(eng.i_in_data, data)
                addr, en = ctx.get(eng.o_in_addr), ctx.get(eng.o_in_en)
                done = ctx.get(eng.o_done)
                await ctx.tick()
                ctx.set(eng.i_start, 0)
                if en:
                    data = words[t][addr]
                if done:
                    break
                cyc += 1
            assert cyc == eng.step_cycles, (cyc, eng.step_cycles)
            assert not ctx.get(eng.o_busy)
            got = ctx.get(eng.o_spikes)
            seen.append([(got >> j) & 1 for j in range(n_out)])
    run(eng, bench)
    np.testing.assert_array_equal(np.array(seen, bool), ref.spikes[0][0])


# --- conv LayerEngine and PoolEngine alone -----------------------------------------------------------------------------

def _map_engine_steps(eng, in_words, out_positions, T):
    """Drive a map-reading engine for T steps from a synchronous-RAM model of its input map; collect each step's
    output map from its o_map_* writes and the cycles from i_start to o_done."""
    maps, cycles = [], []

    async def bench(ctx):
        for t in range(T):
            ctx.set(eng.i_start, 1)
            ctx.set(eng.i_first, t == 0)
            out = [None] * out_positions
            cyc, data = 0, 0
            while True:
                ctx.set(eng.i_in_data, data)
                addr, en = ctx.get(eng.o_in_addr), ctx.get(eng.o_in_en)
                done = ctx.get(eng.o_done)
                if ctx.get(eng.o_map_en):
                    a = ctx.get(eng.o_map_addr)
                    assert out[a] is None, f"position {a} written twice"
                    out[a] = ctx.get(eng.o_map_data)
                await ctx.tick()
                ctx.set(eng.i_start, 0)
                if en:
                    data = in_words[t][addr]
                if done:
                    break
                cyc += 1
            cycles.append(cyc)
            maps.append(out)
            assert ctx.get(eng.o_step_count) == sum(bin(v).count("1") for v in out)
    run(eng, bench)
    return maps, cycles


@pytest.mark.parametrize("shape,k,stride,pad,c_out,P,bits", [
    ((5, 4, 2), 3, 1, 1, 3, 2, 1), ((6, 6, 1), 2, 2, 0, 2, 2, 1), ((4, 5, 3), 1, 1, 0, 4, 3, 3),
    ((3, 3, 2), 5, 1, 2, 2, 1, 8)])
def test_conv_engine_alone_matches_golden_and_timing(shape, k, stride, pad, c_out, P, bits):
    """The conv engine's output map, step by step, against the golden model of the one-layer network (a dense
    readout layer after it is only there to make a legal network); o_done exactly step_cycles after i_start."""
    from bsnn_hw.network import Conv2d, Network
    rng = np.random.default_rng(k * 10 + P)
    lo, hi = contract.weight_range(bits)
    w = rng.random((c_out, k, k, shape[2])) < 0.6 if bits == 1 else rng.integers(lo, hi + 1, (c_out, k, k, shape[2]))
    conv = Conv2d(w, shape, rng.integers(1, 4, c_out), stride=stride, padding=pad, leak_shift=2, membrane_bits=8,
                  weight_bits=bits, fire_once=P == 1)
    net = Network([conv, Layer(np.ones((1, conv.n_out), bool), 1)], 3, "count", "direct")
    T = net.timesteps
    spikes = rng.random((1, T, conv.n_in)) < 0.5
    ref = golden.simulate(net, spikes, record=True)
    eng = LayerEngine(conv, P, shape[2], T)
    positions = conv.out_shape[0] * conv.out_shape[1]
    assert eng.step_cycles == positions * (-(-c_out // P)) * k * k + engine_latency(shape[2]) + 1
    maps, cycles = _map_engine_steps(eng, [contract.pack_words(spikes[0, t], shape[2]) for t in range(T)],
                                     positions, T)
    assert cycles == [eng.step_cycles] * T
    for t in range(T):
        got = contract.unpack_words(maps[t], c_out, conv.n_out)
        np.testing.assert_array_equal(got, ref.spikes[0][0, t], err_msg=f"step {t}")


@pytest.mark.parametrize("shape,n", [((4, 4, 3), 2), ((5, 7, 2), 2), ((3, 3, 1), 3), ((4, 2, 5), 1)])
def test_pool_engine_alone_matches_golden_and_timing(shape, n):
    from bsnn_hw.hdl import PoolEngine
    from bsnn_hw.network import Network, Pool
    pool = Pool(shape, n)
    net = Network([pool, Layer(np.ones((1, pool.n_out), bool), 1)], 2, "count", "direct")
    spikes = np.random.default_rng(n).random((1, 2, pool.n_in)) < 0.3
    ref = golden.simulate(net, spikes, record=True)
    eng = PoolEngine(pool)
    positions = pool.out_shape[0] * pool.out_shape[1]
    assert eng.step_cycles == positions * n * n + 3
    maps, cycles = _map_engine_steps(eng, [contract.pack_words(spikes[0, t], shape[2]) for t in range(2)],
                                     positions, 2)
    assert cycles == [eng.step_cycles] * 2
    for t in range(2):
        np.testing.assert_array_equal(contract.unpack_words(maps[t], shape[2], pool.n_out), ref.spikes[0][0, t])
