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


def decision_options(f):
    """--early-exit / --skip-zero, shared by generate, synth and verify (docs/hardware.md)."""
    f = click.option("--skip-zero", is_flag=True, help="Dense layers reading a vector spend no cycle on an input "
                     "word without a spike (cycles become data dependent).")(f)
    f = click.option("--early-exit", is_flag=True, help="With the 'first' readout: stop after the first step with "
                     "an output spike and send the result with its decision step.")(f)
    return f


@click.command("generate")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
              help="Output directory: writes <name>.v and <name>.json.")
@click.option("--parallel", "-P", default=None, help="Neuron lanes P per layer, e.g. 1,1 (default 1 each).")
@click.option("--width", "-W", default=None, help="Input bits per word W per layer, e.g. 16,16 (default min(16, n_in)).")
@click.option("--trace", is_flag=True, help="Add the o_trace stream (per-step spikes of every layer; for debugging).")
@click.option("--name", default="bsnn_top", show_default=True, help="Verilog module name of the top.")
@decision_options
def generate(model, out, parallel, width, trace, name, early_exit, skip_zero):
    """Generate synthesizable Verilog (one self-contained file) and a JSON manifest from a .bsnn MODEL."""
    from . import HwConfig
    from . import generate as gen
    from .generate import check_name
    check_name(name)
    net = load_model(model)
    config = HwConfig.from_lists(net, parse_list("--parallel", parallel), parse_list("--width", width),
                                 early_exit=early_exit, skip_zero=skip_zero)
    config.validate(net)
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
               f"{man['memory_bits']:,} memory bits, {man['cycles_per_inference']:,} cycles per inference"
               + (" (worst case)" if early_exit or skip_zero else ""))
