"""LayerEngine: one layer's step, WeightROM + P SynapseArrays + accumulators + NeuronCore + output spike register."""
from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from bsnn_hw import contract
from bsnn_hw.network import Layer

from .config import _is_int, count_bits, engine_latency, index_bits, memory_info, synapse_latency
from .neuron import NeuronCore
from .rom import WeightROM
from .synapse import SynapseArray


class LayerEngine(wiring.Component):
    """Runs one time step of one layer when started:

        for g in 0..G-1, for w in 0..NW-1 (one word per cycle):
            ROM[g*NW + w] (P lanes) and spike word w  ->  P SynapseArrays  ->  acc[p] += partial sum
            after w = NW-1: the P sums of group g enter the NeuronCore; its spikes land in ``o_spikes``

    ``o_done`` pulses ``G*NW + latency`` cycles after the edge that samples ``i_start``, with
    ``latency = SynapseArray.latency(W) + 10`` (ROM/spike read 1, word register 1, accumulator 1, NeuronCore 6,
    done 1); by then every state write has landed and ``o_spikes`` holds the step's output spikes (bit j = neuron
    j, after fire-once). Spike words are read from outside: the engine drives ``o_in_addr``/``o_in_en`` and expects
    the word on ``i_in_data`` one cycle later (a synchronous RAM read); padding bits past n_in must read as 0.

    Arguments
    ---------
    layer : bsnn_hw.Layer; parallel : P in 1..n_out; width : W in 1..n_in; timesteps : T
    fires : bool (False: the "membrane" readout's last layer); keep_count : bool (keep spike counts for readout)

    Members
    -------
    i_start, i_first -> o_busy, o_done
    o_in_addr, o_in_en, i_in_data (W)
    o_spikes (n_out): the last completed step's spikes, valid while not busy (a shift register during a step)
    o_fire_valid, o_fire_group, o_fire_spikes (P): the NeuronCore's results as they come out
    i_rd_addr, i_rd_en -> o_rd_membrane, o_rd_count: the NeuronCore's readout port (only while not busy)
    """

    def __init__(self, layer, parallel: int, width: int, timesteps: int, fires: bool = True,
                 keep_count: bool = False):
        self._MustUse__silence = True  # no 'never used' warning if validation below fails
        if not isinstance(layer, Layer):
            raise TypeError(f"layer must be a bsnn_hw.Layer, not {type(layer).__name__}")
        for name, v, lim, what in (("parallel", parallel, layer.n_out, "n_out"), ("width", width, layer.n_in, "n_in")):
            if not _is_int(v):
                raise TypeError(f"{name} must be an int, not {v!r}")
            if not 1 <= v <= lim:
                raise ValueError(f"{name} must be in 1..{lim} (the layer's {what}), not {v!r}")
        self.layer, self.parallel, self.width, self.timesteps = layer, parallel, width, timesteps
        self.fires, self.keep_count = bool(fires), bool(keep_count)
        self.groups = contract.ceil_div(layer.n_out, parallel)
        self.words = contract.ceil_div(layer.n_in, width)
        self.latency = engine_latency(width)
        self.step_cycles = self.groups * self.words + self.latency
        self.core = NeuronCore(layer, parallel, timesteps, fires, keep_count)
        self.core._MustUse__silence = True   # owned and elaborated by this engine
        P, M = parallel, layer.membrane_bits
        self._MustUse__silence = False
        super().__init__({
            "i_start": In(1), "i_first": In(1), "o_busy": Out(1), "o_done": Out(1),
            "o_in_addr": Out(index_bits(self.words)), "o_in_en": Out(1), "i_in_data": In(width),
            "o_spikes": Out(layer.n_out),
            "o_fire_valid": Out(1), "o_fire_group": Out(index_bits(self.groups)), "o_fire_spikes": Out(P),
            "i_rd_addr": In(index_bits(self.groups)), "i_rd_en": In(1),
            "o_rd_membrane": Out(data.ArrayLayout(signed(M), P)),
            "o_rd_count": Out(data.ArrayLayout(count_bits(timesteps), P)),
        })

    def memories(self) -> list[dict]:
        return ([memory_info("weights", "rom", self.groups * self.words, self.parallel * self.width)]
                + self.core.memories())

    def elaborate(self, platform):
        m = Module()
        P, W, G, NW = self.parallel, self.width, self.groups, self.words
        m.submodules.rom = rom = WeightROM(self.layer.weights, P, W)
        m.submodules.core = core = self.core
        syns = []
        for p in range(P):
            syn = SynapseArray(W)
            m.submodules[f"syn{p}"] = syn
            syns.append(syn)
        ls = synapse_latency(W)

        # --- issue: one (g, w) per cycle ------------------------------------------------------------------------
        busy = Signal()
        issuing = Signal()
        first = Signal()
        g = Signal(index_bits(G))
        w = Signal(index_bits(NW))
        addr = Signal(index_bits(G * NW))
        with m.If(self.i_start & ~busy):
            m.d.sync += [busy.eq(1), issuing.eq(1), first.eq(self.i_first), g.eq(0), w.eq(0), addr.eq(0)]
        last_w = w == NW - 1
        with m.If(issuing):
            m.d.sync += addr.eq(addr + 1)
            with m.If(last_w):
                m.d.sync += w.eq(0)
                with m.If(g == G - 1):
                    m.d.sync += issuing.eq(0)
                with m.Else():
                    m.d.sync += g.eq(g + 1)
            with m.Else():
                m.d.sync += w.eq(w + 1)
        m.d.comb += [rom.i_addr.eq(addr), rom.i_en.eq(issuing), self.o_in_addr.eq(w), self.o_in_en.eq(issuing),
                     self.o_busy.eq(busy)]

        # tags travel beside the data: read (1) + word register (1) + synapse tree (ls)
        def delay(sig, n, name):
            for k in range(n):
                r = Signal.like(sig, name=f"{name}_d{k}")
                m.d.sync += r.eq(sig)
                sig = r
            return sig

        tag_valid = delay(issuing, 2 + ls, "tv")
        tag_first = delay(w == 0, 2 + ls, "tf")
        tag_last = delay(last_w, 2 + ls, "tl")
        tag_group = delay(g, 2 + ls, "tg")

        # word register: ROM and spike words from their synchronous reads
        spikes_w = Signal(W, reset_less=True)      # data registers: the tags/valids carry the reset
        weights_w = Signal(P * W, reset_less=True)
        v_w = delay(issuing, 1, "vw")
        m.d.sync += [spikes_w.eq(self.i_in_data), weights_w.eq(rom.o_data)]
        v_syn = Signal()
        m.d.sync += v_syn.eq(v_w)
        for p in range(P):
            m.d.comb += [syns[p].i_valid.eq(v_syn), syns[p].i_spikes.eq(spikes_w),
                         syns[p].i_weights.eq(weights_w[p * W:(p + 1) * W])]

        # accumulators: acc = (first word ? 0 : acc) + partial sum; after the last word the core takes acc
        acc = [Signal(signed(self.core.sum_width), name=f"acc_{p}", reset_less=True) for p in range(P)]
        with m.If(tag_valid):
            for p in range(P):
                m.d.sync += acc[p].eq(Mux(tag_first, 0, acc[p]) + syns[p].o_sum)
        core_valid = Signal()
        core_group = Signal.like(g)
        m.d.sync += [core_valid.eq(tag_valid & tag_last), core_group.eq(tag_group)]
        m.d.comb += [core.i_valid.eq(core_valid), core.i_group.eq(core_group), core.i_first.eq(first)]
        m.d.comb += [core.i_sum[p].eq(acc[p]) for p in range(P)]

        # output spike register: groups come out in order 0..G-1 every step, so a shift register by P lands group g at
        # bits g*P after the step's G shifts (no address decoder: that was the critical path on iCE40)
        buf = Signal(G * P, reset_less=True)   # fully rewritten every step before it is read
        with m.If(core.o_valid):
            if G == 1:
                m.d.sync += buf.eq(core.o_spikes)
            else:
                m.d.sync += buf.eq(Cat(buf[P:], core.o_spikes))
        m.d.comb += self.o_spikes.eq(buf[:self.layer.n_out])

        done = Signal()
        m.d.sync += done.eq(core.o_valid & (core.o_group == G - 1))
        with m.If(done):
            m.d.sync += busy.eq(0)
        m.d.comb += self.o_done.eq(done)

        m.d.comb += [self.o_fire_valid.eq(core.o_valid), self.o_fire_group.eq(core.o_group),
                     self.o_fire_spikes.eq(core.o_spikes),
                     core.i_rd_addr.eq(self.i_rd_addr), core.i_rd_en.eq(self.i_rd_en),
                     self.o_rd_membrane.eq(core.o_rd_membrane), self.o_rd_count.eq(core.o_rd_count)]
        return m
