"""Run a :class:`NetworkTop` in Amaranth's simulator on spike trains: stream driver, monitors, cycle counts.

Used by tests/test_hdl_top.py; also handy for a quick check without an HDL simulator::

    out = simulate_top(net, config, spikes)          # spikes: bool (batch, T, n_in)
    out.prediction, out.counts, out.membrane, out.trace, out.cycles
"""
from __future__ import annotations

import dataclasses
import random

import numpy as np
from amaranth import ClockDomain, Module
from amaranth.sim import Simulator

from bsnn_hw import contract

from .config import HwConfig
from .top import NetworkTop


@dataclasses.dataclass
class TopRun:
    """Per sample: prediction (cls), counts and membranes of the last layer (from o_result), trace spikes
    (T, L) lists of n_out_l bool arrays when traced, and cycles (first accepted input beat to last result beat,
    both edges counted), and the step each sample ran to (the decision step with early_exit, else T - 1)."""
    prediction: np.ndarray
    counts: np.ndarray
    membrane: np.ndarray
    indices: np.ndarray
    last_flags: np.ndarray
    cls_per_beat: np.ndarray
    trace: list | None
    cycles: list
    steps: np.ndarray | None = None
    totals: np.ndarray | None = None      # an ensemble's per-class totals and votes (batch, n_out)
    votes: np.ndarray | None = None


def input_beats(spikes_t: np.ndarray, width: int, timesteps: int | None = None) -> list[int]:
    """The i_spikes beats of one sample ((T, n_in) bool): step-major, then word (contract.pack_words). A "pixel"
    network's sample is its intensities (n_in,) uint8 (give ``timesteps``): every step sends their 8 bit planes,
    plane b's words b-th (contract.bit_planes, each plane packed and zero padded on its own)."""
    spikes_t = np.asarray(spikes_t)
    if spikes_t.ndim == 1:
        if spikes_t.dtype != np.uint8:
            raise TypeError(f"a 'pixel' sample must be uint8 intensities (n_in,), not {spikes_t.dtype}")
        if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 1:
            raise ValueError(f"a 'pixel' sample's beats repeat every step: give timesteps >= 1, not {timesteps!r}")
        planes = [w for plane in contract.bit_planes(spikes_t) for w in contract.pack_words(plane, width)]
        return planes * timesteps
    if spikes_t.ndim != 2 or spikes_t.dtype != bool:
        raise ValueError(f"a sample must be bool spikes (T, n_in) (or a 'pixel' sample's uint8 (n_in,)), not "
                         f"{spikes_t.dtype} {spikes_t.shape}")
    beats = []
    for step in spikes_t:
        beats += contract.pack_words(step, width)
    return beats


def simulate_top(net, config: HwConfig | None = None, spikes=None, trace: bool = False, src_gap: float = 0.0,
                 sink_stall: float = 0.0, seed: int = 0, reset_junk_beats: int | None = None,
                 reset_wait: int = 0, pad_garbage: bool = False, max_cycles: int = 2_000_000, members=None,
                 pixels=None) -> TopRun:
    """Drive ``spikes`` (bool (batch, T, n_in)) through the top and collect its streams.

    ``src_gap`` / ``sink_stall``: probability of a gap on i_spikes / of ready low on o_result and o_trace each
    cycle. ``reset_junk_beats``: first send that many beats of a random sample, wait ``reset_wait`` cycles, pulse
    ``rst`` (a reset mid-inference), then run the real samples. ``pad_garbage``: set the padding bits of each
    input word randomly (the hardware must ignore them). ``members``: an ensemble's member networks (NetworkTop's
    argument); the trace then holds (member, layer, step, spikes) beats, S * T * L per sample. With
    ``config.encoder`` the top takes ``pixels`` (uint8 (batch, n_in)), one per beat, and ``spikes`` is unused."""
    config = HwConfig.default(net) if config is None else config
    if config.encoder:
        from bsnn_hw.encode import intensities
        pixels = intensities(pixels, net.n_in)
        batch = pixels.shape[0]
    else:
        spikes = net.as_inputs(spikes)
        batch = spikes.shape[0]
    dut = NetworkTop(net, config, trace, members=members)
    ens = dut.members > 1
    m = Module()
    m.domains.sync = cd = ClockDomain("sync")
    m.submodules.dut = dut
    sim = Simulator(m)
    sim.add_clock(1e-6, domain="sync")
    rng = random.Random(seed)
    width = dut.input_width
    pad_bits = dut.plane_words * width - net.n_in

    samples = []
    for b in range(batch):
        if config.encoder:
            samples.append([int(v) for v in pixels[b]])
            continue
        beats = input_beats(spikes[b], width, net.timesteps)
        if pad_garbage and pad_bits:
            hi_mask = ((1 << pad_bits) - 1) << (width - pad_bits)
            beats = [x | (rng.getrandbits(width) & hi_mask) if (k % dut.plane_words == dut.plane_words - 1) else x
                     for k, x in enumerate(beats)]
        samples.append(beats)

    state = {"cycle": 0, "armed": reset_junk_beats is None, "accept": [], "last": [], "done": False}
    results, traces = [], []

    async def clock_counter(ctx):
        while not state["done"]:
            await ctx.tick()
            state["cycle"] += 1
            if state["cycle"] > max_cycles:
                raise AssertionError(f"simulation ran past {max_cycles} cycles")

    async def source(ctx):
        s = dut.i_pixels if config.encoder else dut.i_spikes
        if reset_junk_beats is not None:
            junk_spikes = (np.array([rng.randrange(256) for _ in range(net.n_in)], dtype=np.uint8)
                           if net.encoding == "pixel" else
                           np.array([[rng.random() < 0.5 for _ in range(net.n_in)] for _ in range(net.timesteps)]))
            junk = ([rng.randrange(256) for _ in range(net.n_in)] if config.encoder
                    else input_beats(junk_spikes, width, net.timesteps))
            sent = 0
            while sent < reset_junk_beats:
                ctx.set(s.valid, 1)
                ctx.set(s.payload, junk[sent % len(junk)])
                ready = ctx.get(s.ready)
                await ctx.tick()
                sent += bool(ready)
            ctx.set(s.valid, 0)
            for _ in range(reset_wait):
                await ctx.tick()
            ctx.set(cd.rst, 1)
            await ctx.tick()
            ctx.set(cd.rst, 0)
            state["armed"] = True
        for beats in samples:
            first = True
            for beat in beats:
                while src_gap and rng.random() < src_gap:
                    ctx.set(s.valid, 0)
                    await ctx.tick()
                ctx.set(s.valid, 1)
                ctx.set(s.payload, beat)
                while True:
                    ready = ctx.get(s.ready)
                    edge = state["cycle"]
                    await ctx.tick()
                    if ready:
                        break
                if first:
                    state["accept"].append(edge)
                    first = False
            ctx.set(s.valid, 0)

    async def sink(ctx):
        o = dut.o_result
        for _ in range(batch):
            beats = []
            while True:
                ctx.set(o.ready, 0 if (sink_stall and rng.random() < sink_stall) else 1)
                valid, ready = ctx.get(o.valid), ctx.get(o.ready)
                payload = ctx.get(o.payload)
                edge = state["cycle"]
                await ctx.tick()
                if valid and ready:
                    if not state["armed"]:
                        continue
                    beats.append(dict(index=payload.index, count=payload.count, membrane=payload.membrane,
                                      cls=payload.cls, last=payload.last,
                                      step=payload.step if config.early_exit else net.timesteps - 1,
                                      total=payload.total if ens else 0, votes=payload.votes if ens else 0))
                    if payload.last:
                        break
            state["last"].append(edge)
            results.append(beats)
        state["done"] = True

    async def trace_sink(ctx):
        o = dut.o_trace
        while not state["done"]:
            ctx.set(o.ready, 0 if (sink_stall and rng.random() < sink_stall) else 1)
            valid, ready = ctx.get(o.valid), ctx.get(o.ready)
            payload = ctx.get(o.payload)
            await ctx.tick()
            if valid and ready and state["armed"]:
                traces.append(((payload.member,) if ens else ()) + (payload.layer, payload.step, payload.spikes))

    sim.add_process(clock_counter)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    if trace:
        sim.add_testbench(trace_sink, background=True)
    sim.run()

    n_out = net.n_out
    counts = np.array([[b["count"] for b in r] for r in results], dtype=np.int64).reshape(batch, -1)
    membrane = np.array([[b["membrane"] for b in r] for r in results], dtype=np.int64).reshape(batch, -1)
    indices = np.array([[b["index"] for b in r] for r in results], dtype=np.int64).reshape(batch, -1)
    last_flags = np.array([[b["last"] for b in r] for r in results], dtype=np.int64).reshape(batch, -1)
    cls = np.array([[b["cls"] for b in r] for r in results], dtype=np.int64).reshape(batch, -1)
    trace_out = None
    if trace:
        L = len(net.layers)
        trace_out = []
        # every step up to the decision (all T steps without early_exit), L beats each
        per = [(r[0]["step"] + 1) * L * dut.members for r in results]
        if len(traces) != sum(per):
            raise AssertionError(f"expected {sum(per)} trace beats, got {len(traces)}")
        k = 0
        for b in range(batch):
            trace_out.append(traces[k:k + per[b]])
            k += per[b]
    cycles = [last - first + 1 for first, last in zip(state["accept"], state["last"])]
    assert counts.shape == (batch, n_out), counts.shape
    steps = np.array([r[0]["step"] for r in results], dtype=np.int64)
    totals = votes = None
    if ens:
        totals = np.array([[b["total"] for b in r] for r in results], dtype=np.int64).reshape(batch, -1)
        votes = np.array([[b["votes"] for b in r] for r in results], dtype=np.int64).reshape(batch, -1)
    return TopRun(cls[:, 0], counts, membrane, indices, last_flags, cls, trace_out, cycles, steps, totals, votes)
