"""cocotb side of the per-block benches (host side: ``bsnn_hw.sim.blocks``).

Every unit runs concurrently on the shared clock. Cycle convention: iteration i begins right after clock edge i,
writes the inputs that edge i+1 samples, and reads the outputs in the ``ReadOnly`` phase (settled values after edge
i). A block of latency L therefore shows the result of inputs written in iteration i in iteration i + L.

Checks
------
rom      o_data = WeightROM.contents[i_addr] one cycle after an enabled read, held while i_en is low.
synapse  o_sum = 2 popcount(s & b) - popcount(s) and o_valid = i_valid, both ``latency`` cycles later.
neuron   per group and step: spikes, membranes (after reset) and counts of a per-neuron model written from the
         contract's own functions (contract.leak, contract.saturate), i_first clearing the state at step 0;
         results ``latency`` cycles after the group is presented; the readout port after the last step.
engine   per step: o_spikes against the golden model of the one-layer network; o_done exactly ``step_cycles``
         after i_start; the input words served from a synchronous RAM model (one cycle after o_in_addr);
         membranes and counts through the readout port after the last step.
"""
import logging
import random

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from bsnn_hw import contract, golden
from bsnn_hw.network import Layer, Network
from bsnn_hw.sim.runner import load_params, write_results


def _lanes(value, lanes: int, width: int, signed: bool) -> list:
    if not isinstance(value, int):          # X/Z bits: every lane reports them
        return [value] * lanes
    out = []
    for p in range(lanes):
        v = (int(value) >> (p * width)) & ((1 << width) - 1)
        if signed and width and v >> (width - 1):
            v -= 1 << width
        out.append(v)
    return out


def _u(sig):
    """The unsigned value of a signal, or the string of its bits when it holds X/Z (reported as a mismatch)."""
    v = sig.value
    if not v.is_resolvable:
        return str(v)
    return v.to_unsigned() if hasattr(v, "to_unsigned") else int(v)


def _pack(values, width: int) -> int:
    word = 0
    for p, v in enumerate(values):
        word |= (int(v) & ((1 << width) - 1)) << (p * width)
    return word


def _layer(p) -> Layer:
    z = np.load(p["arrays"])
    th = z["threshold"] if p["has_threshold"] else None
    return Layer(z["weights"], th, p["leak_shift"], p["reset"], p["membrane_bits"], bool(p["fire_once"]))


class Unit:
    def __init__(self, dut, p, clk):
        self.p = p
        self.clk = clk
        self.dut = dut
        self.rng = random.Random(p["seed"])
        self.errors = []
        self.checks = 0
        self.log = logging.getLogger(f"cocotb.block.{p['name']}")

    def port(self, name):
        return getattr(self.dut, self.p["prefix"] + name)

    def check(self, what, expected, actual):
        self.checks += 1
        if expected != actual:
            msg = f"{self.p['name']}: {what}: expected {expected}, got {actual}"
            if len(self.errors) < 20:
                self.log.error("%s", msg)
            self.errors.append(msg)

    async def reset(self):
        rst = self.port("rst")
        rst.value = 1
        await ClockCycles(self.clk, 2)
        rst.value = 0


async def run_rom(u: Unit):
    contents = u.p["contents"]
    addr, en, data = u.port("i_addr"), u.port("i_en"), u.port("o_data")
    en.value = 0
    await u.reset()
    prev = None        # (addr, en) written in the previous iteration
    held = None
    for i in range(u.p["cycles"] + 1):
        a = u.rng.randrange(len(contents))
        e = int(u.rng.random() < 0.75)
        if i < u.p["cycles"]:
            addr.value, en.value = a, e
        else:
            en.value = 0
        await ReadOnly()
        out = _u(data)
        if prev is not None:
            if prev[1]:
                held = contents[prev[0]]
            if held is not None:
                u.check(f"o_data in cycle {i} (address {prev[0]}, enable {prev[1]})", held, out)
        prev = (a, e) if i < u.p["cycles"] else (a, 0)
        await RisingEdge(u.clk)


async def run_synapse(u: Unit):
    w = u.p["width"]
    lat = u.p["latency"]
    iv, isp, iw = u.port("i_valid"), u.port("i_spikes"), u.port("i_weights")
    ov, osum = u.port("o_valid"), u.port("o_sum")
    iv.value = 0
    await u.reset()
    hist = []
    n = u.p["cycles"]
    sum_width = len(osum.value)
    for i in range(n + lat + 1):
        if i < n:
            v = int(u.rng.random() < 0.7)
            dens = u.rng.random()
            s = sum(1 << b for b in range(w) if u.rng.random() < dens)
            b = u.rng.getrandbits(w)
            iv.value, isp.value, iw.value = v, s, b
            hist.append((v, s, b))
        else:
            iv.value = 0
            hist.append((0, 0, 0))
        await ReadOnly()
        j = i - lat
        if j >= 0:
            v, s, b = hist[j]
            u.check(f"o_valid in cycle {i} (input of cycle {j})", v, _u(ov))
            if v:
                want = 2 * bin(s & b).count("1") - bin(s).count("1")
                raw = _u(osum)
                got = _lanes(raw, 1, sum_width, True)[0] if isinstance(raw, int) else raw
                u.check(f"o_sum of s={s:#x} b={b:#x} (W={w})", want, got)
        await RisingEdge(u.clk)


def _neuron_model(layer: Layer, fires: bool):
    """Per-neuron state machine written from the contract's functions (independent of the golden model's
    vectorized form)."""
    n = layer.n_out
    state = dict(v=[0] * n, count=[0] * n, fired=[False] * n)

    def step(j, current, first):
        if first:
            state["v"][j], state["count"][j], state["fired"][j] = 0, 0, False
        v = state["v"][j]
        v = v - int(contract.leak(v, layer.leak_shift))
        v = int(contract.saturate(v + current, layer.membrane_bits))
        fire = fires and v > int(layer.threshold[j])
        if fire:
            v = v - int(layer.threshold[j]) if layer.reset == "subtract" else 0
        out = fire and not (layer.fire_once and state["fired"][j])
        state["fired"][j] = state["fired"][j] or fire
        state["count"][j] += int(out)
        state["v"][j] = v
        return int(out), v, state["count"][j]
    return state, step


async def _check_readout(u: Unit, where: str, n_out: int, P: int, G: int, M: int, cb: int, keep: bool,
                         membrane, count) -> None:
    """Read every group's state through the readout port (data one cycle after the address) and check each
    neuron's membrane (and spike count when the core keeps counts) against the expected values."""
    rd_addr, rd_en, rd_mem, rd_cnt = u.port("i_rd_addr"), u.port("i_rd_en"), u.port("o_rd_membrane"), \
        u.port("o_rd_count")
    for g in range(G):
        rd_addr.value, rd_en.value = g, 1
        await RisingEdge(u.clk)
        rd_en.value = 0
        await ReadOnly()
        mems = _lanes(_u(rd_mem), P, M, True)
        cnts = _lanes(_u(rd_cnt), P, cb, False)
        for p in range(P):
            j = g * P + p
            if j < n_out:
                u.check(f"{where} readout neuron {j}: membrane", int(membrane[j]), mems[p])
                if keep:
                    u.check(f"{where} readout neuron {j}: count", int(count[j]), cnts[p])
        await RisingEdge(u.clk)


async def run_neuron(u: Unit):
    layer = _layer(u.p)
    P, G, T = u.p["parallel"], u.p["groups"], u.p["timesteps"]
    M, sw, lat = layer.membrane_bits, u.p["sum_width"], u.p["latency"]
    fires, keep = u.p["fires"], u.p["keep_count"]
    cb = max(1, (T).bit_length())
    iv, ig, ifirst, isum = u.port("i_valid"), u.port("i_group"), u.port("i_first"), u.port("i_sum")
    ov, og, osp, omem, ocnt = (u.port("o_valid"), u.port("o_group"), u.port("o_spikes"), u.port("o_membrane"),
                               u.port("o_count"))
    rd_en = u.port("i_rd_en")
    iv.value = 0
    rd_en.value = 0
    await u.reset()
    for sample in range(u.p["samples"]):
        state, step = _neuron_model(layer, fires)
        for t in range(T):
            # Present every group on consecutive cycles, then drain the pipeline before the next step.
            sched = []
            order = list(range(G))
            u.rng.shuffle(order)
            for g in order:
                sums = [u.rng.randint(-layer.n_in, layer.n_in) for _ in range(P)]
                sched.append((g, sums))
            presented = {}
            outputs = []
            for i in range(G + lat + 2):
                if i < G:
                    g, sums = sched[i]
                    iv.value, ig.value, ifirst.value = 1, g, int(t == 0)
                    isum.value = _pack(sums, sw)
                    presented[g] = (i, sums)
                else:
                    iv.value = 0
                await ReadOnly()
                if _u(ov) == 1:
                    outputs.append((i, _u(og), _u(osp), _u(omem), _u(ocnt)))
                await RisingEdge(u.clk)
            u.check(f"sample {sample} step {t}: result beats", G, len(outputs))
            for (i, g, spk, mem, cnt) in outputs:
                if g not in presented:
                    u.check(f"sample {sample} step {t}: o_group", "a presented group", g)
                    continue
                i0, sums = presented[g]
                u.check(f"sample {sample} step {t} group {g}: latency", lat, i - i0)
                mems = _lanes(mem, P, M, True)
                cnts = _lanes(cnt, P, cb, False)
                for p in range(P):
                    j = g * P + p
                    if j >= layer.n_out:
                        continue
                    o, v, c = step(j, sums[p], t == 0)
                    where = f"sample {sample} step {t} neuron {j} (I={sums[p]})"
                    u.check(f"{where}: spike", o, (spk >> p) & 1 if isinstance(spk, int) else spk)
                    u.check(f"{where}: membrane", v, mems[p])
                    if keep:
                        u.check(f"{where}: count", c, cnts[p])
        await _check_readout(u, f"sample {sample}", layer.n_out, P, G, M, cb, keep, state["v"], state["count"])


async def run_engine(u: Unit):
    layer = _layer(u.p)
    P, W, G, NW, T = u.p["parallel"], u.p["width"], u.p["groups"], u.p["words"], u.p["timesteps"]
    M = layer.membrane_bits
    fires, keep = u.p["fires"], u.p["keep_count"]
    cb = max(1, (T).bit_length())
    start, first, done = u.port("i_start"), u.port("i_first"), u.port("o_done")
    in_addr, in_en, in_data = u.port("o_in_addr"), u.port("o_in_en"), u.port("i_in_data")
    ospk = u.port("o_spikes")
    rd_en = u.port("i_rd_en")
    start.value = 0
    rd_en.value = 0
    in_data.value = 0
    await u.reset()
    net = Network([layer], T, "count" if fires else "membrane", "direct")
    rng = np.random.default_rng(u.p["seed"])
    spikes = rng.random((u.p["samples"], T, layer.n_in)) < rng.uniform(0.2, 0.9)
    ref = golden.simulate(net, spikes, record=True)
    words = {"w": [0] * NW}

    async def ram():
        # A synchronous RAM: the word at o_in_addr appears on i_in_data one cycle after o_in_en.
        while True:
            await ReadOnly()
            en, a = _u(in_en), _u(in_addr)
            await RisingEdge(u.clk)
            if en == 1:
                in_data.value = words["w"][a] if isinstance(a, int) and a < NW else 0
    server = cocotb.start_soon(ram())
    for b in range(spikes.shape[0]):
        for t in range(T):
            words["w"] = contract.pack_words(spikes[b, t], W)
            # Latency convention of docs/hardware.md (as for every block): o_done is seen step_cycles cycles after
            # the cycle in which i_start is presented.
            t0 = cocotb.utils.get_sim_time("ns")
            start.value, first.value = 1, int(t == 0)
            await RisingEdge(u.clk)
            start.value = 0
            await RisingEdge(done)
            cycles = int(round((cocotb.utils.get_sim_time("ns") - t0) / 10))
            u.check(f"sample {b} step {t}: cycles from i_start to o_done", u.p["step_cycles"], cycles)
            await ReadOnly()
            got = _u(ospk)
            if not isinstance(got, int):
                u.check(f"sample {b} step {t}: o_spikes", "0/1 bits", got)
                got = 0
            want = ref.spikes[0][b, t]
            for j in range(layer.n_out):
                u.check(f"sample {b} step {t} neuron {j}: spike", int(want[j]), (got >> j) & 1)
            await RisingEdge(u.clk)
        await _check_readout(u, f"sample {b}", layer.n_out, P, G, M, cb, keep, ref.membrane[0][b], ref.counts[0][b])
    server.cancel()


RUNNERS = {"rom": run_rom, "synapse": run_synapse, "neuron": run_neuron, "engine": run_engine}


@cocotb.test()
async def blocks(dut):
    params = load_params()
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    units = [Unit(dut, p, dut.clk) for p in params["units"]]
    tasks = [cocotb.start_soon(RUNNERS[u.p["kind"]](u)) for u in units]
    for task in tasks:
        await task
    write_results({"units": [dict(name=u.p["name"], kind=u.p["kind"], checks=u.checks, errors=u.errors)
                             for u in units]})
    bad = [e for u in units for e in u.errors]
    assert not bad, f"{len(bad)} block mismatches in {sum(1 for u in units if u.errors)} of {len(units)} " \
                    f"blocks; first: {bad[0]}"
