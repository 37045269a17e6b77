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


def _weight(layer, *index) -> int:
    """One weight as an integer: a 1-bit weight is +1 for a set bit, -1 otherwise; a k-bit weight as stored."""
    w = layer.weights[index]
    if layer.weight_bits == 1:
        return 1 if w else -1
    return int(w)


def dense_current(layer, s, j) -> int:
    """I[j] = sum over inputs of s[i] * w[j][i] (s[i] a spike 0/1, or a "pixel" intensity 0..255)."""
    current = 0
    for i in range(len(s)):
        if s[i]:
            current += int(s[i]) * _weight(layer, j, i)
    return current


def conv_current(layer, s, j) -> int:
    """Neuron j = (y, x, o) of a conv layer (position-major numbering): the sum over the kernel window of
    s[y*stride + ky - pad][x*stride + kx - pad][c] * w[o][ky][kx][c], positions outside the map contributing nothing."""
    h, w, c_in = layer.in_shape
    ho, wo, c_out = layer.out_shape
    o = j % c_out
    x = (j // c_out) % wo
    y = j // (c_out * wo)
    current = 0
    for ky in range(layer.kernel):
        for kx in range(layer.kernel):
            iy = y * layer.stride + ky - layer.padding
            ix = x * layer.stride + kx - layer.padding
            if not (0 <= iy < h and 0 <= ix < w):
                continue                  # zero padding: no spike there
            for c in range(c_in):
                if s[(iy * w + ix) * c_in + c]:
                    current += int(s[(iy * w + ix) * c_in + c]) * _weight(layer, o, ky, kx, c)
    return current


def affine_drive(layer, t, j, current) -> int:
    """Contract v3: the drive floor((a[t][c] * I + b[t][c]) / 2^F), c = j's output channel (j itself for dense), and
    a = 2^F when the layer has no scale table."""
    c = j % layer.out_shape[-1] if layer.kind == "conv2d" else j
    frac = layer.step_frac
    a = 2 ** frac if layer.step_scale is None else int(layer.step_scale[t][c])
    return (a * current + int(layer.step_bias[t][c])) // (2 ** frac)


def run_pool(layer, inputs):
    """OR pooling, one sample: out[t][(y, x, c)] = any input of the window spiked at t."""
    h, w, c_in = layer.in_shape
    ho, wo, _ = layer.out_shape
    n = layer.window
    out = []
    for s in inputs:
        row = [0] * (ho * wo * c_in)
        for y in range(ho):
            for x in range(wo):
                for c in range(c_in):
                    hit = 0
                    for i in range(n):
                        for k in range(n):
                            if s[((y * n + i) * w + (x * n + k)) * c_in + c]:
                                hit = 1
                    row[(y * wo + x) * c_in + c] = hit
        out.append(row)
    return out, [0] * (ho * wo * c_in)


def sum_pool(in_shape, n, s):
    """Sum pooling of one step's map (docs/spec.md section 8.5): out[(y, x, c)] = the number of spikes in the n x n
    window at (y n, x n), rows and columns past the last whole window dropped."""
    h, w, c_in = in_shape
    ho, wo = h // n, w // n
    out = [0] * (ho * wo * c_in)
    for y in range(ho):
        for x in range(wo):
            for c in range(c_in):
                for i in range(n):
                    for k in range(n):
                        out[(y * wo + x) * c_in + c] += int(s[((y * n + i) * w + (x * n + k)) * c_in + c])
    return out


def run_layer(layer, fires: bool, inputs: list[list[int]]):
    """One layer on one sample. ``inputs[t][i]`` in {0, 1}. Returns (spikes[t][j], membrane after the last step)."""
    if layer.kind == "pool":
        return run_pool(layer, inputs)
    n_out = layer.n_out
    current_of = conv_current if layer.kind == "conv2d" else dense_current
    m = layer.membrane_bits
    lo, hi = -(2 ** (m - 1)), 2 ** (m - 1) - 1
    v = [0] * n_out                       # all state is 0 at the start of each sample
    has_fired = [False] * n_out
    out = []
    for t, s in enumerate(inputs):
        row = []
        for j in range(n_out):
            current = current_of(layer, s, j)
            if getattr(layer, "step_bias", None) is not None:
                current = affine_drive(layer, t, j, current)
            old = v[j]
            leak = 0 if layer.leak_shift is None else _floor_shift(old, layer.leak_shift)
            new = old - leak + current    # exact, then clamped once
            if new > hi:
                new = hi
            if new < lo:
                new = lo
            spike = 0
            if fires:
                # conv thresholds are per output channel, the channel being the fastest index
                theta = int(layer.threshold[j % layer.out_shape[-1]]) if layer.kind == "conv2d" \
                    else int(layer.threshold[j])
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
    x = [[int(b) for b in row] for row in spikes]      # spikes 0/1, or "pixel" intensities
    trains, counts, membranes, firsts = [], [], [], []
    n_layers = len(net.layers)
    for li, layer in enumerate(net.layers):
        fires = layer.kind != "pool" and not (net.readout == "membrane" and li == n_layers - 1)
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
    """Every sample of ``spikes`` (batch, T, n_in): a list of :func:`run_sample` results. A "pixel" network takes
    intensities (batch, n_in) instead: each is the first layer's input at every one of the T steps."""
    if net.encoding == "pixel":
        return [run_sample(net, [[int(v) for v in sample]] * net.timesteps) for sample in spikes]
    return [run_sample(net, [list(map(bool, row)) for row in sample]) for sample in spikes]
