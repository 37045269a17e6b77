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
