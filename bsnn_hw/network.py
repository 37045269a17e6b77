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


class Layer:
    """One fully-connected spiking layer.

    Arguments
    ---------
    weights : bool array (n_out, n_in)
        Weight bits, True = +1, False = -1.
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
    """

    def __init__(self, weights, threshold, leak_shift=None, reset="subtract", membrane_bits=16, fire_once=False):
        w = np.asarray(weights)
        if w.dtype != bool:
            raise TypeError(f"weights must be a bool array (True = +1, False = -1), not {w.dtype}; "
                            f"convert +-1 weights with `weights > 0`")
        if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
            raise ValueError(f"weights must have shape (n_out, n_in) with both at least 1, not {w.shape}")
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
        if reset not in contract.RESET_MODES:
            raise ValueError(f"reset must be one of {', '.join(map(repr, contract.RESET_MODES))}, not {reset!r}")
        if not isinstance(fire_once, (bool, np.bool_)):
            raise TypeError(f"fire_once must be a bool, not {fire_once!r}")
        n_out = w.shape[0]
        if threshold is not None:
            threshold = _check_threshold(threshold, n_out, membrane_bits)
        self.weights = w.copy()
        self.weights.setflags(write=False)
        self.threshold = threshold
        if threshold is not None:
            self.threshold.setflags(write=False)
        self.leak_shift = leak_shift
        self.reset = reset
        self.membrane_bits = membrane_bits
        self.fire_once = bool(fire_once)

    @property
    def n_in(self) -> int:
        return self.weights.shape[1]

    @property
    def n_out(self) -> int:
        return self.weights.shape[0]

    def params(self) -> dict[str, Any]:
        """The scalar parameters (everything but weights and thresholds)."""
        return dict(leak_shift=self.leak_shift, reset=self.reset, membrane_bits=self.membrane_bits,
                    fire_once=self.fire_once)

    def __eq__(self, other):
        if not isinstance(other, Layer):
            return NotImplemented
        same_th = (self.threshold is None and other.threshold is None) or (
            self.threshold is not None and other.threshold is not None
            and np.array_equal(self.threshold, other.threshold))
        return same_th and np.array_equal(self.weights, other.weights) and self.params() == other.params()

    def __repr__(self):
        leak = "none" if self.leak_shift is None else f">>>{self.leak_shift}"
        return (f"Layer({self.n_in}->{self.n_out}, M={self.membrane_bits}, leak={leak}, reset={self.reset}, "
                f"fire_once={self.fire_once})")


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
    encoding : "direct", "rate" or "latency"
        How uint8 inputs become spikes (:mod:`bsnn_hw.encode`).
    seed : int
        The rate encoder's LFSR seed, 1..65535.
    metadata : dict
        Free-form JSON-serializable information (training config, accuracy...) carried in the artifact.
    """

    def __init__(self, layers: Sequence[Layer], timesteps: int, readout: str = "count", encoding: str = "rate",
                 seed: int = 1, metadata: dict | None = None):
        if isinstance(layers, Layer) or isinstance(layers, (str, bytes, dict, np.ndarray)):
            raise TypeError(f"layers must be a list of bsnn_hw.Layer, not {type(layers).__name__}")
        try:
            layers = list(layers)
        except TypeError:
            raise TypeError(f"layers must be a list of bsnn_hw.Layer, not {type(layers).__name__}") from None
        if not layers:
            raise ValueError("a network needs at least one layer, not 0")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} must be a bsnn_hw.Layer, not {type(layer).__name__}")
        for i in range(1, len(layers)):
            if layers[i].n_in != layers[i - 1].n_out:
                raise ValueError(f"layer {i} has n_in = {layers[i].n_in} but layer {i - 1} has n_out = "
                                 f"{layers[i - 1].n_out}; they must match")
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
        for i, layer in enumerate(layers):
            last_membrane = (i == len(layers) - 1 and readout == "membrane")
            if layer.threshold is None and not last_membrane:
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

    def weight_bits(self) -> int:
        return sum(layer.n_in * layer.n_out for layer in self.layers)

    def synaptic_ops(self) -> int:
        """Synaptic operations per inference: every weight is visited once per step."""
        return self.timesteps * self.weight_bits()

    # --- convenience --------------------------------------------------------------------------------------------
    def encode(self, x, seed=None) -> np.ndarray:
        """Encode uint8 inputs (batch, n_in) with this network's encoding (and its seed unless one is given)."""
        from . import encode
        if self.encoding == "direct":
            return encode.direct(x, self.timesteps, self.n_in)
        x = np.asarray(x)
        if x.ndim == 2 and x.shape[1] != self.n_in:
            raise ValueError(f"inputs have {x.shape[1]} features but the network has {self.n_in} inputs")
        return encode.encode(x, self.timesteps, self.encoding, self.seed if seed is None else seed)

    def save(self, path) -> None:
        from . import artifact
        artifact.save(self, path)

    def identity(self) -> str:
        """The model's identity: a SHA-256 of what the hardware computes (contract version, parameters, thresholds,
        weights), independent of the metadata (:func:`bsnn_hw.artifact.identity`)."""
        from . import artifact
        return artifact.identity(self)

    def __eq__(self, other):
        if not isinstance(other, Network):
            return NotImplemented
        return (self.layers == other.layers and self.timesteps == other.timesteps and self.readout == other.readout
                and self.encoding == other.encoding and self.seed == other.seed)

    def __repr__(self):
        return (f"Network({'-'.join(map(str, self.sizes))}, T={self.timesteps}, readout={self.readout}, "
                f"encoding={self.encoding})")


def random_network(sizes: Sequence[int], timesteps: int = 16, leak_shift: int | None = 4, reset: str = "subtract",
                   membrane_bits: int = 16, fire_once: bool = False, readout: str = "count",
                   encoding: str = "rate", threshold: int | None = None, seed: int = 0) -> Network:
    """A random untrained network, for trying the hardware flow without training.

    Weights are fair coin flips; thresholds are ``threshold`` for every neuron, or by default random integers around
    sqrt(n_in) / 2 (clamped into the legal range) so that some neurons fire and some do not."""
    sizes = list(sizes)
    if len(sizes) < 2 or any(not _is_int(s) or s < 1 for s in sizes):
        raise ValueError(f"sizes must be at least two positive ints (inputs, then each layer's outputs), not {sizes}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, not {seed!r}")
    rng = np.random.default_rng(seed)
    hi = (1 << (membrane_bits - 1)) - 1 if _is_int(membrane_bits) and 2 <= membrane_bits <= 32 else None
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
