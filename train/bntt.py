"""BNTT: batch normalisation through time on the B-SNN setting (``bsnn-hw train --method bntt``).

Seed 001 (BNTT, Kim & Panda, Front. Neurosci. 2021; reference code Intelligent-Computing-Lab-Yale/BNTT-Batch-
Normalization-Through-Time, which has conv models only; ../shared/research/METHODS.md "BNTT"), written for the
contract's dense binary layers and folded into its per-step affine drive (contract v3, docs/spec.md section 11).
Equations, folding and measured figures: docs/training.md, "BNTT".

The float model. Inputs are the contract's rate code (the trainer's ``Encoder``: exactly the spikes the hardware sees).
Every hidden layer l: binary weights (``BinaryLinear``, STE sign, no bias), the synaptic input ``I_t = W s_t``, one
batch norm per time step (eps 1e-4, momentum 0.1, learnable gamma, no beta; the running mean is still subtracted),
and LIF neurons in units of theta = 1 with the trainer's surrogate::

    u_t = lambda u_{t-1} + gamma_t (I_t - mu_t) / sqrt(var_t + eps)       lambda = 1 - 2^-k (the leak shift)
    fire u_t > 1 (strict), subtract reset

The last layer has binary weights, no batch norm, never fires and integrates (``output_leak_shift``, none by
default); ``logits = alpha V_{T-1} / T`` with a learned alpha (a temperature, as the B-SNN trainer does).

Variants (``bntt_variant``):

- ``"per-step"`` (BNTT's own): mu, var and gamma per (t, j). Trained in real arithmetic. Export: the membrane in
  units of theta / Theta (``bntt_theta`` = Theta, the integer threshold) and the drive
  ``x = (a I + b) >>> F`` with ``a = round(2^F Theta g)``, ``b = round(-2^F Theta g mu) + 2^(F-1)``,
  ``g = gamma / sqrt(var + eps)`` (running statistics), F the largest in 0..16 with every |a| in the signed 18-bit
  range. ``bntt_finetune`` epochs then train the exported arithmetic itself (statistics frozen, rounding and floor
  straight through), after which the torch model in that mode and the integer network agree exactly.
- ``"shared"``: the per-step mean, but one variance and one gamma per neuron for all steps, so the scale
  ``s_j = gamma_j / sqrt(var_j + eps)`` does not depend on t. Dividing the membrane by |s_j|:
  ``u'_t = lambda u'_{t-1} + sign(s_j) (I_t - mu_t)``, fire ``u' > 1 / |s_j|``: exactly the B-SNN neuron with
  ``alpha = |s_j|``, trained (like B-SNN) in the contract's integer arithmetic with the bias rounded straight through.
  Export: threshold ``floor(1 / |s_j|)`` (clamped into 1..2^(M-1)-1 in training, as B-SNN clamps), the weight bits of
  a neuron with s_j < 0 flipped (I -> -I), and ``b = round(-sign(s_j) mu_t)`` with F = 0 and no scale table (no
  multiplier in hardware).

Early exit (static, BNTT's rule): the layer-averaged mean |gamma_t| per step; the network runs
``T' = max(1, t0)`` steps, t0 the first (0-based) step whose value falls below ``bntt_exit_threshold`` (T if none).
For ``"shared"`` gamma does not depend on t; the analogous per-step value is the standard deviation of the
normalised drive at step t, ``|gamma_j| sqrt(var_t + eps) / sqrt(var_j + eps)`` (for "per-step" that quantity is
|gamma_t| itself), from per-step running variances kept for this purpose only.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bsnn_hw import contract
from bsnn_hw.io import atomic_write, encode_predictions
from bsnn_hw.network import Conv2d, Layer, Network, Pool

from .encoding import _mix, training_seeds
from .layers import LIF, BinaryConv2d, BinaryLinear, SpikePool, _floor_ste
from .model import build_front, integer_simulate

METHOD = "bntt"
VARIANTS = ("per-step", "shared")
# What --method bntt sets unless told otherwise: batch norm's gamma replaces B-SNN's learned scale alpha; weight decay
# (on every parameter, gamma included, as BNTT trains) is what makes the late steps' gamma shrink (docs/training.md).
DEFAULTS = {"scale": None, "weight_decay": 1e-3}
EPS = 1e-4                      # BNTT's batch norm
MOMENTUM = 0.1
THETA = 1.0                     # the float model's threshold
TRAIN_MEMBRANE_MAX = 24         # float32 holds every integer membrane exactly up to 2^24 (the trainer's LIF)
BIAS_MAX = (1 << (contract.STEP_BIAS_BITS - 1)) - 1
WITHIN_PP = 0.3                 # the accuracy-vs-steps report: smallest T' within this of the full-T accuracy


def check_config(cfg) -> None:
    """Refuse (ValueError, one line) settings that BNTT does not train."""
    from .trainer import check_finetune, requirement
    need = requirement("bntt")
    need(cfg.first_bits == 1 and cfg.last_bits == 1, f"trains all-binary layers; first/last layer weight bits "
         f"{cfg.first_bits}/{cfg.last_bits} (a --variant or --first-bits/--last-bits) are not supported")
    if cfg.arch is not None:
        from .model import parse_arch
        need(all(spec[0] != "sumpool" for spec in parse_arch(cfg.arch)[0]),
             f"pools with OR pooling only (p<n>), not the sum pooling (s<n>) in --arch {cfg.arch}")
    need(cfg.encoding == "rate", f"needs the rate code (the early-exit curve runs the first T' steps, which a "
         f"latency code does not give), not --encoding {cfg.encoding}")
    need(cfg.readout == "membrane", f"reads the class from the last layer's membrane, not --readout {cfg.readout}")
    need(cfg.scale is None, f"batch norm's gamma replaces the learned scale alpha: scale must be none, not "
         f"{cfg.scale!r}")
    need(not cfg.fire_once, "does not train fire-once neurons (--fire-once)")
    need(cfg.bntt_variant in VARIANTS, f"variant must be one of {', '.join(VARIANTS)}, not {cfg.bntt_variant!r}")
    need(isinstance(cfg.bntt_exit_threshold, (int, float)) and math.isfinite(cfg.bntt_exit_threshold)
         and cfg.bntt_exit_threshold >= 0, f"exit threshold must be a number >= 0, not {cfg.bntt_exit_threshold!r}")
    top = (1 << (TRAIN_MEMBRANE_MAX - 1)) - 1
    need(isinstance(cfg.bntt_theta, int) and not isinstance(cfg.bntt_theta, bool) and 1 <= cfg.bntt_theta <= top,
         f"theta (the integer threshold) must be in 1..{top}, not {cfg.bntt_theta!r}")
    need(isinstance(cfg.bntt_scale_bits, int) and not isinstance(cfg.bntt_scale_bits, bool)
         and 2 <= cfg.bntt_scale_bits <= contract.STEP_SCALE_BITS,
         f"scale bits must be in 2..{contract.STEP_SCALE_BITS}, not {cfg.bntt_scale_bits!r}")
    check_finetune(need, cfg.bntt_finetune, cfg.bntt_finetune_lr)
    need(cfg.bntt_variant == "per-step" or cfg.bntt_finetune == 0,
         "the shared variant trains in the exported arithmetic already: --bntt-finetune is for per-step")
    need(isinstance(cfg.bntt_leak_correction, bool), f"leak correction must be true or false, not "
         f"{cfg.bntt_leak_correction!r}")
    need(cfg.bntt_variant == "per-step" or not cfg.bntt_leak_correction,
         "--bntt-leak-correction is for the per-step variant (shared trains with the floor leak itself)")


def config(**settings):
    """A TrainConfig for BNTT: the BNTT defaults, then ``settings``."""
    from .trainer import TrainConfig
    if settings.get("method", METHOD) != METHOD:
        raise ValueError(f"bntt.config makes --method {METHOD} configurations, not method {settings['method']!r}")
    return TrainConfig.from_dict({**DEFAULTS, "method": METHOD, **settings}).validate()


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def width_for(value: int) -> int:
    """The narrowest membrane width M with 2^(M-1) - 1 >= value."""
    return max(contract.MEMBRANE_BITS_MIN, int(value).bit_length() + 1)


def membrane_bound(max_drive: int, timesteps: int, leak_shift: int | None) -> int:
    """A bound on |V| before the fire decision for drives |x| <= max_drive: |V_t| <= t max_drive, and with a leak
    V - floor(V / 2^k) <= lambda V + 1 - 2^-k and >= lambda V, so |V| <= 2^k (max_drive + 1). Resets never increase
    |V| (the subtract reset acts on V > theta > 0 only)."""
    bound = timesteps * max_drive
    if leak_shift is not None:
        bound = min(bound, (max_drive + 1) << leak_shift)
    return int(bound)


# ---------------------------------------------------------------------------------------------------------------
# The network


class BNTTNet(nn.Module):
    """Binary MLP with batch norm through time: ``forward(spikes (B, T, n_in)) -> logits (B, n_classes)``.

    Parameters: ``fcs`` (``BinaryLinear``; the last one with a per-layer alpha, the readout temperature), ``gammas``
    (per hidden layer: (T, n) for "per-step", (n,) for "shared"). Buffers per hidden layer l: ``mean{l}`` (T, n),
    ``var{l}`` ((T, n) or (n,)) and, for "shared", ``step_var{l}`` (T, n) (the per-step variance around the per-step
    mean, used only by the early-exit rule).

    Modes: ``freeze_stats`` (training mode with the running statistics), ``hardware`` ("per-step" only: the exported
    integer arithmetic, a and b rounded and the drive floored straight through, membrane in units of theta / Theta),
    :meth:`set_exact` ("shared": False gives the ideal model, real leak and unrounded bias).
    """

    def __init__(self, sizes, timesteps: int, variant: str = "per-step", leak_shift: int | None = 4,
                 output_leak_shift: int | None = None, reset: str = "subtract", membrane_bits: int = 16,
                 dropout: float = 0.0, exact: bool = True, precision: str = "fp32", slope: float = 5.0,
                 theta_int: int = 64, leak_correction: bool = False, scale_bits: int = contract.STEP_SCALE_BITS,
                 conv=None, input_shape=None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        sizes = list(sizes)
        conv = list(conv or [])
        if len(sizes) - 2 + sum(spec[0] == "conv" for spec in conv) < 1:
            raise ValueError(f"BNTT needs inputs, at least one hidden layer and outputs, not sizes {sizes}")
        self.timesteps, self.variant = int(timesteps), variant
        self.leak_shift, self.reset, self.membrane_bits = leak_shift, reset, membrane_bits
        self.dropout, self.exact, self.slope = dropout, exact, slope
        if not isinstance(theta_int, int) or isinstance(theta_int, bool) or theta_int < 1:
            raise ValueError(f"theta_int must be an int >= 1 (the integer threshold Theta), not {theta_int!r}")
        if not isinstance(leak_correction, bool):
            raise TypeError(f"leak_correction must be True or False, not {leak_correction!r}")
        self.theta_int, self.leak_correction = theta_int, leak_correction
        self.scale_max = (1 << (int(scale_bits) - 1)) - 1          # |a| bound: the exported scale's signed width
        self.freeze_stats = False
        self.hardware = False
        self.readout = "membrane"
        self.fcs = nn.ModuleList()
        # Per hidden layer: its batch-norm groups G (output channels of a conv layer, which BNTT normalises as
        # BatchNorm2d does, over the batch and every position; neurons of a dense layer), positions P (n = P G,
        # position-major: neuron p G + c is channel c) and fan-in. Pools carry no parameters: a plain dict,
        # keyed by the layer they feed.
        self.groups, self.positions, self.fan_in, self.pool_before = [], [], [], {}
        front, shape = build_front(conv, input_shape, sizes[0],
                                   lambda j, shape, c_out, k: BinaryConv2d(shape, c_out, k, 1, k // 2, scale=None))
        for module in front:
            if isinstance(module, SpikePool):
                self.pool_before[len(self.fcs)] = module
                continue
            self.fcs.append(module)
            self.groups.append(module.out_channels)
            self.positions.append(module.out_shape[0] * module.out_shape[1])
            self.fan_in.append(module.kernel * module.kernel * module.in_shape[2])
        if conv:
            sizes = [int(np.prod(shape))] + sizes[1:]
        for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
            self.fcs.append(BinaryLinear(n_in, n_out, scale=None, precision=precision))
            self.groups.append(n_out)
            self.positions.append(1)
            self.fan_in.append(n_in)
        n_in = sizes[-2]
        self.fcs.append(BinaryLinear(n_in, sizes[-1], scale="layer", init_scale=4.0 / math.sqrt(n_in),
                                     precision=precision))
        # Flat sizes: inputs, every hidden layer's neurons, classes.
        self.sizes = [self.fcs[0].n_in] + [fc.n_out for fc in self.fcs]
        self.gammas = nn.ParameterList()
        for i, g in enumerate(self.groups):
            shape = (timesteps, g) if variant == "per-step" else (g,)
            self.gammas.append(nn.Parameter(torch.ones(shape)))
            self.register_buffer(f"mean{i}", torch.zeros(timesteps, g))
            self.register_buffer(f"var{i}", torch.ones(shape))
            if variant == "shared":
                self.register_buffer(f"step_var{i}", torch.ones(timesteps, g))
        # The shared variant's hidden neurons are B-SNN's (alpha = |s|); per-step builds its LIF per mode.
        self.hidden_lifs = nn.ModuleList(
            LIF(THETA, leak_shift, reset, membrane_bits, exact=exact, slope=slope) for _ in self.groups)
        # The output layer integrates; per-step sizes its membrane to the worst case (T * fan-in) itself.
        out_bits = membrane_bits if variant == "shared" else width_for(
            membrane_bound(sizes[-2], timesteps, output_leak_shift))
        if out_bits > TRAIN_MEMBRANE_MAX:
            raise ValueError(f"--method bntt: the output layer's membrane needs {out_bits} bits (T x fan-in), more "
                             f"than the trainer's {TRAIN_MEMBRANE_MAX}")
        self.out_lif = LIF(THETA, output_leak_shift, reset, out_bits, exact=True, slope=slope, fires=False)

    def _per_neuron(self, i: int, t: torch.Tensor) -> torch.Tensor:
        """A per-group tensor (..., G) of hidden layer i as per-neuron (..., P G), position-major."""
        p = self.positions[i]
        return t if p == 1 else t.repeat(*([1] * (t.dim() - 1)), p)

    @property
    def n_hidden(self) -> int:
        return len(self.groups)

    def stats(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(running mean (T, n), running variance ((T, n) or (n,))) of hidden layer i."""
        return getattr(self, f"mean{i}"), getattr(self, f"var{i}")

    def set_exact(self, exact: bool) -> None:
        self.exact = exact
        for lif in self.hidden_lifs:
            lif.exact = exact

    # --- batch norm through time --------------------------------------------------------------------------------
    def _batch_stats(self, i: int, cur: torch.Tensor):
        """Normalisation statistics of ``cur`` (B, T, n): the batch's (training, updating the running ones) or the
        running ones."""
        if not self.training or self.freeze_stats:
            return self.stats(i)
        b, steps = cur.shape[:2]
        p = self.positions[i]
        cur = cur.reshape(b, steps, p, self.groups[i]).transpose(1, 2).reshape(b * p, steps, self.groups[i])
        mu = cur.mean(0)                                        # (T, G): per step (and channel)
        sq = (cur - mu).square()
        var = sq.mean(0) if self.variant == "per-step" else sq.mean((0, 1))
        m = b * p                                               # samples per statistic (BatchNorm2d: B H W)
        unbias = m / (m - 1) if m > 1 else 1.0
        with torch.no_grad():
            mean_buf, var_buf = self.stats(i)
            mean_buf.mul_(1 - MOMENTUM).add_(MOMENTUM * mu.detach())
            var_buf.mul_(1 - MOMENTUM).add_(MOMENTUM * unbias * var.detach())
            if self.variant == "shared":
                getattr(self, f"step_var{i}").mul_(1 - MOMENTUM).add_(MOMENTUM * unbias * sq.detach().mean(0))
        return mu, var

    def shared_scale(self, i: int, var: torch.Tensor | None = None) -> torch.Tensor:
        """s_j = gamma_j / sqrt(var_j + eps) ("shared"), with the running variance unless ``var`` is given."""
        var = self.stats(i)[1] if var is None else var
        return self.gammas[i] / torch.sqrt(var + EPS)

    def step_affine(self, i: int, mu=None, var=None):
        """The per-step drive of hidden layer i ("per-step"): (a (T, n), b (T, n), F) as float64 tensors of
        integers (rounded straight through, so gradients reach gamma) and the fraction bits, from the running
        statistics unless given. Raises ValueError (one line) when a table cannot be represented."""
        if mu is None:
            mu, var = self.stats(i)
        g = self.gammas[i].double() / torch.sqrt(var.double() + EPS)
        scale = self.theta_int * g                                  # Theta g: the drive per unit of I
        with torch.no_grad():
            frac = None
            for f in range(contract.STEP_FRAC_MAX, -1, -1):
                if float(torch.round(scale * (1 << f)).abs().max()) <= self.scale_max:
                    frac = f
                    break
        if frac is None:
            worst = float(scale.detach().abs().max())
            raise ValueError(f"--method bntt: layer {i}'s per-step scale Theta*gamma/sqrt(var+eps) reaches "
                             f"{worst:.4g}, beyond the signed {self.scale_max.bit_length() + 1}-bit range even at "
                             f"F = 0; lower --bntt-theta or raise --bntt-scale-bits")
        a_real = scale * (1 << frac)
        a = _round_ste(a_real)
        offset = (1 << (frac - 1)) if frac else 0                   # round to nearest: x = floor(a I / 2^F + 1/2)
        if self.leak_correction and self.leak_shift is not None:
            # The floor leak keeps on average (1 - 2^-k) / 2 more membrane per step than lambda V: take it back.
            offset -= round((1 << frac) * (1 - 2.0 ** -self.leak_shift) / 2)
        b = _round_ste(-a_real * mu.double()) + offset
        with torch.no_grad():
            if float(b.abs().max()) > BIAS_MAX:
                raise ValueError(f"--method bntt: layer {i}'s per-step bias reaches {float(b.abs().max()):.4g}, beyond "
                                 f"the signed {contract.STEP_BIAS_BITS}-bit range; lower --bntt-theta")
        return a, b, frac

    def hidden_membrane_bits(self, i: int, a: torch.Tensor, b: torch.Tensor, frac: int) -> int:
        """M of hidden layer i ("per-step"): the narrowest width that holds Theta and every membrane the tables can
        produce (so saturation never acts). Raises ValueError (one line) beyond the trainer's 24 bits."""
        n_in = self.fan_in[i]
        with torch.no_grad():
            num = a.detach().abs() * n_in + b.detach().abs()
            max_drive = -(-int(num.max()) >> frac)                 # ceil(max (|a| n_in + |b|) / 2^F)
        bound = max(self.theta_int, membrane_bound(max_drive, self.timesteps, self.leak_shift))
        m = width_for(bound)
        if m > TRAIN_MEMBRANE_MAX:
            raise ValueError(f"--method bntt: layer {i}'s membrane needs {m} bits (drive up to {max_drive} per step), "
                             f"more than {TRAIN_MEMBRANE_MAX}; lower --bntt-theta")
        return max(m, (self.leak_shift or 0) + 1)

    def _hidden(self, i: int, cur: torch.Tensor) -> torch.Tensor:
        mu, var = self._batch_stats(i, cur)
        per = self._per_neuron
        if self.variant == "shared":
            s = self.shared_scale(i, var)
            sign = torch.where(s < 0, -1.0, 1.0).detach()
            bias = -sign * mu
            if self.exact:
                bias = _round_ste(bias)
            return self.hidden_lifs[i](per(i, sign) * cur + per(i, bias), per(i, s.abs().clamp_min(1e-12)))
        if self.hardware:
            a, b, frac = self.step_affine(i, mu, var)
            drive = _floor_ste((per(i, a) * cur.double() + per(i, b)) / (1 << frac)).float()
            m = self.hidden_membrane_bits(i, a, b, frac)
            lif = LIF(float(self.theta_int), self.leak_shift, self.reset, m, exact=True, slope=self.slope)
            return lif(drive)
        g = self.gammas[i] / torch.sqrt(var + EPS)
        lif = LIF(THETA, self.leak_shift, self.reset, TRAIN_MEMBRANE_MAX, exact=False, slope=self.slope)
        return lif(per(i, g) * (cur - per(i, mu)))

    def forward(self, spikes: torch.Tensor, generator: torch.Generator | None = None,
                record: list | None = None) -> torch.Tensor:
        """Logits; with ``record`` (a list) the hidden layers' output spikes are appended to it."""
        x = spikes
        for i in range(self.n_hidden):
            if i in self.pool_before:
                x = self.pool_before[i](x)
            x = self._hidden(i, self.fcs[i].synaptic_input(x))
            if record is not None:
                record.append(x.detach())
            if self.training and self.dropout > 0:
                keep = torch.rand(x.shape[0], 1, x.shape[2], generator=generator, device="cpu") >= self.dropout
                x = x * keep.to(x.device, x.dtype)
        if self.n_hidden in self.pool_before:
            x = self.pool_before[self.n_hidden](x)
        self.out_lif(self.fcs[-1].synaptic_input(x))
        return self.out_lif.last_membrane * self.fcs[-1].scale() / self.timesteps

    @torch.no_grad()
    def clip_(self) -> None:
        for fc in self.fcs:
            fc.clip_()

    # --- early exit ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def gamma_mean(self) -> list[float]:
        """Per step t, the mean over hidden layers of mean_j |gamma_t,j| ("per-step"), or of the per-step standard
        deviation of the normalised drive |gamma_j| sqrt(var_t,j + eps) / sqrt(var_j + eps) ("shared")."""
        per_layer = []
        for i in range(self.n_hidden):
            g = self.gammas[i].detach().abs().double()
            if self.variant == "shared":
                step_var = getattr(self, f"step_var{i}").double()
                g = g * torch.sqrt(step_var + EPS) / torch.sqrt(self.stats(i)[1].double() + EPS)
            per_layer.append(g.mean(1))
        return [float(v) for v in torch.stack(per_layer).mean(0).cpu()]


def exit_step(gamma_mean, threshold: float) -> int:
    """BNTT's static early exit: the steps to run, ``max(1, t0)`` with t0 the first (0-based) step whose mean
    |gamma| is below ``threshold`` (that step and every later one are skipped); T = len(gamma_mean) if none is."""
    for t, g in enumerate(gamma_mean):
        if g < threshold:
            return max(1, t)
    return len(gamma_mean)


EXIT_RULES = {
    "per-step": "T' = max(1, t0), t0 the first 0-based step t at which the mean over hidden layers of mean_j "
                "|gamma_t,j| falls below exit_threshold; T if it never does",
    "shared": "T' = max(1, t0), t0 the first 0-based step t at which the mean over hidden layers of mean_j of the "
              "normalised drive's per-step standard deviation |gamma_j| sqrt(var_t,j + eps) / sqrt(var_j + eps) "
              "falls below exit_threshold (gamma itself does not depend on t); T if it never does",
}


# ---------------------------------------------------------------------------------------------------------------
# Export


@torch.no_grad()
def to_network(model: BNTTNet, seed: int = 1, metadata: dict | None = None) -> tuple[Network, dict]:
    """The integer network (contract v3) and a report of its tables: per hidden layer the fraction bits, the
    membrane width, the largest |a| and |b|, how many scale entries rounded to 0 from a nonzero gamma, and how many
    thresholds were clamped. Nothing is clamped silently: a table that does not fit raises ValueError."""
    was_training = model.training
    model.eval()
    layers, report = [], {"step_frac": [], "membrane_bits": [], "scale_max_abs": [], "bias_max_abs": [],
                          "scale_entries_zero": [], "thresholds_clamped": [], "table_entries_clamped": 0}
    def layer(i, bits, threshold, m, **affine):
        fc = model.fcs[i]
        if isinstance(fc, BinaryConv2d):
            return Conv2d(bits, fc.in_shape, threshold, fc.stride, fc.padding, model.leak_shift, model.reset, m,
                          False, **affine)
        return Layer(bits, threshold, model.leak_shift, model.reset, m, False, **affine)

    for i in range(model.n_hidden):
        if i in model.pool_before:
            pool = model.pool_before[i]
            layers.append(Pool(pool.in_shape, pool.window))
        fc = model.fcs[i]
        bits = fc.weight_bits().cpu().numpy()
        if model.variant == "per-step":
            a, b, frac = model.step_affine(i)
            m = model.hidden_membrane_bits(i, a, b, frac)
            a_np, b_np = a.cpu().numpy().astype(np.int64), b.cpu().numpy().astype(np.int64)
            layers.append(layer(i, bits, model.theta_int, m, step_scale=a_np, step_bias=b_np, step_frac=frac))
            report["step_frac"].append(frac)
            report["scale_max_abs"].append(int(np.abs(a_np).max()))
            report["bias_max_abs"].append(int(np.abs(b_np).max()))
            report["scale_entries_zero"].append(int(((a_np == 0) & (model.gammas[i].detach().cpu().numpy() != 0))
                                                    .sum()))
            report["thresholds_clamped"].append(0)
        else:
            s = model.shared_scale(i)
            flip = (s < 0).cpu().numpy()
            bits = bits ^ flip.reshape(-1, *([1] * (bits.ndim - 1)))   # I -> -I for a negative scale
            sign = torch.where(s < 0, -1.0, 1.0)
            b_np = torch.round(-sign * model.stats(i)[0]).cpu().numpy().astype(np.int64)
            lif = model.hidden_lifs[i]
            alpha = s.abs().clamp_min(1e-12)
            th = lif.integer_threshold(alpha.cpu()).numpy().astype(np.int64)
            raw = (lif.threshold / alpha).cpu()
            hi = contract.membrane_range(lif.membrane_bits)[1]
            m = lif.membrane_bits
            layers.append(layer(i, bits, th, m, step_scale=None, step_bias=b_np, step_frac=0))
            report["step_frac"].append(0)
            report["scale_max_abs"].append(None)
            report["bias_max_abs"].append(int(np.abs(b_np).max()))
            report["scale_entries_zero"].append(0)
            report["thresholds_clamped"].append(int(((raw < 1) | (raw > hi)).sum()))
        report["membrane_bits"].append(m)
    if model.n_hidden in model.pool_before:
        pool = model.pool_before[model.n_hidden]
        layers.append(Pool(pool.in_shape, pool.window))
    last = model.fcs[-1]
    layers.append(Layer(last.weight_bits().cpu().numpy(), None, model.out_lif.leak_shift, model.reset,
                        model.out_lif.membrane_bits, False))
    report["membrane_bits"].append(model.out_lif.membrane_bits)
    model.train(was_training)
    return Network(layers, model.timesteps, "membrane", "rate", seed=seed, metadata=metadata or {}), report


@torch.no_grad()
def spike_mismatch(model: BNTTNet, encoder, x: torch.Tensor, seed: int, batch_size: int = 1000) -> float:
    """The fraction of hidden-layer spike entries (sample, step, neuron) in which the float model (real arithmetic;
    for "shared" the ideal model) and the exported arithmetic (per-step: ``hardware`` mode; shared: exact) differ: a
    finer measure of the folding's rounding than the accuracy gap."""
    was = model.training, model.hardware, model.exact
    model.eval()
    differ, total = 0, 0
    for i in range(0, len(x), batch_size):
        spikes = encoder(x[i:i + batch_size], seed)
        runs = []
        for exported in (False, True):
            if model.variant == "per-step":
                model.hardware = exported
            else:
                model.set_exact(exported)
            rec = []
            model(spikes, record=rec)
            runs.append(rec)
        for a, b in zip(*runs):
            differ += int((a != b).sum())
            total += a.numel()
    model.train(was[0])
    model.hardware = was[1]
    model.set_exact(was[2])
    return differ / max(1, total)


@torch.no_grad()
def accuracy_vs_steps(net: Network, encoder, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> list:
    """The integer network run for only its first T' steps (``bsnn_hw.network.truncate``), T' = 1..T: accuracy on
    (x, y) with the network's encoder seed. One run gives every T': the rate code's first T' steps are the T'-step
    code's, and the first T' steps of the full network are the truncated network's, so the membrane readout after
    step T' - 1 is the truncated network's class (tests/test_bntt.py checks this against ``truncate``)."""
    if net.readout != "membrane":
        raise ValueError(f"accuracy_vs_steps reads the output membrane after each step; readout {net.readout!r}")
    steps = net.timesteps
    correct = np.zeros(steps, dtype=np.int64)
    for i in range(0, len(y), batch_size):
        spikes = encoder(x[i:i + batch_size], net.seed).bool()
        per_step = []
        integer_simulate(net, spikes, output_steps=per_step)
        pred = per_step[0].argmax(2)                          # (B, T): the class after each step (first maximum)
        correct += (pred == y[i:i + batch_size, None]).sum(0).cpu().numpy()
    return [float(c) / max(1, len(y)) for c in correct]


def smallest_within(acc_vs_steps: list, pp: float = WITHIN_PP) -> int:
    """The smallest T' whose accuracy is within ``pp`` percentage points of the full-T accuracy."""
    full = acc_vs_steps[-1]
    for t, a in enumerate(acc_vs_steps):
        if (full - a) * 100 <= pp + 1e-9:
            return t + 1
    return len(acc_vs_steps)


def plot_steps(info: dict, path, title: str = "") -> None:
    """Integer accuracy vs steps run, the exit step marked, and the mean gamma per step on a second axis (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = list(range(1, len(info["accuracy_vs_steps"]) + 1))
    fig, ax1 = plt.subplots(figsize=(6.5, 3.8))
    ax1.plot(steps, [100 * a for a in info["accuracy_vs_steps"]], marker=".", color="C0",
             label="integer accuracy, first T' steps")
    ax1.axvline(info["exit_step"], color="C3", linestyle="--", label=f"exit step {info['exit_step']}")
    ax1.set_xlabel("steps run T'  /  step t")
    ax1.set_ylabel("test accuracy (%)")
    ax2 = ax1.twinx()
    ax2.plot(steps, info["gamma_mean"], marker="x", color="C2", label="mean |gamma| of step t")
    ax2.axhline(info["exit_threshold"], color="C2", linestyle=":", label="exit threshold")
    ax2.set_ylabel("mean |gamma|" if info["variant"] == "per-step" else "per-step drive std")
    ax2.set_ylim(bottom=0)
    lines = ax1.get_legend_handles_labels()
    more = ax2.get_legend_handles_labels()
    ax1.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# The loop


def build_model(cfg, n_in: int, n_classes: int, precision: str) -> BNTTNet:
    from .trainer import arch_front
    conv, shape = arch_front(cfg, n_in, n_classes)
    return BNTTNet([n_in, *cfg.hidden, n_classes], cfg.timesteps, cfg.bntt_variant, leak_shift=cfg.leak_shift,
                   conv=conv, input_shape=shape,
                   output_leak_shift=cfg.output_leak_shift, reset=cfg.reset, membrane_bits=cfg.membrane_bits,
                   dropout=cfg.dropout, exact=cfg.exact, precision=precision, slope=cfg.slope,
                   theta_int=cfg.bntt_theta, leak_correction=cfg.bntt_leak_correction,
                   scale_bits=cfg.bntt_scale_bits)


def set_phase(model: BNTTNet, finetune: bool) -> None:
    """Main epochs: batch statistics, the float model. Fine-tune epochs: running statistics, the exported
    arithmetic."""
    model.freeze_stats = finetune
    model.hardware = finetune and model.variant == "per-step"


def fit(cfg, out=None, checkpoint=None, resume: bool = False, progress: bool = True,
        log: Callable[[str], None] | None = None, on_epoch_end=None):
    """As :func:`bsnn_hw.train.trainer.fit`, for ``cfg.method == "bntt"``."""
    from .trainer import (Encoder, _Progress, check_run, evaluate, finetune_schedule, resume_state, save_checkpoint,
                          setup_run)
    check_run(cfg, METHOD, out, checkpoint, resume, log, on_epoch_end)
    cfg.validate()
    log = log or (lambda msg: None)
    started = time.perf_counter()
    device, precision, (xtr, ytr, xte, yte), (xtr_t, ytr_t, xte_t, yte_t), n_classes = setup_run(cfg)
    model = build_model(cfg, xtr.shape[1], n_classes, precision).to(device)
    encoder = Encoder(cfg.encoding, xtr.shape[1], cfg.timesteps, device)
    steps_per_epoch = math.ceil(len(ytr) / cfg.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ft_lr = cfg.bntt_finetune_lr if cfg.bntt_finetune_lr is not None else cfg.lr / 10
    scheduler = finetune_schedule(optimizer, cfg.epochs * steps_per_epoch, cfg.bntt_finetune * steps_per_epoch,
                                  ft_lr / cfg.lr)
    if checkpoint is None and out is not None:
        checkpoint = Path(str(out) + ".ckpt")
    history, start_epoch = resume_state(checkpoint if resume else None, cfg, model, optimizer, scheduler, log)
    total = cfg.epochs + cfg.bntt_finetune

    bar = _Progress(progress)
    with bar:
        for epoch in range(start_epoch, total):
            t0 = time.perf_counter()
            finetune = epoch >= cfg.epochs
            set_phase(model, finetune)
            model.train()
            order = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(_mix(cfg.seed, epoch, 1)))
            seeds = training_seeds(len(ytr), cfg.seed, epoch)
            drop_gen = torch.Generator().manual_seed(_mix(cfg.seed, epoch, 2))
            name = f"fine-tune {epoch + 1 - cfg.epochs}/{cfg.bntt_finetune}" if finetune else \
                f"epoch {epoch + 1}/{cfg.epochs}"
            task = bar.start(name, steps_per_epoch)
            loss_sum, correct, seen = 0.0, 0, 0
            for b in range(steps_per_epoch):
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                idx_d = idx.to(device)
                spikes = encoder(xtr_t[idx_d], seeds[idx].to(device))
                target = ytr_t[idx_d]
                logits = model(spikes, generator=drop_gen)
                loss = F.cross_entropy(logits, target, label_smoothing=cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                model.clip_()
                loss_sum += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1) == target).sum())
                seen += len(idx)
                bar.advance(task, f"loss {loss_sum / seen:.4f}  acc {100 * correct / seen:.2f}%")
            train_time = time.perf_counter() - t0
            test_acc = evaluate(model, encoder, xte_t, yte_t, cfg.eval_seed)
            gm = model.gamma_mean()
            history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "train_accuracy": correct / seen,
                            "test_accuracy": test_acc, "epoch_seconds": train_time,
                            "lr": scheduler.get_last_lr()[0], "finetune": finetune,
                            "gamma_mean_first_last": [gm[0], gm[-1]]})
            msg = (f"loss {loss_sum / seen:.4f}  train {100 * correct / seen:.2f}%  test {100 * test_acc:.2f}%  "
                   f"gamma {gm[0]:.3f}..{gm[-1]:.3f}  {train_time:.1f}s")
            bar.finish(task, msg)
            if not progress:
                log(f"{name}: {msg}")
            if checkpoint is not None:
                save_checkpoint(checkpoint, cfg, model, optimizer, scheduler, epoch + 1, history)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, history[-1])
    set_phase(model, False)
    return finish(cfg, model, history, encoder, (xtr, ytr, xte, yte), (xte_t, yte_t), device, precision, started,
                  out, checkpoint, log)


@torch.no_grad()
def finish(cfg, model: BNTTNet, history, encoder, arrays, test_tensors, device, precision, started, out, checkpoint,
           log):
    """Export, the hardware-exact evaluation, the early-exit report, metrics, and (with ``out``) the files."""
    from .trainer import TrainResult, dataset_title, evaluate, integer_accuracy, plot_paths, save_outputs
    xtr, ytr, xte, yte = arrays
    xte_t, yte_t = test_tensors
    sizes = list(model.sizes)
    float_acc, float_pred = evaluate(model, encoder, xte_t, yte_t, cfg.eval_seed, predictions=True)
    net, tables = to_network(model, seed=cfg.eval_seed)
    int_acc, int_pred = integer_accuracy(net, encoder, xte_t, yte_t)
    metrics = {"dataset": cfg.dataset, "method": METHOD, "variant": cfg.bntt_variant, "sizes": sizes,
               "train_samples": int(len(ytr)), "test_samples": int(len(yte)), "float_accuracy": float_acc,
               "integer_accuracy": int_acc, "gap_pp": round((float_acc - int_acc) * 100, 4),
               "float_integer_agreement": float((float_pred == int_pred).mean()) if len(yte) else 1.0,
               "epochs": cfg.epochs, "finetune_epochs": cfg.bntt_finetune, "device": str(device),
               "precision": precision, "epoch_seconds": [h["epoch_seconds"] for h in history]}
    if cfg.bntt_variant == "per-step":
        # The torch model in the exported arithmetic must make exactly the integer network's decisions.
        model.hardware = True
        hw_acc, hw_pred = evaluate(model, encoder, xte_t, yte_t, cfg.eval_seed, predictions=True)
        model.hardware = False
        metrics["hardware_model_accuracy"] = hw_acc
        metrics["hardware_model_agrees"] = bool(np.array_equal(hw_pred, int_pred))
        metrics["theta_int"] = cfg.bntt_theta
        if not metrics["hardware_model_agrees"]:
            log("warning: the torch model in the exported arithmetic and the integer network disagree")
    else:
        model.set_exact(not cfg.exact)
        other = evaluate(model, encoder, xte_t, yte_t, cfg.eval_seed)
        model.set_exact(cfg.exact)
        metrics["ideal_accuracy"] = other if cfg.exact else float_acc
        metrics["exact_arithmetic_accuracy"] = float_acc if cfg.exact else other
    metrics["hidden_spike_mismatch"] = spike_mismatch(model, encoder, xte_t, cfg.eval_seed)
    metrics["tables"] = tables
    metrics["thresholds_clamped"] = tables["thresholds_clamped"]
    if any(tables["thresholds_clamped"]):
        log(f"note: 1 / |s| of {tables['thresholds_clamped']} neurons (per layer) lies outside the representable "
            f"thresholds 1..2^(M-1)-1; they train and export clamped to that range")
    zero = sum(tables["scale_entries_zero"])
    if zero:
        log(f"note: {zero} per-step scale entries round to 0 from a nonzero gamma (raise --bntt-theta)")
    gm = model.gamma_mean()
    acc_steps = accuracy_vs_steps(net, encoder, xte_t, yte_t)
    info = {"variant": cfg.bntt_variant, "exit_rule": EXIT_RULES[cfg.bntt_variant],
            "exit_threshold": cfg.bntt_exit_threshold, "exit_step": exit_step(gm, cfg.bntt_exit_threshold),
            "gamma_mean": gm, "accuracy_vs_steps": acc_steps, "float_accuracy": float_acc,
            "integer_accuracy": int_acc, "steps_within_0.3pp": smallest_within(acc_steps),
            "theta_int": cfg.bntt_theta if cfg.bntt_variant == "per-step" else None,
            "scale_bits": cfg.bntt_scale_bits if cfg.bntt_variant == "per-step" else None,
            "step_frac": tables["step_frac"], "membrane_bits": tables["membrane_bits"],
            "leak_correction": cfg.bntt_leak_correction, "finetune_epochs": cfg.bntt_finetune}
    info["exit_accuracy"] = acc_steps[info["exit_step"] - 1]
    metrics["output_scale"] = float(model.fcs[-1].scale().detach().reshape(-1)[0]) / cfg.timesteps
    metrics["train_seconds"] = round(time.perf_counter() - started, 2)
    metrics["float_predictions"] = encode_predictions(float_pred)
    title = f"BNTT {cfg.bntt_variant} {dataset_title(cfg.dataset)} {'-'.join(map(str, sizes))}, T={cfg.timesteps}"
    save_outputs(net, cfg, metrics, history, out, checkpoint, title, extra={"bntt": info})
    metrics["bntt"] = info              # for the caller (the artifact holds it once, as metadata["bntt"])
    if out is not None:
        steps_png = plot_paths(out)[1]
        plot_steps(info, steps_png, title)
        metrics["steps_plot"] = str(steps_png)
    return TrainResult(net, model, metrics, history)
