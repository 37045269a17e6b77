"""A deliberately simple reference of the numeric contract v1, for differential tests of ``bsnn_hw.golden``.

Written from the contract's text (issue 2 / docs/spec.md), not from golden.py: one sample, one step, one neuron at a
time, with plain Python integers (unbounded, so no overflow can hide a bug). Slow by design; only use it on small
networks. Nothing here is vectorized and nothing is imported from the golden model. It reads only the parameters of
``bsnn_hw.Layer`` / ``bsnn_hw.Network`` (their attribute names are the public API).
"""
from __future__ import annotations


def _floor_shift(v: int, k: int) -> int:
    """v >>> k, rounding toward minus infinity, written as a floor division so it does not lean on ``>>``."""
    return v // (2 ** k)


def run_layer(layer, fires: bool, inputs: list[list[int]]):
    """One layer on one sample. ``inputs[t][i]`` in {0, 1}. Returns (spikes[t][j], membrane after the last step)."""
    n_out, n_in = layer.weights.shape
    m = layer.membrane_bits
    lo, hi = -(2 ** (m - 1)), 2 ** (m - 1) - 1
    v = [0] * n_out                       # all state is 0 at the start of each sample
    has_fired = [False] * n_out
    out = []
    for s in inputs:
        row = []
        for j in range(n_out):
            # synaptic input: sum over inputs of s[i] * (+1 if bit else -1)
            current = 0
            for i in range(n_in):
                if s[i]:
                    current += 1 if layer.weights[j][i] else -1
            old = v[j]
            leak = 0 if layer.leak_shift is None else _floor_shift(old, layer.leak_shift)
            new = old - leak + current    # exact, then clamped once
            if new > hi:
                new = hi
            if new < lo:
                new = lo
            spike = 0
            if fires:
                theta = int(layer.threshold[j])
                if new > theta:           # strict: V == theta does not fire
                    new = new - theta if layer.reset == "subtract" else 0
                    if not (layer.fire_once and has_fired[j]):
                        spike = 1
                    has_fired[j] = True
            v[j] = new
            row.append(spike)
        out.append(row)
    return out, v


def _argmax(values) -> int:
    best = 0
    for j in range(1, len(values)):
        if values[j] > values[best]:      # strict: ties keep the lowest index
            best = j
    return best


def run_sample(net, spikes):
    """One sample: ``spikes[t][i]`` bool (T, n_in). Returns a dict with per-layer spike trains, counts, membranes,
    first spike steps (-1 when none), and the predicted class."""
    x = [[1 if b else 0 for b in row] for row in spikes]
    trains, counts, membranes, firsts = [], [], [], []
    n_layers = len(net.layers)
    for li, layer in enumerate(net.layers):
        fires = not (net.readout == "membrane" and li == n_layers - 1)
        out, v = run_layer(layer, fires, x)
        n_out = len(v)
        trains.append(out)
        counts.append([sum(out[t][j] for t in range(len(out))) for j in range(n_out)])
        membranes.append(v)
        first = []
        for j in range(n_out):
            steps = [t for t in range(len(out)) if out[t][j]]
            first.append(steps[0] if steps else -1)
        firsts.append(first)
        x = out
    if net.readout == "count":
        pred = _argmax(counts[-1])
    elif net.readout == "membrane":
        pred = _argmax(membranes[-1])
    elif net.readout == "first":
        spiking = [j for j in range(len(firsts[-1])) if firsts[-1][j] >= 0]
        if spiking:
            earliest = min(firsts[-1][j] for j in spiking)
            pred = min(j for j in spiking if firsts[-1][j] == earliest)
        else:
            pred = _argmax(membranes[-1])
    else:
        raise ValueError(f"unknown readout {net.readout!r}")
    return {"spikes": trains, "counts": counts, "membrane": membranes, "first_step": firsts, "prediction": pred}


def run(net, spikes):
    """Every sample of ``spikes`` (batch, T, n_in): a list of :func:`run_sample` results."""
    return [run_sample(net, [list(map(bool, row)) for row in sample]) for sample in spikes]
