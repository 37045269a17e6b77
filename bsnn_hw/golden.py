"""The golden model: the numeric contract (docs/spec.md), vectorized over batch and steps.

Layer l at step t, for every neuron j (all integers, exact)::

    I_t[j] = 2 * popcount(s_t & B[j]) - popcount(s_t)
    V_t[j] = sat_M(V_{t-1}[j] - leak(V_{t-1}[j]) + I_t[j])        leak(v) = v >>> k, or 0 without a leak
    fire   = V_t[j] > theta[j]                                     (never, for a "membrane" readout's last layer)
    reset  : V_t[j] -= theta[j]  ("subtract")   or   V_t[j] = 0  ("zero"),  where fire
    out    = fire, or fire and no earlier spike in the sample when fire_once

A layer's input at step t is the previous layer's output at step t, so the model runs layer by layer: the synaptic
input of all T steps is one product (``method="matmul"``: a float32 matrix product, exact because every partial sum
is an integer below 2^24; ``method="popcount"``: the XNOR-popcount of the contract on packed bits, kept as the
cross-check), and only the membrane recurrence loops over t.

Exactness of the fast path: the membrane is held in the narrowest of int16/int32/int64 that provably holds every
intermediate value. |V_t| <= min(2^(M-1), (t+1) * n_in) because the leak and both resets never increase |V|, so
``V - leak + I`` stays within that bound plus n_in; when T * n_in <= 2^(M-1) - 1 the clamp can never act and is skipped.
tests/test_golden.py checks both methods against an independent per-neuron loop (tests/reference.py).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import contract
from .network import Network

METHODS = ("matmul", "popcount")
_BLOCK_ELEMENTS = 1 << 22        # rows per block of the float32 product: 16 MiB of float32 at most
_CHUNK_ELEMENTS = 1 << 25        # samples per chunk of simulate(): about 32 Mi spikes of the widest layer


@dataclasses.dataclass
class Result:
    """What :func:`simulate` returns. Lists are indexed by layer.

    counts[l]      (batch, n_out_l) int64  spikes of layer l over the T steps
    membrane[l]    (batch, n_out_l) int64  membrane after the last step (after reset)
    first_step[l]  (batch, n_out_l) int64  step of the first output spike, -1 if none
    prediction     (batch,) int64          the readout's class
    spikes[l]      (batch, T, n_out_l) bool, only when simulate(..., record=True); else None
    """
    counts: list
    membrane: list
    first_step: list
    prediction: np.ndarray
    spikes: list | None = None


def _state_dtype(membrane_bits: int, n_in: int, timesteps: int):
    """The narrowest signed integer type that holds every intermediate membrane value (see the module docstring).
    ``n_in``: a bound on |I| in one step (the fan-in for 1-bit weights)."""
    bound = min(1 << (membrane_bits - 1), timesteps * n_in) + n_in
    for dtype in (np.int16, np.int32):
        if bound <= np.iinfo(dtype).max:
            return dtype
    return np.int64


def _layer_input(x: np.ndarray, layer, method: str, dtype) -> np.ndarray:
    """The synaptic input of a dense or conv2d layer for every (step, sample): (T, B, n_in) bool -> (T, B, n_out)."""
    if layer.kind == "dense" and layer.weight_bits == 1:
        return _synaptic_input(x, layer.weights, method, dtype)
    w = contract.weight_values(layer.weights, layer.weight_bits).reshape(layer.weights.shape[0], -1)   # (rows, fan_in)
    if layer.kind == "dense":
        rows, n_pos = x, 1
    else:
        rows = _im2col(x, layer)                                       # (T, B, positions, fan_in)
        n_pos = rows.shape[2]
    t, b = x.shape[:2]
    rows = rows.reshape(-1, w.shape[1])
    if method == "matmul" and layer.max_abs_current < 1 << 24:
        # float32 is exact: every partial sum is an integer of magnitude <= fan_in x max|w| < 2^24
        out = _blocked_product(rows, w.T.astype(np.float32), dtype)
    else:   # "popcount" (the cross-check) and sums too large for float32: exact int64 arithmetic
        out = (rows.astype(np.int64) @ w.T).astype(dtype)
    return out.reshape(t, b, n_pos * w.shape[0])                      # position-major: channel fastest


def _im2col(x: np.ndarray, layer) -> np.ndarray:
    """(T, B, H*W*C) bool spike maps -> (T, B, H_out*W_out, k*k*C) windows in (ky, kx, c) order; zero padding."""
    t, b = x.shape[:2]
    h, w, c = layer.in_shape
    k, s, p = layer.kernel, layer.stride, layer.padding
    maps = x.reshape(t, b, h, w, c)
    if p:
        maps = np.pad(maps, ((0, 0), (0, 0), (p, p), (p, p), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(maps, (k, k), axis=(2, 3))   # (T, B, H', W', C, k, k)
    win = win[:, :, ::s, ::s]
    ho, wo = layer.out_shape[:2]
    win = win[:, :, :ho, :wo].transpose(0, 1, 2, 3, 5, 6, 4)                      # (T, B, ho, wo, k, k, C)
    return np.ascontiguousarray(win).reshape(t, b, ho * wo, k * k * c)


def _pool(x: np.ndarray, layer) -> np.ndarray:
    """OR pooling: (T, B, H*W*C) bool -> (T, B, H_out*W_out*C) bool."""
    t, b = x.shape[:2]
    h, w, c = layer.in_shape
    n = layer.window
    ho, wo = layer.out_shape[:2]
    maps = x.reshape(t, b, h, w, c)[:, :, :ho * n, :wo * n]
    return maps.reshape(t, b, ho, n, wo, n, c).any(axis=(3, 5)).reshape(t, b, ho * wo * c)


def _blocked_product(rows: np.ndarray, w: np.ndarray, dtype) -> np.ndarray:
    """rows (N, K) bool/0-1 x w (K, n_out) float32 -> (N, n_out) ``dtype``, converting rows to float32 in row blocks
    that stay in cache, each followed by its product (exact integers when every partial sum is below 2^24, so the
    cast to ``dtype`` is exact)."""
    w = np.ascontiguousarray(w)
    n_rows, k = rows.shape
    out = np.empty((n_rows, w.shape[1]), dtype=dtype)
    block = max(1, min(max(n_rows, 1), _BLOCK_ELEMENTS // max(k, 1)))
    buf = np.empty((block, k), dtype=np.float32)
    for i in range(0, n_rows, block):
        n = min(block, n_rows - i)
        np.copyto(buf[:n], rows[i:i + n])
        np.matmul(buf[:n], w, out=out[i:i + n], casting="unsafe")
    return out


def _synaptic_input(spikes: np.ndarray, weights: np.ndarray, method: str, dtype=np.int64) -> np.ndarray:
    """I for every (step, sample): (T, B, n_in) bool x (n_out, n_in) bool -> (T, B, n_out) ``dtype``."""
    t, b, n_in = spikes.shape
    n_out = weights.shape[0]
    if method == "matmul":
        # float32 is exact: every partial sum is an integer of magnitude <= n_in < 2^24. The bool -> float32
        # conversion runs in row blocks that stay in cache, each followed by its product.
        if n_in >= 1 << 24:
            raise ValueError(f"n_in = {n_in} is too large for the float32 path; use method='popcount'")
        w = contract.bit_to_weight(weights).astype(np.float32).T                # (n_in, n_out)
        return _blocked_product(spikes.reshape(t * b, n_in), w, dtype).reshape(t, b, n_out)
    if method == "popcount":
        # Bits packed LSB-first (the contract's order) into bytes, padded with zeros to whole 64-bit words.
        nb = contract.ceil_div(n_in, 64) * 8
        s = np.zeros((t, b, nb), dtype=np.uint8)
        s[..., :contract.ceil_div(n_in, 8)] = contract.pack_bits(spikes)
        wp = np.zeros((n_out, nb), dtype=np.uint8)
        wp[:, :contract.ceil_div(n_in, 8)] = contract.pack_bits(weights)
        s, wp = s.view(np.uint64), wp.view(np.uint64)
        active = np.bitwise_count(s).sum(-1, dtype=np.int64)                     # popcount(s_t)
        out = np.empty((t, b, n_out), dtype=dtype)
        for j in range(n_out):
            agree = np.bitwise_count(s & wp[j]).sum(-1, dtype=np.int64)          # popcount(s_t & B[j])
            out[:, :, j] = 2 * agree - active
        return out
    raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, not {method!r}")


def _run_layer(current: np.ndarray, layer, fires: bool, timesteps: int, n_in: int):
    """The membrane recurrence of one layer, in place. ``current`` (T, B, n_out) in the state dtype.
    Returns (spikes (T, B, n_out) bool, counts, membrane, first step (each (B, n_out) int64))."""
    steps, batch, n_out = current.shape
    dtype = current.dtype
    lo, hi = contract.membrane_range(layer.membrane_bits)
    clamp = timesteps * n_in > hi          # |V| <= T * max|I| (n_in here): below that the clamp never acts
    if clamp:
        info = np.iinfo(dtype)
        lo, hi = dtype.type(max(lo, info.min)), dtype.type(min(hi, info.max))
    k = layer.leak_shift
    v = np.zeros((batch, n_out), dtype=dtype)
    tmp = np.empty_like(v)
    out = np.zeros((steps, batch, n_out), dtype=bool)
    counts = np.zeros((batch, n_out), dtype=np.int32)
    seen = np.zeros((batch, n_out), dtype=bool)          # spiked at or before the current step
    before = np.zeros((batch, n_out), dtype=np.int32)    # steps before the first spike
    fired = None
    if fires:
        # A threshold beyond the dtype's range can never be crossed (|V| stays below it): cap it to fit the dtype.
        theta = np.minimum(layer.neuron_threshold, np.iinfo(dtype).max).astype(dtype)
        fire = np.empty((batch, n_out), dtype=bool)
        fired = np.zeros((batch, n_out), dtype=bool) if layer.fire_once else None
        subtract = layer.reset == "subtract"
    # Masked ufuncs (where=) are slow: resets are written as products with the 0/1 fire mask instead.
    for t in range(steps):
        if k is not None:
            np.right_shift(v, k, out=tmp)      # arithmetic shift of a signed integer: rounds toward minus infinity
            v -= tmp
        v += current[t]
        if clamp:
            np.minimum(v, hi, out=v)
            np.maximum(v, lo, out=v)
        if not fires:
            continue
        np.greater(v, theta, out=fire)
        np.logical_or(seen, fire, out=seen)
        before += ~seen
        if subtract:
            np.multiply(fire, theta, out=tmp)  # theta where fire, else 0
            v -= tmp
        else:
            np.logical_not(fire, out=out[t])   # (out[t] is scratch here; it is written below)
            v *= out[t]
        if fired is None:
            out[t] = fire
            counts += fire
        else:
            np.greater(fire, fired, out=out[t])      # fire and not fired before
            fired |= fire
    if fired is not None:
        counts = seen.astype(np.int32)               # fire-once: one spike per neuron that ever fired
    # (fire-once does not move the first spike: it is the first firing either way)
    first = np.where(seen, before, -1).astype(np.int64)
    return out, counts.astype(np.int64), v.astype(np.int64), first


def memory_needed(net: Network, batch: int, record: bool = False) -> int:
    """Bytes that encoding and simulating ``batch`` samples takes at its peak (an upper estimate): the spike trains
    (1 byte per input per step), and per chunk of samples the time-major copy, the synaptic currents (8 bytes) and
    the float32 product's operands of the widest layer; with ``record``, every layer's spikes."""
    steps, widest = net.timesteps, max(net.sizes)
    chunk = min(batch, max(1, _CHUNK_ELEMENTS // (steps * widest)))
    need = batch * steps * net.n_in + chunk * steps * widest * (1 + 8 + 4 + 4)
    if record:
        need += batch * steps * sum(net.sizes[1:])
    return need


def check_memory_for(net: Network, batch: int, record: bool = False) -> None:
    """Refuse up front (``bsnn_hw.io.MemoryLimit``, naming the bytes) a run that cannot fit in memory."""
    from .io import check_memory
    check_memory(memory_needed(net, batch, record), f"simulating {batch} sample(s) of a {'-'.join(map(str, net.sizes))} "
                 f"network for T = {net.timesteps} steps")


def simulate(net: Network, spikes, record: bool = False, method: str = "matmul") -> Result:
    """Run ``net`` on spike trains ``spikes`` (bool (batch, T, n_in)); see :class:`Result`.

    ``method`` chooses how the synaptic input is computed ("matmul" or "popcount"); both are exact and agree bit
    for bit."""
    spikes = np.asarray(spikes)
    if spikes.dtype != bool:
        raise TypeError(f"spikes must be a bool array, not {spikes.dtype}")
    if spikes.ndim != 3 or spikes.shape[1:] != (net.timesteps, net.n_in):
        raise ValueError(f"spikes must have shape (batch, {net.timesteps}, {net.n_in}), not {spikes.shape}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, not {method!r}")
    check_memory_for(net, spikes.shape[0], record)
    steps = net.timesteps
    # Samples are independent: long batches run in chunks, which bounds memory and keeps the working set in cache.
    widest = max(net.sizes)
    chunk = max(1, _CHUNK_ELEMENTS // (steps * widest))
    parts = [_simulate_chunk(net, spikes[i:i + chunk], record, method)
             for i in range(0, max(spikes.shape[0], 1), chunk)]
    if len(parts) == 1:
        counts, membranes, firsts, recorded = parts[0]
    else:
        counts, membranes, firsts, recorded = (
            [np.concatenate([p[k][li] for p in parts]) for li in range(len(net.layers))] if parts[0][k] is not None
            else None for k in range(4))
    return Result(counts, membranes, firsts, readout(net.readout, counts[-1], membranes[-1], firsts[-1], steps),
                  recorded if record else None)


def _simulate_chunk(net: Network, spikes: np.ndarray, record: bool, method: str):
    steps = net.timesteps
    counts, membranes, firsts, recorded = [], [], [], []
    x = np.ascontiguousarray(spikes.transpose(1, 0, 2))          # time-major (T, B, n): x[t] is contiguous
    for li, layer in enumerate(net.layers):
        if not layer.has_neurons:                     # OR pooling: stateless; its "membrane" is 0
            out = _pool(x, layer)
            seen = out.any(axis=0)
            counts.append(out.sum(axis=0, dtype=np.int64))
            membranes.append(np.zeros(out.shape[1:], dtype=np.int64))
            firsts.append(np.where(seen, out.argmax(axis=0), -1).astype(np.int64))
            if record:
                recorded.append(out.transpose(1, 0, 2))
            x = out
            continue
        bound = layer.max_abs_current
        dtype = _state_dtype(layer.membrane_bits, bound, steps)
        current = _layer_input(x, layer, method, dtype)
        out, count, v, first = _run_layer(current, layer, net.layer_fires(li), steps, bound)
        counts.append(count)
        membranes.append(v)
        firsts.append(first)
        if record:
            recorded.append(out.transpose(1, 0, 2))
        x = out
    return counts, membranes, firsts, (recorded if record else None)


def readout(kind: str, counts: np.ndarray, membrane: np.ndarray, first_step: np.ndarray, timesteps: int) -> np.ndarray:
    """The class of every sample from the last layer; np.argmax breaks ties toward the lowest index."""
    if kind == "count":
        return np.argmax(counts, axis=1)
    if kind == "membrane":
        return np.argmax(membrane, axis=1)
    if kind == "first":
        # Earliest step wins, lowest index among ties; no spike at all falls back to the membrane argmax.
        key = np.where(first_step < 0, timesteps, first_step)
        earliest = np.argmin(key, axis=1)
        none = (first_step < 0).all(axis=1)
        return np.where(none, np.argmax(membrane, axis=1), earliest)
    raise ValueError(f"readout must be one of {', '.join(contract.READOUTS)}, not {kind!r}")


def decision_step(net: Network, result: Result) -> np.ndarray:
    """The step at which a "first" readout is decided (docs/spec.md section 9): the earliest step in which an output
    neuron spikes, or T - 1 when none does (the fallback needs the final membranes). (batch,) int64."""
    first = result.first_step[-1]
    spiked = first >= 0
    earliest = np.where(spiked, first, net.timesteps).min(axis=1)
    return np.where(spiked.any(axis=1), earliest, net.timesteps - 1).astype(np.int64)


def decide(net: Network, spikes, record: bool = False) -> tuple[Result, np.ndarray]:
    """The early decision (docs/spec.md section 9): run ``net`` (readout "first") and, per sample, stop after its
    decision step d. Returns (the Result of the state after step d - counts, membranes and first-spike steps of
    steps 0..d, the class - and d). The class always equals the full run's; counts and membranes are those a design
    that stops at d holds."""
    if net.readout != "first":
        raise ValueError(f"the early decision needs the 'first' readout, not {net.readout!r}")
    spikes = np.asarray(spikes, dtype=bool)
    full = simulate(net, spikes, record=record)
    d = decision_step(net, full)
    n_layers = len(net.layers)
    counts = [c.copy() for c in full.counts]
    membrane = [v.copy() for v in full.membrane]
    first = [f.copy() for f in full.first_step]
    recorded = [s.copy() for s in full.spikes] if record else None
    for steps in np.unique(d):
        steps = int(steps)
        if steps == net.timesteps - 1:
            continue                       # ran to the end: the full run's state
        idx = np.flatnonzero(d == steps)
        short = Network(net.layers, steps + 1, net.readout, "direct")
        part = simulate(short, spikes[idx, :steps + 1], record=False)
        for li in range(n_layers):
            counts[li][idx] = part.counts[li]
            membrane[li][idx] = part.membrane[li]
            first[li][idx] = part.first_step[li]
            if record:
                recorded[li][idx, steps + 1:] = False      # the steps after d never run
    return Result(counts, membrane, first, full.prediction, recorded), d


def run(net: Network, x, seed=None, record: bool = False, method: str = "matmul") -> Result:
    """Encode uint8 inputs with the network's encoding (or take spike trains for "direct") and simulate."""
    batch = np.shape(x)[0] if np.ndim(x) >= 2 else 1
    check_memory_for(net, batch, record)
    return simulate(net, net.encode(x, seed), record=record, method=method)
