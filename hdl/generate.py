"""`generate`: a Network -> one self-contained Verilog file and its JSON manifest."""
from __future__ import annotations

import dataclasses
import re

from amaranth import Shape
from amaranth.back import verilog
from amaranth.lib import data, wiring

from bsnn_hw import contract
from bsnn_hw.checks import check_flag
from bsnn_hw.network import Network

from .config import (NEURON_LATENCY, HwConfig, check_design, count_bits, cycles_per_inference, data_dependent,
                     index_bits, input_planes, layer_latency, layer_shape, readout_cycles, skips_zero, step_cycles,
                     synapse_latency)
from .top import NetworkTop, result_layout, trace_layout

MANIFEST_VERSION = 1
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")     # fullmatch: "$" would let a final newline through


@dataclasses.dataclass
class Design:
    """What :func:`generate` returns: the Verilog text and the JSON-able manifest."""
    verilog: str
    manifest: dict


def to_verilog(component: wiring.Component, name: str) -> str:
    """Convert any block (a ``wiring.Component``) alone to Verilog; ports come from its signature, plus ``clk`` and
    ``rst`` of the sync domain. The text is :func:`portable_verilog`: it simulates as written on Icarus (any
    ``-g`` generation) and Verilator (no lint flags needed)."""
    if not isinstance(component, wiring.Component):
        raise TypeError(f"component must be an amaranth wiring.Component, not {type(component).__name__}")
    check_name(name)
    return portable_verilog(verilog.convert(component, name=name, emit_src=False))


# Yosys' Verilog backend makes every `always @*` block read a dummy register declared `reg \$auto$...$N = 0;` so that
# the block runs once at time 0. Under `iverilog -g2012` (SystemVerilog semantics) a declaration initializer raises no
# event, so those blocks - and outputs such as i_spikes__ready that they drive from registers holding their reset
# value - stay X until an input changes. An `initial #0` assignment gives the register a real event after every
# process has started. Verilator evaluates all combinational logic at time 0 by itself and wants --timing for a
# delay, and synthesis has no use for it, so both skip it.
_YOSYS_TRIGGER = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\S*) *= *0;", re.M)
_TIME0_FIX = ("{indent}reg {name} = 0;\n"
              "`ifndef SYNTHESIS\n`ifndef VERILATOR\n"
              "{indent}initial #0 {name} = 1;  // bsnn-hw: time-0 evaluation of always @* under iverilog -g2012\n"
              "`endif\n`endif")
# Verilator warnings that Amaranth's output trips by design (operands of different widths in its arithmetic, case
# statements without a default over enum-like values); the file turns them off itself so a plain `verilator --binary`
# or `--cc` build does not stop on them.
VERILATOR_LINT_OFF = ("WIDTHEXPAND", "WIDTHTRUNC", "CASEINCOMPLETE")

# Yosys' Verilog backend writes a memory's contents as ONE `initial begin ... end` block holding an assignment per
# word. Yosys' own Verilog frontend (read_verilog) takes time quadratic in the statements of one such block, and
# linear when every word is its own `initial` statement (784-512-10, a 25,088-word weight ROM: 211 CPU s before,
# 6.7 s after; docs/synthesis.md, "ROM contents"). `initial mem[i] = value;` is plain Verilog-2005 that every
# simulator and synthesis tool reads to the same memory contents, and it keeps the design one self-contained file
# ($readmemh would need side files).
_MEMORY_INIT_BLOCK = re.compile(
    r"^( +)initial begin\n((?:\1  (?:\\\S+ |[A-Za-z_][\w$]*)\[\d+\] = [^;\n]+;\n)+)\1end\n", re.M)


def _one_initial_per_word(m: re.Match) -> str:
    indent = m.group(1)
    return "".join(f"{indent}initial {line.strip()}\n" for line in m.group(2).splitlines())


def split_memory_init(text: str) -> str:
    """Rewrite every memory-init block of Yosys' Verilog backend (``initial begin`` then only ``name[i] = value;``
    lines) into one ``initial name[i] = value;`` statement per word: the same contents, read by Yosys in linear
    time (see the comment above). Other ``initial`` blocks are left alone; idempotent."""
    return _MEMORY_INIT_BLOCK.sub(_one_initial_per_word, text)


# A memory marked for the iCE40 UltraPlus' SPRAM (`ram_style = "huge"`, HwConfig.spram) must carry no initial
# contents (the SPRAM has none; Yosys finds no mapping for a memory with an init). Amaranth writes zeros for every RAM.
_HUGE_MEMORY = re.compile(r'^\s*\(\* ram_style = "huge" \*\)\n\s*reg \[[^\]]+\] (\S+) \[', re.M)


def drop_huge_memory_init(text: str) -> str:
    """Remove the ``initial name[i] = value;`` statements (after :func:`split_memory_init`) of every memory marked
    ``ram_style = "huge"``; idempotent."""
    for name in set(_HUGE_MEMORY.findall(text)):
        text = re.sub(rf"^\s*initial {re.escape(name)}\[\d+\] = [^;\n]+;\n", "", text, flags=re.M)
    return text


def portable_verilog(text: str) -> str:
    """Make Amaranth/Yosys output simulate correctly, unmodified, on Icarus and Verilator (see the comments above)
    and read in linear time by Yosys (:func:`split_memory_init`), SPRAM memories without initial contents;
    idempotent."""
    text = drop_huge_memory_init(split_memory_init(text))
    if "bsnn-hw: time-0" in text:
        return text
    text = _YOSYS_TRIGGER.sub(lambda m: _TIME0_FIX.format(indent=m.group(1), name=m.group(2)), text)
    header = "".join(f"/* verilator lint_off {w} */\n" for w in VERILATOR_LINT_OFF)
    return header + text


# Reserved words of Verilog-2005 and SystemVerilog-2017: a module cannot be named after one without escaping.
VERILOG_KEYWORDS = frozenset("""
accept_on alias always always_comb always_ff always_latch and assert assign assume automatic before begin bind bins
binsof bit break buf bufif0 bufif1 byte case casex casez cell chandle checker class clocking cmos config const
constraint context continue cover covergroup coverpoint cross deassign default defparam design disable dist do edge
else end endcase endchecker endclass endclocking endconfig endfunction endgenerate endgroup endinterface endmodule
endpackage endprimitive endprogram endproperty endspecify endsequence endtable endtask enum event eventually expect
export extends extern final first_match for force foreach forever fork forkjoin function generate genvar global
highz0 highz1 if iff ifnone ignore_bins illegal_bins implements implies import incdir include initial inout input
inside instance int integer interconnect interface intersect join join_any join_none large let liblist library local
localparam logic longint macromodule matches medium modport module nand negedge nettype new nexttime nmos nor
noshowcancelled not notif0 notif1 null or output package packed parameter pmos posedge primitive priority program
property protected pull0 pull1 pulldown pullup pulsestyle_ondetect pulsestyle_onevent pure rand randc randcase
randsequence rcmos real realtime ref reg reject_on release repeat restrict return rnmos rpmos rtran rtranif0
rtranif1 s_always s_eventually s_nexttime s_until s_until_with scalared sequence shortint shortreal showcancelled
signed small soft solve specify specparam static string strong strong0 strong1 struct super supply0 supply1
sync_accept_on sync_reject_on table tagged task this throughout time timeprecision timeunit tran tranif0 tranif1 tri
tri0 tri1 triand trior trireg type typedef union unique unique0 unsigned until until_with untyped use uwire var
vectored virtual void wait wait_order wand weak weak0 weak1 while wildcard wire with within wor xnor xor
""".split())


def check_name(name) -> str:
    """A module name that needs no escaping in Verilog or SystemVerilog: an identifier, not a reserved word."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {name!r}")
    if not _NAME.fullmatch(name):
        raise ValueError(f"name must be a Verilog identifier (letters, digits, _; not starting with a digit), "
                         f"not {name!r}")
    if name in VERILOG_KEYWORDS:
        raise ValueError(f"name must not be a Verilog/SystemVerilog reserved word, not {name!r}")
    return name


def _fields(layout: data.StructLayout) -> list[dict]:
    out = []
    for fname, field in layout:
        s = Shape.cast(field.shape)
        out.append(dict(name=fname, lsb=field.offset, width=s.width, signed=s.signed))
    return out


def affine_summary(core) -> dict | None:
    """A NeuronCore's per-step affine as the manifest lists it (None without one): F, the widths of a (0 without a
    scale table), b, the drive x and the synaptic sum I, and the multipliers built (P with a scale table, else 0)."""
    if not core.affine:
        return None
    return dict(frac=core.frac, scale_bits=core.scale_bits, bias_bits=core.bias_bits, drive_bits=core.drive_bits,
                sum_bits=core.sum_width, multipliers=core.multipliers)


def manifest(net: Network, config: HwConfig, trace: bool, name: str, top: NetworkTop | None = None) -> dict:
    """The manifest (docs/hardware.md): everything a bench needs to size itself."""
    check_design(net, config, trace)
    check_name(name)
    if top is not None and not isinstance(top, NetworkTop):
        raise TypeError(f"top must be the NetworkTop built for net or None, not {type(top).__name__}")
    if top is None:
        top = NetworkTop(net, config, trace)
        top._MustUse__silence = True   # built for its shape and memories only (the fit check), not elaborated
    S = top.members
    rl = result_layout(net, config.early_exit, S)
    ports = [
        dict(name="clk", direction="in", width=1),
        dict(name="rst", direction="in", width=1),
        *([dict(name="i_pixels__valid", direction="in", width=1),
           dict(name="i_pixels__ready", direction="out", width=1),
           dict(name="i_pixels__payload", direction="in", width=8)] if config.encoder else
          [dict(name="i_spikes__valid", direction="in", width=1),
           dict(name="i_spikes__ready", direction="out", width=1),
           dict(name="i_spikes__payload", direction="in", width=top.input_width)]),
        dict(name="o_result__valid", direction="out", width=1),
        dict(name="o_result__ready", direction="in", width=1),
        dict(name="o_result__payload", direction="out", width=rl.size),
    ]
    payloads = {"o_result": _fields(rl)}
    if trace:
        tl = trace_layout(net, S)
        ports += [dict(name="o_trace__valid", direction="out", width=1),
                  dict(name="o_trace__ready", direction="in", width=1),
                  dict(name="o_trace__payload", direction="out", width=tl.size)]
        payloads["o_trace"] = _fields(tl)
    layers = []
    for i, (layer, lc, eng) in enumerate(zip(net.layers, config.layers, top.engines)):
        planes = input_planes(net, i)
        shape = layer_shape(layer, lc)
        entry = dict(
            index=i, kind=layer.kind, n_in=layer.n_in, n_out=layer.n_out, parallel=lc.parallel, width=lc.width,
            groups=shape["groups"], words=shape["words"], positions=shape["positions"], planes=planes,
            weight_bits=layer.weight_bits, skip_zero=skips_zero(net, config, i), events=lc.events,
            latency=layer_latency(layer, lc, skips_zero(net, config, i)),
            step_cycles=step_cycles(layer, lc, skips_zero(net, config, i), planes=planes),
            memories=eng.memories(),
        )
        if layer.kind != "dense":
            entry.update(in_shape=list(layer.in_shape), out_shape=list(layer.out_shape))
        if layer.kind == "conv2d":
            entry.update(kernel=layer.kernel, stride=layer.stride, padding=layer.padding)
        if layer.kind == "pool":
            entry.update(window=layer.window, mode=layer.mode)
        else:
            entry.update(membrane_bits=layer.membrane_bits, leak_shift=layer.leak_shift, reset=layer.reset,
                         fire_once=layer.fire_once, fires=net.layer_fires(i), affine=affine_summary(eng.core))
        layers.append(entry)
    mems = top.memories()
    return dict(
        manifest_version=MANIFEST_VERSION,
        contract_version=contract.CONTRACT_VERSION,
        top=name,
        model_identity=net.identity(),
        timesteps=net.timesteps,
        sizes=net.sizes,
        readout=net.readout,
        encoding=net.encoding,
        trace=trace,
        input_width=top.input_width,
        input_words=top.input_words,
        input="pixels" if config.encoder else "bit planes" if input_planes(net) > 1 else "spikes",
        encoder=dict(encoding=net.encoding, seed=net.seed if net.encoding == "rate" else None,
                     lane_bits=top.encoder.lane_bits) if config.encoder else None,
        beats_per_sample=net.n_in if config.encoder else net.timesteps * top.input_words,
        members=S,
        member_identities=[mem.identity() for mem in top.member_nets],
        result_beats=net.n_out,
        clock=dict(name="clk", reset="rst", reset_kind="synchronous, active high"),
        ports=ports,
        payloads=payloads,
        layers=layers,
        memories=mems,
        memory_bits=sum(d["depth"] * d["width"] for d in mems),
        early_exit=config.early_exit,
        skip_zero=config.skip_zero,
        cycles_per_inference=cycles_per_inference(net, config, trace, S),
        cycles_note=("the worst case: with early_exit, skip_zero or an event-driven layer a sample's cycles depend "
                     "on its spikes (bsnn_hw.hdl.config.sample_cycles, docs/hardware.md)"
                     if data_dependent(config) else "fixed: every sample takes this many"),
        readout_cycles=readout_cycles(net, config),
        widths=dict(index=index_bits(net.n_out), count=count_bits(net.timesteps),
                    membrane=net.layers[-1].membrane_bits),
        latencies=dict(neuron_core=NEURON_LATENCY,
                       synapse_array=[synapse_latency(1 if lc.events else lc.width) if layer.kind != "pool" else None
                                      for layer, lc in zip(net.layers, config.layers)]),
    )


def generate(net: Network, config: HwConfig | None = None, trace: bool = False, name: str = "bsnn_top",
             ensemble: bool = True) -> Design:
    """Build :class:`NetworkTop` for ``net`` and convert it: ``Design(verilog, manifest)``. A network that carries
    an ensemble (``net.ensemble``) is built as the ensemble (its members' weights in ROM banks, totals and votes in
    the result), unless ``ensemble=False``: then the MAP network (``net``'s own weights)."""
    if not isinstance(net, Network):
        raise TypeError(f"net must be a bsnn_hw.Network, not {type(net).__name__}")
    config = HwConfig.default(net) if config is None else config
    if not isinstance(config, HwConfig):
        raise TypeError(f"config must be a HwConfig, not {type(config).__name__}")
    check_design(net, config, trace)
    check_name(name)
    members = None
    if check_flag("ensemble", ensemble) and getattr(net, "ensemble", ()):
        from bsnn_hw import ensemble as ens
        members = ens.members(net)
    top = NetworkTop(net, config, trace, members=members)
    text = to_verilog(top, name)
    return Design(text, manifest(net, config, trace, name, top))
