"""The ``bsnn-hw`` command line.

Core sub-commands live here (inspect, random, run); the others are loaded lazily from their packages so that
``bsnn-hw inspect`` does not import torch or Amaranth:
``train`` (bsnn_hw.train.cli), ``generate`` (bsnn_hw.hdl.cli), ``synth`` (bsnn_hw.hdl.synth), ``verify`` (bsnn_hw.sim.cli).

Every error a user can cause is one line on stderr ("Error: ..."), a non-zero exit, no traceback, and no
half-written output (files are written through :func:`bsnn_hw.io.atomic_write`).
"""
from __future__ import annotations

import importlib
import json
import math
import os
import sys

# Idle OpenMP threads sleep instead of spinning (unless the user says otherwise). torch reads this when it starts, and
# the commands import torch lazily, after this line. On a busy machine spinning threads compete with the other jobs
# for the cores: bsnn-hw training with 2 threads beside one other job on 2 cores ran 0.25x as fast as 1 thread with
# the default policy and 1.07x with this one (bench/train_speed.py, docs/training.md "Threads").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click
import numpy as np

from . import __version__, contract
from .artifact import ArtifactError
from .io import json_default

LAZY_COMMANDS = {
    "train": ("bsnn_hw.train.cli", "train", "Train a binarized SNN and export a .bsnn artifact."),
    "generate": ("bsnn_hw.hdl.cli", "generate", "Generate Verilog and a manifest from a .bsnn artifact."),
    "synth": ("bsnn_hw.hdl.synth", "synth", "Synthesize the generated Verilog with Yosys; resources and Fmax."),
    "verify": ("bsnn_hw.sim.cli", "verify", "Run the RTL on data and compare it bit for bit with the golden model."),
    "calibrate": ("bsnn_hw.calibrate", "calibrate",
                  "Accuracy and calibration (NLL, Brier, ECE, reliability diagram) of a model or an ensemble."),
    "export-nir": ("bsnn_hw.nirgraph", "export_nir", "Write a .bsnn model as a NIR graph (.nir)."),
    "import-nir": ("bsnn_hw.nirgraph", "import_nir", "Read a NIR graph (.nir) into a .bsnn model, exactly or not at all."),
    "build": ("bsnn_hw.hdl.board", "build", "Build a bitstream for a board (iCEBreaker, ULX3S...) with a UART host link."),
    "board-run": ("bsnn_hw.sim.board_run", "board_run",
                  "Send test images to a board over its UART and compare with the golden model."),
    "dse": ("bsnn_hw.hdl.dse", "dse", "Explore P and W per layer for an FPGA: Pareto table of cycles, LUTs, block RAM."),
}

# Exceptions that carry a user-facing message; anything else is a bug and keeps its traceback.
USER_ERRORS = (ArtifactError, ValueError, TypeError, OSError)


class UserError(click.ClickException):
    """A one-line error for the user; exit status 1. Line breaks in the message (from a file name, say) become
    spaces."""

    def __init__(self, message: str):
        super().__init__(one_line_text(message))


class Group(click.Group):
    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def format_commands(self, ctx, formatter):
        """As click's, but the lazy commands' one-line help comes from LAZY_COMMANDS: `bsnn-hw --help` imports
        neither torch nor Amaranth nor cocotb."""
        rows = []
        for name in self.list_commands(ctx):
            if name in LAZY_COMMANDS and name not in self.commands:
                rows.append((name, LAZY_COMMANDS[name][2]))
                continue
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=200)))     # wrapped by click, never cut
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def get_command(self, ctx, name):
        if name in LAZY_COMMANDS and name not in self.commands:
            module, attr, help_text = LAZY_COMMANDS[name]
            try:
                return getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as e:
                reason = one_line(e)

                @click.command(name, help=help_text, context_settings={"ignore_unknown_options": True})
                @click.argument("args", nargs=-1, type=click.UNPROCESSED)
                def unavailable(args):
                    raise UserError(f"'{name}' is not available in this installation ({reason})")
                return unavailable
        return super().get_command(ctx, name)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """As click's, except that a usage error (unknown option, bad value, missing argument) is one line too:
        "Error: <what is wrong> (see '<command> --help')", exit status 2."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "bsnn-hw"
            click.echo(f"Error: {one_line_text(e.format_message()).rstrip('.')} (see '{where} --help')", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except USER_ERRORS as e:
            raise UserError(one_line(e)) from None


def progress_printer():
    """A callable that prints one progress line to stderr, or None when stderr is not a terminal: an interactive user
    sees every long step (build, simulate, synthesize, place and route) as it starts; a script or log that reads
    stderr gets only results and, on failure, the one error line."""
    if not sys.stderr.isatty():
        return None
    return lambda line: click.echo(line, err=True)


def one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.filename and e.strerror:
        text = f"{e.filename}: {e.strerror}"
    return one_line_text(text)


def one_line_text(text: str) -> str:
    return " ".join(str(text).split())


class PositiveNumber(click.ParamType):
    """An option's value that must be a finite number > 0 (a clock, a baud rate, a timeout). click's FloatRange is
    not enough: every comparison with NaN is false, so it lets ``nan`` through."""
    name = "number"

    def convert(self, value, param, ctx):
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not (math.isfinite(v) and v > 0):
            self.fail(f"expected a finite number > 0, not {value!r}", param, ctx)
        return v


POSITIVE = PositiveNumber()
SEED = click.IntRange(min=0)      # NumPy's and torch's generators take seeds >= 0


def given(param: str) -> bool:
    """Whether the running command's option ``param`` (its Python name) was given by the user, not defaulted: an
    option that has no effect in the case at hand is refused rather than ignored."""
    from click.core import ParameterSource
    return click.get_current_context().get_parameter_source(param) not in (ParameterSource.DEFAULT, None)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bsnn-hw")
def main():
    """bsnn-hw: binarized spiking neural networks from training to verified Verilog."""


def load_model(path):
    from . import load
    return load(path)


def emit_json(obj, compact: bool = False) -> None:
    """Print ``obj`` as JSON (numpy values converted); ``compact``: one line, for large outputs."""
    if compact:
        click.echo(json.dumps(obj, separators=(",", ":"), default=json_default))
    else:
        click.echo(json.dumps(obj, indent=2, sort_keys=False, default=json_default))




# --- inspect -------------------------------------------------------------------------------------------------------

def describe(net) -> dict:
    layers = []
    for i, layer in enumerate(net.layers):
        fires = net.layer_fires(i) and layer.has_neurons
        th = layer.threshold
        entry = {
            "index": i, "type": layer.kind, "n_in": layer.n_in, "n_out": layer.n_out,
            "in_shape": list(layer.in_shape), "out_shape": list(layer.out_shape),
            "threshold_min": None if (th is None or not fires) else int(th.min()),
            "threshold_max": None if (th is None or not fires) else int(th.max()),
            "fires": fires, **layer.params(),
            "weight_bits": layer.weight_memory_bits, "bits_per_weight": layer.weight_bits,
            "synaptic_ops": net.timesteps * layer.synaptic_ops_per_step,
        }
        if layer.kind == "conv2d":
            entry.update(kernel=layer.kernel, stride=layer.stride, padding=layer.padding)
        if layer.has_affine:
            entry["step_affine"] = {
                "frac": layer.step_frac, "scale": layer.step_scale is not None,
                "scale_bits": None if layer.step_scale is None else contract.signed_width(layer.step_scale),
                "bias_bits": contract.signed_width(layer.step_bias),
                "table_bits": layer.step_bias.size * (contract.signed_width(layer.step_bias) + (
                    0 if layer.step_scale is None else contract.signed_width(layer.step_scale)))}
        layers.append(entry)
    return {
        "sizes": net.sizes, "timesteps": net.timesteps, "readout": net.readout, "encoding": net.encoding,
        "seed": net.seed, "layers": layers, "weight_memory_bits": net.weight_bits(),
        "synaptic_ops_per_inference": net.synaptic_ops(), "identity": net.identity(),
        "contract_version": net.contract_version, "metadata": net.metadata,
        "ensemble_members": len(net.ensemble),
    }


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def inspect(model, as_json):
    """Show a model's layers, parameters, weight memory and synaptic operations per inference."""
    net = load_model(model)
    info = describe(net)
    if as_json:
        emit_json(info)
        return
    from rich.console import Console
    from rich.table import Table
    console = Console(width=max(Console().width, 110))
    console.print(f"[bold]{model}[/]  {'-'.join(map(str, net.sizes))}  T={net.timesteps}  readout={net.readout}  "
                  f"encoding={net.encoding}" + (f" (seed {net.seed})" if net.encoding == "rate" else "")
                  + (f"  an ensemble of {len(net.ensemble)} members (the layers below are its MAP network; "
                     f"{len(net.ensemble)} more weight sets)" if net.ensemble else ""))
    table = Table()
    for col in ("layer", "kind", "in", "out", "threshold", "leak", "reset", "M", "fire-once", "weight bits",
                "syn. ops"):
        table.add_column(col, justify="right")
    for lay in info["layers"]:
        shape = "x".join(map(str, lay["in_shape"])), "x".join(map(str, lay["out_shape"]))
        if lay["type"] == "pool":
            table.add_row(str(lay["index"]), f"OR pool {lay['window']}x{lay['window']}", *shape,
                          *["-"] * 5, "0", "0")
            continue
        kind = lay["type"] if lay["type"] == "dense" else \
            f"conv {lay['kernel']}x{lay['kernel']}/{lay['stride']} pad {lay['padding']}"
        if lay["bits_per_weight"] > 1:
            kind += f", {lay['bits_per_weight']}-bit"
        th = ("never fires" if not lay["fires"] else
              str(lay["threshold_min"]) if lay["threshold_min"] == lay["threshold_max"]
              else f"{lay['threshold_min']}..{lay['threshold_max']}")
        leak = "none" if lay["leak_shift"] is None else f">>>{lay['leak_shift']}"
        table.add_row(str(lay["index"]), kind, *shape, th, leak, lay["reset"],
                      str(lay["membrane_bits"]), "yes" if lay["fire_once"] else "no",
                      f"{lay['weight_bits']:,}", f"{lay['synaptic_ops']:,}")
    console.print(table)
    for lay in info["layers"]:
        if "step_affine" in lay:
            a = lay["step_affine"]
            what = (f"scale ({a['scale_bits']} bits) and bias ({a['bias_bits']} bits)" if a["scale"]
                    else f"bias only ({a['bias_bits']} bits)")
            console.print(f"layer {lay['index']}: per-step affine drive (contract v3), {what} per step and "
                          f"{'channel' if lay['type'] == 'conv2d' else 'neuron'}, F = {a['frac']}: "
                          f"{a['table_bits']:,} table bits")
    console.print(f"weight memory: {info['weight_memory_bits']:,} bits ({_kib(info['weight_memory_bits'])}) = every "
                  f"weight times its width (1 bit: 1 = +1; k bits: two's complement)")
    console.print(f"synaptic operations per inference: {info['synaptic_ops_per_inference']:,} (T x every neuron's "
                  f"fan-in)")
    console.print("[dim]`bsnn-hw generate` reports memory_bits, which is larger: the weight ROMs hold these bits padded "
                  "to whole W-bit words per group of P neurons, beside threshold ROMs and membrane/count RAMs.[/]")
    console.print(f"identity: {info['identity']}  (SHA-256 of contract version, parameters, thresholds and weights; "
                  f"not of the metadata)")
    if net.metadata:
        console.print(metadata_table(net.metadata))


def metadata_table(meta: dict):
    """The artifact's metadata as a two-column table; long values wrap at spaces, never cut; per-sample data (the
    float model's predictions) is summarized by size."""
    from rich.table import Table
    table = Table(title="metadata", show_header=False, box=None, padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")

    def add(prefix, value):
        if isinstance(value, dict) and value:
            for k, v in value.items():
                add(f"{prefix}.{k}" if prefix else str(k), v)
            return
        if isinstance(value, str) and len(value) > 200 and " " not in value:
            text = f"<{len(value):,} characters of encoded data>"
        elif isinstance(value, float):
            text = f"{value:.6g}"
        elif isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
            text = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)
        else:
            text = json.dumps(value) if not isinstance(value, str) else value
        table.add_row(prefix, text)

    add("", meta)
    return table


def _kib(bits: int) -> str:
    return f"{bits / 8192:,.1f} KiB" if bits >= 8192 else f"{contract.ceil_div(bits, 8):,} bytes"


# --- random --------------------------------------------------------------------------------------------------------

def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.replace(",", "-").split("-")]
    except ValueError:
        raise UserError(f"--sizes must look like 784-128-10, not {text!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise UserError(f"--sizes needs at least two positive sizes (inputs, then each layer), not {text!r}")
    return sizes


@main.command()
@click.option("--sizes", required=True, help="Layer sizes, inputs first, e.g. 784-128-10.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output .bsnn file.")
@click.option("--timesteps", "-T", default=16, show_default=True, type=int)
@click.option("--leak-shift", default="4", show_default=True, help="Leak shift k (lambda = 1 - 2^-k), or 'none'.")
@click.option("--reset", type=click.Choice(contract.RESET_MODES), default="subtract", show_default=True)
@click.option("--membrane-bits", "-M", default=16, show_default=True, type=int)
@click.option("--fire-once", is_flag=True)
@click.option("--readout", type=click.Choice(contract.READOUTS), default="count", show_default=True)
@click.option("--encoding", type=click.Choice(contract.ENCODINGS), default="rate", show_default=True)
@click.option("--threshold", type=int, default=None, help="One threshold for every neuron (default: random).")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of the random weights.")
def random(sizes, out, timesteps, leak_shift, reset, membrane_bits, fire_once, readout, encoding, threshold, seed):
    """Write a random, untrained model (to try the hardware flow without training)."""
    from .io import check_memory
    from .network import random_network
    leak = None if leak_shift.lower() in ("none", "") else _int_option("--leak-shift", leak_shift)
    dims = parse_sizes(sizes)
    # the weights are drawn as float64 then kept as bool, and the artifact holds them packed: about 10 bytes each
    check_memory(10 * sum(a * b for a, b in zip(dims[:-1], dims[1:])), f"a random {sizes} network")
    net = random_network(dims, timesteps=timesteps, leak_shift=leak, reset=reset,
                         membrane_bits=membrane_bits, fire_once=fire_once, readout=readout, encoding=encoding,
                         threshold=threshold, seed=seed)
    net.save(out)
    click.echo(f"wrote {out}: {'-'.join(map(str, net.sizes))}, T={timesteps}, {net.weight_bits():,} weight bits")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--steps", required=True, help="T' (1..T), or 'exit': the exit step the trainer stored "
              "(metadata.bntt.exit_step).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output .bsnn file.")
def truncate(model, steps, out):
    """Write the model run for only its first T' steps (a static early exit: per-step tables cut to T' rows)."""
    from .network import truncate as cut
    net = load_model(model)
    if steps == "exit":
        exit_step = net.meta("bntt").get("exit_step")
        if exit_step is not None and (isinstance(exit_step, bool) or not isinstance(exit_step, int)):
            raise UserError(f"{model}: metadata.bntt.exit_step must be a step count, not {exit_step!r}")
        if exit_step is None:
            raise UserError(f"{model}: no exit step in its metadata (metadata.bntt.exit_step, written by "
                            f"`bsnn-hw train --method bntt`); pass --steps N")
        n = exit_step
    else:
        try:
            n = int(steps)
        except ValueError:
            raise UserError(f"--steps must be an int or 'exit', not {steps!r}") from None
    small = cut(net, n)
    small.save(out)
    click.echo(f"wrote {out}: {'-'.join(map(str, small.sizes))}, T={small.timesteps} (from T={net.timesteps})")


def _int_option(name, text):
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{name} must be an int or 'none', not {text!r}") from None


# --- run -----------------------------------------------------------------------------------------------------------

def load_inputs(path, net):
    """Inputs for ``run``: .npy or .npz (key "x", optional "y" labels). uint8 (batch, n_in) intensities, encoded
    with the model's encoding, or bool (batch, T, n_in) spike trains used as they are."""
    from pathlib import Path
    p = Path(path)
    if not p.exists():
        raise UserError(f"{path}: no such input file")
    if p.suffix not in (".npy", ".npz"):
        raise UserError(f"{path}: inputs must be a .npy or .npz file, not {p.suffix or 'a file without suffix'!r}")
    labels = None
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "x" not in z:
                    raise UserError(f"{path}: expected an array named 'x' (and optionally 'y'), found "
                                    f"{', '.join(z.files) or 'none'}")
                x = z["x"]
                labels = z["y"] if "y" in z else None
        else:
            x = np.load(p, allow_pickle=False)
    except UserError:
        raise
    except Exception as e:   # noqa: BLE001 - arbitrary bytes reach numpy's parsers, which raise many kinds of error
        # numpy's fallback for an unrecognised file is pickle, refused here: say what the file is not instead
        why = "no NumPy array header; object arrays are never loaded" if "pickle" in str(e) else one_line(e)
        raise UserError(f"{path}: not a readable .npy/.npz array file ({why})") from None
    if x.dtype == bool:
        if x.ndim != 3 or x.shape[1:] != (net.timesteps, net.n_in):
            raise UserError(f"{path}: spike trains must have shape (batch, {net.timesteps}, {net.n_in}), "
                            f"not {x.shape}")
        spikes = x
    elif x.dtype == np.uint8:
        if x.ndim == 2 and x.shape[0] and x.shape[1] == net.n_in:
            from . import golden
            golden.check_memory_for(net, x.shape[0])
        if net.encoding == "direct":
            raise UserError(f"{path}: the model's encoding is 'direct', so inputs must be bool spike trains "
                            f"(batch, {net.timesteps}, {net.n_in}), not uint8 intensities")
        if x.ndim != 2 or x.shape[1] != net.n_in:
            raise UserError(f"{path}: intensities must have shape (batch, {net.n_in}), not {x.shape}")
        spikes = net.encode(x)
    else:
        raise UserError(f"{path}: inputs must be uint8 intensities or bool spike trains, not {x.dtype}")
    if labels is not None and (labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer)):
        raise UserError(f"{path}: labels 'y' must be integer class indices, not {labels.dtype}")
    if labels is not None and labels.shape != (spikes.shape[0],):
        raise UserError(f"{path}: labels 'y' must have shape ({spikes.shape[0]},), not {labels.shape}")
    if labels is not None and labels.size and (labels.min() < 0 or labels.max() >= net.n_out):
        bad = labels[(labels < 0) | (labels >= net.n_out)][0]
        raise UserError(f"{path}: labels 'y' must be classes 0..{net.n_out - 1} of the model's {net.n_out} outputs, "
                        f"found {bad}")
    return spikes, labels


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("inputs", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="Samples listed in the table (0: none).")
def run(model, inputs, as_json, limit):
    """Run the golden model on stored inputs (.npy/.npz): spike counts and predictions."""
    from . import golden
    net = load_model(model)
    spikes, labels = load_inputs(inputs, net)
    if spikes.shape[0] == 0:
        raise UserError(f"{inputs}: holds 0 samples; expected at least one")
    res = golden.simulate(net, spikes)
    out = {
        "model": str(model), "samples": int(spikes.shape[0]),
        "prediction": res.prediction, "counts": [c for c in res.counts],
        "spikes_per_layer": [float(c.sum(1).mean()) for c in res.counts],
    }
    if net.readout != "count":
        out["membrane"] = res.membrane[-1]
    if labels is not None:
        out["accuracy"] = float((res.prediction == labels).mean())
    if as_json:
        emit_json(out, compact=True)
        return
    from rich.console import Console
    from rich.table import Table
    console = Console()
    table = Table(title=f"golden model: {spikes.shape[0]} samples")
    table.add_column("sample", justify="right")
    if labels is not None:
        table.add_column("label", justify="right")
    table.add_column("prediction", justify="right")
    table.add_column("output spike counts" if net.readout == "count" else "output (counts / membrane)")
    for b in range(min(limit, spikes.shape[0])):
        row = [str(b)] + ([str(int(labels[b]))] if labels is not None else []) + [str(int(res.prediction[b]))]
        val = " ".join(map(str, res.counts[-1][b]))
        if net.readout == "membrane":
            val = " ".join(map(str, res.membrane[-1][b]))
        row.append(val)
        table.add_row(*row)
    console.print(table)
    console.print("mean spikes per sample by layer: " + ", ".join(f"{v:.1f}" for v in out["spikes_per_layer"]))
    if labels is not None:
        console.print(f"accuracy: {out['accuracy'] * 100:.2f}%")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
