"""Ensembles of binary networks (docs/spec.md section 10): S member networks that share everything but their weights.

A :class:`~bsnn_hw.network.Network` may carry an ensemble (``net.ensemble``, stored in format version 3 of the
artifact). ``net`` itself is the MAP network, so every tool that takes a network runs the MAP network; this module
runs the members. Every member is run by the contract (:func:`bsnn_hw.golden.simulate`) on the SAME input spikes, and
the ensemble's integers are defined from the members' readout scores::

    score_m[c]  = counts of the last layer (readout "count")  or  its final membrane (readout "membrane")
    totals[c]   = sum_m score_m[c]
    votes[c]    = #{m : class_m = c}          class_m = the member's own readout class (argmax score_m, lowest index)
    prediction  = argmax_c totals[c]          ties to the lowest index (the contract's argmax)

Readout "first" has no additive score and is refused. The confidence (class probabilities, for NLL, Brier score and
ECE) is a host-side function of (totals, votes, S, scale): :func:`confidence`.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np

from . import golden
from .network import Network

CONFIDENCES = ("mean-logit", "votes")
DEFAULT_CONFIDENCE = "mean-logit"
VOTE_PRIOR = 0.5            # "votes": Jeffreys-style pseudo-count per class


@dataclasses.dataclass
class EnsembleResult:
    """What :func:`simulate` returns (N samples, C classes, S members).

    totals      (N, C) int64   sum over members of each member's readout score
    votes       (N, C) int64   how many members chose each class
    prediction  (N,)   int64   argmax of totals, ties to the lowest index
    members     list of S golden Results, in member order
    """
    totals: np.ndarray
    votes: np.ndarray
    prediction: np.ndarray
    members: list


def members(net: Network) -> list[Network]:
    """The S member networks of ``net``'s ensemble (``[]`` for a plain network): each a complete Network equal to
    ``net`` except the weights of its layers with weights; no metadata, no ensemble of their own."""
    out = []
    for weights in net.ensemble:
        layers, it = [], iter(weights)
        for layer in net.layers:
            if layer.has_neurons:
                layer = copy.copy(layer)
                layer.weights = next(it)            # validated by Network (same shape and weight_bits)
            layers.append(layer)
        out.append(Network(layers, net.timesteps, net.readout, net.encoding, net.seed))
    return out


def member_scores(net: Network, result: golden.Result) -> np.ndarray:
    """A member's readout score per class (N, C) int64: last-layer spike counts ("count") or final membrane
    ("membrane"). Readout "first" is refused (ValueError)."""
    check_readout(net)
    last = result.counts[-1] if net.readout == "count" else result.membrane[-1]
    return np.asarray(last, dtype=np.int64)


def check_readout(net: Network) -> None:
    if net.readout == "first":
        raise ValueError("an ensemble needs an additive readout score, 'count' or 'membrane'; readout 'first' "
                         "(earliest spike) is not supported for ensembles")


def _need_ensemble(net: Network) -> None:
    if not isinstance(net, Network):
        raise TypeError(f"net must be a bsnn_hw.Network, not {type(net).__name__}")
    if not net.ensemble:
        raise ValueError("the network carries no ensemble (train one with `bsnn-hw train --method bisnn`)")
    check_readout(net)


def combine(nets: list, results: list) -> EnsembleResult:
    """totals, votes and prediction from the members' golden Results (docs/spec.md section 10)."""
    scores = np.stack([member_scores(n, r) for n, r in zip(nets, results)])       # (S, N, C)
    totals = scores.sum(0)
    n_classes = scores.shape[2]
    votes = np.zeros_like(totals)
    for r in results:
        votes += np.eye(n_classes, dtype=np.int64)[np.asarray(r.prediction, dtype=np.int64)]
    return EnsembleResult(totals, votes, np.argmax(totals, axis=1).astype(np.int64), list(results))


def simulate(net: Network, spikes, method: str = "auto") -> EnsembleResult:
    """Run every member of ``net``'s ensemble on the same ``spikes`` (bool (N, T, n_in), as
    :func:`bsnn_hw.golden.simulate` takes them) and combine them."""
    _need_ensemble(net)
    nets = members(net)
    return combine(nets, [golden.simulate(m, spikes, method=method) for m in nets])


def run(net: Network, x, seed=None, method: str = "auto") -> EnsembleResult:
    """Encode uint8 inputs (N, n_in) once with the network's encoder (and seed, unless given), then
    :func:`simulate`: every member sees the same spikes."""
    _need_ensemble(net)
    return simulate(net, net.encode(x, seed), method=method)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def confidence(totals, votes, members: int, scale: float, kind: str = DEFAULT_CONFIDENCE) -> np.ndarray:
    """Class probabilities (N, C) float64 of an ensemble of ``members`` networks from its integers.

    ``"mean-logit"`` (the default, docs/spec.md section 10): ``softmax(scale * totals / S)``, the softmax of the
    members' mean score with ``scale`` the trainer's output scale (the logit per unit of score); for S = 1 it is the
    single network's own softmax. ``"votes"``: ``(votes + 1/2) / (S + C/2)``, vote fractions with half a pseudo-vote
    per class (no zero probabilities, so the NLL stays finite)."""
    totals = np.asarray(totals)
    votes = np.asarray(votes)
    if totals.ndim != 2 or votes.shape != totals.shape:
        raise ValueError(f"totals and votes must both be (N, C) arrays, not {totals.shape} and {votes.shape}")
    if not isinstance(members, (int, np.integer)) or members < 1:
        raise ValueError(f"members must be a positive int, not {members!r}")
    if kind == "mean-logit":
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be a positive number, not {scale!r}")
        return softmax(float(scale) * totals.astype(np.float64) / members)
    if kind == "votes":
        return (votes + VOTE_PRIOR) / (members + VOTE_PRIOR * votes.shape[1])
    raise ValueError(f"confidence must be one of {', '.join(CONFIDENCES)}, not {kind!r}")


def output_scale(net: Network) -> float | None:
    """The logit per unit of readout score the trainer used (``metadata["metrics"]["output_scale"]``), or None."""
    value = net.meta("metrics").get("output_scale")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value > 0:
        return float(value)
    return None
