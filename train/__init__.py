"""PyTorch trainer (B-SNN): binary weights, LIF layers, hardware-exact evaluation, export to .bsnn.

Building blocks for your own models: :class:`BinaryLinear`, :class:`LIF` (update equations in
:mod:`bsnn_hw.train.layers`), :class:`RateEncoder` / :func:`latency` (the contract's encoders in torch).
The ready-made network and its export: :class:`BSNN`, :func:`to_network`, :func:`integer_simulate`.
The loop: :class:`TrainConfig` and :func:`fit` (what ``bsnn-hw train`` runs). See docs/training.md.
"""
from .encoding import RateEncoder, latency
from .layers import LIF, BinaryLinear, QuantLinear, binarize, binary_matmul, quantize
from .model import BSNN, VARIANTS, integer_simulate, to_network, variant_bits
from .trainer import TrainConfig, TrainResult, fit

__all__ = ["BinaryLinear", "QuantLinear", "quantize", "VARIANTS", "variant_bits", "LIF", "binarize", "binary_matmul", "RateEncoder", "latency", "BSNN", "to_network",
           "integer_simulate", "TrainConfig", "TrainResult", "fit"]
