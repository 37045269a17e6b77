"""Input encoders: uint8 intensities (batch, n) -> spike trains bool (batch, T, n), bit-exact per docs/spec.md.

- :func:`rate`: Bernoulli spikes from the contract's 16-bit LFSR. Every sample's stream starts from its seed, and the
  draws are taken in the order (t, i): step-major, then input index. Input i spikes at step t iff
  ``draw[t * n + i] < x[i]``, so P(spike) = x / 256 and an intensity of 0 never spikes.
- :func:`latency`: at most one spike per input, at step ``((255 - x) * T) // 256``; 0 never spikes.
- :func:`direct`: spike trains supplied by the caller, checked for shape and type.
- :func:`pixel`: no spikes: the intensities themselves are the first layer's input every step (contract v4); the
  "encoded" input is the checked uint8 array (batch, n), which :func:`bsnn_hw.golden.simulate` takes as it is.
"""
from __future__ import annotations

import numpy as np

from . import contract


def _check_intensities(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise TypeError(f"inputs must be uint8 intensities (0..255), not {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"inputs must have shape (batch, n), not {x.shape}")
    return x


def intensities(x, n_in: int | None = None, what: str = "pixels") -> np.ndarray:
    """Images as uint8 intensities (batch, n_in): uint8 as given, integers converted when every value is in 0..255;
    floats, bools, values out of range and a wrong shape are refused (a one-line TypeError / ValueError), never cast
    or reshaped. ``what`` names the argument in the message."""
    a = np.asarray(x)
    if a.dtype != np.uint8:
        if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{what} must be uint8 intensities 0..255 (or integers in that range), not {a.dtype}")
        if a.size and (int(a.min()) < 0 or int(a.max()) > 255):
            bad = int(a.min()) if a.min() < 0 else int(a.max())
            raise ValueError(f"{what} must be intensities 0..255, found {bad}")
        a = a.astype(np.uint8)
    if a.ndim != 2 or (n_in is not None and a.shape[1] != n_in):
        raise ValueError(f"{what} must have shape (images, {n_in if n_in is not None else 'n_in'}), not {a.shape}")
    return a


def _check_count(value, name: str) -> int:
    """A positive int (``timesteps``, ``n_in``); a float or bool is refused, not rounded."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
    return int(value)


def _check_timesteps(timesteps) -> int:
    return _check_count(timesteps, "timesteps")


def rate(x, timesteps: int, seed=1) -> np.ndarray:
    """Rate (Bernoulli) code. ``seed`` is an int in 1..65535 shared by every sample, or an int array (batch,) of
    per-sample seeds. Returns bool (batch, T, n)."""
    x = _check_intensities(x)
    timesteps = _check_timesteps(timesteps)
    batch, n = x.shape
    seed = contract.check_seed(seed)
    if seed.ndim == 0:
        draws = contract.lfsr_draws(seed, timesteps * n).reshape(1, timesteps, n)
    elif seed.shape == (batch,):
        draws = contract.lfsr_draws(seed, timesteps * n).reshape(batch, timesteps, n)
    else:
        raise ValueError(f"seed must be an int or an array of shape ({batch},), not shape {seed.shape}")
    return draws < x[:, None, :]


def latency(x, timesteps: int) -> np.ndarray:
    """Latency (time-to-first-spike) code: bool (batch, T, n) with at most one spike per input."""
    x = _check_intensities(x)
    timesteps = _check_timesteps(timesteps)
    t_spike = contract.latency_step(x, timesteps)
    return np.arange(timesteps)[None, :, None] == t_spike[:, None, :]


def direct(spikes, timesteps: int, n_in: int) -> np.ndarray:
    """Check caller-supplied spike trains: bool (batch, T, n_in)."""
    timesteps, n_in = _check_timesteps(timesteps), _check_count(n_in, "n_in")
    spikes = np.asarray(spikes)
    if spikes.dtype != bool:
        raise TypeError(f"direct spike trains must be a bool array, not {spikes.dtype}")
    if spikes.ndim != 3 or spikes.shape[1:] != (timesteps, n_in):
        raise ValueError(f"spike trains must have shape (batch, {timesteps}, {n_in}), not {spikes.shape}")
    return spikes


def pixel(x, n_in: int) -> np.ndarray:
    """The "pixel" input: uint8 intensities (batch, n_in), checked, the same every step (no spike trains)."""
    n_in = _check_count(n_in, "n_in")
    x = _check_intensities(x)
    if x.shape[1] != n_in:
        raise ValueError(f"inputs have {x.shape[1]} features but the network has {n_in} inputs")
    return x


def encode(x, timesteps: int, encoding: str, seed=1) -> np.ndarray:
    """Dispatch on the encoding's name. For "direct", ``x`` already is the spike trains; "pixel" gives the checked
    intensities (batch, n) themselves."""
    if encoding == "pixel":
        x = _check_intensities(x)
        return pixel(x, x.shape[1])
    if encoding == "rate":
        return rate(x, timesteps, seed)
    if encoding == "latency":
        return latency(x, timesteps)
    if encoding == "direct":
        x = np.asarray(x)
        if x.ndim != 3:
            raise ValueError(f"direct spike trains must have shape (batch, T, n_in), not {x.shape}")
        return direct(x, timesteps, x.shape[-1])
    raise ValueError(f"encoding must be one of {', '.join(contract.ENCODINGS)}, not {encoding!r}")
