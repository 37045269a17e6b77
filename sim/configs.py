"""Stimulus for the network bench: seeded random configurations and directed corner cases.

:func:`random_units` draws every parameter the hardware has - layer count and sizes, T, per-layer P and W, M, leak
(none or 1..M-1), reset mode, fire-once, readout, per-neuron thresholds (including 1 and the maximum 2^(M-1)-1),
weight and input densities, trace on/off, valid/ready stalls on both streams and a reset in the middle of an
inference - from one seed. :func:`directed_units` builds the corner cases of the contract by hand (saturation at
both ends, V equal to theta, both resets, fire-once, readout ties, leak of negative values, the "first" readout's
fallback), each with the property it exercises checked against the golden model up front, so a directed case that
stopped exercising its corner fails loudly instead of passing quietly.
"""
from __future__ import annotations

import numpy as np

from bsnn_hw import contract, golden
from bsnn_hw.network import Layer, Network

from .network import Unit


def _hw_config(net: Network, rng: np.random.Generator):
    from bsnn_hw.hdl import HwConfig, LayerConfig
    layers = []
    for layer in net.layers:
        p = int(rng.integers(1, layer.n_out + 1))
        w = int(rng.integers(1, layer.n_in + 1))
        layers.append(LayerConfig(p, w))
    return HwConfig(tuple(layers))


def random_network_config(rng: np.random.Generator, max_in: int = 40, max_hidden: int = 12,
                          max_layers: int = 3, max_t: int = 6) -> Network:
    n_layers = int(rng.integers(1, max_layers + 1))
    sizes = [int(rng.integers(1, max_in + 1))] + [int(rng.integers(1, max_hidden + 1)) for _ in range(n_layers)]
    timesteps = int(rng.integers(1, max_t + 1))
    readout = str(rng.choice(contract.READOUTS))
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        m = int(rng.choice([2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32]))
        hi = (1 << (m - 1)) - 1
        leak = None if rng.random() < 0.35 else int(rng.integers(1, m))
        density = rng.uniform(0.1, 0.9)
        weights = rng.random((n_out, n_in)) < density
        if i == n_layers - 1 and readout == "membrane":
            th = None if rng.random() < 0.5 else rng.integers(1, hi + 1, n_out)
        else:
            kind = rng.random()
            top = max(1, min(hi, int(np.sqrt(n_in) * 1.5) + 1))
            th = rng.integers(1, top + 1, n_out)
            if kind < 0.15:
                th[:] = hi                        # the largest threshold M can hold
            elif kind < 0.3:
                th[:] = 1
            elif kind < 0.4:
                th = np.full(n_out, int(rng.integers(1, top + 1)))     # uniform: the constant-threshold path
        layers.append(Layer(weights, th, leak, str(rng.choice(contract.RESET_MODES)), m, bool(rng.random() < 0.3)))
    return Network(layers, timesteps, readout, "direct", metadata={"origin": "sim.configs.random"})


def random_units(seed: int, count: int, samples: int = 2, **limits) -> list[Unit]:
    """``count`` random units from one seed (reproducible: the same seed gives the same units)."""
    rng = np.random.default_rng(seed)
    units = []
    for k in range(count):
        net = random_network_config(rng, **limits)
        density = rng.uniform(0.05, 0.95)
        spikes = rng.random((samples, net.timesteps, net.n_in)) < density
        stalls = rng.random() < 0.5
        units.append(Unit(
            net=net, spikes=spikes, config=_hw_config(net, rng), trace=bool(rng.random() < 0.8),
            stall_in=float(rng.uniform(0.1, 0.6)) if stalls else 0.0,
            stall_out=float(rng.uniform(0.1, 0.6)) if stalls else 0.0,
            seed=int(rng.integers(1 << 30)), reset_mid=bool(rng.random() < 0.3),
            name=f"r{seed}-{k}"))
    return units


def describe_unit(u: Unit) -> str:
    net = u.net
    cfg = ",".join(f"P{lc.parallel}W{lc.width}" for lc in u.config.layers) if u.config else "default"
    lay = ";".join(f"M{l.membrane_bits} k{l.leak_shift} {l.reset[0]}{' fo' if l.fire_once else ''}"
                   for l in net.layers)
    return (f"{u.name}: {'-'.join(map(str, net.sizes))} T={net.timesteps} {net.readout} [{cfg}] [{lay}] "
            f"trace={u.trace} stalls={u.stall_in:.2f}/{u.stall_out:.2f} reset_mid={u.reset_mid}")


# --- directed corner cases -------------------------------------------------------------------------------------------

def _layer(weights, th, **kw):
    return Layer(np.asarray(weights, dtype=bool), th, **kw)


def _net(layers, t, readout="count"):
    return Network(layers, t, readout, "direct", metadata={"origin": "sim.configs.directed"})


def _spikes(pattern) -> np.ndarray:
    return np.asarray(pattern, dtype=bool)


def directed_units() -> list[Unit]:
    """Hand-made corner cases; each asserts (on the golden model) that it really reaches its corner."""
    from bsnn_hw.hdl import HwConfig, LayerConfig
    units = []

    def add(name, net, spikes, check, config=None, **kw):
        spikes = _spikes(spikes)
        ref = golden.simulate(net, spikes, record=True)
        assert check(ref), f"directed case {name!r} no longer reaches its corner"
        units.append(Unit(net=net, spikes=spikes, config=config, trace=kw.pop("trace", True), name=name, **kw))

    n = 12
    all_in = np.ones((1, 4, n), dtype=bool)
    # Saturation at the top: all +1 weights, every input active, M = 4 (range -8..7), theta = 7 = the maximum:
    # V climbs to 7 and clamps there; 7 > 7 is false, so it never fires.
    add("sat-high", _net([_layer(np.ones((3, n)), 7, membrane_bits=4)], 4), all_in,
        lambda r: (r.membrane[0] == 7).all() and r.counts[0].sum() == 0)
    # Saturation at the bottom: all -1 weights, V clamps at -8; with a leak of 1 (-8 - (-4) - 12 -> -16 -> -8).
    add("sat-low", _net([_layer(np.zeros((3, n)), 1, membrane_bits=4, leak_shift=1)], 4), all_in,
        lambda r: (r.membrane[0] == -8).all())
    # V == theta does not fire (strict), one more input does: 3 active +1 inputs, theta 3, no leak.
    w = np.zeros((2, 6), dtype=bool)
    w[:, :3] = True
    sp = np.zeros((1, 3, 6), dtype=bool)
    sp[0, 0, :3] = True          # step 0: V = 3 (== theta, no spike)
    sp[0, 2, 0] = True           # step 2: V = 4 > 3, spike
    add("v-equals-theta", _net([_layer(w, 3, membrane_bits=8)], 3), sp,
        lambda r: r.spikes[0][0, 0].sum() == 0 and r.spikes[0][0, 2].all())
    # Both reset modes on the same stimulus: subtract keeps V - theta, zero clears.
    for mode in contract.RESET_MODES:
        add(f"reset-{mode}", _net([_layer(np.ones((2, n)), 5, membrane_bits=8, reset=mode)], 4), all_in,
            (lambda r: (r.membrane[0] == 28).all() and (r.counts[0] == 4).all()) if mode == "subtract"
            else (lambda r: (r.membrane[0] == 0).all() and (r.counts[0] == 4).all()))
    # Fire-once: the neuron would fire every step; only the first spike comes out, the membrane keeps resetting.
    add("fire-once", _net([_layer(np.ones((3, n)), 2, membrane_bits=8, fire_once=True)], 5),
        np.ones((1, 5, n), dtype=bool), lambda r: (r.counts[0] == 1).all())
    # Readout ties toward the lowest index: identical neurons, every readout.
    same = np.tile(np.random.default_rng(7).random((1, 10)) < 0.6, (4, 1))
    tie_in = np.random.default_rng(8).random((2, 4, 10)) < 0.7
    for ro in contract.READOUTS:
        last = _layer(same, None if ro == "membrane" else 2, membrane_bits=8)
        add(f"tie-{ro}", _net([last], 4, ro), tie_in, lambda r: (r.prediction == 0).all())
    # Ties between non-zero indices: neurons 1 and 3 identical and strongest, neuron 0 weakest.
    w = np.zeros((4, 8), dtype=bool)
    w[1] = w[3] = True
    w[2, :6] = True
    add("tie-count-1-3", _net([_layer(w, 2, membrane_bits=8)], 4), np.ones((1, 4, 8), dtype=bool),
        lambda r: (r.prediction == 1).all() and r.counts[0][0, 1] == r.counts[0][0, 3])
    # "first" readout with no output spike at all: falls back to the membrane argmax.
    w = np.zeros((3, 8), dtype=bool)
    w[2, :3] = True
    add("first-fallback", _net([_layer(w, 100, membrane_bits=10)], 3, "first"), np.ones((1, 3, 8), dtype=bool),
        lambda r: r.counts[0].sum() == 0 and (r.prediction == 2).all())
    # "first" readout: a later index spikes earlier than a lower one.
    w = np.zeros((3, 8), dtype=bool)
    w[0, :5] = True
    w[2, :] = True
    add("first-earliest", _net([_layer(w, 6, membrane_bits=10)], 4, "first"), np.ones((1, 4, 8), dtype=bool),
        lambda r: (r.prediction == 2).all() and r.counts[0][0, 0] > 0)
    # Leak of negative values: floor rounding (v = -1 -> -1 - (-1) = 0; -3 -> -1 for k = 1) over several steps.
    w = np.zeros((2, 6), dtype=bool)
    sp = np.zeros((1, 6, 6), dtype=bool)
    sp[0, 0, :3] = True                          # V = -3 at step 0, then leaks toward 0 with no input
    sp[0, 3, :1] = True
    for k in (1, 2):
        add(f"leak-negative-k{k}", _net([_layer(w, 1, membrane_bits=8, leak_shift=k)], 6), sp,
            lambda r: r.membrane[0].min() <= 0)
    # A deep leak at the saturation floor: M = 3, V at -4, k = 2.
    add("leak-at-floor", _net([_layer(np.zeros((2, 8)), 1, membrane_bits=3, leak_shift=2)], 5),
        np.ones((1, 5, 8), dtype=bool), lambda r: (r.membrane[0] == -4).all())
    # Smallest everything: 1 input, 1 neuron, T = 1, M = 2 (theta can only be 1).
    add("minimal", _net([_layer(np.ones((1, 1)), 1, membrane_bits=2)], 1), [[[True]], [[False]]],
        lambda r: True)
    # Padding bits: n_in = 13 with W = 4 (last word has 1 real bit), inputs random; the bench drives zeros past n_in
    # and the hardware must mask whatever comes anyway (the HDL's own tests drive garbage there).
    net = _net([_layer(np.random.default_rng(3).random((5, 13)) < 0.5, 2, membrane_bits=6),
                _layer(np.random.default_rng(4).random((3, 5)) < 0.5, 1, membrane_bits=6)], 5)
    add("padding-w4", net, np.random.default_rng(5).random((3, 5, 13)) < 0.5, lambda r: True,
        config=HwConfig((LayerConfig(2, 4), LayerConfig(3, 5))))
    # Full parallel and full width, and the opposite (P = 1, W = 1), on a two-layer network with stalls.
    rng = np.random.default_rng(11)
    net = _net([_layer(rng.random((6, 10)) < 0.5, 2, membrane_bits=7, leak_shift=3),
                _layer(rng.random((4, 6)) < 0.5, 1, membrane_bits=7, fire_once=True)], 4, "first")
    sp = rng.random((3, 4, 10)) < 0.5
    add("P-max-W-max", net, sp, lambda r: True, config=HwConfig((LayerConfig(6, 10), LayerConfig(4, 6))),
        stall_in=0.4, stall_out=0.4, seed=5)
    add("P-1-W-1", net, sp, lambda r: True, config=HwConfig((LayerConfig(1, 1), LayerConfig(1, 1))),
        stall_in=0.3, stall_out=0.5, seed=6, reset_mid=True)
    return units
