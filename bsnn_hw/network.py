"""`Layer` and `Network`: the parameters of a binarized SNN under the numeric contract, validated on construction.

A value the hardware cannot represent is refused with a ValueError naming the value and the allowed range; nothing
is rounded. See docs/spec.md for what each parameter means.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from . import contract


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _check_threshold(threshold, n_out: int, membrane_bits: int) -> np.ndarray:
    """Thresholds as an int64 array (n_out,), each in 1..2^(M-1)-1; floats and bools are refused, never rounded."""
    hi = (1 << (membrane_bits - 1)) - 1
    if _is_int(threshold):                       # a scalar, checked before numpy could overflow or wrap it
        if not 1 <= threshold <= hi:
            raise ValueError(f"threshold must be in 1..{hi} (2^(M-1)-1 for M = {membrane_bits}), not {threshold}")
        return np.full(n_out, int(threshold), dtype=np.int64)
    th = np.asarray(threshold)
    if th.size == 0 and n_out > 0:               # [] is a float64 array to NumPy: say what is really wrong
        raise ValueError(f"threshold must have shape ({n_out},) to match {n_out} neurons, not {th.shape}")
    if th.dtype == bool or not np.issubdtype(th.dtype, np.integer):
        what = repr(threshold) if th.ndim == 0 else f"an array of {th.dtype}"
        raise TypeError(f"threshold must be an int or an array of ints (thresholds are never rounded), not {what}")
    if th.ndim == 0:
        th = np.full(n_out, th)
    if th.shape != (n_out,):
        raise ValueError(f"threshold must have shape ({n_out},) to match {n_out} neurons, not {th.shape}")
    if th.size and (th.min() < 1 or th.max() > hi):
        bad = int(th.min() if th.min() < 1 else th.max())
        raise ValueError(f"threshold must be in 1..{hi} (2^(M-1)-1 for M = {membrane_bits}), not {bad}")
    return th.astype(np.int64)


def _check_weights(weights, weight_bits) -> tuple[np.ndarray, int]:
    """1-bit weights: a bool array (True = +1); k-bit weights (2 <= k <= 8): an integer array in the signed k-bit
    range. Values outside the range are refused, never wrapped or clamped."""
    if not _is_int(weight_bits):
        raise TypeError(f"weight_bits must be an int, not {weight_bits!r}")
    if not contract.WEIGHT_BITS_MIN <= weight_bits <= contract.WEIGHT_BITS_MAX:
        raise ValueError(f"weight_bits must be in {contract.WEIGHT_BITS_MIN}..{contract.WEIGHT_BITS_MAX}, "
                         f"not {weight_bits}")
    w = np.asarray(weights)
    if weight_bits == 1:
        if w.dtype != bool:
            raise TypeError(f"weights must be a bool array (True = +1, False = -1), not {w.dtype}; "
                            f"convert +-1 weights with `weights > 0`")
        return w.copy(), 1
    if w.dtype == bool or not np.issubdtype(w.dtype, np.integer):
        raise TypeError(f"{weight_bits}-bit weights must be an integer array (never rounded), not {w.dtype}")
    contract.check_weight_range(w, weight_bits)
    return w.astype(np.int8), int(weight_bits)


def _check_table(name: str, table, units: int, bits: int) -> np.ndarray:
    """A per-step table (T, units) of ints in the signed ``bits``-bit range; floats are refused, never rounded."""
    a = np.asarray(table)
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array (T, {units}) (never rounded), not {a.dtype}")
    if a.ndim != 2 or a.shape[1] != units or a.shape[0] < 1:
        raise ValueError(f"{name} must have shape (T, {units}): one row per time step, one entry per "
                         f"neuron (output channel for conv), not {a.shape}")
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if a.size and (a.min() < lo or a.max() > hi):
        bad = int(a.min() if a.min() < lo else a.max())
        raise ValueError(f"{name} entries must be in {lo}..{hi} (signed {bits} bits), not {bad}")
    out = a.astype(np.int64)
    out.setflags(write=False)
    return out


class _Neurons:
    """What every layer of LIF/IF neurons shares: threshold, leak, reset, membrane width, fire-once."""

    def _init_neurons(self, threshold, n_thresholds, leak_shift, reset, membrane_bits, fire_once):
        if not _is_int(membrane_bits):
            raise TypeError(f"membrane_bits must be an int, not {membrane_bits!r}")
        if not contract.MEMBRANE_BITS_MIN <= membrane_bits <= contract.MEMBRANE_BITS_MAX:
            raise ValueError(f"membrane_bits must be in {contract.MEMBRANE_BITS_MIN}..{contract.MEMBRANE_BITS_MAX}, "
                             f"not {membrane_bits}")
        membrane_bits = int(membrane_bits)
        if leak_shift is not None:
            if not _is_int(leak_shift):
                raise TypeError(f"leak_shift must be an int or None, not {leak_shift!r}")
            if not 1 <= leak_shift <= membrane_bits - 1:
                raise ValueError(f"leak_shift must be in 1..{membrane_bits - 1} (membrane_bits - 1) or None, "
                                 f"not {leak_shift}")
            leak_shift = int(leak_shift)
        if not isinstance(reset, str) or reset not in contract.RESET_MODES:
            raise ValueError(f"reset must be one of {', '.join(map(repr, contract.RESET_MODES))}, not {reset!r}")
        if not isinstance(fire_once, (bool, np.bool_)):
            raise TypeError(f"fire_once must be a bool, not {fire_once!r}")
        if threshold is not None:
            threshold = _check_threshold(threshold, n_thresholds, membrane_bits)
            threshold.setflags(write=False)
        self.threshold = threshold
        self.leak_shift = leak_shift
        self.reset = reset
        self.membrane_bits = membrane_bits
        self.fire_once = bool(fire_once)

    def _init_affine(self, step_scale, step_bias, step_frac, units: int):
        """The per-step affine drive (contract v3): x = (a[t, j] I + b[t, j]) >>> F. ``step_bias`` (T, units) ints
        turns it on; ``step_scale`` (T, units) ints or None (a = 2^F); ``step_frac`` F in 0..STEP_FRAC_MAX."""
        if step_bias is None:
            if step_scale is not None:
                raise ValueError("step_scale needs step_bias (pass zeros for no bias)")
            if step_frac is not None and not _is_int(step_frac):
                raise TypeError(f"step_frac must be an int, not {step_frac!r}")
            if step_frac not in (0, None):
                raise ValueError(f"step_frac = {step_frac!r} needs step_bias: without a per-step affine it must be 0")
            self.step_scale = self.step_bias = None
            self.step_frac = 0
            return
        if not _is_int(step_frac):
            raise TypeError(f"step_frac must be an int, not {step_frac!r}")
        if not 0 <= step_frac <= contract.STEP_FRAC_MAX:
            raise ValueError(f"step_frac must be in 0..{contract.STEP_FRAC_MAX}, not {step_frac}")
        self.step_bias = _check_table("step_bias", step_bias, units, contract.STEP_BIAS_BITS)
        self.step_scale = None if step_scale is None else _check_table("step_scale", step_scale, units,
                                                                       contract.STEP_SCALE_BITS)
        if self.step_scale is not None and self.step_scale.shape != self.step_bias.shape:
            raise ValueError(f"step_scale {self.step_scale.shape} and step_bias {self.step_bias.shape} must have the "
                             f"same shape")
        self.step_frac = int(step_frac)

    @property
    def has_affine(self) -> bool:
        return self.step_bias is not None

    def affine_tables(self, per_neuron: bool = False):
        """(scale (T, n) or None, bias (T, n)) of the per-step affine; per output channel, or with ``per_neuron``
        per neuron in output order (a conv layer's channels tiled over its positions)."""
        if not self.has_affine:
            return None, None
        rep = self.n_out // self.step_bias.shape[1] if per_neuron else 1
        tile = (lambda a: a if rep == 1 or a is None else np.tile(a, (1, rep)))
        return tile(self.step_scale), tile(self.step_bias)

    @property
    def max_abs_drive(self) -> int:
        """A bound on |x| in one step, the membrane's input: |I| without an affine, else max over (t, j) of
        ceil((|a| max|I| + |b|) / 2^F)."""
        return self.drive_bound(1)

    def drive_bound(self, input_max: int = 1) -> int:
        """:attr:`max_abs_drive` for inputs of at most ``input_max`` (1: spikes; contract.PIXEL_MAX: "pixel")."""
        current = self.current_bound(input_max)
        if not self.has_affine:
            return current
        a = np.abs(self.step_scale) if self.step_scale is not None else (1 << self.step_frac)
        num = a * current + np.abs(self.step_bias)
        return int(-(-int(num.max()) >> self.step_frac))

    has_neurons = True

    def params(self) -> dict[str, Any]:
        """The scalar neuron parameters (everything but weights and thresholds)."""
        return dict(leak_shift=self.leak_shift, reset=self.reset, membrane_bits=self.membrane_bits,
                    fire_once=self.fire_once)

    @property
    def neuron_threshold(self) -> np.ndarray | None:
        """The threshold of every output neuron (n_out,), in output order."""
        return self.threshold

    @property
    def max_abs_current(self) -> int:
        """A bound on |I| in one step: fan-in x the largest |weight|."""
        return self.current_bound(1)

    def current_bound(self, input_max: int = 1) -> int:
        """A bound on |I| in one step for inputs of at most ``input_max``: fan-in x the largest |weight| x that."""
        return contract.current_bound(self.fan_in, self.weight_bits, input_max)

    @property
    def weight_memory_bits(self) -> int:
        return self.weights.size * self.weight_bits

    @property
    def synaptic_ops_per_step(self) -> int:
        """Weights visited per step: every output neuron's fan-in (padding included for conv)."""
        return self.n_out * self.fan_in

    def _same(self, other) -> bool:
        def same(a, b):
            return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
        same_th = same(self.threshold, other.threshold)
        same_affine = (same(self.step_scale, other.step_scale) and same(self.step_bias, other.step_bias)
                       and self.step_frac == other.step_frac)
        return (same_th and same_affine and self.weight_bits == other.weight_bits and self.weights.shape == other.weights.shape
                and np.array_equal(self.weights, other.weights) and self.params() == other.params())


class Layer(_Neurons):
    """One fully-connected spiking layer (kind "dense").

    Arguments
    ---------
    weights : bool array (n_out, n_in), or an integer array for ``weight_bits`` > 1
        Weight bits, True = +1, False = -1; or signed k-bit integers.
    threshold : int array (n_out,), int, or None
        Per-neuron firing threshold theta, 1 <= theta <= 2^(M-1)-1; a scalar applies to every neuron. ``None`` only
        for the last layer of a network with the "membrane" readout (that layer never fires).
    leak_shift : int or None
        Leak shift k, 1 <= k <= M-1: V <- V - (V >>> k) each step (lambda = 1 - 2^-k). ``None``: no leak (IF neuron).
    reset : "subtract" or "zero"
        What happens to the membrane when the neuron fires.
    membrane_bits : int
        M, the signed membrane width, 2..32.
    fire_once : bool
        Suppress a neuron's output spikes after its first spike in a sample.
    weight_bits : int
        1 (binary, the default) or 2..8 (contract v2: signed integers, I = sum w s).
    step_scale, step_bias, step_frac : (T, n_out) int arrays or None, int
        The per-step affine drive (contract v3, BNTT folded): the membrane integrates x = (a[t, j] I + b[t, j]) >>> F
        instead of I. ``step_bias`` None (the default): no affine. ``step_scale`` None: a = 2^F (bias only).
    """
    kind = "dense"

    def __init__(self, weights, threshold, leak_shift=None, reset="subtract", membrane_bits=16, fire_once=False,
                 weight_bits=1, step_scale=None, step_bias=None, step_frac=0):
        w, self.weight_bits = _check_weights(weights, weight_bits)
        if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
            raise ValueError(f"weights must have shape (n_out, n_in) with both at least 1, not {w.shape}")
        self._init_neurons(threshold, w.shape[0], leak_shift, reset, membrane_bits, fire_once)
        self._init_affine(step_scale, step_bias, step_frac, w.shape[0])
        self.weights = w
        self.weights.setflags(write=False)

    @property
    def n_in(self) -> int:
        return self.weights.shape[1]

    @property
    def n_out(self) -> int:
        return self.weights.shape[0]

    @property
    def fan_in(self) -> int:
        return self.n_in

    in_shape = property(lambda self: (self.n_in,))
    out_shape = property(lambda self: (self.n_out,))

    def __eq__(self, other):
        if not isinstance(other, Layer):
            return NotImplemented
        return self._same(other)

    def __repr__(self):
        leak = "none" if self.leak_shift is None else f">>>{self.leak_shift}"
        bits = "" if self.weight_bits == 1 else f", {self.weight_bits}-bit weights"
        if self.has_affine:
            bits += f", per-step {'bias' if self.step_scale is None else 'affine'} F={self.step_frac}"
        return (f"Layer({self.n_in}->{self.n_out}, M={self.membrane_bits}, leak={leak}, reset={self.reset}, "
                f"fire_once={self.fire_once}{bits})")


def _check_shape(name: str, shape) -> tuple[int, int, int]:
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be (H, W, C), not {shape!r}") from None
    if len(shape) != 3 or not all(_is_int(v) and v >= 1 for v in shape):
        raise ValueError(f"{name} must be three positive ints (H, W, C), not {shape!r}")
    return tuple(int(v) for v in shape)


def check_conv_geometry(in_shape, kernel, stride, padding) -> tuple[int, int, int]:
    """A conv layer's geometry (the network's and the trainer's): ``in_shape`` (H, W, C), a k x k ``kernel``
    (k >= 1), ``stride`` >= 1 and 0 <= ``padding`` < k, the kernel inside the padded map. Returns in_shape."""
    h, wd, _ = in_shape = _check_shape("in_shape", in_shape)
    for name, v, lo in (("kernel", kernel, 1), ("stride", stride, 1), ("padding", padding, 0)):
        if not _is_int(v):
            raise TypeError(f"{name} must be an int, not {v!r}")
        if v < lo:
            raise ValueError(f"{name} must be at least {lo}, not {v}")
    if padding >= kernel:
        raise ValueError(f"padding must be in 0..{kernel - 1} (below the kernel size {kernel}), not {padding}")
    if kernel > min(h, wd) + 2 * padding:
        raise ValueError(f"kernel {kernel}x{kernel} does not fit the {h}x{wd} map with padding {padding}")
    return in_shape


def check_pool_window(in_shape, window) -> tuple[int, int, int]:
    """A pooling window over the map ``in_shape`` (H, W, C): an int in 1..min(H, W). Returns in_shape."""
    in_shape = _check_shape("in_shape", in_shape)
    if not _is_int(window):
        raise TypeError(f"window must be an int, not {window!r}")
    if not 1 <= window <= min(in_shape[:2]):
        raise ValueError(f"window must be in 1..{min(in_shape[:2])} (the map's smaller side), not {window}")
    return in_shape


class Conv2d(_Neurons):
    """A 2-D convolution of spike maps into a map of spiking neurons (kind "conv2d", contract v2).

    Input: a map ``in_shape`` = (H, W, C_in), position-major (docs/spec.md). Output: (H_out, W_out, C_out), one
    neuron per (y, x, o) with H_out = floor((H + 2 padding - k) / stride) + 1 (W_out alike). Synaptic input of neuron
    (y, x, o) at step t: I = sum over (ky, kx, c) of w[o, ky, kx, c] * s[y*stride + ky - padding, x*stride + kx -
    padding, c], where a position outside the map (zero padding) carries no spike. The neuron dynamics are the dense
    layer's; thresholds are per output channel (shared by every position).

    Arguments
    ---------
    weights : bool array (C_out, k, k, C_in) (True = +1), or integers for ``weight_bits`` > 1
    in_shape : (H, W, C_in)
    threshold : int array (C_out,), int, or None
    stride, padding : ints, stride >= 1, 0 <= padding < k
    leak_shift, reset, membrane_bits, fire_once, weight_bits : as :class:`Layer`
    step_scale, step_bias, step_frac : as :class:`Layer`, per output channel: tables (T, C_out)
    """
    kind = "conv2d"

    def __init__(self, weights, in_shape, threshold, stride=1, padding=0, leak_shift=None, reset="subtract",
                 membrane_bits=16, fire_once=False, weight_bits=1, step_scale=None, step_bias=None, step_frac=0):
        w, self.weight_bits = _check_weights(weights, weight_bits)
        self.in_shape = _check_shape("in_shape", in_shape)
        h, wd, c = self.in_shape
        if w.ndim != 4 or w.shape[1] != w.shape[2] or min(w.shape) < 1:
            raise ValueError(f"conv weights must have shape (C_out, k, k, C_in) with a square kernel, not {w.shape}")
        if w.shape[3] != c:
            raise ValueError(f"conv weights have C_in = {w.shape[3]} but in_shape {self.in_shape} has {c} channels")
        k = int(w.shape[1])
        check_conv_geometry(self.in_shape, k, stride, padding)
        self.kernel, self.stride, self.padding = k, int(stride), int(padding)
        self.out_channels = int(w.shape[0])
        self.out_shape = (contract.conv_output_size(h, k, stride, padding),
                          contract.conv_output_size(wd, k, stride, padding), self.out_channels)
        self._init_neurons(threshold, self.out_channels, leak_shift, reset, membrane_bits, fire_once)
        self._init_affine(step_scale, step_bias, step_frac, self.out_channels)
        self.weights = w
        self.weights.setflags(write=False)

    n_in = property(lambda self: int(np.prod(self.in_shape)))
    n_out = property(lambda self: int(np.prod(self.out_shape)))
    fan_in = property(lambda self: self.kernel * self.kernel * self.in_shape[2])

    @property
    def neuron_threshold(self):
        if self.threshold is None:
            return None
        return np.tile(self.threshold, self.out_shape[0] * self.out_shape[1])     # position-major: channel fastest

    def geometry(self) -> dict[str, Any]:
        return dict(in_shape=list(self.in_shape), kernel=self.kernel, stride=self.stride, padding=self.padding,
                    out_channels=self.out_channels)

    def __eq__(self, other):
        if not isinstance(other, Conv2d):
            return NotImplemented
        return self._same(other) and self.geometry() == other.geometry()

    def __repr__(self):
        return (f"Conv2d({'x'.join(map(str, self.in_shape))} -> {'x'.join(map(str, self.out_shape))}, "
                f"k={self.kernel}, stride={self.stride}, pad={self.padding}, M={self.membrane_bits}"
                f"{'' if self.weight_bits == 1 else f', {self.weight_bits}-bit weights'})")


class Pool:
    """OR (max) pooling of a spike map (kind "pool", contract v2): out[y, x, c] at step t is 1 when any of the
    ``window`` x ``window`` inputs (y*window + i, x*window + j, c) spiked at step t. Stride = window; rows and columns
    past the last whole window are dropped. No neurons, no state, no weights."""
    kind = "pool"
    has_neurons = False
    threshold = None
    weight_bits = 0
    weight_memory_bits = 0
    synaptic_ops_per_step = 0
    has_affine = False

    def __init__(self, in_shape, window=2, mode="or"):
        self.in_shape = check_pool_window(in_shape, window)
        if mode not in contract.POOL_MODES:
            raise ValueError(f"pool mode must be one of {', '.join(map(repr, contract.POOL_MODES))}, not {mode!r}")
        self.window, self.mode = int(window), mode
        h, w, c = self.in_shape
        self.out_shape = (contract.pool_output_size(h, window), contract.pool_output_size(w, window), c)

    n_in = property(lambda self: int(np.prod(self.in_shape)))
    n_out = property(lambda self: int(np.prod(self.out_shape)))

    def params(self) -> dict[str, Any]:
        return dict(window=self.window, mode=self.mode)

    def __eq__(self, other):
        if not isinstance(other, Pool):
            return NotImplemented
        return self.in_shape == other.in_shape and self.params() == other.params()

    def __repr__(self):
        return f"Pool({'x'.join(map(str, self.in_shape))} -> {'x'.join(map(str, self.out_shape))}, {self.window}x{self.window} {self.mode})"


# The registry of layer kinds (contract.LAYER_KINDS): golden model, artifact and reports dispatch on ``layer.kind``.
LAYER_CLASSES = {"dense": Layer, "conv2d": Conv2d, "pool": Pool}


class Network:
    """A chain of :class:`Layer` run for ``timesteps`` steps per sample.

    Arguments
    ---------
    layers : sequence of Layer
        Each layer's n_in equals the previous layer's n_out.
    timesteps : int
        T, at least 1.
    readout : "count", "membrane" or "first"
        How the class is read from the last layer (docs/spec.md).
    encoding : "direct", "rate", "latency" or "pixel"
        How uint8 inputs become spikes (:mod:`bsnn_hw.encode`).
    seed : int
        The rate encoder's LFSR seed, 1..65535.
    metadata : dict
        Free-form JSON-serializable information (training config, accuracy...) carried in the artifact.
    ensemble : sequence of members, or None
        An ensemble of S >= 1 networks that differ from this one only in their weights (docs/spec.md section 10):
        each member is a sequence of weight arrays, one per layer with weights (dense, conv2d) in layer order, each of
        that layer's shape and ``weight_bits`` (validated as the layer's own weights). The network itself is then the
        ensemble's MAP network. Stored as ``self.ensemble``, a tuple of tuples of read-only arrays (``()``: none);
        :func:`bsnn_hw.ensemble.members` gives the members as Networks.
    """

    def __init__(self, layers: Sequence[Layer], timesteps: int, readout: str = "count", encoding: str = "rate",
                 seed: int = 1, metadata: dict | None = None, ensemble=None):
        if isinstance(layers, Layer) or isinstance(layers, (str, bytes, dict, np.ndarray)):
            raise TypeError(f"layers must be a list of bsnn_hw.Layer, not {type(layers).__name__}")
        try:
            layers = list(layers)
        except TypeError:
            raise TypeError(f"layers must be a list of bsnn_hw.Layer, not {type(layers).__name__}") from None
        if not layers:
            raise ValueError("a network needs at least one layer, not 0")
        for i, layer in enumerate(layers):
            if not isinstance(layer, tuple(LAYER_CLASSES.values())):
                raise TypeError(f"layer {i} must be a bsnn_hw.Layer, Conv2d or Pool, not {type(layer).__name__}")
        for i in range(1, len(layers)):
            if layers[i].n_in != layers[i - 1].n_out:
                raise ValueError(f"layer {i} has n_in = {layers[i].n_in} but layer {i - 1} has n_out = "
                                 f"{layers[i - 1].n_out}; they must match")
            if layers[i].kind != "dense" and len(layers[i - 1].out_shape) == 3 and \
                    layers[i].in_shape != layers[i - 1].out_shape:
                raise ValueError(f"layer {i} takes a {layers[i].in_shape} map but layer {i - 1} gives "
                                 f"{layers[i - 1].out_shape}; they must match")
        if not layers[-1].has_neurons:
            raise ValueError(f"the last layer must have neurons (dense or conv2d) for the readout, not "
                             f"{layers[-1].kind}")
        if not _is_int(timesteps):
            raise TypeError(f"timesteps must be an int, not {timesteps!r}")
        if timesteps < 1:
            raise ValueError(f"timesteps must be at least 1, not {timesteps}")
        if readout not in contract.READOUTS:
            raise ValueError(f"readout must be one of {', '.join(map(repr, contract.READOUTS))}, not {readout!r}")
        if encoding not in contract.ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(map(repr, contract.ENCODINGS))}, not {encoding!r}")
        if not _is_int(seed):
            raise TypeError(f"seed must be an int, not {seed!r}")
        contract.check_seed(seed)
        if encoding == "pixel" and not layers[0].has_neurons:
            raise ValueError(f"the 'pixel' encoding feeds intensities to the first layer's synapses, so that layer "
                             f"must be dense or conv2d, not {layers[0].kind}")
        for i, layer in enumerate(layers):
            if layer.has_affine and layer.step_bias.shape[0] != timesteps:
                raise ValueError(f"layer {i}'s per-step affine has {layer.step_bias.shape[0]} rows but the network "
                                 f"runs T = {timesteps} steps; they must match")
            last_membrane = (i == len(layers) - 1 and readout == "membrane")
            if layer.has_neurons and layer.threshold is None and not last_membrane:
                raise ValueError(f"layer {i} has no threshold; only the last layer of a network with the "
                                 f"'membrane' readout may omit it")
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
        try:
            json.dumps(metadata or {})
        except (TypeError, ValueError) as e:
            raise TypeError(f"metadata must be JSON-serializable (it is stored in the artifact): {e}") from None
        self.layers = layers
        self.timesteps = int(timesteps)
        self.readout = readout
        self.encoding = encoding
        self.seed = int(seed)
        self.metadata = dict(metadata or {})
        self.ensemble = _check_ensemble(ensemble, layers)

    # --- shape --------------------------------------------------------------------------------------------------
    @property
    def n_in(self) -> int:
        return self.layers[0].n_in

    @property
    def n_out(self) -> int:
        return self.layers[-1].n_out

    @property
    def sizes(self) -> list[int]:
        return [self.n_in] + [layer.n_out for layer in self.layers]

    def layer_fires(self, index: int) -> bool:
        """Whether layer ``index`` can fire (the last layer of a "membrane" readout never does)."""
        return not (self.readout == "membrane" and index == len(self.layers) - 1)

    @property
    def input_shape(self) -> tuple:
        """(n_in,) for a dense first layer, (H, W, C) for a conv or pool first layer."""
        return tuple(self.layers[0].in_shape)

    @property
    def contract_version(self) -> int:
        """The oldest contract that expresses this network: 1 for dense layers of 1-bit weights only, 3 with a
        per-step affine drive, 4 with the "pixel" input, else 2."""
        if self.encoding == "pixel":
            return 4
        if any(layer.has_affine for layer in self.layers):
            return 3
        v1 = all(layer.kind == "dense" and layer.weight_bits == 1 for layer in self.layers)
        return 1 if v1 else 2

    @property
    def input_max(self) -> int:
        """The largest value of one first-layer input in a step (1: spikes; 255 for the "pixel" input)."""
        return contract.input_max(self.encoding)

    def layer_input_max(self, index: int) -> int:
        """The largest input of layer ``index`` in a step: :attr:`input_max` for layer 0, 1 (a spike) after it."""
        return self.input_max if index == 0 else 1

    def weight_bits(self) -> int:
        """Bits of weight memory: every weight times its width."""
        return sum(layer.weight_memory_bits for layer in self.layers)

    def synaptic_ops(self) -> int:
        """Synaptic operations per inference: every neuron's fan-in, every step."""
        return self.timesteps * sum(layer.synaptic_ops_per_step for layer in self.layers)

    # --- convenience --------------------------------------------------------------------------------------------
    def encode(self, x, seed=None) -> np.ndarray:
        """Encode uint8 inputs (batch, n_in) with this network's encoding (and its seed unless one is given)."""
        from . import encode
        if self.encoding == "direct":
            return encode.direct(x, self.timesteps, self.n_in)
        if self.encoding == "pixel":
            return encode.pixel(x, self.n_in)
        x = np.asarray(x)
        if x.ndim == 2 and x.shape[1] != self.n_in:
            raise ValueError(f"inputs have {x.shape[1]} features but the network has {self.n_in} inputs")
        return encode.encode(x, self.timesteps, self.encoding, self.seed if seed is None else seed)

    def as_inputs(self, x) -> np.ndarray:
        """A batch of inputs as :func:`bsnn_hw.golden.simulate` takes them: bool spike trains (B, T, n_in), or for a
        "pixel" network uint8 intensities (B, n_in). Integers are converted when every value fits (0/1 spikes,
        0..255 intensities); anything else (floats, a 300, a -1) is refused, never cast."""
        pixel = self.encoding == "pixel"
        a = np.asarray(x)
        target, hi = (np.dtype(np.uint8), 255) if pixel else (np.dtype(bool), 1)
        if a.dtype == target or a.size == 0:
            return a.astype(target, copy=False)
        what = "uint8 intensities 0..255" if pixel else "bool spike trains (or integers 0/1)"
        if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"the network's inputs must be {what}, not {a.dtype}")
        lo_v, hi_v = int(a.min()), int(a.max())
        if lo_v < 0 or hi_v > hi:
            raise ValueError(f"the network's inputs must be {what}, found {lo_v if lo_v < 0 else hi_v}")
        return a.astype(target)

    def save(self, path) -> None:
        from . import artifact
        artifact.save(self, path)

    def meta(self, name: str) -> dict:
        """The metadata's section ``name`` ("metrics", "config", "bntt", ...): {} when there is none; a ValueError
        naming it when it is there but not a JSON object (a hand-edited artifact), rather than an AttributeError in
        whatever reads it."""
        value = self.metadata.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError(f"metadata.{name} must be a JSON object, not a {type(value).__name__} ({str(value)[:40]})")
        return value

    def identity(self) -> str:
        """The model's identity: a SHA-256 of what the hardware computes (contract version, parameters, thresholds,
        weights), independent of the metadata (:func:`bsnn_hw.artifact.identity`)."""
        from . import artifact
        return artifact.identity(self)

    def __eq__(self, other):
        if not isinstance(other, Network):
            return NotImplemented
        return (self.layers == other.layers and self.timesteps == other.timesteps and self.readout == other.readout
                and self.encoding == other.encoding and self.seed == other.seed
                and len(self.ensemble) == len(other.ensemble)
                and all(np.array_equal(a, b) for ma, mb in zip(self.ensemble, other.ensemble)
                        for a, b in zip(ma, mb)))

    def __repr__(self):
        members = f", ensemble of {len(self.ensemble)}" if self.ensemble else ""
        return (f"Network({'-'.join(map(str, self.sizes))}, T={self.timesteps}, readout={self.readout}, "
                f"encoding={self.encoding}{members})")


def check_sum_pool(in_shape, window: int) -> tuple[int, int, int]:
    """``in_shape`` as (H, W, C) when ``window`` x ``window`` sum pooling of it can fold into the next layer
    (:func:`fold_sum_pool`); else ValueError, one line."""
    h, w, c = _check_shape("in_shape", in_shape)
    if not _is_int(window) or window < 1:
        raise ValueError(f"window must be a positive int, not {window!r}")
    if h % window or w % window:
        raise ValueError(f"sum pooling {window}x{window} needs a map whose sides are multiples of {window} (it folds "
                         f"into the next layer, which has no zero weight for the rows and columns pooling would "
                         f"drop), not {h}x{w}")
    return h, w, c


def fold_sum_pool(layer, window: int, in_shape):
    """The layer that sum pooling folds into (docs/spec.md section 8.5): ``layer`` (dense or conv2d) reads the
    ``window`` x ``window`` sum pooling (stride = window) of an (H, W, C) spike map ``in_shape``; the result reads the
    map itself and gives the same synaptic input at every step and neuron, so it is the same layer in the contract:

        conv (k, stride s, padding p) -> conv (k n, stride s n, padding p n):
            w'[o, ky, kx, c] = w[o, ky // n, kx // n, c]
        dense over the pooled map -> dense over the map:
            w'[j, (y W + x) C + c] = w[j, ((y // n) (W / n) + x // n) C + c]

    (n = window). H and W must be multiples of n (the folded layer has no zero weight for the rows and columns that
    pooling would drop). Thresholds, neuron parameters and any per-step affine are kept.
    Raises ValueError (one line) for a map the window does not divide or a layer whose input is not the pooled map."""
    h, w, c = check_sum_pool(in_shape, window)
    n = int(window)
    pooled = (h // n, w // n, c)
    if layer.kind not in ("dense", "conv2d"):
        raise ValueError(f"sum pooling folds into a dense or conv2d layer, not a {layer.kind} layer")
    extra = dict(threshold=layer.threshold, weight_bits=layer.weight_bits, step_scale=layer.step_scale,
                 step_bias=layer.step_bias, step_frac=layer.step_frac, **layer.params())
    if layer.kind == "conv2d":
        if layer.in_shape != pooled:
            raise ValueError(f"the conv layer reads a {layer.in_shape} map, not the {pooled} map that {n}x{n} sum "
                             f"pooling of {(h, w, c)} gives")
        weights = np.repeat(np.repeat(layer.weights, n, axis=1), n, axis=2)
        return Conv2d(weights, (h, w, c), stride=layer.stride * n, padding=layer.padding * n, **extra)
    if layer.n_in != int(np.prod(pooled)):
        raise ValueError(f"the dense layer has {layer.n_in} inputs, not the {int(np.prod(pooled))} of the {pooled} map "
                         f"that {n}x{n} sum pooling of {(h, w, c)} gives")
    weights = layer.weights.reshape(layer.n_out, *pooled)
    weights = np.repeat(np.repeat(weights, n, axis=1), n, axis=2).reshape(layer.n_out, h * w * c)
    return Layer(weights, **extra)


def truncate(net: "Network", steps: int) -> "Network":
    """The network run for only its first ``steps`` steps: the same layers with every per-step table cut to its first
    ``steps`` rows (a static early exit, BNTT's). Exact for the "direct" and "rate" encodings, whose first T' steps do
    not depend on T (the rate code draws step-major); the latency code's spike times scale with T, so a latency-coded
    network is refused. The metadata is kept, with ``truncated_from`` = the original T."""
    import copy
    if not isinstance(net, Network):
        raise TypeError(f"net must be a bsnn_hw.Network, not {type(net).__name__}")
    if not _is_int(steps):
        raise TypeError(f"steps must be an int, not {steps!r}")
    if not 1 <= steps <= net.timesteps:
        raise ValueError(f"steps must be in 1..{net.timesteps} (the network's T), not {steps}")
    if net.encoding == "latency" and steps != net.timesteps:
        raise ValueError("a latency-coded network cannot be truncated: its spike times scale with T, so its first "
                         f"{steps} steps differ from a {steps}-step code's; use a rate or direct encoding")
    layers = []
    for layer in net.layers:
        if getattr(layer, "has_affine", False):
            layer = copy.copy(layer)
            for name in ("step_scale", "step_bias"):
                table = getattr(layer, name)
                if table is not None:
                    table = np.array(table[:steps])
                    table.setflags(write=False)
                    setattr(layer, name, table)
        layers.append(layer)
    meta = dict(net.metadata)
    meta.setdefault("truncated_from", net.timesteps)
    return Network(layers, steps, net.readout, net.encoding, net.seed, metadata=meta,
                   ensemble=net.ensemble or None)


def _check_ensemble(ensemble, layers) -> tuple:
    """The ensemble's member weights as a tuple (members) of tuples (layers with weights) of read-only arrays;
    ``()`` for None. Each array is checked as the layer's own weights are (same shape, same weight_bits; 1-bit
    weights a bool array): nothing is converted or rounded."""
    if ensemble is None:
        return ()
    if isinstance(ensemble, (str, bytes, dict, np.ndarray)):
        raise TypeError(f"ensemble must be a list of members (each a list of weight arrays), not "
                        f"{type(ensemble).__name__}")
    try:
        ensemble = list(ensemble)
    except TypeError:
        raise TypeError(f"ensemble must be a list of members (each a list of weight arrays), not "
                        f"{type(ensemble).__name__}") from None
    if not ensemble:
        raise ValueError("an ensemble needs at least 1 member, not 0 (pass None for a plain network)")
    weighted = [layer for layer in layers if layer.has_neurons]
    out = []
    for m, member in enumerate(ensemble):
        if isinstance(member, np.ndarray) or not isinstance(member, (list, tuple)):
            raise TypeError(f"ensemble member {m} must be a list of weight arrays (one per layer with weights), not "
                            f"{type(member).__name__}")
        if len(member) != len(weighted):
            raise ValueError(f"ensemble member {m} has {len(member)} weight arrays but the network has "
                             f"{len(weighted)} layers with weights")
        arrays = []
        for i, (w, layer) in enumerate(zip(member, weighted)):
            try:
                w, _ = _check_weights(w, layer.weight_bits)
            except (TypeError, ValueError) as e:
                raise type(e)(f"ensemble member {m}, weighted layer {i}: {e}") from None
            if w.shape != layer.weights.shape:
                raise ValueError(f"ensemble member {m}, weighted layer {i}: weights must have the layer's shape "
                                 f"{layer.weights.shape}, not {w.shape}")
            w.setflags(write=False)
            arrays.append(w)
        out.append(tuple(arrays))
    return tuple(out)


def random_network(sizes: Sequence[int], timesteps: int = 16, leak_shift: int | None = 4, reset: str = "subtract",
                   membrane_bits: int = 16, fire_once: bool = False, readout: str = "count",
                   encoding: str = "rate", threshold: int | None = None, seed: int = 0) -> Network:
    """A random untrained network, for trying the hardware flow without training.

    Weights are fair coin flips; thresholds are ``threshold`` for every neuron, or by default random integers around
    sqrt(n_in) / 2 (clamped into the legal range) so that some neurons fire and some do not."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"sizes must be a sequence of at least two positive ints, not {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < 2 or any(not _is_int(s) or s < 1 for s in sizes):
        raise ValueError(f"sizes must be at least two positive ints (inputs, then each layer's outputs), not {sizes}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, not {seed!r}")
    rng = np.random.default_rng(seed)
    hi = (1 << (membrane_bits - 1)) - 1 if _is_int(membrane_bits) and 2 <= membrane_bits <= 32 else None
    if threshold is not None and hi is not None:
        _check_threshold(threshold, 1, membrane_bits)     # even where no layer would use it (a membrane readout)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        weights = rng.random((n_out, n_in)) < 0.5
        if readout == "membrane" and i == len(sizes) - 2:
            th = None
        elif threshold is not None:
            th = threshold
        else:
            centre = max(1.0, np.sqrt(n_in) / 2)
            th = np.round(rng.uniform(0.5 * centre, 1.5 * centre, n_out)).astype(np.int64)
            th = np.clip(th, 1, hi if hi is not None else th.max())
        layers.append(Layer(weights, th, leak_shift, reset, membrane_bits, fire_once))
    return Network(layers, timesteps, readout, encoding,
                   metadata={"origin": "random", "seed": seed})
