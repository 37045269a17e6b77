"""The golden model: the numeric contract (docs/spec.md), vectorized over batch and steps.

Layer l at step t, for every neuron j (all integers, exact)::

    I_t[j] = 2 * popcount(s_t & B[j]) - popcount(s_t)
    V_t[j] = sat_M(V_{t-1}[j] - leak(V_{t-1}[j]) + x_t[j])        leak(v) = v >>> k, or 0 without a leak
             x_t[j] = I_t[j], or with a per-step affine (contract v3) (a[t, j] I_t[j] + b[t, j]) >>> F
    fire   = V_t[j] > theta[j]                                     (never, for a "membrane" readout's last layer)
    reset  : V_t[j] -= theta[j]  ("subtract")   or   V_t[j] = 0  ("zero"),  where fire
    out    = fire, or fire and no earlier spike in the sample when fire_once

A layer's input at step t is the previous layer's output at step t, so the model runs layer by layer: the synaptic
input of all T steps and all samples is one product per layer (every (step, sample) row is independent), and only the
membrane recurrence loops over t. ``method`` chooses how that product is computed; every method is exact and they
agree bit for bit (tests/test_golden.py checks each against an independent per-neuron loop, tests/reference.py):

- ``"matmul"``: a float32 matrix product of the spikes and the weights, exact because every partial sum is an integer
  of magnitude below 2^24 (int64 when fan-in x max|w| is not).
- ``"popcount"``: the contract's AND-popcount on spikes and weight bits packed into 64-bit words, compiled
  (:mod:`bsnn_hw.kernels`): I = 2 popcount(s & B) - popcount(s) for 1-bit weights, and for k-bit weights
  I = sum_b 2^b popcount(s & U_b) + lo popcount(s) over the bit planes U_b of u = w - lo (lo = min w). Integer
  throughout: exact for every layer kind and width.
- ``"packed"``: with w = g u + lo (u = the bit and g = 2, lo = -1 for 1-bit weights; u = w - min w, g = 1 for k-bit),
  I = g (s . u) + lo popcount(s), and the dot products s . u >= 0 are packed f to a float32 column, each in its own
  b-bit field of the mantissa (b = bit_length(fan_in x max u), f = 24 // b >= 2; popcount(s) rides in one more
  field). Every partial sum of a column is a non-negative integer below 2^(f b) <= 2^24, so the product is exact in
  any summation order; integer shifts and masks cut the fields out. A 784-input layer packs two neurons per column:
  half the multiply-adds of "matmul". Fields too wide for two per column fall back to the exact int64 product.
- ``"auto"`` (the default) picks per layer what measured fastest for the layer's shape (docs/golden.md; 2 AVX2
  cores): "popcount" for weights of 1 to 4 bits in dense layers and in conv layers of fan-in >= 128, else "packed"
  where two fields fit and the fan-in is at least 256, else "matmul". ``_layer_method`` holds the rule.

The membrane recurrence (:func:`bsnn_hw.kernels.lif_steps`) runs the T steps of each sample in one compiled pass.
Below ``KERNEL_MIN_WORK`` both stay in NumPy (the recurrence one whole-array operation per step; "popcount" the exact
int64 product), so that a process simulating a few samples loads no JIT.

Exactness of the recurrence: the membrane is held in the narrowest of int16/int32/int64 that provably holds every
intermediate value. |V_t| <= min(2^(M-1), (t+1) * n_in) because the leak and both resets never increase |V|, so
``V - leak + I`` stays within that bound plus n_in; when T * n_in <= 2^(M-1) - 1 the clamp can never act and is skipped.
"""
from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

from . import contract
from .network import Network, truncate

METHODS = ("auto", "packed", "matmul", "popcount")
_BLOCK_ELEMENTS = 1 << 22        # rows per block of the float32 product: 16 MiB of float32 at most
_PACKED_BLOCK_ELEMENTS = 1 << 20  # rows per block of the packed product: its int32 fields stay in the L2 cache
_MANTISSA = 24                   # every integer of magnitude <= 2^24 is exact in float32
_PARALLEL_MIN_BATCH = 64         # samples from which simulate() runs parts of the batch on several threads
_POPCOUNT_MAX_BITS = 4           # "auto": the popcount kernel for weights of at most this many bits (bit planes) ...
_POPCOUNT_MIN_CONV_FAN_IN = 128  # ... in dense layers, and in conv layers of at least this fan-in
_PACKED_MIN_FAN_IN = 256         # "auto": the packed product from this fan-in up
_CHUNK_ELEMENTS = 1 << 25        # samples per chunk of simulate(): about 32 Mi spikes of the widest layer
# From this much work (neuron-steps of a recurrence; row x neuron x word steps of a popcount product) the compiled
# kernels run; below it NumPy, so that a process simulating a few samples loads no JIT (Numba's import and cached
# kernels cost ~1 s per process, more than a small network's whole run). Tests set it to 0 to check the kernels.
KERNEL_MIN_WORK = 1 << 18
TIME_MAJOR, SAMPLE_MAJOR, EVERY_STEP = 0, 1, 2     # the layouts of a layer's drive (bsnn_hw.kernels.lif_steps)


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


def _layer_method(layer, method: str) -> str:
    """The method that computes ``layer``'s synaptic input: ``method`` itself, or for "auto" the one that measured
    fastest for the layer's shape (docs/golden.md; 2 AVX2 cores): "popcount" for weights of at most
    ``_POPCOUNT_MAX_BITS`` bits (as many bit planes) in a dense layer or in a conv layer of fan-in at least
    ``_POPCOUNT_MIN_CONV_FAN_IN`` (below that, cutting out and packing the windows costs more than the product);
    else "packed" where at least two dot products share a float32 column and the fan-in is at least
    ``_PACKED_MIN_FAN_IN`` (no such layer is left today: wider weights need fields too wide for two), else
    "matmul"."""
    if method != "auto":
        return method
    if layer.weight_bits <= _POPCOUNT_MAX_BITS and (layer.kind == "dense"
                                                   or layer.fan_in >= _POPCOUNT_MIN_CONV_FAN_IN):
        return "popcount"
    if layer.fan_in >= _PACKED_MIN_FAN_IN and _packed_plan(layer.fan_in, _weight_offsets(layer)[0].max(initial=0)):
        return "packed"
    return "matmul"


def _weight_offsets(layer):
    """(u, g, lo) with w = g * u + lo for every weight, u >= 0 integers (n_rows, fan_in) int64: for 1-bit weights
    u is the bit (w = 2 b - 1), for k-bit weights u = w - min(w). Then I = g * (s . u) + lo * popcount(s)."""
    if layer.weight_bits == 1:
        return layer.weights.reshape(layer.weights.shape[0], -1).astype(np.int64), 2, -1
    w = contract.weight_values(layer.weights, layer.weight_bits).reshape(layer.weights.shape[0], -1)
    lo = int(w.min(initial=0))
    return w - lo, 1, lo


def _packed_plan(fan_in: int, span: int):
    """How dot products s . u (s in {0, 1}, 0 <= u <= ``span``, ``fan_in`` terms) share the mantissa of one float32
    column: (field bits b, fields f per column), or None when fewer than two fit. Each field gets
    b = bit_length(fan_in * max(span, 1)) bits and f = 24 // b fields share a column, so every partial sum of a column
    is an integer below 2^(f b) <= 2^24: exact in float32, in any summation order. (float64 would fit more fields,
    but measured slower: twice the operand bytes and half the BLAS rate.)"""
    b = (fan_in * max(int(span), 1)).bit_length()
    f = _MANTISSA // b
    return (b, f) if f >= 2 else None


def _packed_product(rows: np.ndarray, layer, dtype) -> np.ndarray:
    """The synaptic input of every row: rows (N, fan_in) bool -> (N, n_rows_of_weights) ``dtype``, exact.

    Several dot products s . u share one float column, each in its own bit field of the mantissa (see
    :func:`_packed_plan`): neuron j = i * cols + c sits in field i of column c, and the column after the last neuron
    holds popcount(s). The product runs in row blocks that stay in cache; each block's fields are cut out with
    integer shifts and masks."""
    u, g, lo = _weight_offsets(layer)
    n_rows, k = rows.shape
    n_out = u.shape[0]
    plan = _packed_plan(k, u.max(initial=0))
    if plan is None:        # fewer than two fields fit a float32 mantissa: the plain product (exact int64)
        return (rows.astype(np.int64) @ (g * u + lo).T).astype(dtype)
    b, f = plan
    ftype, itype = np.float32, np.int32                                       # f * b + 1 <= 25 bits
    cols = contract.ceil_div(n_out + 1, f)
    lanes = np.zeros((f * cols, k), dtype=np.int64)
    lanes[:n_out] = u
    lanes[n_out] = 1                                                          # popcount(s)
    shifts = (b * np.arange(f, dtype=np.int64))[:, None, None]
    packed = np.ascontiguousarray((lanes.reshape(f, cols, k) << shifts).sum(axis=0).T.astype(ftype))  # (k, cols)
    shifts = shifts[:, :, 0].astype(itype)                                    # (f, 1)
    mask = itype((1 << b) - 1)
    out = np.empty((n_rows, n_out), dtype=dtype)
    block = max(1, min(max(n_rows, 1), _PACKED_BLOCK_ELEMENTS // max(k, 1)))
    buf = np.empty((block, k), dtype=ftype)
    prod = np.empty((block, cols), dtype=ftype)
    ints = np.empty((block, cols), dtype=itype)
    fields = np.empty((block, f, cols), dtype=itype)
    # g = 2 (1-bit weights) is applied to the packed word, before the fields are cut out: a column is several times
    # narrower than the layer. Doubling moves field i to bits [b i + 1, b i + b + 1), below field i + 1's lowest bit.
    double = g == 2
    if double:
        mask = itype(mask << 1)
    for i in range(0, n_rows, block):
        n = min(block, n_rows - i)
        np.copyto(buf[:n], rows[i:i + n])
        np.matmul(buf[:n], packed, out=prod[:n])
        np.copyto(ints[:n], prod[:n], casting="unsafe")                      # exact: an integer below 2^24
        if double:
            ints[:n] <<= 1
        np.right_shift(ints[:n, None, :], shifts, out=fields[:n])
        fields[:n] &= mask
        dots = fields[:n].reshape(n, f * cols)                                # g * (s . u); popcount(s) last
        offset = (dots[:, n_out] >> int(double)) * lo                         # lo * popcount(s)
        np.add(dots[:, :n_out], offset[:, None], out=out[i:i + n], casting="unsafe")
    return out


def _layer_input(x: np.ndarray, layer, method: str, dtype, input_max: int = 1) -> np.ndarray:
    """The synaptic input of a dense or conv2d layer for every (step, sample): (T, B, n_in) bool -> (T, B, n_out)
    (or (B, T, ...) -> (B, T, ...): every row is independent). ``input_max`` > 1: the inputs are the "pixel"
    intensities (uint8), summed by the exact product (float32 below 2^24, else int64) whatever ``method`` says."""
    method = "matmul" if input_max > 1 else _layer_method(layer, method)
    if layer.kind == "dense":
        rows, n_pos = x, 1
    else:
        rows = _im2col(x, layer)                                       # (T, B, positions, fan_in)
        n_pos = rows.shape[2]
    t, b = x.shape[:2]
    rows = rows.reshape(-1, layer.fan_in)
    n_w = layer.weights.shape[0]
    if method == "popcount" and rows.shape[0] * n_w * contract.ceil_div(layer.fan_in, 64) >= KERNEL_MIN_WORK:
        out = _popcount_product(rows, layer, dtype)
    elif method == "packed":
        out = _packed_product(rows, layer, dtype)
    elif method != "popcount" and layer.current_bound(input_max) < 1 << 24:
        # float32 is exact: every partial sum is an integer of magnitude <= fan_in x max|w| < 2^24
        w = contract.weight_values(layer.weights, layer.weight_bits).reshape(n_w, -1)
        out = _blocked_product(rows, w.T.astype(np.float32), dtype)
    else:   # a small "popcount" job (no JIT to load for a few rows) and sums too large for float32: exact int64
        w = contract.weight_values(layer.weights, layer.weight_bits).reshape(n_w, -1)
        out = (rows.astype(np.int64) @ w.T).astype(dtype)
    return out.reshape(t, b, n_pos * n_w)                             # position-major: channel fastest


def _popcount_product(rows: np.ndarray, layer, dtype) -> np.ndarray:
    """The contract's AND-popcount (bsnn_hw.kernels): rows (N, fan_in) bool -> (N, n_rows_of_weights) ``dtype``,
    exact; k-bit weights as k bit planes of u = w - min w. Rows are packed into 64-bit words in blocks that stay in
    cache. (:func:`_layer_input` takes the exact int64 product instead below ``KERNEL_MIN_WORK``.)"""
    u, g, lo = _weight_offsets(layer)
    n_rows = rows.shape[0]
    from . import kernels
    planes = kernels.pack_planes(u, max(1, int(u.max(initial=0)).bit_length()))
    out = np.empty((n_rows, u.shape[0]), dtype=dtype)
    block = max(1, min(max(n_rows, 1), _BLOCK_ELEMENTS // max(rows.shape[1], 1)))
    for i in range(0, n_rows, block):
        kernels.popcount_input(kernels.pack_words64(rows[i:i + block]), planes, g, lo, out[i:i + block])
    return out


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


def _run_layer(current: np.ndarray, layout: int, layer, fires: bool, timesteps: int, n_in: int):
    """The membrane recurrence of one layer. ``current`` in the state dtype, laid out as ``layout`` says
    (``TIME_MAJOR`` (T, B, n_out), ``SAMPLE_MAJOR`` (B, T, n_out), ``EVERY_STEP`` (1, B, n_out): one drive for every
    step). Returns (spikes (T, B, n_out) bool, counts, membrane, first step (each (B, n_out) int64)). From
    ``KERNEL_MIN_WORK`` neuron-steps on it runs compiled (bsnn_hw.kernels.lif_steps), below that in NumPy (no JIT to
    load for a few samples: a simulator's scoreboard process runs a handful)."""
    n_out = current.shape[2]
    batch = current.shape[0] if layout == SAMPLE_MAJOR else current.shape[1]
    if timesteps * batch * n_out < KERNEL_MIN_WORK:
        if layout == SAMPLE_MAJOR:
            current = current.transpose(1, 0, 2)
        elif layout == EVERY_STEP:
            current = np.broadcast_to(current, (timesteps,) + current.shape[1:])
        return _run_layer_numpy(current, layer, fires, timesteps, n_in)
    from . import kernels
    current = np.ascontiguousarray(current)
    lo, hi = contract.membrane_range(layer.membrane_bits)
    clamp = timesteps * n_in > hi          # |V| <= T * max|I| (n_in here): below that the clamp never acts
    v = np.zeros((batch, n_out), dtype=current.dtype)
    out = np.zeros((timesteps, batch, n_out), dtype=bool)
    counts = np.zeros((batch, n_out), dtype=np.int64)
    first = np.full((batch, n_out), -1, dtype=np.int64)
    theta = np.asarray(layer.neuron_threshold, dtype=np.int64) if fires else np.zeros(n_out, dtype=np.int64)
    leak = -1 if layer.leak_shift is None else layer.leak_shift
    scratch = np.empty((4, n_out), dtype=np.int32 if np.iinfo(current.dtype).bits <= 32 else np.int64)
    kernels.lif_steps(current, layout, leak, clamp, lo, hi, theta, fires, layer.reset == "subtract", layer.fire_once,
                      out, v, counts, first, scratch)
    return out, counts, v.astype(np.int64), first


def _counter_dtype(steps: int):
    """The narrowest unsigned type that counts to ``steps``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if steps <= np.iinfo(dtype).max:
            return dtype
    return np.uint64


def _run_layer_numpy(current: np.ndarray, layer, fires: bool, timesteps: int, n_in: int):
    """:func:`_run_layer` in NumPy, for small layers: one whole-array operation per step. ``current`` (T, B, n_out)
    in the state dtype (may be a strided view)."""
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
    # Every per-step operation stays within one narrow dtype (mixed-type ufuncs are several times slower): the spike
    # count and the steps since the first spike are counted in the narrowest unsigned type that holds T.
    ctype = _counter_dtype(steps)
    counts = np.zeros((batch, n_out), dtype=ctype)
    seen = np.zeros((batch, n_out), dtype=bool)          # spiked at or before the current step
    since = np.zeros((batch, n_out), dtype=ctype)        # steps at or after the first spike
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
        spike = out[t]
        raw = fire if fired is not None else spike     # the neuron fires; with fire-once, spike is only the first
        np.greater(v, theta, out=raw)
        # reset: subtract theta, or V itself ("zero"), where the neuron fires
        np.multiply(raw, theta if subtract else v, out=tmp)
        v -= tmp
        if fired is not None:
            np.greater(fire, fired, out=spike)       # fire and not fired before
            fired |= fire
        else:
            counts += spike
        seen |= raw
        since += seen
    if fired is not None:
        counts = fired                               # fire-once: one spike per neuron that ever fired
    # (fire-once does not move the first spike: it is the first firing either way)
    first = np.where(seen, steps - since.astype(np.int64), -1)
    return out, counts.astype(np.int64), v.astype(np.int64), first


def memory_needed(net: Network, batch: int, record: bool = False) -> int:
    """Bytes that encoding and simulating ``batch`` samples takes at its peak (an upper estimate): the spike trains
    (1 byte per input per step), and per chunk of samples the time-major copy, the synaptic currents (8 bytes) and
    the float32 product's operands of the widest layer; with ``record``, every layer's spikes."""
    steps, widest = net.timesteps, max(net.sizes)
    chunk = min(batch, max(1, _CHUNK_ELEMENTS // (steps * widest)))
    need = batch * (1 if net.encoding == "pixel" else steps) * net.n_in + chunk * steps * widest * (1 + 8 + 4 + 4)
    if record:
        need += batch * steps * sum(net.sizes[1:])
    return need


def check_memory_for(net: Network, batch: int, record: bool = False) -> None:
    """Refuse up front (``bsnn_hw.io.MemoryLimit``, naming the bytes) a run that cannot fit in memory."""
    from .io import check_memory
    check_memory(memory_needed(net, batch, record), f"simulating {batch} sample(s) of a {'-'.join(map(str, net.sizes))} "
                 f"network for T = {net.timesteps} steps")


def simulate(net: Network, spikes, record: bool = False, method: str = "auto") -> Result:
    """Run ``net`` on spike trains ``spikes`` (bool (batch, T, n_in)); see :class:`Result`. A "pixel" network
    (contract v4) takes its uint8 intensities (batch, n_in) instead: they are the first layer's input every step.

    ``method`` chooses how the synaptic input is computed ("auto", "packed", "matmul" or "popcount", see the module
    docstring); all are exact and agree bit for bit. A batch of at least ``_PARALLEL_MIN_BATCH`` samples runs in
    parts on as many threads as BLAS is set to use (threadpoolctl; NumPy releases the GIL), each part's BLAS calls on
    one thread, so the conversions and the membrane recurrence use every core too, not only the products."""
    if not isinstance(net, Network):
        raise TypeError(f"net must be a bsnn_hw.Network, not {type(net).__name__}")
    if not isinstance(record, (bool, np.bool_)):
        raise TypeError(f"record must be True or False, not {record!r}")
    spikes = np.asarray(spikes)
    if net.encoding == "pixel":
        if spikes.dtype != np.uint8:
            raise TypeError(f"a 'pixel' network's inputs must be uint8 intensities (0..255), not {spikes.dtype}")
        if spikes.ndim != 2 or spikes.shape[1] != net.n_in:
            raise ValueError(f"a 'pixel' network's inputs must have shape (batch, {net.n_in}), not {spikes.shape}")
    elif spikes.dtype != bool:
        raise TypeError(f"spikes must be a bool array, not {spikes.dtype}")
    elif spikes.ndim != 3 or spikes.shape[1:] != (net.timesteps, net.n_in):
        raise ValueError(f"spikes must have shape (batch, {net.timesteps}, {net.n_in}), not {spikes.shape}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, not {method!r}")
    check_memory_for(net, spikes.shape[0], record)
    steps = net.timesteps
    # Samples are independent: long batches run in chunks, which bounds memory and keeps the working set in cache.
    widest = max(net.sizes)
    batch = spikes.shape[0]
    workers = _workers(batch)
    # (with several workers, as many chunks are in flight at once: together they stay within one chunk's bound)
    chunk = max(1, min(_CHUNK_ELEMENTS // (steps * widest * workers), -(-batch // workers)))
    starts = range(0, max(batch, 1), chunk)
    if workers > 1:
        with _blas_controller().limit(limits=1, user_api="blas"):
            pool = _thread_pool(workers)
            parts = list(pool.map(lambda i: _simulate_chunk(net, spikes[i:i + chunk], record, method), starts))
    else:
        parts = [_simulate_chunk(net, spikes[i:i + chunk], record, method) for i in starts]
    if len(parts) == 1:
        counts, membranes, firsts, recorded = parts[0]
    else:
        counts, membranes, firsts, recorded = (
            [np.concatenate([p[k][li] for p in parts]) for li in range(len(net.layers))] if parts[0][k] is not None
            else None for k in range(4))
    return Result(counts, membranes, firsts, readout(net.readout, counts[-1], membranes[-1], firsts[-1], steps),
                  recorded if record else None)


@functools.cache
def _blas_controller():
    """threadpoolctl's ``ThreadpoolController`` of this process (None without threadpoolctl), made once, on first use
    (after NumPy has loaded its BLAS): scanning the loaded libraries costs ~2 ms; it reads and sets counts live."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


@functools.cache
def _thread_pool(workers: int):
    """A pool of ``workers`` threads, the same one for every call with that count (a new one costs ~1 ms): at most
    ``workers`` chunks are in flight, which :func:`simulate`'s chunk size counts on."""
    from concurrent.futures import ThreadPoolExecutor
    return ThreadPoolExecutor(workers, thread_name_prefix="bsnn-golden")


# A forked child has the pools but not their threads: it makes its own.
os.register_at_fork(after_in_child=_thread_pool.cache_clear)


def _workers(batch: int) -> int:
    """Threads for a batch: 1 below ``_PARALLEL_MIN_BATCH`` samples or without threadpoolctl (scikit-learn's
    dependency), else the BLAS thread count (the user's setting, by default one per core)."""
    if batch < _PARALLEL_MIN_BATCH or _blas_controller() is None:
        return 1
    counts = [p.get("num_threads", 1) for p in _blas_controller().info() if p.get("user_api") == "blas"]
    return max(1, min(max(counts, default=1), os.cpu_count() or 1))


def _simulate_chunk(net: Network, spikes: np.ndarray, record: bool, method: str):
    steps = net.timesteps
    counts, membranes, firsts, recorded = [], [], [], []
    # Layers run time-major (T, B, n): x[t] is contiguous. The synaptic input treats every (step, sample) row alike,
    # so the first layer reads the sample-major input as it is and only its (narrower) input current is transposed.
    pixel = net.encoding == "pixel"
    x = spikes[None] if pixel else spikes       # "pixel": one (1, B, n_in) row of intensities serves every step
    for li, layer in enumerate(net.layers):
        amp = net.layer_input_max(li)
        if li == 0 and not layer.has_neurons:
            x = np.ascontiguousarray(spikes.transpose(1, 0, 2))
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
        bound = layer.drive_bound(amp)
        dtype = _state_dtype(layer.membrane_bits, bound, steps)
        current = _layer_input(x, layer, method,
                               _state_dtype(layer.membrane_bits, layer.current_bound(amp), steps) if layer.has_affine
                               else dtype, amp)
        layout = TIME_MAJOR
        if li == 0 and pixel:
            layout = EVERY_STEP                        # the same current every step
        elif x is spikes:
            layout = SAMPLE_MAJOR                      # (B, T, n_out)
        if layer.has_affine:                          # contract v3: the drive x = (a I + b) >>> F, per step
            if layout == SAMPLE_MAJOR:
                current = current.transpose(1, 0, 2)
            elif layout == EVERY_STEP:
                current = np.broadcast_to(current, (steps,) + current.shape[1:])
            scale, bias = layer.affine_tables(per_neuron=True)
            current = contract.step_drive(current, None if scale is None else scale[:, None, :], bias[:, None, :],
                                          layer.step_frac).astype(dtype)
            layout = TIME_MAJOR
        out, count, v, first = _run_layer(current, layout, layer, net.layer_fires(li), steps, bound)
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
    if not isinstance(net, Network):
        raise TypeError(f"net must be a bsnn_hw.Network, not {type(net).__name__}")
    if not isinstance(result, Result):
        raise TypeError(f"result must be the golden.Result of simulate(net, ...), not {type(result).__name__}")
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
    spikes = net.as_inputs(spikes)
    pixel = net.encoding == "pixel"
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
        # the same network on the same spikes for steps 0..d (per-step tables cut to d + 1 rows)
        short = truncate(Network(net.layers, net.timesteps, net.readout, "pixel" if pixel else "direct"), steps + 1)
        part = simulate(short, spikes[idx] if pixel else spikes[idx, :steps + 1], record=False)
        for li in range(n_layers):
            counts[li][idx] = part.counts[li]
            membrane[li][idx] = part.membrane[li]
            first[li][idx] = part.first_step[li]
            if record:
                recorded[li][idx, steps + 1:] = False      # the steps after d never run
    return Result(counts, membrane, first, full.prediction, recorded), d


def run(net: Network, x, seed=None, record: bool = False, method: str = "auto") -> Result:
    """Encode uint8 inputs with the network's encoding (or take spike trains for "direct"; "pixel" takes the
    intensities as they are) and simulate."""
    batch = np.shape(x)[0] if np.ndim(x) >= 2 else 1
    check_memory_for(net, batch, record)
    return simulate(net, net.encode(x, seed), record=record, method=method)
