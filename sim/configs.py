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


def _check_draw(seed=0, count=0, samples=1, cover=0, **limits) -> None:
    """The arguments of a random unit generator: seed, count and cover ints >= 0, samples and every limit
    (max_in, max_side, max_t, max_cycles, ...) ints >= 1; a one-line error otherwise (a 0 limit has no legal draw,
    and some draws would never end)."""
    for name, v, lo in (("seed", seed, 0), ("count", count, 0), ("cover", cover, 0), ("samples", samples, 1),
                        *((k, v, 1) for k, v in limits.items())):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"{name} must be an int, not {v!r}")
        if v < lo:
            raise ValueError(f"{name} must be at least {lo}, not {v}")


def random_network_config(rng: np.random.Generator, max_in: int = 40, max_hidden: int = 12,
                          max_layers: int = 3, max_t: int = 6) -> Network:
    """A small random network (the quick profile): every parameter random, sizes and T kept small."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator (np.random.default_rng), not {type(rng).__name__}")
    _check_draw(max_in=max_in, max_hidden=max_hidden, max_layers=max_layers, max_t=max_t)
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
            th = _thresholds(rng, n_in, n_out, hi, rng.random())
        layers.append(Layer(weights, th, leak, str(rng.choice(contract.RESET_MODES)), m, bool(rng.random() < 0.3)))
    return Network(layers, timesteps, readout, "direct", metadata={"origin": "sim.configs.random"})


def _thresholds(rng, n_in: int, n_out: int, hi: int, kind: float) -> np.ndarray:
    """Per-neuron thresholds: the maximum 2^(M-1)-1 (kind < 0.15), 1 (< 0.3), one value for all (< 0.4), else random
    around sqrt(n_in) so that some neurons fire."""
    top = max(1, min(hi, int(np.sqrt(n_in) * 1.5) + 1))
    th = rng.integers(1, top + 1, n_out)
    if kind < 0.15:
        th[:] = hi
    elif kind < 0.3:
        th[:] = 1
    elif kind < 0.4:
        th = np.full(n_out, int(rng.integers(1, top + 1)))
    return th


def random_units(seed: int, count: int, samples: int = 2, **limits) -> list[Unit]:
    """``count`` random units of the quick profile from one seed (reproducible: the same seed gives the same units)."""
    _check_draw(seed, count, samples, **limits)
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


# --- the whole legal space, corners on purpose -------------------------------------------------------------------------
# A random generator is only as good as the corners it reaches (a W > 64 ROM bug once lived because random networks
# never had more than 24 inputs). random_full_units draws every parameter over its whole legal range, each extreme
# with a fixed probability, and unit k is made to hit corner CORNERS[k mod len(CORNERS)] (the rest of it random), so
# any count >= len(CORNERS) reaches every corner; coverage() tallies what the units really hit (read from the units,
# not from the schedule), and the tests assert the tally and print it.

FULL_LIMITS = dict(max_in=320, max_hidden=40, max_layers=4, max_t=160, max_cycles=24_000, max_lane_bits=512)
WIDE_WORD = 64          # words wider than a 64-bit machine integer: the corner that once shipped a wrong ROM
ALL_ROMS_IN_LOGIC = 1 << 20   # logic_rom_bits above every ROM the generator draws: the other extreme of 0
MAX_MEMBERS = 8         # ensembles drawn with 2..MAX_MEMBERS members (BiSNN's S = 8)


def _corner_table():
    """name -> predicate(unit). The order is the schedule of random_full_units."""
    def layers(u):
        return list(zip(u.net.layers, u.config.layers, range(len(u.net.layers))))

    def fires(u, i):
        return u.net.layer_fires(i)

    c = {}
    for n in range(1, 5):
        c[f"layers={n}"] = (lambda n: lambda u: len(u.net.layers) == n)(n)
    c.update({
        "n_in=1": lambda u: u.net.n_in == 1,
        "n_in>=300": lambda u: u.net.n_in >= 300,
        "W=1": lambda u: any(lc.width == 1 for _, lc, _ in layers(u)),
        "W>64": lambda u: any(lc.width > WIDE_WORD for _, lc, _ in layers(u)),
        "W=n_in>64": lambda u: any(lc.width == l.n_in > WIDE_WORD for l, lc, _ in layers(u)),
        "W=n_in": lambda u: any(lc.width == l.n_in > 1 for l, lc, _ in layers(u)),
        "P=1<n_out": lambda u: any(lc.parallel == 1 < l.n_out for l, lc, _ in layers(u)),
        "P=n_out>1": lambda u: any(lc.parallel == l.n_out > 1 for l, lc, _ in layers(u)),
        "P∤n_out": lambda u: any(l.n_out % lc.parallel for l, lc, _ in layers(u)),
        "width-1 layer": lambda u: any(l.n_out == 1 for l in u.net.layers),
        "M=2": lambda u: any(l.membrane_bits == 2 for l in u.net.layers),
        "M=32": lambda u: any(l.membrane_bits == 32 for l in u.net.layers),
        "theta=1": lambda u: any(fires(u, i) and l.threshold.min() == 1 for l, _, i in layers(u)),
        "theta=2^(M-1)-1 (M>2)": lambda u: any(fires(u, i) and l.membrane_bits > 2 and
                                               l.threshold.max() == (1 << (l.membrane_bits - 1)) - 1
                                               for l, _, i in layers(u)),
        "leak none": lambda u: any(l.leak_shift is None for l in u.net.layers),
        "leak 1 (M>2)": lambda u: any(l.leak_shift == 1 and l.membrane_bits > 2 for l in u.net.layers),
        "leak M-1 (M>2)": lambda u: any(l.leak_shift == l.membrane_bits - 1 > 1 for l in u.net.layers),
        "T=1": lambda u: u.net.timesteps == 1,
        "T>=128": lambda u: u.net.timesteps >= 128,
    })
    for r in contract.READOUTS:
        c[f"readout {r}"] = (lambda r: lambda u: u.net.readout == r)(r)
    for e in contract.ENCODINGS:
        c[f"encoding {e}"] = (lambda e: lambda u: u.net.encoding == e)(e)
    for r in contract.RESET_MODES:
        c[f"reset {r}"] = (lambda r: lambda u: any(l.reset == r for l in u.net.layers))(r)
    c.update({
        "fire-once": lambda u: any(l.fire_once for l in u.net.layers),
        "trace on": lambda u: u.trace,
        "trace off": lambda u: not u.trace,
        "stalls": lambda u: u.stall_in > 0 or u.stall_out > 0,
        "no stalls": lambda u: u.stall_in == 0 and u.stall_out == 0,
        "reset mid-inference": lambda u: u.reset_mid,
        "early exit": lambda u: u.config.early_exit,
        "skip zero words": lambda u: u.config.skip_zero,
        "on-chip encoder, rate": lambda u: u.config.encoder and u.net.encoding == "rate",
        "on-chip encoder, latency": lambda u: u.config.encoder and u.net.encoding == "latency",
        "encoder lanes = 1 < W": lambda u: u.config.encoder and u.config.encoder_lanes == 1 < u.config.layers[0].width,
        "ensemble": lambda u: len(u.net.ensemble) > 1,
        "input ring (W_0>64)": _ring,
        "ROMs to block RAM (logic_rom_bits=0)": lambda u: u.config.logic_rom_bits == 0,
        "every ROM in logic (logic_rom_bits huge)": lambda u: (u.config.logic_rom_bits or 0) >= ALL_ROMS_IN_LOGIC,
        "one-port state (spram)": _one_port_state,
        # contract v4: a wide engine (tree stride 2, no word register) shifting each bit plane's sum
        "pixel input, W_0>64": lambda u: u.net.encoding == "pixel" and u.config.layers[0].width > WIDE_WORD,
        # issue 11: event-driven (input-major) layers; the aimed units also put the extremes of P and W on them
        "event-driven layer": lambda u: any(lc.events for lc in u.config.layers),
        "event-driven, W>64 search word": lambda u: any(lc.events and lc.width > WIDE_WORD for lc in u.config.layers),
    })
    return c


def _event_tally():
    """What the event-driven layers reach (not aimed at one by one: the "event-driven" corners' units draw P and W at
    their extremes, and other units turn layers event-driven at random)."""
    def ev(u):
        return [(l, lc) for l, lc in zip(u.net.layers, u.config.layers) if lc.events]
    return {
        "events: W=1": lambda u: any(lc.width == 1 for _, lc in ev(u)),
        "events: W=n_in": lambda u: any(lc.width == l.n_in for l, lc in ev(u)),
        "events: P=n_out": lambda u: any(lc.parallel == l.n_out for l, lc in ev(u)),
        "events: P=1<n_out": lambda u: any(lc.parallel == 1 < l.n_out for l, lc in ev(u)),
        "events: layer 0": lambda u: u.config.layers[0].events,
        "events: a later layer": lambda u: any(lc.events for lc in u.config.layers[1:]),
        "events with skip_zero elsewhere": lambda u: bool(ev(u)) and u.config.skip_zero,
        "events with the on-chip encoder": lambda u: u.config.layers[0].events and u.config.encoder,
        "events with early exit": lambda u: bool(ev(u)) and u.config.early_exit,
    }


def _one_port_state(u) -> bool:
    """A state RAM built one-port as for the SPRAM (HwConfig.spram; spram_min_bits 0 here: every legal engine)."""
    from bsnn_hw.hdl.config import issues_by_data, layer_shape, spram_legal
    return u.config.spram and any(
        l.kind != "pool" and spram_legal(layer_shape(l, lc)["words"], issues_by_data(u.net, u.config, i))
        for i, (l, lc) in enumerate(zip(u.net.layers, u.config.layers)))


def _ring(u) -> bool:
    """The top keeps layer 0's input in a ring of registers (hdl.config.input_ring)."""
    from bsnn_hw.hdl.config import input_ring, issues_by_data
    return input_ring(u.net, u.config.layers[0].width, encoder=u.config.encoder,
                      skip=issues_by_data(u.net, u.config, 0), members=max(1, len(u.net.ensemble)))


def _affine(layer) -> bool:
    return bool(getattr(layer, "has_affine", False))


def _affine_tally():
    """What the units' per-step affines reach (contract v3), read from the units. No unit of its own is aimed at
    these lines: the units aimed at AFFINE_AIMS' corners also get an affine on their first layer (a scale table with
    F = 16, or a bias alone with F = 0, table entries at their range ends) or, aimed at the early exit and at
    zero-word skipping, a small bias alone on their output layer (it moves the first output spike), so any set of
    len(CORNERS) units or more reaches every line; other units get affines at random (AFFINE_P)."""
    from bsnn_hw.hdl.config import skips_zero
    def aff(u):
        return [l for l in u.net.layers if _affine(l)]

    a_ends = (-(1 << (contract.STEP_SCALE_BITS - 1)), (1 << (contract.STEP_SCALE_BITS - 1)) - 1)
    b_ends = (-(1 << (contract.STEP_BIAS_BITS - 1)), (1 << (contract.STEP_BIAS_BITS - 1)) - 1)
    return {
        "per-step affine, scale": lambda u: any(l.step_scale is not None for l in aff(u)),
        "per-step affine, bias only": lambda u: any(l.step_scale is None for l in aff(u)),
        "affine F=0": lambda u: any(l.step_frac == 0 for l in aff(u)),
        f"affine F={contract.STEP_FRAC_MAX}": lambda u: any(l.step_frac == contract.STEP_FRAC_MAX for l in aff(u)),
        "affine scale at a 18-bit end": lambda u: any(l.step_scale is not None and np.isin(l.step_scale, a_ends).any()
                                                      for l in aff(u)),
        "affine bias at a 32-bit end": lambda u: any(np.isin(l.step_bias, b_ends).any() for l in aff(u)),
        "affine negative scale": lambda u: any(l.step_scale is not None and (l.step_scale < 0).any()
                                               for l in aff(u)),
        # a per-step bias on the layer whose first spike is the early decision, and on a layer that skips zero words
        "affine on the output, early exit": lambda u: u.config.early_exit and _affine(u.net.layers[-1]),
        "affine on a skip-zero layer": lambda u: any(_affine(l) and skips_zero(u.net, u.config, i)
                                                     for i, l in enumerate(u.net.layers)),
    }


CORNERS = _corner_table()
AFFINE_TALLY = _affine_tally()
EVENT_TALLY = _event_tally()
AFFINE_P = 0.15          # a unit not aimed at an affine gets per-step affines with this probability
# the full-range corners whose units also carry an aimed per-step affine on layer 0 (P not dividing n_out: several
# groups per step, so the ROM's t*G + g addressing; theta = 1: neurons that fire) or, "output bias", a small bias on
# the output layer (the early exit: the bias moves the decision step; zero-word skipping: a step with no input word
# still integrates the bias)
AFFINE_AIMS = {"P∤n_out": "scale", "theta=1": "bias", "early exit": "output bias", "skip zero words": "output bias"}


def coverage(units) -> dict[str, int]:
    """How many of ``units`` hit each corner of :data:`CORNERS` and each line of :data:`AFFINE_TALLY` and
    :data:`EVENT_TALLY` (0 = a corner the set misses)."""
    return {name: sum(1 for u in units if pred(u))
            for name, pred in {**CORNERS, **AFFINE_TALLY, **EVENT_TALLY}.items()}


# --- per-step affine (contract v3) draws -----------------------------------------------------------------------------
# A unit's affine comes from its own generator (seeded by the set's seed and the unit's index), not from the stream
# that draws everything else, so adding the affine left every other parameter of the existing units as it was.

_A_LO, _A_HI = -(1 << (contract.STEP_SCALE_BITS - 1)), (1 << (contract.STEP_SCALE_BITS - 1)) - 1
_B_LO, _B_HI = -(1 << (contract.STEP_BIAS_BITS - 1)), (1 << (contract.STEP_BIAS_BITS - 1)) - 1


def _affine_tables(rng, T: int, n: int, scale: bool, frac: int, ends: bool, near: bool = False):
    """(step_scale or None, step_bias), (T, n): "near" tables (a within +-4 * 2^F, signs mixed, b within +-8 * 2^F:
    the membranes still move; always with ``near``) or tables anywhere in the legal range; ``ends``: about a fifth of
    the entries at their range ends, the first and the last entry always (the 18-bit scale's and the 32-bit bias's
    two ends)."""
    one = 1 << frac
    if rng.random() < 0.6 or near:
        a = rng.integers(max(_A_LO, -4 * one), min(_A_HI, 4 * one) + 1, (T, n))
        b = rng.integers(-8 * one, 8 * one + 1, (T, n))
    else:
        a = rng.integers(_A_LO, _A_HI + 1, (T, n))
        b = rng.integers(_B_LO, _B_HI + 1, (T, n))
    if ends:
        r = rng.random((T, n))
        b[r < 0.1] = _B_LO
        b[(r >= 0.1) & (r < 0.2)] = _B_HI
        a[r > 0.9] = _A_LO
        a[(r > 0.8) & (r <= 0.9)] = _A_HI
        a.flat[0], a.flat[-1] = _A_LO, _A_HI
        b.flat[0], b.flat[-1] = _B_HI, _B_LO
    return (a if scale else None), b


def _with_affine_layer(layer, scale, bias, frac: int):
    """``layer`` (dense or conv) with the per-step affine (scale, bias, frac); everything else as it was."""
    from bsnn_hw.network import Conv2d
    common = dict(leak_shift=layer.leak_shift, reset=layer.reset, membrane_bits=layer.membrane_bits,
                  fire_once=layer.fire_once, weight_bits=layer.weight_bits, step_scale=scale, step_bias=bias,
                  step_frac=frac)
    if isinstance(layer, Conv2d):
        return Conv2d(layer.weights, layer.in_shape, layer.threshold, stride=layer.stride, padding=layer.padding,
                      **common)
    return Layer(layer.weights, layer.threshold, **common)


def _with_affine(u: Unit, rng, aim: str | None = None, p: float = AFFINE_P, conv: bool = False) -> Unit:
    """``u`` with per-step affines on some of its layers with neurons (with probability ``p``; always when aimed):
    scale table or not, F in 0..16 (0 and 16 on purpose), near-identity or full-range tables, range ends on purpose.
    ``aim`` "scale" puts F = 16 and every range end on the first such layer, "bias" F = 0 and the bias's ends,
    "output bias" a near bias alone (F = 0) on the last such layer; ``conv`` restricts it to conv layers (per output
    channel)."""
    if aim is None and rng.random() >= p:
        return u
    import dataclasses
    net = u.net
    cand = [i for i, l in enumerate(net.layers) if l.has_neurons and (not conv or l.kind == "conv2d")]
    if not cand:
        return u
    chosen = [i for i in cand if rng.random() < 0.5] or [int(rng.choice(cand))]
    aimed = cand[-1] if aim == "output bias" else cand[0]
    if aim is not None:                           # the aimed affine first: on the first (last) layer with neurons
        chosen = [aimed] + [i for i in chosen if i != aimed]
    layers = list(net.layers)
    for n, i in enumerate(chosen):
        units = layers[i].out_channels if layers[i].kind == "conv2d" else layers[i].n_out
        near = False
        if aim == "output bias" and n == 0:
            scale, frac, ends, near = False, 0, False, True
        elif aim is not None and n == 0:
            scale, frac, ends = aim != "bias", 0 if aim == "bias" else contract.STEP_FRAC_MAX, True
        else:
            scale, frac, ends = rng.random() < 0.6, _pick(rng, 0, contract.STEP_FRAC_MAX), rng.random() < 0.3
        layers[i] = _with_affine_layer(layers[i], *_affine_tables(rng, net.timesteps, units, scale, frac, ends, near),
                                       frac)
    new = Network(layers, net.timesteps, net.readout, net.encoding, net.seed, metadata=dict(net.metadata),
                  ensemble=net.ensemble or None)
    return dataclasses.replace(u, net=new)


def format_coverage(tally: dict[str, int]) -> str:
    """The tally as aligned lines, missing corners marked."""
    width = max(map(len, tally))
    return "\n".join(f"{name:<{width}}  {n:5d}{'   <-- MISSING' if n == 0 else ''}" for name, n in tally.items())


def _pick(rng, lo: int, hi: int, p_edge: float = 0.2) -> int:
    """An int in lo..hi: lo or hi each with probability p_edge, else uniform."""
    r = rng.random()
    if r < p_edge or lo == hi:
        return lo
    if r < 2 * p_edge:
        return hi
    return int(rng.integers(lo, hi + 1))


def _draw_events(rng, want: str, net, folds: list, allowed: bool) -> list:
    """Turn some dense layers that read spikes event-driven (LayerConfig.events): 40% of the units at random (each
    legal layer with odds 1/2), and every unit aimed at an "event-driven" corner (layer 0 at least). The unit aimed at
    "event-driven layer" (2 layers or more) runs every legal layer event-driven with the folding's extremes: layer 0
    at P = 1 < n_out and W = 1, the last layer at P = n_out."""
    from bsnn_hw.hdl import LayerConfig
    from bsnn_hw.hdl.config import reads_spike_vector
    aimed = want.startswith("event-driven")
    legal = [i for i in range(len(folds)) if reads_spike_vector(net, i)]
    if not allowed or not legal or not (aimed or rng.random() < 0.4):
        return folds
    on = {i for i in legal if rng.random() < 0.5 or want == "event-driven layer"}
    if aimed:
        on.add(legal[0])                 # layer 0 unless it reads a "pixel" input's bit planes
    out = []
    for i, lc in enumerate(folds):
        p, w = lc.parallel, lc.width
        if want == "event-driven layer" and i == legal[0]:
            p, w = 1, 1
        elif want == "event-driven layer" and i == len(folds) - 1:
            p = net.layers[i].n_out
        out.append(LayerConfig(p, w, i in on))
    return out


def _draw_full(rng, want: str, max_in: int, max_hidden: int, max_layers: int, max_t: int, samples: int) -> Unit:
    """One unit over the whole legal space, biased toward corner ``want`` (a key of CORNERS)."""
    from bsnn_hw.hdl import HwConfig, LayerConfig
    from bsnn_hw.hdl.config import reads_spike_vector
    n_layers = _pick(rng, 1, max_layers)
    if want.startswith("layers="):
        n_layers = int(want.split("=")[1])
    elif want == "event-driven layer":
        n_layers = max(2, n_layers)         # layer 0 and a later layer, both event-driven
    n_in = _pick(rng, 1, max_in)
    if want == "n_in=1":
        n_in = 1
    elif want in ("n_in>=300", "W>64", "W=n_in>64", "input ring (W_0>64)", "pixel input, W_0>64",
                  "event-driven, W>64 search word"):
        n_in = int(rng.integers(max(WIDE_WORD + 1, min(300, max_in)), max_in + 1))
    sizes = [n_in] + [_pick(rng, 1, max_hidden, 0.15) for _ in range(n_layers)]
    if want == "width-1 layer":
        sizes[int(rng.integers(1, n_layers + 1))] = 1
    if want in ("P=1<n_out", "P=n_out>1", "P∤n_out", "event-driven layer"):
        sizes[1] = max(sizes[1], 3)
    timesteps = _pick(rng, 1, max_t, 0.15)
    if want == "T=1":
        timesteps = 1
    elif want == "T>=128":
        timesteps = int(rng.integers(128, max(128, max_t) + 1))
    readout = "first" if want == "early exit" else str(rng.choice(contract.READOUTS))
    if want == "ensemble" and readout == "first":
        readout = str(rng.choice(["count", "membrane"]))
    # the "pixel" input costs its first layer 8 times the cycles: drawn less often, aimed at by its own corner
    odds = np.array([1 / 3 if e == "pixel" else 1.0 for e in contract.ENCODINGS])
    encoding = str(rng.choice(contract.ENCODINGS, p=odds / odds.sum()))
    if want.startswith("on-chip encoder, "):
        encoding = want.split(", ")[1]
    elif want.startswith("pixel input"):
        encoding = "pixel"
    elif want.startswith("encoder lanes"):
        encoding = str(rng.choice(["rate", "latency"]))
    for key, value in (("readout", readout), ("encoding", encoding)):
        if want.startswith(key + " "):
            readout, encoding = (want[len(key) + 1:], encoding) if key == "readout" else (readout, want[9:])
    layers, folds = [], []
    for i, (li, lo) in enumerate(zip(sizes[:-1], sizes[1:])):
        m = _pick(rng, 2, 32)
        if want in ("M=2", "M=32") and i == 0:
            m = int(want[2:])
        if want in ("theta=2^(M-1)-1 (M>2)", "leak 1 (M>2)", "leak M-1 (M>2)") and m == 2:
            m = int(rng.integers(3, 33))
        hi = (1 << (m - 1)) - 1
        leak_kind = rng.random()
        leak = None if leak_kind < 0.3 else 1 if leak_kind < 0.45 else m - 1 if leak_kind < 0.6 else \
            int(rng.integers(1, m))
        if i == 0 and want in ("leak none", "leak 1 (M>2)", "leak M-1 (M>2)"):
            leak = {"leak none": None, "leak 1 (M>2)": 1, "leak M-1 (M>2)": m - 1}[want]
        weights = rng.random((lo, li)) < rng.uniform(0.05, 0.95)
        last_membrane = i == n_layers - 1 and readout == "membrane"
        kind = rng.random()
        if i == 0 and want == "theta=1":
            kind = 0.2
        elif i == 0 and want == "theta=2^(M-1)-1 (M>2)":
            kind = 0.1
        # a "pixel" first layer's currents are up to 255 times a spike layer's: its thresholds scale with them
        th = (None if rng.random() < 0.5 else rng.integers(1, hi + 1, lo)) if last_membrane else \
            _thresholds(rng, li * (contract.PIXEL_MAX if i == 0 and encoding == "pixel" else 1), lo, hi, kind)
        reset = str(rng.choice(contract.RESET_MODES))
        if i == 0 and want in ("reset subtract", "reset zero"):
            reset = want[6:]
        fire_once = bool(rng.random() < 0.25) or (i == 0 and want == "fire-once")
        layers.append(Layer(weights, th, leak, reset, m, fire_once))
        p = _pick(rng, 1, lo)
        w = _pick(rng, 1, li)
        if rng.random() < 0.2 and li > WIDE_WORD:
            w = int(rng.integers(WIDE_WORD + 1, li + 1))
        if i == 0:
            if want == "W=1":
                w = 1
            elif want in ("W>64", "input ring (W_0>64)", "pixel input, W_0>64", "event-driven, W>64 search word"):
                w = int(rng.integers(WIDE_WORD + 1, li + 1))
            elif want in ("W=n_in", "W=n_in>64"):
                w = li
            elif want == "P=1<n_out":
                p = 1
            elif want == "P=n_out>1":
                p = lo
            elif want == "P∤n_out":
                p = int(rng.choice([q for q in range(2, lo) if lo % q])) if lo > 2 else p
        folds.append(LayerConfig(p, w))
    members = None
    if readout != "first" and (want == "ensemble" or rng.random() < 0.12) and not want.startswith("input ring"):
        members = [[rng.random(layer.weights.shape) < rng.uniform(0.1, 0.9) for layer in layers]
                   for _ in range(_pick(rng, 2, MAX_MEMBERS))]
    net = Network(layers, timesteps, readout, encoding, seed=int(rng.integers(1, contract.LFSR_PERIOD + 1)),
                  metadata={"origin": "sim.configs.full"}, ensemble=members)
    x = None
    if encoding == "direct":
        spikes = rng.random((samples, timesteps, n_in)) < rng.uniform(0.02, 0.98)
    else:
        x = rng.integers(0, 256, (samples, n_in), dtype=np.uint8)
        x[rng.random(x.shape) < rng.uniform(0, 0.5)] = 0               # silent pixels, as real images have
        x[rng.random(x.shape) < rng.uniform(0, 0.2)] = 255             # and saturated ones (every bit plane set)
        spikes = net.encode(x)                                          # "pixel": the intensities themselves
    stalls = rng.random() < 0.5
    if want in ("stalls", "no stalls"):
        stalls = want == "stalls"
    trace = bool(rng.random() < 0.7)
    if want in ("trace on", "trace off"):
        trace = want == "trace on"
    early = readout == "first" and (rng.random() < 0.5 or want == "early exit")
    skip = members is None and (rng.random() < 0.35 or want == "skip zero words")
    encoder = x is not None and encoding != "pixel" and (rng.random() < 0.4 or want.startswith(("on-chip", "encoder")))
    if want.startswith("input ring"):
        skip = encoder = False
    if encoding == "pixel" and n_layers == 1:
        skip = False                     # the first layer's bit planes are never skipped: no layer would skip
    folds = _draw_events(rng, want, net, folds, members is None and not want.startswith("input ring"))
    if skip and not any(reads_spike_vector(net, i) and not lc.events for i, lc in enumerate(folds)):
        skip = False                     # every layer that could skip runs event-driven
    lanes = None
    if encoder:
        w0 = folds[0].width
        divisors = [d for d in range(1, w0 + 1) if w0 % d == 0]
        lanes = 1 if want.startswith("encoder lanes") else int(rng.choice(divisors)) if rng.random() < 0.5 else None
        if lanes == 1 and w0 == 1 and want.startswith("encoder lanes"):
            folds[0] = LayerConfig(folds[0].parallel, min(2, net.n_in))      # lanes 1 < W needs W >= 2
    r = rng.random()
    rom_bits = 0 if (want.startswith("ROMs to block") or r < 0.15) else ALL_ROMS_IN_LOGIC if (
        want.startswith("every ROM") or r > 0.9) else None
    spram = want.startswith("one-port") or rng.random() < 0.25
    config = HwConfig(tuple(folds), early_exit=early, skip_zero=skip, encoder=encoder, encoder_lanes=lanes,
                      logic_rom_bits=rom_bits, spram=spram, spram_min_bits=0)
    return Unit(net=net, spikes=spikes, config=config, trace=trace, pixels=x if encoder else None,
                stall_in=float(rng.uniform(0.1, 0.6)) if stalls else 0.0,
                stall_out=float(rng.uniform(0.1, 0.6)) if stalls else 0.0,
                seed=int(rng.integers(1 << 30)), reset_mid=bool(rng.random() < 0.25) or want == "reset mid-inference")


def _sim_cycles(u: Unit, samples: int) -> int:
    """The cycles a unit simulates: samples x the fixed formula, or each sample's own figure where they depend on the
    spikes (an event-driven layer's worst case, every input spiking, is far above what random inputs cost)."""
    from bsnn_hw.hdl import cycles_per_inference
    from bsnn_hw.hdl.config import data_dependent, sample_cycles
    if data_dependent(u.config):
        return sum(c["cycles"] for c in sample_cycles(u.net, u.config, u.spikes, u.trace))
    return samples * cycles_per_inference(u.net, u.config, u.trace, max(1, len(u.net.ensemble)))


def random_full_units(seed: int, count: int, samples: int = 2, max_in: int = FULL_LIMITS["max_in"],
                      max_hidden: int = FULL_LIMITS["max_hidden"], max_layers: int = FULL_LIMITS["max_layers"],
                      max_t: int = FULL_LIMITS["max_t"], max_cycles: int = FULL_LIMITS["max_cycles"],
                      max_lane_bits: int = FULL_LIMITS["max_lane_bits"]) -> list[Unit]:
    """``count`` units over the whole legal space (see CORNERS): n_in 1..max_in, hidden 1..max_hidden, 1..max_layers
    layers, T 1..max_t, M 2..32, thresholds 1 and 2^(M-1)-1, leak none/1/M-1, P 1..n_out, W 1..n_in (W > 64 and
    W = n_in on purpose), every readout, encoding, reset, fire-once, trace, stalls and mid-inference reset, per-step
    affines (contract v3: scale table or not, F 0..16, table entries at their range ends; :func:`_with_affine`).
    Unit k aims at corner k mod len(CORNERS); a draw whose simulated cycles (samples x the cycle formula) exceed
    ``max_cycles``, or whose synapse arrays hold more than ``max_lane_bits`` popcount inputs in all (sum of P x W
    over the layers: the size of the logic to generate, compile and simulate every cycle), is redrawn, so the
    suite's time stays bounded while the corners are still reached."""
    _check_draw(seed, count, samples, max_in=max_in, max_hidden=max_hidden, max_layers=max_layers, max_t=max_t,
                max_cycles=max_cycles, max_lane_bits=max_lane_bits)
    rng = np.random.default_rng(seed)
    names = list(CORNERS)
    units = []
    for k in range(count):
        want = names[k % len(names)]
        arng = np.random.default_rng([seed, k, 3])          # the unit's per-step affine (see _with_affine)
        aim = AFFINE_AIMS.get(want)
        for _ in range(500):
            u = _with_affine(_draw_full(rng, want, max_in, max_hidden, max_layers, max_t, samples), arng, aim)
            cost = _sim_cycles(u, samples)
            lane_bits = sum(lc.parallel * lc.width for lc in u.config.layers)
            if cost <= max_cycles and lane_bits <= max_lane_bits and CORNERS[want](u):
                break
        else:
            raise RuntimeError(f"no unit within {max_cycles} cycles and {max_lane_bits} lane bits reached corner "
                               f"{want!r} in 500 draws")
        u.name = f"f{seed}-{k}"
        units.append(u)
    return units


# --- contract v2 in hardware: conv, OR pooling, k-bit weights -----------------------------------------------------
# Same method as above with the v2 parameters: unit k aims at V2_CORNERS[k mod len(V2_CORNERS)]; the tally is read
# from the units. Maps are kept small (sides up to 9, channels up to 6) so a unit simulates in seconds, but every
# geometry is legal and each extreme is drawn on purpose: k = 1, k = the padded input side, stride > 1, padding 0
# and k-1, C = 1, P = 1 / C_out / not dividing C_out, pool window 1 and the whole side, rows dropped by the pool,
# k-bit weights 2..8 with 8-bit weights at both ends of their range, in the first and in the last layer.

V2_LIMITS = dict(max_side=9, max_channels=6, max_hidden=12, max_t=24, max_cycles=16_000, max_lane_bits=384)


def _v2_corner_table():
    from bsnn_hw.hdl.config import spram_legal

    def convs(u):
        return [(l, lc) for l, lc in zip(u.net.layers, u.config.layers) if l.kind == "conv2d"]

    def pools(u):
        return [l for l in u.net.layers if l.kind == "pool"]

    def kbit(u):
        return [l for l in u.net.layers if l.kind != "pool" and l.weight_bits > 1]

    c = {
        "conv first": lambda u: u.net.layers[0].kind == "conv2d",
        "pool first": lambda u: u.net.layers[0].kind == "pool",
        "conv->conv": lambda u: any(a.kind == b.kind == "conv2d" for a, b in zip(u.net.layers, u.net.layers[1:])),
        "conv->pool": lambda u: any(a.kind == "conv2d" and b.kind == "pool"
                                    for a, b in zip(u.net.layers, u.net.layers[1:])),
        "pool->conv": lambda u: any(a.kind == "pool" and b.kind == "conv2d"
                                    for a, b in zip(u.net.layers, u.net.layers[1:])),
        "conv->dense": lambda u: any(a.kind == "conv2d" and b.kind == "dense"
                                     for a, b in zip(u.net.layers, u.net.layers[1:])),
        "pool->dense": lambda u: any(a.kind == "pool" and b.kind == "dense"
                                     for a, b in zip(u.net.layers, u.net.layers[1:])),
        "dense->dense after a map": lambda u: sum(l.kind == "dense" for l in u.net.layers) >= 2,
        "kernel 1": lambda u: any(l.kernel == 1 for l, _ in convs(u)),
        "kernel = padded side": lambda u: any(l.kernel == min(l.in_shape[:2]) + 2 * l.padding for l, _ in convs(u)),
        "stride > 1": lambda u: any(l.stride > 1 for l, _ in convs(u)),
        "padding 0": lambda u: any(l.padding == 0 for l, _ in convs(u)),
        "padding k-1 > 0": lambda u: any(l.padding == l.kernel - 1 > 0 for l, _ in convs(u)),
        "C_in = 1": lambda u: any(l.in_shape[2] == 1 for l, _ in convs(u)),
        "C_out = 1": lambda u: any(l.out_channels == 1 for l, _ in convs(u)),
        "1x1 output map": lambda u: any(l.out_shape[:2] == (1, 1) for l, _ in convs(u)),
        "non-square map": lambda u: any(l.in_shape[0] != l.in_shape[1] for l, _ in convs(u)),
        "P = C_out > 1": lambda u: any(lc.parallel == l.out_channels > 1 for l, lc in convs(u)),
        "P = 1 < C_out": lambda u: any(lc.parallel == 1 < l.out_channels for l, lc in convs(u)),
        "P ∤ C_out": lambda u: any(l.out_channels % lc.parallel for l, lc in convs(u)),
        "pool window 1": lambda u: any(l.window == 1 for l in pools(u)),
        "pool window = side": lambda u: any(l.window == min(l.in_shape[:2]) > 1 for l in pools(u)),
        "pool drops rows": lambda u: any(l.in_shape[0] % l.window or l.in_shape[1] % l.window for l in pools(u)),
        "k-bit first layer": lambda u: u.net.layers[0].kind != "pool" and u.net.layers[0].weight_bits > 1,
        "k-bit last layer": lambda u: u.net.layers[-1].weight_bits > 1,
        "k-bit conv": lambda u: any(l.weight_bits > 1 for l, _ in convs(u)),
        "2-bit weights": lambda u: any(l.weight_bits == 2 for l in kbit(u)),
        "8-bit weights at +max": lambda u: any(l.weight_bits == 8 and l.weights.max() == 127 for l in kbit(u)),
        "8-bit weights at -min": lambda u: any(l.weight_bits == 8 and l.weights.min() == -128 for l in kbit(u)),
        "M=2": lambda u: any(l.kind != "pool" and l.membrane_bits == 2 for l in u.net.layers),
        "M=32": lambda u: any(l.kind != "pool" and l.membrane_bits == 32 for l in u.net.layers),
        "T=1": lambda u: u.net.timesteps == 1,
    }
    for r in contract.READOUTS:
        c[f"readout {r}"] = (lambda r: lambda u: u.net.readout == r)(r)
    c.update({
        "fire-once": lambda u: any(l.kind != "pool" and l.fire_once for l in u.net.layers),
        "trace on": lambda u: u.trace,
        "trace off": lambda u: not u.trace,
        "stalls": lambda u: u.stall_in > 0 or u.stall_out > 0,
        "reset mid-inference": lambda u: u.reset_mid,
        "early exit": lambda u: u.config.early_exit,
        "skip zero words (dense after dense)": lambda u: u.config.skip_zero,
        "ensemble S=2": lambda u: len(u.net.ensemble) == 2,
        f"ensemble S={MAX_MEMBERS}": lambda u: len(u.net.ensemble) == MAX_MEMBERS,
        "ensemble of conv members": lambda u: len(u.net.ensemble) > 1 and bool(convs(u)),
        "ensemble, membrane readout": lambda u: len(u.net.ensemble) > 1 and u.net.readout == "membrane",
        # contract v3 (appended last): a conv layer's per-step affine is per output channel, shared by positions
        "per-step affine on a conv layer": lambda u: any(l.kind == "conv2d" and _affine(l) for l in u.net.layers),
        "one-port conv state (spram)": lambda u: u.config.spram and any(
            spram_legal(l.kernel * l.kernel) for l, _ in convs(u)),
        "one-port feature map (spram)": lambda u: u.config.spram and any(
            l.kind in ("conv2d", "pool") for l in u.net.layers[:-1]),
        # contract v4: the intensities' bit planes feed a conv first layer (B-SNN's MID networks with pixel input)
        "pixel input, conv first": lambda u: u.net.encoding == "pixel" and u.net.layers[0].kind == "conv2d",
        "pixel input, 8-bit first layer": lambda u: u.net.encoding == "pixel" and u.net.layers[0].weight_bits == 8,
        # issue 11: an event-driven dense layer after a dense layer (after a map), k-bit weights in its rows
        "event-driven k-bit dense": lambda u: any(lc.events and l.weight_bits > 1
                                                  for l, lc in zip(u.net.layers, u.config.layers)),
        "pixel input, ensemble": lambda u: u.net.encoding == "pixel" and len(u.net.ensemble) > 1,
    })
    return c


V2_CORNERS = _v2_corner_table()


def v2_coverage(units) -> dict[str, int]:
    """How many of ``units`` hit each corner of :data:`V2_CORNERS`."""
    return {name: sum(1 for u in units if pred(u)) for name, pred in V2_CORNERS.items()}


def affine_coverage(units) -> dict[str, int]:
    """How many of ``units`` carry per-step affines of each kind (the affine lines of :func:`coverage`, for any set)."""
    return {name: sum(1 for u in units if pred(u)) for name, pred in AFFINE_TALLY.items()}


def _v2_neurons(rng, want, n_th, fan_in, bits, last_membrane, first):
    m = _pick(rng, 2, 32)
    if first and want in ("M=2", "M=32"):
        m = int(want[2:])
    hi = (1 << (m - 1)) - 1
    leak_kind = rng.random()
    leak = None if leak_kind < 0.35 else 1 if leak_kind < 0.5 else m - 1 if leak_kind < 0.6 else int(rng.integers(1, m))
    scale = 1 << (bits - 1) if bits > 1 else 1
    if last_membrane and rng.random() < 0.5:
        th = None
    else:
        r = rng.random()
        top = max(1, min(hi, int(np.sqrt(fan_in) * scale * 0.8) + 1))
        th = np.full(n_th, hi) if r < 0.1 else np.ones(n_th, dtype=np.int64) if r < 0.2 else \
            rng.integers(1, top + 1, n_th)
    return dict(threshold=th, leak_shift=leak, reset=str(rng.choice(contract.RESET_MODES)), membrane_bits=m,
                fire_once=bool(rng.random() < 0.25) or (first and want == "fire-once"))


def _v2_weights(rng, shape, bits, want):
    if bits == 1:
        return rng.random(shape) < rng.uniform(0.1, 0.9)
    lo, hi = contract.weight_range(bits)
    w = rng.integers(lo, hi + 1, shape)
    if bits == 8 and want in ("8-bit weights at +max", "8-bit weights at -min"):
        w.ravel()[rng.random(w.size) < 0.5] = hi if want.endswith("+max") else lo   # saturation of the 8-bit range
    return w


def _draw_v2(rng, want: str, max_side: int, max_channels: int, max_hidden: int, max_t: int, samples: int) -> Unit:
    """One v2 unit: a front of conv/pool layers on a map, then 1..2 dense layers; biased toward corner ``want``."""
    from bsnn_hw.hdl import HwConfig, LayerConfig
    from bsnn_hw.network import Conv2d, Pool
    h, w = _pick(rng, 1, max_side), _pick(rng, 1, max_side)
    if want == "non-square map":
        h, w = 2 + int(rng.integers(0, max_side - 2)), max_side
    c = _pick(rng, 1, max_channels)
    if want == "C_in = 1":
        c = 1
    plan = [str(rng.choice(["conv", "conv", "pool"])) for _ in range(_pick(rng, 1, 3))]
    forced = {"conv first": ["conv"], "pool first": ["pool", "conv"], "conv->conv": ["conv", "conv"],
              "conv->pool": ["conv", "pool"], "pool->conv": ["pool", "conv"], "conv->dense": ["conv"],
              "pool->dense": ["conv", "pool"]}
    if want in forced:
        plan = forced[want]
    elif want.startswith(("kernel", "stride", "padding", "C_", "1x1", "non-square", "P ", "k-bit conv")) \
            and "conv" not in plan:
        plan.append("conv")
    elif want.startswith("pool ") and "pool" not in plan:
        plan.insert(0, "pool")
    pixel = want.startswith("pixel") or rng.random() < 0.1
    if pixel and plan[0] != "conv":
        plan.insert(0, "conv")           # the intensities feed the first layer's synapses
    n_dense = 2 if want in ("dense->dense after a map", "event-driven k-bit dense") else _pick(rng, 1, 2)
    readout = "first" if want == "early exit" else str(rng.choice(contract.READOUTS))
    if want.startswith("readout "):
        readout = want[8:]
    ensemble = want.startswith("ensemble") or want == "pixel input, ensemble" or rng.random() < 0.2
    if ensemble and readout == "first":              # members' scores are summed: count or membrane
        readout = "membrane" if want.endswith("membrane readout") else str(rng.choice(["count", "membrane"]))
    if want == "ensemble of conv members" and "conv" not in plan:
        plan.append("conv")
    if want.startswith("skip zero"):
        n_dense = 2
    timesteps = _pick(rng, 1, max_t, 0.15)
    if want == "T=1":
        timesteps = 1
    kbit_first = want in ("k-bit first layer", "pixel input, 8-bit first layer") or rng.random() < 0.25
    kbit_last = want in ("k-bit last layer", "event-driven k-bit dense") or rng.random() < 0.25

    def bits_for(first, last, conv):
        if (first and kbit_first) or (last and kbit_last) or (conv and want == "k-bit conv"):
            if want in ("8-bit weights at +max", "8-bit weights at -min", "pixel input, 8-bit first layer"):
                return 8
            return 2 if want == "2-bit weights" else _pick(rng, 2, 8, 0.3)
        return 1

    shape = (h, w, c)
    layers, folds = [], []
    total = len(plan) + n_dense
    for i, kind in enumerate(plan):
        hh, ww, cc = shape
        if kind == "pool":
            side = min(hh, ww)
            n = _pick(rng, 1, side)
            if want == "pool window 1":
                n = 1
            elif want == "pool window = side" and side > 1:
                n = side
            elif want == "pool drops rows" and side > 2:
                n = int(rng.choice([q for q in range(2, side + 1) if hh % q or ww % q] or [2]))
            layers.append(Pool(shape, n))
            folds.append(LayerConfig(1, cc))
        else:
            k = _pick(rng, 1, min(hh, ww) + 2 * min(2, (min(hh, ww) + 1)))
            if want == "kernel 1":
                k = 1
            pad = _pick(rng, 0, k - 1) if k > 1 else 0
            if want == "padding 0":
                pad = 0
            elif want == "padding k-1 > 0" and k == 1:
                k, pad = 2, 1
            elif want == "padding k-1 > 0":
                pad = k - 1
            while k > min(hh, ww) + 2 * pad:        # keep the kernel inside the padded map
                k -= 1
                pad = min(pad, k - 1)
            if want == "kernel = padded side":
                pad = _pick(rng, 0, 1)
                k = min(hh, ww) + 2 * pad
            stride = _pick(rng, 1, 3)
            if want == "stride > 1":
                stride = int(rng.integers(2, 4))
            if want == "1x1 output map":
                pad, k = 0, min(hh, ww)
            c_out = _pick(rng, 1, max_channels)
            if want == "C_out = 1":
                c_out = 1
            elif want in ("P = C_out > 1", "P = 1 < C_out", "P ∤ C_out"):
                c_out = max(c_out, 3)
            bits = bits_for(i == 0, False, True)
            fan_in = k * k * cc
            # (thresholds scale with a "pixel" first layer's 255-times larger currents)
            neurons = _v2_neurons(rng, want, c_out, fan_in * (contract.PIXEL_MAX if pixel and i == 0 else 1), bits,
                                  False, i == 0)
            layer = Conv2d(_v2_weights(rng, (c_out, k, k, cc), bits, want), shape, stride=stride, padding=pad,
                           weight_bits=bits, **neurons)
            p = _pick(rng, 1, c_out)
            if want == "P = C_out > 1":
                p = c_out
            elif want == "P = 1 < C_out":
                p = 1
            elif want == "P ∤ C_out":
                p = int(rng.choice([q for q in range(2, c_out) if c_out % q])) if c_out > 2 else p
            layers.append(layer)
            folds.append(LayerConfig(p, cc))
        shape = layers[-1].out_shape
    n_in = int(np.prod(shape))
    sizes = [n_in] + [_pick(rng, 1, max_hidden, 0.15) for _ in range(n_dense)]
    for j, (li, lo) in enumerate(zip(sizes[:-1], sizes[1:])):
        i = len(plan) + j
        last = i == total - 1
        bits = bits_for(False, last, False)
        neurons = _v2_neurons(rng, want, lo, li, bits, last and readout == "membrane", False)
        layers.append(Layer(_v2_weights(rng, (lo, li), bits, want), weight_bits=bits, **neurons))
        w_ = shape[2] if j == 0 else _pick(rng, 1, li)
        folds.append(LayerConfig(_pick(rng, 1, lo), w_))
    members = None
    if ensemble:
        S = 2 if want == "ensemble S=2" else MAX_MEMBERS if want == f"ensemble S={MAX_MEMBERS}" else \
            _pick(rng, 2, MAX_MEMBERS)
        members = [[_v2_weights(rng, lay.weights.shape, lay.weight_bits, want) for lay in layers if lay.has_neurons]
                   for _ in range(S)]
    net = Network(layers, timesteps, readout, "pixel" if pixel else "direct", metadata={"origin": "sim.configs.v2"},
                  ensemble=members)
    if pixel:                            # intensities, with silent and saturated ones
        spikes = rng.integers(0, 256, (samples, net.n_in), dtype=np.uint8)
        spikes[rng.random(spikes.shape) < rng.uniform(0, 0.5)] = 0
        spikes[rng.random(spikes.shape) < rng.uniform(0, 0.3)] = 255
    else:
        spikes = rng.random((samples, timesteps, net.n_in)) < rng.uniform(0.05, 0.95)
    stalls = rng.random() < 0.5 or want == "stalls"
    trace = bool(rng.random() < 0.6)
    if want in ("trace on", "trace off"):
        trace = want == "trace on"
    early = readout == "first" and (rng.random() < 0.5 or want == "early exit")
    skip = n_dense >= 2 and not ensemble and (rng.random() < 0.4 or want.startswith("skip zero"))
    if n_dense >= 2 and not ensemble and (want == "event-driven k-bit dense" or rng.random() < 0.25):
        folds[-1] = LayerConfig(folds[-1].parallel, folds[-1].width, True)     # it reads the dense layer before it
        skip = False                     # the only layer that could skip now runs event-driven
    spram = want.startswith("one-port") or rng.random() < 0.3       # spram_min_bits 0: every legal engine one-port
    config = HwConfig(tuple(folds), early_exit=early, skip_zero=skip, spram=spram, spram_min_bits=0)
    return Unit(net=net, spikes=spikes, config=config, trace=trace,
                stall_in=float(rng.uniform(0.1, 0.6)) if stalls else 0.0,
                stall_out=float(rng.uniform(0.1, 0.6)) if stalls else 0.0,
                seed=int(rng.integers(1 << 30)), reset_mid=bool(rng.random() < 0.25) or want == "reset mid-inference")


def random_v2_units(seed: int, count: int, samples: int = 2, max_side: int = V2_LIMITS["max_side"],
                    max_channels: int = V2_LIMITS["max_channels"], max_hidden: int = V2_LIMITS["max_hidden"],
                    max_t: int = V2_LIMITS["max_t"], max_cycles: int = V2_LIMITS["max_cycles"],
                    max_lane_bits: int = V2_LIMITS["max_lane_bits"], cover: int = 0) -> list[Unit]:
    """``count`` conv/pool/k-bit units (see V2_CORNERS), unit k aimed at corner k mod len(V2_CORNERS); a draw over
    ``max_cycles`` simulated cycles or ``max_lane_bits`` synapse-array weight bits (sum of P x W x k) is redrawn.
    ``cover`` = n > 0: skip a corner that the units drawn so far already hit n times, so the set is smaller and still
    reaches every corner at least n times (the default suite's profile; each unit hits many corners by its draw)."""
    from bsnn_hw.hdl import cycles_per_inference
    _check_draw(seed, count, samples, cover, max_side=max_side, max_channels=max_channels, max_hidden=max_hidden,
                max_t=max_t, max_cycles=max_cycles, max_lane_bits=max_lane_bits)
    rng = np.random.default_rng(seed)
    names = list(V2_CORNERS)
    units = []
    for k in range(count):
        want = names[k % len(names)]
        if cover and sum(1 for v in units if V2_CORNERS[want](v)) >= cover:
            continue
        arng = np.random.default_rng([seed, k, 5])          # the unit's per-step affine (see _with_affine)
        conv_aim = want == "per-step affine on a conv layer"
        for _ in range(1000):
            try:
                u = _draw_v2(rng, want, max_side, max_channels, max_hidden, max_t, samples)
            except ValueError:          # an illegal geometry drawn at a corner: draw again
                continue
            u = _with_affine(u, arng, "scale" if conv_aim and arng.random() < 0.5 else "bias" if conv_aim else None,
                             conv=conv_aim)
            cost = samples * cycles_per_inference(u.net, u.config, u.trace, max(1, len(u.net.ensemble)))
            lane_bits = sum(lc.parallel * lc.width * max(1, l.weight_bits)
                            for l, lc in zip(u.net.layers, u.config.layers))
            if cost <= max_cycles and lane_bits <= max_lane_bits and V2_CORNERS[want](u):
                break
        else:
            raise RuntimeError(f"no v2 unit within {max_cycles} cycles and {max_lane_bits} lane bits reached corner "
                               f"{want!r} in 1000 draws")
        u.name = f"v{seed}-{k}"
        units.append(u)
    return units


def describe_unit(u: Unit) -> str:
    net = u.net
    cfg = ",".join(f"P{lc.parallel}W{lc.width}" for lc in u.config.layers) if u.config else "default"
    def aff(l):
        return (" affine" if l.step_scale is not None else " bias") + f" F={l.step_frac}" if _affine(l) else ""

    lay = ";".join(repr(l) + aff(l) if l.kind != "dense" else
                   f"M{l.membrane_bits} k{l.leak_shift} {l.reset[0]}{' fo' if l.fire_once else ''}"
                   f"{f' {l.weight_bits}b' if l.weight_bits > 1 else ''}{aff(l)}" for l in net.layers)
    return (f"{u.name}: {'-'.join(map(str, net.sizes))} T={net.timesteps} {net.readout} {net.encoding} [{cfg}] [{lay}] "
            f"trace={u.trace} stalls={u.stall_in:.2f}/{u.stall_out:.2f} reset_mid={u.reset_mid}"
            f"{' early_exit' if u.config and u.config.early_exit else ''}"
            f"{' skip_zero' if u.config and u.config.skip_zero else ''}"
            f"{f' ensemble S={len(net.ensemble)}' if net.ensemble else ''}"
            f"{f' encoder lanes={u.config.encoder_lanes}' if u.config and u.config.encoder else ''}")


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


def main(argv=None) -> int:
    """Print the corner tally of the random generators: ``python -m bsnn_hw.sim.configs [--seed S] [--count N]``."""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m bsnn_hw.sim.configs", description=main.__doc__)
    ap.add_argument("--seed", type=int, default=1000, help="seed of the full-range generator (the suite uses 1000 "
                    "on Icarus, 2000 on Verilator)")
    ap.add_argument("--count", type=int, default=len(CORNERS), help="units to draw")
    ap.add_argument("--samples", type=int, default=2)
    args = ap.parse_args(argv)
    if args.count < 1 or args.samples < 1 or args.seed < 0:
        ap.error(f"--count and --samples must be at least 1 and --seed at least 0, not {args.count}, {args.samples}, "
                 f"{args.seed}")
    units = random_full_units(args.seed, args.count, args.samples)
    print(f"{args.count} full-range units (seed {args.seed}), corners hit:")
    print(format_coverage(coverage(units)))
    n_aff = sum(1 for u in units if any(_affine(l) for l in u.net.layers))
    print(f"{n_aff} of {args.count} units carry a per-step affine")
    sizes = [u.net.n_in for u in units]
    widths = [lc.width for u in units for lc in u.config.layers]
    print(f"n_in {min(sizes)}..{max(sizes)}, W {min(widths)}..{max(widths)}, "
          f"T {min(u.net.timesteps for u in units)}..{max(u.net.timesteps for u in units)}")
    v2 = random_v2_units(args.seed, 2 * len(V2_CORNERS), args.samples)
    print(f"{len(v2)} conv/pool/k-bit units (seed {args.seed}), corners hit:")
    print(format_coverage(v2_coverage(v2)))
    return 0 if all(coverage(units).values()) and all(v2_coverage(v2).values()) else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
