"""Layer / Network / random_network: one test per bad argument, pinning the message (Amaranth style:
"X must be ..., not ..."), plus what valid arguments become."""
from __future__ import annotations

import re

import numpy as np
import pytest

from bsnn_hw import Layer, Network, random_network

W = np.ones((3, 4), dtype=bool)


def make_layer(**kw):
    args = dict(weights=W, threshold=2, leak_shift=None, reset="subtract", membrane_bits=16, fire_once=False)
    args.update(kw)
    return Layer(**args)


def raises(exc, message):
    """pytest.raises pinning the whole message."""
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


# --- Layer: one test per bad argument --------------------------------------------------------------------------

@pytest.mark.parametrize("kw,exc,message", [
    # weights
    (dict(weights=np.ones((3, 4))), TypeError,
     "weights must be a bool array (True = +1, False = -1), not float64; convert +-1 weights with `weights > 0`"),
    (dict(weights=np.ones((3, 4), dtype=np.int8)), TypeError,
     "weights must be a bool array (True = +1, False = -1), not int8; convert +-1 weights with `weights > 0`"),
    (dict(weights=np.ones(4, dtype=bool)), ValueError,
     "weights must have shape (n_out, n_in) with both at least 1, not (4,)"),
    (dict(weights=np.ones((0, 4), dtype=bool)), ValueError,
     "weights must have shape (n_out, n_in) with both at least 1, not (0, 4)"),
    (dict(weights=np.ones((2, 3, 4), dtype=bool)), ValueError,
     "weights must have shape (n_out, n_in) with both at least 1, not (2, 3, 4)"),
    # threshold: integers only, never rounded, 1..2^(M-1)-1
    (dict(threshold=np.array([1.0, 2.0, 3.0])), TypeError,
     "threshold must be an int or an array of ints (thresholds are never rounded), not an array of float64"),
    (dict(threshold=2.0), TypeError,
     "threshold must be an int or an array of ints (thresholds are never rounded), not 2.0"),
    (dict(threshold=2.5), TypeError,
     "threshold must be an int or an array of ints (thresholds are never rounded), not 2.5"),
    (dict(threshold=True), TypeError,
     "threshold must be an int or an array of ints (thresholds are never rounded), not True"),
    (dict(threshold="3"), TypeError,
     "threshold must be an int or an array of ints (thresholds are never rounded), not '3'"),
    (dict(threshold=0), ValueError, "threshold must be in 1..32767 (2^(M-1)-1 for M = 16), not 0"),
    (dict(threshold=np.array([1, -2, 3])), ValueError, "threshold must be in 1..32767 (2^(M-1)-1 for M = 16), not -2"),
    (dict(threshold=32768), ValueError, "threshold must be in 1..32767 (2^(M-1)-1 for M = 16), not 32768"),
    (dict(threshold=8, membrane_bits=4), ValueError, "threshold must be in 1..7 (2^(M-1)-1 for M = 4), not 8"),
    (dict(threshold=2 ** 31, membrane_bits=32), ValueError,
     "threshold must be in 1..2147483647 (2^(M-1)-1 for M = 32), not 2147483648"),
    (dict(threshold=2 ** 70), ValueError,
     f"threshold must be in 1..32767 (2^(M-1)-1 for M = 16), not {2 ** 70}"),
    (dict(threshold=np.array([1, 2, 2 ** 63], dtype=np.uint64)), ValueError,
     f"threshold must be in 1..32767 (2^(M-1)-1 for M = 16), not {2 ** 63}"),
    (dict(threshold=[1, 2]), ValueError, "threshold must have shape (3,) to match 3 neurons, not (2,)"),
    (dict(threshold=[[1, 2, 3]]), ValueError, "threshold must have shape (3,) to match 3 neurons, not (1, 3)"),
    # leak_shift: 1..M-1 or None
    (dict(leak_shift=0), ValueError, "leak_shift must be in 1..15 (membrane_bits - 1) or None, not 0"),
    (dict(leak_shift=16), ValueError, "leak_shift must be in 1..15 (membrane_bits - 1) or None, not 16"),
    (dict(leak_shift=4, membrane_bits=4), ValueError, "leak_shift must be in 1..3 (membrane_bits - 1) or None, not 4"),
    (dict(leak_shift=-1), ValueError, "leak_shift must be in 1..15 (membrane_bits - 1) or None, not -1"),
    (dict(leak_shift=2.0), TypeError, "leak_shift must be an int or None, not 2.0"),
    (dict(leak_shift=True), TypeError, "leak_shift must be an int or None, not True"),
    (dict(leak_shift="4"), TypeError, "leak_shift must be an int or None, not '4'"),
    # membrane_bits: 2..32
    (dict(membrane_bits=1, threshold=1), ValueError, "membrane_bits must be in 2..32, not 1"),
    (dict(membrane_bits=33), ValueError, "membrane_bits must be in 2..32, not 33"),
    (dict(membrane_bits=16.0), TypeError, "membrane_bits must be an int, not 16.0"),
    (dict(membrane_bits=None), TypeError, "membrane_bits must be an int, not None"),
    # reset
    (dict(reset="soft"), ValueError, "reset must be one of 'subtract', 'zero', not 'soft'"),
    (dict(reset=None), ValueError, "reset must be one of 'subtract', 'zero', not None"),
    (dict(reset="Subtract"), ValueError, "reset must be one of 'subtract', 'zero', not 'Subtract'"),
    # fire_once
    (dict(fire_once=1), TypeError, "fire_once must be a bool, not 1"),
    (dict(fire_once="yes"), TypeError, "fire_once must be a bool, not 'yes'"),
])
def test_layer_rejects(kw, exc, message):
    with raises(exc, message):
        make_layer(**kw)


def test_layer_accepts_and_normalizes():
    lay = make_layer(threshold=5, leak_shift=np.int64(3), membrane_bits=np.int32(8), fire_once=np.bool_(True))
    assert lay.threshold.tolist() == [5, 5, 5] and lay.threshold.dtype == np.int64
    assert lay.leak_shift == 3 and type(lay.leak_shift) is int
    assert lay.membrane_bits == 8 and type(lay.membrane_bits) is int
    assert lay.fire_once is True
    assert (lay.n_in, lay.n_out) == (4, 3)
    # the extremes of every range are legal
    assert make_layer(threshold=2 ** 31 - 1, membrane_bits=32, leak_shift=31).threshold.max() == 2 ** 31 - 1
    assert make_layer(threshold=1, membrane_bits=2, leak_shift=1).threshold.tolist() == [1, 1, 1]
    assert make_layer(threshold=np.array([1, 2, 3], dtype=np.uint8)).threshold.tolist() == [1, 2, 3]
    assert make_layer(threshold=None).threshold is None
    # a list of bools is a bool array
    assert make_layer(weights=[[True, False]], threshold=1).weights.tolist() == [[True, False]]


def test_layer_is_immutable_and_copies():
    w = W.copy()
    lay = make_layer(weights=w, threshold=np.array([1, 2, 3]))
    w[0, 0] = False
    assert lay.weights[0, 0]                          # a copy was taken
    with pytest.raises(ValueError):
        lay.weights[0, 0] = False
    with pytest.raises(ValueError):
        lay.threshold[0] = 7


def test_layer_equality():
    assert make_layer() == make_layer()
    assert make_layer() != make_layer(threshold=3)
    assert make_layer() != make_layer(reset="zero")
    assert make_layer(threshold=None) != make_layer()


# --- Network ---------------------------------------------------------------------------------------------------

def test_network_rejects_empty_and_non_layers():
    with raises(ValueError, "a network needs at least one layer, not 0"):
        Network([], 4)
    with raises(TypeError, "layer 0 must be a bsnn_hw.Layer, Conv2d or Pool, not ndarray"):
        Network([W], 4)
    with raises(TypeError, "layers must be a list of bsnn_hw.Layer, not Layer"):
        Network(make_layer(), 4)
    with raises(TypeError, "layers must be a list of bsnn_hw.Layer, not int"):
        Network(3, 4)


def test_network_rejects_shape_mismatch():
    with raises(ValueError, "layer 1 has n_in = 5 but layer 0 has n_out = 3; they must match"):
        Network([make_layer(), Layer(np.ones((2, 5), bool), 1)], 4)
    with raises(ValueError, "layer 2 has n_in = 2 but layer 1 has n_out = 4; they must match"):
        Network([make_layer(), Layer(np.ones((4, 3), bool), 1), Layer(np.ones((2, 2), bool), 1)], 4)


@pytest.mark.parametrize("kw,exc,message", [
    (dict(timesteps=0), ValueError, "timesteps must be at least 1, not 0"),
    (dict(timesteps=-5), ValueError, "timesteps must be at least 1, not -5"),
    (dict(timesteps=4.0), TypeError, "timesteps must be an int, not 4.0"),
    (dict(timesteps=True), TypeError, "timesteps must be an int, not True"),
    (dict(readout="max"), ValueError, "readout must be one of 'count', 'membrane', 'first', not 'max'"),
    (dict(encoding="poisson"), ValueError, "encoding must be one of 'direct', 'rate', 'latency', 'pixel', not 'poisson'"),
    (dict(seed=0), ValueError, "rate-encoding seed must be in 1..65535 (the LFSR's nonzero states), not 0"),
    (dict(seed=65536), ValueError, "rate-encoding seed must be in 1..65535 (the LFSR's nonzero states), not 65536"),
    (dict(seed=1.0), TypeError, "seed must be an int, not 1.0"),
    (dict(metadata="abc"), TypeError, "metadata must be a dict, not str"),
    (dict(metadata={"a": object()}), TypeError, "metadata must be JSON-serializable (it is stored in the artifact): "
                                                 "Object of type object is not JSON serializable"),
])
def test_network_rejects(kw, exc, message):
    args = dict(layers=[make_layer()], timesteps=4)
    args.update(kw)
    with raises(exc, message):
        Network(**args)


def test_threshold_none_only_for_membrane_readout_last_layer():
    msg = "layer {} has no threshold; only the last layer of a network with the 'membrane' readout may omit it"
    for readout in ("count", "first"):
        with raises(ValueError, msg.format(0)):
            Network([make_layer(threshold=None)], 4, readout=readout)
    with raises(ValueError, msg.format(0)):
        Network([make_layer(threshold=None), Layer(np.ones((2, 3), bool), None)], 4, readout="membrane")
    net = Network([make_layer(), Layer(np.ones((2, 3), bool), None)], 4, readout="membrane")
    assert not net.layer_fires(1) and net.layer_fires(0)
    # a threshold on the membrane readout's last layer is allowed (and ignored)
    assert not Network([make_layer()], 4, readout="membrane").layer_fires(0)


def test_network_properties():
    net = Network([make_layer(), Layer(np.ones((2, 3), bool), 1)], 8, readout="first", encoding="latency", seed=9,
                  metadata={"note": "x"})
    assert net.sizes == [4, 3, 2] and net.n_in == 4 and net.n_out == 2
    assert net.weight_bits() == 4 * 3 + 3 * 2 == 18
    assert net.synaptic_ops() == 8 * 18 == 144
    assert (net.timesteps, net.readout, net.encoding, net.seed) == (8, "first", "latency", 9)
    assert net.metadata == {"note": "x"}
    assert repr(net) == "Network(4-3-2, T=8, readout=first, encoding=latency)"


def test_network_encode_checks_width():
    net = Network([make_layer()], 4, encoding="rate")
    with raises(ValueError, "inputs have 5 features but the network has 4 inputs"):
        net.encode(np.zeros((2, 5), dtype=np.uint8))
    direct = Network([make_layer()], 4, encoding="direct")
    with raises(ValueError, "spike trains must have shape (batch, 4, 4), not (2, 4, 5)"):
        direct.encode(np.zeros((2, 4, 5), dtype=bool))


# --- random_network --------------------------------------------------------------------------------------------

def test_random_network_parameters_and_determinism():
    net = random_network([20, 8, 3], timesteps=5, leak_shift=2, reset="zero", membrane_bits=10, fire_once=True,
                         readout="membrane", encoding="latency", seed=7)
    assert net.sizes == [20, 8, 3] and net.timesteps == 5 and net.readout == "membrane"
    assert net.encoding == "latency"
    hidden, last = net.layers
    assert hidden.params() == dict(leak_shift=2, reset="zero", membrane_bits=10, fire_once=True)
    assert last.threshold is None
    assert 1 <= hidden.threshold.min() and hidden.threshold.max() <= 511
    assert random_network([20, 8, 3], seed=7) == random_network([20, 8, 3], seed=7)
    assert random_network([20, 8, 3], seed=7) != random_network([20, 8, 3], seed=8)
    # Weights are fair coins: about half of them +1.
    big = random_network([200, 100], seed=1)
    assert 0.45 < big.layers[0].weights.mean() < 0.55
    assert random_network([4, 3], threshold=6).layers[0].threshold.tolist() == [6, 6, 6]


@pytest.mark.parametrize("kw,exc,message", [
    (dict(sizes=[784]), ValueError,
     "sizes must be at least two positive ints (inputs, then each layer's outputs), not [784]"),
    (dict(sizes=[784, 0]), ValueError,
     "sizes must be at least two positive ints (inputs, then each layer's outputs), not [784, 0]"),
    (dict(sizes=[784, 2.5]), ValueError,
     "sizes must be at least two positive ints (inputs, then each layer's outputs), not [784, 2.5]"),
    (dict(membrane_bits=40), ValueError, "membrane_bits must be in 2..32, not 40"),
    (dict(leak_shift=99), ValueError, "leak_shift must be in 1..15 (membrane_bits - 1) or None, not 99"),
    (dict(threshold=99999), ValueError, "threshold must be in 1..32767 (2^(M-1)-1 for M = 16), not 99999"),
    (dict(threshold=2.5), TypeError,
     "threshold must be an int or an array of ints (thresholds are never rounded), not 2.5"),
    (dict(seed=-1), ValueError, "seed must be a non-negative int, not -1"),
    (dict(timesteps=0), ValueError, "timesteps must be at least 1, not 0"),
    (dict(readout="max"), ValueError, "readout must be one of 'count', 'membrane', 'first', not 'max'"),
])
def test_random_network_rejects(kw, exc, message):
    args = dict(sizes=[4, 3])
    args.update(kw)
    with raises(exc, message):
        random_network(**args)
