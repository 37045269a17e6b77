"""BSTDG: binarized IF networks on latency-coded input, trained from spike times (``bsnn-hw train --method bstdg``).

The network is the contract's (docs/spec.md): fully connected layers of +-1 weights, IF neurons (no leak),
fire-once on every layer, "latency" input code, "first" readout (the earliest output spike; none: argmax of the final
membrane). There is no surrogate and no backpropagation through time: the gradient is computed from the spike times
alone, following BS4NN (Kheradpisheh et al., the documented rule closest to seed 002, BSTDG; see
../shared/research/METHODS.md "BSTDG" and docs/training.md "BSTDG"):

- forward: the exact integer IF dynamics. Every input and every neuron spikes at most once, so the membrane of a
  layer is the running sum ``V[t] = sum_{t' <= t} s[t'] @ sign(W)^T`` and a neuron's spike time is the first t with
  ``V[t] > theta_int`` (T when it never fires). ``theta_int = clamp(floor(theta0 / f), 1, 2^(M-1)-1)`` is the integer
  threshold the artifact holds, f > 0 the layer's learned threshold factor (stored as log f).
- output targets: the correct class at ``min(t_min, T - 1)`` (``t_min`` the earliest output spike time, optionally
  also no later than ``bstdg_deadline``); every other class that fired before ``t_min + gamma`` at ``min(t_min + gamma,
  T)``; the rest keep their time. ``delta_j = (t_target_j - t_j) / T``, L2-normalised per sample and layer. With
  ``bstdg_timing = "interpolated"`` (the ``--method bstdg`` default) t_j here is the threshold crossing interpolated
  within the spike step (:func:`crossing_times`), so outputs that fire in the same step get different errors.
- updates through causal pairs only (input i reached neuron j no later than j fired: ``t_i <= t_j``, the contract's
  same-step propagation): ``dW_ji = delta_j [t_i <= t_j]``, ``delta_i = sum_j w_ji delta_j [t_i <= t_j]`` (w = the
  latent W, as BS4NN, or sign(W) with ``bstdg_backward = "sign"``), then L2-normalised, and
  ``d(log f) = sum_j delta_j V_j(t_j) / theta``. These are gradients (of 0.5 * sum_j (t_j - t_target_j)^2 / T^2,
  with dt_j / dV_j = -1) handed to Adam.
- fine-tune (``bstdg_finetune`` epochs after the main ones): the threshold factors frozen, the latent weights on a
  fresh Adam and cosine decay from ``bstdg_finetune_lr``; left free over long schedules the thresholds drift. With
  ``bstdg_pull`` > 0 the fine-tune also asks the samples the network gets right by ``gamma`` steps or more for a
  correct spike one step earlier, weighted by the pull (:func:`pull_targets`): earlier decisions, bought with the
  weights while the thresholds stay where they are.
- the anytime readout fit (``bstdg_readout_epochs``, :func:`fit_readout`) after the last epoch, for the export: the
  output layer alone fitted again to a per-step logistic loss on its membranes (:func:`readout_loss`), so that an
  output spike means a confident class whenever it comes; for a decision budget.
- the local search (``bstdg_search_sweeps``, :func:`search_hidden`) after the readout fit, for the export: the last
  hidden layer's thresholds and weight signs moved one neuron at a time, each move scored exactly on the readout's
  loss and kept only when it lowers it; the moves tried are ranked by the same loss's spike-time gradient.
- threshold calibration (``bstdg_calibrate``, :func:`calibrate`) after the last epoch, for the export: integer
  offsets on the trained thresholds (one per hidden layer, one per output neuron), chosen for the training split's
  accuracy under the exact integer forward pass; the loss rewards early spikes and its thresholds settle too low.

Sparse arithmetic: a latency-coded sample has one spike per lit pixel and fire-once layers one per neuron, so the
synaptic products and the weight gradient are sums over spikes (``embedding_bag``), not dense (B*T, n_in) products.
Every sum of +-1 over at most 2^24 spikes is exact in float32.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bsnn_hw import contract
from bsnn_hw.checks import check_flag, check_int, check_positive, check_sizes, is_int
from bsnn_hw.data import check_labels
from bsnn_hw.io import encode_predictions
from bsnn_hw.network import Layer, Network

from .encoding import _mix, check_intensities, latency
from .layers import signs

METHOD = "bstdg"
# What --method bstdg sets unless told otherwise (anything else given explicitly is refused by check_config).
DEFAULTS = {"encoding": "latency", "leak_shift": None, "output_leak_shift": None, "fire_once": True,
            "readout": "first", "dropout": 0.0, "scale": "layer", "timesteps": 32, "lr": 1e-3, "batch_size": 16,
            "threshold_init": 0.5, "bstdg_revive": 0.02, "bstdg_gamma": 3.0, "bstdg_lead": 2.0, "epochs": 5,
            "bstdg_finetune": 15, "bstdg_timing": "interpolated", "bstdg_calibrate": True}
BACKWARD = ("latent", "sign")
TIMING = ("step", "interpolated")
RATE_DECAY = 0.99      # running mean of the hidden neurons' firing fractions, per training batch


def config(**settings):
    """A TrainConfig for BSTDG: the BSTDG defaults, then ``settings``."""
    from .trainer import TrainConfig
    if settings.get("method", METHOD) != METHOD:
        raise ValueError(f"bstdg.config makes --method {METHOD} configurations, not method {settings['method']!r}")
    return TrainConfig.from_dict({**DEFAULTS, "method": METHOD, **settings}).validate()


def check_config(cfg) -> None:
    """Refuse (ValueError, one line) settings that BSTDG does not train."""
    from .trainer import TrainConfig, check_finetune, requirement
    need = requirement("bstdg")
    need(cfg.arch is None, f"trains fully connected layers only, not --arch {cfg.arch}")
    need(cfg.first_bits == 1 and cfg.last_bits == 1, f"trains all-binary layers; first/last layer weight bits "
         f"{cfg.first_bits}/{cfg.last_bits} (a --variant or --first-bits/--last-bits) are not supported")
    need(cfg.encoding == "latency", f"needs latency-coded input, not --encoding {cfg.encoding}")
    need(cfg.leak_shift is None and cfg.output_leak_shift is None,
         f"uses IF neurons (leak none), not leak shift {cfg.leak_shift}/{cfg.output_leak_shift}")
    need(cfg.fire_once is True, "needs fire-once neurons (--fire-once)")
    need(cfg.readout == "first", f"reads out the first output spike, not --readout {cfg.readout}")
    need(cfg.dropout == 0, f"has no dropout, not --dropout {cfg.dropout}")
    need(cfg.scale in ("layer", "neuron"), f"learns threshold factors per layer or per neuron (scale 'layer' or "
         f"'neuron'), not scale {cfg.scale!r}")
    need(cfg.label_smoothing == 0, "has no cross-entropy loss to smooth (--label-smoothing)")
    need(cfg.augment_shift == 0 and not cfg.augment_flip, "does not augment (--augment-shift/--augment-flip)")
    need(cfg.exact, "always trains in the contract's integer arithmetic (exact = false)")
    need(cfg.reset == "subtract", f"fires each neuron once, so a reset never acts: leave reset at its default, not "
         f"{cfg.reset!r}")
    need(cfg.slope == TrainConfig.slope, f"has no surrogate gradient, so slope changes nothing: leave it at "
         f"{TrainConfig.slope:g}, not {cfg.slope!r}")
    need(cfg.precision in ("auto", "fp32"), f"computes spike times in fp32; precision {cfg.precision!r} is not used")
    need(cfg.bstdg_gamma > 0 and math.isfinite(cfg.bstdg_gamma), f"gamma must be positive, not {cfg.bstdg_gamma}")
    need(cfg.bstdg_threshold_lr is None or cfg.bstdg_threshold_lr >= 0,
         f"threshold lr must be >= 0, not {cfg.bstdg_threshold_lr}")
    need(cfg.bstdg_deadline is None or 0 <= cfg.bstdg_deadline < cfg.timesteps,
         f"deadline must be a step in 0..T-1 = {cfg.timesteps - 1}, not {cfg.bstdg_deadline}")
    need(0 <= cfg.bstdg_lead < cfg.timesteps and math.isfinite(cfg.bstdg_lead),
         f"lead must be a number of steps in [0, T) = [0, {cfg.timesteps}), not {cfg.bstdg_lead}")
    need(cfg.bstdg_backward in BACKWARD, f"backward must be one of {', '.join(BACKWARD)}, not "
         f"{cfg.bstdg_backward!r}")
    need(cfg.bstdg_timing in TIMING, f"timing must be one of {', '.join(TIMING)}, not {cfg.bstdg_timing!r}")
    need(0 <= cfg.bstdg_pull <= 1 and math.isfinite(cfg.bstdg_pull),
         f"pull must be a weight in [0, 1] (0: none), not {cfg.bstdg_pull}")
    need(cfg.bstdg_pull == 0 or cfg.bstdg_finetune > 0,
         "pull acts in the fine-tune epochs (thresholds frozen): it needs --bstdg-finetune > 0")
    whole = lambda v, lo: is_int(v) and v >= lo     # noqa: E731
    need(whole(cfg.bstdg_readout_epochs, 0),
         f"readout epochs must be a whole number >= 0 (0: no readout fit), not {cfg.bstdg_readout_epochs!r}")
    need(cfg.bstdg_readout_scale > 0 and math.isfinite(cfg.bstdg_readout_scale),
         f"readout scale must be a positive number of membrane steps, not {cfg.bstdg_readout_scale}")
    need(whole(cfg.bstdg_search_sweeps, 0),
         f"search sweeps must be a whole number >= 0 (0: no local search), not {cfg.bstdg_search_sweeps!r}")
    need(whole(cfg.bstdg_search_samples, 1),
         f"search samples must be a whole number >= 1, not {cfg.bstdg_search_samples!r}")
    need(cfg.bstdg_search_sweeps == 0 or cfg.hidden,
         "the local search (--bstdg-search-sweeps) moves the last hidden layer: it needs --hidden")
    need(cfg.bstdg_revive >= 0 and math.isfinite(cfg.bstdg_revive),
         f"revive must be >= 0, not {cfg.bstdg_revive}")
    need(0 < cfg.bstdg_min_rate <= 1, f"min rate must be in (0, 1], not {cfg.bstdg_min_rate}")
    need(cfg.bstdg_decision_step is None or 0 <= cfg.bstdg_decision_step < cfg.timesteps,
         f"decision step must be a step in 0..T-1 = {cfg.timesteps - 1}, not {cfg.bstdg_decision_step}")
    need(cfg.bstdg_decision_step is None or cfg.bstdg_calibrate,
         "decision step is a budget of the threshold calibration: it needs --bstdg-calibrate")
    check_finetune(need, cfg.bstdg_finetune, cfg.bstdg_finetune_lr)


# ---------------------------------------------------------------------------------------------------------------
# The network


class BSTDGNet(nn.Module):
    """Binary IF MLP: latent weights ``weights[l]`` (n_out, n_in), threshold factors ``log_factor`` (one per layer),
    fixed base thresholds ``theta0[l] = threshold_init * sqrt(n_in)``; real threshold ``theta0 / f``. With
    ``per_neuron``, every neuron j also learns its own factor (``neuron_log_factor[l][j]``, starting at 1): its
    threshold is ``theta0 / (f_l f_lj)``."""

    def __init__(self, sizes, timesteps: int, membrane_bits: int = 16, threshold_init: float = 0.5,
                 per_neuron: bool = False):
        super().__init__()
        sizes = check_sizes(sizes)
        check_int("timesteps", timesteps)
        check_int("membrane_bits", membrane_bits, contract.MEMBRANE_BITS_MIN, contract.MEMBRANE_BITS_MAX)
        check_positive("threshold_init", threshold_init, "a positive number")
        self.per_neuron = check_flag("per_neuron", per_neuron)
        self.sizes, self.timesteps, self.membrane_bits = sizes, timesteps, membrane_bits
        hi = contract.membrane_range(membrane_bits)[1]
        for n_in in self.sizes[:-1]:
            # Every input spikes at most once, so |V| <= n_in: with n_in <= 2^(M-1)-1 saturation never acts and the
            # running sum below is the contract's membrane.
            if n_in > hi:
                raise ValueError(f"--method bstdg: a layer with {n_in} inputs needs membrane_bits with 2^(M-1)-1 >= "
                                 f"{n_in} (M = {membrane_bits} holds {hi})")
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(n_out, n_in).uniform_(-1, 1) / math.sqrt(n_in))
            for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]))
        self.log_factor = nn.Parameter(torch.zeros(len(self.sizes) - 1))
        # (parameters of this module itself, not of a ParameterList: a checkpoint without them loads, see below)
        for li, n_out in enumerate(self.sizes[1:] if self.per_neuron else []):
            self.register_parameter(f"neuron_log_factor{li}", nn.Parameter(torch.zeros(n_out)))
        self.register_buffer("theta0", torch.tensor([threshold_init * math.sqrt(n) for n in self.sizes[:-1]],
                                                    dtype=torch.float64))
        # per hidden layer: the running mean of each neuron's firing fraction over training batches (-1: none yet)
        for li, n_out in enumerate(self.sizes[1:-1]):
            self.register_buffer(f"rate{li}", torch.full((n_out,), -1.0))
        # per layer: integer steps added to each neuron's floor(theta0 / f), set by :func:`calibrate` (0: none)
        for li, n_out in enumerate(self.sizes[1:]):
            self.register_buffer(f"threshold_offset{li}", torch.zeros(n_out, dtype=torch.int64))

    @property
    def optional_state(self) -> tuple:
        """State entries a checkpoint may lack (written before they existed): the firing-rate buffers, which then
        start afresh (-1: no batch seen yet); the per-neuron threshold factors, which then start at 1 (a per-neuron
        run may start from a per-layer one's checkpoint, --init); and the calibration's threshold offsets (then 0)."""
        return (tuple(f"rate{li}" for li in range(len(self.sizes) - 2))
                + tuple(f"neuron_log_factor{li}" for li in range(len(self.neuron_log_factor)))
                + tuple(f"threshold_offset{li}" for li in range(len(self.sizes) - 1)))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        for name in self.optional_state:
            if prefix + name in missing_keys:
                missing_keys.remove(prefix + name)

    def firing_rate(self, layer: int) -> torch.Tensor:
        """Hidden layer ``layer``'s running firing fractions (n_out,)."""
        return getattr(self, f"rate{layer}")

    @torch.no_grad()
    def track_rates(self, rec) -> None:
        """Update the running firing fractions with one batch's record: r <- 0.99 r + 0.01 (fraction of the batch's
        samples on which the neuron fired); the first batch sets them."""
        for li in range(len(self.weights) - 1):
            now = (rec[li]["t"] < self.timesteps).float().mean(0)
            r = self.firing_rate(li)
            r.copy_(now if bool(r[0] < 0) else RATE_DECAY * r + (1 - RATE_DECAY) * now)

    @property
    def neuron_log_factor(self) -> list:
        """Per layer, the neurons' log threshold factors (n_out,); empty without ``per_neuron``."""
        if not self.per_neuron:
            return []
        return [getattr(self, f"neuron_log_factor{li}") for li in range(len(self.sizes) - 1)]

    @property
    def threshold_offsets(self) -> list[torch.Tensor]:
        """Per layer, the integer offsets (n_out,) int64 that :func:`calibrate` adds to floor(theta0 / f)."""
        return [getattr(self, f"threshold_offset{li}") for li in range(len(self.sizes) - 1)]

    def factor_params(self) -> list:
        """The threshold factors' parameters (log f per layer, and per neuron with ``per_neuron``)."""
        return [self.log_factor, *self.neuron_log_factor]

    def theta(self) -> list[torch.Tensor]:
        """Real thresholds theta0 / f per layer: (n_out,) float64 each."""
        out = []
        for li, n_out in enumerate(self.sizes[1:]):
            log_f = self.log_factor.detach().double()[li].expand(n_out)
            if self.per_neuron:
                log_f = log_f + self.neuron_log_factor[li].detach().double()
            out.append(self.theta0[li] * torch.exp(-log_f))
        return out

    def floored_thresholds(self) -> list[torch.Tensor]:
        """floor(theta0 / f) plus the calibration's offsets, unclamped, (n_out,) float64 per layer: the "float"
        model's thresholds (V is an integer, so V > theta0 / f <=> V > floor(theta0 / f))."""
        return [torch.floor(t) + off.to(t) for t, off in zip(self.theta(), self.threshold_offsets)]

    def integer_thresholds(self) -> list[torch.Tensor]:
        """The thresholds the forward pass uses and the artifact holds: floor(theta0 / f) plus the calibration's
        offsets, clamped to 1..2^(M-1)-1, (n_out,) int64 per layer."""
        hi = contract.membrane_range(self.membrane_bits)[1]
        return [t.clamp(1, hi).to(torch.int64) for t in self.floored_thresholds()]

    def threshold_summary(self) -> list:
        """Per layer, the integer threshold (one number when all neurons share it, else [min, median, max])."""
        out = []
        for t in self.integer_thresholds():
            lo, hi = int(t.min()), int(t.max())
            out.append(lo if lo == hi else [lo, int(t.median()), hi])
        return out

    def clamped(self) -> list[int]:
        """Per layer, how many neurons' thresholds (theta0 / f, plus offsets) lie outside 1..2^(M-1)-1 (they train
        and export clamped)."""
        hi = contract.membrane_range(self.membrane_bits)[1]
        return [int(((t < 1) | (t >= hi + 1)).sum()) for t in self.floored_thresholds()]

    @torch.no_grad()
    def clip_(self) -> None:
        for w in self.weights:
            w.clamp_(-1, 1)

    @torch.no_grad()
    def run(self, spikes: torch.Tensor, thresholds=None):
        """Forward pass on 0/1 spikes (B, T, n_in), each input spiking at most once (a latency code)."""
        return self.run_times(spike_times(spikes, self.timesteps), thresholds)

    @torch.no_grad()
    def run_times(self, t_in: torch.Tensor, thresholds=None):
        """Forward pass on input spike steps (B, n_in) int64 (T: no spike). ``thresholds``: per layer (default: the
        integer ones). Returns a list per layer of dicts: ``t_in`` the layer's input spike steps, ``t`` its neurons'
        first spike steps (B, n_out) (T: none), ``v`` membrane (B, T, n_out) before any reset (the contract's V up to
        and including the neuron's first spike)."""
        if t_in.ndim != 2 or t_in.shape[1] != self.sizes[0]:
            raise ValueError(f"inputs must have shape (batch, {self.sizes[0]}) for this network, not "
                             f"{tuple(t_in.shape)}")
        thresholds = self.integer_thresholds() if thresholds is None else thresholds
        rec, t_prev = [], t_in
        for w, th in zip(self.weights, thresholds):
            sign_w = signs(w)
            v = membrane_of(t_prev, sign_w, self.timesteps)
            t = first_spikes(v, th)
            rec.append({"t_in": t_prev, "t": t, "v": v})
            t_prev = t
        return rec

    def predict(self, rec) -> tuple[torch.Tensor, torch.Tensor]:
        """(class, decision step) from :meth:`run`'s record: the earliest output spike (lowest index among ties),
        or, when no output neuron fires (decision step T), argmax of the final membrane (lowest index)."""
        return readout(rec[-1]["t"], rec[-1]["v"][:, -1], self.timesteps)


def membrane_of(t_in: torch.Tensor, sign_w: torch.Tensor, steps: int) -> torch.Tensor:
    """A non-leaky layer's membrane (B, T, n_out) before any reset: the running sum of its synaptic input from input
    spike steps ``t_in`` (B, n_in) through +-1 weights ``sign_w`` (n_out, n_in)."""
    return spike_product(t_in, sign_w, steps).cumsum(1)


def first_spikes(v: torch.Tensor, theta) -> torch.Tensor:
    """Each neuron's first spike step (B, n) from its membrane ``v`` (B, T, n) and integer threshold(s) ``theta``:
    the first step with V > theta (T: never)."""
    th = torch.as_tensor(theta).to(device=v.device, dtype=v.dtype)          # integers: exact in float32 and int16
    # the first step with V > theta = the number of steps before the first firing
    return ((v > th).to(torch.int32).cumsum(1) == 0).sum(1)


def readout(t: torch.Tensor, v_last: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The contract's "first" readout: (class, decision step) from the output spike steps ``t`` (B, n_out) and final
    membranes ``v_last`` (B, n_out): the earliest spike (lowest index among ties), or argmax of ``v_last`` (lowest
    index) when no output fires (decision step T)."""
    first = t.min(1).values
    return torch.where(first < steps, torch.argmin(t, 1), torch.argmax(v_last, 1)), first


def input_times(x: torch.Tensor, steps: int) -> torch.Tensor:
    """The contract's latency code as spike steps: ((255 - x) * T) // 256, T (no spike) for x = 0."""
    check_intensities(x)
    check_int("steps", steps)
    x = x.to(torch.int64)
    return torch.where(x > 0, ((255 - x) * steps) // 256, steps)


def spike_times(spikes: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, T, n) 0/1 spikes -> first spike step (B, n), T for none."""
    fired = spikes.bool()
    return torch.where(fired.any(1), fired.to(torch.uint8).argmax(1), steps)


def spike_product(t_in: torch.Tensor, w: torch.Tensor, steps: int) -> torch.Tensor:
    """Synaptic input (B, T, n_out) of single spikes at steps ``t_in`` (B, n_in) through weights ``w`` (n_out,
    n_in): for every (sample, step), the sum of the weight columns of the inputs that spike then."""
    b, _ = t_in.shape
    ts, order = torch.sort(t_in, dim=1, stable=True)
    keep = ts < steps
    key = (torch.arange(b, device=t_in.device)[:, None] * steps + ts)[keep]
    counts = torch.bincount(key, minlength=b * steps)
    offsets = torch.cumsum(counts, 0) - counts
    out = F.embedding_bag(order[keep], w.t().contiguous(), offsets, mode="sum")
    return out.reshape(b, steps, -1)


def targets(t_out: torch.Tensor, labels: torch.Tensor, steps: int, gamma: float, deadline: int | None,
            lead: float = 0.0):
    """BS4NN's relative targets on output spike times (T = no spike). With ``lead`` > 0 the correct class's target
    is also at least ``lead`` steps before every other class's spike: ``min(t_min, t_other - lead)`` (not below 0),
    so a tie or a narrow win moves it earlier too, not only the others later (``lead`` 0: BS4NN's ``t_min``)."""
    if labels.dtype != torch.int64 or labels.shape != t_out.shape[:1] or (
            labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= t_out.shape[1])):
        raise ValueError(f"labels must be int64 classes 0..{t_out.shape[1] - 1}, one per sample ({t_out.shape[0]}), "
                         f"not {labels.dtype} {tuple(labels.shape)}")
    t = t_out.double()
    t_min = t.min(1).values
    correct = F.one_hot(labels, t.shape[1]).bool()
    goal = torch.clamp(t_min, max=steps - 1)
    if lead:
        t_other = torch.where(correct, float(steps), t).min(1).values
        goal = torch.clamp(torch.minimum(goal, t_other - lead), min=0)
    if deadline is not None:
        goal = torch.clamp(goal, max=deadline)
    late = torch.clamp(t_min + gamma, max=steps)
    push = ~correct & (t < t_min[:, None] + gamma) & (t < steps)
    target = torch.where(push, late[:, None], t)
    return torch.where(correct, goal[:, None], target)


def pull_targets(t_out: torch.Tensor, labels: torch.Tensor, target: torch.Tensor, steps: int,
                 margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The pull toward earlier decisions (``bstdg_pull``): on a *sure* sample - the correct class fires and every
    other class fires at least ``margin`` steps after it (or not at all) - the correct class's target becomes one step
    before its spike time ``t_out`` (not below 0). Returns (``target`` with those entries moved, the sure mask (B,)).
    The relative targets alone never ask a sure sample for an earlier spike: its error is 0 whatever its time."""
    t = t_out.double()
    correct = F.one_hot(labels, t.shape[1]).bool()
    t_c = t.gather(1, labels[:, None])[:, 0]
    t_other = torch.where(correct, float(steps), t).min(1).values
    sure = (t_c < steps) & (t_other - t_c >= margin)
    goal = torch.where(sure, torch.clamp(t_c - 1, min=0), target.gather(1, labels[:, None])[:, 0].double())
    return torch.where(correct, goal[:, None], target), sure


def crossing_times(r: dict, theta, steps: int) -> torch.Tensor:
    """Output spike times for the error (``bstdg_timing = "interpolated"``): a neuron that first fires at step t
    (V[t] > theta >= V[t-1], V[-1] = 0) crossed theta at ``t - 1 + (theta - V[t-1]) / (V[t] - V[t-1])``, in [t - 1, t),
    the membrane taken as linear within the step; T for a silent neuron. ``r``: a layer's :meth:`BSTDGNet.run_times`
    record; ``theta``: its integer threshold(s). The forward pass and the readout keep the step t."""
    t, v = r["t"], r["v"]
    tc = t.clamp(max=steps - 1)
    v_t = v.gather(1, tc[:, None, :])[:, 0].double()
    v_prev = torch.where(tc > 0, v.gather(1, (tc - 1).clamp(min=0)[:, None, :])[:, 0].double(), 0.0)
    th = torch.as_tensor(theta, dtype=torch.float64, device=v.device)
    share = ((th - v_prev) / (v_t - v_prev).clamp(min=1)).clamp(0, 1)    # V rises by >= 1 in the firing step
    return torch.where(t < steps, t.double() - 1 + share, float(steps))


def causal_grad(delta: torch.Tensor, t_out: torch.Tensor, t_in: torch.Tensor, steps: int) -> tuple:
    """The BSTDG weight gradient of one layer, summed over the batch: ``dW_ji = sum_b delta_bj [t_bi <= t_bj]`` from
    errors ``delta`` (B, n_out), the layer's spike steps ``t_out`` (B, n_out) (a silent neuron: all inputs causal) and
    its input spike steps ``t_in`` (B, n_in) (T: none). Returns (dW (n_out, n_in), causal (B*T, n_out): row b*T + t
    holds delta_bj [t <= t_bj]), one embedding bag per input over its spikes."""
    batch = delta.shape[0]
    ar = torch.arange(steps, device=delta.device)
    tc = t_out.clamp(max=steps - 1)
    causal = (delta[:, None, :] * (ar[None, :, None] <= tc[:, None, :])).reshape(batch * steps, -1)
    tt = t_in.t()
    keep = tt < steps
    rows = (torch.arange(batch, device=delta.device)[None, :] * steps + tt)[keep]
    counts = keep.sum(1)
    return F.embedding_bag(rows, causal, torch.cumsum(counts, 0) - counts, mode="sum").t(), causal


def _normalise(d: torch.Tensor) -> torch.Tensor:
    n = d.norm(dim=1, keepdim=True)
    return torch.where(n > 0, d / n.clamp_min(1e-30), d)


def gradients(model: BSTDGNet, rec, labels, gamma: float, deadline: int | None, backward: str = "latent",
              revive: float = 0.0, min_rate: float = 0.05, lead: float = 0.0, timing: str = "step",
              pull: float = 0.0):
    """Spike-time gradients of every latent weight matrix and of the log threshold factors: (loss, [dW per layer],
    d log f per layer, [d log f per neuron, per layer] (empty without per-neuron factors)). With ``revive`` > 0, a
    hidden neuron whose running firing fraction (:meth:`BSTDGNet.track_rates`) is below ``min_rate`` also gets the
    error -revive on each sample where it stays silent, through every input that spiked: its incoming weights from
    them rise and it fires again. ``timing`` "interpolated": the output errors on :func:`crossing_times` instead of
    the spike steps. With ``pull`` > 0, the sure samples (:func:`pull_targets`, margin ``gamma``) ask their correct
    class for a spike one step earlier, their errors (normalised per sample in every layer, as all) weighted by
    ``pull``, every other sample's by 1."""
    steps = model.timesteps
    t_out = rec[-1]["t"]
    t_err = crossing_times(rec[-1], model.integer_thresholds()[-1], steps) if timing == "interpolated" \
        else t_out.double()
    target = targets(t_err, labels, steps, gamma, deadline, lead)
    weight = None
    if pull > 0:
        target, sure = pull_targets(t_err, labels, target, steps, gamma)
        weight = torch.where(sure, pull, 1.0).float()[:, None]
    normalise = _normalise if weight is None else (lambda d: _normalise(d) * weight)
    delta = ((target - t_err) / steps).float()
    loss = 0.5 * float((delta ** 2).sum(1).mean())
    delta = normalise(delta)
    batch = t_out.shape[0]
    dev = t_out.device
    theta = [t.float().to(dev) for t in model.theta()]
    grads = [None] * len(model.weights)
    g_factor = torch.zeros(len(model.weights), device=dev)
    g_neuron = []                                                          # per layer (n_out,), output layer first
    for li in range(len(model.weights) - 1, -1, -1):
        r = rec[li]
        tc = r["t"].clamp(max=steps - 1)                                   # a silent neuron: all inputs causal
        t_in = r["t_in"]
        n_in = t_in.shape[1]
        # causal[b*T + t, j] = delta_bj [t <= t_j]: an input spike at step t is causal for j iff t <= t_j
        dw, causal = causal_grad(delta, r["t"], t_in, steps)
        grads[li] = dw / batch                                             # (n_out, n_in)
        v_at = r["v"].gather(1, tc[:, None, :])[:, 0]                        # V_j(t_j) before reset
        if model.per_neuron:
            g_j = (delta * v_at / theta[li]).mean(0)                          # d log f_lj, per neuron
            g_factor[li] = g_j.sum()
            g_neuron.append(g_j)
        else:
            g_factor[li] = (delta * v_at).sum(1).mean() / theta[li][0]
        if li > 0:
            w = model.weights[li].detach()
            w = signs(w) if backward == "sign" else w
            # delta_i = sum_j w_ji delta_j [t_i <= t_j], for the neurons i that fired (one spike each)
            bi, ii = (t_in < steps).nonzero(as_tuple=True)
            d_in = torch.zeros(batch, n_in, device=dev)
            d_in[bi, ii] = (causal[bi * steps + t_in[bi, ii]] * w.t()[ii]).sum(1)
            delta = normalise(d_in)
    if revive > 0:
        for li in range(len(model.weights) - 1):
            r = rec[li]
            quiet = (model.firing_rate(li) < min_rate) & (model.firing_rate(li) >= 0)
            push = -revive * ((r["t"] >= steps) & quiet).float()                    # (B, n_out): silent and quiet
            grads[li] = grads[li] + push.t() @ (r["t_in"] < steps).float() / batch
    return loss, grads, g_factor, g_neuron[::-1]


# ---------------------------------------------------------------------------------------------------------------
# Export and evaluation


def to_network(model: BSTDGNet, seed: int = 1, metadata: dict | None = None) -> Network:
    """The integer network: weight bits W > 0, the integer thresholds the forward pass uses, IF, fire-once,
    latency code, first-spike readout."""
    layers = [Layer((w.detach().cpu().numpy() > 0), th.cpu().numpy().astype(np.int64), None, "subtract",
                    model.membrane_bits, True)
              for w, th in zip(model.weights, model.integer_thresholds())]
    return Network(layers, model.timesteps, "first", "latency", seed=seed, metadata=metadata or {})


@torch.no_grad()
def evaluate(model: BSTDGNet, x: torch.Tensor, y: torch.Tensor, real: bool = False, batch_size: int = 1000) -> dict:
    """Predictions, decision steps and hidden spike counts on ``x`` (uint8), with the integer thresholds or, with
    ``real``, the real thresholds theta0 / f (the "float" model)."""
    check_int("batch_size", batch_size)
    if len(y) != len(x):
        raise ValueError(f"x and y must hold the same number of samples, not {len(x)} and {len(y)}")
    ths = model.floored_thresholds() if real else None                 # the real thresholds, floored, not clamped
    preds, firsts, ties, hidden = [], [], [], 0
    for i in range(0, len(y), batch_size):
        rec = model.run_times(input_times(x[i:i + batch_size], model.timesteps), ths)
        p, f = model.predict(rec)
        preds.append(p.cpu())
        firsts.append(f.cpu())
        ties.append(first_ties(rec[-1]["t"], y[i:i + batch_size], model.timesteps).cpu())
        hidden += sum(int((r["t"] < model.timesteps).sum()) for r in rec[:-1])
    pred = torch.cat(preds)
    first = torch.cat(firsts)
    tie = torch.cat(ties) if ties else torch.zeros((0, 2), dtype=torch.bool)
    return {"accuracy": int((pred == y.cpu()).sum()) / max(1, len(y)), "pred": pred.numpy(), "first": first.numpy(),
            "tied": tie[:, 0].numpy(), "correct_tied": tie[:, 1].numpy(), "hidden_spikes": hidden / max(1, len(y))}


# ---------------------------------------------------------------------------------------------------------------
# The anytime readout fit

READOUT_BATCH = 128          # samples per step of the readout fit
READOUT_THRESHOLD_LR = 0.1   # Adam lr of the output thresholds there, in membrane units (V is an integer)


def output_inputs(model: BSTDGNet, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """The output layer's input spike steps (N, n_in) (T: none) on images ``x`` (uint8): the last hidden layer's
    spikes, or the latency code for a network without a hidden layer. int16, or int32 when T does not fit."""
    dtype = torch.int16 if model.timesteps < 2 ** 15 else torch.int32
    return torch.cat([model.run_times(input_times(x[i:i + batch_size], model.timesteps))[-1]["t_in"].to(dtype)
                      for i in range(0, len(x), batch_size)])


def readout_loss(t_in: torch.Tensor, sign_w: torch.Tensor, theta: torch.Tensor, labels: torch.Tensor, steps: int,
                 scale: float) -> torch.Tensor:
    """The anytime readout's loss: the mean over samples b, steps t and output neurons c of the logistic loss of
    ``(V_c(t) - theta_c) / scale`` against ``[c == y_b]``, where ``V_c(t) = sum_{i: t_i <= t} w_ci`` is the output
    membrane (:func:`membrane_of`, before any reset) from input spike steps ``t_in`` (B, n_in) through ``sign_w``
    (n_out, n_in). Its minimum asks V_c > theta_c (the spike, the decision) exactly where the evidence by step t
    says "class c" with confidence, whichever the step; ``scale``: membrane steps per unit of log odds."""
    z = (membrane_of(t_in.long(), sign_w, steps) - theta) / scale                      # (B, T, n_out)
    y = F.one_hot(labels, sign_w.shape[0]).float()[:, None, :].expand_as(z)
    return F.binary_cross_entropy_with_logits(z, y)


def fit_output(t_in: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, theta0: torch.Tensor, steps: int, epochs: int,
               scale: float, lr: float, epoch_seed: Callable[[int], int], binary: bool = True):
    """The optimisation of :func:`fit_readout`: an output layer's weights (n_out, n_in) and thresholds (n_out,), from
    ``w0`` / ``theta0``, fitted to :func:`readout_loss` on input spike steps ``t_in`` and labels ``y``: Adam (the
    weights at ``lr``, the thresholds at ``READOUT_THRESHOLD_LR``), cosine decay, batches of ``READOUT_BATCH`` in an
    order drawn per epoch from ``epoch_seed(epoch)``. ``binary``: the forward pass uses sign(W) with the
    straight-through gradient to latent weights clipped to [-1, 1]; else the weights are real-valued
    (``bench/output_width.py``). Returns the weights and thresholds (real), detached."""
    w, theta = nn.Parameter(w0.detach().clone()), nn.Parameter(theta0.detach().clone())
    optimizer = torch.optim.Adam([{"params": [w], "lr": lr}, {"params": [theta], "lr": READOUT_THRESHOLD_LR}])
    per_epoch = math.ceil(len(y) / READOUT_BATCH)
    total = epochs * per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 0.5 * (1 + math.cos(math.pi * k / total)))
    for epoch in range(epochs):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch_seed(epoch))).to(t_in.device)
        for b in range(per_epoch):
            idx = order[b * READOUT_BATCH:(b + 1) * READOUT_BATCH]
            # binary: the forward pass's sign(W), the gradient to W
            w_used = w + (signs(w) - w).detach() if binary else w
            loss = readout_loss(t_in[idx], w_used, theta, y[idx], steps, scale)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            if binary:
                with torch.no_grad():
                    w.clamp_(-1, 1)
    return w.detach(), theta.detach()


def fit_readout(model: BSTDGNet, x: torch.Tensor, y: torch.Tensor, epochs: int, scale: float, lr: float,
                seed: int = 0, log: Callable[[str], None] | None = None) -> dict:
    """The anytime readout fit (``bstdg_readout_epochs``; docs/training.md "The anytime readout"): the output
    layer's latent weights and integer thresholds are fitted again, every other layer frozen, to :func:`readout_loss`
    on the images ``x`` (uint8) and labels ``y``. The BS4NN targets ask for an early correct spike relative to the
    other classes; this loss asks each output neuron to cross its threshold when, and only when, the evidence that
    has arrived names its class, so that a decision budget keeps the confident samples early and leaves the
    doubtful ones to later steps or to the fallback. Sign weights in the forward pass, the straight-through gradient
    to the latent weights (clipped to [-1, 1], Adam at ``lr``, cosine decay, batches of ``READOUT_BATCH`` in an order
    drawn from ``seed``); the thresholds real (Adam at ``READOUT_THRESHOLD_LR``) from the integer ones, rounded into
    the layer's offsets at the end and kept in 1..2^(M-1)-1. Returns ``{"epochs", "scale", "loss_before",
    "loss_after"}`` (the loss on all of ``x``, with the integer thresholds)."""
    check_int("epochs", epochs, 1)
    check_positive("scale", scale, "a positive number of membrane steps")
    check_positive("lr", lr, "a positive learning rate")
    check_intensities(x, model.sizes[0])
    check_labels(y.cpu().numpy() if torch.is_tensor(y) else y, len(x), model.sizes[-1])
    log = log or (lambda msg: None)
    steps, last = model.timesteps, len(model.weights) - 1
    y = torch.as_tensor(y, device=x.device).to(torch.int64)
    t_in = output_inputs(model, x)
    hi = contract.membrane_range(model.membrane_bits)[1]

    @torch.no_grad()
    def full_loss() -> float:
        sign_w, theta = signs(model.weights[last]), model.integer_thresholds()[last].float()
        total = sum(float(readout_loss(t_in[i:i + 1000], sign_w, theta, y[i:i + 1000], steps, scale))
                    * len(y[i:i + 1000]) for i in range(0, len(y), 1000))
        return total / len(y)

    before = full_loss()
    w, theta = fit_output(t_in, y, model.weights[last].detach(), model.integer_thresholds()[last].float(), steps,
                          epochs, scale, lr, lambda epoch: _mix(seed, epoch, 7))
    with torch.no_grad():
        model.weights[last].copy_(w)
        _set_thresholds(model, last, theta.round().clamp(1, hi).to(torch.int64))
    result = {"epochs": epochs, "scale": scale, "loss_before": before, "loss_after": full_loss()}
    log(f"anytime readout fit ({epochs} epochs, scale {scale:g}): loss {before:.4f} -> {result['loss_after']:.4f}, "
        f"output thresholds {model.threshold_summary()[-1]}")
    return result


# ---------------------------------------------------------------------------------------------------------------
# The local search on the last hidden layer

SEARCH_OFFSETS = (-3, -2, -1, 1, 2, 3)   # the threshold moves a sweep tries on each hidden neuron (steps of V)
SEARCH_CANDIDATES = 16                   # the weight flips it tries on each hidden neuron: the gradient's best
SEARCH_CHUNK = 2000                      # samples per chunk of the membranes and the gradient


class _Search:
    """The exact state of :func:`search_hidden`: the last hidden layer's membranes ``v`` (N, T, n) int16, its spike
    steps ``t`` (N, n), the output membranes ``v_out`` (N, T, n_out) and each sample's summed readout loss ``per``
    (N,), kept equal to a fresh forward pass through every accepted move."""

    def __init__(self, model: BSTDGNet, t_in: torch.Tensor, labels: torch.Tensor, scale: float):
        self.steps, self.scale = model.timesteps, scale
        layer = len(model.weights) - 2
        self.t_in = t_in.long()
        self.sign = signs(model.weights[layer])
        self.theta = model.integer_thresholds()[layer].clone()
        self.sign_out = signs(model.weights[layer + 1])
        self.theta_out = model.integer_thresholds()[layer + 1].float()
        self.target = F.one_hot(labels, self.sign_out.shape[0]).float()[:, None, :]
        # |V| <= n_in <= 2^(M-1)-1 <= 32767 (BSTDGNet checks it): int16 holds it exactly
        self.v = torch.cat([membrane_of(self.t_in[i:i + SEARCH_CHUNK], self.sign, self.steps).to(torch.int16)
                            for i in range(0, len(labels), SEARCH_CHUNK)])
        # (first_spikes' running count is int64: chunks keep it at 2000 x T x n)
        self.t = torch.cat([first_spikes(self.v[i:i + SEARCH_CHUNK], self.theta)
                            for i in range(0, len(labels), SEARCH_CHUNK)])
        self.v_out = membrane_of(self.t, self.sign_out, self.steps)
        self.per = self.losses(self.v_out, self.target)
        self.ar = torch.arange(self.steps, device=t_in.device)

    def losses(self, v_out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per sample, the readout loss summed over steps and output neurons (:func:`readout_loss` x T x n_out)."""
        z = (v_out - self.theta_out) / self.scale
        return F.binary_cross_entropy_with_logits(z, target.expand_as(z), reduction="none").sum((1, 2))

    def mean_loss(self) -> float:
        return float(self.per.sum()) / self.per.numel() / self.steps / self.v_out.shape[2]

    def trial(self, j: int, t_new: torch.Tensor):
        """Hidden neuron j spiking at ``t_new`` (N,) instead: (change of the summed loss, the rows that change, their
        output membranes and losses)."""
        rows = (t_new != self.t[:, j]).nonzero()[:, 0]
        if len(rows) == 0:
            return 0.0, rows, None, None
        moved = (self.ar >= t_new[rows, None]).float() - (self.ar >= self.t[rows, j, None]).float()    # (r, T)
        v_out = self.v_out[rows] + moved[:, :, None] * self.sign_out[:, j]
        per = self.losses(v_out, self.target[rows])
        return float((per - self.per[rows]).sum()), rows, v_out, per

    def accept(self, j: int, t_new: torch.Tensor, rows, v_out, per) -> None:
        self.t[:, j] = t_new
        self.v_out[rows] = v_out
        self.per[rows] = per

    def flip_scores(self) -> torch.Tensor:
        """(n, n_in): the first-order fall of the loss from flipping each weight, from the spike-time gradient of
        the loss (the BSTDG rule, :func:`gradients`, with the readout loss's error on each hidden spike: a spike one
        step later takes sign_out[c, j] from V_c at its step, so delta_j = sum_c dL/dV_c(t_j) sign_out[c, j]);
        > 0: the flip is predicted to lower it."""
        grad = torch.zeros_like(self.sign)
        for i in range(0, len(self.per), SEARCH_CHUNK):
            sl = slice(i, i + SEARCH_CHUNK)
            z = (self.v_out[sl] - self.theta_out) / self.scale
            g = (torch.sigmoid(z) - self.target[sl]) @ self.sign_out                      # (B, T, n)
            delta = g.gather(1, self.t[sl].clamp(max=self.steps - 1)[:, None, :])[:, 0]  # (B, n)
            grad += causal_grad(delta, self.t[sl], self.t_in[sl], self.steps)[0]
        return grad * self.sign


@torch.no_grad()
def search_hidden(model: BSTDGNet, x: torch.Tensor, y: torch.Tensor, sweeps: int, scale: float, seed: int = 0,
                  log: Callable[[str], None] | None = None) -> dict:
    """The local search (``bstdg_search_sweeps``; docs/training.md "The local search"): the last hidden layer's
    integer thresholds and sign weights moved, one hidden neuron at a time, to lower :func:`readout_loss` (at
    ``scale``) of the exact integer network on the images ``x`` (uint8) and labels ``y``, every other layer fixed.
    Each sweep visits the hidden neurons in an order drawn from ``seed``, twice: once trying every threshold move in
    ``SEARCH_OFFSETS`` (kept in 1..2^(M-1)-1), once trying the ``SEARCH_CANDIDATES`` weight flips that the
    spike-time gradient ranks best (:meth:`_Search.flip_scores`, taken afresh each sweep). Each try is scored exactly
    (the neuron's new spike steps, the output membranes they change, their loss) and the best of a neuron's tries is
    kept only when it lowers the loss, so the loss on ``x`` never rises.

    Why not gradient steps: a step on the latent weights flips hundreds of signs that the gradient moves together,
    and at the readout fit's optimum the loss rises along the gradient as well as against it; one exactly scored move
    at a time does not. A flipped weight's latent value changes sign (0 becomes +1e-3). Memory: N x T x n int16
    membranes, about 2.3 GB for 60,000 images, T = 32 and 600 hidden neurons. Returns ``{"sweeps", "samples",
    "loss_before", "loss_after", "threshold_moves", "flips"}``."""
    check_int("sweeps", sweeps, 1)
    check_positive("scale", scale, "a positive number of membrane steps")
    check_intensities(x, model.sizes[0])
    check_labels(y.cpu().numpy() if torch.is_tensor(y) else y, len(x), model.sizes[-1])
    if len(model.weights) < 2:
        raise ValueError("the local search moves the last hidden layer: this network has no hidden layer")
    log = log or (lambda msg: None)
    layer, steps = len(model.weights) - 2, model.timesteps
    hi = contract.membrane_range(model.membrane_bits)[1]
    y = torch.as_tensor(y, device=x.device).to(torch.int64)
    t_in = torch.cat([model.run_times(input_times(x[i:i + SEARCH_CHUNK], steps))[layer]["t_in"]
                      for i in range(0, len(x), SEARCH_CHUNK)])
    st = _Search(model, t_in, y, scale)
    before = st.mean_loss()
    order = torch.Generator().manual_seed(_mix(seed, 11))
    moves, flips = 0, 0
    for sweep in range(sweeps):
        for j in torch.randperm(len(st.theta), generator=order).tolist():
            best = (0.0, None)
            for d in SEARCH_OFFSETS:
                if 1 <= int(st.theta[j]) + d <= hi:
                    t_new = first_spikes(st.v[:, :, j:j + 1], st.theta[j] + d)[:, 0]
                    gain, *rest = st.trial(j, t_new)
                    if gain < best[0]:
                        best = (gain, (d, t_new, *rest))
            if best[1] is not None:
                d, t_new, *rest = best[1]
                st.theta[j] += d
                st.accept(j, t_new, *rest)
                moves += 1
        score = st.flip_scores()
        for j in torch.randperm(len(st.theta), generator=order).tolist():
            cand = torch.topk(score[j], min(SEARCH_CANDIDATES, score.shape[1])).indices
            cand = cand[score[j, cand] > 0]
            if len(cand) == 0:
                continue
            # a flip of w_ji moves V_j(t) by -2 sign_ji from the input's spike step t_i on
            change = (st.ar >= st.t_in[:, cand].t()[:, :, None]).to(torch.int16) * (-2 * st.sign[j, cand]).to(
                torch.int16)[:, None, None]                                           # (k, N, T)
            v_new = st.v[None, :, :, j] + change
            t_new = first_spikes(v_new.permute(1, 2, 0), st.theta[j]).t()            # (k, N)
            best = (0.0, None)
            for q in range(len(cand)):
                gain, *rest = st.trial(j, t_new[q])
                if gain < best[0]:
                    best = (gain, (q, *rest))
            if best[1] is not None:
                q, *rest = best[1]
                i = int(cand[q])
                st.sign[j, i] = -st.sign[j, i]
                st.v[:, :, j] = v_new[q]
                st.accept(j, t_new[q], *rest)
                flips += 1
                w = model.weights[layer]
                w[j, i] = -w[j, i] if w[j, i] != 0 else 1e-3
        log(f"local search sweep {sweep + 1}/{sweeps}: loss {st.mean_loss():.4f}, {moves} threshold moves and "
            f"{flips} weight flips so far")
    _set_thresholds(model, layer, st.theta)
    result = {"sweeps": sweeps, "samples": len(y), "loss_before": before, "loss_after": st.mean_loss(),
              "threshold_moves": moves, "flips": flips}
    log(f"local search ({sweeps} sweeps on {len(y)} samples): loss {before:.4f} -> {result['loss_after']:.4f}, "
        f"{moves} threshold moves, {flips} weight flips, hidden thresholds {model.threshold_summary()[layer]}")
    return result


# ---------------------------------------------------------------------------------------------------------------
# Threshold calibration

HIDDEN_OFFSETS = range(-4, 9)       # the offsets calibrate tries on a hidden layer's thresholds (whole steps of V)
OUTPUT_SPAN = 16                    # and on each output neuron's: -16..16 around its threshold, per round
OUTPUT_ROUNDS = 4                   # coordinate-descent rounds over the output neurons at most


def _set_thresholds(model: BSTDGNet, layer: int, thresholds: torch.Tensor) -> None:
    """Make layer ``layer``'s integer thresholds exactly ``thresholds`` (each in 1..2^(M-1)-1) through its offsets."""
    floor = torch.floor(model.theta()[layer]).to(torch.int64)
    model.threshold_offsets[layer].copy_(thresholds.to(floor) - floor.to(thresholds.device))


def _step_hist(first: torch.Tensor, steps: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Histogram (T + 1,) of decision steps 0..T (T: the fallback), of the samples in ``mask`` (all: None)."""
    return torch.bincount((first if mask is None else first[mask]).cpu(), minlength=steps + 1)


def _median_step(hist: torch.Tensor) -> float:
    """The median decision step (``np.median``'s: the mean of the two middle values for an even count) from a
    histogram of decision steps 0..T (T: the fallback)."""
    n = int(hist.sum())
    cum = hist.cumsum(0)
    lo = int((cum > (n - 1) // 2).nonzero()[0])
    hi = int((cum > n // 2).nonzero()[0])
    return (lo + hi) / 2


def _scan_outputs(v: torch.Tensor, labels: torch.Tensor, theta: torch.Tensor, shifts, steps: int,
                  mask: torch.Tensor | None = None):
    """For each shift u of all output thresholds (``theta + u``): (correct predictions, histogram of decision steps
    0..T of the samples in ``mask``) of the output membranes ``v`` (B, T, n_out). Returns tensors (U,) and
    (U, T + 1).

    All shifts from one pass: with m_c(t) = max_{t' <= t} (V_c(t') - theta_c), neuron c has fired by step t under
    shift u iff m_c(t) > u, so the decision step is the number of steps with max_c m_c(t) <= u, and the class the
    lowest c with m_c > u there: :func:`readout` of :func:`first_spikes`, without a pass over (B, T, n_out) per u."""
    correct = torch.zeros(len(shifts), dtype=torch.int64)
    hist = torch.zeros(len(shifts), steps + 1, dtype=torch.int64)
    m = torch.cummax(v - torch.as_tensor(theta).to(v), 1).values            # (B, T, n_out)
    peak = m.amax(2)                                                         # (B, T), nondecreasing in t
    fallback = torch.argmax(v[:, -1], 1)
    for k, u in enumerate(shifts):
        first = (peak <= u).sum(1)                                           # (B,): T when nothing fires
        at = m.gather(1, first.clamp(max=steps - 1)[:, None, None].expand(-1, 1, m.shape[2]))[:, 0]
        pred = torch.where(first < steps, torch.argmax((at > u).to(torch.uint8), 1), fallback)
        correct[k] = int((pred == labels).sum())
        hist[k] = _step_hist(first, steps, mask)
    return correct, hist


@torch.no_grad()
def calibrate(model: BSTDGNet, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000,
              log: Callable[[str], None] | None = None, max_median_step: int | None = None,
              budget_x: torch.Tensor | None = None) -> dict:
    """Threshold calibration (``bstdg_calibrate``, on with ``--method bstdg``): integer offsets on the trained
    thresholds, chosen for the number of correct predictions of the exact integer network on ``x`` (uint8 images,
    the training split) and ``y``:

    1. each hidden layer in turn: one offset d for all its neurons, the one with the most correct predictions (ties:
       the smallest |d|, then the lower threshold) among d in -4..8 and, while the best lies at the edge of those
       tried, the next 13 out that way (thresholds kept in 1..2^(M-1)-1);
    2. the output layer: one offset per neuron, by coordinate descent (neurons 0..n-1, each over -16..16 around its
       current threshold, kept when it strictly raises the count, the smallest |d| first), until a round changes
       nothing (at most 4 rounds).

    With a decision budget ``max_median_step`` L (``bstdg_decision_step``): the calibration above when its median
    decision step on ``x`` is <= L (a sample without an output spike decides at T). Otherwise only thresholds whose
    median is <= L count: a hidden offset d is scored with the best such shift u of all output thresholds (every u
    from the lowest legal one to +16), the chosen u is applied with it, and an output move is kept only if the
    median stays <= L. When no offset tried reaches L, lower hidden offsets are tried while any are left; a budget
    no thresholds reach is refused (ValueError). ``budget_x`` (uint8 images, e.g. the held-out ``--val-samples``):
    the budget and the reported medians are on these images instead of ``x`` (the network decides later on images
    it was not trained on: about a step at the median); the count of correct predictions stays on ``x``.

    Why: the spike-time loss rewards early spikes (the lead, the margin), not the readout's accuracy, and the threshold
    factors it trains settle lower than the accuracy wants (docs/training.md "Threshold calibration"). The offsets
    live in the model (``threshold_offsets``) and so in its integer thresholds, the artifact's. Returns
    ``{"samples", "correct_before", "correct_after", "median_step_before", "median_step_after", "max_median_step",
    "median_samples", "median_on", "offsets"}`` (offsets: per layer, one int for a hidden layer, a list for the output
    layer; the medians on ``budget_x`` ("held-out"), else on ``x`` ("training"); ``median_samples``: how many images
    they are on)."""
    check_int("batch_size", batch_size)
    check_intensities(x, model.sizes[0])
    if len(x) == 0:
        raise ValueError("calibrate needs at least one sample")
    check_labels(y.cpu().numpy() if torch.is_tensor(y) else y, len(x), model.sizes[-1])
    steps, hi = model.timesteps, contract.membrane_range(model.membrane_bits)[1]
    if max_median_step is not None:
        check_int("max_median_step", max_median_step, 0, steps - 1, f"a decision step of T = {steps}")
    y = torch.as_tensor(y, device=x.device).to(torch.int64)
    n_scored = len(y)
    in_budget = None            # all samples count in the medians
    if budget_x is not None:    # appended with label -1 (never correct), their decision steps alone in the medians
        check_intensities(budget_x, model.sizes[0])
        if len(budget_x) == 0:
            raise ValueError("budget_x needs at least one sample (or None: the budget on x)")
        x = torch.cat([x, torch.as_tensor(budget_x, device=x.device).to(x.dtype)])
        y = torch.cat([y, torch.full((len(budget_x),), -1, dtype=torch.int64, device=x.device)])
        in_budget = torch.arange(len(y), device=x.device) >= n_scored
    n_median = len(y) - n_scored if in_budget is not None else n_scored
    log = log or (lambda msg: None)
    budget = max_median_step is not None
    if budget:          # the unconstrained optimum, when it meets the budget: a looser budget never scores less
        free_model = copy.deepcopy(model)
        free = calibrate(free_model, x[:n_scored], y[:n_scored], batch_size, budget_x=budget_x)
        if free["median_step_after"] <= max_median_step:
            for off, f in zip(model.threshold_offsets, free_model.threshold_offsets):
                off.copy_(f)
            result = {**free, "max_median_step": max_median_step}
            log(_calibration_line(result, model, ": met without it"))
            return result
    sign_w = [signs(w.detach()) for w in model.weights]                  # for the layers after a candidate
    chunks = [(x[i:i + batch_size], y[i:i + batch_size], None if in_budget is None else in_budget[i:i + batch_size])
              for i in range(0, len(y), batch_size)]
    last = len(model.weights) - 1
    fits = (lambda h: _median_step(h) <= max_median_step) if budget else (lambda h: True)
    # the output shifts a candidate is scored with: 0 alone without a budget, else every legal one up to +16
    shifts = lambda th: list(range(1 - int(th.min()), min(OUTPUT_SPAN, hi - int(th.max())) + 1)) if budget else [0]
    before = None
    membrane = lambda xb, ths, layer: model.run_times(input_times(xb, steps), ths)[layer]["v"]
    for li in range(last):
        ths = model.integer_thresholds()
        lo_d, hi_d = 1 - int(ths[li].min()), hi - int(ths[li].max())       # thresholds stay in 1..2^(M-1)-1
        us = shifts(ths[last])
        scored: dict[int, tuple[int, int]] = {}                            # d -> (correct, output shift u); -1: none
        window = [d for d in HIDDEN_OFFSETS if lo_d <= d <= hi_d]
        while window:
            correct = torch.zeros(len(window), len(us), dtype=torch.int64)
            hist = torch.zeros(len(window), len(us), steps + 1, dtype=torch.int64)
            for xb, yb, mb in chunks:
                v = membrane(xb, ths, li)
                for k, d in enumerate(window):
                    t = first_spikes(v, ths[li] + d)
                    for lj in range(li + 1, last):
                        t = first_spikes(membrane_of(t, sign_w[lj], steps), ths[lj])
                    v_out = membrane_of(t, sign_w[last], steps)
                    c, h = _scan_outputs(v_out, yb, ths[last], us, steps, mb)
                    correct[k] += c
                    hist[k] += h
            for k, d in enumerate(window):
                ok = [i for i in range(len(us)) if fits(hist[k, i])]
                i = max(ok, key=lambda i: (int(correct[k, i]), -abs(us[i]))) if ok else None
                scored[d] = (int(correct[k, i]), us[i]) if i is not None else (-1, 0)
                if d == 0 and before is None:
                    before, before_hist = int(correct[k, us.index(0)]), hist[k, us.index(0)]
            best = max(scored, key=lambda d: (scored[d][0], -abs(d), -d))
            if scored[best][0] < 0:              # nothing tried meets the budget: lower thresholds decide earlier
                window = list(range(max(min(scored) - len(HIDDEN_OFFSETS), lo_d), min(scored)))
                if not window:
                    raise ValueError(f"no thresholds give a median decision step <= {max_median_step} on these "
                                     f"{n_median} samples (hidden layer {li}: offsets {min(scored)}.."
                                     f"{max(scored)}, each with the output thresholds shifted by {us[0]}..{us[-1]})")
            # the best at the edge of what was tried: try the next offsets out that way
            elif best == max(scored) and best < hi_d:
                window = list(range(best + 1, min(best + len(HIDDEN_OFFSETS), hi_d) + 1))
            elif best == min(scored) and best > lo_d:
                window = list(range(max(best - len(HIDDEN_OFFSETS), lo_d), best))
            else:
                window = []
        _set_thresholds(model, li, ths[li] + best)
        if scored[best][1]:
            _set_thresholds(model, last, ths[last] + scored[best][1])

    ths = model.integer_thresholds()
    v = torch.cat([membrane(xb, ths, last).to(torch.int32) for xb, _, _ in chunks])  # (N, T, n_out): |V| <= n_in
    labels, v_last = y, v[:, -1]
    theta = ths[last].clone()
    if last == 0:                                # no hidden layer: the budget's start is the best output shift
        us = shifts(theta)
        correct, hist = _scan_outputs(v, labels, theta, us, steps, in_budget)
        before, before_hist = int(correct[us.index(0)]), hist[us.index(0)]
        ok = [i for i in range(len(us)) if fits(hist[i])]
        if not ok:
            raise ValueError(f"no thresholds give a median decision step <= {max_median_step} on these {n_median} "
                             f"samples (the output thresholds shifted by {us[0]}..{us[-1]})")
        theta += us[max(ok, key=lambda i: (int(correct[i]), -abs(us[i])))]
    t = first_spikes(v, theta)
    decided = lambda t_out: readout(t_out, v_last, steps)
    pred, first = decided(t)
    now = int((pred == labels).sum())
    order = sorted((d for d in range(-OUTPUT_SPAN, OUTPUT_SPAN + 1) if d), key=lambda d: (abs(d), d))
    for _ in range(OUTPUT_ROUNDS):
        changed = False
        for j in range(len(theta)):
            pick = None
            for d in order:
                if not 1 <= int(theta[j]) + d <= hi:
                    continue
                trial = t.clone()
                trial[:, j] = first_spikes(v[:, :, j], theta[j] + d)
                pred, first = decided(trial)
                c = int((pred == labels).sum())
                if c > now and fits(_step_hist(first, steps, in_budget)):
                    now, pick = c, (d, trial)
            if pick is not None:
                theta[j] += pick[0]
                t = pick[1]
                changed = True
        if not changed:
            break
    _set_thresholds(model, last, theta)
    median_after = _median_step(_step_hist(decided(t)[1], steps, in_budget))
    offsets = [int(o[0]) if li < last else o.tolist() for li, o in enumerate(model.threshold_offsets)]
    result = {"samples": n_scored, "correct_before": before, "correct_after": now,
              "median_step_before": _median_step(before_hist), "median_step_after": median_after,
              "max_median_step": max_median_step, "median_samples": n_median,
              "median_on": "training" if in_budget is None else "held-out", "offsets": offsets}
    log(_calibration_line(result, model))
    return result


def _calibration_line(cal: dict, model: BSTDGNet, note: str = "") -> str:
    """The log line of a :func:`calibrate` result (``note``: after the budget, why it holds)."""
    n, budget = cal["samples"], cal["max_median_step"]
    where = f" on {cal['median_samples']} held-out samples" if cal["median_on"] == "held-out" else ""
    return (f"threshold calibration on {n} training samples: {100 * cal['correct_before'] / n:.2f}% -> "
            f"{100 * cal['correct_after'] / n:.2f}%, median decision step {cal['median_step_after']:g}{where}"
            f"{'' if budget is None else f' (budget {budget}{note})'}, thresholds {model.threshold_summary()}")


def first_ties(t_out: torch.Tensor, labels: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, 2) bool per sample, from the output spike steps (B, n_out) (T: none): [tied, correct_tied]. ``tied``: an
    output neuron fired and more than one fired in that first step (the "first" readout takes the lowest index among
    them); ``correct_tied``: tied, and the correct class is among them."""
    first = t_out.min(1, keepdim=True).values
    at_first = t_out == first
    tied = (first[:, 0] < steps) & (at_first.sum(1) > 1)
    correct = at_first.gather(1, labels.to(t_out.device)[:, None])[:, 0]
    return torch.stack([tied, tied & correct], 1)


def tie_metrics(pred: np.ndarray, labels: np.ndarray, tied: np.ndarray, correct_tied: np.ndarray) -> dict:
    """How often the first output step is a tie, the accuracy on those samples, and the accuracy that an oracle
    tie-break would reach (every tie that holds the correct class counted as correct): the most a better tie-break
    rule could add to the "first" readout."""
    n = max(1, len(labels))
    right = pred == labels
    return {"tie_rate": float(tied.sum()) / n, "tie_count": int(tied.sum()),
            "tie_accuracy": float(right[tied].mean()) if tied.any() else float("nan"),
            "tie_oracle_accuracy": float((right | correct_tied).sum()) / n}


def decision_metrics(first: np.ndarray, steps: int) -> dict:
    """Fallback rate and decision steps; a sample without output spike decides at step T (all T steps run)."""
    fallback = first >= steps
    decided = first[~fallback]
    return {"fallback_rate": float(fallback.mean()) if len(first) else 0.0, "fallback_count": int(fallback.sum()),
            "median_decision_step": float(np.median(first)) if len(first) else float("nan"),
            "mean_decision_step": float(first.mean()) if len(first) else float("nan"),
            "median_decision_step_decided": float(np.median(decided)) if len(decided) else float("nan")}


# ---------------------------------------------------------------------------------------------------------------
# The loop


def fit(cfg, out=None, checkpoint=None, resume: bool = False, progress: bool = True,
        log: Callable[[str], None] | None = None, on_epoch_end=None):
    """As :func:`bsnn_hw.train.trainer.fit`, for ``cfg.method == "bstdg"``."""
    from .trainer import _Progress, check_run, finetune_schedule, resume_state, save_checkpoint, setup_run
    check_run(cfg, METHOD, out, checkpoint, resume, log, on_epoch_end)
    cfg.validate()
    log = log or (lambda msg: None)
    started = time.perf_counter()
    device, _, (xtr, ytr, xte, yte), (xtr_t, ytr_t, xte_t, yte_t), n_classes = setup_run(cfg)
    sizes = [xtr.shape[1], *cfg.hidden, n_classes]
    model = BSTDGNet(sizes, cfg.timesteps, cfg.membrane_bits, cfg.threshold_init, cfg.scale == "neuron").to(device)
    steps_per_epoch = math.ceil(len(ytr) / cfg.batch_size)
    th_lr = cfg.lr if cfg.bstdg_threshold_lr is None else cfg.bstdg_threshold_lr
    optimizer = torch.optim.Adam([{"params": list(model.weights), "lr": cfg.lr, "weight_decay": cfg.weight_decay},
                                  {"params": model.factor_params(), "lr": th_lr}])
    ft_lr = cfg.bstdg_finetune_lr if cfg.bstdg_finetune_lr is not None else cfg.lr / 5
    # the fine-tune: the weights on a fresh cosine from ft_lr, the threshold factors (group 1) frozen
    scheduler = finetune_schedule(optimizer, cfg.epochs * steps_per_epoch, cfg.bstdg_finetune * steps_per_epoch,
                                  ft_lr / cfg.lr, frozen_groups=(1,))
    if checkpoint is None and out is not None:
        checkpoint = Path(str(out) + ".ckpt")
    history, start_epoch = resume_state(checkpoint if resume else None, cfg, model, optimizer, scheduler, log)
    for off in model.threshold_offsets:   # the epochs train on the thresholds as trained (a checkpoint holds those)
        off.zero_()

    bar = _Progress(progress)
    with bar:
        for epoch in range(start_epoch, cfg.epochs + cfg.bstdg_finetune):
            t0 = time.perf_counter()
            finetune = epoch >= cfg.epochs
            if epoch == cfg.epochs:
                optimizer.state.clear()           # the fine-tune starts Adam afresh, as --init would
            order = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(_mix(cfg.seed, epoch, 1)))
            name = f"fine-tune {epoch + 1 - cfg.epochs}/{cfg.bstdg_finetune}" if finetune else \
                f"epoch {epoch + 1}/{cfg.epochs}"
            task = bar.start(name, steps_per_epoch)
            loss_sum, correct, seen = 0.0, 0, 0
            for b in range(steps_per_epoch):
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size].to(device)
                labels = ytr_t[idx]
                rec = model.run_times(input_times(xtr_t[idx], cfg.timesteps))
                pred, _ = model.predict(rec)
                model.track_rates(rec)
                loss, grads, g_factor, g_neuron = gradients(model, rec, labels, cfg.bstdg_gamma, cfg.bstdg_deadline,
                                                            cfg.bstdg_backward, cfg.bstdg_revive, cfg.bstdg_min_rate,
                                                            cfg.bstdg_lead, cfg.bstdg_timing,
                                                            cfg.bstdg_pull if finetune else 0.0)
                for w, g in zip(model.weights, grads):
                    w.grad = g
                model.log_factor.grad = g_factor
                for p, g in zip(model.neuron_log_factor, g_neuron):
                    p.grad = g
                optimizer.step()
                scheduler.step()
                model.clip_()
                loss_sum += loss * len(idx)
                correct += int((pred == labels).sum())
                seen += len(idx)
                bar.advance(task, f"loss {loss_sum / seen:.4f}  acc {100 * correct / seen:.2f}%")
            train_time = time.perf_counter() - t0
            ev = evaluate(model, xte_t, yte_t)
            dm = decision_metrics(ev["first"], cfg.timesteps)
            history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "train_accuracy": correct / seen,
                            "test_accuracy": ev["accuracy"], "epoch_seconds": train_time,
                            "lr": scheduler.get_last_lr()[0], "thresholds": model.threshold_summary(),
                            "finetune": finetune,
                            "fallback_rate": dm["fallback_rate"], "median_decision_step": dm["median_decision_step"],
                            "hidden_spikes": ev["hidden_spikes"]})
            bar.finish(task, f"loss {loss_sum / seen:.4f}  train {100 * correct / seen:.2f}%  "
                             f"test {100 * ev['accuracy']:.2f}%  fallback {100 * dm['fallback_rate']:.1f}%  "
                             f"median step {dm['median_decision_step']:g}  {train_time:.1f}s")
            if not progress:
                log(f"{name}: loss {loss_sum / seen:.4f}  train {100 * correct / seen:.2f}%  "
                    f"test {100 * ev['accuracy']:.2f}%  fallback {100 * dm['fallback_rate']:.1f}%  median step "
                    f"{dm['median_decision_step']:g}  thresholds {model.threshold_summary()}  {train_time:.1f}s")
            if checkpoint is not None:
                save_checkpoint(checkpoint, cfg, model, optimizer, scheduler, epoch + 1, history)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, history[-1])

    # The export is refitted and calibrated, the checkpoint is not: a resumed finished run, or from_checkpoint, does
    # both the same way from the same state.
    readout, search, calibration = _after_training(cfg, model, xtr_t, ytr_t, device, log)
    return _finish(cfg, model, history, sizes, len(ytr), xte_t, yte, device, started, out, checkpoint, log,
                   calibration, readout, search)


def _after_training(cfg, model, x, y, device, log) -> tuple[dict | None, dict | None, dict | None]:
    """The anytime readout fit (``bstdg_readout_epochs``), the local search (``bstdg_search_sweeps``, on a seeded
    draw of ``bstdg_search_samples`` training samples), then the threshold calibration (``bstdg_calibrate``), on
    the training split: (readout result, search result, calibration result), None for a step not asked for."""
    readout = fit_readout(model, x, y, cfg.bstdg_readout_epochs, cfg.bstdg_readout_scale, cfg.lr, cfg.seed,
                          log) if cfg.bstdg_readout_epochs else None
    search = None
    if cfg.bstdg_search_sweeps:
        pick = torch.randperm(len(y), generator=torch.Generator().manual_seed(_mix(cfg.seed, 13)))
        pick = pick[:cfg.bstdg_search_samples].to(x.device)
        search = search_hidden(model, x[pick], y[pick], cfg.bstdg_search_sweeps, cfg.bstdg_readout_scale, cfg.seed,
                               log)
    calibration = calibrate(model, x, y, log=log, max_median_step=cfg.bstdg_decision_step,
                            budget_x=_held_out(cfg, device)) if cfg.bstdg_calibrate else None
    return readout, search, calibration


def _held_out(cfg, device) -> torch.Tensor | None:
    """The held-out images (``--val-samples``, never trained on), on which the calibration's decision budget and
    medians count; None without them."""
    if not cfg.val_samples:
        return None
    from .trainer import validation_split
    return torch.from_numpy(validation_split(cfg)[2]).to(device)


def _finish(cfg, model, history, sizes, n_train, xte_t, yte, device, started, out, checkpoint, log,
            calibration=None, readout=None, search=None):
    """Hardware-exact evaluation of the trained model, metrics, export (and, with ``out``, the artifact and curves)."""
    from .model import integer_simulate
    from .trainer import TrainResult, dataset_title, save_outputs
    yte_t = torch.from_numpy(yte).to(device)
    real = evaluate(model, xte_t, yte_t, real=True)
    net = to_network(model, seed=cfg.eval_seed)
    # The integer evaluation: the exported network run by the trainer's int64 contract (model.integer_simulate).
    preds, firsts = [], []
    for i in range(0, len(yte), 1000):
        spikes = latency(xte_t[i:i + 1000], cfg.timesteps).bool()
        p, _, _ = integer_simulate(net, spikes)
        preds.append(p.cpu())
    int_pred = torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)
    int_acc = float((int_pred == yte).mean()) if len(yte) else 0.0
    fast = evaluate(model, xte_t, yte_t)                     # the training forward pass with the integer thresholds
    if not np.array_equal(fast["pred"], int_pred):           # both run the contract: they must agree
        raise RuntimeError("bstdg: the training forward pass and the integer evaluation disagree")
    firsts = fast["first"]
    metrics = {"dataset": cfg.dataset, "method": METHOD, "sizes": sizes, "train_samples": int(n_train),
               "test_samples": int(len(yte)), "float_accuracy": real["accuracy"], "integer_accuracy": int_acc,
               "gap_pp": round((real["accuracy"] - int_acc) * 100, 4), "epochs": cfg.epochs,
               "finetune_epochs": cfg.bstdg_finetune, "device": str(device),
               "epochs_trained": len(history), "precision": "fp32",
               "epoch_seconds": [h["epoch_seconds"] for h in history],
               "thresholds": model.threshold_summary(),
               "threshold_real": [float(t[0]) if not model.per_neuron else [float(t.min()), float(t.median()),
                                                                              float(t.max())] for t in model.theta()],
               "thresholds_clamped": model.clamped(), "hidden_spikes_per_sample": fast["hidden_spikes"],
               "calibration": calibration, "readout": readout, "search": search,
               **decision_metrics(firsts, cfg.timesteps),
               **tie_metrics(fast["pred"], yte, fast["tied"], fast["correct_tied"])}
    if any(metrics["thresholds_clamped"]):
        log(f"note: theta0 / f of {metrics['thresholds_clamped']} neurons (per layer) lies outside 1..2^(M-1)-1; "
            f"trained and exported clamped")
    metrics["train_seconds"] = round(time.perf_counter() - started, 2)
    metrics["float_predictions"] = encode_predictions(real["pred"])
    save_outputs(net, cfg, metrics, history, out, checkpoint,
                 f"BSTDG {dataset_title(cfg.dataset)} {'-'.join(map(str, sizes))}, T={cfg.timesteps}")
    return TrainResult(net, model, metrics, history)


def from_checkpoint(path, out=None, log: Callable[[str], None] | None = None, calibrate_thresholds=None,
                    decision_step="checkpoint", readout_epochs="checkpoint", readout_scale="checkpoint",
                    search_sweeps="checkpoint", search_samples="checkpoint"):
    """Evaluate and export the model of a BSTDG checkpoint (e.g. of a run stopped before its last epoch): the same
    metrics as :func:`fit`, with ``epochs_trained`` saying how many epochs it holds; calibrated first as the run's
    end would be when ``calibrate_thresholds`` is true (None: the checkpoint's ``bstdg_calibrate``; a checkpoint
    from before the setting existed has it off), within the decision budget ``decision_step`` (a step, None for
    none, or "checkpoint": the checkpoint's ``bstdg_decision_step``); before that, the anytime readout fit of
    ``readout_epochs`` epochs at ``readout_scale``, then the local search of ``search_sweeps`` sweeps on
    ``search_samples`` samples (each "checkpoint": the checkpoint's ``bstdg_readout_*`` / ``bstdg_search_*``)."""
    from .trainer import TrainConfig, check_run, load_checkpoint, load_data, load_states, pick_device
    started = time.perf_counter()
    if calibrate_thresholds is not None:
        check_flag("calibrate_thresholds", calibrate_thresholds)
    state = load_checkpoint(path)
    cfg = TrainConfig.from_dict(TrainConfig.own_settings(state["config"])).validate()
    if cfg.method != METHOD:
        raise ValueError(f"{path}: a checkpoint of method {cfg.method!r}, not {METHOD!r}")
    check_run(cfg, METHOD, out, None, False, log, None)
    if calibrate_thresholds is not None:     # the exported config says what was done
        cfg.bstdg_calibrate = calibrate_thresholds
    if decision_step != "checkpoint":
        if decision_step is not None:
            check_int("decision_step", decision_step, 0)
        cfg.bstdg_decision_step = decision_step
    elif not cfg.bstdg_calibrate:            # the checkpoint's budget went with its calibration
        cfg.bstdg_decision_step = None
    if readout_epochs != "checkpoint":
        cfg.bstdg_readout_epochs = readout_epochs
    if readout_scale != "checkpoint":
        cfg.bstdg_readout_scale = readout_scale
    if search_sweeps != "checkpoint":
        cfg.bstdg_search_sweeps = search_sweeps
    if search_samples != "checkpoint":
        cfg.bstdg_search_samples = search_samples
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    xtr, ytr, xte, yte = load_data(cfg)
    sizes = [xtr.shape[1], *cfg.hidden, int(max(ytr.max(), yte.max())) + 1]
    model = BSTDGNet(sizes, cfg.timesteps, cfg.membrane_bits, cfg.threshold_init, cfg.scale == "neuron").to(device)
    load_states(path, "cannot export", (model, state["model"]))
    for off in model.threshold_offsets:      # the thresholds as trained, as at the end of fit's last epoch
        off.zero_()
    log = log or (lambda msg: None)
    readout, search, calibration = _after_training(cfg, model, torch.from_numpy(xtr).to(device),
                                                   torch.from_numpy(ytr).to(device), device, log)
    return _finish(cfg, model, list(state["history"]), sizes, len(ytr), torch.from_numpy(xte).to(device), yte, device,
                   started, out, None, log, calibration, readout, search)
