"""Hardware configuration (folding per layer) and the cycle/latency formulas shared by the blocks and the manifest.

Folding follows FINN's terms: per layer, P neuron lanes (``parallel``, FINN's PE) and W input bits per word
(``width``, FINN's SIMD); NW = ceil(n_in / W) words per input vector, G = ceil(n_out / P) neuron groups.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from bsnn_hw import contract
from bsnn_hw.checks import check_bits, check_flag, check_int, is_int as _is_int
from bsnn_hw.contract import ceil_div
from bsnn_hw.network import Network

DEFAULT_WIDTH = 16  # 16-bit words put the weight ROM on iCE40 256x16 EBR at full packing
# The iCE40 UltraPlus' SPRAM (SB_SPRAM256KA): 16,384 x 16 bits, one port (a read or a write per cycle), no initial
# contents. HwConfig.spram puts a NeuronCore's state RAM there when it holds at least SPRAM_MIN_BITS bits (four EBRs'
# worth) and its engine never reads and writes it in one cycle (spram_legal).
SPRAM_DEPTH, SPRAM_WIDTH = 16384, 16
SPRAM_MIN_BITS = 16384


# The widest word a SynapseArray builds (W inputs in one popcount or adder tree) and the widest synaptic sum a
# NeuronCore takes: bounds on what a generator is asked for, far above any design that fits an FPGA, so that a wrong
# number is refused in one line instead of exhausting memory inside Amaranth.
MAX_WORD_BITS = 1 << 16
MAX_SUM_BITS = 64           # the golden model's int64


def clog2(n: int) -> int:
    """ceil(log2(n)) for n >= 1 (0 for n = 1)."""
    return max(0, (n - 1).bit_length())


def index_bits(n: int) -> int:
    """Bits of an index 0..n-1 (at least 1)."""
    return max(1, clog2(n))


def count_bits(timesteps: int) -> int:
    """Bits of a spike count 0..T."""
    return max(1, clog2(timesteps + 1))


def map_input(net: Network, index: int) -> bool:
    """Whether layer ``index`` reads a feature map in RAM (one word per position) rather than a vector: a conv or
    pool layer always does; a dense layer does after a conv or pool layer."""
    layer = net.layers[index]
    if layer.kind in ("conv2d", "pool"):
        return True
    return index > 0 and net.layers[index - 1].kind in ("conv2d", "pool")


def map_channels(net: Network, index: int) -> int:
    """Channels of the map layer ``index`` reads (its input's C)."""
    layer = net.layers[index]
    if layer.kind in ("conv2d", "pool"):
        return layer.in_shape[2]
    return net.layers[index - 1].out_shape[2]


def check_layer_kinds(net: Network) -> None:
    """Refuse, by layer, what the generator does not build (docs/hardware.md): the last layer must be dense (the
    readout reads its neurons), and a conv or pool layer must be the first layer or follow a conv or pool layer (a
    dense layer's output is a vector, not a map)."""
    if not isinstance(net, Network):
        raise TypeError(f"net must be a bsnn_hw.Network, not {type(net).__name__}")
    last = net.layers[-1]
    if last.kind != "dense":
        raise ValueError(f"the last layer is a {last.kind} layer: the hardware readout reads a dense layer's "
                         f"neurons; end the network with a dense layer")
    for i, layer in enumerate(net.layers):
        if layer.kind in ("conv2d", "pool") and i > 0 and net.layers[i - 1].kind == "dense":
            raise ValueError(f"layer {i} is a {layer.kind} layer after a dense layer: the hardware feeds conv and pool "
                             f"layers from a feature map (the input or a conv/pool layer's output)")


def conv_geometry(layer) -> dict:
    """Positions and window of a conv layer, as the engine walks them."""
    return dict(positions=layer.out_shape[0] * layer.out_shape[1], window=layer.kernel * layer.kernel)


@dataclasses.dataclass(frozen=True)
class LayerConfig:
    """Folding of one layer: ``parallel`` (P) neuron lanes, ``width`` (W) input bits per word, and the organization:
    ``events`` = False (dense, output-major: each cycle one W-bit input word against P neurons' W weights) or True
    (event-driven, input-major, dense layers reading a vector: each cycle one input spike fetches its weight row for
    P neurons; silent inputs cost nothing; W is then only the width at which the input is read and searched,
    docs/hardware.md "Event-driven layers")."""
    parallel: int = 1
    width: int = DEFAULT_WIDTH
    events: bool = False

    def __post_init__(self):
        check_int("parallel", self.parallel)
        check_int("width", self.width, 1, MAX_WORD_BITS, "the widest word a synapse array builds")
        if not isinstance(self.events, bool):
            raise TypeError(f"events must be a bool, not {self.events!r}")


@dataclasses.dataclass(frozen=True)
class HwConfig:
    """Per-layer folding, the input stream's width (``None``: layer 0's W) and two data-dependent options
    (docs/hardware.md, "Early decision and zero-word skipping"):

    early_exit : with the "first" readout, stop after the step in which an output neuron first spikes, send the
                 result (with the decision step), then take and drop the sample's remaining input beats
    skip_zero  : dense layers that read a vector (the input or a dense layer's output) spend no cycle on an input
                 word without a spike
    encoder    : the top takes 8-bit pixels (``i_pixels``, n_in beats per sample) and encodes them on chip with the
                 network's rate or latency code (docs/hardware.md, "On-chip input encoder")
    encoder_lanes : pixels per word of the encoder's pixel RAM (a divisor of layer 0's W; None: W): fewer lanes, a
                 narrower RAM (block RAMs on a small FPGA), ceil(n_in / lanes) cycles per step to encode
    logic_rom_bits : ROMs (weights, thresholds, affines) of at most this many bits are built in logic, larger ones
                 left to block RAM (None: SMALL_ROM_BITS = 2048; 0: every ROM to block RAM where Yosys finds it
                 cheaper). Lower it where block RAMs are spare and logic cells are not (the UP5K at wide words)
    spram      : NeuronCore state RAMs of at least SPRAM_MIN_BITS bits whose engine allows it (:func:`spram_legal`)
                 go to the iCE40 UltraPlus' SPRAM (``ram_style = "huge"``, no initial contents: a sample's first step
                 never reads the state)
    spram_min_bits : with ``spram``, the smallest state RAM (bits) that goes there (default SPRAM_MIN_BITS; the random
                 regression sets 0 so that every legal engine runs its one-port state)
    """
    layers: tuple = ()
    input_width: int | None = None
    early_exit: bool = False
    skip_zero: bool = False
    encoder: bool = False
    encoder_lanes: int | None = None
    logic_rom_bits: int | None = None
    spram: bool = False
    spram_min_bits: int = SPRAM_MIN_BITS

    def __post_init__(self):
        if isinstance(self.layers, (str, bytes)) or not hasattr(self.layers, "__iter__"):
            raise TypeError(f"layers must be a sequence of LayerConfig (one per layer), not {self.layers!r}")
        layers = tuple(self.layers)
        for i, lc in enumerate(layers):
            if not isinstance(lc, LayerConfig):
                raise TypeError(f"layers[{i}] must be a LayerConfig, not {type(lc).__name__}")
        object.__setattr__(self, "layers", layers)
        for name in ("early_exit", "skip_zero", "encoder", "spram"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, not {getattr(self, name)!r}")
        if self.input_width is not None and not _is_int(self.input_width):
            raise TypeError(f"input_width must be an int or None, not {self.input_width!r}")
        if self.encoder_lanes is not None and not _is_int(self.encoder_lanes):
            raise TypeError(f"encoder_lanes must be an int or None, not {self.encoder_lanes!r}")
        check_bits("logic_rom_bits", self.logic_rom_bits)
        check_bits("spram_min_bits", self.spram_min_bits, optional=False)

    @classmethod
    def default(cls, net: Network) -> "HwConfig":
        """P = 1 everywhere; W = min(16, n_in) for a dense layer reading a vector, else the channels of the map it
        reads (one position per word)."""
        check_layer_kinds(net)
        return cls(tuple(LayerConfig(1, map_channels(net, i) if map_input(net, i) else min(DEFAULT_WIDTH, layer.n_in))
                         for i, layer in enumerate(net.layers)))

    @classmethod
    def from_lists(cls, net: Network, parallel=None, width=None, early_exit: bool = False,
                   skip_zero: bool = False, encoder: bool = False, encoder_lanes: int | None = None,
                   logic_rom_bits: int | None = None, spram: bool = False) -> "HwConfig":
        """Build from per-layer lists (a list or an entry that is ``None``: that layer's default); lengths must match
        the layer count."""
        base = cls.default(net)
        n = len(net.layers)
        for name, values in (("parallel", parallel), ("width", width)):
            if values is None:
                continue
            if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
                raise TypeError(f"{name} must be a list of ints, one per layer ({n} layers), not {values!r}")
            if len(values) != n:
                raise ValueError(f"{name} needs one value per layer ({n} layers), not {len(values)}: {list(values)}")
        layers = []
        for i, lc in enumerate(base.layers):
            p = lc.parallel if parallel is None or parallel[i] is None else parallel[i]
            w = lc.width if width is None or width[i] is None else width[i]
            try:
                layers.append(LayerConfig(p, w))
            except (TypeError, ValueError) as e:
                raise type(e)(f"layer {i}: {e}") from None
        return cls(tuple(layers), early_exit=early_exit, skip_zero=skip_zero, encoder=encoder,
                   encoder_lanes=encoder_lanes, logic_rom_bits=logic_rom_bits, spram=spram)

    def validate(self, net: Network) -> None:
        """Refuse combinations the hardware cannot build, naming the numbers and the reason."""
        check_layer_kinds(net)
        if len(self.layers) != len(net.layers):
            raise ValueError(f"the config has {len(self.layers)} layer(s) but the network has {len(net.layers)}; "
                             f"give one LayerConfig per layer")
        for i, (lc, layer) in enumerate(zip(self.layers, net.layers)):
            if map_input(net, i) and lc.width != map_channels(net, i):
                raise ValueError(f"layer {i} ({layer.kind}): width must be {map_channels(net, i)}, the channels of the "
                                 f"feature map it reads (one position per word), not {lc.width}")
            if layer.kind == "pool":
                if lc.parallel != 1:
                    raise ValueError(f"layer {i} (pool): parallel must be 1 (a pool layer has no neuron lanes), "
                                     f"not {lc.parallel}")
                continue
            if layer.kind == "conv2d":
                if lc.parallel > layer.out_channels:
                    raise ValueError(f"layer {i} (conv2d): parallel must be in 1..{layer.out_channels} (its C_out), "
                                     f"not {lc.parallel}: lanes past the last channel would never be used")
                continue
            if lc.parallel > layer.n_out:
                raise ValueError(f"layer {i}: parallel must be in 1..{layer.n_out} (its n_out), not {lc.parallel}: "
                                 f"lanes past the last neuron would never be used")
            if lc.width > layer.n_in:
                raise ValueError(f"layer {i}: width must be in 1..{layer.n_in} (its n_in), not {lc.width}: "
                                 f"a wider word would hold only padding")
        for i, (lc, layer) in enumerate(zip(self.layers, net.layers)):
            if lc.events and not reads_spike_vector(net, i):
                what = ("a 'pixel' network's first layer reads bit planes, not spikes" if layer.kind == "dense"
                        and input_planes(net, i) > 1 else f"it is a {layer.kind} layer reading a feature map"
                        if map_input(net, i) else "")
                raise ValueError(f"layer {i}: events (the event-driven organization) is for dense layers that read a "
                                 f"vector of spikes (the input or a dense layer); {what}")
        if self.early_exit and net.readout != "first":
            raise ValueError(f"early_exit needs the 'first' readout (the decision is the first output spike), not "
                             f"{net.readout!r}")
        if self.skip_zero and not any(skips_zero(net, self, i) for i in range(len(net.layers))):
            raise ValueError("skip_zero applies to dense layers that read a vector (the input or a dense layer) and "
                             "are not event-driven; this network has none")
        if self.encoder and net.encoding == "pixel":
            raise ValueError("the on-chip encoder makes spikes; a 'pixel' network takes its intensities' bit planes "
                             "from the host (i_spikes: 8 planes of NW_0 words per step, docs/hardware.md)")
        if self.encoder and net.encoding not in ("rate", "latency"):
            raise ValueError(f"the on-chip encoder needs the 'rate' or 'latency' encoding, not {net.encoding!r} (a "
                             f"'direct' model takes its spike trains from the host)")
        w0 = self.layers[0].width
        if self.encoder_lanes is not None:
            if not self.encoder:
                raise ValueError("encoder_lanes applies to the on-chip encoder: set encoder too")
            if not 1 <= self.encoder_lanes <= w0 or w0 % self.encoder_lanes:
                raise ValueError(f"encoder_lanes must divide layer 0's width {w0} (whole pixel words per spike "
                                 f"word), not {self.encoder_lanes}")
        if self.input_width is not None and self.input_width != w0:
            raise ValueError(f"input_width must equal layer 0's width ({w0}), not {self.input_width}: the input "
                             f"buffer stores i_spikes beats as layer 0's words")

    def to_dict(self) -> dict:
        """The JSON form (``hw_config`` of a configuration file, docs/dse.md)."""
        return {"layers": [[lc.parallel, lc.width] + (["events"] if lc.events else []) for lc in self.layers],
                "input_width": self.input_width,
                "early_exit": self.early_exit, "skip_zero": self.skip_zero, "encoder": self.encoder,
                "encoder_lanes": self.encoder_lanes, "logic_rom_bits": self.logic_rom_bits, "spram": self.spram,
                "spram_min_bits": self.spram_min_bits}

    @classmethod
    def from_dict(cls, d: dict) -> "HwConfig":
        """Inverse of :meth:`to_dict`; unknown keys and malformed layers are refused, naming them."""
        if not isinstance(d, dict):
            raise ValueError(f"hw_config must be an object, not {type(d).__name__}")
        known = {"layers", "input_width", "early_exit", "skip_zero", "encoder", "encoder_lanes", "logic_rom_bits",
                 "spram", "spram_min_bits"}
        extra = sorted(set(d) - known)
        if extra:
            raise ValueError(f"hw_config has unknown keys {extra}; expected some of {sorted(known)}")
        layers = d.get("layers")
        if not isinstance(layers, list) or not all(isinstance(x, list) and (len(x) == 2 or len(x) == 3
                                                                            and x[2] == "events") for x in layers):
            raise ValueError(f"hw_config.layers must be a list of [P, W] or [P, W, \"events\"] entries, not {layers!r}")
        return cls(tuple(LayerConfig(x[0], x[1], len(x) == 3) for x in layers), d.get("input_width"),
                   d.get("early_exit", False), d.get("skip_zero", False), d.get("encoder", False),
                   d.get("encoder_lanes"), d.get("logic_rom_bits"), d.get("spram", False),
                   d.get("spram_min_bits", SPRAM_MIN_BITS))

    def spram_bits(self) -> int | None:
        """The engines' ``spram`` argument: the smallest state RAM that goes to SPRAM, None without ``spram``."""
        return self.spram_min_bits if self.spram else None

    def input_width_for(self, net: Network) -> int:
        return self.layers[0].width if self.input_width is None else self.input_width


def reads_spike_vector(net: Network, index: int) -> bool:
    """Whether layer ``index`` is a dense layer reading a vector of spikes (the input or a dense layer's output; not
    a "pixel" network's bit planes): the layers that can skip zero words or run event-driven."""
    return net.layers[index].kind == "dense" and not map_input(net, index) and input_planes(net, index) == 1


def skips_zero(net: Network, config: HwConfig, index: int) -> bool:
    """Whether layer ``index`` skips all-zero input words under ``config``: dense layers reading a vector of spikes
    (not a "pixel" network's bit planes), unless event-driven (which skips every silent input)."""
    return config.skip_zero and reads_spike_vector(net, index) and not config.layers[index].events


def issues_by_data(net: Network, config: HwConfig, index: int) -> bool:
    """Whether layer ``index``'s engine issues its input words in a data-dependent order (zero-word skipping or
    event-driven): it then reads its input out of order (no input ring) and at data-dependent times (no one-port
    state RAM, :func:`spram_legal`)."""
    return skips_zero(net, config, index) or config.layers[index].events


def data_dependent(config: HwConfig) -> bool:
    """Whether a sample's cycles depend on its spikes (early exit, zero-word skipping, an event-driven layer):
    :func:`cycles_per_inference` is then the worst case and :func:`sample_cycles` a sample's own figure."""
    return config.early_exit or config.skip_zero or any(lc.events for lc in config.layers)


def input_planes(net: Network, index: int = 0) -> int:
    """Input words per word of layer ``index``'s input vector that its engine reads each step: contract.PIXEL_BITS
    bit planes for a "pixel" network's first layer (docs/spec.md section 12: I = sum_b 2^b I(plane_b)), else 1."""
    return contract.PIXEL_BITS if index == 0 and net.encoding == "pixel" else 1


def step_input_words(net: Network, width: int) -> int:
    """The i_spikes words a step takes at layer 0's width W_0: NW_0 = ceil(n_in / W_0), times the
    :func:`input_planes` of a "pixel" network (also the input buffer's depth per step)."""
    return ceil_div(net.n_in, width) * input_planes(net)


def layer_shape(layer, lc: LayerConfig) -> dict:
    """Under its folding, a layer's G (neuron groups; channel groups for conv), NW (words per neuron: per window
    for conv and pool) and positions (1 for dense; output positions for conv and pool)."""
    if layer.kind == "pool":
        return dict(groups=1, words=layer.window * layer.window, positions=layer.out_shape[0] * layer.out_shape[1])
    if layer.kind == "conv2d":
        return dict(groups=ceil_div(layer.out_channels, lc.parallel), words=layer.kernel * layer.kernel,
                    positions=layer.out_shape[0] * layer.out_shape[1])
    return dict(groups=ceil_div(layer.n_out, lc.parallel), words=ceil_div(layer.n_in, lc.width), positions=1)


# --- latencies (the blocks assert they match these) --------------------------------------------------------------

WIDE_TREE = 64   # a SynapseArray over more than this many inputs registers every second adder-tree level


def word_register(width: int) -> bool:
    """Whether a LayerEngine registers the ROM and spike words before its SynapseArrays: up to WIDE_TREE inputs. A
    wider engine feeds the trees from the reads' own registers (the block RAM's output register, the input buffer's
    read register): on the UP5K the P*W + W word bits would otherwise take as many logic cells of their own."""
    return width <= WIDE_TREE


def input_ring(net: Network, width: int, *, encoder: bool = False, skip: bool = False, members: int = 1) -> bool:
    """Whether NetworkTop keeps a step's input words in a ring of registers instead of a memory: a dense layer 0 with
    W_0 > WIDE_TREE that reads its words in order (no zero-word skipping), fed by ``i_spikes`` (no on-chip encoder),
    one member (an ensemble replays the whole sample). A write shifts its word in at the tail; each read moves the
    head to the tail, which drives ``i_in_data`` the next cycle, as a synchronous read would. G*NW_0 reads per step
    bring the ring back to word 0, and a step's NW_0 writes replace every word (so a reset mid-step needs no clear).
    Such a shallow, wide buffer goes to logic anyway (4 x 196 bits would take 13 iCE40 EBRs); as a ring it has no
    write decoder, no read multiplexer and no read register: W_0 multiplexers at the tail. Not for a "pixel" network
    (its 8 bit planes of words would take 8 times the registers)."""
    return (net.layers[0].kind == "dense" and width > WIDE_TREE and not encoder and not skip and members == 1
            and input_planes(net) == 1)


def input_buffer_info(words: int, width: int, ring: bool) -> dict:
    """The input buffer as the manifest lists it: a memory of ``words`` x ``width`` bits (the block RAM or the logic
    Yosys picks), or with ``ring`` that many registers (``"ring": True``, in logic)."""
    if ring:
        return dict(name="input_buffer", kind="ram", depth=words, width=width, bits=words * width, placement="logic",
                    ring=True)
    return memory_info("input_buffer", "ram", words, width, small_to_logic=False)


def tree_stride(width: int) -> int:
    """Adder-tree levels per register of a SynapseArray over ``width`` inputs: 1 (every level registered) up to
    WIDE_TREE inputs, 2 above. Wide words serve the block-RAM-bandwidth-bound points of small FPGAs, where the
    registers of every level would cost more flip-flops than the part has (a 196-input tree: 603 register bits per
    level-registered tree, 249 at stride 2), while two levels of narrow adders stay short of the control logic's
    critical path."""
    return 1 if width <= WIDE_TREE else 2


def synapse_latency(width: int) -> int:
    """SynapseArray: one register per ``tree_stride(W)`` popcount-tree levels (ceil(clog2(W) / stride)) plus the
    2*a - s stage (the gating stage for k-bit weights)."""
    return ceil_div(clog2(width), tree_stride(width)) + 1


NEURON_LATENCY = 6  # NeuronCore: read, leak, add, saturate, compare, reset/write-back


def engine_latency(width: int) -> int:
    """LayerEngine drain after the last word is issued: ROM/spike read (1), word register (1 up to WIDE_TREE inputs,
    :func:`word_register`), synapse tree, accumulator (1), neuron core, done pulse (1)."""
    return 1 + int(word_register(width)) + synapse_latency(width) + 1 + NEURON_LATENCY + 1


POOL_LATENCY = 3  # PoolEngine drain: address register (1), read (1, the OR and the write on the data), done (1)


def layer_latency(layer, lc: LayerConfig, skip: bool = False) -> int:
    """An engine's fixed drain: dense engine_latency(W); conv and a skipping dense engine one more (the registered
    read address); an event-driven engine engine_latency(1) + 1 (one input, its weight row, per cycle; the registered
    ROM address); pool POOL_LATENCY."""
    if layer.kind == "pool":
        return POOL_LATENCY
    if lc.events:
        return engine_latency(1) + 1
    return engine_latency(lc.width) + (1 if layer.kind == "conv2d" or skip else 0)


def step_cycles(layer, lc: LayerConfig, skip: bool = False, nonzero_words: int | None = None,
                planes: int = 1) -> int:
    """Cycles from an engine's i_start edge to its o_done pulse: positions * G * NW * planes + latency. A skipping
    dense engine spends max(1, nonzero_words) cycles per group instead of NW; an event-driven one max(1, spikes) (its
    input's spikes at that step, passed as ``nonzero_words``) instead of n_in (worst case, ``None``: every word, every
    input spiking)."""
    s = layer_shape(layer, lc)
    words = layer.n_in if lc.events else s["words"]
    if (skip or lc.events) and nonzero_words is not None:
        words = max(1, nonzero_words)
    return s["positions"] * s["groups"] * words * planes + layer_latency(layer, lc, skip)


# Top-level constants (see NetworkTop; measured by tests/test_hdl_top.py).
TOP_LAYER_OVERHEAD = 1   # cycle to start the next engine after o_done
READOUT_SCAN_OVERHEAD = 3
ENSEMBLE_MEMBER_OVERHEAD = 3   # an ensemble member's scan: n_out cycles, then SCAN_END, SCAN_WAIT and CLASS
ENCODER_LOAD_OVERHEAD = 1      # the encoder's done pulse after the last pixel
ENCODER_STEP_OVERHEAD = 3      # ENCODE (start), the pixel RAM's read latency, the done pulse


def check_design(net: Network, config: HwConfig, trace: bool = False) -> None:
    """The arguments every formula of a design takes: a Network, a HwConfig that builds it
    (:meth:`HwConfig.validate`) and the trace flag; a one-line TypeError / ValueError otherwise."""
    if not isinstance(net, Network):
        raise TypeError(f"net must be a bsnn_hw.Network, not {type(net).__name__}")
    if not isinstance(config, HwConfig):
        raise TypeError(f"config must be a HwConfig, not {type(config).__name__}")
    config.validate(net)
    check_flag("trace", trace)


def cycles_per_inference(net: Network, config: HwConfig, trace: bool = False, members: int = 1) -> int:
    """Cycles from the first accepted i_spikes beat to the last o_result beat (always-valid source, always-ready
    sinks); see docs/hardware.md. With early_exit, skip_zero or an event-driven layer this is the worst case (every
    step runs, every input spikes); :func:`sample_cycles` gives a sample's own figure.

    An ensemble of ``members`` S > 1: member 0 as a single network but without its result beats, each further
    member T steps without input beats (it replays the buffer) and a scan (n_out + ENSEMBLE_MEMBER_OVERHEAD)::

        T * (NW_0 + compute) + (S - 1) * (T * compute + n_out + 3) + readout_cycles + 1"""
    check_design(net, config, trace)
    check_int("members", members, what="the ensemble's weight sets; 1: a single network")
    compute = 0
    for i, (layer, lc) in enumerate(zip(net.layers, config.layers)):
        compute += (step_cycles(layer, lc, skips_zero(net, config, i), planes=input_planes(net, i))
                    + TOP_LAYER_OVERHEAD + (1 if trace else 0))
    extra = (members - 1) * (net.timesteps * compute + net.n_out + ENSEMBLE_MEMBER_OVERHEAD) + (members > 1)
    return input_cycles(net, config) + net.timesteps * (step_input_cycles(net, config) + compute) + extra + \
        readout_cycles(net, config)


def input_cycles(net: Network, config: HwConfig) -> int:
    """Cycles a sample's input costs once, before step 0: with the on-chip encoder its n_in pixel beats (and the
    load's end), else 0 (spike words come with each step)."""
    return net.n_in + ENCODER_LOAD_OVERHEAD if config.encoder else 0


def step_input_cycles(net: Network, config: HwConfig) -> int:
    """Cycles each step's input costs: NW_0 i_spikes beats (times PIXEL_BITS bit planes for a "pixel" network), or
    with the on-chip encoder its R = ceil(n_in / lanes) pixel words encoded (+ ENCODER_STEP_OVERHEAD: start, read
    latency, done)."""
    if config.encoder:
        return ceil_div(net.n_in, encoder_lanes(config)) + ENCODER_STEP_OVERHEAD
    return step_input_words(net, config.layers[0].width)


def encoder_lanes(config: HwConfig) -> int:
    """Pixels per word of the on-chip encoder's pixel RAM (layer 0's W unless set)."""
    return config.layers[0].width if config.encoder_lanes is None else config.encoder_lanes


def sample_cycles(net: Network, config: HwConfig, spikes, trace: bool = False) -> list[dict]:
    """Per sample of ``spikes`` (bool (N, T, n_in)): ``cycles`` from the first input beat to the last result beat,
    ``drain`` (the input beats taken and dropped after an early decision, before the next sample can start) and
    ``step`` (the last step run). Each run step costs NW_0 + sum_l (step_l + 1 [+ 1 trace]), where a skipping
    dense layer's step_l counts max(1, words of its input holding a spike) per group, an event-driven one max(1, its
    input's spikes); then the readout."""
    from bsnn_hw import golden
    check_design(net, config, trace)
    spikes = net.as_inputs(spikes)
    # the full run's spikes up to each decision step are the early-exit run's (a step never depends on later ones)
    ref = golden.simulate(net, spikes, record=True)
    if config.early_exit:
        last_step = golden.decision_step(net, ref)
    else:
        last_step = np.full(spikes.shape[0], net.timesteps - 1)
    nw0 = step_input_words(net, config.layers[0].width)
    per_step_in = step_input_cycles(net, config)
    out = []
    for b in range(spikes.shape[0]):
        total = input_cycles(net, config)
        for t in range(int(last_step[b]) + 1):
            total += per_step_in
            for i, (layer, lc) in enumerate(zip(net.layers, config.layers)):
                skip = skips_zero(net, config, i)
                nnz = None
                if skip or lc.events:
                    vec = spikes[b, t] if i == 0 else ref.spikes[i - 1][b, t]
                    padded = np.zeros(ceil_div(vec.size, lc.width) * lc.width, dtype=bool)
                    padded[:vec.size] = vec
                    nnz = int(vec.sum()) if lc.events else int(padded.reshape(-1, lc.width).any(axis=1).sum())
                total += (step_cycles(layer, lc, skip, nnz, input_planes(net, i)) + TOP_LAYER_OVERHEAD
                          + (1 if trace else 0))
        total += readout_cycles(net, config)
        drain = 0 if config.encoder else (net.timesteps - 1 - int(last_step[b])) * nw0
        out.append(dict(cycles=total, drain=drain, step=int(last_step[b])))
    return out


def readout_cycles(net: Network, config: HwConfig) -> int:
    """Argmax scan over the n_out neurons, then n_out result beats."""
    n = net.n_out
    return n + READOUT_SCAN_OVERHEAD + n


# Memories this small go to logic (flip-flops / LUTs) instead of a block RAM: an iCE40 EBR holds 4 kbit whatever the
# shape, and a 784-128-10 network needs every EBR it has for its weights (docs/hardware.md, resource expectations).
SMALL_MEMORY_BITS = 1024
# ROMs up to this size go to logic too: a ROM in logic is a LUT function of its address (no flip-flops), so a small
# weight or threshold ROM costs a few LUTs instead of a whole EBR (the trained 784-128-10 then fits the UP5K's 30
# EBRs with the on-chip encoder: docs/board.md); a RAM in logic is a register file, too dear past 1 kbit.
SMALL_ROM_BITS = 2048


STATE_WRITE_DELAY = 5   # NeuronCore: a group's state is read at cycle c and written back at c + 5


def spram_legal(words: int, skip: bool = False) -> bool:
    """Whether a LayerEngine whose groups arrive every ``words`` cycles (NW for dense, k*k for conv) can keep its
    state in a one-port RAM: reads at c + k*NW and write-backs at c + 5 + j*NW never meet unless NW divides 5 (NW = 1
    or 5). A skipping engine's groups come at data-dependent times: never."""
    return not skip and STATE_WRITE_DELAY % words != 0


def map_spram(depth: int, width: int, spram_bits: int | None) -> bool:
    """Whether a feature-map RAM (``depth`` positions x ``width`` channels, between a conv/pool engine and the next)
    goes to SPRAM: with ``HwConfig.spram`` (``spram_bits`` = ``HwConfig.spram_bits()``, not None) when it holds at
    least that many bits. Always legal: the producer writes it during its step and the consumer reads it during a
    later one (the layers run one after another), so no cycle both reads and writes it."""
    return spram_bits is not None and max(2, depth) * width >= spram_bits


def map_memory_info(index: int, depth: int, width: int, spram_bits: int | None) -> dict:
    """The manifest entry of layer ``index``'s output map RAM (:func:`map_spram` places it)."""
    return memory_info(f"layer{index}_map", "ram", depth, width, spram=map_spram(depth, width, spram_bits))


def spram_blocks(depth: int, width: int) -> int:
    """SB_SPRAM256KA blocks a depth x width memory takes (Yosys cascades them in depth and width)."""
    return ceil_div(depth, SPRAM_DEPTH) * ceil_div(width, SPRAM_WIDTH)


def memory_attrs(depth: int, width: int, rom: bool = False, logic_rom_bits: int | None = None) -> dict:
    """Verilog attributes for a memory: ``ram_style = "logic"`` when it holds at most SMALL_MEMORY_BITS bits
    (for a ROM ``logic_rom_bits``, default SMALL_ROM_BITS: ``HwConfig.logic_rom_bits``; Yosys' memory_libmap honours
    the attribute). The input buffer keeps the default (block RAM)."""
    limit = (SMALL_ROM_BITS if logic_rom_bits is None else logic_rom_bits) if rom else SMALL_MEMORY_BITS
    return {"ram_style": "logic"} if depth * width <= limit else {}


def memory_info(name: str, kind: str, depth: int, width: int, small_to_logic: bool = True,
                logic_rom_bits: int | None = None, spram: bool = False) -> dict:
    """A memory as the manifest lists it: name, kind (rom/ram), depth, width, bits, placement (block/logic/spram).
    Memories are built with at least 2 words (a 1-word memory would have a 0-bit address)."""
    depth = max(2, depth)
    logic = small_to_logic and bool(memory_attrs(depth, width, rom=kind == "rom", logic_rom_bits=logic_rom_bits))
    return dict(name=name, kind=kind, depth=depth, width=width, bits=depth * width,
                placement="spram" if spram else "logic" if logic else "block")
