"""Compiled (Numba) CPU kernels of the trainer's fused LIF recurrence (:class:`bsnn_hw.train.layers.LIF`).

The torch path of ``layers._lif_run`` / ``layers._lif_backward`` runs each step as a dozen whole-block tensor
operations; on a CPU with a training batch (64 x 128 neurons per step) each is a few microseconds of work and as much
dispatch. These kernels run one neuron's T steps at a time in registers instead, with the same float32 operations in
the same order, so spikes, membranes and the gradient of the input current are identical to the torch path's; only
the threshold gradient, a sum over the batch, is added in another order (equal up to rounding). CUDA tensors keep the
torch path (it is what a CUDA graph captures).

Arrays are float32, C-contiguous, (batch, T, n) for per-step values and (n,) for thresholds.
"""
from __future__ import annotations

import numba
import numpy as np

F32 = np.float32


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def lif_forward(current, th, th_sub, leak, exact, lo, hi, fires, subtract, fire_once, keep, out, last, pre, record):
    """``layers._lif_run`` for one float32 batch: ``current`` (B, T, n), or (B, 1, n) for one current that every
    step shares (a "pixel" first layer); ``leak`` the factor 2^-k, or 0 for none; ``exact``: floor the
    leak; ``th`` the thresholds the membrane is compared with, ``th_sub`` what a subtract reset takes away (floor(th)
    when exact); ``keep`` (B, n) the dropout mask (0/1) the output spikes are multiplied by, or empty; fills ``out``
    (spikes as 0/1), ``last`` (the final membranes) and, with
    ``record``, ``pre`` (the membranes before saturation). Per sample, step by step, the neuron loop innermost and
    free of branches (selects), so that it vectorizes."""
    batch, steps, n = out.shape
    shared = current.shape[1] == 1
    masked = keep.size > 0
    zero = F32(0.0)
    one = F32(1.0)
    use_leak = leak != zero
    for b in range(batch):
        v = last[b]
        fired = np.zeros(n, np.bool_)
        for j in range(n):
            v[j] = zero
        for t in range(steps):
            cur = current[b, 0 if shared else t]
            if not fires:
                for j in range(n):
                    out[b, t, j] = zero
            for j in range(n):
                x = v[j]
                if use_leak:
                    tmp = x * leak
                    if exact:
                        tmp = F32(np.floor(tmp))
                    x = x - tmp
                p = x + cur[j]
                if record:
                    pre[b, t, j] = p
                x = lo if p < lo else (hi if p > hi else p)
                if fires:
                    s = x > th[j]
                    kp = keep[b, j] if masked else one
                    if fire_once:
                        out[b, t, j] = (one if s and not fired[j] else zero) * kp
                        fired[j] = fired[j] or s
                        x = (x - th_sub[j] if subtract else zero) if s else x
                    else:
                        out[b, t, j] = (one if s else zero) * kp
                        x = (x - th_sub[j] if subtract else x * zero) if s else x
                v[j] = x


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def lif_backward(pre, keep, g_out, g_last, th, lo, hi, c, slope, fires, subtract, fire_once, spike_grad, want_theta,
                 g_cur, acc_u, acc_r):
    """``layers._lif_backward`` for one float32 batch: fills ``g_cur`` (the gradient of the input current) and, with
    ``want_theta``, accumulates per neuron ``acc_u`` (sum of a * V, the surrogate's threshold term) and ``acc_r``
    (sum of the membrane gradient where a subtract reset acted), in float64. The spikes are recomputed from the
    membranes (S_t = clamp(pre_t) > theta, as the forward pass decided them); ``keep`` (B, n) the dropout mask the
    forward pass applied to its output (its gradient passes only where kept), or empty. ``g_out`` and ``g_last`` may
    be empty (size 0) when no gradient flows in; ``c`` the leak's straight-through factor 1 - 2^-k. Per sample, steps
    in reverse, the neuron loop innermost."""
    batch, steps, n = pre.shape
    zero = F32(0.0)
    one = F32(1.0)
    has_g_out = g_out.size > 0
    has_g_last = g_last.size > 0
    masked = keep.size > 0
    spikes = fires and spike_grad and has_g_out
    gv = np.zeros(n, np.float32)
    first = np.zeros(n, np.int64)                      # fire-once: the first firing; no gradient after it
    for b in range(batch):
        for j in range(n):
            gv[j] = g_last[b, j] if has_g_last else zero
            first[j] = steps
        if fires and fire_once:
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
                if fires:
                    thj = th[j]
                    s = one if u > thj else zero
                    if want_theta and subtract:
                        acc_r[j] += g * s
                    if not subtract:
                        g = g * (one - s)
                    if spikes:
                        d = abs(u - thj) * slope + thj
                        d = d * d
                        go = g_out[b, t, j] * keep[b, j] if masked else g_out[b, t, j]
                        a = go * thj / d
                        if fire_once:
                            a = zero if t > first[j] else a
                        if want_theta:
                            acc_u[j] += a * u
                        g = g + a
                g = g if u == p else zero
                g_cur[b, t, j] = g
                gv[j] = g * c

