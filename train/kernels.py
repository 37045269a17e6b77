"""Compiled (Numba) CPU kernels of the trainer's fused LIF recurrence (:class:`bsnn_hw.train.layers.LIF`).

The torch path of ``layers._lif_run`` / ``layers._lif_backward`` runs each step as a dozen whole-block tensor
operations; on a CPU with a training batch (64 x 128 neurons per step) each is a few microseconds of work and as much
dispatch. These kernels run one neuron's T steps at a time in registers instead, with the same float32 operations in
the same order, so spikes, membranes and the gradient of the input current are identical to the torch path's; only
the threshold gradient, a sum over the batch, is added in another order (equal up to rounding). CUDA tensors keep the
torch path (it is what a CUDA graph captures).

Arrays are float32, C-contiguous, (batch, T, n) for per-step values and (n,) for thresholds. On/off arguments are
True or None (:func:`switch`), so that each combination compiles to its own branch-free, vectorized loop.

:func:`pack_spikes` checks and packs a binary layer's input for the popcount forward (``layers._BinaryProduct``).
"""
from __future__ import annotations

import numba
import numpy as np

F32 = np.float32


def switch(on: bool):
    """A kernel's on/off argument: True, or None for off. Numba compiles one specialization per argument type and
    prunes ``if x is None`` branches at compile time, so every combination of switches gets a loop free of them,
    which LLVM vectorizes (with run-time bool flags the LIF loops ran 7x slower)."""
    return True if on else None


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def lif_forward(current, th, th_sub, leak, exact, lo, hi, subtract, fire_once, keep, out, last, pre, shared):
    """``layers._lif_run`` for one float32 batch: ``current`` (B, T, n), or (B, 1, n) with ``shared`` for one current
    that every step shares (a "pixel" first layer); ``leak`` the factor 2^-k, or None for none; ``exact``: floor the
    leak; ``th`` the thresholds the membrane is compared with, or None for a layer that does not fire; ``th_sub``
    what a subtract reset takes away (floor(th) when exact); ``keep`` (B, n) the dropout mask (0/1) the output spikes
    are multiplied by, or None; fills ``out`` (spikes as 0/1), ``last`` (the final membranes) and ``pre`` (the
    membranes before saturation; None: not recorded). ``exact``, ``subtract``, ``fire_once``, ``shared``: True or
    None (:func:`switch`). Per sample, step by step, the neuron loop innermost and free of branches (selects), so
    that it vectorizes."""
    batch, steps, n = out.shape
    zero = F32(0.0)
    one = F32(1.0)
    for b in range(batch):
        v = last[b]
        fired = np.zeros(n, np.bool_)
        for j in range(n):
            v[j] = zero
        for t in range(steps):
            if shared is None:
                cur = current[b, t]
            else:
                cur = current[b, 0]
            for j in range(n):
                x = v[j]
                if leak is not None:
                    tmp = x * leak
                    if exact is not None:
                        tmp = F32(np.floor(tmp))
                    x = x - tmp
                p = x + cur[j]
                if pre is not None:
                    pre[b, t, j] = p
                x = lo if p < lo else (hi if p > hi else p)
                if th is None:
                    out[b, t, j] = zero
                else:
                    s = x > th[j]
                    if keep is None:
                        kp = one
                    else:
                        kp = keep[b, j]
                    if fire_once is not None:
                        out[b, t, j] = (one if s and not fired[j] else zero) * kp
                        fired[j] = fired[j] or s
                        if subtract is not None:
                            x = x - th_sub[j] if s else x
                        else:
                            x = zero if s else x
                    else:
                        out[b, t, j] = (one if s else zero) * kp
                        if subtract is not None:
                            x = x - th_sub[j] if s else x
                        else:
                            x = x * zero if s else x
                v[j] = x


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def lif_backward(pre, keep, g_out, g_last, th, lo, hi, c, slope, subtract, fire_once, g_cur, acc_u, acc_r):
    """``layers._lif_backward`` for one float32 batch: fills ``g_cur`` (the gradient of the input current) and
    accumulates per neuron ``acc_u`` (sum of a * V, the surrogate's threshold term) and ``acc_r`` (sum of the membrane
    gradient where a subtract reset acted), in float64 (both None: no threshold gradient wanted). The spikes are
    recomputed from the membranes (S_t = clamp(pre_t) > theta, as the forward pass decided them); ``th`` None: the
    layer does not fire; ``keep`` (B, n) the dropout mask the forward pass applied to its output (its gradient passes
    only where kept), or None. ``g_out`` (the spikes' gradient; None when none flows in or the layer does not fire)
    and ``g_last`` may be None; ``c`` the leak's straight-through factor 1 - 2^-k; ``subtract``, ``fire_once``: True
    or None (:func:`switch`). Per sample, steps in reverse, the neuron loop innermost."""
    batch, steps, n = pre.shape
    zero = F32(0.0)
    one = F32(1.0)
    gv = np.zeros(n, np.float32)
    first = np.zeros(n, np.int64)                      # fire-once: the first firing; no gradient after it
    for b in range(batch):
        for j in range(n):
            if g_last is None:
                gv[j] = zero
            else:
                gv[j] = g_last[b, j]
            first[j] = steps
        if th is not None:
            if fire_once is not None:
                for t in range(steps - 1, -1, -1):
                    for j in range(n):
                        p = pre[b, t, j]
                        u = lo if p < lo else (hi if p > hi else p)
                        first[j] = t if u > th[j] else first[j]
        for t in range(steps - 1, -1, -1):
            for j in range(n):
                p = pre[b, t, j]
                u = lo if p < lo else (hi if p > hi else p)
                g = gv[j]
                if th is not None:
                    thj = th[j]
                    s = one if u > thj else zero
                    if subtract is not None:
                        if acc_r is not None:
                            acc_r[j] += g * s
                    else:
                        g = g * (one - s)
                    if g_out is not None:
                        d = abs(u - thj) * slope + thj
                        d = d * d
                        if keep is None:
                            go = g_out[b, t, j]
                        else:
                            go = g_out[b, t, j] * (one if keep[b, j] else zero)    # as torch's g * keep
                        a = go * thj / d
                        if fire_once is not None:
                            a = zero if t > first[j] else a
                        if acc_u is not None:
                            acc_u[j] += a * u
                        g = g + a
                g = g if u == p else zero
                g_cur[b, t, j] = g
                gv[j] = g * c


# ---------------------------------------------------------------------------------------------------------------
# The binary layers' products with 0/1 spikes (layers._BinaryProduct)


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def pack_signs(w, planes):
    """The weight bits [w > 0] of float ``w`` (n_out, n) (the contract's bit rule, binarize's sign) into ``planes``
    (1, ceil(n / 64), n_out) uint64: ``bsnn_hw.kernels.pack_planes((w > 0), 1)`` in one pass, without its bool and
    int64 copies of the weights."""
    n_out, n = w.shape
    for j in range(n_out):
        for k in range(planes.shape[1]):
            base = 64 * k
            acc = np.uint64(0)
            for b in range(min(64, n - base)):
                acc |= np.uint64(w[j, base + b] > 0) << np.uint64(b)
            planes[0, k, j] = acc


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def pack_spikes(s, words):
    """Pack (N, n) float32 ``s`` into ``words`` (N, ceil(n / 64)) uint64, bit b of word w = [s[:, 64 w + b] == 1]
    (LSB first, as ``bsnn_hw.kernels.pack_words64``; zero padded). True iff every value of ``s`` is 0 or 1 (a spike
    train): only then are the words the whole of ``s``."""
    n_rows, n = s.shape
    bad = 0
    for r in range(n_rows):
        for w in range(words.shape[1]):
            base = 64 * w
            acc = np.uint64(0)
            for b in range(min(64, n - base)):
                v = s[r, base + b]
                acc |= np.uint64(v == F32(1)) << np.uint64(b)
                bad |= (v != F32(0)) & (v != F32(1))
            words[r, w] = acc
    return bad == 0


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def spike_patterns(words, n, pats):
    """The 8-row column patterns of packed spikes: ``pats[c, i]`` (uint8) has bit k = spike ``(8 c + k, i)`` of the
    rows ``words`` (N, ceil(n / 64)) uint64 packed by :func:`pack_spikes`. ``pats`` is (C, 8 * ceil(n / 8)) with
    C >= ceil(N / 8): chunks past the rows are silent (pattern 0). Each (chunk, byte) is one 8 x 8 bit-matrix
    transpose (Hacker's Delight 7-3)."""
    n_rows = words.shape[0]
    out = pats.view(np.uint64)                                 # byte i of out[c, b] = pats[c, 8 b + i]
    for c in range(pats.shape[0]):
        for byte in range((n + 7) // 8):
            word, shift = byte >> 3, np.uint64(8 * (byte & 7))
            x = np.uint64(0)                                   # byte k of x: row 8c + k's 8 spikes
            for k in range(min(8, n_rows - 8 * c)):
                x |= ((words[8 * c + k, word] >> shift) & np.uint64(0xFF)) << np.uint64(8 * k)
            t = (x ^ (x >> np.uint64(7))) & np.uint64(0x00AA00AA00AA00AA)
            x = x ^ t ^ (t << np.uint64(7))
            t = (x ^ (x >> np.uint64(14))) & np.uint64(0x0000CCCC0000CCCC)
            x = x ^ t ^ (t << np.uint64(14))
            t = (x ^ (x >> np.uint64(28))) & np.uint64(0x00000000F0F0F0F0)
            x = x ^ t ^ (t << np.uint64(28))
            out[c, byte] = x


GT_BLOCK = 64          # gradient columns (output neurons) per block of spike_weight_grad: its tables fill ~L2/2


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def _subset_sums(tab, g, r0, n_rows, j0, jw):
    """``tab`` (256, GT_BLOCK): row p = sum of g[r0 + k, j0 : j0 + jw] over the bits k of p (k < n_rows)."""
    for j in range(jw):
        tab[0, j] = F32(0.0)
    for k in range(8):
        half = 1 << k
        if k < n_rows:
            gr = g[r0 + k, j0:j0 + jw]
            for p in range(half):
                src, dst = tab[p], tab[half + p]
                for j in range(jw):
                    dst[j] = src[j] + gr[j]


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def spike_weight_grad(g, pats, n, b0, b1, out):
    """A binary layer's weight gradient ``g^T s`` for 0/1 spikes ``s`` (N, n), given as :func:`spike_patterns` with
    a multiple of 4 chunks (the rows padded with silent ones): fills ``out[j, :n]`` for the columns j of ``g`` (N, M)
    float32 in blocks ``b0 .. b1 - 1`` of :data:`GT_BLOCK`.

    Method of four Russians: per 8 rows, a table of the 256 subset sums of g's rows; then every input adds the
    table row its spike pattern selects, four tables (32 rows) at a time. 784 x 2,048 x 128: 34 M adds against the
    dense product's 205 M multiply-adds, in about half its time (the lookups' loads from the L2-resident tables
    bound it). Sums are added in another order than BLAS's (equal up to float32 rounding), the same for any split
    of the blocks."""
    n_rows, m = g.shape
    chunks = pats.shape[0]
    tabs = np.zeros((4, 256, GT_BLOCK), F32)
    acc = np.empty((n, GT_BLOCK), F32)
    for blk in range(b0, b1):
        j0 = blk * GT_BLOCK
        jw = min(GT_BLOCK, m - j0)
        if jw < GT_BLOCK:
            tabs[:] = F32(0.0)                                  # the lookups read whole rows
        acc[:] = F32(0.0)
        for c0 in range(0, chunks, 4):
            for q in range(4):                                  # a chunk past the rows: row 0 only (= 0)
                _subset_sums(tabs[q], g, 8 * (c0 + q), n_rows - 8 * (c0 + q), j0, jw)
            for i in range(n):
                a = tabs[0, pats[c0, i]]
                b = tabs[1, pats[c0 + 1, i]]
                c = tabs[2, pats[c0 + 2, i]]
                d = tabs[3, pats[c0 + 3, i]]
                o = acc[i]
                for j in range(GT_BLOCK):
                    o[j] += (a[j] + b[j]) + (c[j] + d[j])
        for j in range(jw):
            for i in range(n):
                out[j0 + j, i] = acc[i, j]
