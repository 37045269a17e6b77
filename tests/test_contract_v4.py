"""Contract v4: the "pixel" input (the 8-bit intensity itself is the first layer's input every step). The golden
model against the simple reference (tests/reference.py) on random dense and conv first layers over the whole legal
range (intensities 0 and 255 on purpose, 1..8-bit weights at saturation, membranes 2..32 bits, so the clamp acts);
the trainer's int64 model; the bit-plane identity the hardware uses; the artifact; refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_artifact import build, refused, split
from test_contract_v2 import _neuron_kw, _weights
from test_golden import check_against_reference

from bsnn_hw import artifact, contract, golden
from bsnn_hw.network import Conv2d, Layer, Network, Pool
from bsnn_hw.train.model import integer_simulate


def _pixels(draw, rng, shape):
    kind = draw(st.sampled_from(["random", "random", "zero", "max", "binary"]))
    if kind == "zero":
        return np.zeros(shape, dtype=np.uint8)
    if kind == "max":
        return np.full(shape, 255, dtype=np.uint8)
    if kind == "binary":                      # only the extremes
        return (rng.random(shape) < 0.5).astype(np.uint8) * 255
    return rng.integers(0, 256, shape).astype(np.uint8)


@st.composite
def pixel_networks(draw, max_side=6, max_t=5):
    """A dense or conv first layer on intensities, then up to two more layers (pool, conv, dense)."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    readout = draw(st.sampled_from(contract.READOUTS))
    layers = []
    n_more = draw(st.integers(0, 2))
    last = n_more == 0
    bits = draw(st.sampled_from([1, 1, 2, 8, draw(st.integers(2, 8))]))
    if draw(st.booleans()):
        h, w, c = draw(st.integers(1, max_side)), draw(st.integers(1, max_side)), draw(st.integers(1, 3))
        pad = draw(st.integers(0, 2))
        k = draw(st.integers(1, min(h, w) + 2 * pad))
        pad = min(pad, k - 1)
        c_out = draw(st.integers(1, 3))
        # the "small" thresholds of _neuron_kw scale with the fan-in: give it the intensity's range too
        kw = _neuron_kw(draw, rng, c_out, k * k * c * 255, bits, last and readout == "membrane")
        layers.append(Conv2d(_weights(draw, rng, (c_out, k, k, c), bits), (h, w, c), stride=draw(st.integers(1, 3)),
                             padding=pad, weight_bits=bits, **kw))
    else:
        n_in, n_out = draw(st.sampled_from([1, 7, 64, 65, draw(st.integers(1, 100))])), draw(st.integers(1, 6))
        kw = _neuron_kw(draw, rng, n_out, n_in * 255, bits, last and readout == "membrane")
        layers.append(Layer(_weights(draw, rng, (n_out, n_in), bits), weight_bits=bits, **kw))
    for j in range(n_more):
        prev = layers[-1]
        is_last = j == n_more - 1
        if len(prev.out_shape) == 3 and not is_last and draw(st.booleans()):
            layers.append(Pool(prev.out_shape, draw(st.integers(1, min(prev.out_shape[:2])))))
            continue
        n_out = draw(st.integers(1, 5))
        kw = _neuron_kw(draw, rng, n_out, prev.n_out, 1, is_last and readout == "membrane")
        layers.append(Layer(rng.random((n_out, prev.n_out)) < 0.5, **kw))
    net = Network(layers, draw(st.integers(1, max_t)), readout=readout, encoding="pixel")
    return net, _pixels(draw, rng, (draw(st.integers(1, 3)), net.n_in))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pixel_networks())
def test_golden_matches_reference_on_pixel_input(case):
    net, x = case
    assert net.contract_version == 4
    check_against_reference(net, x)
    back = artifact.from_bytes(artifact.to_bytes(net))
    assert back == net and back.identity() == net.identity()
    # the trainer's int64 model (float32/float64 products) makes the same decisions
    pred, counts, membranes = integer_simulate(net, torch.from_numpy(x)[:, None, :].float())
    r = golden.simulate(net, x)
    np.testing.assert_array_equal(pred.numpy(), r.prediction)
    for li in range(len(net.layers)):
        np.testing.assert_array_equal(membranes[li].numpy(), r.membrane[li])
        np.testing.assert_array_equal(counts[li].numpy(), r.counts[li])


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.sampled_from([1, 2, 8]))
def test_bit_planes_sum_to_the_pixel_current(seed, bits):
    """sum_b 2^b I(plane_b) = I(x): the bit-serial form the hardware computes is the contract's sum."""
    rng = np.random.default_rng(seed)
    n_in = int(rng.integers(1, 80))
    lo, hi = contract.weight_range(bits)
    w = contract.weight_values(rng.random((4, n_in)) < 0.5 if bits == 1 else rng.integers(lo, hi + 1, (4, n_in)),
                               bits)
    x = rng.integers(0, 256, (3, n_in)).astype(np.uint8)
    planes = contract.bit_planes(x)                                   # (3, 8, n_in)
    assert planes.shape == (3, contract.PIXEL_BITS, n_in)
    by_planes = sum((planes[:, b].astype(np.int64) @ w.T) << b for b in range(contract.PIXEL_BITS))
    np.testing.assert_array_equal(by_planes, x.astype(np.int64) @ w.T)


def test_pixel_current_by_hand():
    """Two inputs (3, 255), weights +1 / -1: I = 3 - 255 = -252 every step; a 10-bit membrane saturates at -512."""
    layer = Layer(np.array([[True, False]]), None, membrane_bits=10)
    net = Network([layer], 3, "membrane", "pixel")
    r = golden.simulate(net, np.array([[3, 255]], dtype=np.uint8))
    assert r.membrane[0].tolist() == [[-512]]                       # -252, -504, then clamped
    assert net.layers[0].current_bound(net.input_max) == 255 * 2


def test_wide_pixel_sums_are_exact():
    """8-bit weights at saturation on 784 intensities of 255: |I| = 255 * 784 * 128 > 2^24, past float32."""
    layer = Layer(np.full((2, 784), -128), None, membrane_bits=32, weight_bits=8)
    net = Network([layer], 2, "membrane", "pixel")
    x = np.full((1, 784), 255, dtype=np.uint8)
    want = -2 * 255 * 784 * 128
    assert golden.simulate(net, x).membrane[0].tolist() == [[want, want]]
    _, _, membranes = integer_simulate(net, torch.from_numpy(x).float())
    assert membranes[0].tolist() == [[want, want]]


def test_pixel_early_decision():
    rng = np.random.default_rng(3)
    net = Network([Layer(rng.random((4, 9)) < 0.5, np.full(4, 300), membrane_bits=16)], 6, "first", "pixel")
    x = rng.integers(0, 256, (5, 9)).astype(np.uint8)
    res, d = golden.decide(net, x)
    full = golden.simulate(net, x)
    np.testing.assert_array_equal(res.prediction, full.prediction)
    assert (d <= net.timesteps - 1).all()


def test_refusals():
    dense = Layer(np.ones((2, 4), bool), np.ones(2, int))
    with pytest.raises(ValueError, match="'pixel' encoding feeds intensities to the first layer's synapses, so that "
                                         "layer must be dense or conv2d, not pool"):
        Network([Pool((2, 2, 1), 2), Layer(np.ones((2, 1), bool), np.ones(2, int))], 1, "count", "pixel")
    net = Network([dense], 2, "count", "pixel")
    with pytest.raises(TypeError, match="must be uint8 intensities"):
        golden.simulate(net, np.ones((1, 4), dtype=bool))
    with pytest.raises(ValueError, match=r"must have shape \(batch, 4\)"):
        golden.simulate(net, np.ones((1, 2, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="inputs have 3 features but the network has 4 inputs"):
        net.encode(np.ones((1, 3), dtype=np.uint8))
    # a file that says contract 2 but holds a "pixel" network is refused
    header, payload = split(artifact.to_bytes(net))
    header["contract_version"] = 2
    refused(build(header, payload), r"needs numeric contract version 4 \(encoding 'pixel'\), the file says 2")
