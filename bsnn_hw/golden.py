"""The golden model: the numeric contract (docs/spec.md), vectorized over batch and steps.

Layer l at step t, for every neuron j (all integers, exact)::

    I_t[j] = 2 * popcount(s_t & B[j]) - popcount(s_t)
    V_t[j] = sat_M(V_{t-1}[j] - leak(V_{t-1}[j]) + I_t[j])        leak(v) = v >>> k, or 0 without a leak
    fire   = V_t[j] > theta[j]                                     (never, for a "membrane" readout's last layer)
    reset  : V_t[j] -= theta[j]  ("subtract")   or   V_t[j] = 0  ("zero"),  where fire
    out    = fire, or fire and no earlier spike in the sample when fire_once

A layer's input at step t is the previous layer's output at step t, so the model runs layer by layer: the synaptic
input of all T steps is one integer product, and only the membrane recurrence loops over t.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import contract
from .network import Network


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


def _synaptic_input(spikes: np.ndarray, weights: np.ndarray, method: str) -> np.ndarray:
    """I for every (batch, step): (B, T, n_in) bool x (n_out, n_in) bool -> (B, T, n_out) int64."""
    b, t, n_in = spikes.shape
    if method == "matmul":
        # float32 is exact: every partial sum is an integer of magnitude <= n_in < 2^24.
        if n_in >= 1 << 24:
            raise ValueError(f"n_in = {n_in} is too large for the float32 path; use method='popcount'")
        w = contract.bit_to_weight(weights).astype(np.float32)
        cur = spikes.reshape(b * t, n_in).astype(np.float32) @ w.T
        return cur.astype(np.int64).reshape(b, t, -1)
    if method == "popcount":
        s = np.packbits(spikes, axis=-1, bitorder="little")                    # (B, T, nb)
        wp = np.packbits(weights, axis=-1, bitorder="little")                  # (n_out, nb)
        active = np.bitwise_count(s).sum(-1, dtype=np.int64)                   # (B, T)
        out = np.empty((b, t, weights.shape[0]), dtype=np.int64)
        for j in range(weights.shape[0]):
            agree = np.bitwise_count(s & wp[j]).sum(-1, dtype=np.int64)
            out[:, :, j] = 2 * agree - active
        return out
    raise ValueError(f"method must be 'matmul' or 'popcount', not {method!r}")


def simulate(net: Network, spikes, record: bool = False, method: str = "matmul") -> Result:
    """Run ``net`` on spike trains ``spikes`` (bool (batch, T, n_in)); see :class:`Result`."""
    spikes = np.asarray(spikes)
    if spikes.dtype != bool:
        raise TypeError(f"spikes must be a bool array, not {spikes.dtype}")
    if spikes.ndim != 3 or spikes.shape[1:] != (net.timesteps, net.n_in):
        raise ValueError(f"spikes must have shape (batch, {net.timesteps}, {net.n_in}), not {spikes.shape}")
    batch, steps, _ = spikes.shape
    counts, membranes, firsts, recorded = [], [], [], []
    x = spikes
    for li, layer in enumerate(net.layers):
        current = _synaptic_input(x, layer.weights, method)
        lo, hi = contract.membrane_range(layer.membrane_bits)
        fires = net.layer_fires(li)
        theta = layer.threshold if fires else None
        v = np.zeros((batch, layer.n_out), dtype=np.int64)
        fired = np.zeros((batch, layer.n_out), dtype=bool)
        out = np.zeros((batch, steps, layer.n_out), dtype=bool)
        first = np.full((batch, layer.n_out), -1, dtype=np.int64)
        for t in range(steps):
            if layer.leak_shift is not None:
                v = v - (v >> layer.leak_shift)
            v = np.clip(v + current[:, t], lo, hi)
            if not fires:
                continue
            fire = v > theta
            if layer.reset == "subtract":
                v = np.where(fire, v - theta, v)
            else:
                v = np.where(fire, 0, v)
            spike = fire & ~fired if layer.fire_once else fire
            fired |= fire
            first = np.where(spike & (first < 0), t, first)
            out[:, t] = spike
        counts.append(out.sum(axis=1, dtype=np.int64))
        membranes.append(v)
        firsts.append(first)
        if record:
            recorded.append(out)
        x = out
    return Result(counts, membranes, firsts, readout(net.readout, counts[-1], membranes[-1], firsts[-1], steps),
                  recorded if record else None)


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


def run(net: Network, x, seed=None, record: bool = False) -> Result:
    """Encode uint8 inputs with the network's encoding (or take spike trains for "direct") and simulate."""
    return simulate(net, net.encode(x, seed), record=record)
