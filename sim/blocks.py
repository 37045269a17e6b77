"""Per-block benches (host side): WeightROM, SynapseArray, NeuronCore and LayerEngine, each converted alone with
``bsnn_hw.hdl.to_verilog`` and checked in Icarus or Verilator against the contract (``bsnn_hw.contract``,
``bsnn_hw.golden``) by ``bsnn_hw.sim.cocotb_blocks``. As for the network bench, many block instances (different
sizes and parameters) share one simulator build through the ``bsnn_bench`` wrapper, one prefix each.

Ports and latencies are those of docs/hardware.md ("Blocks"). These blocks have no back-pressure, so their benches
drive and sample every clock cycle (in the ``ReadOnly`` phase before each edge).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bsnn_hw.network import Layer

from .network import WRAPPER, wrapper_verilog

KINDS = ("rom", "synapse", "neuron", "engine")


@dataclasses.dataclass
class BlockUnit:
    kind: str                   # one of KINDS
    layer: Layer | None = None  # rom (weights), neuron, engine
    parallel: int = 1
    width: int = 1              # rom, synapse, engine
    timesteps: int = 4          # neuron, engine
    fires: bool = True
    keep_count: bool = True
    cycles: int = 200           # rom / synapse: random cycles driven
    samples: int = 2            # neuron / engine: samples of T steps
    seed: int = 0
    name: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"block kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.kind != "synapse" and not isinstance(self.layer, Layer):
            raise TypeError(f"a {self.kind} block needs a bsnn_hw.Layer, not {type(self.layer).__name__}")
        for name in ("cycles", "samples", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "seed" else 1):
                raise ValueError(f"{name} must be an int >= {0 if name == 'seed' else 1}, not {v!r}")


def _component(u: BlockUnit):
    from bsnn_hw.hdl import LayerEngine, NeuronCore, SynapseArray, WeightROM
    if u.kind == "rom":
        return WeightROM(u.layer.weights, u.parallel, u.width)
    if u.kind == "synapse":
        return SynapseArray(u.width)
    if u.kind == "neuron":
        return NeuronCore(u.layer, u.parallel, u.timesteps, fires=u.fires, keep_count=u.keep_count)
    if u.kind == "engine":
        return LayerEngine(u.layer, u.parallel, u.width, u.timesteps, fires=u.fires, keep_count=u.keep_count)
    raise ValueError(f"block kind must be one of {', '.join(KINDS)}, not {u.kind!r}")


def build_blocks(units: list[BlockUnit], workdir: Path) -> tuple[str, list[dict]]:
    from bsnn_hw.hdl import WeightROM, to_verilog
    if not isinstance(units, (list, tuple)) or not units or not all(isinstance(u, BlockUnit) for u in units):
        raise TypeError(f"units must be a non-empty list of BlockUnit, not {units!r:.80}")
    sources, mods, params = [], [], []
    for k, u in enumerate(units):
        comp = _component(u)
        name = f"b{k}_{u.kind}"
        src = to_verilog(comp, name)
        sources.append(src)
        mods.append((name, f"b{k}_"))
        p = dict(prefix=f"b{k}_", kind=u.kind, name=u.name or name, seed=u.seed, parallel=u.parallel,
                 width=u.width, timesteps=u.timesteps, fires=u.fires, keep_count=u.keep_count, cycles=u.cycles,
                 samples=u.samples, latency=getattr(comp, "latency", 1))
        if u.layer is not None:
            art = workdir / f"b{k}.npz"
            np.savez(art, weights=u.layer.weights,
                     threshold=np.zeros(0, np.int64) if u.layer.threshold is None else u.layer.threshold)
            p.update(arrays=str(art), leak_shift=u.layer.leak_shift, reset=u.layer.reset,
                     membrane_bits=u.layer.membrane_bits, fire_once=u.layer.fire_once,
                     has_threshold=u.layer.threshold is not None)
        if u.kind == "rom":
            p["contents"] = [int(v) for v in WeightROM.contents(u.layer.weights, u.parallel, u.width)]
        if u.kind == "neuron":
            p["sum_width"] = comp.sum_width
            p["groups"] = comp.groups
        if u.kind == "engine":
            p["groups"] = comp.groups
            p["words"] = comp.words
            p["step_cycles"] = comp.step_cycles
        params.append(p)
    return "\n".join(sources) + "\n" + wrapper_verilog(mods, sources), params


def run_blocks(units: list[BlockUnit], sim: str, *, cache_dir=None, waves: bool = False):
    """Build every block unit into one bench and run it; returns (SimRun, [per-unit results])."""
    from . import runner
    cache = Path(cache_dir) if cache_dir is not None else runner.default_cache_dir()
    run_dir = runner.new_run_dir(cache, f"blocks-{sim}-")
    verilog, params = build_blocks(units, run_dir)
    run = runner.run_cocotb(verilog, WRAPPER, "bsnn_hw.sim.cocotb_blocks", sim, {"units": params},
                            cache_dir=cache, run_dir=run_dir, waves=waves, quick_build=True)
    return run, run.results.get("units", [])


def random_block_units(seed: int, per_kind: int = 4) -> list[BlockUnit]:
    """Seeded random instances of every block: sizes, P, W, M, leak, reset, fire-once, fires/keep_count."""
    rng = np.random.default_rng(seed)
    units = []
    for k in range(per_kind):
        n_in, n_out = int(rng.integers(1, 30)), int(rng.integers(1, 10))
        m = int(rng.choice([2, 3, 4, 6, 8, 12]))
        hi = (1 << (m - 1)) - 1
        th = rng.integers(1, max(1, min(hi, n_in + 1)) + 1, n_out) if rng.random() < 0.7 else \
            int(rng.integers(1, hi + 1))
        leak = None if rng.random() < 0.3 else int(rng.integers(1, m))
        layer = Layer(rng.random((n_out, n_in)) < rng.uniform(0.2, 0.8), th, leak,
                      str(rng.choice(["subtract", "zero"])), m, bool(rng.random() < 0.3))
        p = int(rng.integers(1, n_out + 1))
        w = int(rng.integers(1, n_in + 1))
        t = int(rng.integers(1, 6))
        fires = bool(rng.random() < 0.85)
        s = int(rng.integers(1 << 30))
        units += [
            BlockUnit("rom", layer, p, w, seed=s, name=f"rom{k}"),
            BlockUnit("synapse", width=int(rng.integers(1, 40)), seed=s, name=f"syn{k}"),
            BlockUnit("neuron", layer, p, timesteps=t, fires=fires, keep_count=bool(rng.random() < 0.7),
                      seed=s, name=f"neuron{k}"),
            BlockUnit("engine", layer, p, w, timesteps=t, fires=fires, keep_count=bool(rng.random() < 0.7),
                      seed=s, name=f"engine{k}"),
        ]
    return units
