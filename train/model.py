"""The B-SNN multilayer perceptron, its export to a :class:`bsnn_hw.Network`, and the trainer's integer evaluation.

``BSNN(sizes=[64, 128, 10], ...)`` is a chain of :class:`~bsnn_hw.train.layers.BinaryLinear` +
:class:`~bsnn_hw.train.layers.LIF` pairs, all weights binary, no bias, no batchnorm. Dropout (a mask per sample and
neuron, constant over the T steps, not rescaled so that spikes stay 0/1) sits after every hidden layer. The last
layer is read out as in the contract:

- ``"membrane"`` (default, B-SNN's threshold-infinity layer): it never fires; ``logits = alpha_L * V_{T-1} / T``
  (alpha_L > 0 only sets the softmax temperature, so the class, argmax V_{T-1}, does not depend on it);
- ``"count"``: it fires like the hidden layers; ``logits = c * counts`` with a learned temperature c > 0.

:func:`to_network` folds every scale into integer thresholds, ``theta_int = floor(theta / alpha)`` (exact: for an
integer membrane V, ``V > theta / alpha <=> V > floor(theta / alpha)``), and returns the network the hardware runs.
:func:`integer_predict` runs that network with int64 tensors (on any torch device): it is the trainer's hardware-exact
evaluation, an implementation independent of :mod:`bsnn_hw.golden` that the tests compare with it.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from bsnn_hw import contract
from bsnn_hw.network import Layer, Network

from .layers import LIF, BinaryLinear, QuantLinear

# B-SNN's variants (the paper's names): which of the first and last layers stay binary. "mid": first and last
# multi-bit, the middle binary; "first+mid": the first layer binary too; "last+mid": the last layer binary too.
VARIANTS = {"full": (False, False), "mid": (True, True), "first+mid": (False, True), "last+mid": (True, False)}


def variant_bits(variant: str, bits: int = 8) -> tuple[int, int]:
    """(first_bits, last_bits) of a B-SNN variant with ``bits``-bit multi-bit layers."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    first, last = VARIANTS[variant]
    return (bits if first else 1), (bits if last else 1)


class BSNN(nn.Module):
    """All-binary spiking MLP. ``forward(spikes (B, T, n_in)) -> logits (B, n_classes)``.

    Arguments
    ---------
    sizes : list of int
        Inputs, then each layer's neurons, e.g. [784, 256, 10].
    timesteps : int
    leak_shift, output_leak_shift : int or None
        Leak shift k of the hidden layers and of the output layer (None: no leak).
    reset, membrane_bits, fire_once : as :class:`~bsnn_hw.train.layers.LIF` (every layer).
    readout : "membrane" or "count"
    scale : None, "layer" or "neuron"
        The hidden layers' learned alpha (per-neuron alphas become per-neuron thresholds). The output layer has one
        per-layer alpha (a temperature) for "membrane", per ``scale`` for "count".
    dropout : float
        Drop probability of hidden spikes during training.
    exact : bool
        Train with the contract's integer arithmetic (see :class:`~bsnn_hw.train.layers.LIF`).
    precision : "fp32" or "bf16"
    """

    def __init__(self, sizes, timesteps: int, leak_shift: int | None = None, output_leak_shift: int | None = None,
                 reset: str = "subtract", membrane_bits: int = 16, fire_once: bool = False,
                 readout: str = "membrane", scale: str | None = "neuron", dropout: float = 0.0, exact: bool = True,
                 precision: str = "fp32", slope: float = 5.0, threshold_init: float = 0.5, first_bits: int = 1,
                 last_bits: int = 1):
        super().__init__()
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(f"sizes must hold the inputs and at least one layer, not {sizes}")
        if readout not in ("membrane", "count"):
            raise ValueError(f"readout must be 'membrane' or 'count' for training, not {readout!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout}")
        self.sizes, self.timesteps, self.readout, self.dropout = sizes, timesteps, readout, dropout
        self.fcs = nn.ModuleList()
        self.lifs = nn.ModuleList()
        n_layers = len(sizes) - 1
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == n_layers - 1
            fires = not (last and readout == "membrane")
            bits = last_bits if last else first_bits if i == 0 else 1
            mag = 1.0 if bits == 1 else (1 << (bits - 1)) / 2      # typical |weight|: the scale starts accordingly
            if fires:
                # theta = 1 and alpha = 1 / theta_eff: start every threshold near threshold_init * sqrt(n_in).
                init = 1.0 / max(1.0, threshold_init * math.sqrt(n_in) * mag)
                layer_scale = scale
            else:
                # Temperature of the membrane readout: logits = alpha * V / T.
                init = 4.0 / (math.sqrt(n_in) * mag)
                layer_scale = "layer"
            kw = dict(scale=layer_scale if layer_scale else None, init_scale=init, precision=precision)
            self.fcs.append(BinaryLinear(n_in, n_out, **kw) if bits == 1 else QuantLinear(n_in, n_out, bits, **kw))
            self.lifs.append(LIF(1.0, output_leak_shift if last else leak_shift, reset, membrane_bits, fire_once,
                                 exact=exact, slope=slope, fires=fires))
        if readout == "count":
            self.log_temperature = nn.Parameter(torch.tensor(math.log(8.0 / timesteps)))
        else:
            self.register_parameter("log_temperature", None)

    def set_precision(self, precision: str) -> None:
        for fc in self.fcs:
            fc.precision = precision

    def set_exact(self, exact: bool) -> None:
        for lif in self.lifs:
            lif.exact = exact

    def forward(self, spikes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = spikes
        n_layers = len(self.fcs)
        for i, (fc, lif) in enumerate(zip(self.fcs, self.lifs)):
            scale = fc.scale()
            x = lif(fc.synaptic_input(x), scale if lif.fires else None)
            if self.training and self.dropout > 0 and i < n_layers - 1:
                keep = torch.rand(x.shape[0], 1, x.shape[2], generator=generator, device="cpu") >= self.dropout
                x = x * keep.to(x.device, x.dtype)
        if self.readout == "membrane":
            return self.lifs[-1].last_membrane * self.fcs[-1].scale() / self.timesteps
        return x.sum(1) * self.log_temperature.exp()

    @torch.no_grad()
    def clip_(self) -> None:
        for fc in self.fcs:
            fc.clip_()


def to_network(model: BSNN, encoding: str, seed: int = 1, metadata: dict | None = None) -> Network:
    """The integer network the hardware runs: weight bits ``W > 0`` and thresholds ``floor(theta / alpha)``, with
    theta / alpha clamped into [1, 2^(M-1)-1] exactly as the forward pass clamps it (so the integer network makes the
    forward pass's decisions)."""
    layers = []
    n_layers = len(model.fcs)
    for i, (fc, lif) in enumerate(zip(model.fcs, model.lifs)):
        weights = fc.weight_bits().cpu().numpy()
        if lif.fires:
            # The forward pass already clamps theta / alpha into [1, 2^(M-1)-1]; Layer refuses anything else.
            scale = fc.scale().detach().cpu() if fc.scale() is not None else None
            th = np.broadcast_to(lif.integer_threshold(scale).numpy(), (fc.n_out,)).astype(np.int64)
        else:
            th = None
        layers.append(Layer(weights, th, lif.leak_shift, lif.reset, lif.membrane_bits, lif.fire_once,
                            weight_bits=fc.bits))
    readout = model.readout
    assert len(layers) == n_layers
    return Network(layers, model.timesteps, readout, encoding, seed=seed, metadata=metadata or {})


@torch.no_grad()
def clamped_thresholds(model: BSNN) -> list[int]:
    """Per layer, how many neurons have theta / alpha outside [1, 2^(M-1)-1], the thresholds the contract can hold:
    the forward pass (and so the export) uses the clamped value for them. 0 for non-firing layers."""
    counts = []
    for fc, lif in zip(model.fcs, model.lifs):
        if not lif.fires or fc.scale() is None:
            counts.append(0)
            continue
        raw = lif.threshold / fc.scale().detach().cpu()
        hi = contract.membrane_range(lif.membrane_bits)[1]
        counts.append(int(((raw < 1) | (raw > hi)).sum()))
    return counts


@torch.no_grad()
def integer_simulate(net: Network, spikes: torch.Tensor) -> tuple[torch.Tensor, list, list]:
    """The contract with int64 tensors: ``spikes`` bool/0-1 (B, T, n_in) -> (prediction (B,), counts per layer,
    last membranes per layer). The synaptic sums are float32 products converted to int64 (exact: every partial sum
    is an integer below 2^24 in magnitude). Dense layers of any weight width (contract v2 k-bit included)."""
    device = spikes.device
    batch, steps, _ = spikes.shape
    x = spikes.float()
    counts, membranes = [], []
    first = None
    for li, layer in enumerate(net.layers):
        w = torch.from_numpy(contract.weight_values(layer.weights, layer.weight_bits).astype(np.float32)).to(device)
        cur = (x.reshape(batch * steps, -1) @ w.t()).round().to(torch.int64).reshape(batch, steps, -1)
        lo, hi = contract.membrane_range(layer.membrane_bits)
        fires = net.layer_fires(li)
        theta = torch.from_numpy(np.array(layer.threshold)).to(device) if fires else None
        v = torch.zeros(batch, layer.n_out, dtype=torch.int64, device=device)
        fired = torch.zeros(batch, layer.n_out, dtype=torch.bool, device=device)
        first = torch.full((batch, layer.n_out), -1, dtype=torch.int64, device=device)
        out = torch.zeros(batch, steps, layer.n_out, dtype=torch.bool, device=device)
        for t in range(steps):
            if layer.leak_shift is not None:
                v = v - (v >> layer.leak_shift)
            v = torch.clamp(v + cur[:, t], lo, hi)
            if not fires:
                continue
            fire = v > theta
            v = torch.where(fire, v - theta, v) if layer.reset == "subtract" else torch.where(fire, 0, v)
            spike = fire & ~fired if layer.fire_once else fire
            fired |= fire
            first = torch.where(spike & (first < 0), t, first)
            out[:, t] = spike
        counts.append(out.sum(1))
        membranes.append(v)
        x = out.float()
    if net.readout == "count":
        pred = torch.argmax(counts[-1], dim=1)
    elif net.readout == "membrane":
        pred = torch.argmax(membranes[-1], dim=1)
    else:
        key = torch.where(first < 0, steps, first)
        pred = torch.where((first < 0).all(1), torch.argmax(membranes[-1], 1), torch.argmin(key, 1))
    return pred, counts, membranes
