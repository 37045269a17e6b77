"""Testbench classes (cocotb side). :class:`NetworkTB` owns one network top's reset, stream driver, result and trace
monitors and its scoreboard against ``bsnn_hw.golden``, in the manner of cocotbext-axi's benches.

Usage inside a cocotb test (see ``bsnn_hw.sim.cocotb_network``)::

    tb = NetworkTB(dut, unit_params, dut.clk)
    await tb.reset()
    summary = await tb.run_all()        # every sample, checked; mismatches logged as expected vs actual
"""
from __future__ import annotations

import logging
import random
import time

import numpy as np

import cocotb
from cocotb.triggers import ClockCycles, with_timeout
from cocotb.utils import get_sim_time

import bsnn_hw
from bsnn_hw import contract
from bsnn_hw.sim.network import (compare, compare_ensemble, decode, describe, ensemble_members, expected,
                                  expected_ensemble, input_beats)
from bsnn_hw.sim.stream import StreamDriver, StreamMonitor

CLOCK_NS = 10
STALL_MAX = 4


class SampleTimeout(Exception):
    pass


class NetworkTB:
    """One network top (its ports named ``<prefix><port>``) with its stimulus (``spikes``), golden reference and
    scoreboard. ``p`` is one unit's parameter dict from :func:`bsnn_hw.sim.network.build_units`."""

    def __init__(self, dut, p: dict, clk):
        self.p = p
        self.clk = clk
        prefix = p["prefix"]
        self.name = p.get("name", prefix)
        self.log = logging.getLogger(f"cocotb.tb.{self.name}")
        self.net = bsnn_hw.load(p["artifact"])
        self.spikes = np.load(p["spikes"])
        self.early = bool((p.get("config") or {}).get("early_exit"))
        # an ensemble artifact is built as its ensemble (bsnn_hw.hdl.generate): S >= 2 members -> totals and votes;
        # one member -> the hardware is that member's network
        mems = ensemble_members(self.net)
        self.members = len(mems) if len(mems) > 1 else 1
        if len(mems) == 1:
            self.net = mems[0]
        if self.members > 1:
            self.member_refs, self.ens = expected_ensemble(self.net, self.spikes)
            self.ref, self.decision = self.member_refs[-1], None
        else:
            self.ref, self.decision = expected(self.net, self.spikes, self.early)
        self.width = int(p["input_width"])
        self.layouts = p["layouts"]
        self.trace = bool(p["trace"])
        seed = int(p.get("seed", 0))
        self.rng = random.Random(seed)
        self.rst = getattr(dut, f"{prefix}rst")
        self.rst.value = 0
        # an on-chip-encoder top takes the sample's pixels (one per beat) instead of its spike words
        self.pixels = np.load(p["pixels"]) if p.get("pixels") else None
        port = "i_pixels" if self.pixels is not None else "i_spikes"
        self.driver = StreamDriver(dut, f"{prefix}{port}", clk, p.get("stall_in", 0.0), STALL_MAX, seed)
        self.results = StreamMonitor(dut, f"{prefix}o_result", clk, p.get("stall_out", 0.0), STALL_MAX, seed + 1)
        self.tracer = (StreamMonitor(dut, f"{prefix}o_trace", clk, p.get("stall_out", 0.0), STALL_MAX, seed + 2)
                       if self.trace else None)
        self.cycles_expected = int(p.get("cycles_expected") or 0)
        stall = max(p.get("stall_in", 0.0), p.get("stall_out", 0.0))
        beats = self.members * self.net.timesteps * (1 + len(self.net.layers)) + self.net.n_out
        # Generous: the expected cycles, plus every beat stalled the maximum, plus slack.
        self.timeout_cycles = 4 * self.cycles_expected + int(stall > 0) * 4 * STALL_MAX * (
            beats + self.spikes.shape[-1] * (contract.PIXEL_BITS if self.spikes.ndim == 2 else 1)) * self.net.timesteps + 2000

    async def reset(self, cycles: int = 2) -> None:
        """Synchronous active-high reset for ``cycles`` clocks; the monitors restart with empty queues."""
        self.driver.idle()
        self.rst.value = 1
        await ClockCycles(self.clk, cycles)
        self.rst.value = 0
        self.results.clear()
        if self.tracer:
            self.tracer.clear()
        self.results.start()
        if self.tracer:
            self.tracer.start()

    async def _collect(self) -> dict:
        net = self.net
        lay_r = self.layouts["o_result"]
        beats = []
        for _ in range(net.n_out):
            value, t = await self.results.recv()
            beats.append((decode(value, lay_r), t))
        framing = []
        counts = [None] * net.n_out
        membrane = [None] * net.n_out
        for k, (f, _t) in enumerate(beats):
            if f["index"] != k:
                framing.append(f"o_result beat {k} has index {f['index']}")
            if f["last"] != (k == net.n_out - 1):
                framing.append(f"o_result beat {k} has last = {f['last']}")
            if f["cls"] != beats[0][0]["cls"]:
                framing.append(f"o_result beat {k} has cls {f['cls']}, beat 0 had {beats[0][0]['cls']}")
            if 0 <= f["index"] < net.n_out:
                counts[f["index"]] = f["count"]
                membrane[f["index"]] = f["membrane"]
        counts = [c if c is not None else -1 for c in counts]
        membrane = [v if v is not None else -(1 << 40) for v in membrane]
        hw = dict(counts=counts, membrane=membrane, cls=beats[0][0]["cls"], framing=framing,
                  t_last=beats[-1][1])
        if self.members > 1:
            for key, field in (("totals", "total"), ("votes", "votes")):
                vals = [None] * net.n_out
                for f, _t in beats:
                    if 0 <= f["index"] < net.n_out:
                        vals[f["index"]] = f[field]
                hw[key] = [v if v is not None else -(1 << 40) for v in vals]
        steps_run = net.timesteps
        if self.early:
            hw["step"] = beats[0][0]["step"]
            for k, (f, _t) in enumerate(beats):
                if f["step"] != hw["step"]:
                    framing.append(f"o_result beat {k} has step {f['step']}, beat 0 had {hw['step']}")
            steps_run = min(net.timesteps, hw["step"] + 1)
        if self.tracer:
            lay_t = self.layouts["o_trace"]
            L, S = len(net.layers), self.members
            traces = [[[None] * net.timesteps for _ in net.layers] for _ in range(S)]
            k = 0
            while not self.tracer.queue.empty():
                value, _ = self.tracer.queue.get_nowait()
                f = decode(value, lay_t)
                m_exp, rest = divmod(k, steps_run * L)
                t_exp, l_exp = divmod(rest, L)
                got = (f.get("member", 0), f["layer"], f["step"])
                if got != (m_exp, l_exp, t_exp):
                    framing.append(f"o_trace beat {k} carries member {got[0]} layer {got[1]} step {got[2]}, "
                                   f"expected member {m_exp} layer {l_exp} step {t_exp}")
                if got[0] < S and f["layer"] < L and f["step"] < net.timesteps:
                    traces[got[0]][f["layer"]][f["step"]] = f["spikes"]
                k += 1
            if k != S * steps_run * L:
                framing.append(f"{k} o_trace beats before the last o_result beat, expected {S * steps_run * L}")
            if S > 1:
                hw["member_traces"] = traces
            else:
                hw["trace"] = traces[0]
        return hw

    def _beats(self, b: int) -> list[int]:
        if self.pixels is not None:
            return [int(v) for v in self.pixels[b]]
        return input_beats(self.spikes[b], self.width, self.net.timesteps)

    async def run_sample(self, b: int) -> dict:
        """Stream sample ``b`` in and its results out; returns the hardware's values (see network.compare) plus
        ``cycles`` (first accepted input beat to last result beat)."""
        beats = self._beats(b)
        self.driver.mark()
        send = cocotb.start_soon(self.driver.send(beats))
        try:
            hw = await with_timeout(self._collect(), self.timeout_cycles * CLOCK_NS, "ns")
        except Exception as e:   # cocotb's SimTimeoutError
            send.cancel()
            raise SampleTimeout(f"sample {b}: no complete result within {self.timeout_cycles} cycles "
                                f"({self.results.queue.qsize()} result beats queued, {self.driver.beats_sent} "
                                f"input beats taken): {type(e).__name__}") from None
        if self.early and not send.done() and self.pixels is None:
            await send                   # an early decision: the top takes and drops the sample's remaining beats
        if not send.done():
            hw["framing"].append("all results came before the input was consumed")
            send.cancel()
        period = _period_steps()
        # Inclusive count of the clock edges from the one accepting the first input beat to the one moving the last
        # result beat (docs/hardware.md; the HDL's own testbench counts the same way).
        hw["cycles"] = int(round((hw.pop("t_last") - self.driver.first_accept_time) / period)) + 1
        return hw

    async def reset_mid_inference(self, b: int) -> int:
        """Start sample ``b``, reset after a random number of cycles into it, and drop whatever came out."""
        beats = self._beats(b)
        send = cocotb.start_soon(self.driver.send(beats))
        cut = self.rng.randint(1, max(2, self.cycles_expected))
        await ClockCycles(self.clk, cut)
        send.cancel()
        await self.reset(self.rng.randint(1, 3))
        return cut

    async def run_all(self) -> dict:
        """Every sample through the scoreboard. Returns {samples, mismatches, checked, cycles, wall_s, sim_cycles}."""
        t0 = time.perf_counter()
        c0 = get_sim_time("step")
        samples, mismatches = [], []
        cut = None
        if self.p.get("reset_mid"):
            cut = await self.reset_mid_inference(0)
            self.log.info("reset %d cycles into sample 0", cut)
        for b in range(self.spikes.shape[0]):
            try:
                hw = await self.run_sample(b)
            except SampleTimeout as e:
                self.log.error("%s", e)
                mismatches.append(dict(sample=b, what="timeout", layer=None, neuron=None, step=None,
                                       expected="results", actual=str(e)))
                await self.reset()
                continue
            if self.members > 1:
                bad = compare_ensemble(self.net, self.member_refs, self.ens, b, hw)
            else:
                bad = compare(self.net, self.ref, b, hw, decision=self.decision)
            for m in bad[:20]:
                self.log.error("%s: %s", self.name, describe(m))
            if len(bad) > 20:
                self.log.error("%s: ... %d more mismatches in sample %d", self.name, len(bad) - 20, b)
            mismatches.extend(bad)
            samples.append(hw)
        if self.cycles_expected and samples:
            self.log.info("%s: cycles per inference measured %s, expected %d", self.name,
                          sorted({s["cycles"] for s in samples}), self.cycles_expected)
        return dict(name=self.name, samples=samples, mismatches=mismatches, checked=len(samples),
                    reset_cut=cut, wall_s=time.perf_counter() - t0,
                    sim_cycles=int((get_sim_time("step") - c0) / _period_steps()))


def _period_steps() -> int:
    from cocotb.utils import get_sim_steps
    return get_sim_steps(CLOCK_NS, "ns")
