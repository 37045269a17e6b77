"""Compiled kernels of the golden model (Numba): the contract's AND-popcount on packed words, and the membrane
recurrence.

:func:`popcount_input` computes the synaptic input of every row for any weight width, as the hardware
does for 1-bit weights and through bit planes for k-bit ones. With every weight written w = g u + lo, u >= 0 integers
of ``planes`` bits (u = the bit, g = 2, lo = -1 for 1-bit weights, docs/spec.md section 3; u = w - min w, g = 1
otherwise; golden._weight_offsets), and s a row of 0/1 spikes::

    I[j] = g * sum_b 2^b popcount(s & U_b[j]) + lo * popcount(s)

where U_b[j] is bit b of u over neuron j's inputs, packed LSB-first into 64-bit words like the spikes
(contract.pack_bits, zero padded). All integer: exact for every width the contract allows.

Why compiled: NumPy has ``bitwise_count`` but runs it one whole array at a time, so every (neuron, word) pair is a
pass over memory; here each spike word is loaded once and ANDed with every neuron's word from L1 (a 784-256 layer's
weights are 26 KB), the population counts vectorized: measured 4-5x a float32 BLAS product of the same layer on AVX2
cores, more with AVX-512's vector popcount (docs/golden.md; :func:`cpu_target` says which). :func:`lif_steps` runs the
T steps of a sample with its membranes in L1, where NumPy would make a pass over the whole batch per operation and
step. The functions release the GIL (``nogil``), so golden.simulate's threads run them side by side; compiled code is
cached on disk (``cache=True``).
"""
from __future__ import annotations

import numba
import numpy as np
from numba.extending import intrinsic

from . import contract
from .golden import SAMPLE_MAJOR, TIME_MAJOR   # lif_steps' layouts of the drive (and EVERY_STEP, the third)


def cpu_target() -> str:
    """The CPU the kernels are compiled for (LLVM's name, e.g. "znver3"; Numba's ``NUMBA_CPU_NAME`` and
    ``NUMBA_CPU_FEATURES`` when set) and the vector population count LLVM can use there: "AVX-512 VPOPCNTDQ" (one
    instruction for eight 64-bit words) or "AVX2" (a nibble-table ``vpshufb`` popcount). On one Zen 5 core the first
    simulates 1.4-1.5x faster (docs/golden.md). For benchmark headers: a figure compares with one of the same target."""
    import llvmlite.binding as ll
    name = numba.config.CPU_NAME or ll.get_host_cpu_name()
    if numba.config.CPU_FEATURES:           # NUMBA_CPU_FEATURES, LLVM's form: "+avx2,-avx512f,..."
        features = {f[1:]: f[0] == "+" for f in numba.config.CPU_FEATURES.split(",") if f[:1] in "+-"}
    else:
        features = ll.get_host_cpu_features()
    vector = ("AVX-512 VPOPCNTDQ" if features.get("avx512vpopcntdq") else "AVX2" if features.get("avx2")
              else "no vector")
    return f"{name}, {vector} popcount"


@intrinsic
def _ctpop(typingctx, x):
    """LLVM's population count of an integer (one ``popcnt`` instruction on x86-64), of the argument's type."""
    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [args[0].type])
        return builder.call(fn, [args[0]])
    if not isinstance(x, numba.types.Integer):
        return None
    return x(x), codegen


@numba.njit(nogil=True, cache=True, boundscheck=False)
def popcount_input(rows, planes, g, lo, out):
    """I for every row: ``rows`` (N, n_words) uint64 packed spikes, ``planes`` (n_planes, n_words, n_out) uint64
    packed weight bit planes (:func:`pack_planes`), ``g`` and ``lo`` the offsets of the module docstring, ``out``
    (N, n_out) signed integer (any width that holds every I: the caller's state dtype).

    The innermost loop runs over the neurons, so LLVM vectorizes the AND and the population count (AVX2: a
    nibble-table ``vpshufb`` popcount on four words at once; AVX-512 VPOPCNTDQ: ``vpopcntq`` on eight); a row's word
    is loaded once for every neuron."""
    n, nw = rows.shape
    n_planes, _, n_out = planes.shape
    acc = np.zeros(n_out, np.int64)
    for r in range(n):
        act = np.int64(0)
        for j in range(n_out):
            acc[j] = 0
        for k in range(nw):
            s = rows[r, k]
            act += np.int64(_ctpop(s))
            for b in range(n_planes):
                for j in range(n_out):
                    acc[j] += np.int64(_ctpop(s & planes[b, k, j])) << b
        for j in range(n_out):
            out[r, j] = g * acc[j] + lo * act


def pack_planes(u: np.ndarray, n_planes: int) -> np.ndarray:
    """(n_out, fan_in) non-negative integers below 2^n_planes -> (n_planes, n_words, n_out) uint64: bit b of every
    u, packed as the spikes are (``pack_words64``), neuron-minor (the kernel's innermost loop)."""
    n_out, fan_in = u.shape
    planes = np.empty((n_planes, contract.ceil_div(fan_in, 64), n_out), dtype=np.uint64)
    _pack_planes(np.ascontiguousarray(u, dtype=np.int64), planes)
    return planes


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _pack_planes(u, planes):
    """:func:`pack_planes` in one pass over ``u`` (NumPy's shifts, bool copies, packing and transpose took 2.2 ms
    for a 784-256 layer, which golden.simulate repeats per chunk)."""
    n_planes, n_words, n_out = planes.shape
    fan_in = u.shape[1]
    for b in range(n_planes):
        for j in range(n_out):
            for k in range(n_words):
                acc = np.uint64(0)
                for i in range(min(64, fan_in - 64 * k)):
                    acc |= np.uint64((u[j, 64 * k + i] >> b) & 1) << np.uint64(i)
                planes[b, k, j] = acc


def pack_words64(bits: np.ndarray) -> np.ndarray:
    """(rows, n) bool -> (rows, ceil(n / 64)) uint64, packed with :func:`bsnn_hw.contract.pack_bits` (LSB first),
    zero padded to whole words."""
    rows, n = bits.shape
    packed = np.zeros((rows, contract.ceil_div(n, 64) * 8), dtype=np.uint8)
    packed[:, :contract.ceil_div(n, 8)] = contract.pack_bits(bits)
    return packed.view("<u8")


@numba.njit(nogil=True, cache=True, boundscheck=False)
def lif_steps(current, layout, leak_shift, clamp, lo, hi, theta, fires, subtract, fire_once, spikes, v, counts, first,
              scratch):
    """The membrane recurrence of one layer (docs/spec.md section 4), every sample and step, in one pass.

    ``current`` the drive of every step (any integer dtype, C-contiguous), laid out as ``layout`` says:
    ``TIME_MAJOR`` (T, B, n), ``SAMPLE_MAJOR`` (B, T, n), or ``EVERY_STEP`` (1, B, n), one drive for all T steps
    (a "pixel" network's first layer); ``leak_shift`` k, or -1 without a leak; ``clamp``: saturate to [lo, hi] (the
    caller skips it where it can never act); ``theta`` (n,) int64 thresholds; ``fires`` False for a "membrane"
    readout's last layer; ``subtract``: the reset subtracts theta, else sets V to 0; ``fire_once``: only a neuron's
    first firing is a spike. Writes ``spikes`` (T, B, n) bool, ``v`` (B, n) the final membranes (zeroed by the
    caller), ``counts`` (B, n) spikes (0/1 with fire-once), ``first`` (B, n) the step of the first firing or -1::

        V <- V - (V >>> k) + x_t;  V <- clamp(V, lo, hi);  fire = V > theta;  V <- V - theta (or 0) where fire

    ``scratch`` (4, n) signed integers wide enough for every membrane value and for T (int32 where the state fits
    it, else int64): one sample's membranes, counts, first steps and the thresholds live there while its T steps
    run, in L1 (narrower loads and stores than the callers' int64 counters)."""
    steps, batch, n = spikes.shape
    # Branch-free over the neurons of a step (LLVM vectorizes it): the fire mask f is 0 or 1, and the first step is
    # updated by arithmetic (-1 + f * [first < 0] * (t + 1)), not by a select, which kept the loop scalar.
    k = max(leak_shift, 0)
    leak = 1 if leak_shift >= 0 else 0
    once = 1 if fire_once else 0
    zero = 0 if subtract else 1
    vs, cs, fs, th = scratch[0], scratch[1], scratch[2], scratch[3]
    for j in range(n):
        th[j] = theta[j]
    for b in range(batch):
        for j in range(n):
            vs[j] = v[b, j]
            cs[j] = 0
            fs[j] = -1
        for t in range(steps):
            if layout == TIME_MAJOR:
                row = current[t, b]
            elif layout == SAMPLE_MAJOR:
                row = current[b, t]
            else:
                row = current[0, b]
            out = spikes[t, b].view(np.uint8)
            for j in range(n):
                x = np.int64(vs[j])
                x = x - leak * (x >> k) + np.int64(row[j])
                if clamp:
                    x = min(max(x, lo), hi)
                f = np.int64(x > th[j]) if fires else np.int64(0)
                x = x - f * (th[j] + zero * (x - th[j]))
                m = f & (np.int64(fs[j]) >> 63)       # 1 at the neuron's first firing (first < 0 until then)
                spike = f - once * (f - m)
                out[j] = spike
                cs[j] += spike
                fs[j] += m * (t + 1)
                vs[j] = x
        for j in range(n):
            v[b, j] = vs[j]
            counts[b, j] += cs[j]
            first[b, j] = fs[j]
