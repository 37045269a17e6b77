"""Input encoders against the contract, with an independent scalar model of the rate encoder's LFSR.

The LFSR below is written from the contract's text (docs/spec.md, bsnn_hw/contract.py's comment), not imported:
a 16-bit Galois LFSR, polynomial x^16 + x^14 + x^13 + x^11 + 1 (toggle mask 0xB400), one step =
``out = state & 1; state >>= 1; if out: state ^= 0xB400``; one draw = 8 steps, then the low byte of the state;
draws taken step-major then input index, from the sample's seed; input i spikes at step t iff draw < x[i].
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bsnn_hw import contract, encode
from bsnn_hw.network import Layer, Network

TAPS = 0xB400        # x^16 + x^14 + x^13 + x^11 + 1, for a right-shifting Galois LFSR


def scalar_rate(x_row, timesteps, seed):
    """One sample, one draw at a time: a list of T rows of n bools."""
    state = seed
    out = []
    for _t in range(timesteps):
        row = []
        for xi in x_row:
            for _ in range(8):
                lsb = state & 1
                state >>= 1
                if lsb:
                    state ^= TAPS
            row.append((state & 0xFF) < int(xi))
        out.append(row)
    return out


def test_lfsr_is_maximal_length_and_matches_the_polynomial():
    state, seen = 1, set()
    for _ in range(65535):
        seen.add(state)
        lsb = state & 1
        state >>= 1
        if lsb:
            state ^= TAPS
    assert state == 1 and len(seen) == 65535 and 0 not in seen
    assert contract.LFSR_TAPS == TAPS and contract.LFSR_PERIOD == 65535 and contract.LFSR_STEPS_PER_DRAW == 8
    # The first steps from seed 1 by hand: 1 -> lsb 1: 0 ^ 0xB400 = 0xB400 -> 0x5A00 -> 0x2D00 -> 0x1680.
    s = 1
    got = []
    for _ in range(4):
        s = contract.lfsr_step(s)
        got.append(s)
    assert got == [0xB400, 0x5A00, 0x2D00, 0x1680]


def test_lfsr_reference_values_of_the_spec():
    # docs/spec.md: seed 1, states after 8, 16, 24, 32 steps 0x0168, 0x7C41, 0x5B14, 0x137B; draws their low bytes.
    state, states = 1, []
    for _ in range(4):
        for _ in range(8):
            state = (state >> 1) ^ (TAPS if state & 1 else 0)
        states.append(state)
    assert states == [0x0168, 0x7C41, 0x5B14, 0x137B]
    assert contract.lfsr_draws(1, 4).tolist() == [0x68, 0x41, 0x14, 0x7B]
    # rate: draw < x: with x = 0x41 + 1 = 66 at 4 inputs, T = 1: draws 104, 65, 20, 123 -> spikes 0, 1, 1, 0.
    assert encode.rate(np.full((1, 4), 66, dtype=np.uint8), 1, seed=1)[0, 0].tolist() == [False, True, True, False]


def test_lfsr_draws_match_scalar_model():
    # Draw n is the low byte of the state 8 * (n + 1) steps after the seed.
    for seed in (1, 2, 0xACE1, 65535):
        state, expect = seed, []
        for _ in range(50):
            for _ in range(8):
                lsb = state & 1
                state >>= 1
                state ^= TAPS if lsb else 0
            expect.append(state & 0xFF)
        assert contract.lfsr_draws(seed, 50).tolist() == expect


def test_lfsr_draws_longer_than_the_period():
    # 70,000 draws from seed 3 (more than the 65,535 period): the stream wraps around exactly.
    state, expect = 3, []
    for _ in range(70000):
        for _ in range(8):
            lsb = state & 1
            state >>= 1
            if lsb:
                state ^= TAPS
        expect.append(state & 0xFF)
    got = contract.lfsr_draws(np.array([3, 65535]), 70000)
    assert got.shape == (2, 70000) and got[0].tolist() == expect
    np.testing.assert_array_equal(got[1, :4465], got[1, 65535:])
    assert contract.lfsr_draws(7, 0).shape == (0,)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 65535), st.integers(1, 6), st.integers(1, 9), st.integers(1, 3), st.integers(0, 2 ** 32 - 1))
def test_rate_is_bit_exact_to_scalar_model(seed, timesteps, n, batch, data_seed):
    x = np.random.default_rng(data_seed).integers(0, 256, (batch, n), dtype=np.uint8)
    got = encode.rate(x, timesteps, seed=seed)
    assert got.shape == (batch, timesteps, n) and got.dtype == bool
    for b in range(batch):
        assert got[b].tolist() == scalar_rate(x[b], timesteps, seed)


def test_rate_per_sample_seeds():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (4, 7), dtype=np.uint8)
    seeds = np.array([1, 77, 40000, 65535])
    got = encode.rate(x, 5, seed=seeds)
    for b in range(4):
        assert got[b].tolist() == scalar_rate(x[b], 5, int(seeds[b]))
    # A scalar seed is the same as that seed repeated for every sample.
    np.testing.assert_array_equal(encode.rate(x, 5, seed=77), encode.rate(x, 5, seed=np.full(4, 77)))
    # Every sample's stream starts from its seed: sample b alone gives the same spikes as in the batch.
    np.testing.assert_array_equal(encode.rate(x[2:3], 5, seed=seeds[2:3]), got[2:3])
    # Network.encode uses the network's seed unless one is given.
    net = Network([Layer(np.ones((2, 7), bool), 1)], 5, encoding="rate", seed=77)
    np.testing.assert_array_equal(net.encode(x), encode.rate(x, 5, seed=77))
    np.testing.assert_array_equal(net.encode(x, seed=seeds), got)


def test_rate_probability_is_exact_over_a_full_period():
    # Over the LFSR's full period every nonzero 16-bit state appears once, so the low byte takes each value 256 times,
    # except 0 (255 times). The draws (every 8th state; 8 and 65535 are coprime) also visit every state once, so over
    # 65535 = 15 * 4369 draws, exactly 256 * x - 1 of them are < x (x >= 1): P(spike) = (256x - 1) / 65535 ~ x / 256.
    for xv in (0, 1, 64, 128, 200, 255):
        x = np.full((1, 4369), xv, dtype=np.uint8)
        total = int(encode.rate(x, 15, seed=12345).sum())
        assert total == max(0, 256 * xv - 1)


def test_rate_spike_frequency_is_about_x_over_256():
    # Statistical: short windows from different seeds, each intensity's spike rate within 4 sigma of x / 256.
    rng = np.random.default_rng(1)
    xs = np.array([0, 10, 64, 128, 192, 250, 255], dtype=np.uint8)
    x = np.tile(xs, (500, 1))
    seeds = rng.integers(1, 65536, 500)
    rate = encode.rate(x, 8, seed=seeds).mean(axis=(0, 1))
    p = xs / 256
    sigma = np.sqrt(p * (1 - p) / (500 * 8)) + 1e-9
    assert (np.abs(rate - p) <= 4 * sigma + 1e-3).all(), (rate, p)
    assert rate[0] == 0.0            # intensity 0 never spikes


@pytest.mark.parametrize("seed,exc,msg", [
    (0, ValueError, "rate-encoding seed must be in 1..65535 (the LFSR's nonzero states), not 0"),
    (65536, ValueError, "rate-encoding seed must be in 1..65535 (the LFSR's nonzero states), not 65536"),
    (-3, ValueError, "rate-encoding seed must be in 1..65535 (the LFSR's nonzero states), not -3"),
    (2 ** 70, ValueError, f"rate-encoding seed must be in 1..65535 (the LFSR's nonzero states), not {2 ** 70}"),
    (1.5, TypeError, "rate-encoding seed must be an integer or an integer array, not 1.5"),
    (2.0, TypeError, "rate-encoding seed must be an integer or an integer array, not 2.0"),
    (True, TypeError, "rate-encoding seed must be an integer, not True"),
    (np.array([1.0, 2.0, 3.0]), TypeError, "rate-encoding seed must be an integer or an integer array, not an array "
                                           "of float64"),
    (np.array([1, 0, 3]), ValueError, "rate-encoding seed must be in 1..65535 (the LFSR's nonzero states), not 0"),
    (np.array([1, 2]), ValueError, "seed must be an int or an array of shape (3,), not shape (2,)"),
])
def test_rate_seed_validation(seed, exc, msg):
    x = np.zeros((3, 4), dtype=np.uint8)
    with pytest.raises(exc) as info:
        encode.rate(x, 2, seed=seed)
    assert str(info.value) == msg


@pytest.mark.parametrize("fn", [lambda x, t: encode.rate(x, t, 1), encode.latency])
def test_encoders_check_inputs(fn):
    with pytest.raises(TypeError, match=r"^inputs must be uint8 intensities \(0\.\.255\), not float64$"):
        fn(np.zeros((2, 3)), 4)
    with pytest.raises(TypeError, match=r"^inputs must be uint8 intensities \(0\.\.255\), not int64$"):
        fn(np.zeros((2, 3), dtype=np.int64), 4)
    with pytest.raises(ValueError, match=r"^inputs must have shape \(batch, n\), not \(3,\)$"):
        fn(np.zeros(3, dtype=np.uint8), 4)
    with pytest.raises(ValueError, match=r"^timesteps must be at least 1, not 0$"):
        fn(np.zeros((2, 3), dtype=np.uint8), 0)
    with pytest.raises(TypeError, match=r"^timesteps must be an int, not 4\.0$"):
        fn(np.zeros((2, 3), dtype=np.uint8), 4.0)
    with pytest.raises(TypeError, match=r"^timesteps must be an int, not True$"):
        fn(np.zeros((2, 3), dtype=np.uint8), True)


def test_latency_hand_cases():
    # t(x) = ((255 - x) * T) // 256 for x >= 1, no spike for x = 0. T = 32:
    #   x = 255: 0 * 32 // 256 = 0          x = 254: 32 // 256 = 0        x = 128: 127 * 32 // 256 = 4064 // 256 = 15
    #   x = 1: 254 * 32 // 256 = 8128 // 256 = 31 (31.75, floored)       x = 0: no spike
    x = np.array([[255, 254, 128, 1, 0]], dtype=np.uint8)
    s = encode.latency(x, 32)
    assert s.shape == (1, 32, 5) and s.dtype == bool
    steps = [np.flatnonzero(s[0, :, i]).tolist() for i in range(5)]
    assert steps == [[0], [0], [15], [31], []]
    # T = 8: x = 200: 55 * 8 // 256 = 440 // 256 = 1; x = 100: 155 * 8 // 256 = 1240 // 256 = 4.
    s = encode.latency(np.array([[200, 100]], dtype=np.uint8), 8)
    assert [np.flatnonzero(s[0, :, i]).tolist() for i in range(2)] == [[1], [4]]
    # T = 1: every nonzero intensity spikes at step 0.
    assert encode.latency(np.array([[1, 0, 255]], dtype=np.uint8), 1)[0, 0].tolist() == [True, False, True]


def test_latency_properties():
    x = np.arange(256, dtype=np.uint8)[None]
    for timesteps in (1, 3, 16, 32, 255, 256, 300):
        s = encode.latency(x, timesteps)
        counts = s.sum(axis=1)[0]
        assert counts.max() <= 1                                     # at most one spike
        assert counts[0] == 0 and (counts[1:] == 1).all()            # only 0 is silent
        t = s[0].argmax(axis=0)[1:]
        assert (np.diff(t) <= 0).all()                               # brighter is never later
        assert t[-1] == 0 and t.max() <= timesteps - 1
        ref = [((255 - v) * timesteps) // 256 for v in range(1, 256)]
        assert t.tolist() == ref


def test_direct_and_dispatch():
    spikes = np.zeros((2, 4, 3), dtype=bool)
    assert encode.direct(spikes, 4, 3) is spikes
    with pytest.raises(TypeError, match=r"^direct spike trains must be a bool array, not uint8$"):
        encode.direct(spikes.astype(np.uint8), 4, 3)
    with pytest.raises(ValueError, match=r"^spike trains must have shape \(batch, 5, 3\), not \(2, 4, 3\)$"):
        encode.direct(spikes, 5, 3)
    x = np.full((1, 3), 200, dtype=np.uint8)
    np.testing.assert_array_equal(encode.encode(x, 4, "rate", 9), encode.rate(x, 4, 9))
    np.testing.assert_array_equal(encode.encode(x, 4, "latency"), encode.latency(x, 4))
    assert encode.encode(x, 4, "pixel") is x                       # the intensities themselves, every step
    with pytest.raises(TypeError, match=r"^inputs must be uint8 intensities \(0..255\), not bool$"):
        encode.encode(x > 0, 4, "pixel")
    with pytest.raises(ValueError, match=r"^encoding must be one of direct, rate, latency, pixel, not 'poisson'$"):
        encode.encode(x, 4, "poisson")
