"""The network-top bench: payload layouts, the multi-design wrapper, the scoreboard, and the host-side runner.

Host side (:func:`run_network`): one simulator build holds one or more *units*, each a generated ``NetworkTop``
(its own model, folding, trace option) with its own reset and streams; a generated wrapper module ``bsnn_bench``
exposes every unit's ports as ``u<k>_<port>`` and shares one clock. Packing many small random networks into one build
pays the simulator's build cost once (Verilator ~6 s per build). The cocotb side
(``bsnn_hw.sim.cocotb_network``) drives every unit concurrently with :class:`bsnn_hw.sim.tb.NetworkTB`.

Scoreboard (:func:`compare`): per sample, the hardware's last-layer counts, membranes and class against
``bsnn_hw.golden``, the ``o_result`` framing (index 0..n_out-1, ``last`` on the final beat only), and, with
``trace``, every layer's output spikes at every step. Mismatches are reported as dicts naming sample, layer, neuron
and step, the earliest (step, layer, neuron) first.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path

import numpy as np

from bsnn_hw import golden
from bsnn_hw.network import Network

WRAPPER = "bsnn_bench"


# --- payload layouts -------------------------------------------------------------------------------------------------

def _clog2(n: int) -> int:
    return max(0, (int(n) - 1).bit_length())


def default_layouts(net: Network) -> dict:
    """Payload layouts per docs/hardware.md (LSB first), used when a manifest gives none."""
    nb = max(1, _clog2(net.n_out))
    cb = max(1, _clog2(net.timesteps + 1))
    m = net.layers[-1].membrane_bits
    res, lsb = [], 0
    for name, width, signed in (("index", nb, False), ("count", cb, False), ("membrane", m, True),
                                ("cls", nb, False), ("last", 1, False)):
        res.append(dict(name=name, lsb=lsb, width=width, signed=signed))
        lsb += width
    tr, lsb = [], 0
    for name, width in (("layer", max(1, _clog2(len(net.layers)))), ("step", max(1, _clog2(net.timesteps))),
                        ("spikes", max(layer.n_out if layer.kind == "dense" else max(1, _clog2(layer.n_out + 1))
                                       for layer in net.layers))):
        tr.append(dict(name=name, lsb=lsb, width=width, signed=False))
        lsb += width
    return {"o_result": res, "o_trace": tr}


def layouts_from_manifest(manifest: dict | None, net: Network) -> dict:
    """The manifest's payload layouts as {stream: [{name, lsb, width, signed}, ...]}; falls back to the documented
    layout for a stream the manifest does not describe."""
    out = default_layouts(net)
    payloads = (manifest or {}).get("payloads") or {}
    for stream_name, fields in payloads.items():
        if isinstance(fields, dict) and "fields" in fields:
            fields = fields["fields"]
        if isinstance(fields, dict):
            fields = [dict(name=k, **v) for k, v in fields.items()]
        norm = []
        for f in fields:
            norm.append(dict(name=f["name"], lsb=int(f.get("lsb", f.get("offset", 0))), width=int(f["width"]),
                             signed=bool(f.get("signed", False))))
        out[stream_name] = norm
    return out


def decode(value: int, layout: list) -> dict:
    out = {}
    for f in layout:
        v = (value >> f["lsb"]) & ((1 << f["width"]) - 1)
        if f["signed"] and v >> (f["width"] - 1):
            v -= 1 << f["width"]
        out[f["name"]] = v
    return out


# --- input beats ---------------------------------------------------------------------------------------------------

def input_beats(spikes_one: np.ndarray, width: int, timesteps: int | None = None) -> list[int]:
    """The i_spikes beats of one sample: :func:`bsnn_hw.hdl.testbench.input_beats` (spikes (T, n_in) step-major
    then word; a "pixel" network's intensities (n_in,) as T copies of their 8 bit planes)."""
    from bsnn_hw.hdl.testbench import input_beats as beats
    return beats(spikes_one, width, timesteps)


# --- wrapper -------------------------------------------------------------------------------------------------------

_PORT = re.compile(r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:signed\s+)?(?:\[(\d+):(\d+)\]\s*)?\\?([A-Za-z_][\w$.]*)\s*;")


def module_ports(verilog: str, module: str) -> list[tuple[str, str, int]]:
    """(direction, name, width) of ``module``'s ports, read from its declarations in Amaranth's Verilog."""
    m = re.search(rf"^module\s+\\?{re.escape(module)}\s*\(", verilog, re.M)
    if not m:
        raise ValueError(f"module {module!r} not found in the generated Verilog")
    end = verilog.index("endmodule", m.end())
    ports = []
    for line in verilog[m.end():end].splitlines():
        pm = _PORT.match(line)
        if pm:
            width = int(pm.group(2)) - int(pm.group(3)) + 1 if pm.group(2) is not None else 1
            ports.append((pm.group(1), pm.group(4), width))
    return ports


def wrapper_verilog(units: list[tuple[str, str]], sources: list[str]) -> str:
    """A module ``bsnn_bench`` instantiating each (module name, prefix) with its ports brought out as
    ``<prefix><port>``; ``clk`` is shared, everything else (``rst`` included) is per unit."""
    decls, insts, names = ["input clk"], [], []
    for (mod, prefix), src in zip(units, sources):
        conns = []
        for direction, name, width in module_ports(src, mod):
            if name == "clk":
                conns.append(".clk(clk)")
                continue
            rng = f"[{width - 1}:0] " if width > 1 else ""
            decls.append(f"{direction} {rng}{prefix}{name}")
            conns.append(f".{name}({prefix}{name})")
        insts.append(f"  {mod} {prefix}inst (\n    " + ",\n    ".join(conns) + "\n  );")
        names.append(mod)
    return (f"module {WRAPPER} (\n  " + ",\n  ".join(decls) + "\n);\n" + "\n".join(insts) + "\nendmodule\n")


# --- units ---------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Unit:
    """One network top in a bench build, with its stimulus and checks."""
    net: Network
    spikes: np.ndarray                 # bool (B, T, n_in)
    config: object = None              # bsnn_hw.hdl.HwConfig or None for the default
    trace: bool = True
    stall_in: float = 0.0              # probability of a gap before each i_spikes beat
    stall_out: float = 0.0             # probability of ready low before each o_result / o_trace beat
    seed: int = 0
    reset_mid: bool = False            # reset in the middle of sample 0, then run every sample
    name: str = ""                     # a label for reports
    check_net: Network | None = None   # the golden model the scoreboard uses (default: net; the bench's self-test
                                       # gives another to prove that a wrong answer is caught)
    pixels: np.ndarray | None = None   # uint8 (B, n_in): what an on-chip-encoder top (config.encoder) is fed;
                                       # ``spikes`` must then be net.encode(pixels)

    def check(self, label: str) -> tuple:
        """(spikes, config, pixels) checked (``label`` names the unit in a message): a one-line error for anything
        the bench would cast, stall on, or find out only inside the simulator."""
        from bsnn_hw.encode import intensities
        from bsnn_hw.hdl import HwConfig
        from bsnn_hw.checks import check_flag
        from bsnn_hw.hdl.config import check_design
        if not isinstance(self.net, Network):
            raise TypeError(f"{label}: net must be a bsnn_hw.Network, not {type(self.net).__name__}")
        cfg = self.config if self.config is not None else HwConfig.default(self.net)
        check_design(self.net, cfg, self.trace)
        check_flag("reset_mid", self.reset_mid)
        for name in ("stall_in", "stall_out"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise ValueError(f"{label}: {name} must be a probability in [0, 1), not {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"{label}: seed must be an int >= 0, not {self.seed!r}")
        spikes = self.net.as_inputs(self.spikes)
        want = (self.net.n_in,) if self.net.encoding == "pixel" else (self.net.timesteps, self.net.n_in)
        if spikes.ndim != len(want) + 1 or spikes.shape[1:] != want or len(spikes) < 1:
            raise ValueError(f"{label}: spikes must have shape (samples >= 1, {', '.join(map(str, want))}), not "
                             f"{spikes.shape}")
        pixels = None if self.pixels is None else intensities(self.pixels, self.net.n_in, f"{label}: pixels")
        if cfg.encoder and pixels is None:
            raise ValueError(f"{label}: an on-chip-encoder design needs pixels (uint8 images)")
        return spikes, cfg, pixels


@functools.lru_cache(maxsize=1)
def _hdl_fingerprint() -> str:
    """A hash of the HDL generator's source files, so cached Verilog never outlives a change to the generator."""
    import hashlib
    import bsnn_hw.hdl
    h = hashlib.sha256()
    for f in sorted(Path(bsnn_hw.hdl.__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    import amaranth
    h.update(amaranth.__version__.encode())
    return h.hexdigest()


def generate_cached(net: Network, cfg, trace: bool, name: str, cache_dir=None) -> tuple[str, dict]:
    """``bsnn_hw.hdl.generate`` with a disk cache keyed by the artifact checksum, folding, trace, name and the
    generator's own source (generation costs ~1 s per small network; a bench regenerates the same ones often)."""
    import hashlib
    from bsnn_hw.hdl import generate
    from bsnn_hw.io import atomic_write
    from . import runner
    key = hashlib.sha256("|".join([net.identity(), json.dumps(cfg.to_dict()), str(trace), name,
                                   _hdl_fingerprint()]).encode()).hexdigest()[:32]
    root = Path(cache_dir) if cache_dir is not None else runner.default_cache_dir()
    path = root / "verilog" / f"{key}.json"
    if path.exists():
        try:
            d = json.loads(path.read_text())
            return d["verilog"], d["manifest"]
        except (ValueError, KeyError):
            pass
    design = generate(net, cfg, trace=trace, name=name)
    with atomic_write(path) as f:
        json.dump({"verilog": design.verilog, "manifest": design.manifest}, f)
    return design.verilog, design.manifest


def expected_cycles(u: Unit) -> list[int]:
    """Each sample's cycles from the first input beat to the last result beat with an always-valid source and
    always-ready sinks: the fixed formula, or, with early_exit / skip_zero / event-driven layers, ``sample_cycles``
    (data dependent)."""
    from bsnn_hw.hdl import HwConfig
    from bsnn_hw.hdl.config import cycles_per_inference, data_dependent, sample_cycles
    cfg = u.config if u.config is not None else HwConfig.default(u.net)
    if data_dependent(cfg):
        return [c["cycles"] for c in sample_cycles(u.net, cfg, u.spikes, u.trace)]
    members = max(1, len(ensemble_members(u.net)))
    return [cycles_per_inference(u.net, cfg, u.trace, members)] * int(np.shape(u.spikes)[0])


def build_units(units: list[Unit], workdir: Path, cache_dir=None) -> tuple[str, list[dict]]:
    """Generate every unit's Verilog, the wrapper, and the per-unit parameter dicts (files written to workdir)."""
    checked = [u.check(f"unit {u.name or k}") for k, u in enumerate(units)]      # all before any file
    sources, mods, params = [], [], []
    for k, (u, (spikes, cfg, pixels)) in enumerate(zip(units, checked)):
        text, manifest = generate_cached(u.net, cfg, u.trace, f"u{k}_top", cache_dir)
        sources.append(text)
        mods.append((f"u{k}_top", f"u{k}_"))
        art = workdir / f"u{k}.bsnn"
        (u.check_net if u.check_net is not None else u.net).save(art)
        spk = workdir / f"u{k}_spikes.npy"
        np.save(spk, spikes)
        pix = None
        if cfg.encoder:
            pix = workdir / f"u{k}_pixels.npy"
            np.save(pix, pixels)
        from bsnn_hw.hdl.config import cycles_per_inference
        params.append(dict(
            prefix=f"u{k}_", name=u.name or f"u{k}", artifact=str(art), spikes=str(spk), trace=u.trace,
            pixels=None if pix is None else str(pix),
            input_width=cfg.input_width_for(u.net), layouts=layouts_from_manifest(manifest, u.net),
            stall_in=u.stall_in, stall_out=u.stall_out, seed=u.seed, reset_mid=u.reset_mid,
            config=cfg.to_dict(),
            cycles_expected=int(manifest.get("cycles_per_inference", cycles_per_inference(u.net, cfg, u.trace))),
        ))
    verilog = "\n".join(sources) + "\n" + wrapper_verilog(mods, sources)
    return verilog, params


def run_network(units: list[Unit], sim: str, *, waves: bool = False, cache_dir=None, run_dir=None,
                quick_build: bool = False, progress=None):
    """Build every unit into one bench and run it; returns (SimRun, [per-unit results dict]).

    Each unit's results: ``samples``: list of {counts, membrane, cls, trace (per layer, per step, int bitmask),
    cycles}; ``mismatches``: list of mismatch dicts (see :func:`compare`); ``checked``: samples compared."""
    from . import runner
    runner.check_simulator(sim)                  # before any file is written
    if not isinstance(units, (list, tuple)) or not units or not all(isinstance(u, Unit) for u in units):
        raise TypeError(f"units must be a non-empty list of Unit, not {units!r:.80}")
    cache = Path(cache_dir) if cache_dir is not None else runner.default_cache_dir()
    if run_dir is None:
        run_dir = runner.new_run_dir(cache, f"net-{sim}-")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    verilog, params = build_units(units, run_dir, cache)
    run = runner.run_cocotb(verilog, WRAPPER, "bsnn_hw.sim.cocotb_network", sim, {"units": params},
                            waves=waves, cache_dir=cache, run_dir=run_dir, quick_build=quick_build,
                            progress=progress)
    return run, run.results.get("units", [])


# --- scoreboard ----------------------------------------------------------------------------------------------------

def expected(net: Network, spikes: np.ndarray, early_exit: bool = False):
    """(golden Result with every layer's spikes recorded, decision steps or None). With ``early_exit`` the Result
    is the state at each sample's decision step (``golden.decide``)."""
    spikes = net.as_inputs(spikes)
    if early_exit:
        return golden.decide(net, spikes, record=True)
    return golden.simulate(net, spikes, record=True), None


def ensemble_members(net: Network) -> list:
    """The member networks the hardware runs for ``net`` (``bsnn_hw.hdl.generate`` builds the ensemble when the
    network carries one); [] for a plain network."""
    from bsnn_hw import ensemble
    return ensemble.members(net) if getattr(net, "ensemble", ()) else []


def expected_ensemble(net: Network, spikes: np.ndarray):
    """(every member's golden Result with spikes recorded, the ``bsnn_hw.ensemble`` result: totals, votes, class)."""
    from bsnn_hw import ensemble
    spikes = net.as_inputs(spikes)
    mems = ensemble_members(net)
    refs = [golden.simulate(m, spikes, record=True) for m in mems]
    return refs, ensemble.combine(mems, refs)


def compare_ensemble(net: Network, refs: list, ens, b: int, hw: dict, sample: int | None = None) -> list[dict]:
    """Mismatches of one hardware sample of an ensemble top: each member's trace against its golden run (``what``
    names the member), the last member's counts and membranes, and the per-class totals, votes and the class
    against ``bsnn_hw.ensemble``; framing problems as in :func:`compare`."""
    s = b if sample is None else sample
    last = len(net.layers) - 1
    out = []
    for k, trace in enumerate(hw.get("member_traces") or []):
        out += [dict(m, what=f"member {k} {m['what']}") for m in _trace_mismatches(net, refs[k], b, trace, s,
                                                                               net.timesteps)]
    out += _readout_mismatches(net, refs[-1], b, hw, s, check_class=False)
    for what, key, want in (("total", "totals", ens.totals[b]), ("votes", "votes", ens.votes[b])):
        got = hw[key]
        for j in range(net.n_out):
            if int(got[j]) != int(want[j]):
                out.append(dict(sample=s, what=what, layer=last, neuron=j, step=None, expected=int(want[j]),
                                actual=int(got[j])))
    if int(hw["cls"]) != int(ens.prediction[b]):
        out.append(dict(sample=s, what="ensemble class", layer=last, neuron=None, step=None,
                        expected=int(ens.prediction[b]), actual=int(hw["cls"])))
    for problem in hw.get("framing", []):
        out.append(dict(sample=s, what="framing", layer=last, neuron=None, step=None, expected=None,
                        actual=problem))
    return out


def compare(net: Network, ref: golden.Result, b: int, hw: dict, sample: int | None = None,
            decision=None) -> list[dict]:
    """Mismatches of one hardware sample ``hw`` against golden sample ``b`` of ``ref``. Each mismatch is a dict:
    {sample, what, layer, neuron, step, expected, actual}; trace mismatches first, earliest (step, layer, neuron).
    ``decision``: the golden decision steps of an early-exit design (``ref`` is then the state at them); the
    hardware's step is checked and its trace runs to that step."""
    s = b if sample is None else sample
    out = []
    steps = net.timesteps
    if decision is not None:
        steps = int(decision[b]) + 1
        if hw.get("step") != int(decision[b]):
            out.append(dict(sample=s, what="decision step", layer=len(net.layers) - 1, neuron=None, step=None,
                            expected=int(decision[b]), actual=hw.get("step")))
    trace = hw.get("trace")
    if trace is not None:
        out += _trace_mismatches(net, ref, b, trace, s, steps)
    out += _readout_mismatches(net, ref, b, hw, s)
    for problem in hw.get("framing", []):
        out.append(dict(sample=s, what="framing", layer=len(net.layers) - 1, neuron=None, step=None, expected=None,
                        actual=problem))
    return out


def _trace_mismatches(net: Network, ref: golden.Result, b: int, trace, s: int, steps: int) -> list[dict]:
    """The traced spikes of steps 0..steps-1 (``trace[layer][step]``) against ``ref``'s recorded spikes."""
    out = []
    for t in range(steps):
        for li, layer in enumerate(net.layers):
            word = trace[li][t]
            if word is None:
                out.append(dict(sample=s, what="trace beat missing", layer=li, neuron=None, step=t,
                                expected="a beat", actual=None))
                continue
            if layer.kind != "dense":       # a map layer's beat carries its spike count at step t
                want_n = int(ref.spikes[li][b, t].sum())
                if int(word) != want_n:
                    out.append(dict(sample=s, what="map spike count", layer=li, neuron=None, step=t,
                                    expected=want_n, actual=int(word)))
                continue
            got = np.array([(int(word) >> j) & 1 for j in range(layer.n_out)], dtype=bool)
            want = ref.spikes[li][b, t]
            for j in np.flatnonzero(got != want):
                out.append(dict(sample=s, what="spike", layer=li, neuron=int(j), step=t,
                                expected=int(want[j]), actual=int(got[j])))
            if int(word) >> layer.n_out:
                out.append(dict(sample=s, what="trace padding bits", layer=li, neuron=None, step=t,
                                expected=0, actual=int(word) >> layer.n_out))
    return out


def _readout_mismatches(net: Network, ref: golden.Result, b: int, hw: dict, s: int,
                        check_class: bool = True) -> list[dict]:
    """The last layer's counts and membranes (and the class) against ``ref``."""
    out = []
    last = len(net.layers) - 1
    for what, key, want_arr in (("count", "counts", ref.counts[last][b]),
                                ("membrane", "membrane", ref.membrane[last][b])):
        got = hw[key]
        for j in range(net.n_out):
            if int(got[j]) != int(want_arr[j]):
                out.append(dict(sample=s, what=what, layer=last, neuron=j, step=None,
                                expected=int(want_arr[j]), actual=int(got[j])))
    if check_class and int(hw["cls"]) != int(ref.prediction[b]):
        out.append(dict(sample=s, what="class", layer=last, neuron=None, step=None,
                        expected=int(ref.prediction[b]), actual=int(hw["cls"])))
    return out


def describe(m: dict) -> str:
    where = [f"sample {m['sample']}", f"layer {m['layer']}"]
    if m.get("neuron") is not None:
        where.append(f"neuron {m['neuron']}")
    if m.get("step") is not None:
        where.append(f"step {m['step']}")
    return f"{m['what']} mismatch at {', '.join(where)}: expected {m['expected']}, got {m['actual']}"


def dump(obj) -> str:
    return json.dumps(obj)
