"""`bsnn-hw verify`: run the generated full-network RTL on real (or random) inputs and compare it bit for bit with the
golden model.

:func:`verify` generates the network top with ``trace=True`` (so every dense layer's output spikes, and every conv or
pool layer's spike count, at every step come back on ``o_trace``), streams the encoded samples through it on Icarus
or Verilator with the cocotb bench of ``bsnn_hw.sim.network``, and compares per sample: those traces, the last
layer's counts and
membranes, and the class. The report (a JSON-able dict) gives per-sample agreement with per-layer spike counts, the
first mismatch (sample, layer, neuron, step), hardware accuracy next to the golden model's and the float (PyTorch)
accuracy recorded by the trainer, spikes per layer hardware against software, cycles per inference (measured and the
manifest's), and the simulation speed.
"""
from __future__ import annotations

import time

import numpy as np

from bsnn_hw.checks import check_callable, check_flag
from bsnn_hw.network import Network

from . import network as netbench


def float_predictions(net: Network, data: str | None) -> np.ndarray | None:
    """The trainer's float (PyTorch) class for every test sample of ``data``, from the artifact's metadata, or None
    when the artifact has none for that data set."""
    from bsnn_hw.io import decode_predictions
    metrics = net.meta("metrics")
    enc = metrics.get("float_predictions")
    if data is None or not isinstance(enc, str) or metrics.get("dataset") != data:
        return None
    try:
        pred = decode_predictions(enc)
    except ValueError:
        return None
    return pred if len(pred) == metrics.get("test_samples") else None


def float_accuracy(net: Network, data: str | None = None, offset: int = 0, labels=None) -> tuple[float | None, str]:
    """The float (PyTorch) model's accuracy on the same samples as the hardware (``labels`` = test samples
    ``offset``.. of ``data``) when the artifact carries its per-sample predictions; else None and why."""
    pred = float_predictions(net, data)
    if labels is None:
        return None, "no labels"
    if pred is not None and offset + len(labels) <= len(pred):
        return float((pred[offset:offset + len(labels)] == np.asarray(labels)).mean()), \
            "the trainer's float model on these samples"
    return None, "not available for these samples (the artifact has no float predictions for this data set)"


def load_inputs(net: Network, data: str | None, samples: int, seed: int = 0, offset: int = 0):
    """(x uint8 (N, n_in) or None, spikes bool (N, T, n_in), labels or None, description)."""
    if not isinstance(net, Network):
        raise TypeError(f"net must be a bsnn_hw.Network, not {type(net).__name__}")
    for name, v in (("--samples", samples), ("--seed", seed), ("--offset", offset)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"{name} must be an int, not {v!r}")
    if samples < 1:
        raise ValueError(f"--samples must be at least 1, not {samples}")
    if seed < 0:
        raise ValueError(f"--seed must be at least 0, not {seed}")
    if data is None and offset:
        raise ValueError(f"--offset {offset} chooses test samples of a data set; random inputs have none")
    if data is None:
        from bsnn_hw.io import check_memory
        # The spike trains (one byte a bit) and the golden model's record of them, before anything is simulated.
        check_memory(2 * samples * net.timesteps * net.n_in, f"--samples {samples} random inputs")
        rng = np.random.default_rng(seed)
        if net.encoding == "direct":
            spikes = rng.random((samples, net.timesteps, net.n_in)) < 0.5
            return None, spikes, None, f"{samples} random spike trains (seed {seed})"
        x = rng.integers(0, 256, (samples, net.n_in), dtype=np.uint8)
        return x, net.encode(x), None, f"{samples} random uint8 inputs (seed {seed})"
    if net.encoding == "direct":
        raise ValueError("the model's encoding is 'direct' (spike trains supplied by the caller); a data set of "
                         "intensities cannot be encoded for it: run verify without --data")
    from bsnn_hw.data import load_dataset
    split_seed = net.meta("config").get("split_seed") or 0
    if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
        raise ValueError(f"metadata.config.split_seed must be an integer >= 0, not {split_seed!r}")
    x, y = load_dataset(data, "test", seed=split_seed)
    if x.shape[1] != net.n_in:
        raise ValueError(f"data set {data!r} has {x.shape[1]} features per sample but the model has {net.n_in} "
                         f"inputs")
    if offset < 0 or offset >= len(x):
        raise ValueError(f"--offset must be in 0..{len(x) - 1}, not {offset}")
    if offset + samples > len(x):
        raise ValueError(f"--samples {samples} from --offset {offset}: {data}'s test split has {len(x)} samples, "
                         f"so at most {len(x) - offset} from there")
    x, y = x[offset:offset + samples], y[offset:offset + samples]
    return x, net.encode(x), y, f"{len(x)} test samples of {data} (from index {offset})"


def _popcount(v: int) -> int:
    return bin(int(v)).count("1")


def verify(net: Network, spikes: np.ndarray, labels=None, sim: str = "verilator", config=None, waves: bool = False,
           stalls: bool = False, seed: int = 0, cache_dir=None, run_dir=None, data: str | None = None,
           offset: int = 0, progress=None, pixels=None) -> dict:
    """Run the RTL on ``spikes`` (bool (N, T, n_in)) and compare with the golden model; returns the report dict.
    ``data``/``offset``: the test samples' origin, for the float model's accuracy on the same samples.
    ``progress``: a callable taking one line per phase (build, simulate, compare). ``pixels``: the uint8 images
    ``spikes`` were encoded from; an on-chip-encoder design (``config.encoder``) is fed them."""
    from bsnn_hw.data import check_labels
    from bsnn_hw.encode import intensities
    from bsnn_hw.hdl import HwConfig
    from bsnn_hw.hdl.config import check_design
    from bsnn_hw.sim.runner import check_simulator
    check_simulator(sim)                      # before any file is written
    cfg = config if config is not None else HwConfig.default(net)
    check_design(net, cfg)
    waves, stalls = check_flag("waves", waves), check_flag("stalls", stalls)
    check_callable("progress", progress, "a function of one line")
    spikes = net.as_inputs(spikes)
    if spikes.shape[0] < 1:
        raise ValueError("spikes must hold at least one sample")
    labels = check_labels(labels, len(spikes), net.n_out)
    if pixels is not None:
        pixels = intensities(pixels, net.n_in)
        if len(pixels) != len(spikes) or not np.array_equal(net.as_inputs(net.encode(pixels)), spikes):
            raise ValueError("pixels must be the images the spikes were encoded from (the model's encoding of "
                             "pixels gives other spikes)")
    if cfg.encoder and pixels is None:
        raise ValueError("the on-chip encoder takes images (uint8 intensities): give pixels (random inputs of a "
                         "'direct' model have none)")
    model = net                       # the artifact (metadata: float predictions)
    mems = netbench.ensemble_members(net)
    S = len(mems)
    n_layers = len(net.layers)
    if S >= 2:                        # the ensemble in hardware: members' traces, totals, votes, ensemble class
        refs, ens = netbench.expected_ensemble(net, spikes)
        ref, decision, golden_pred = refs[-1], None, ens.prediction
        layer_counts = [sum(r.counts[li] for r in refs) for li in range(n_layers)]
    else:
        if S == 1:                    # a one-member ensemble is built as its member
            net = mems[0]
        ref, decision = netbench.expected(net, spikes, cfg.early_exit)
        golden_pred = ref.prediction
        layer_counts = [ref.counts[li] for li in range(n_layers)]
    unit = netbench.Unit(model if S >= 2 else net, spikes, cfg, trace=True, stall_in=0.3 if stalls else 0.0,
                         stall_out=0.3 if stalls else 0.0, seed=seed, name="model",
                         pixels=pixels)
    t0 = time.perf_counter()
    run = None
    try:
        if progress:
            progress(f"generating the RTL and simulating {spikes.shape[0]} sample(s), T = {net.timesteps}")
        run, units = netbench.run_network([unit], sim, waves=waves, cache_dir=cache_dir, run_dir=run_dir,
                                          progress=progress)
        failure = None
    except Exception as e:
        from .runner import SimFailure
        if not isinstance(e, SimFailure):
            raise
        failure = e
        units = _results_after_failure(e)
        if units is None:
            raise
    wall = time.perf_counter() - t0
    hw = units[0]
    n = spikes.shape[0]
    per_sample, first = [], None
    all_mism = []
    hw_layer_spikes = np.zeros((n, n_layers), dtype=np.int64)
    for b, s in enumerate(hw["samples"]):
        if S >= 2:
            mism = netbench.compare_ensemble(net, refs, ens, b, s)
        else:
            mism = netbench.compare(net, ref, b, s, decision=decision)
        all_mism.extend(mism)
        if mism and first is None:
            first = mism[0]
        traces = s.get("member_traces") if S >= 2 else [s.get("trace")]
        for li in range(n_layers):
            # a dense layer's trace beat is its spike bits; a conv or pool layer's beat is its map's spike count
            count = int if net.layers[li].kind != "dense" else _popcount
            hw_layer_spikes[b, li] = sum(count(v) for tr in traces or [] if tr for v in tr[li] if v is not None)
        per_sample.append(dict(
            sample=b, agree=not mism, mismatches=len(mism),
            label=None if labels is None else int(labels[b]),
            hw_class=int(s["cls"]), golden_class=int(golden_pred[b]),
            hw_spikes=[int(v) for v in hw_layer_spikes[b]],
            golden_spikes=[int(layer_counts[li][b].sum()) for li in range(n_layers)],
            cycles=int(s["cycles"]), step=s.get("step")))
    checked = len(hw["samples"])
    if checked < n:       # a sample that timed out never came back
        all_mism.extend(m for m in hw["mismatches"] if m.get("what") == "timeout")
        if first is None and all_mism:
            first = all_mism[0]
    sw_layer_spikes = np.stack([layer_counts[li].sum(axis=1) for li in range(n_layers)], axis=1)[:checked]
    hw_pred = np.array([s["hw_class"] for s in per_sample], dtype=np.int64)
    acc = {}
    if labels is not None and checked:
        y = np.asarray(labels)[:checked]
        acc["hardware"] = float((hw_pred == y).mean())
        acc["golden"] = float((golden_pred[:checked] == y).mean())
    fa, fa_src = float_accuracy(model, data, offset, None if labels is None else np.asarray(labels)[:checked])
    acc["float"] = fa
    acc["float_source"] = fa_src
    cycles = sorted({s["cycles"] for s in per_sample})
    sim_cycles = int(run.results.get("sim_cycles", 0)) if run is not None else 0
    sim_wall = float(run.results.get("wall_s", 0.0)) if run is not None else 0.0
    expected_cycles = None
    from bsnn_hw.hdl import cycles_per_inference
    expected_cycles = int(cycles_per_inference(net, cfg, trace=True, members=max(1, S)))
    data_dependent = None
    from bsnn_hw.hdl.config import data_dependent as varies, sample_cycles
    if varies(cfg):
        want = sample_cycles(net, cfg, spikes[:checked], trace=True)
        measured = [s["cycles"] for s in per_sample]
        data_dependent = dict(
            formula_equal=sum(1 for m_, w in zip(measured, want) if m_ == w["cycles"]), samples=len(want),
            measured_min=min(measured) if measured else None, measured_max=max(measured) if measured else None,
            measured_median=float(np.median(measured)) if measured else None,
            drain_median=float(np.median([w["drain"] for w in want])) if want else None,
            decision_step_median=float(np.median([w["step"] for w in want])) if want else None,
            worst_case=expected_cycles)
    report = dict(
        simulator=sim, samples=n, checked=checked, members=S,
        agree=sum(1 for s in per_sample if s["agree"]), mismatching_samples=sum(1 for s in per_sample
                                                                                 if not s["agree"]),
        mismatches=len(all_mism), first_mismatch=first,
        first_mismatch_text=None if first is None else netbench.describe(first),
        accuracy=acc,
        spikes_per_layer=dict(hardware=[float(v) for v in hw_layer_spikes[:checked].mean(axis=0)] if checked else [],
                              golden=[float(v) for v in sw_layer_spikes.mean(axis=0)] if checked else [],
                              layers=[f"layer {i} ({layer.n_out})" for i, layer in enumerate(net.layers)]),
        cycles_per_inference=dict(measured=cycles[0] if len(cycles) == 1 else cycles,
                                  manifest=expected_cycles, data_dependent=data_dependent,
                                  note="with --stalls the measured figure includes the stalls" if stalls else
                                  "always-valid source, always-ready sinks; o_trace enabled"),
        speed=dict(sim_cycles=sim_cycles, sim_seconds=round(sim_wall, 3),
                   cycles_per_second=round(sim_cycles / sim_wall) if sim_wall > 0 else None,
                   build_seconds=round(run.build_seconds, 2) if run is not None else None,
                   built=run.built if run is not None else None, total_seconds=round(wall, 2)),
        folding=[dict(parallel=lc.parallel, width=lc.width) for lc in cfg.layers],
        per_sample=per_sample,
        run_dir=str(run.run_dir) if run is not None else None,
        waves=str(run.waves) if run is not None and run.waves is not None else None,
        failure=None if failure is None else str(failure).splitlines()[0],
    )
    return report


def _results_after_failure(e) -> list | None:
    """The per-unit results the bench wrote before failing (it writes them whether or not it fails)."""
    import json
    import re
    from pathlib import Path
    m = re.search(r"--- log tail \((.*?)/sim\.log\) ---", str(e))
    if not m:
        return None
    path = Path(m.group(1)) / "results.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("units")


def plot(report: dict, path) -> None:
    """Hardware against software spike counts per layer (mean per sample), and per sample for every layer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bsnn_hw.io import atomic_write
    sp = report["spikes_per_layer"]
    layers = sp["layers"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    x = np.arange(len(layers))
    axes[0].bar(x - 0.2, sp["golden"], 0.4, label="software (golden model)")
    axes[0].bar(x + 0.2, sp["hardware"], 0.4, label=f"hardware ({report['simulator']})")
    axes[0].set_xticks(x, layers)
    axes[0].set_ylabel("spikes per sample\n(all steps, all neurons; mean)")
    axes[0].set_xlabel("layer")
    axes[0].set_title(f"spikes per layer, {report['checked']} samples")
    axes[0].legend()
    for li, name in enumerate(layers):
        g = [s["golden_spikes"][li] for s in report["per_sample"]]
        h = [s["hw_spikes"][li] for s in report["per_sample"]]
        axes[1].scatter(g, h, s=12, label=name, alpha=0.7)
    lim = max([1] + [max(s["golden_spikes"] + s["hw_spikes"]) for s in report["per_sample"]])
    axes[1].plot([0, lim], [0, lim], "k--", lw=0.8, label="equal")
    axes[1].set_xlabel("golden model: spikes of a layer in one sample\n(all steps, all neurons)")
    axes[1].set_ylabel("RTL: the same count")
    axes[1].set_title(f"{report['agree']}/{report['samples']} samples bit-exact")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
