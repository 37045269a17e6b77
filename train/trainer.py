"""The training loop: data -> contract encoder -> BSNN -> Adam + cosine -> integer evaluation -> .bsnn artifact.

Read top to bottom: :class:`TrainConfig` (every knob, with its default), :func:`fit` (the loop), then the helpers it
calls (evaluation, checkpoints, plot).

Reproducibility: the weights are initialised from ``seed``; each epoch's sample order, rate-encoding seeds and
dropout masks are pure functions of (seed, epoch). So the same config gives the same model, and a run resumed from a
checkpoint (saved after every finished epoch, with its config) continues exactly where it stopped.

What is reported: ``integer_accuracy`` is the exported network run by the trainer's integer evaluation
(:func:`~bsnn_hw.train.model.integer_simulate`, the contract in int64) on the test split, encoded with the network's
own encoder and seed - exactly what the golden model and the hardware compute. ``float_accuracy`` is the torch model
in the arithmetic it was trained with, ``ideal_accuracy`` the same weights with real-valued leak and thresholds;
``gap_pp = (float_accuracy - integer_accuracy) * 100``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import time
from pathlib import Path
from typing import Callable

import torch

from bsnn_hw import contract
from bsnn_hw import data as datasets
from bsnn_hw.checks import check_callable, is_int as _is_int
from bsnn_hw.io import atomic_write, check_output, encode_predictions

from .distributed import Distributed, local_device, world_size
from .encoding import RateEncoder, _mix, latency, training_seeds
from .graphs import TrainStep, device_learning_rates, host_learning_rates, make_adam
from . import layers
from .layers import SumPool
from .model import LIF_MAX_BITS, BSNN, clamped_thresholds, integer_simulate, to_network

CHECKPOINT_FORMAT = "bsnn-train-checkpoint"
CHECKPOINT_VERSION = 1
TRAIN_ENCODINGS = ("rate", "latency", "pixel")
METHODS = ("bsnn", "bstdg", "bisnn", "bntt")
# Settings that may differ between a checkpoint and the run that resumes it: where and how fast it runs, and bstdg's
# readout fit, local search and calibration after the last epoch (they change the export, never the checkpoint's state).
RESUME_FREE = ("device", "threads", "data_root", "cuda_graphs", "bstdg_calibrate", "bstdg_decision_step",
               "bstdg_readout_epochs", "bstdg_readout_scale", "bstdg_search_sweeps", "bstdg_search_samples")


@dataclasses.dataclass
class TrainConfig:
    dataset: str = "digits"             # a name from bsnn_hw.data.DATASETS or a directory of IDX / CIFAR-10 files
    data_root: str | None = None        # directory of a named IDX / CIFAR-10 data set (default: where Debian puts it)
    split_seed: int = 0                 # digits only: which seeded train/test split
    val_samples: int = 0                # the last N samples of the training split are held out (never trained on)
    hidden: list = dataclasses.field(default_factory=lambda: [128])   # hidden layer sizes
    timesteps: int = 16                 # T
    encoding: str = "rate"              # "rate" (LFSR Bernoulli), "latency" or "pixel" (intensities as currents)
    leak_shift: int | None = 4          # hidden layers: V -= V >>> k each step (lambda = 1 - 2^-k); None = IF
    output_leak_shift: int | None = None  # output layer (B-SNN: a pure integrator)
    reset: str = "subtract"             # "subtract" or "zero"
    membrane_bits: int = 16             # M
    fire_once: bool = False
    readout: str = "membrane"           # "membrane" (threshold-infinity output layer) or "count"
    scale: str | None = "neuron"        # learned alpha per "neuron" or per "layer" (folded into thresholds), or None
    threshold_init: float = 0.5         # initial theta / alpha = threshold_init * sqrt(n_in)
    arch: str | None = None             # conv stack, e.g. "32c3-p2-64c3-p2-256-10" (replaces hidden); None = MLP
    first_bits: int = 1                 # weight width of the first layer: 1 (binary) or 2..8 (B-SNN's MID variants)
    last_bits: int = 1                  # weight width of the last layer
    epochs: int = 30
    batch_size: int = 64
    lr: float = 5e-3                    # Adam, cosine decay to 0 over all steps
    weight_decay: float = 0.0
    dropout: float = 0.05               # hidden spikes, mask constant over the T steps
    cuda_graphs: bool = True            # on CUDA (one process): replay each training step as one CUDA graph
    label_smoothing: float = 0.0        # cross-entropy label smoothing
    augment_shift: int = 0              # training images shifted by up to +-k pixels (zero fill); 0 = off
    augment_flip: bool = False          # training images mirrored left-right with probability 1/2 (not for digits!)
    slope: float = 5.0                  # surrogate gradient sharpness
    exact: bool = True                  # train in the contract's integer arithmetic (floor leak, integer reset)
    seed: int = 0                       # weights, sample order, training spikes, dropout
    eval_seed: int = 1                  # the exported network's rate-encoder seed (test spikes), 1..65535
    device: str = "auto"                # "auto" (cuda when available), "cpu", "cuda", "cuda:1"...
    precision: str = "auto"             # synaptic products: "auto", "fp32" or "bf16" (exact either way)
    threads: int | None = None          # torch CPU threads (None: torch's default)
    init_from: str | None = None        # start from this training checkpoint's weights (fine-tuning; same layers)
    method: str = "bsnn"                # "bsnn" (surrogate gradients, BPTT), "bstdg", "bisnn" or "bntt"
    bstdg_gamma: float = 1.0            # bstdg: margin (steps) by which the other classes must fire after the first
    bstdg_threshold_lr: float | None = None   # bstdg: Adam lr of the threshold factors (None: lr)
    bstdg_deadline: int | None = None   # bstdg: the correct class's target step is at most this (None: T - 1)
    bstdg_lead: float = 0.0             # bstdg: steps by which the correct class's target leads every other class
    bstdg_backward: str = "latent"      # bstdg: errors propagate through the latent W ("latent", BS4NN) or sign(W)
    bstdg_timing: str = "step"          # bstdg: output errors on spike steps, or on crossings "interpolated"
    bstdg_pull: float = 0.0             # bstdg: fine-tune weight of a one-step-earlier target on sure samples
    bstdg_readout_epochs: int = 0       # bstdg: epochs of the anytime readout fit after training (0: none)
    bstdg_readout_scale: float = 4.0    # bstdg: its membrane steps per unit of log odds
    bstdg_search_sweeps: int = 0        # bstdg: sweeps of the local search on the last hidden layer after it (0: none)
    bstdg_search_samples: int = 20000   # bstdg: training samples the local search scores (a seeded draw)
    bstdg_revive: float = 0.0           # bstdg: error pushing quiet hidden neurons to fire (--method bstdg: 0.02)
    bstdg_min_rate: float = 0.05        # bstdg: hidden neurons firing on fewer samples (running mean) are quiet
    bstdg_finetune: int = 0             # bstdg: epochs after the main ones, thresholds frozen (--method bstdg: 15)
    bstdg_finetune_lr: float | None = None   # bstdg: Adam lr of those epochs (None: lr / 5), a fresh cosine decay
    bstdg_calibrate: bool = False       # bstdg: then calibrate the integer thresholds on the training split (on)
    bstdg_decision_step: int | None = None   # bstdg: the calibration keeps the median decision step <= this
                                             # (on the held-out images with val_samples, else the training split)
    bisnn_members: int = 8              # bisnn: S, weight sets sampled from the posterior into the artifact
    bisnn_member_seed: int = 0          # bisnn: seed of those samples
    bisnn_tau: float = 1.0              # bisnn: temperature of the concrete relaxation
    bisnn_prior: float = 0.5            # bisnn: prior probability of a +1 weight
    bisnn_rho: float | str | None = "0.03/N"   # bisnn: weight of the prior (KL) term: a number (0: none, a cold
    #                                     posterior), "X/N": X / training samples, "elbo" or None: 1 / training samples
    #                                     (the evidence lower bound's own weight); the default is 0.03 of that
    bisnn_mc: int = 4                   # bisnn: Monte Carlo weight samples per step
    bisnn_lr: float = 0.05              # bisnn: step eta on the latent natural parameters (cosine schedule)
    bisnn_update: str = "adam"          # bisnn: "sgd" (plain mirror descent, as BayesBiSNN) or "adam" (Adam-scaled)
    bisnn_init: float = 1.5             # bisnn: initial |w_r| (random signs): q(w = sign) = sigmoid(2 init)
    bisnn_relaxed: bool = False         # bisnn: forward on the relaxed tanh sample instead of its sign
    bntt_variant: str = "per-step"      # bntt: "per-step" (gamma, mean, var per step) or "shared" (scale per neuron)
    bntt_exit_threshold: float = 0.1    # bntt: early exit where the layer-averaged mean |gamma_t| falls below this
    bntt_theta: int = 64                # bntt per-step: the integer threshold Theta (membrane unit theta / Theta)
    bntt_scale_bits: int = 18           # bntt per-step: signed width of the exported scale a (F fills it)
    bntt_finetune: int = 0              # bntt per-step: epochs trained in the exported integer arithmetic
    bntt_finetune_lr: float | None = None   # bntt: Adam lr of those epochs (None: lr / 10), cosine decay
    bntt_leak_correction: bool = False  # bntt per-step: subtract the floor leak's mean excess from the drive's bias

    def validate(self) -> "TrainConfig":
        def need(ok, msg):
            if not ok:
                raise ValueError(msg)
        if isinstance(self.init_from, os.PathLike):
            self.init_from = os.fspath(self.init_from)
        for f in dataclasses.fields(self):      # each setting's type as annotated: no bool for an int, no str
            _check_setting(f.name, getattr(self, f.name), f.type)
        need(isinstance(self.hidden, (list, tuple)) and all(_is_int(h) and h >= 1 for h in self.hidden),
             f"hidden must be a list of positive layer sizes, not {self.hidden!r}")
        self.hidden = list(self.hidden)
        for f in dataclasses.fields(self):      # NaN passes every "> 0" test, and inf is no setting either
            v = getattr(self, f.name)
            need(not isinstance(v, float) or math.isfinite(v), f"{f.name} must be a finite number, not {v!r}")
        need(self.split_seed == 0 or self.dataset == "digits",
             f"split_seed chooses digits' train/test split; {self.dataset!r} has a fixed one (split_seed "
             f"{self.split_seed!r})")
        for name in ("seed", "bisnn_member_seed", "split_seed"):
            v = getattr(self, name)
            need(0 <= v < 2 ** 63, f"{name} must be an integer in 0..2^63-1, not {v!r}")
        need(self.val_samples >= 0, f"val_samples must be a sample count >= 0, not {self.val_samples!r}")
        need(self.reset in contract.RESET_MODES,
             f"reset must be one of {', '.join(map(repr, contract.RESET_MODES))}, not {self.reset!r}")
        need(contract.MEMBRANE_BITS_MIN <= self.membrane_bits <= contract.MEMBRANE_BITS_MAX,
             f"membrane_bits must be in {contract.MEMBRANE_BITS_MIN}..{contract.MEMBRANE_BITS_MAX}, not "
             f"{self.membrane_bits!r}")
        need(self.method == "bstdg" or self.membrane_bits <= LIF_MAX_BITS,
             f"membrane_bits must be at most {LIF_MAX_BITS} for --method {self.method} (its LIF holds the membrane "
             f"in float32, exact up to 2^24), not {self.membrane_bits}")
        for name in ("leak_shift", "output_leak_shift"):
            v = getattr(self, name)
            need(v is None or 1 <= v <= self.membrane_bits - 1,
                 f"{name} must be in 1..{self.membrane_bits - 1} (membrane_bits - 1) or None, not {v!r}")
        need(isinstance(self.timesteps, int) and self.timesteps >= 1, f"timesteps must be at least 1, not "
                                                                       f"{self.timesteps!r}")
        need(self.encoding in TRAIN_ENCODINGS, f"encoding must be one of {', '.join(TRAIN_ENCODINGS)} for training "
                                               f"(direct spike trains: use the BSNN module), not {self.encoding!r}")
        need(self.method in METHODS, f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        for f in dataclasses.fields(self):      # another method's settings would be ignored: refuse them
            owner = f.name.split("_")[0]
            if owner in METHODS and owner != self.method and getattr(self, f.name) != f.default:
                raise ValueError(f"{f.name} applies to method {owner!r}, not {self.method!r} (it is "
                                 f"{getattr(self, f.name)!r}; its default is {f.default!r})")
        need(self.method == "bstdg" or self.readout in ("membrane", "count"),
             f"readout must be 'membrane' or 'count' for training, not {self.readout!r}")
        need(self.scale in (None, "layer", "neuron"), f"scale must be 'layer', 'neuron' or none, not {self.scale!r}")
        need(isinstance(self.epochs, int) and self.epochs >= 1, f"epochs must be at least 1, not {self.epochs!r}")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1,
             f"batch size must be at least 1, not {self.batch_size!r}")
        need(self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, not {self.lr!r}")
        need(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), not {self.dropout!r}")
        need(isinstance(self.cuda_graphs, bool), f"cuda_graphs must be true or false, not {self.cuda_graphs!r}")
        need(0.0 <= self.label_smoothing < 1.0, f"label smoothing must be in [0, 1), not {self.label_smoothing!r}")
        need(isinstance(self.augment_shift, int) and self.augment_shift >= 0,
             f"augment_shift must be a pixel count >= 0, not {self.augment_shift!r}")
        need(isinstance(self.augment_flip, bool), f"augment_flip must be true or false, not {self.augment_flip!r}")
        need(self.weight_decay >= 0, f"weight decay must be >= 0, not {self.weight_decay!r}")
        need(self.slope > 0, f"slope must be positive, not {self.slope!r}")
        need(self.threshold_init > 0, f"threshold_init must be positive, not {self.threshold_init!r}")
        need(self.precision in ("auto", "fp32", "bf16"), f"precision must be auto, fp32 or bf16, not "
                                                         f"{self.precision!r}")
        need(1 <= self.eval_seed <= 65535, f"eval_seed must be in 1..65535 (an LFSR state), not {self.eval_seed}")
        need(self.threads is None or self.threads >= 1, f"threads must be at least 1, not {self.threads!r}")
        need(self.init_from is None or isinstance(self.init_from, str),
             f"init_from must be the path of a training checkpoint, not {self.init_from!r}")
        if self.arch is not None:
            from .model import parse_arch
            _, dense = parse_arch(self.arch)
            self.hidden = dense[:-1]
        for name in ("first_bits", "last_bits"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 8,
                 f"{name} must be 1 (binary) or 2..8 (signed k-bit weights), not {v!r}")
        if self.encoding == "pixel":
            need(self.method == "bsnn", f"the 'pixel' input is trained by --method bsnn only, not "
                                        f"{self.method!r} (bstdg is latency coded; bisnn and bntt take spikes)")
            if self.arch is not None:
                from .model import parse_arch
                front, _ = parse_arch(self.arch)
                need(not front or front[0][0] == "conv", f"the 'pixel' input feeds the first layer's synapses, so "
                                                         f"arch {self.arch!r} must not start with a pooling layer")
        if self.method == "bstdg":
            from .bstdg import check_config
            check_config(self)
        if self.method == "bisnn":
            from .bisnn import check_config as check_bisnn
            check_bisnn(self)
        if self.method == "bntt":
            from .bntt import check_config as check_bntt
            check_bntt(self)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def own_settings(d: dict) -> dict:
        """A stored configuration (a checkpoint's) without the settings of methods other than its own: those were
        ignored when it ran, and their defaults have changed since (``bisnn_rho``, ``bisnn_mc``)."""
        method = d.get("method", TrainConfig.method)
        return {k: v for k, v in d.items() if k.split("_")[0] not in METHODS or k.split("_")[0] == method}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        if not isinstance(d, dict) or not all(isinstance(k, str) for k in d):
            raise TypeError(f"a training configuration must be a dict of settings by name, not {d!r:.80}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**d)


def _check_setting(name: str, value, annotation: str) -> None:
    """A one-line ValueError unless ``value`` has one of the types of the field's annotation ("int | None", ...):
    a bool is not an int or a float, an int is a float, nothing is converted."""
    kinds = [k.strip() for k in str(annotation).split("|")]
    ok = {"None": value is None, "bool": isinstance(value, bool), "int": _is_int(value),
          "float": _is_int(value) or isinstance(value, float), "str": isinstance(value, str),
          "list": isinstance(value, (list, tuple))}
    if not any(ok.get(k, True) for k in kinds):
        words = {"None": "None", "bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
                 "list": "a list"}
        raise ValueError(f"{name} must be {' or '.join(words.get(k, k) for k in kinds)}, not {value!r}")


@dataclasses.dataclass
class TrainResult:
    network: object                     # bsnn_hw.Network
    model: BSNN
    metrics: dict
    history: list


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):     # "meta", "mps"...: not devices this trainer runs on
        raise ValueError(f"device must be auto, cpu or cuda[:N], not {name!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but torch sees no CUDA GPU; use --device cpu")
    return dev


def pick_precision(name: str, device: torch.device, dense: bool = False) -> str:
    """The synaptic products' arithmetic for ``--precision name`` (exact either way): "auto" is bf16 on a GPU; on the
    CPU, fp32 for a ``dense`` network (no conv layers) while the compiled kernels are on, else bf16 where the CPU has
    AVX512-BF16 / AMX, else fp32."""
    if name not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, not {name!r}")
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16"
    # A dense network's fp32 step runs the compiled kernels (layers.CPU_KERNELS), which bf16 tensors bypass: on a Zen 5
    # with AVX512-BF16 a 784-128-10 epoch took 4.3-4.5 s in fp32 against 5.6-5.9 s in bf16 on one thread (3.4-3.8
    # against 6.9-7.8 s on two), and only the kernels' path gives the same weights for any --threads.
    if dense and layers.CPU_KERNELS:
        return "fp32"
    # bf16 on CPUs with AVX512-BF16 / AMX, sliced, is exact (layers.binary_matmul); for a conv network on that Zen 5
    # it ran as fast as fp32 (190 against 196 ms per step, 32c3-p2-64c3-p2-256-10, bench/step_profile.py).
    try:
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    except (AttributeError, RuntimeError):
        return "fp32"


def arch_front(cfg: TrainConfig, n_in: int, n_classes: int):
    """(conv/pool specs or None, input map shape (H, W, C) or None) of ``cfg.arch``, checked against the data."""
    conv, shape = None, None
    if cfg.arch is not None:
        from .model import parse_arch
        conv, dense = parse_arch(cfg.arch)
        if dense[-1] != n_classes:
            raise ValueError(f"arch {cfg.arch!r} ends with {dense[-1]} outputs but {cfg.dataset} has {n_classes} "
                             f"classes")
        if conv:
            c, h, w = image_shape(n_in)
            if c != 1:
                raise ValueError(f"conv layers take one-channel images for now ({cfg.dataset} has {c} channels, "
                                 f"stored channel-major; the contract's maps are position-major)")
            shape = (h, w, c)
    return conv, shape


def build_model(cfg: TrainConfig, n_in: int, n_classes: int, precision: str) -> BSNN:
    conv, shape = arch_front(cfg, n_in, n_classes)
    return BSNN([n_in, *cfg.hidden, n_classes], cfg.timesteps, leak_shift=cfg.leak_shift, conv=conv, input_shape=shape,
                output_leak_shift=cfg.output_leak_shift, reset=cfg.reset, membrane_bits=cfg.membrane_bits,
                fire_once=cfg.fire_once, readout=cfg.readout, scale=cfg.scale, dropout=cfg.dropout,
                exact=cfg.exact, precision=precision, slope=cfg.slope, threshold_init=cfg.threshold_init,
                first_bits=cfg.first_bits, last_bits=cfg.last_bits, input_max=contract.input_max(cfg.encoding))


def image_shape(n_features: int) -> tuple[int, int, int]:
    """(channels, height, width) of flattened square images: n = s*s (grey) or 3*s*s (CIFAR's channel-major RGB)."""
    for c in (1, 3):
        s = math.isqrt(n_features // c)
        if c * s * s == n_features:
            return c, s, s
    raise ValueError(f"image augmentation needs square images (n = s*s or 3*s*s features), not {n_features} features")


class Augment:
    """Random translation (up to +-``shift`` pixels, zero fill) and left-right mirroring of flattened uint8 images.

    Draws come from ``torch.Generator`` seeded per epoch, so runs (and resumed runs) are reproducible; it runs on the
    model's device. Applied to the 8-bit intensities before the contract's encoder: the network still only ever sees
    the encoder's spikes."""

    def __init__(self, n_features: int, shift: int, flip: bool, device):
        self.shape = image_shape(n_features)
        if shift >= self.shape[1]:
            raise ValueError(f"augment_shift {shift} must be smaller than the image side {self.shape[1]}")
        self.shift, self.flip, self.device = shift, flip, device
        c, h, w = self.shape
        self.rows = torch.arange(h, device=device)
        self.cols = torch.arange(w, device=device)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        c, h, w = self.shape
        k = self.shift
        dy = torch.randint(-k, k + 1, (b,), generator=generator).to(self.device)
        dx = torch.randint(-k, k + 1, (b,), generator=generator).to(self.device)
        cols = self.cols[None, :]                                    # source column of each output column
        if self.flip:
            mirror = (torch.rand(b, generator=generator) < 0.5).to(self.device)
            cols = torch.where(mirror[:, None], self.cols.flip(0)[None, :], cols)
        img = torch.nn.functional.pad(x.view(b, c, h, w), (k, k, k, k))
        r = self.rows[None, :] + k - dy[:, None]                     # (B, H), in padded coordinates
        cc = cols + k - dx[:, None]                                  # (B, W)
        bi = torch.arange(b, device=self.device)[:, None, None]
        out = img.permute(0, 2, 3, 1)[bi, r[:, :, None], cc[:, None, :]]   # (B, H, W, C)
        return out.permute(0, 3, 1, 2).reshape(b, c * h * w)


class Encoder:
    """uint8 (B, n) -> float 0/1 spikes (B, T, n) with the contract's encoder, on the model's device; for "pixel"
    the intensities themselves as float (B, 1, n): one row that every step shares (:class:`BSNN` and
    :func:`integer_simulate` broadcast the first layer's current over the T steps)."""

    def __init__(self, encoding: str, n_in: int, timesteps: int, device):
        if encoding not in TRAIN_ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(TRAIN_ENCODINGS)}, not {encoding!r}")
        self.encoding, self.timesteps = encoding, timesteps
        self.rate = RateEncoder(n_in, timesteps, device) if encoding == "rate" else None

    def __call__(self, x: torch.Tensor, seeds, check: bool = True) -> torch.Tensor:
        if self.rate is not None:
            return self.rate(x, seeds, check)
        if self.encoding == "pixel":
            return x.to(torch.float32)[:, None, :]
        return latency(x, self.timesteps)


def load_data(cfg: TrainConfig):
    xtr, ytr = datasets.load_dataset(cfg.dataset, "train", seed=cfg.split_seed, root=cfg.data_root)
    xte, yte = datasets.load_dataset(cfg.dataset, "test", seed=cfg.split_seed, root=cfg.data_root)
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"{cfg.dataset}: train has {xtr.shape[1]} features but test has {xte.shape[1]}")
    if cfg.val_samples:
        xtr, ytr = validation_split(cfg, xtr, ytr)[:2]
    return xtr, ytr, xte, yte


def validation_split(cfg: TrainConfig, xtr=None, ytr=None):
    """(x_train, y_train, x_val, y_val): the training split without and with only its last ``cfg.val_samples``."""
    if xtr is None:
        xtr, ytr = datasets.load_dataset(cfg.dataset, "train", seed=cfg.split_seed, root=cfg.data_root)
    n = cfg.val_samples
    if not 0 <= n < len(ytr):
        raise ValueError(f"val_samples must be in 0..{len(ytr) - 1} (the training split has {len(ytr)}), not {n}")
    cut = len(ytr) - n
    return xtr[:cut], ytr[:cut], xtr[cut:], ytr[cut:]


@torch.no_grad()
def evaluate(model: BSNN, encoder: Encoder, x: torch.Tensor, y: torch.Tensor, seed: int,
             batch_size: int = 1000, predictions: bool = False):
    """Accuracy of the torch model (eval mode) on inputs encoded with one shared seed, as the hardware does; with
    ``predictions``, (accuracy, per-sample predicted classes as a NumPy array)."""
    model.eval()
    preds = []
    for i in range(0, len(y), batch_size):
        preds.append(model(encoder(x[i:i + batch_size], seed)).argmax(1).cpu())
    pred = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.int64)
    acc = int((pred == y.cpu()).sum()) / max(1, len(y))
    return (acc, pred.numpy()) if predictions else acc


def dataset_title(dataset: str) -> str:
    """A data set's name for plot titles: the name given, or for a directory of IDX files its last component."""
    from bsnn_hw.data import DATASETS
    return dataset if dataset in DATASETS else (Path(dataset).name or str(dataset))


@torch.no_grad()
def integer_accuracy(net, encoder: Encoder, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000):
    """(accuracy, predictions) of the exported integer network, with the network's encoder seed."""
    preds = []
    for i in range(0, len(y), batch_size):
        inputs = encoder(x[i:i + batch_size], net.seed)
        preds.append(integer_simulate(net, inputs if net.encoding == "pixel" else inputs.bool())[0])
    pred = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.int64)
    return int((pred == y).sum()) / max(1, len(y)), pred.cpu().numpy()


def save_checkpoint(path, cfg: TrainConfig, model, optimizer, scheduler, epoch: int, history: list) -> None:
    state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": cfg.to_dict(), "epoch": epoch,
             "model": model.state_dict(), "optimizer": host_learning_rates(optimizer.state_dict()),
             "scheduler": scheduler.state_dict(),
             "history": history}
    with atomic_write(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path) -> dict:
    """A checkpoint written by :func:`save_checkpoint` (loaded with ``weights_only=True``: no code runs)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to unpickle is a damaged or foreign file
        raise ValueError(f"{path}: not a bsnn-hw training checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a bsnn-hw training checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {state.get('version')!r}, expected {CHECKPOINT_VERSION}")
    for key, kind, what in (("config", dict, "a dict of settings"), ("model", dict, "a dict of tensors"),
                            ("epoch", int, "an epoch count"), ("history", list, "a list of epoch records"),
                            ("optimizer", dict, "an optimizer state"), ("scheduler", dict, "a scheduler state")):
        ok = isinstance(state.get(key), kind) and not isinstance(state.get(key), bool)
        if key == "model" and ok:
            ok = all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state[key].items())
        if not ok:
            got = ("missing" if key not in state else f"a {type(state[key]).__name__}"
                   if not isinstance(state[key], kind) else "one whose entries are not all tensors")
            raise ValueError(f"{path}: a damaged training checkpoint: {key!r} must be {what}, not {got}")
    return state


def config_differences(a: dict, b: dict) -> list[str]:
    """The settings in which the configurations ``a`` (a checkpoint's) and ``b`` differ, other methods' settings
    (:meth:`TrainConfig.own_settings`) and :data:`RESUME_FREE` aside."""
    defaults = TrainConfig().to_dict()          # a checkpoint from before a setting existed had its default
    a = {**defaults, **TrainConfig.own_settings(a)}
    b = {**defaults, **TrainConfig.own_settings(b)}
    return [f"{k}={a.get(k)!r} (checkpoint) vs {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if k not in RESUME_FREE and a.get(k) != b.get(k)]


def cosine_schedule(optimizer, total_steps: int):
    """Cosine decay of every parameter group's learning rate to 0 over ``total_steps`` (then held at 0)."""
    return finetune_schedule(optimizer, total_steps, 0, 1.0)


def finetune_schedule(optimizer, main_steps: int, finetune_steps: int, finetune_factor: float,
                      frozen_groups: tuple = ()):
    """Cosine decay to 0 over ``main_steps``, then (a fine-tune of ``finetune_steps``) a fresh cosine from
    ``finetune_factor`` x each group's lr; the parameter groups numbered in ``frozen_groups`` stay at lr 0 in the
    fine-tune. With ``finetune_steps`` 0: the plain cosine decay (:func:`cosine_schedule`)."""
    def factor(step, frozen=False):
        if step < main_steps or finetune_steps == 0:
            return 0.5 * (1 + math.cos(math.pi * min(step, main_steps) / max(1, main_steps)))
        if frozen:
            return 0.0
        k = min(step - main_steps, finetune_steps)
        return finetune_factor * 0.5 * (1 + math.cos(math.pi * k / finetune_steps))
    lambdas = [functools.partial(factor, frozen=i in frozen_groups) for i in range(len(optimizer.param_groups))]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


def warm_start(path, cfg, model, log) -> None:
    """Load the weights (every parameter and buffer) of the training checkpoint ``path`` into ``model``: a fine-tune
    (``--init``). The optimizer, schedule and epoch count start afresh; every other setting (T, lr, epochs...) is
    ``cfg``'s. Refused in one line when the checkpoint's method or any parameter's name or shape differs."""
    state = load_checkpoint(path)
    method = state["config"].get("method", TrainConfig.method)   # a checkpoint from before methods: the default
    if method != cfg.method:
        raise ValueError(f"--init {path}: a --method {method} checkpoint cannot start a --method {cfg.method} run")
    theirs, ours = state["model"], model.state_dict()
    unmatched = sorted((set(ours) ^ set(theirs)) - set(getattr(model, "optional_state", ())))
    if unmatched:
        name = unmatched[0]
        where = "this run's model but not the checkpoint's" if name in ours else "the checkpoint but not this run"
        raise ValueError(f"--init {path}: parameter {name!r} is in {where}: the layers differ")
    for name in sorted(set(ours) & set(theirs)):
        if tuple(theirs[name].shape) != tuple(ours[name].shape):
            raise ValueError(f"--init {path}: parameter {name!r} has shape {tuple(theirs[name].shape)} in the "
                             f"checkpoint but {tuple(ours[name].shape)} in this run: the layers differ")
    model.load_state_dict(theirs)
    log(f"starting from the weights of {path} (after its epoch {int(state['epoch'])})")


def load_states(path, what: str, *pairs) -> None:
    """``target.load_state_dict(state)`` for each (target, state) pair (model, optimizer, scheduler), a one-line
    ValueError "<path>: <what>: ..." when a state does not fit its target (torch's own errors span lines)."""
    for target, state in pairs:
        try:
            target.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
            first = str(err).strip().splitlines()
            detail = f"missing {err}" if isinstance(err, KeyError) else \
                " ".join(line.strip() for line in first[:2]) if first else type(err).__name__
            raise ValueError(f"{path}: {what}: its {type(target).__name__} state does not fit this run's ({detail})") \
                from None


def resume_state(checkpoint, cfg, model, optimizer, scheduler, log) -> tuple[list, int]:
    """Load ``checkpoint`` (when given and present) into model, optimizer and scheduler after checking that its
    settings equal ``cfg``'s; returns (history, epochs done), ([], 0) when there is nothing to resume (the model then
    starts from ``cfg.init_from``'s weights when that is set: :func:`warm_start`)."""
    if checkpoint is None or not Path(checkpoint).exists():
        if cfg.init_from:
            warm_start(cfg.init_from, cfg, model, log)
        return [], 0
    state = load_checkpoint(checkpoint)
    diffs = config_differences(state["config"], cfg.to_dict())
    if diffs:
        raise ValueError(f"{checkpoint}: cannot resume, settings differ: {'; '.join(diffs)}")
    load_states(checkpoint, "cannot resume", (model, state["model"]), (optimizer, state["optimizer"]),
                (scheduler, state["scheduler"]))
    start_epoch = int(state["epoch"])
    log(f"resuming from {checkpoint} after epoch {start_epoch}/{cfg.epochs}")
    return list(state["history"]), start_epoch


def requirement(method: str):
    """``need(ok, msg)`` for a method's check_config: a one-line ValueError "--method <method>: msg" unless ok."""
    def need(ok, msg):
        if not ok:
            raise ValueError(f"--method {method}: {msg}")
    return need


def check_finetune(need, epochs, lr) -> None:
    """The fine-tune settings a method shares (``bntt_finetune*``, ``bstdg_finetune*``): a whole number of epochs >= 0
    and a positive, finite lr (None: the method's default)."""
    need(isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 0,
         f"finetune must be a number of epochs >= 0, not {epochs!r}")
    need(lr is None or (lr > 0 and math.isfinite(lr)), f"finetune lr must be positive, not {lr!r}")


def retain_heap() -> bool:
    """Keep freed memory in the process (glibc: no mmap for large blocks, no trimming), so that a training step's
    large tensors reuse pages instead of faulting fresh ones in: every new 6 MB spike tensor otherwise costs ~1,600
    page faults (measured: ~3 ms of a ~19 ms 784-128-10 step on the CPU). What jemalloc or tcmalloc give PyTorch
    users by LD_PRELOAD. Process-wide; a no-op (False) where the C library is not glibc."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3                   # glibc's malloc.h parameter numbers
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, (1 << 31) - 1))


def cpu_parallelism(model, device: torch.device, precision: str):
    """The context a training loop runs in; it yields an object whose ``timed()`` context wraps each step. On the
    CPU, for a network without conv layers in float32 (its work in the compiled kernels and pooled products):
    :func:`layers.cpu_workers` with torch's thread count, so that every step is the same bit for bit for any thread
    count and the worker count follows the machine's load (:class:`layers.WorkerCount`); otherwise nothing changes."""
    if (device.type != "cpu" or precision != "fp32" or not layers.CPU_KERNELS
            or any(isinstance(m, layers.BinaryConv2d) for m in model.modules())):
        return contextlib.nullcontext(_Untimed())
    return layers.cpu_workers(torch.get_num_threads())


class _Untimed:
    """:func:`cpu_parallelism`'s object where nothing is tuned."""
    steps = {}

    def timed(self):
        return contextlib.nullcontext()


def deterministic(on: bool = True) -> None:
    """Torch's deterministic algorithms (the same seed gives the same weights), without their filling of every new
    tensor with NaN: a pass over memory per allocation (a pixel-input conv epoch on 2 CPU threads: 108.9 s with it,
    99.5 s without) that the training code does not need, since it writes every element it allocates before reading
    it (tests/test_train.py trains with the filling on and gets the same weights)."""
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False


def setup_run(cfg):
    """What every method's fit starts with: torch threads, the device (deterministic algorithms), the precision, the
    data as arrays and as tensors on the device, the class count; then the torch seed is set. Returns
    ``(device, precision, (xtr, ytr, xte, yte), (xtr_t, ytr_t, xte_t, yte_t), n_classes)``."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = local_device(pick_device(cfg.device))
    if device.type == "cpu":
        retain_heap()
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    deterministic()
    precision = pick_precision(cfg.precision, device, dense=cfg.arch is None)
    xtr, ytr, xte, yte = load_data(cfg)
    n_classes = int(max(ytr.max(), yte.max())) + 1
    tensors = tuple(torch.from_numpy(a).to(device) for a in (xtr, ytr, xte, yte))
    torch.manual_seed(cfg.seed)
    return device, precision, (xtr, ytr, xte, yte), tensors, n_classes


def plot_paths(out) -> list[Path]:
    """The training-curve plots written beside the model ``out``: <out>.png, and BNTT's <out>_steps.png."""
    out = Path(out)
    return [out.with_suffix(".png"), out.with_name(out.stem + "_steps.png")]


def check_run(cfg, method: str | None, out, checkpoint, resume, log, on_epoch_end) -> None:
    """Refuse, before any data is loaded, what a fit could not finish: a config that is not a TrainConfig or is of
    another ``method``, an output that cannot be written or that another output of the run would overwrite, a
    resume with nothing to resume from, and callbacks that cannot be called."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, not {type(cfg).__name__}")
    if method is not None and cfg.method != method:
        raise ValueError(f"this fit trains --method {method}; the config is for --method {cfg.method}")
    check_callable("log", log)
    check_callable("on_epoch_end", on_epoch_end)
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be True or False, not {resume!r}")
    paths = {}
    for name, path in (("out", out), ("checkpoint", checkpoint)):
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"{name} must be a file path or None, not {path!r}")
    if out is not None:
        paths["out"] = Path(out)
        for what, plot in zip(("the curve plot", "the steps plot"), plot_paths(out)):
            paths[what] = plot
        if checkpoint is None:
            checkpoint = Path(str(out) + ".ckpt")
    if checkpoint is not None:
        paths["checkpoint"] = Path(checkpoint)
    elif resume:
        raise ValueError("resume needs a checkpoint to continue (checkpoint, or out: <out>.ckpt)")
    seen = {}
    for name, path in paths.items():
        key = os.path.abspath(path)
        if key in seen:
            raise ValueError(f"{name} {path} is also {seen[key]}: one would overwrite the other")
        seen[key] = name
        check_output(path, name)


def fit(cfg: TrainConfig, out=None, checkpoint=None, resume: bool = False,
        progress: bool = True, log: Callable[[str], None] | None = None,
        on_epoch_end: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train, evaluate hardware-exact, and (when ``out`` is given) write the artifact, its checkpoint and curves.

    ``checkpoint`` defaults to ``<out>.ckpt``; with ``resume`` an existing checkpoint (same config) is continued.
    ``on_epoch_end(epoch, record)`` is called after each epoch's checkpoint is written (it may raise to stop).
    Returns a :class:`TrainResult`."""
    check_run(cfg, None, out, checkpoint, resume, log, on_epoch_end)
    if cfg.method != "bsnn" and world_size() > 1:
        raise ValueError(f"distributed training (torchrun, WORLD_SIZE = {world_size()}) is built for --method bsnn "
                         f"only, not --method {cfg.method}")
    if cfg.method == "bstdg":
        from .bstdg import fit as fit_bstdg
        return fit_bstdg(cfg, out=out, checkpoint=checkpoint, resume=resume, progress=progress, log=log,
                         on_epoch_end=on_epoch_end)
    if cfg.method == "bisnn":
        from .bisnn import fit as fit_bisnn
        return fit_bisnn(cfg, out=out, checkpoint=checkpoint, resume=resume, progress=progress, log=log,
                         on_epoch_end=on_epoch_end)
    if cfg.method == "bntt":
        from .bntt import fit as fit_bntt
        return fit_bntt(cfg, out=out, checkpoint=checkpoint, resume=resume, progress=progress, log=log,
                        on_epoch_end=on_epoch_end)
    cfg.validate()
    log = log or (lambda msg: None)
    started = time.perf_counter()
    device, precision, (xtr, ytr, xte, yte), (xtr_t, ytr_t, xte_t, yte_t), n_classes = setup_run(cfg)
    dist = Distributed(device)
    try:
        return _fit_bsnn(cfg, out, checkpoint, resume, progress, log, on_epoch_end, started, device, precision,
                         (xtr, ytr, xte, yte), (xtr_t, ytr_t, xte_t, yte_t), n_classes, dist)
    finally:
        dist.close()


def _fit_bsnn(cfg, out, checkpoint, resume, progress, log, on_epoch_end, started, device, precision, arrays, tensors,
              n_classes, dist) -> TrainResult:
    """The B-SNN fit after setup (data-parallel under torchrun: ``dist``, train/distributed.py)."""
    xtr, ytr, xte, yte = arrays
    xtr_t, ytr_t, xte_t, yte_t = tensors
    model = build_model(cfg, xtr.shape[1], n_classes, precision).to(device)
    net_model = dist.wrap(model)          # the forward and backward; ``model`` itself is what is saved and exported
    encoder = Encoder(cfg.encoding, xtr.shape[1], cfg.timesteps, device)
    augment = (Augment(xtr.shape[1], cfg.augment_shift, cfg.augment_flip, device)
               if cfg.augment_shift or cfg.augment_flip else None)
    steps_per_epoch = math.ceil(len(ytr) / cfg.batch_size)
    optimizer = make_adam(model.parameters(), cfg.lr, cfg.weight_decay, device)
    scheduler = cosine_schedule(optimizer, cfg.epochs * steps_per_epoch)
    if checkpoint is None and out is not None:
        checkpoint = Path(str(out) + ".ckpt")
    history, start_epoch = resume_state(checkpoint if resume else None, cfg, model, optimizer, scheduler, log)
    if device.type == "cuda":
        device_learning_rates(optimizer)
    trainer = TrainStep(model, net_model, encoder, optimizer, cfg.label_smoothing, cfg.batch_size, device,
                        graphs=cfg.cuda_graphs and not dist.active)      # CUDA only: TrainStep checks the device
    # Read the running loss back for the progress bar every step on the CPU, every 50 on a GPU (each read waits for
    # the device)
    show_every = 1 if device.type == "cpu" else 50

    bar = _Progress(progress and dist.main)
    with bar, cpu_parallelism(model, device, precision) as workers:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            model.train()
            g = torch.Generator().manual_seed(_mix(cfg.seed, epoch, 1))
            order = torch.randperm(len(ytr), generator=g)
            order_d = order.to(device)
            seeds = training_seeds(len(ytr), cfg.seed, epoch).to(device)
            # dropout draws on the training device (a GPU run's masks are not a CPU run's of the same seed)
            drop_gen = torch.Generator(device=device).manual_seed(_mix(cfg.seed, epoch, 2))
            aug_gen = torch.Generator().manual_seed(_mix(cfg.seed, epoch, 3))
            task = bar.start(f"epoch {epoch + 1}/{cfg.epochs}", steps_per_epoch)
            loss_sum, correct, seen, shown = 0.0, 0, 0, 0
            for b in range(steps_per_epoch):
                idx = order_d[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                if augment is not None:      # drawn for the global batch, as one process draws it
                    images = augment(xtr_t[idx], aug_gen)
                start, stop = dist.shard(len(idx))
                mine = idx[start:stop]
                images = images[start:stop] if augment is not None else xtr_t[mine]
                model.dropout_rows = (start, stop, len(idx))
                noise = model.dropout_noise(drop_gen) if cfg.dropout > 0 else None
                # DDP averages the processes' gradients: weight each by its share of the global batch
                with workers.timed():
                    trainer.step(images, seeds[mine], ytr_t[mine], noise,
                                 (len(mine) * dist.world / len(idx)) if dist.active else 1.0)
                seen += len(mine)
                if (b + 1) % show_every == 0 or b + 1 == steps_per_epoch:
                    step_loss, step_correct = trainer.take_totals()
                    loss_sum, correct = loss_sum + step_loss, correct + step_correct
                    bar.advance(task, f"loss {loss_sum / seen:.4f}  acc {100 * correct / seen:.2f}%", b + 1 - shown)
                    shown = b + 1
                scheduler.step()
            model.dropout_rows = None
            loss_sum, correct, seen = dist.sum(loss_sum, correct, seen)
            train_time = time.perf_counter() - t0
            if not dist.main:                # process 0 evaluates and writes; the others wait for it
                dist.barrier()
                history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "train_accuracy": correct / seen,
                                "epoch_seconds": train_time})
                continue
            test_acc = evaluate(model, encoder, xte_t, yte_t, cfg.eval_seed)
            history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "train_accuracy": correct / seen,
                            "test_accuracy": test_acc, "epoch_seconds": train_time,
                            "lr": float(scheduler.get_last_lr()[0])})
            bar.finish(task, f"loss {loss_sum / seen:.4f}  train {100 * correct / seen:.2f}%  "
                             f"test {100 * test_acc:.2f}%  {train_time:.1f}s")
            if checkpoint is not None:
                save_checkpoint(checkpoint, cfg, model, optimizer, scheduler, epoch + 1, history)
            dist.barrier()
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, history[-1])

    if not dist.main:                        # process 0 exports and evaluates the integer network
        return TrainResult(None, model, {}, history)
    # Hardware-exact evaluation of the exported integer network.
    float_acc, float_pred = evaluate(model, encoder, xte_t, yte_t, cfg.eval_seed, predictions=True)
    model.set_exact(not cfg.exact)
    other_acc = evaluate(model, encoder, xte_t, yte_t, cfg.eval_seed)
    model.set_exact(cfg.exact)
    ideal_acc = other_acc if cfg.exact else float_acc
    metrics = {"dataset": cfg.dataset, "sizes": [xtr.shape[1], *cfg.hidden, n_classes] if cfg.arch is None
               else [xtr.shape[1], *[layer.n_out for layer in model.fcs if not isinstance(layer, SumPool)]],
               "train_samples": int(len(ytr)), "test_samples": int(len(yte)),
               "float_accuracy": float_acc, "ideal_accuracy": ideal_acc, "exact_arithmetic_accuracy":
               float_acc if cfg.exact else other_acc,
               "epochs": cfg.epochs, "device": str(device), "precision": precision,
               "epoch_seconds": [h["epoch_seconds"] for h in history]}
    if trainer.graphs:
        metrics["cuda_graphs"] = trainer.info()
    metrics["thresholds_clamped"] = clamped_thresholds(model)
    if workers.steps:                       # dense CPU training: steps run on 1 and on --threads workers
        metrics["worker_steps"] = {str(k): v for k, v in workers.steps.items()}
    if any(metrics["thresholds_clamped"]):
        log(f"note: theta / alpha of {metrics['thresholds_clamped']} neurons (per layer) lies outside the "
            f"representable thresholds 1..2^(M-1)-1; they train and export clamped to that range")
    net = to_network(model, cfg.encoding, seed=cfg.eval_seed)
    int_acc, _ = integer_accuracy(net, encoder, xte_t, yte_t)
    metrics["integer_accuracy"] = int_acc
    metrics["gap_pp"] = round((float_acc - int_acc) * 100, 4)
    # logit per unit of readout score (alpha_L / T, or the count temperature): the scale of bsnn_hw.ensemble.confidence
    metrics["output_scale"] = (float(model.fcs[-1].scale().detach().reshape(-1)[0]) / cfg.timesteps
                               if model.readout == "membrane" else float(model.log_temperature.detach().exp()))
    metrics["train_seconds"] = round(time.perf_counter() - started, 2)
    # The float model's class for every test sample, so that `verify` can report the float accuracy on exactly the
    # samples it simulates (metadata: outside the model's identity).
    metrics["float_predictions"] = encode_predictions(float_pred)
    save_outputs(net, cfg, metrics, history, out, checkpoint,
                 f"{dataset_title(cfg.dataset)} {'-'.join(map(str, metrics['sizes']))}, T={cfg.timesteps}")
    return TrainResult(net, model, metrics, history)


def save_outputs(net, cfg, metrics: dict, history: list, out, checkpoint, title: str,
                 extra: dict | None = None) -> None:
    """Attach the run's config and metrics (and the ``extra`` metadata entries) to ``net`` and, with ``out``, save it
    and its training-curve plot (metrics then name the files written)."""
    net.metadata = {"trainer": "bsnn_hw.train", "config": cfg.to_dict(), "metrics": metrics, **(extra or {})}
    if out is None:
        return
    net.save(out)
    plot_history(history, Path(out).with_suffix(".png"), title=title)
    metrics["model"] = str(out)
    metrics["plot"] = str(Path(out).with_suffix(".png"))
    if checkpoint is not None:
        metrics["checkpoint"] = str(checkpoint)


def plot_history(history: list, path, title: str = "") -> None:
    """Loss and accuracy per epoch, as a PNG (matplotlib's Agg backend, no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [h["loss"] for h in history], marker=".")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    ax2.plot(epochs, [100 * h["train_accuracy"] for h in history], marker=".", label="train")
    ax2.plot(epochs, [100 * h["test_accuracy"] for h in history], marker=".", label="test (exact arithmetic)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


class _Progress:
    """One rich progress bar per epoch on stderr (silent when disabled)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.progress = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                                     console=Console(stderr=True))
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def start(self, description: str, total: int):
        if self.progress is None:
            return None
        return self.progress.add_task(description, total=total, info="")

    def advance(self, task, info: str, steps: int = 1):
        if self.progress is not None:
            self.progress.update(task, advance=steps, info=info)

    def finish(self, task, info: str):
        if self.progress is not None:
            self.progress.update(task, info=info)
