"""`bsnn-hw generate MODEL -o OUT/`: Verilog and manifest from a .bsnn artifact."""
from __future__ import annotations

import json
from pathlib import Path

import click

from bsnn_hw.cli import UserError, load_model
from bsnn_hw.io import atomic_write_files


def parse_list(option: str, text: str | None):
    """'1,2' -> [1, 2]; None -> None."""
    if text is None:
        return None
    items = text.replace(" ", "").split(",")
    try:
        if "" in items:
            raise ValueError
        return [int(s) for s in items]
    except ValueError:
        raise UserError(f"{option} must be comma-separated ints, one per layer, none empty (e.g. 1,1), "
                        f"not {text!r}") from None


def logic_rom_bits_option(f):
    """--logic-rom-bits, shared by generate, synth, verify and dse (HwConfig.logic_rom_bits)."""
    return click.option("--logic-rom-bits", type=click.IntRange(min=0), default=None, help="ROMs of at most this "
                        "many bits in logic, larger ones in block RAM (default 2048; 0: every ROM to block RAM). "
                        "Lower it where block RAMs are spare and logic cells are not.")(f)


def decision_options(f):
    """--early-exit / --skip-zero / --encoder / memory placement, shared by generate, synth and verify
    (docs/hardware.md)."""
    f = click.option("--spram", is_flag=True, help="Put large neuron-state RAMs (conv layers) into the iCE40 "
                     "UltraPlus' SPRAM (4 x 256 kbit on the UP5K) instead of block RAM.")(f)
    f = logic_rom_bits_option(f)
    f = click.option("--encoder-lanes", type=click.IntRange(min=1), default=None, help="With --encoder: pixels per "
                     "word of the encoder's pixel RAM, a divisor of layer 0's W (default W; fewer lanes, fewer block "
                     "RAMs, more cycles).")(f)
    f = click.option("--encoder", is_flag=True, help="Take 8-bit pixels (i_pixels, n_in beats per sample) and "
                     "encode them on chip with the model's rate or latency code.")(f)
    f = click.option("--events", default=None, metavar="LAYERS", help="Run these layers event-driven (input-major: "
                     "one input spike's weight row per cycle, silent inputs cost nothing; cycles become data "
                     "dependent): comma-separated layer indices, or 'all' for every dense layer reading spikes.")(f)
    f = click.option("--skip-zero", is_flag=True, help="Dense layers reading a vector spend no cycle on an input "
                     "word without a spike (cycles become data dependent).")(f)
    f = click.option("--early-exit", is_flag=True, help="With the 'first' readout: stop after the first step with "
                     "an output spike and send the result with its decision step.")(f)
    return f


def config_option(f):
    """--config FILE, shared by generate, synth and verify: the hardware configuration chosen by `bsnn-hw dse`."""
    return click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                        help="A configuration file from `bsnn-hw dse -o` (P, W and options per layer); replaces "
                        "-P/-W and the option flags.")(f)


def load_config_file(path, net):
    """The HwConfig of a configuration file written by `bsnn-hw dse -o` (docs/dse.md) for ``net``
    (:func:`bsnn_hw.hdl.dse.read_config`: refused when made for another model or malformed)."""
    from .dse import read_config
    return read_config(path, net)


def parse_events(text: str | None, net) -> list[int] | None:
    """--events: 'all' -> every dense layer reading spikes (config.reads_spike_vector); '0,2' -> [0, 2]; None."""
    if text is None:
        return None
    if text.strip() == "all":
        from .config import reads_spike_vector
        layers = [i for i in range(len(net.layers)) if reads_spike_vector(net, i)]
        if not layers:
            raise UserError("--events all: this network has no dense layer reading spikes (conv layers, layers after "
                            "a feature map and a 'pixel' network's first layer run dense)")
        return layers
    items = parse_list("--events", text)
    bad = [i for i in items if not 0 <= i < len(net.layers)]
    if bad or len(set(items)) != len(items):
        raise UserError(f"--events must name distinct layer indices in 0..{len(net.layers) - 1} (or 'all'), "
                        f"not {text!r}")
    return items


def make_config(net, parallel, width, early_exit=False, skip_zero=False, encoder=False, encoder_lanes=None,
                config_file=None, logic_rom_bits=None, spram=False, events=None):
    """The HwConfig from the command line: a --config file, or -P/-W and the option flags (not both)."""
    import dataclasses
    from .config import HwConfig
    if config_file is not None:
        if (parallel or width or early_exit or skip_zero or encoder or encoder_lanes or logic_rom_bits is not None
                or spram or events):
            raise ValueError("--config gives the whole configuration: drop -P/-W/--early-exit/--skip-zero/--encoder/"
                             "--encoder-lanes/--logic-rom-bits/--spram/--events")
        config = load_config_file(config_file, net)
    else:
        config = HwConfig.from_lists(net, parse_list("--parallel", parallel), parse_list("--width", width),
                                     early_exit=early_exit, skip_zero=skip_zero, encoder=encoder,
                                     encoder_lanes=encoder_lanes, logic_rom_bits=logic_rom_bits, spram=spram)
        on = parse_events(events, net)
        if on:
            config = dataclasses.replace(config, layers=tuple(dataclasses.replace(lc, events=i in on)
                                                              for i, lc in enumerate(config.layers)))
    config.validate(net)
    return config


def map_only_option(f):
    """--map-only, shared by generate, synth and verify: an ensemble artifact is built as its ensemble unless given."""
    return click.option("--map-only", is_flag=True, help="For a model with an ensemble: build its MAP network only "
                        "(default: the ensemble, S members one after another, totals and votes in the result).")(f)


def select_network(net, map_only: bool):
    """``net`` without its ensemble when ``map_only`` (the MAP network), else ``net``."""
    if map_only and getattr(net, "ensemble", ()):
        from bsnn_hw.network import Network
        return Network(net.layers, net.timesteps, net.readout, net.encoding, net.seed, net.metadata)
    return net


@click.command("generate")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
              help="Output directory: writes <name>.v and <name>.json.")
@click.option("--parallel", "-P", default=None, help="Neuron lanes P per layer, e.g. 1,1 (default 1 each).")
@click.option("--width", "-W", default=None, help="Input bits per word W per layer, e.g. 16,16 (default min(16, n_in)).")
@click.option("--trace", is_flag=True, help="Add the o_trace stream (per-step spikes of every layer; for debugging).")
@click.option("--name", default="bsnn_top", show_default=True, help="Verilog module name of the top.")
@decision_options
@map_only_option
@config_option
def generate(model, out, parallel, width, trace, name, early_exit, skip_zero, encoder, encoder_lanes, logic_rom_bits,
             spram, map_only, config_file, events):
    """Generate synthesizable Verilog (one self-contained file) and a JSON manifest from a .bsnn MODEL."""
    from . import generate as gen
    from .config import data_dependent
    from .generate import check_name
    check_name(name)
    net = select_network(load_model(model), map_only)
    config = make_config(net, parallel, width, early_exit, skip_zero, encoder, encoder_lanes, config_file,
                         logic_rom_bits, spram, events)
    design = gen(net, config, trace=trace, name=name)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file; -o/--out takes a directory")
    # the pair lands together or not at all: no .v without its manifest, no manifest of another design
    atomic_write_files({out / f"{name}.v": design.verilog,
                        out / f"{name}.json": json.dumps(design.manifest, indent=2) + "\n"})
    man = design.manifest
    click.echo(f"wrote {out / (name + '.v')} and {out / (name + '.json')}: "
               f"{'-'.join(map(str, net.sizes))}, T={net.timesteps}, "
               f"P={','.join(str(lc.parallel) for lc in config.layers)}, "
               f"W={','.join(str(lc.width) for lc in config.layers)}, "
               + (f"an ensemble of {man['members']} members, " if man["members"] > 1 else "") +
               f"{man['memory_bits']:,} memory bits, {man['cycles_per_inference']:,} cycles per inference"
               + (" (worst case)" if data_dependent(config) else "")
               + (f"; input: {net.n_in} pixel beats per sample, {net.encoding} code on chip" if config.encoder
                  else ""))
