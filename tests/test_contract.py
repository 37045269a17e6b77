"""bsnn_hw.contract: every encoding and integer rule of the numeric contract, checked by hand-worked values and
against their definitions in docs/spec.md."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bsnn_hw import contract


def test_constants():
    assert contract.CONTRACT_VERSION == 4 and contract.CONTRACT_VERSIONS == (1, 2, 3, 4)
    assert contract.RESET_MODES == ("subtract", "zero")
    assert contract.READOUTS == ("count", "membrane", "first")
    assert contract.ENCODINGS == ("direct", "rate", "latency", "pixel")
    assert (contract.MEMBRANE_BITS_MIN, contract.MEMBRANE_BITS_MAX) == (2, 32)


def test_weight_bit_encoding():
    # bit 1 = +1, bit 0 = -1
    assert contract.weight_to_bit(np.array([1, -1, 1, -1])).tolist() == [True, False, True, False]
    assert contract.weight_to_bit(np.array([0.3, -0.2])).tolist() == [True, False]
    w = contract.bit_to_weight(np.array([True, False]))
    assert w.tolist() == [1, -1] and w.dtype == np.int8
    bits = np.random.default_rng(0).random((5, 9)) < 0.5
    np.testing.assert_array_equal(contract.weight_to_bit(contract.bit_to_weight(bits)), bits)


def test_pack_bits_is_lsb_first():
    # index i is bit (i mod 8) of byte i // 8
    bits = np.zeros(10, dtype=bool)
    bits[[0, 9]] = True
    assert contract.pack_bits(bits).tolist() == [0x01, 0x02]
    bits = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1], dtype=bool)
    assert contract.pack_bits(bits).tolist() == [0x80, 0x07]
    assert contract.pack_bits(np.ones((2, 3), dtype=bool)).tolist() == [[0x07], [0x07]]   # padding bits are 0


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 70), st.integers(0, 2 ** 32 - 1))
def test_pack_unpack_round_trip(n, seed):
    bits = np.random.default_rng(seed).random((3, n)) < 0.5
    packed = contract.pack_bits(bits)
    assert packed.shape == (3, contract.ceil_div(n, 8))
    np.testing.assert_array_equal(contract.unpack_bits(packed, n), bits)
    # by definition: byte k = sum of bits[8k + b] << b
    for k in range(packed.shape[1]):
        expect = sum(int(bits[0, 8 * k + b]) << b for b in range(8) if 8 * k + b < n)
        assert packed[0, k] == expect


def test_pack_words():
    # index i is bit (i mod W) of word i // W, zero padded
    bits = np.array([1, 1, 0, 1, 0, 0, 1], dtype=bool)
    assert contract.pack_words(bits, 4) == [0b1011, 0b0100]
    assert contract.pack_words(bits, 7) == [0b1001011]
    assert contract.pack_words(bits, 64) == [0b1001011]
    assert contract.pack_words(bits, 1) == [1, 1, 0, 1, 0, 0, 1]
    np.testing.assert_array_equal(contract.unpack_words(contract.pack_words(bits, 3), 3, 7), bits)
    with pytest.raises(ValueError, match=r"^word width must be an int of at least 1, not 0$"):
        contract.pack_words(bits, 0)
    # consistent with the byte packing
    rng = np.random.default_rng(1)
    b = rng.random(37) < 0.5
    assert contract.pack_words(b, 8) == contract.pack_bits(b).tolist()


@pytest.mark.parametrize("width", [1, 7, 63, 64, 65, 100, 127, 128, 129, 200, 255, 256, 257, 292, 300])
def test_pack_words_any_width_against_python_ints(width):
    """Words wider than 64 bits: every bit at every position, checked against plain Python integer arithmetic (a
    NumPy-int shift once dropped every bit past 63)."""
    rng = np.random.default_rng(width)
    for n in (1, width - 1 or 1, width, width + 1, 3 * width + 5):
        bits = rng.random(n) < 0.5
        bits[-1] = True
        ref = [0] * -(-n // width)
        for i in np.flatnonzero(bits).tolist():
            ref[i // width] |= 1 << (i % width)
        assert contract.pack_words(bits, width) == ref
        np.testing.assert_array_equal(contract.unpack_words(ref, width, n), bits)
    only_top = np.zeros(width, dtype=bool)
    only_top[-1] = True
    assert contract.pack_words(only_top, width) == [1 << (width - 1)]
    assert contract.pack_words(np.ones(width, dtype=bool), width) == [(1 << width) - 1]
    with pytest.raises(ValueError, match="does not fit"):
        contract.unpack_words([1 << width], width, width)


def test_membrane_range_and_saturate():
    assert contract.membrane_range(2) == (-2, 1)
    assert contract.membrane_range(8) == (-128, 127)
    assert contract.membrane_range(32) == (-2 ** 31, 2 ** 31 - 1)
    assert contract.saturate(200, 8) == 127 and contract.saturate(-200, 8) == -128 and contract.saturate(5, 8) == 5
    assert contract.saturate(np.array([-3, -2, 1, 2]), 2).tolist() == [-2, -2, 1, 1]


def test_leak_rounds_toward_minus_infinity():
    # v >>> k = floor(v / 2^k)
    assert contract.leak(-1, 1) == -1
    assert contract.leak(-3, 1) == -2
    assert contract.leak(-5, 2) == -2          # floor(-1.25)
    assert contract.leak(5, 2) == 1
    assert contract.leak(7, None) == 0
    v = np.arange(-40, 41)
    for k in (1, 2, 3, 5):
        assert contract.leak(v, k).tolist() == [int(np.floor(x / 2 ** k)) for x in v]
    assert contract.leak(v, None).tolist() == [0] * v.size
    # docs/spec.md's worked values of v - leak(v): k = 1: 7 -> 4, -1 -> 0, -3 -> -1; k = 2: -1 -> 0, -5 -> -3.
    assert [v - contract.leak(v, 1) for v in (7, -1, -3)] == [4, 0, -1]
    assert [v - contract.leak(v, 2) for v in (-1, -5)] == [0, -3]


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 130), st.integers(1, 9), st.integers(0, 2 ** 32 - 1))
def test_synaptic_sum_is_xnor_popcount(n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    s = rng.random((4, n_in)) < 0.5
    b = rng.random((n_out, n_in)) < 0.5
    got = contract.synaptic_sum(s, b)
    for k in range(4):
        for j in range(n_out):
            popcount_and = int(np.sum(s[k] & b[j]))
            popcount_s = int(np.sum(s[k]))
            plain = sum((1 if b[j, i] else -1) for i in range(n_in) if s[k, i])
            assert got[k, j] == 2 * popcount_and - popcount_s == plain


def test_latency_step():
    t = contract.latency_step(np.array([0, 1, 128, 254, 255]), 32)
    assert t.tolist() == [-1, 31, 15, 0, 0]


def test_lfsr_tables():
    seq, pos = contract.lfsr_tables()
    assert seq.shape == (65535,) and seq[0] == 1 and len(set(seq.tolist())) == 65535
    assert pos[seq[12345]] == 12345
    assert contract.lfsr_step(int(seq[100])) == seq[101]


def test_ceil_div():
    assert [contract.ceil_div(a, 8) for a in (0, 1, 8, 9, 16)] == [0, 1, 1, 2, 2]
