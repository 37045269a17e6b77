"""Contract v2: conv2d, OR pooling and k-bit weights. The golden model against the deliberately simple reference
(tests/reference.py) on random networks over every new parameter, extremes on purpose (k = 1, k = the input size,
stride > 1, padding, C = 1, 8-bit weights at saturation); the artifact's v2 format; v1 files unchanged."""
from __future__ import annotations

import numpy as np
import pytest
import reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_golden import check_against_reference

import bsnn_hw
from bsnn_hw import ArtifactError, artifact, contract, golden, random_network
from bsnn_hw.network import Conv2d, Layer, Network, Pool


def _neuron_kw(draw, rng, n_thresholds, fan_in, weight_bits, last_membrane):
    m = draw(st.one_of(st.integers(2, 6), st.integers(2, 32)))
    hi = 2 ** (m - 1) - 1
    scale = max(1, 2 ** (weight_bits - 1) if weight_bits > 1 else 1)
    kind = draw(st.sampled_from(["small", "small", "full", "top", "one"]))
    th = {"small": lambda: rng.integers(1, min(hi, fan_in * scale // 2 + 2) + 1, n_thresholds),
          "full": lambda: rng.integers(1, hi + 1, n_thresholds),
          "top": lambda: np.full(n_thresholds, hi), "one": lambda: np.ones(n_thresholds, dtype=np.int64)}[kind]()
    if last_membrane and draw(st.booleans()):
        th = None
    return dict(threshold=th, leak_shift=draw(st.one_of(st.none(), st.integers(1, m - 1))),
                reset=draw(st.sampled_from(contract.RESET_MODES)), membrane_bits=m, fire_once=draw(st.booleans()))


def _weights(draw, rng, shape, bits):
    if bits == 1:
        return rng.random(shape) < draw(st.sampled_from([0.0, 0.5, 1.0]))
    lo, hi = contract.weight_range(bits)
    kind = draw(st.sampled_from(["random", "random", "max", "min"]))
    if kind == "max":                         # saturation of the k-bit range
        return np.full(shape, hi, dtype=np.int64)
    if kind == "min":
        return np.full(shape, lo, dtype=np.int64)
    return rng.integers(lo, hi + 1, shape)


@st.composite
def v2_networks(draw, max_side=7, max_channels=3, max_t=5):
    """conv (with optional pool) stacks then optional dense layers; every geometry legal, extremes included."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    readout = draw(st.sampled_from(contract.READOUTS))
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    c = draw(st.integers(1, max_channels))
    shape = (h, w, c)
    plan = draw(st.lists(st.sampled_from(["conv", "conv", "pool"]), min_size=1, max_size=3))
    n_dense = draw(st.integers(0, 2))
    layers = []
    total = len(plan) + n_dense
    for i, kind in enumerate(plan):
        last = i == total - 1
        if kind == "pool" and min(shape[:2]) >= 1 and not last:
            layers.append(Pool(shape, draw(st.integers(1, min(shape[:2])))))
            shape = layers[-1].out_shape
            continue
        pad = draw(st.integers(0, 2))
        kmax = min(shape[:2]) + 2 * pad
        k = draw(st.sampled_from([1, kmax, draw(st.integers(1, kmax))]))
        pad = min(pad, k - 1)
        if k > min(shape[:2]) + 2 * pad:
            k = min(shape[:2]) + 2 * pad
        bits = draw(st.sampled_from([1, 1, 2, 8, draw(st.integers(2, 8))]))
        c_out = draw(st.integers(1, max_channels))
        wts = _weights(draw, rng, (c_out, k, k, shape[2]), bits)
        kw = _neuron_kw(draw, rng, c_out, k * k * shape[2], bits, last and readout == "membrane")
        layers.append(Conv2d(wts, shape, stride=draw(st.integers(1, 3)), padding=pad, weight_bits=bits, **kw))
        shape = layers[-1].out_shape
    for j in range(n_dense):
        n_in = layers[-1].n_out if layers else int(np.prod(shape))
        n_out = draw(st.integers(1, 6))
        bits = draw(st.sampled_from([1, 2, 8]))
        last = j == n_dense - 1
        kw = _neuron_kw(draw, rng, n_out, n_in, bits, last and readout == "membrane")
        layers.append(Layer(_weights(draw, rng, (n_out, n_in), bits), weight_bits=bits, **kw))
    if not layers[-1].has_neurons:
        layers.append(Layer(rng.random((2, layers[-1].n_out)) < 0.5, 1))
    net = Network(layers, draw(st.integers(1, max_t)), readout=readout, encoding="direct")
    spikes = rng.random((draw(st.integers(1, 3)), net.timesteps, net.n_in)) < draw(st.sampled_from([0.0, 0.3, 0.9]))
    return net, spikes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(v2_networks())
def test_golden_matches_reference_on_conv_pool_kbit(case):
    net, spikes = case
    check_against_reference(net, spikes)
    back = artifact.from_bytes(artifact.to_bytes(net))
    assert back == net and back.identity() == net.identity()


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(v2_networks(max_side=10, max_channels=4, max_t=8))
def test_golden_matches_reference_on_conv_pool_kbit_many(case):
    check_against_reference(*case)


@st.composite
def sum_pool_cases(draw):
    """A dense or conv layer on the n x n sum pooling of a map, every geometry legal (n = 1, kernel = the pooled
    side, stride > 1, padding), binary and k-bit weights at their extremes, and one step's spikes."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    n = draw(st.integers(1, 4))
    hp, wp, c = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    pooled = (hp, wp, c)
    bits = draw(st.sampled_from([1, 1, 2, 8, draw(st.integers(2, 8))]))
    if draw(st.booleans()):
        pad = draw(st.integers(0, 2))
        kmax = min(hp, wp) + 2 * pad
        k = draw(st.sampled_from([1, kmax, draw(st.integers(1, kmax))]))
        pad = min(pad, k - 1)
        k = min(k, min(hp, wp) + 2 * pad)
        c_out = draw(st.integers(1, 3))
        layer = Conv2d(_weights(draw, rng, (c_out, k, k, c), bits), pooled, rng.integers(1, 50, c_out),
                       stride=draw(st.integers(1, 3)), padding=pad, weight_bits=bits)
    else:
        n_out = draw(st.integers(1, 4))
        layer = Layer(_weights(draw, rng, (n_out, hp * wp * c), bits), rng.integers(1, 50, n_out), weight_bits=bits)
    spikes = rng.random(hp * n * wp * n * c) < draw(st.sampled_from([0.0, 0.3, 1.0]))
    return layer, n, (hp * n, wp * n, c), spikes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sum_pool_cases())
def test_a_folded_sum_pool_gives_the_pooled_layers_currents(case):
    """Section 8.5: the layer fed by n x n sum pooling and the folded layer on the unpooled map have the same
    synaptic input at every neuron (the reference's currents, computed on the reference's sum pooling), and the same
    neurons."""
    from bsnn_hw.network import fold_sum_pool
    layer, n, shape, spikes = case
    folded = fold_sum_pool(layer, n, shape)
    assert folded.kind == layer.kind and folded.n_in == int(np.prod(shape)) and folded.out_shape == layer.out_shape
    assert np.array_equal(folded.threshold, layer.threshold) and folded.params() == layer.params()
    assert folded.weight_memory_bits == layer.weight_memory_bits * n * n
    counts = reference.sum_pool(shape, n, spikes)
    current = reference.conv_current if layer.kind == "conv2d" else reference.dense_current
    for j in range(layer.n_out):
        assert current(folded, spikes, j) == current(layer, counts, j)


def test_sum_pool_fold_refusals():
    from bsnn_hw.network import check_sum_pool, fold_sum_pool
    conv = Conv2d(np.ones((1, 3, 3, 1), bool), (2, 2, 1), 1, padding=1)
    with pytest.raises(ValueError, match=r"sum pooling 2x2 needs a map whose sides are multiples of 2 .* not 5x4"):
        fold_sum_pool(conv, 2, (5, 4, 1))
    with pytest.raises(ValueError, match=r"reads a \(2, 2, 1\) map, not the \(3, 2, 1\) map"):
        fold_sum_pool(conv, 2, (6, 4, 1))
    with pytest.raises(ValueError, match=r"has 5 inputs, not the 4 of the \(2, 2, 1\) map"):
        fold_sum_pool(Layer(np.ones((1, 5), bool), 1), 2, (4, 4, 1))
    with pytest.raises(ValueError, match="not a pool layer"):
        fold_sum_pool(Pool((2, 2, 1), 1), 2, (4, 4, 1))
    with pytest.raises(ValueError, match="window must be a positive int, not 0"):
        check_sum_pool((4, 4, 1), 0)
    assert check_sum_pool((4, 6, 3), 2) == (4, 6, 3)


# --- directed cases ----------------------------------------------------------------------------------------------

def test_conv_by_hand():
    """A 3x3 map, one channel, a 2x2 all-+1 kernel, stride 1, no padding: I = spikes in each window."""
    s = np.zeros((1, 1, 9), dtype=bool)
    s[0, 0, [0, 1, 4]] = True             # (0,0), (0,1), (1,1)
    conv = Conv2d(np.ones((1, 2, 2, 1), dtype=bool), (3, 3, 1), None, membrane_bits=8)
    net = Network([conv], 1, "membrane", "direct")
    assert conv.out_shape == (2, 2, 1)
    assert golden.simulate(net, s).membrane[0].tolist() == [[3, 2, 1, 1]]


def test_conv_padding_carries_no_spike_and_stride():
    # all inputs spike, all weights -1, 3x3 kernel, padding 1: a corner window sees 4 real inputs, the centre 9
    conv = Conv2d(np.zeros((1, 3, 3, 1), dtype=bool), (3, 3, 1), None, padding=1, membrane_bits=8)
    net = Network([conv], 1, "membrane", "direct")
    m = golden.simulate(net, np.ones((1, 1, 9), dtype=bool)).membrane[0][0]
    assert m.reshape(3, 3).tolist() == [[-4, -6, -4], [-6, -9, -6], [-4, -6, -4]]
    conv2 = Conv2d(np.zeros((1, 3, 3, 1), dtype=bool), (5, 5, 1), None, stride=2, padding=1, membrane_bits=8)
    assert conv2.out_shape == (3, 3, 1)


def test_position_major_order_and_per_channel_thresholds():
    """Output neuron index = (y * W_out + x) * C_out + o; thresholds are per output channel."""
    w = np.zeros((2, 1, 1, 1), dtype=bool)
    w[0] = True                            # channel 0: +1, channel 1: -1
    conv = Conv2d(w, (1, 2, 1), np.array([1, 5]), membrane_bits=8)
    assert conv.neuron_threshold.tolist() == [1, 5, 1, 5]
    net = Network([conv], 2, "count", "direct")
    s = np.ones((1, 2, 2), dtype=bool)
    r = golden.simulate(net, s)
    assert r.counts[0].tolist() == [[1, 0, 1, 0]]      # V = 1, 2 > 1 at step 1 for channel 0 only


def test_or_pool_by_hand():
    pool = Pool((2, 4, 1), 2)
    s = np.zeros((1, 1, 8), dtype=bool)
    s[0, 0, 5] = True                      # (1, 1): the first window
    dense = Layer(np.ones((1, 2), dtype=bool), None, membrane_bits=8)
    net = Network([pool, dense], 1, "membrane", "direct")
    r = golden.simulate(net, s, record=True)
    assert r.spikes[0][0].tolist() == [[True, False]]
    assert r.membrane[1].tolist() == [[1]]
    assert Pool((5, 5, 2), 2).out_shape == (2, 2, 2)   # the row and column past the last window are dropped


def test_kbit_saturating_weights_and_float32_bound():
    """8-bit weights at -128 on a wide fan-in: the sum exceeds float32's exact range, the int64 path takes over."""
    n_in = 140_000
    w = np.full((1, n_in), -128, dtype=np.int64)
    layer = Layer(w, None, membrane_bits=32, weight_bits=8)
    assert layer.max_abs_current >= 1 << 24
    net = Network([layer], 1, "membrane", "direct")
    s = np.ones((1, 1, n_in), dtype=bool)
    assert golden.simulate(net, s).membrane[0][0, 0] == -128 * n_in
    small = Network([Layer(np.array([[127, -128, 5]]), None, membrane_bits=10, weight_bits=8)], 1, "membrane",
                    "direct")
    assert golden.simulate(small, np.ones((1, 1, 3), dtype=bool)).membrane[0][0, 0] == 4
    # saturation of the membrane at M = 10 with 8-bit weights
    sat = Network([Layer(np.full((1, 8), 127), None, membrane_bits=10, weight_bits=8)], 1, "membrane", "direct")
    assert golden.simulate(sat, np.ones((1, 1, 8), dtype=bool)).membrane[0][0, 0] == 511


# --- refusals ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make,message", [
    (lambda: Layer(np.array([[8]]), 1, weight_bits=4), r"4-bit weights must be in -8\.\.7, not 8"),
    (lambda: Layer(np.array([[0.5]]), 1, weight_bits=4), r"integer array \(never rounded\)"),
    (lambda: Layer(np.ones((1, 1), bool), 1, weight_bits=9), r"weight_bits must be in 1\.\.8, not 9"),
    (lambda: Conv2d(np.ones((1, 3, 3, 2), bool), (4, 4, 1), 1), r"C_in = 2 but in_shape \(4, 4, 1\) has 1"),
    (lambda: Conv2d(np.ones((1, 3, 3, 1), bool), (2, 2, 1), 1), r"kernel 3x3 does not fit the 2x2 map"),
    (lambda: Conv2d(np.ones((1, 3, 3, 1), bool), (4, 4, 1), 1, padding=3), r"padding must be in 0\.\.2"),
    (lambda: Conv2d(np.ones((1, 3, 3, 1), bool), (4, 4, 1), 1, stride=0), r"stride must be at least 1"),
    (lambda: Conv2d(np.ones((1, 2, 3, 1), bool), (4, 4, 1), 1), r"square kernel"),
    (lambda: Pool((4, 4, 1), 5), r"window must be in 1\.\.4"),
    (lambda: Pool((4, 4, 1), 2, "avg"), r"pool mode must be one of 'or'"),
    (lambda: Network([Pool((4, 4, 1), 2)], 2), r"last layer must have neurons"),
    (lambda: Network([Conv2d(np.ones((2, 3, 3, 1), bool), (4, 4, 1), 1), Pool((4, 1, 2), 1),
                      Layer(np.ones((1, 8), bool), 1)], 2),
     r"layer 1 takes a \(4, 1, 2\) map but layer 0 gives \(2, 2, 2\)"),
])
def test_refusals(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


# --- the artifact ------------------------------------------------------------------------------------------------

def test_v1_networks_still_write_format_1_and_keep_their_identity(tmp_path):
    net = random_network([20, 8, 3], timesteps=6, seed=3)
    data = artifact.to_bytes(net)
    assert b'"format_version":1' in data and b'"contract_version":1' in data
    assert net.contract_version == 1
    net.save(tmp_path / "v1.bsnn")
    assert bsnn_hw.load(tmp_path / "v1.bsnn") == net


def test_v2_file_round_trip_and_layout(tmp_path):
    rng = np.random.default_rng(1)
    conv = Conv2d(rng.integers(-2, 2, (3, 3, 3, 1)), (8, 8, 1), rng.integers(1, 5, 3), padding=1, weight_bits=2)
    pool = Pool(conv.out_shape, 2)
    conv2 = Conv2d(rng.random((4, 3, 3, 3)) < 0.5, pool.out_shape, 2, stride=2)
    dense = Layer(rng.integers(-128, 128, (10, conv2.n_out)), None, weight_bits=8)
    net = Network([conv, pool, conv2, dense], 4, "membrane", "rate", seed=7)
    net.save(tmp_path / "v2.bsnn")
    data = (tmp_path / "v2.bsnn").read_bytes()
    assert b'"format_version":2' in data and b'"contract_version":2' in data
    back = bsnn_hw.load(tmp_path / "v2.bsnn")
    assert back == net and back.identity() == net.identity()
    x = rng.integers(0, 256, (3, 64), dtype=np.uint8)
    np.testing.assert_array_equal(golden.run(back, x).prediction, golden.run(net, x).prediction)
    # weight memory: conv 3 x 9 2-bit weights, conv2 4 x 27 1-bit weights, dense 10 x n_in 8-bit weights
    assert conv2.out_shape == (1, 1, 4)
    assert back.weight_bits() == 3 * 9 * 2 + 4 * 27 + 10 * 4 * 8


def test_v1_file_cannot_hold_v2_layers():
    import hashlib
    import json
    import struct
    rng = np.random.default_rng(2)
    net = Network([Conv2d(rng.random((2, 2, 2, 1)) < 0.5, (3, 3, 1), 1)], 2, "count", "direct")
    data = artifact.to_bytes(net)
    (hlen,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8:8 + hlen])
    header["format_version"] = 1
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = data[:4] + struct.pack("<I", len(head)) + head + data[8 + hlen:-32]
    with pytest.raises(ArtifactError, match=r"layer 0: layer type 'conv2d' needs format version 2"):
        artifact.from_bytes(body + hashlib.sha256(body).digest(), "m.bsnn")


def test_reference_is_independent_of_the_golden_model():
    assert "golden" not in open(reference.__file__).read().split('"""', 2)[2]


def test_hardware_refuses_what_it_cannot_build(tmp_path):
    """The generator builds conv, pool and k-bit layers; it refuses, with the numbers, the few shapes it does not."""
    from test_cli import fails
    from bsnn_hw.hdl import HwConfig, LayerConfig, NetworkTop, generate
    rng = np.random.default_rng(3)
    conv = Conv2d(rng.random((2, 3, 3, 1)) < 0.5, (5, 5, 1), 1)
    dense = Layer(rng.random((3, 18)) < 0.5, 1)
    net = Network([conv, dense], 2, "count", "direct")
    generate(net)                                        # builds
    last_conv = Network([conv], 2, "count", "direct")
    with pytest.raises(ValueError, match=r"the last layer is a conv2d layer: the hardware readout reads a dense "
                                         r"layer's neurons"):
        generate(last_conv)
    after_dense = Network([Layer(rng.random((25, 4)) < 0.5, 1), Conv2d(rng.random((2, 3, 3, 1)) < 0.5, (5, 5, 1), 1),
                           dense], 2, "count", "direct")
    with pytest.raises(ValueError, match=r"layer 1 is a conv2d layer after a dense layer"):
        generate(after_dense)
    top = NetworkTop(net, trace=True)                    # a conv layer's trace beat is its map's spike count
    assert top.o_trace.payload.shape().size > 0
    with pytest.raises(ValueError, match=r"layer 0 \(conv2d\): width must be 1, the channels of the feature map it "
                                         r"reads \(one position per word\), not 2"):
        generate(net, HwConfig((LayerConfig(1, 2), LayerConfig(1, 2))))
    with pytest.raises(ValueError, match=r"layer 0 \(conv2d\): parallel must be in 1..2 \(its C_out\), not 3"):
        generate(net, HwConfig((LayerConfig(3, 1), LayerConfig(1, 2))))
    with pytest.raises(ValueError, match=r"layer 1 \(dense\): width must be 2, the channels"):
        generate(net, HwConfig((LayerConfig(1, 1), LayerConfig(1, 3))))
    pooled = Network([Pool((5, 5, 1), 2), Layer(rng.random((3, 4)) < 0.5, 1)], 2, "count", "direct")
    with pytest.raises(ValueError, match=r"layer 0 \(pool\): parallel must be 1"):
        generate(pooled, HwConfig((LayerConfig(2, 1), LayerConfig(1, 1))))
    last_conv.save(tmp_path / "c.bsnn")
    fails("generate", tmp_path / "c.bsnn", "-o", tmp_path / "out", pattern=r"the last layer is a conv2d layer")
    assert not (tmp_path / "out").exists()


def test_inspect_shows_conv_and_pool(tmp_path):
    from test_cli import cli
    rng = np.random.default_rng(4)
    conv = Conv2d(rng.integers(-8, 8, (4, 3, 3, 1)), (6, 6, 1), 2, padding=1, weight_bits=4)
    net = Network([conv, Pool(conv.out_shape, 2), Layer(rng.random((10, 36)) < 0.5, None)], 3, "membrane", "rate")
    net.save(tmp_path / "c.bsnn")
    out = cli("inspect", tmp_path / "c.bsnn").stdout
    flat = " ".join(out.split())
    assert "conv" in flat and "4-bit" in flat and "OR pool" in flat and "6x6x4" in flat
    import json
    info = json.loads(cli("inspect", tmp_path / "c.bsnn", "--json").stdout)
    assert info["contract_version"] == 2 and info["layers"][0]["weight_bits"] == 4 * 9 * 4
    assert info["synaptic_ops_per_inference"] == 3 * (36 * 4 * 9 + 10 * 36)
