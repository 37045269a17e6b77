"""PyTorch trainer (B-SNN): binary weights, LIF layers, hardware-exact evaluation, export to .bsnn.

Building blocks for your own models: :class:`BinaryLinear`, :class:`LIF` (update equations in
:mod:`bsnn_hw.train.layers`), :class:`RateEncoder` / :func:`latency` (the contract's encoders in torch).
The ready-made network and its export: :class:`BSNN`, :func:`to_network`, :func:`integer_simulate`.
The loop: :class:`TrainConfig` and :func:`fit` (what ``bsnn-hw train`` runs). See docs/training.md.
"""
import os as _os

# Large CPU tensors on 2 MB-aligned transparent huge pages (PyTorch's own switch, read when torch allocates its first
# tensor, so it only takes effect if torch was not imported before this package). A training step allocates several
# tensors of tens of MB (conv maps x T x batch); on 4 KB pages every fresh one costs a page fault per 4 KB: on the
# 2-core reference machine a conv training step went from 0.89 to 0.72 s with it. Set THP_MEM_ALLOC_ENABLE=0 to opt
# out.
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .encoding import RateEncoder, latency  # noqa: E402
from .layers import LIF, BinaryLinear, QuantLinear, binarize, binary_matmul, quantize  # noqa: E402
from .model import BSNN, VARIANTS, integer_simulate, to_network, variant_bits  # noqa: E402
from .trainer import TrainConfig, TrainResult, fit  # noqa: E402

__all__ = ["BinaryLinear", "QuantLinear", "quantize", "VARIANTS", "variant_bits", "LIF", "binarize", "binary_matmul", "RateEncoder", "latency", "BSNN", "to_network",
           "integer_simulate", "TrainConfig", "TrainResult", "fit"]
