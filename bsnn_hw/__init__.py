"""bsnn-hw: binarized spiking neural networks from PyTorch training to verified, synthesizable Verilog.

The data flow is the layout: ``bsnn_hw.train`` -> artifact (``bsnn_hw.artifact``) -> golden model
(``bsnn_hw.golden``) -> ``bsnn_hw.hdl`` -> ``bsnn_hw.sim``. The numeric contract is ``bsnn_hw.contract`` and
docs/spec.md.
"""
from . import contract, encode, golden
from .artifact import ArtifactError
from .network import Conv2d, Layer, Network, Pool, random_network, truncate

__version__ = "0.1.0"


def load(path) -> Network:
    """Load a ``.bsnn`` artifact; raises :class:`ArtifactError` with a one-line message if it is not valid."""
    from .artifact import load as _load
    return _load(path)


__all__ = ["Layer", "Conv2d", "Pool", "Network", "random_network", "truncate", "load", "ArtifactError", "contract", "encode", "golden",
           "__version__"]
