"""``bsnn-hw train``: train a B-SNN, evaluate it hardware-exact, export a .bsnn artifact (plus checkpoint and PNG).

Settings come from the defaults of :class:`bsnn_hw.train.trainer.TrainConfig`, then a TOML file (``--config``, keys
named as the TrainConfig fields, e.g. ``hidden = [256]``, ``leak_shift = "none"``), then the flags given.
"""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import click

from bsnn_hw import contract
from bsnn_hw.cli import UserError, emit_json
from bsnn_hw.io import not_utf8

# flag name -> TrainConfig field, for the flags that map one to one
_FLAG_FIELDS = {
    "dataset": "dataset", "data_root": "data_root", "timesteps": "timesteps", "encoding": "encoding",
    "reset": "reset", "membrane_bits": "membrane_bits", "fire_once": "fire_once", "readout": "readout",
    "epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay",
    "dropout": "dropout", "seed": "seed", "eval_seed": "eval_seed", "device": "device", "precision": "precision",
    "threads": "threads", "cuda_graphs": "cuda_graphs", "split_seed": "split_seed", "slope": "slope",
    "label_smoothing": "label_smoothing", "init_from": "init_from",
    "augment_shift": "augment_shift", "augment_flip": "augment_flip", "arch": "arch", "method": "method",
    "bstdg_gamma": "bstdg_gamma", "bstdg_threshold_lr": "bstdg_threshold_lr", "bstdg_deadline": "bstdg_deadline",
    "bstdg_lead": "bstdg_lead", "bstdg_timing": "bstdg_timing", "bstdg_pull": "bstdg_pull",
    "bstdg_readout_epochs": "bstdg_readout_epochs", "bstdg_readout_scale": "bstdg_readout_scale",
    "bstdg_search_sweeps": "bstdg_search_sweeps", "bstdg_search_samples": "bstdg_search_samples",
    "bstdg_backward": "bstdg_backward", "bstdg_revive": "bstdg_revive", "bstdg_min_rate": "bstdg_min_rate",
    "bstdg_finetune": "bstdg_finetune", "bstdg_finetune_lr": "bstdg_finetune_lr",
    "bstdg_calibrate": "bstdg_calibrate", "bstdg_decision_step": "bstdg_decision_step",
    "members": "bisnn_members", "member_seed": "bisnn_member_seed", "tau": "bisnn_tau", "prior": "bisnn_prior",
    "rho": "bisnn_rho", "mc_samples": "bisnn_mc", "bisnn_lr": "bisnn_lr", "bisnn_update": "bisnn_update",
    "relaxed": "bisnn_relaxed", "bisnn_init": "bisnn_init", "val_samples": "val_samples",
    "bntt_variant": "bntt_variant", "exit_threshold": "bntt_exit_threshold", "bntt_theta": "bntt_theta",
    "bntt_scale_bits": "bntt_scale_bits",
    "bntt_finetune": "bntt_finetune", "bntt_finetune_lr": "bntt_finetune_lr",
    "bntt_leak_correction": "bntt_leak_correction",
}
_BISNN_FLAGS = ("members", "member_seed", "tau", "prior", "rho", "mc_samples", "bisnn_lr", "bisnn_update", "relaxed",
                "bisnn_init")
_BNTT_FLAGS = ("bntt_variant", "exit_threshold", "bntt_theta", "bntt_scale_bits", "bntt_finetune",
               "bntt_finetune_lr", "bntt_leak_correction")


class _Rho(click.ParamType):
    """--rho: a number, "elbo" (1 / training samples) or "X/N" (X / training samples); the range is checked with the
    rest of the configuration."""
    name = "RHO"

    def convert(self, value, param, ctx):
        from .bisnn import RHO_FORMS, parse_rho
        try:
            return parse_rho(value)
        except ValueError:
            self.fail(f"{value!r} is not {RHO_FORMS}", param, ctx)


RHO = _Rho()


def _leak(text, name):
    if text is None or (isinstance(text, str) and text.lower() in ("none", "")):
        return None
    try:
        return int(text)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be an integer shift k (lambda = 1 - 2^-k) or 'none', not {text!r}") from None


def _hidden(text) -> list[int]:
    try:
        sizes = [int(s) for s in str(text).replace(",", "-").split("-") if s != ""]
    except ValueError:
        raise UserError(f"--hidden must look like 128 or 256-128, not {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise UserError(f"--hidden needs positive layer sizes, not {text!r}")
    return sizes


def _read_config(path) -> dict:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"{p}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{p}: not valid TOML ({e})") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not valid TOML: {not_utf8(e)}") from None
    raw = dict(raw.get("train", raw))
    for key in ("leak_shift", "output_leak_shift"):
        if key in raw:
            raw[key] = _leak(raw[key], f"{p}: {key}")
    if "scale" in raw and str(raw["scale"]).lower() == "none":
        raw["scale"] = None
    return raw


@click.command("train")
@click.option("--dataset", "-d", default="digits", show_default=True,
              help="digits, fashion-mnist, mnist, cifar10, or a directory of IDX files / CIFAR-10 batches.")
@click.option("--data-root", type=click.Path(file_okay=False), help="Directory of a named IDX/CIFAR-10 data set.")
@click.option("--out", "-o", default="model.bsnn", show_default=True, type=click.Path(dir_okay=False),
              help="The .bsnn artifact; <out>.ckpt (checkpoint) and <out stem>.png (curves) go beside it.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML file of settings.")
@click.option("--hidden", help="Hidden layer sizes, e.g. 128 or 256-128.  [default: 128]")
@click.option("--sizes", help="All sizes, inputs first, e.g. 64-128-10 (checked against the data).")
@click.option("--timesteps", "-T", type=int, help="Time steps T.  [default: 16]")
@click.option("--encoding", type=click.Choice(["rate", "latency", "pixel"]),
              help="Input encoding; pixel: the 8-bit intensity is the first layer's input current every step.  "
                   "[default: rate]")
@click.option("--leak-shift", help="Hidden leak shift k (lambda = 1 - 2^-k) or 'none'.  [default: 4]")
@click.option("--output-leak-shift", help="Output layer leak shift or 'none'.  [default: none]")
@click.option("--reset", type=click.Choice(contract.RESET_MODES), help="[default: subtract]")
@click.option("--membrane-bits", "-M", type=int, help="Membrane width M (2..24 for training).  [default: 16]")
@click.option("--fire-once/--no-fire-once", default=None, help="[default: off]")
@click.option("--readout", type=click.Choice(["membrane", "count"]), help="[default: membrane]")
@click.option("--scale", type=click.Choice(["neuron", "layer", "none"]),
              help="Learned alpha per neuron / per layer, folded into thresholds (bstdg: the threshold factor, per "
                   "layer by default).  [default: neuron]")
@click.option("--arch", help="Layer stack with conv/pool layers, e.g. 32c3-p2-64c3-p2-256-10: <C>c<k> a k x k "
              "convolution (stride 1, 'same' padding), p<n> an n x n OR pooling, s<n> an n x n sum pooling "
              "(folded at export into the layer it feeds), numbers dense layers (the last: classes). Replaces "
              "--hidden.")
@click.option("--variant", type=click.Choice(["full", "mid", "first+mid", "last+mid"]),
              help="B-SNN variant: which layers are binary. full: all; mid: the middle only (first and last k-bit); "
                   "first+mid: all but the last; last+mid: all but the first.  [default: full]")
@click.option("--first-bits", type=click.IntRange(1, 8), help="Weight width of the first layer (1 = binary). "
              "[default: 1, or 8 for a variant with a multi-bit first layer]")
@click.option("--last-bits", type=click.IntRange(1, 8), help="Weight width of the last layer (1 = binary). "
              "[default: 1, or 8 for a variant with a multi-bit last layer]")
@click.option("--method", type=click.Choice(["bsnn", "bstdg", "bisnn", "bntt"]),
              help="bsnn: surrogate gradients through time (B-SNN); bstdg: spike-time gradients on an IF, "
                   "latency-coded, fire-once, first-spike network; bisnn: a Bayesian posterior over the binary "
                   "weights, exported as the MAP network plus an ensemble; bntt: batch norm through time, folded "
                   "into the contract's per-step drive, with BNTT's early exit (docs/training.md).  [default: bsnn]")
@click.option("--bntt-variant", type=click.Choice(["per-step", "shared"]),
              help="bntt: per-step (gamma, mean, variance per step: a per-step scale and bias in hardware) or shared "
                   "(one scale per neuron, folded into thresholds and weight signs: a per-step bias only).  "
                   "[default: per-step]")
@click.option("--exit-threshold", type=float,
              help="bntt: early exit before the first step whose layer-averaged mean |gamma| is below this.  "
                   "[default: 0.1]")
@click.option("--bntt-theta", type=int, help="bntt per-step: the integer threshold Theta.  [default: 64]")
@click.option("--bntt-scale-bits", type=int,
              help="bntt per-step: signed width of the exported scale a (F is chosen to fill it; fewer bits, a "
                   "smaller table ROM).  [default: 18]")
@click.option("--bntt-finetune", type=int,
              help="bntt per-step: epochs trained in the exported integer arithmetic after the others.  [default: 0]")
@click.option("--bntt-finetune-lr", type=float, help="bntt: learning rate of those epochs.  [default: --lr / 10]")
@click.option("--bntt-leak-correction/--no-bntt-leak-correction", default=None,
              help="bntt per-step: take the floor leak's mean excess out of the per-step bias.  [default: off]")
@click.option("--members", type=int, help="bisnn: ensemble size S sampled into the artifact.  [default: 8]")
@click.option("--member-seed", type=click.IntRange(min=0), help="bisnn: seed of the sampled members.  [default: 0]")
@click.option("--tau", type=float, help="bisnn: temperature of the concrete relaxation.  [default: 1]")
@click.option("--prior", type=float, help="bisnn: prior probability of a +1 weight.  [default: 0.5]")
@click.option("--rho", type=RHO, help="bisnn: weight of the prior (KL) term: a number >= 0 (0: none, a cold "
              "posterior), 'X/N' (X / training samples) or 'elbo' (1 / training samples).  [default: 0.03/N]")
@click.option("--mc-samples", type=int, help="bisnn: weight samples per training step.  [default: 4]")
@click.option("--bisnn-lr", type=float, help="bisnn: step on the latent natural parameters.  [default: 0.05]")
@click.option("--bisnn-update", type=click.Choice(["adam", "sgd"]),
              help="bisnn: Adam-scaled or plain mirror-descent step.  [default: adam]")
@click.option("--bisnn-init", type=float, help="bisnn: initial |w_r| (random signs).  [default: 1.5]")
@click.option("--relaxed/--no-relaxed", default=None,
              help="bisnn: forward on the relaxed tanh sample instead of its sign.  [default: off]")
@click.option("--bstdg-gamma", type=float,
              help="bstdg: steps the other classes must fire after the first.  [default: 3]")
@click.option("--bstdg-threshold-lr", type=float, help="bstdg: Adam lr of the threshold factors.  [default: --lr]")
@click.option("--bstdg-deadline", type=int, help="bstdg: latest target step of the correct class.  [default: T-1]")
@click.option("--bstdg-lead", type=float,
              help="bstdg: steps the correct class's target leads every other class by (0: BS4NN's).  [default: 2]")
@click.option("--bstdg-backward", type=click.Choice(["sign", "latent"]),
              help="bstdg: propagate errors through the latent W (BS4NN) or sign(W).  [default: latent]")
@click.option("--bstdg-timing", type=click.Choice(["interpolated", "step"]),
              help="bstdg: output errors on the threshold crossing interpolated within its step, or on the step "
                   "(BS4NN).  [default: interpolated]")
@click.option("--bstdg-pull", type=float,
              help="bstdg: in the fine-tune, ask the samples already right by --bstdg-gamma steps for a spike one "
                   "step earlier, with this weight in [0, 1] (earlier decisions).  [default: 0]")
@click.option("--bstdg-readout-epochs", type=int,
              help="bstdg: after training, fit the output layer again (the rest frozen) for this many epochs to a "
                   "per-step loss that makes an output spike mean a confident class; use it with "
                   "--bstdg-decision-step (0: none).  [default: 0]")
@click.option("--bstdg-readout-scale", type=float,
              help="bstdg: membrane steps per unit of log odds in that fit.  [default: 4]")
@click.option("--bstdg-search-sweeps", type=int,
              help="bstdg: then this many sweeps of a local search on the last hidden layer (per-neuron threshold "
                   "moves and weight flips, each kept only when it lowers that fit's loss exactly; 0: none).  "
                   "[default: 0]")
@click.option("--bstdg-search-samples", type=int,
              help="bstdg: training samples the local search scores (a seeded draw; memory N x T x hidden x 2 "
                   "bytes).  [default: 20000]")
@click.option("--bstdg-revive", type=float,
              help="bstdg: error that pushes quiet hidden neurons to fire (0: none).  [default: 0.02]")
@click.option("--bstdg-min-rate", type=float,
              help="bstdg: firing rate below which a hidden neuron is quiet.  [default: 0.05]")
@click.option("--bstdg-finetune", type=int,
              help="bstdg: epochs after --epochs with the thresholds frozen, at --bstdg-finetune-lr.  [default: 15]")
@click.option("--bstdg-finetune-lr", type=float,
              help="bstdg: Adam lr of the fine-tune epochs (a fresh cosine decay).  [default: --lr / 5]")
@click.option("--bstdg-calibrate/--no-bstdg-calibrate", default=None,
              help="bstdg: after training, set the integer thresholds for the best accuracy on the training split "
                   "(hidden layers one offset each, output neurons one each).  [default: on]")
@click.option("--bstdg-decision-step", type=int,
              help="bstdg: a decision budget for that calibration: the best accuracy whose median decision step on "
                   "the training split (on the held-out images with --val-samples) is at most this (earlier "
                   "decisions, fewer cycles).  [default: none]")
@click.option("--epochs", "-e", type=int, help="[default: 30; 5 with --method bstdg]")
@click.option("--batch-size", "-b", type=int, help="[default: 64; 16 with --method bstdg]")
@click.option("--lr", type=float, help="Adam learning rate, cosine decay.  [default: 0.005]")
@click.option("--weight-decay", type=float, help="[default: 0; 1e-3 with --method bntt]")
@click.option("--dropout", type=float, help="Hidden spike dropout.  [default: 0.05]")
@click.option("--slope", type=float, help="Surrogate gradient sharpness.  [default: 5]")
@click.option("--label-smoothing", type=float, help="Cross-entropy label smoothing.  [default: 0]")
@click.option("--augment-shift", type=int, help="Shift training images by up to +-k pixels.  [default: 0]")
@click.option("--augment-flip/--no-augment-flip", default=None,
              help="Mirror training images left-right at random (clothes yes, digits no).  [default: off]")
@click.option("--seed", type=click.IntRange(min=0), help="Training seed.  [default: 0]")
@click.option("--eval-seed", type=int, help="The model's rate-encoder LFSR seed (1..65535).  [default: 1]")
@click.option("--split-seed", type=click.IntRange(min=0), help="digits: seed of the train/test split.  [default: 0]")
@click.option("--val-samples", type=int, help="Hold out the last N training samples (never trained on).  [default: 0]")
@click.option("--device", help="auto, cpu, cuda, cuda:N.  [default: auto]")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]),
              help="Synaptic product arithmetic (exact either way).  [default: auto]")
@click.option("--threads", type=int, help="torch CPU threads.")
@click.option("--cuda-graphs/--no-cuda-graphs", default=None,
              help="On a GPU (--method bsnn, one process): replay each training step as one CUDA graph (same "
                   "arithmetic as eager steps, far fewer kernel launches).  [default: on]")
@click.option("--init", "init_from", type=click.Path(exists=True, dir_okay=False),
              help="Start from the weights of this training checkpoint (.ckpt; same layers and method): a fine-tune "
                   "with this run's settings (e.g. more time steps). Optimizer and schedule start afresh.")
@click.option("--resume", is_flag=True, help="Continue from <out>.ckpt if it exists (same settings).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Checkpoint path.  [default: <out>.ckpt]")
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as JSON on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def train(out, config_path, hidden, sizes, leak_shift, output_leak_shift, scale, resume, checkpoint, as_json,
          quiet, variant, first_bits, last_bits, **flags):
    """Train a binarized SNN (B-SNN: binary weights, LIF, no batchnorm) and export a .bsnn artifact.

    The reported accuracy is the exported integer network's, on the test split, encoded as the hardware encodes it.
    """
    from .trainer import TrainConfig, fit, load_checkpoint

    settings: dict = {}
    ckpt_path = Path(checkpoint) if checkpoint else Path(str(out) + ".ckpt")
    if resume and ckpt_path.exists():
        settings.update(TrainConfig.own_settings(load_checkpoint(ckpt_path)["config"]))   # it carries its config
    if config_path:
        settings.update(_read_config(config_path))
    for flag, field in _FLAG_FIELDS.items():
        if flags.get(flag) is not None:
            settings[field] = flags[flag]
    if hidden is not None:
        settings["hidden"] = _hidden(hidden)
    if leak_shift is not None:
        settings["leak_shift"] = _leak(leak_shift, "--leak-shift")
    if output_leak_shift is not None:
        settings["output_leak_shift"] = _leak(output_leak_shift, "--output-leak-shift")
    if scale is not None:
        settings["scale"] = None if scale == "none" else scale
    if flags.get("arch") is not None and (hidden is not None or sizes is not None):
        raise UserError("--arch gives every layer; it cannot be combined with --hidden or --sizes")
    if variant is not None:
        from .model import VARIANTS
        multi_first, multi_last = VARIANTS[variant]
        for name, multi, given in (("first_bits", multi_first, first_bits), ("last_bits", multi_last, last_bits)):
            if given is not None and (given > 1) != multi:
                raise UserError(f"--variant {variant} makes the {name.split('_')[0]} layer "
                                f"{'multi-bit' if multi else 'binary'}, but --{name.replace('_', '-')} is {given}")
            settings[name] = given if given is not None else (8 if multi else 1)
    else:
        if first_bits is not None:
            settings["first_bits"] = first_bits
        if last_bits is not None:
            settings["last_bits"] = last_bits
    if settings.get("method") == "bstdg":
        from .bstdg import DEFAULTS
        for key, value in DEFAULTS.items():     # given settings win; check_config refuses the ones BSTDG cannot train
            settings.setdefault(key, value)
    else:
        given = [f"--{f.replace('_', '-')}" for f in _FLAG_FIELDS
                 if f.startswith("bstdg_") and flags.get(f) is not None]
        if given:
            raise UserError(f"{', '.join(given)} only apply to --method bstdg")
    if settings.get("method") != "bisnn":
        given = [f"--{f.replace('_', '-')}" for f in _BISNN_FLAGS if flags.get(f) is not None]
        if given:
            raise UserError(f"{', '.join(given)} only apply to --method bisnn")
    if settings.get("method") == "bntt":
        from .bntt import DEFAULTS as BNTT_DEFAULTS
        if scale is not None:
            raise UserError("--scale does not apply to --method bntt (batch norm's gamma replaces the learned scale)")
        if flags.get("membrane_bits") is not None and settings.get("bntt_variant", "per-step") == "per-step":
            raise UserError("--membrane-bits does not apply to --method bntt --bntt-variant per-step (it sizes every "
                            "membrane to its worst case itself)")
        for key, value in BNTT_DEFAULTS.items():
            settings.setdefault(key, value)
    else:
        given = [f"--{f.replace('_', '-')}" for f in _BNTT_FLAGS if flags.get(f) is not None]
        if given:
            raise UserError(f"{', '.join(given)} only apply to --method bntt")
    cfg = TrainConfig.from_dict(settings)
    if sizes is not None:
        from bsnn_hw.cli import parse_sizes
        all_sizes = parse_sizes(sizes)
        if len(all_sizes) < 3:
            raise UserError(f"--sizes needs inputs, at least one hidden layer and outputs, not {sizes!r}")
        if hidden is not None and _hidden(hidden) != all_sizes[1:-1]:
            raise UserError(f"--sizes {sizes} and --hidden {hidden} disagree; give one of them")
        cfg.hidden = all_sizes[1:-1]
    cfg.validate()
    if sizes is not None:
        _check_sizes(cfg, all_sizes)
    from bsnn_hw.io import check_output
    check_output(out, "--out")      # before hours of training, not after them
    check_output(ckpt_path, "--checkpoint")

    def log(msg):
        if not quiet:
            click.echo(msg, err=True)

    try:
        result = fit(cfg, out=out, checkpoint=ckpt_path, resume=resume, progress=not quiet, log=log)
    except KeyboardInterrupt:
        click.echo(f"interrupted; finished epochs are in {ckpt_path}: rerun with --resume to continue", err=True)
        raise SystemExit(130) from None
    if result.network is None:          # a torchrun process other than 0: process 0 reports
        return
    m = result.metrics
    if as_json:
        emit_json({**m, "config": dataclasses.asdict(cfg)})
        return
    click.echo(f"wrote {out}: {'-'.join(map(str, m['sizes']))}, T={cfg.timesteps}, {cfg.dataset}")
    if cfg.method == "bstdg":
        click.echo(f"integer test accuracy {100 * m['integer_accuracy']:.2f}% (float {100 * m['float_accuracy']:.2f}%, "
                   f"gap {m['gap_pp']:+.2f} pp); no output spike (fallback) on {100 * m['fallback_rate']:.2f}% of "
                   f"test samples; median decision step {m['median_decision_step']:g} of T={cfg.timesteps}; "
                   f"first step tied on {100 * m['tie_rate']:.2f}% (an oracle tie-break: "
                   f"{100 * m['tie_oracle_accuracy']:.2f}%); thresholds {m['thresholds']}; "
                   f"{m['train_seconds']:.1f} s on {m['device']}")
        click.echo(f"curves: {m['plot']}   checkpoint: {m['checkpoint']}")
        return
    if cfg.method == "bisnn":
        click.echo(f"MAP network: integer test accuracy {100 * m['integer_accuracy']:.2f}% (float "
                   f"{100 * m['float_accuracy']:.2f}%, gap {m['gap_pp']:+.2f} pp); ensemble of {m['members']}: "
                   f"{100 * m['ensemble_accuracy']:.2f}% (summed scores), {100 * m['vote_accuracy']:.2f}% (votes); "
                   f"{m['train_seconds']:.1f} s on {m['device']}")
        click.echo(f"calibration: bsnn-hw calibrate {out} --dataset {cfg.dataset}")
        click.echo(f"curves: {m['plot']}   checkpoint: {m['checkpoint']}")
        return
    if cfg.method == "bntt":
        from .bntt import WITHIN_PP
        b = m["bntt"]
        click.echo(f"BNTT {b['variant']}: integer test accuracy {100 * m['integer_accuracy']:.2f}% (float "
                   f"{100 * m['float_accuracy']:.2f}%, gap {m['gap_pp']:+.2f} pp); early exit after {b['exit_step']} "
                   f"of {cfg.timesteps} steps: {100 * b['exit_accuracy']:.2f}%; within {WITHIN_PP} pp of all "
                   f"steps from T' = {b['steps_within_0.3pp']}; {m['train_seconds']:.1f} s on {m['device']}")
        click.echo(f"curves: {m['plot']}   steps: {m['steps_plot']}   checkpoint: {m['checkpoint']}")
        return
    click.echo(f"integer test accuracy {100 * m['integer_accuracy']:.2f}% "
               f"(float {100 * m['float_accuracy']:.2f}%, gap {m['gap_pp']:+.2f} pp; "
               f"ideal real-valued neurons {100 * m['ideal_accuracy']:.2f}%) in {m['train_seconds']:.1f} s "
               f"on {m['device']}")
    click.echo(f"curves: {m['plot']}   checkpoint: {m['checkpoint']}")


def _check_sizes(cfg, all_sizes):
    from bsnn_hw import data
    x, y = data.load_dataset(cfg.dataset, "test", seed=cfg.split_seed, root=cfg.data_root)
    if all_sizes[0] != x.shape[1]:
        raise UserError(f"--sizes starts with {all_sizes[0]} inputs but {cfg.dataset} has {x.shape[1]} features")
    xt, yt = data.load_dataset(cfg.dataset, "train", seed=cfg.split_seed, root=cfg.data_root)
    classes = int(max(y.max(), yt.max())) + 1
    if all_sizes[-1] != classes:
        raise UserError(f"--sizes ends with {all_sizes[-1]} outputs but {cfg.dataset} has {classes} classes")
