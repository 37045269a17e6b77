"""Amaranth hardware generators: weight ROMs, XNOR-popcount synapse arrays, LIF cores, layer engines, network top.

See docs/hardware.md for the blocks, their ports and timing, and the top's stream protocol."""
from .config import HwConfig, LayerConfig, cycles_per_inference
from .engine import LayerEngine, PoolEngine
from .generate import Design, generate, manifest, to_verilog
from .neuron import NeuronCore
from .rom import WeightROM
from .synapse import SynapseArray
from .top import NetworkTop, result_layout, trace_layout

__all__ = ["HwConfig", "LayerConfig", "cycles_per_inference", "WeightROM", "SynapseArray", "NeuronCore",
           "LayerEngine", "PoolEngine", "NetworkTop", "Design", "generate", "manifest", "to_verilog", "result_layout",
           "trace_layout"]
