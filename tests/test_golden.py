"""The golden model against the numeric contract v1.

Two layers of checks:
1. hand-worked cases: tiny networks whose every membrane value is worked out in a comment beside the test;
2. property tests: golden.simulate (every method: "auto", "packed", "matmul", "popcount") against tests/reference.py,
   an independent per-neuron loop, on random networks drawn across every parameter of the contract.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsnn_hw import Layer, Network, encode, golden

try:
    from . import reference
except ImportError:      # tests/ is not a package: pytest put it on sys.path
    import reference

METHODS = golden.METHODS


def layer(weights, threshold, leak_shift=None, reset="subtract", membrane_bits=8, fire_once=False):
    """A layer from +-1 weights written as a nested list (rows = neurons)."""
    return Layer(np.array(weights) > 0, None if threshold is None else np.array(threshold), leak_shift, reset,
                 membrane_bits, fire_once)


def trains(rows):
    """Spike trains of one sample from a list of 0/1 rows (one row per step) -> bool (1, T, n)."""
    return np.array(rows, dtype=bool)[None]


def sim(net, spikes):
    """Run every method and the reference, check they all agree exactly (so every hand-worked value below also
    checks tests/reference.py), return the matmul result."""
    check_against_reference(net, spikes)
    return golden.simulate(net, spikes, record=True)


def membrane_after(lay, steps, readout="count"):
    """Membranes after each step 1..T of a one-layer net (rerun for each T: the result holds the last step only)."""
    out = []
    for t in range(1, len(steps) + 1):
        net = Network([lay], t, readout=readout, encoding="direct")
        out.append(int(sim(net, trains(steps[:t])).membrane[0][0, 0]))
    return out


# --- saturation ------------------------------------------------------------------------------------------------

def test_saturation_high_and_v_equal_theta_does_not_fire():
    # M = 3: range [-4, 3]; theta = 3 (the largest legal value). Three +1 inputs all active: I = 3 per step.
    # t0: V = sat(0 + 3) = 3; 3 > 3 is false: no spike.  t1: sat(3 + 3 = 6) = 3, no spike.  t2: same.
    lay = layer([[1, 1, 1]], [3], membrane_bits=3)
    net = Network([lay], 3, encoding="direct")
    r = sim(net, trains([[1, 1, 1]] * 3))
    assert r.membrane[0].tolist() == [[3]]
    assert r.counts[0].tolist() == [[0]]
    assert r.first_step[0].tolist() == [[-1]]
    assert membrane_after(lay, [[1, 1, 1]] * 3) == [3, 3, 3]


def test_saturation_low_with_leak_floor_rounding():
    # M = 4: range [-8, 7]; leak k = 1; five -1 inputs all active: I = -5 per step.
    # t0: 0 - (0 >>> 1) - 5 = -5
    # t1: -5 - (-5 >>> 1 = -3) - 5 = -5 + 3 - 5 = -7
    # t2: -7 - (-7 >>> 1 = -4) - 5 = -7 + 4 - 5 = -8        (exactly the floor, no clamp needed)
    # t3: -8 - (-8 >>> 1 = -4) - 5 = -9 -> clamped to -8
    lay = layer([[-1] * 5], [7], leak_shift=1, membrane_bits=4)
    assert membrane_after(lay, [[1] * 5] * 4) == [-5, -7, -8, -8]


def test_saturation_is_applied_once_before_reset():
    # M = 4: range [-8, 7]; theta = 5; ten +1 inputs: I = 10.
    # subtract: t0: sat(10) = 7 > 5 -> fire, V = 7 - 5 = 2;  t1: sat(2 + 10) = 7 -> fire, V = 2.
    # zero:     t0: sat(10) = 7 > 5 -> fire, V = 0;          t1: sat(0 + 10) = 7 -> fire, V = 0.
    steps = [[1] * 10] * 2
    assert membrane_after(layer([[1] * 10], [5], membrane_bits=4), steps) == [2, 2]
    assert membrane_after(layer([[1] * 10], [5], reset="zero", membrane_bits=4), steps) == [0, 0]


def test_m2_neurons_never_fire():
    # M = 2: range [-2, 1]; the only legal theta is 1 and V never exceeds 1, so the neuron can never fire.
    lay = layer([[1, 1, 1]], [1], membrane_bits=2)
    net = Network([lay], 4, encoding="direct")
    r = sim(net, trains([[1, 1, 1]] * 4))
    assert r.counts[0].tolist() == [[0]] and r.membrane[0].tolist() == [[1]]
    # and the low end: three -1 inputs: sat(-3) = -2
    assert membrane_after(layer([[-1, -1, -1]], [1], membrane_bits=2), [[1, 1, 1]] * 2) == [-2, -2]


def test_m32_extremes_are_representable():
    # M = 32: theta may be 2^31 - 1; a membrane of -4 * 3 = -12 stays exact (int32/int64 paths agree).
    lay = layer([[-1, -1, -1], [1, 1, 1]], [2 ** 31 - 1, 2 ** 31 - 1], membrane_bits=32)
    assert membrane_after(lay, [[1, 1, 1]] * 4) == [-3, -6, -9, -12]


# --- leak ------------------------------------------------------------------------------------------------------

def test_leak_of_negative_values_rounds_toward_minus_infinity():
    # k = 1. One step of three -1 inputs, then nothing.
    # t0: V = -3.  t1: -3 - (-3 >>> 1 = -2) = -1.  t2: -1 - (-1 >>> 1 = -1) = 0.  t3: 0.
    # (A truncating shift would give -3, -2, -1, 0: -3/2 -> -1, -2/2 -> -1, -1/2 -> 0.)
    lay = layer([[-1, -1, -1]], [1], leak_shift=1)
    assert membrane_after(lay, [[1, 1, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]]) == [-3, -1, 0, 0]


def test_leak_of_positive_values_and_if_neuron():
    # Eight +1 inputs once, theta 100 (never fires), then nothing.
    # k = 2: 8 -> 8 - 2 = 6 -> 6 - 1 = 5 -> 5 - 1 = 4 -> 4 - 1 = 3 -> 3 - 0 = 3 (3 >>> 2 = 0: the leak stops)
    # IF (no leak): 8 stays 8.
    steps = [[1] * 8] + [[0] * 8] * 5
    assert membrane_after(layer([[1] * 8], [100], leak_shift=2), steps) == [8, 6, 5, 4, 3, 3]
    assert membrane_after(layer([[1] * 8], [100], leak_shift=None), steps) == [8] * 6


def test_leak_uses_previous_membrane_before_adding_input():
    # k = 1, two +1 inputs every step, theta 100: V_t = V - (V >>> 1) + 2.
    # 0 -> 2 -> 2 - 1 + 2 = 3 -> 3 - 1 + 2 = 4 -> 4 - 2 + 2 = 4 (fixed point)
    assert membrane_after(layer([[1, 1]], [100], leak_shift=1), [[1, 1]] * 4) == [2, 3, 4, 4]


# --- fire and reset --------------------------------------------------------------------------------------------

def test_reset_subtract_and_zero():
    # Four +1 inputs every step (I = 4), theta = 5, IF, M = 8, T = 4.
    # subtract: t0 V=4; t1 8 > 5 fire -> 3; t2 7 fire -> 2; t3 6 fire -> 1.   spikes 0111, V = 1
    # zero:     t0 V=4; t1 8 fire -> 0;     t2 4;          t3 8 fire -> 0.   spikes 0101, V = 0
    steps = trains([[1] * 4] * 4)
    r = sim(Network([layer([[1] * 4], [5])], 4, encoding="direct"), steps)
    assert r.spikes[0][0, :, 0].tolist() == [False, True, True, True]
    assert r.counts[0].tolist() == [[3]] and r.membrane[0].tolist() == [[1]] and r.first_step[0].tolist() == [[1]]
    r = sim(Network([layer([[1] * 4], [5], reset="zero")], 4, encoding="direct"), steps)
    assert r.spikes[0][0, :, 0].tolist() == [False, True, False, True]
    assert r.counts[0].tolist() == [[2]] and r.membrane[0].tolist() == [[0]]


def test_reset_with_leak():
    # k = 1, three +1 inputs (I = 3), theta 3, subtract.
    # t0: 0 - 0 + 3 = 3 (3 > 3 false).  t1: 3 - 1 + 3 = 5 > 3: fire, V = 2.  t2: 2 - 1 + 3 = 4 > 3: fire, V = 1.
    # t3: 1 - 0 + 3 = 4: fire, V = 1.
    lay = layer([[1, 1, 1]], [3], leak_shift=1)
    assert membrane_after(lay, [[1, 1, 1]] * 4) == [3, 2, 1, 1]
    r = sim(Network([lay], 4, encoding="direct"), trains([[1, 1, 1]] * 4))
    assert r.spikes[0][0, :, 0].tolist() == [False, True, True, True]


def test_fire_once_suppresses_output_but_membrane_keeps_going():
    # As test_reset_subtract_and_zero (I = 4, theta 5, subtract) with fire-once: the membrane follows the same
    # trajectory 4, 3, 2, 1 (reset included), but only the first spike (t1) is emitted.
    lay = layer([[1] * 4], [5], fire_once=True)
    assert membrane_after(lay, [[1] * 4] * 4) == [4, 3, 2, 1]
    r = sim(Network([lay], 4, encoding="direct"), trains([[1] * 4] * 4))
    assert r.spikes[0][0, :, 0].tolist() == [False, True, False, False]
    assert r.counts[0].tolist() == [[1]] and r.first_step[0].tolist() == [[1]]


def test_fire_once_suppressed_spikes_do_not_reach_the_next_layer():
    # Layer 0 (fire-once) spikes only at t1 (see above). Layer 1: one +1 synapse, theta 1, IF.
    # Layer 1 sees 0,1,0,0: V = 0, 1, 1, 1 and never fires (1 > 1 is false).
    # Without fire-once layer 1 sees 0,1,1,1: V = 0, 1, 2 -> fire -> 1, 2 -> fire -> 1: two spikes.
    for fire_once, expect in ((True, [0, 0, 0, 0]), (False, [0, 0, 1, 1])):
        net = Network([layer([[1] * 4], [5], fire_once=fire_once), layer([[1]], [1])], 4, encoding="direct")
        r = sim(net, trains([[1] * 4] * 4))
        assert r.spikes[1][0, :, 0].astype(int).tolist() == expect


def test_fire_once_with_zero_reset():
    # I = 4, theta 5, zero reset, fire-once: V = 4, 0 (fire), 4, 0 (fire, suppressed): one spike, at t1.
    lay = layer([[1] * 4], [5], reset="zero", fire_once=True)
    r = sim(Network([lay], 4, encoding="direct"), trains([[1] * 4] * 4))
    assert r.spikes[0][0, :, 0].tolist() == [False, True, False, False]
    assert r.membrane[0].tolist() == [[0]]


def test_next_layer_sees_spikes_of_the_same_step():
    # Layer 0: two +1 inputs, theta 1, zero reset: inputs at t0, t1 only -> V = 2 fire -> 0, 2 fire -> 0, 0, 0:
    #   spikes 1100.
    # Layer 1: one +1 synapse, theta 1, IF, subtract: V = 1, 2 fire -> 1, 1, 1: spikes 0100 (a one-step delay
    #   between layers would give 0010).
    net = Network([layer([[1, 1]], [1], reset="zero"), layer([[1]], [1])], 4, encoding="direct")
    r = sim(net, trains([[1, 1], [1, 1], [0, 0], [0, 0]]))
    assert r.spikes[0][0, :, 0].astype(int).tolist() == [1, 1, 0, 0]
    assert r.spikes[1][0, :, 0].astype(int).tolist() == [0, 1, 0, 0]
    assert r.membrane[1].tolist() == [[1]]


def test_synaptic_input_counts_only_active_inputs():
    # Weights +1, -1, +1, -1, +1; active inputs 0, 1, 4: I = +1 - 1 + 1 = 1 (inactive -1 weights do not count:
    # 2 * popcount(s & B) - popcount(s) = 2 * 2 - 3 = 1).
    lay = layer([[1, -1, 1, -1, 1]], [100])
    assert membrane_after(lay, [[1, 1, 0, 0, 1]]) == [1]
    # No active input at all: I = 0 whatever the weights.
    assert membrane_after(lay, [[0, 0, 0, 0, 0]]) == [0]


# --- readouts --------------------------------------------------------------------------------------------------

TWO_ON = [[1, 1]] * 4   # both inputs active at every step, T = 4


def test_count_readout_and_tie():
    # weights n0 (+1,-1): I = 0; n1, n2 (+1,+1): I = 2. IF, subtract.
    # thresholds (1, 2, 1): n0 never; n1: 2 no, 4 fire -> 2, 4 fire -> 2, 4 fire: 3 spikes; n2: 2 fire -> 1,
    # 3 -> 2, 4 -> 3, 5 -> 4... fires every step: 4 spikes. counts (0, 3, 4) -> class 2.
    w = [[1, -1], [1, 1], [1, 1]]
    r = sim(Network([layer(w, [1, 2, 1])], 4, readout="count", encoding="direct"), trains(TWO_ON))
    assert r.counts[0].tolist() == [[0, 3, 4]] and r.prediction.tolist() == [2]
    # thresholds (1, 1, 1): counts (0, 4, 4): tie between 1 and 2 -> lowest index, 1.
    r = sim(Network([layer(w, [1, 1, 1])], 4, readout="count", encoding="direct"), trains(TWO_ON))
    assert r.counts[0].tolist() == [[0, 4, 4]] and r.prediction.tolist() == [1]
    # nothing fires at all: counts all 0 -> class 0.
    r = sim(Network([layer(w, [100, 100, 100])], 4, readout="count", encoding="direct"), trains(TWO_ON))
    assert r.prediction.tolist() == [0]


def test_membrane_readout_last_layer_never_fires():
    # weights n0 (+1,-1): I = 0; n1 (+1,+1): I = 2; n2 (-1,-1): I = -2. IF, T = 4: V = (0, 8, -8) -> class 1.
    # Thresholds given (1) are ignored: the last layer of a "membrane" readout never fires and never resets.
    w = [[1, -1], [1, 1], [-1, -1]]
    for th in ([1, 1, 1], None):
        r = sim(Network([layer(w, th)], 4, readout="membrane", encoding="direct"), trains(TWO_ON))
        assert r.membrane[0].tolist() == [[0, 8, -8]]
        assert r.counts[0].tolist() == [[0, 0, 0]] and r.first_step[0].tolist() == [[-1, -1, -1]]
        assert not r.spikes[0].any()
        assert r.prediction.tolist() == [1]


def test_membrane_readout_tie_and_saturation():
    # M = 3: range [-4, 3]. n0 (+1,-1): 0; n1, n2 (+1,+1): 2, 4 -> 3 (saturated), 3, 3. Tie 1/2 -> class 1.
    w = [[1, -1], [1, 1], [1, 1]]
    r = sim(Network([layer(w, None, membrane_bits=3)], 4, readout="membrane", encoding="direct"), trains(TWO_ON))
    assert r.membrane[0].tolist() == [[0, 3, 3]] and r.prediction.tolist() == [1]


def test_membrane_readout_hidden_layers_still_fire():
    # Hidden layer: two +1 synapses, theta 1: fires every step of TWO_ON (V = 2 -> 1, 3 -> 2, ...).
    # Output layer (membrane): n0 weight -1 -> V = -4; n1 weight +1 -> V = 4 -> class 1.
    net = Network([layer([[1, 1]], [1]), layer([[-1], [1]], None)], 4, readout="membrane", encoding="direct")
    r = sim(net, trains(TWO_ON))
    assert r.counts[0].tolist() == [[4]]
    assert r.membrane[1].tolist() == [[-4, 4]] and r.prediction.tolist() == [1]


def test_first_readout_earliest_and_tie():
    # All weights (+1,+1): I = 2 per step, IF, subtract. V before reset: 2, 4, 6, 8 until the first spike.
    # thresholds (5, 3, 3, 7): n0 fires first at t2 (6 > 5), n1 and n2 at t1 (4 > 3), n3 at t3 (8 > 7).
    # Earliest is t1, tie n1/n2 -> class 1.
    w = [[1, 1]] * 4
    r = sim(Network([layer(w, [5, 3, 3, 7])], 4, readout="first", encoding="direct"), trains(TWO_ON))
    assert r.first_step[0].tolist() == [[2, 1, 1, 3]]
    assert r.prediction.tolist() == [1]
    # Thresholds (5, 6, 7, 3): n0 at t2 (6 > 5), n1 and n2 at t3 (6 > 6 is false, 8 > 6), n3 alone at t1 (4 > 3)
    # although it has the highest index -> class 3.
    r = sim(Network([layer(w, [5, 6, 7, 3])], 4, readout="first", encoding="direct"), trains(TWO_ON))
    assert r.first_step[0].tolist() == [[2, 3, 3, 1]] and r.prediction.tolist() == [3]


def test_first_readout_falls_back_to_membrane_argmax():
    # Thresholds 100: nothing fires. Weights n0 (+1,-1): V = 0; n1 (-1,-1): -8; n2 (+1,+1): 8 -> class 2.
    r = sim(Network([layer([[1, -1], [-1, -1], [1, 1]], [100] * 3)], 4, readout="first", encoding="direct"),
            trains(TWO_ON))
    assert (r.first_step[0] == -1).all() and r.membrane[0].tolist() == [[0, -8, 8]]
    assert r.prediction.tolist() == [2]
    # Fallback tie: n1 and n2 both 8 -> class 1.
    r = sim(Network([layer([[1, -1], [1, 1], [1, 1]], [100] * 3)], 4, readout="first", encoding="direct"),
            trains(TWO_ON))
    assert r.prediction.tolist() == [1]


def test_first_readout_differs_from_count_readout():
    # fire-once: each neuron emits one spike. n0 theta 5 (I = 2): V 2, 4, 6 fires at t2; n1 theta 1 fires at t0.
    # counts (1, 1): the count readout ties -> class 0; the first readout -> class 1 (earliest).
    lay = layer([[1, 1], [1, 1]], [5, 1], fire_once=True)
    r = sim(Network([lay], 4, readout="first", encoding="direct"), trains(TWO_ON))
    assert r.first_step[0].tolist() == [[2, 0]] and r.counts[0].tolist() == [[1, 1]]
    assert r.prediction.tolist() == [1]
    assert sim(Network([lay], 4, readout="count", encoding="direct"), trains(TWO_ON)).prediction.tolist() == [0]


def test_batch_samples_are_independent():
    # All state is 0 at the start of every sample: a sample run alone or in a batch gives the same result.
    lay = layer([[1] * 4, [1, -1, 1, -1]], [5, 1])
    net = Network([lay], 4, readout="count", encoding="direct")
    a = trains([[1] * 4] * 4)[0]
    b = trains([[1, 0, 1, 0]] * 4)[0]
    both = sim(net, np.stack([a, b]))
    for i, x in enumerate((a, b)):
        alone = sim(net, x[None])
        assert both.counts[0][i].tolist() == alone.counts[0][0].tolist()
        assert both.membrane[0][i].tolist() == alone.membrane[0][0].tolist()


# --- record ----------------------------------------------------------------------------------------------------

def test_record_gives_per_step_spikes_of_every_layer():
    net = Network([layer([[1, 1]], [1], reset="zero"), layer([[1]], [1])], 4, encoding="direct")
    x = trains([[1, 1], [1, 1], [0, 0], [0, 0]])
    r = golden.simulate(net, x, record=True)
    assert len(r.spikes) == 2
    assert r.spikes[0].shape == (1, 4, 1) and r.spikes[0].dtype == bool
    assert r.spikes[0][0, :, 0].tolist() == [True, True, False, False]
    assert r.spikes[1][0, :, 0].tolist() == [False, True, False, False]
    for lay_spikes, counts in zip(r.spikes, r.counts):
        np.testing.assert_array_equal(lay_spikes.sum(axis=1), counts)
    assert golden.simulate(net, x).spikes is None


# --- argument checks -------------------------------------------------------------------------------------------

def test_simulate_rejects_bad_spikes():
    net = Network([layer([[1, 1]], [1])], 4, encoding="direct")
    with pytest.raises(TypeError, match=r"^spikes must be a bool array, not int64$"):
        golden.simulate(net, np.zeros((1, 4, 2), dtype=np.int64))
    with pytest.raises(ValueError, match=r"^spikes must have shape \(batch, 4, 2\), not \(1, 3, 2\)$"):
        golden.simulate(net, np.zeros((1, 3, 2), dtype=bool))
    with pytest.raises(ValueError, match=r"^method must be one of 'auto', 'packed', 'matmul', 'popcount', not 'fast'$"):
        golden.simulate(net, np.zeros((1, 4, 2), dtype=bool), method="fast")


def test_empty_batch():
    net = Network([layer([[1, 1]], [1])], 4, encoding="direct")
    r = golden.simulate(net, np.zeros((0, 4, 2), dtype=bool))
    assert r.prediction.shape == (0,) and r.counts[0].shape == (0, 1)


# --- property tests against the reference -----------------------------------------------------------------------

@st.composite
def networks(draw, max_layers=3, max_width=10, max_t=8):
    """A random network across every parameter of the contract, and a batch of direct spike trains for it."""
    n_layers = draw(st.integers(1, max_layers))
    sizes = [draw(st.integers(1, max_width)) for _ in range(n_layers + 1)]
    readout = draw(st.sampled_from(["count", "membrane", "first"]))
    timesteps = draw(st.integers(1, max_t))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    layers = []
    for li in range(n_layers):
        n_in, n_out = sizes[li], sizes[li + 1]
        # Tiny M (saturation dominates) is drawn as often as wide M.
        m = draw(st.one_of(st.integers(2, 5), st.integers(2, 32)))
        hi = 2 ** (m - 1) - 1
        leak = draw(st.one_of(st.none(), st.integers(1, m - 1)))
        reset = draw(st.sampled_from(["subtract", "zero"]))
        fire_once = draw(st.booleans())
        # Thresholds: mostly small (so neurons fire), sometimes anywhere in 1..2^(M-1)-1, incl. the top.
        kind = draw(st.sampled_from(["small", "small", "full", "top"]))
        if kind == "small":
            th = rng.integers(1, min(hi, n_in + 2) + 1, n_out)
        elif kind == "full":
            th = rng.integers(1, hi + 1, n_out)
        else:
            th = np.full(n_out, hi)
        last_membrane = readout == "membrane" and li == n_layers - 1
        if last_membrane and draw(st.booleans()):
            th = None
        weights = rng.random((n_out, n_in)) < draw(st.sampled_from([0.0, 0.5, 0.8, 1.0]))
        layers.append(Layer(weights, th, leak, reset, m, fire_once))
    net = Network(layers, timesteps, readout=readout, encoding="direct")
    batch = draw(st.integers(1, 4))
    density = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]))
    spikes = rng.random((batch, timesteps, sizes[0])) < density
    return net, spikes


def check_against_reference(net, spikes):
    """Every method, and each with the compiled kernels forced on (``KERNEL_MIN_WORK = 0``; by default these small
    cases run the NumPy recurrence and the int64 product), agrees with the reference."""
    ref = reference.run(net, spikes)
    default = golden.KERNEL_MIN_WORK
    try:
        for kernel_min in (default, 0):
            golden.KERNEL_MIN_WORK = kernel_min
            _check_methods(net, spikes, ref)
    finally:
        golden.KERNEL_MIN_WORK = default


def _check_methods(net, spikes, ref):
    for method in METHODS:
        r = golden.simulate(net, spikes, record=True, method=method)
        for b, rb in enumerate(ref):
            for li in range(len(net.layers)):
                assert r.spikes[li][b].astype(int).tolist() == rb["spikes"][li], (method, b, li, "spikes")
                assert r.counts[li][b].tolist() == rb["counts"][li], (method, b, li, "counts")
                assert r.membrane[li][b].tolist() == rb["membrane"][li], (method, b, li, "membrane")
                assert r.first_step[li][b].tolist() == rb["first_step"][li], (method, b, li, "first_step")
            assert int(r.prediction[b]) == rb["prediction"], (method, b, "prediction")
        # The result without record is the same.
        r2 = golden.simulate(net, spikes, method=method)
        np.testing.assert_array_equal(r2.prediction, r.prediction)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_golden_matches_reference(case):
    check_against_reference(*case)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks(max_layers=4, max_width=24, max_t=20))
def test_golden_matches_reference_many(case):
    check_against_reference(*case)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2 ** 32 - 1), st.sampled_from([1, 2, 3, 4, 6]))
def test_golden_matches_reference_long_saturating_runs(seed, leak):
    # Long runs at tiny M with dense input: the membrane sits at the rails most of the time, where off-by-one errors
    # in clamping, leak rounding and reset order show up.
    rng = np.random.default_rng(seed)
    m = int(rng.integers(max(3, leak + 1), 8))
    hi = 2 ** (m - 1) - 1
    n_in = int(rng.integers(4, 40))
    reset = str(rng.choice(["subtract", "zero"]))
    layers = [Layer(rng.random((6, n_in)) < 0.5, rng.integers(1, hi + 1, 6), leak, reset, m, bool(rng.integers(2))),
              Layer(rng.random((3, 6)) < 0.5, rng.integers(1, hi + 1, 3), None, "subtract", m, False)]
    net = Network(layers, 32, readout=str(rng.choice(["count", "membrane", "first"])), encoding="direct")
    spikes = rng.random((2, 32, n_in)) < rng.choice([0.3, 0.9])
    check_against_reference(net, spikes)


# --- the fast path's integer widths -----------------------------------------------------------------------------
# golden.simulate holds the membrane in the narrowest of int16/int32/int64 that provably fits and skips the clamp
# when it cannot act. The small random networks above all run in int16; these tests cover the wider paths.

@pytest.mark.parametrize("m", [8, 12, 16, 17, 24, 32])
def test_wide_fan_in_matches_reference(m):
    # n_in = 1100, T = 32: T * n_in = 35,200 > 2^15, so M >= 17 runs in int32; M <= 16 clamps in int16.
    rng = np.random.default_rng(m)
    hi = 2 ** (m - 1) - 1
    th = np.array([1, min(hi, 40), min(hi, 300), hi])
    net = Network([Layer(rng.random((4, 1100)) < 0.7, th, 5 if m > 8 else None, "subtract", m, False),
                   Layer(rng.random((3, 4)) < 0.5, None, 2, "zero", m, False)], 32, readout="membrane",
                  encoding="direct")
    spikes = rng.random((1, 32, 1100)) < 0.9
    check_against_reference(net, spikes)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=networks())
def test_wider_state_types_match_reference(dtype, case):
    from unittest import mock
    with mock.patch.object(golden, "_state_dtype", lambda *args: dtype):
        check_against_reference(*case)


def test_state_dtype_choice():
    assert golden._state_dtype(16, 784, 32) == np.int16        # 25,088 + 784 fits int16
    assert golden._state_dtype(32, 1100, 32) == np.int32       # 35,200 + 1,100 does not
    assert golden._state_dtype(32, 2 ** 20, 4096) == np.int64  # 2^31 + 2^20 does not fit int32
    assert golden._state_dtype(31, 2 ** 20, 4096) == np.int32  # 2^30 + 2^20 does


def test_long_batches_run_in_chunks_with_the_same_result(monkeypatch):
    net = Network([Layer(np.random.default_rng(0).random((6, 9)) < 0.5, 2, 1, "subtract", 6, True),
                   Layer(np.random.default_rng(1).random((3, 6)) < 0.5, 1, None, "zero", 5, False)],
                  5, readout="first", encoding="direct")
    spikes = np.random.default_rng(2).random((10, 5, 9)) < 0.5
    whole = golden.simulate(net, spikes, record=True)
    monkeypatch.setattr(golden, "_CHUNK_ELEMENTS", 3 * 5 * 9)     # 3 samples per chunk: 4 chunks, the last short
    parts = golden.simulate(net, spikes, record=True)
    for a, b in zip(whole.counts + whole.membrane + whole.first_step + whole.spikes,
                    parts.counts + parts.membrane + parts.first_step + parts.spikes):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(whole.prediction, parts.prediction)
    assert golden.simulate(net, spikes).spikes is None
    check_against_reference(net, spikes)


# --- the packed product and the choice of method -------------------------------------------------------------------
# "packed" puts several dot products in the bit fields of one float32 column; "auto" picks a method per layer. The
# random networks above (fan-in <= 24) pack 5-6 fields per column; these tests cover wide fan-ins (more than one
# 64-bit word, not a multiple of 64, wide enough for "auto" to pick "packed"), k-bit and conv layers, and fan-ins too
# wide for two fields (the exact int64 fallback).

def _dense_net(n_in, n_out, weight_bits=1, readout="count", m=16, seed=0, timesteps=6):
    rng = np.random.default_rng(seed)
    if weight_bits == 1:
        w = rng.random((n_out, n_in)) < 0.5
    else:
        lo, hi = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
        w = rng.integers(lo, hi + 1, (n_out, n_in))
    th = rng.integers(1, max(2, int(np.sqrt(n_in))), n_out)
    out = Layer(rng.random((3, n_out)) < 0.5, None if readout == "membrane" else 2, 2, "zero", m)
    return Network([Layer(w, th, 3, "subtract", m, False, weight_bits), out], timesteps, readout=readout,
                   encoding="direct")


@pytest.mark.parametrize("n_in", [63, 64, 65, 130, 300, 784])
@pytest.mark.parametrize("readout", ["count", "membrane", "first"])
def test_wide_fan_in_every_method_matches_reference(n_in, readout):
    net = _dense_net(n_in, 70, readout=readout, seed=n_in)
    spikes = np.random.default_rng(n_in + 1).random((2, 6, n_in)) < 0.4
    check_against_reference(net, spikes)


@pytest.mark.parametrize("weight_bits", [2, 4, 8])
@pytest.mark.parametrize("n_in", [5, 300])
def test_kbit_packed_matches_reference(weight_bits, n_in):
    # 8-bit weights over 300 inputs need 17-bit fields: only one fits a float32 column, so "packed" falls back to the
    # exact int64 product; 2- and 4-bit ones pack two fields.
    net = _dense_net(n_in, 9, weight_bits=weight_bits, m=24, seed=weight_bits)
    spikes = np.random.default_rng(weight_bits).random((2, 6, n_in)) < 0.5
    check_against_reference(net, spikes)


def test_kbit_packed_with_all_weights_of_one_sign():
    # The offset form w = u + min(w): all weights positive (min(w) > 0 -> offset 0 kept) or all negative.
    for sign in (1, -1):
        w = sign * np.random.default_rng(3).integers(1, 8, (5, 40))
        net = Network([Layer(w, 4, None, "subtract", 16, False, 4)], 5, readout="membrane", encoding="direct")
        spikes = np.random.default_rng(4).random((3, 5, 40)) < 0.5
        check_against_reference(net, spikes)


def test_packed_field_layout_against_int64():
    # One layer, many rows, fan-ins around the field-width steps (b = 8, 9, 10, 12 bits: 3, 2, 2, 2 fields; 13 bits:
    # the int64 fallback), every neuron count modulo the field count: the packed product equals exact int64.
    rng = np.random.default_rng(5)
    for n_in in (255, 256, 511, 1023, 4095, 4096):
        for n_out in (1, 2, 3, 5, 64):
            lay = Layer(rng.random((n_out, n_in)) < 0.5, 1)
            x = rng.random((2, 7, n_in)) < rng.choice([0.0, 0.5, 1.0])
            expect = x.reshape(-1, n_in).astype(np.int64) @ np.where(lay.weights, 1, -1).T
            got = golden._layer_input(x, lay, "packed", np.int32)
            np.testing.assert_array_equal(got.reshape(-1, n_out), expect, err_msg=f"{n_in} -> {n_out}")


def test_packed_plan_bounds():
    # Every field holds fan_in * span < 2^b, and f * b <= 24 bits: every partial sum is an exact float32 integer.
    for fan_in in (1, 7, 8, 255, 256, 784, 4095):
        for span in (1, 3, 255):
            plan = golden._packed_plan(fan_in, span)
            b = (fan_in * span).bit_length()
            assert fan_in * span < 2 ** b
            if plan is None:
                assert 24 // b < 2
            else:
                assert plan == (b, 24 // b) and plan[0] * plan[1] <= 24
    assert golden._packed_plan(784, 1) == (10, 2)
    assert golden._packed_plan(255, 1) == (8, 3)
    assert golden._packed_plan(4096, 1) is None


def test_auto_picks_per_layer():
    from bsnn_hw.network import Conv2d, Pool
    rng = np.random.default_rng(0)
    dense = lambda n_in, n_out, bits=1: Layer(rng.random((n_out, n_in)) < 0.5 if bits == 1 else
                                              rng.integers(-(1 << bits - 1), 1 << bits - 1, (n_out, n_in)), 1,
                                              weight_bits=bits)
    assert golden._layer_method(dense(784, 256), "auto") == "popcount"
    assert golden._layer_method(dense(256, 10), "auto") == "popcount"
    assert golden._layer_method(dense(5000, 100), "auto") == "popcount"
    assert golden._layer_method(dense(784, 10, bits=2), "auto") == "popcount"   # two bit planes
    assert golden._layer_method(dense(100, 200, bits=4), "auto") == "popcount"  # four
    assert golden._layer_method(dense(100, 200, bits=5), "auto") == "matmul"    # five: the float product
    assert golden._layer_method(dense(784, 10, bits=8), "auto") == "matmul"     # 8-bit: two fields do not fit
    conv = Conv2d(rng.random((8, 3, 3, 2)) < 0.5, (6, 6, 2), 1)
    assert golden._layer_method(conv, "auto") == "matmul"                       # fan-in 18
    for method in ("matmul", "popcount", "packed"):
        assert golden._layer_method(dense(784, 256), method) == method
    assert golden._layer_method(Conv2d(rng.random((8, 3, 3, 16)) < 0.5, (6, 6, 16), 1), "auto") == "popcount"
    assert golden._layer_method(Conv2d(rng.random((8, 3, 3, 14)) < 0.5, (6, 6, 14), 1), "auto") == "matmul"
    net = Network([conv, Pool((4, 4, 8)), Layer(rng.random((300, 32)) < 0.5, 1)], 3, encoding="direct")
    spikes = rng.random((2, 3, 72)) < 0.5
    check_against_reference(net, spikes)


def test_first_layer_runs_sample_major():
    # The first layer reads the (batch, T, n) input without a transpose; a pool first layer gets a time-major copy.
    from bsnn_hw.network import Pool
    rng = np.random.default_rng(8)
    for layers in ([Layer(rng.random((4, 300)) < 0.5, 3, 1, "subtract", 12, True)],
                   [Pool((10, 10, 3), 2), Layer(rng.random((4, 75)) < 0.5, 3, 1, "zero", 12)]):
        net = Network(layers, 5, readout="first", encoding="direct")
        spikes = rng.random((3, 5, 300)) < 0.3
        check_against_reference(net, spikes)


def test_parallel_parts_give_the_same_result(monkeypatch):
    # A long batch runs in parts on several threads; the parts are independent samples, put back in order.
    rng = np.random.default_rng(9)
    net = Network([Layer(rng.random((20, 300)) < 0.5, 4, 2, "subtract", 12, True),
                   Layer(rng.random((5, 20)) < 0.5, 2, None, "zero", 8, False)], 6, readout="first",
                  encoding="direct")
    spikes = rng.random((70, 6, 300)) < 0.3
    monkeypatch.setattr(golden, "_workers", lambda batch: 1)
    serial = golden.simulate(net, spikes, record=True)
    monkeypatch.setattr(golden, "_workers", lambda batch: 3)        # 70 samples: parts of 24, 24 and 22
    parallel = golden.simulate(net, spikes, record=True)
    for a, b in zip(serial.counts + serial.membrane + serial.first_step + serial.spikes,
                    parallel.counts + parallel.membrane + parallel.first_step + parallel.spikes):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(serial.prediction, parallel.prediction)
    check_against_reference(net, spikes[:3])


def test_workers_follow_blas_threads():
    from threadpoolctl import threadpool_limits
    assert golden._workers(golden._PARALLEL_MIN_BATCH - 1) == 1
    with threadpool_limits(1, user_api="blas"):
        assert golden._workers(1000) == 1


def test_parallel_parts_restore_blas_threads_and_reuse_their_pool(monkeypatch):
    # simulate() sets BLAS to one thread while its parts run, through one controller kept for the process, and
    # puts the user's count back; the parts' thread pool is made once per worker count.
    from threadpoolctl import threadpool_info, threadpool_limits
    net = Network([Layer(np.random.default_rng(0).random((8, 40)) < 0.5, 3)], 4, encoding="direct")
    spikes = np.random.default_rng(1).random((golden._PARALLEL_MIN_BATCH, 4, 40)) < 0.5
    monkeypatch.setattr(golden, "_workers", lambda batch: 2)
    with threadpool_limits(2, user_api="blas"):
        first = golden.simulate(net, spikes).prediction
        pool = golden._thread_pool(2)
        np.testing.assert_array_equal(golden.simulate(net, spikes).prediction, first)
        assert golden._thread_pool(2) is pool
        assert {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"} == {2}


def _forked_prediction(net, spikes, queue):
    queue.put(golden.simulate(net, spikes).prediction)


def test_parallel_parts_run_in_a_forked_child(monkeypatch, in_forked_child):
    # The parent's thread pool has no threads in a forked child (a multiprocessing worker): the child makes its own.
    net = Network([Layer(np.random.default_rng(0).random((8, 40)) < 0.5, 3)], 4, encoding="direct")
    spikes = np.random.default_rng(1).random((golden._PARALLEL_MIN_BATCH, 4, 40)) < 0.5
    monkeypatch.setattr(golden, "_workers", lambda batch: 2)
    expected = golden.simulate(net, spikes).prediction            # the parent's pool now exists
    got = in_forked_child(_forked_prediction, net, spikes)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("encoding", ["rate", "latency", "direct"])
def test_run_encodes_with_the_network_encoding(encoding):
    net = Network([Layer(np.random.default_rng(0).random((4, 6)) < 0.5, 1)], 5, encoding=encoding, seed=321)
    rng = np.random.default_rng(1)
    if encoding == "direct":
        x = rng.random((3, 5, 6)) < 0.5
        spikes = x
    else:
        x = rng.integers(0, 256, (3, 6), dtype=np.uint8)
        spikes = encode.rate(x, 5, seed=321) if encoding == "rate" else encode.latency(x, 5)
    a, b = golden.run(net, x), golden.simulate(net, spikes)
    np.testing.assert_array_equal(a.prediction, b.prediction)
    np.testing.assert_array_equal(a.counts[0], b.counts[0])
    if encoding == "rate":
        # a seed given to run() replaces the network's
        c = golden.run(net, x, seed=np.array([5, 6, 7]))
        np.testing.assert_array_equal(c.counts[0], golden.simulate(net, encode.rate(x, 5, seed=np.array([5, 6, 7])))
                                      .counts[0])


def test_speed_bench_runs():
    # bench/golden_speed.py prints the figure of issue 2; a tiny run keeps it from rotting (no timing asserted).
    import json
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parent.parent / "bench" / "golden_speed.py"
    p = subprocess.run([sys.executable, str(script), "--images", "6", "--batch", "4", "--repeats", "1", "--sizes",
                        "20-8-3", "-T", "4", "--per-sample-seeds", "--json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert set(report["methods"]) == {"auto", "matmul", "popcount"}
    assert report["methods"]["auto"]["simulate_images_per_s"] > 0 and report["encode_images_per_s"] > 0
    assert set(report["images_per_s"]) >= {"PyTorch loop", "snnTorch"}
    # the PyTorch loop computes the same integers: every prediction agrees
    assert report["prediction_agreement_percent"]["PyTorch loop"] == 100.0


@pytest.mark.parametrize("bits", [1, 2, 5, 8])
@pytest.mark.parametrize("n_in", [1, 64, 65, 300])
def test_popcount_kernel_every_width(monkeypatch, bits, n_in):
    # The compiled AND-popcount (bsnn_hw.kernels) over bit planes: weights at both ends of the k-bit range, every
    # input on or a random mix, odd and even row counts, against the int64 product.
    from bsnn_hw import kernels
    monkeypatch.setattr(golden, "KERNEL_MIN_WORK", 0)
    rng = np.random.default_rng(n_in * 10 + bits)
    if bits == 1:
        w = np.where(rng.random((7, n_in)) < 0.5, 1, -1)
    else:
        lo, hi = -(1 << bits - 1), (1 << bits - 1) - 1
        w = rng.choice([lo, hi, 0, rng.integers(lo, hi + 1)], (7, n_in))
        w[0], w[1] = lo, hi                                           # saturation on every input
    rows = rng.random((5, n_in)) < 0.4
    rows[0] = True
    rows[1] = False
    layer = Layer(w > 0 if bits == 1 else w, 1, weight_bits=bits)
    expect = rows.astype(np.int64) @ w.T
    for dtype in (np.int16, np.int32, np.int64):
        if np.abs(expect).max() > np.iinfo(dtype).max:
            continue
        got = golden._popcount_product(rows, layer, dtype)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, expect)
    got = golden._popcount_product(rows[:4], layer, np.int64)           # an even number of rows
    np.testing.assert_array_equal(got, expect[:4])
    assert kernels.pack_words64(rows).shape == (5, -(-n_in // 64))


def test_cpu_target_names_the_vector_popcount(monkeypatch):
    # The benchmarks' header: Numba's forced target (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES) when set, else the host.
    import numba

    from bsnn_hw import kernels
    monkeypatch.setattr(numba.config, "CPU_NAME", "znver3")
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "+avx2,-avx512f,-avx512vpopcntdq,+popcnt")
    assert kernels.cpu_target() == "znver3, AVX2 popcount"
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "+avx2,+avx512f,+avx512vpopcntdq")
    assert kernels.cpu_target() == "znver3, AVX-512 VPOPCNTDQ popcount"
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "-avx2,+sse4.2")
    assert kernels.cpu_target() == "znver3, no vector popcount"
    monkeypatch.setattr(numba.config, "CPU_NAME", None)
    monkeypatch.setattr(numba.config, "CPU_FEATURES", None)
    assert kernels.cpu_target().endswith(" popcount")
