"""The numeric contract, v1: every encoding and integer rule, defined once.

Everything that must agree bit for bit between the trainer's hardware-exact mode, the golden model and the RTL is
defined here and imported from here: the +-1 <-> bit encoding, bit order and packing, the membrane range and its
saturation, the shift leak and its rounding, and the input encoders' pseudo-random generator. ``docs/spec.md`` states
the same rules in prose; a change here is a change of the contract and bumps ``CONTRACT_VERSION``.
"""
from __future__ import annotations

import functools

import numpy as np

CONTRACT_VERSION = 4             # the newest version this code implements
CONTRACT_VERSIONS = (1, 2, 3, 4)  # v1: dense layers of 1-bit weights; v2 adds conv2d, OR pooling and k-bit weights;
#                                   v3 adds the per-step affine drive (BNTT's batch norm through time, folded);
#                                   v4 adds the "pixel" input (the 8-bit intensity as the first layer's input current)

RESET_MODES = ("subtract", "zero")
READOUTS = ("count", "membrane", "first")
ENCODINGS = ("direct", "rate", "latency", "pixel")
PIXEL_MAX = 255               # "pixel": the first layer's input i is the intensity x[i] in 0..PIXEL_MAX every step
PIXEL_BITS = 8                # ... an unsigned 8-bit value: sum_b 2^b * (bit plane b), b = 0..7 (LSB first)
MEMBRANE_BITS_MIN, MEMBRANE_BITS_MAX = 2, 32
LAYER_KINDS = ("dense", "conv2d", "pool")     # the registry: bsnn_hw.network.LAYER_CLASSES maps each to its class
WEIGHT_BITS_MIN, WEIGHT_BITS_MAX = 1, 8       # 1: binary +-1 (a bit); 2..8: signed two's-complement integers
POOL_MODES = ("or",)                          # OR (max) pooling of spike maps


# --- k-bit weights (contract v2) ------------------------------------------------------------------------------------

def weight_range(bits: int) -> tuple[int, int]:
    """The values a ``bits``-bit weight takes: -1/+1 for 1 bit (stored as a bit), else the signed two's-complement
    range [-2^(k-1), 2^(k-1) - 1]."""
    if bits == 1:
        return -1, 1
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def weight_values(weights: np.ndarray, bits: int) -> np.ndarray:
    """Weights as the integers the synaptic sum multiplies (int64): bits (True = +1) for 1-bit layers, as stored
    for k-bit layers."""
    if bits == 1:
        return bit_to_weight(weights).astype(np.int64)
    return np.asarray(weights, dtype=np.int64)


# --- the per-step affine drive (contract v3: BNTT's batch norm through time, folded to integers) -------------------
# A layer may carry, per step t and neuron (per output channel for conv), an integer scale a[t, j] and bias b[t, j]
# with F fraction bits; the membrane then integrates the drive x = (a I + b) >>> F instead of I. Without a scale table
# a = 2^F for every entry (the shared-scale variant: x = I + (b >>> F), no multiplier).

STEP_FRAC_MAX = 16                       # F in 0..16
STEP_SCALE_BITS = 18                     # a in the signed 18-bit range (one 18x18 DSP multiplier on ECP5)
STEP_BIAS_BITS = 32                      # b in the signed 32-bit range


def step_drive(current, scale, bias, frac: int):
    """The membrane's drive under a per-step affine: x = (a * I + b) >>> F, the product and sum exact, the shift
    arithmetic (floor). ``scale`` None means a = 2^F. Arrays broadcast (int64 out)."""
    i = np.asarray(current, dtype=np.int64)
    a = (1 << frac) if scale is None else np.asarray(scale, dtype=np.int64)
    return (a * i + np.asarray(bias, dtype=np.int64)) >> frac


def signed_width(values) -> int:
    """Bits of the narrowest two's complement that holds every value (at least 1)."""
    v = np.asarray(values, dtype=np.int64)
    if not v.size:
        return 1
    hi, lo = int(v.max()), int(v.min())
    return max(1, hi.bit_length() + 1 if hi > 0 else 1, (-lo - 1).bit_length() + 1 if lo < 0 else 1)


# --- feature maps (contract v2) -------------------------------------------------------------------------------------
# A feature map of H rows, W columns and C channels is a flat vector in position-major order (FINN's NHWC):
# index = (y * W + x) * C + c. Every layer's inputs and outputs are numbered this way; a dense layer after a conv or
# pool layer reads the map in this order (the "flatten" is an ordering, not a layer). A conv kernel is stored as
# weights[o, ky, kx, c] (FINN's OHWI), and its fan-in vector in the same (ky, kx, c) order.

def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output rows (or columns) of a convolution: floor((size + 2 padding - kernel) / stride) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def pool_output_size(size: int, window: int) -> int:
    """Output rows (or columns) of a window x window pooling with stride = window: floor(size / window); rows or
    columns past the last whole window are dropped (as PyTorch's MaxPool2d does)."""
    return size // window


# --- +-1 <-> bit -------------------------------------------------------------------------------------------------
# Bit 1 means weight +1, bit 0 means weight -1 (as FINN's ``Binary`` type).

def weight_to_bit(w: np.ndarray) -> np.ndarray:
    """+-1 (or any sign-carrying number, > 0 is +1) to bits: True = +1."""
    return np.asarray(w) > 0


def bit_to_weight(b: np.ndarray) -> np.ndarray:
    """Bits to +-1 integers (int8): True -> +1, False -> -1."""
    return np.where(np.asarray(b, dtype=bool), np.int8(1), np.int8(-1))


# --- bit order and packing -----------------------------------------------------------------------------------------
# Index i of a bit vector is bit (i mod 8) of byte i // 8 (LSB first); in a W-bit word, index i is bit (i mod W) of
# word i // W. Padding bits past the end are 0.

def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack the last axis of a bool array LSB-first into uint8: (..., n) -> (..., ceil(n/8))."""
    return np.packbits(np.asarray(bits, dtype=bool), axis=-1, bitorder="little")


def unpack_bits(packed: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: (..., ceil(n/8)) uint8 -> (..., n) bool."""
    return np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=-1, count=n, bitorder="little").astype(bool)


def pack_words(bits: np.ndarray, width: int) -> list[int]:
    """Pack a 1-D bool vector into ``width``-bit Python integers, LSB first, zero padded: index i is bit i % width of
    word i // width. Any width works: each word is built from its little-endian bytes, never by shifting a NumPy
    integer (``1 << np.int64(64)`` is 0, which once put wrong weight ROMs in RTL with W > 64)."""
    bits = np.asarray(bits, dtype=bool).ravel()
    if not isinstance(width, (int, np.integer)) or isinstance(width, (bool, np.bool_)) or width < 1:
        raise ValueError(f"word width must be an int of at least 1, not {width!r}")
    width = int(width)
    nwords = -(-bits.size // width)
    padded = np.zeros((nwords, width), dtype=bool)
    padded.ravel()[: bits.size] = bits
    packed = np.packbits(padded, axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def check_weight_range(w: np.ndarray, bits: int, where: str = "") -> None:
    """Refuse k-bit weights (k >= 2) outside the signed k-bit range, compared in ``w``'s own dtype (a uint64 beyond
    int64 is not wrapped first); ``where`` prefixes the message ("banks[1]: ")."""
    lo, hi = weight_range(bits)
    if bits > 1 and w.size and (w.min() < lo or w.max() > hi):
        bad = int(w.min() if w.min() < lo else w.max())
        raise ValueError(f"{where}{bits}-bit weights must be in {lo}..{hi}, not {bad}")


def pack_weight_words(weights: np.ndarray, width: int, bits: int) -> list[int]:
    """Pack one row of weights into words of ``width`` weights each (``width * bits`` bits), weight i of the row at
    bits [(i % width) * bits, (i % width + 1) * bits) of word i // width, zero padded. 1-bit weights: the bit
    encoding above (True = +1), exactly :func:`pack_words`. k-bit weights (k >= 2): each weight's k-bit two's
    complement, LSB first, so lane i of a word is the signed value as the hardware's adder tree reads it."""
    if bits == 1:
        return pack_words(weights, width)
    w = np.asarray(weights).ravel()
    check_weight_range(w, bits)
    w = w.astype(np.int64)
    twos = w & ((1 << bits) - 1)
    vbits = ((twos[:, None] >> np.arange(bits)) & 1).astype(bool).ravel()   # weight-major, LSB first
    return pack_words(vbits, width * bits)


def unpack_words(words, width: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_words` (words are Python ints or anything ``int()`` takes)."""
    width = int(width)
    nbytes = -(-width // 8)
    out = np.zeros((len(words), width), dtype=bool)
    for w, value in enumerate(words):
        value = int(value)
        if value < 0 or value >> width:
            raise ValueError(f"word {w} = {value} does not fit in {width} unsigned bits")
        row = np.frombuffer(value.to_bytes(nbytes, "little"), dtype=np.uint8)
        out[w] = np.unpackbits(row, count=width, bitorder="little").astype(bool)
    return out.ravel()[:n]


# --- membrane arithmetic -------------------------------------------------------------------------------------------

def membrane_range(bits: int) -> tuple[int, int]:
    """The signed ``bits``-bit range [-2^(bits-1), 2^(bits-1) - 1]."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def saturate(v, bits: int):
    """Clamp to the signed ``bits``-bit range (works on ints and integer arrays)."""
    lo, hi = membrane_range(bits)
    if isinstance(v, np.ndarray):
        return np.clip(v, lo, hi)
    return min(max(v, lo), hi)


def leak(v, shift: int | None):
    """The leak term ``v >>> shift``: arithmetic shift right, rounding toward minus infinity; 0 without a leak."""
    if shift is None:
        return v * 0
    return v >> shift


def synaptic_sum(spikes: np.ndarray, weight_bits: np.ndarray) -> np.ndarray:
    """I[j] = sum_i s[i] * (2 B[j,i] - 1) = 2 popcount(s & B[j]) - popcount(s), the XNOR-popcount of the contract.

    ``spikes`` (..., n_in) bool, ``weight_bits`` (n_out, n_in) bool -> (..., n_out) int64."""
    s = np.asarray(spikes, dtype=np.int64)
    return s @ bit_to_weight(weight_bits).astype(np.int64).T


# --- input encoders' pseudo-random generator -------------------------------------------------------------------------
# A 16-bit maximal-length Galois LFSR, feedback polynomial x^16 + x^14 + x^13 + x^11 + 1 (toggle mask 0xB400).
# One step: out = state & 1; state >>= 1; if out: state ^= 0xB400. The state is never 0; the period is 65535.
# One draw advances the LFSR by LFSR_STEPS_PER_DRAW steps and returns the low 8 bits of the new state (in hardware an
# unrolled 8-step update, one draw per clock).

LFSR_BITS = 16
LFSR_TAPS = 0xB400
LFSR_PERIOD = (1 << LFSR_BITS) - 1
LFSR_STEPS_PER_DRAW = 8


def lfsr_step(state: int) -> int:
    """One step of the contract's Galois LFSR."""
    out = state & 1
    state >>= 1
    if out:
        state ^= LFSR_TAPS
    return state


@functools.lru_cache(maxsize=1)
def lfsr_tables() -> tuple[np.ndarray, np.ndarray]:
    """(sequence, position): ``sequence[k]`` is the state k steps after state 1; ``position[s]`` is the k with
    ``sequence[k] == s`` (position[0] is unused)."""
    seq = np.empty(LFSR_PERIOD, dtype=np.uint16)
    state = 1
    for k in range(LFSR_PERIOD):
        seq[k] = state
        state = lfsr_step(state)
    assert state == 1, "LFSR polynomial is not maximal-length"
    pos = np.zeros(1 << LFSR_BITS, dtype=np.int64)
    pos[seq] = np.arange(LFSR_PERIOD)
    return seq, pos


def lfsr_draws(seed, count: int) -> np.ndarray:
    """The first ``count`` 8-bit draws of the LFSR seeded with ``seed`` (an int, or an int array for several
    independent streams): draw n is the low byte of the state 8*(n+1) steps after the seed. Shape seed.shape + (count,),
    dtype uint8."""
    seed = check_seed(seed)
    if count < 0:
        raise ValueError(f"count must be non-negative, not {count}")
    _, pos = lfsr_tables()
    draws = _draw_sequence()
    # The seed is the state 8q steps after state 1 (8 is invertible mod the odd period), so draw n is
    # draws[(q + 1 + n) mod P]: every stream is a contiguous, cyclic slice of one sequence.
    start = (pos[seed] * pow(LFSR_STEPS_PER_DRAW, -1, LFSR_PERIOD) + 1) % LFSR_PERIOD
    ext = np.tile(draws, ceil_div(LFSR_PERIOD + count, LFSR_PERIOD))          # length >= P + count
    windows = np.lib.stride_tricks.sliding_window_view(ext, count) if count else np.zeros((LFSR_PERIOD, 0), np.uint8)
    return windows[start]


@functools.lru_cache(maxsize=1)
def _draw_sequence() -> np.ndarray:
    """draws[m] = low byte of the state 8m steps after state 1, m = 0..P-1."""
    seq, _ = lfsr_tables()
    m = np.arange(LFSR_PERIOD, dtype=np.int64)
    return (seq[(LFSR_STEPS_PER_DRAW * m) % LFSR_PERIOD] & 0xFF).astype(np.uint8)


def check_seed(seed) -> np.ndarray:
    """Check rate-encoding seed(s): an int, or an integer array, each in 1..65535 (the LFSR's nonzero states).
    Returns them as int64; refuses bools, floats (never rounded) and out-of-range values."""
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"rate-encoding seed must be an integer, not {seed!r}")
    if isinstance(seed, (int, np.integer)):
        if not 1 <= seed <= LFSR_PERIOD:
            raise ValueError(f"rate-encoding seed must be in 1..{LFSR_PERIOD} (the LFSR's nonzero states), "
                             f"not {int(seed)}")
        return np.asarray(seed, dtype=np.int64)
    s = np.asarray(seed)
    if s.dtype == bool or not np.issubdtype(s.dtype, np.integer):
        what = repr(seed) if s.ndim == 0 else f"an array of {s.dtype}"
        raise TypeError(f"rate-encoding seed must be an integer or an integer array, not {what}")
    if s.size and (s.min() < 1 or s.max() > LFSR_PERIOD):
        bad = s.min() if s.min() < 1 else s.max()
        raise ValueError(f"rate-encoding seed must be in 1..{LFSR_PERIOD} (the LFSR's nonzero states), not {int(bad)}")
    return s.astype(np.int64)


def latency_step(x: np.ndarray, timesteps: int) -> np.ndarray:
    """Spike step of the latency code: t(x) = ((255 - x) * T) // 256 for x >= 1; -1 (no spike) for x == 0."""
    x = np.asarray(x, dtype=np.int64)
    return np.where(x > 0, ((255 - x) * timesteps) // 256, -1)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def current_bound(fan_in: int, weight_bits: int, input_max: int = 1) -> int:
    """A bound on one neuron's |I| in one step: fan-in x the largest |weight| x the largest input (1 for spikes,
    PIXEL_MAX for the "pixel" input)."""
    lo, hi = weight_range(weight_bits)
    return int(fan_in) * max(-lo, hi) * int(input_max)


def input_max(encoding: str) -> int:
    """The largest value one input of the first layer takes in a step: 1 for spikes, PIXEL_MAX for "pixel"."""
    return PIXEL_MAX if encoding == "pixel" else 1


def bit_planes(x: np.ndarray) -> np.ndarray:
    """The "pixel" input as bit planes: uint8 (..., n) -> bool (..., PIXEL_BITS, n), plane b = bit b of every x
    (x = sum_b 2^b plane_b), so a layer's synaptic input is sum_b 2^b I(plane_b), each I(plane_b) the ordinary
    spike sum of section 2 (the hardware's bit-serial form)."""
    x = np.asarray(x, dtype=np.uint8)
    return ((x[..., None, :] >> np.arange(PIXEL_BITS, dtype=np.uint8)[:, None]) & 1).astype(bool)
