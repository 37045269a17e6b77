"""NetworkTop: the layers chained, input buffering, argmax readout, o_result / o_trace streams (docs/hardware.md)."""
from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from bsnn_hw import contract
from bsnn_hw.network import Network

from .config import HwConfig, count_bits, index_bits, memory_attrs, memory_info, skips_zero
from .engine import LayerEngine, PoolEngine


def result_layout(net: Network, early_exit: bool = False) -> data.StructLayout:
    """o_result payload, fields LSB first: index, count, membrane, cls, last, and with ``early_exit`` step (the
    decision step)."""
    fields = {
        "index": unsigned(index_bits(net.n_out)),
        "count": unsigned(count_bits(net.timesteps)),
        "membrane": signed(net.layers[-1].membrane_bits),
        "cls": unsigned(index_bits(net.n_out)),
        "last": unsigned(1),
    }
    if early_exit:
        fields["step"] = unsigned(index_bits(net.timesteps))
    return data.StructLayout(fields)


def trace_spike_bits(net: Network) -> int:
    """Width of the o_trace ``spikes`` field: a dense layer's beat carries its n_out spike bits; a conv or pool
    layer's beat carries the number of spikes in its output map at that step (a count of 0..n_out)."""
    return max(layer.n_out if layer.kind == "dense" else count_bits(layer.n_out) for layer in net.layers)


def trace_layout(net: Network) -> data.StructLayout:
    """o_trace payload, fields LSB first: layer, step, spikes (see :func:`trace_spike_bits`)."""
    return data.StructLayout({
        "layer": unsigned(index_bits(len(net.layers))),
        "step": unsigned(index_bits(net.timesteps)),
        "spikes": unsigned(trace_spike_bits(net)),
    })


class NetworkTop(wiring.Component):
    """The whole network behind valid/ready streams (protocol: docs/hardware.md, "The top's protocol").

    For each step t: take the step's NW_0 input words into the input buffer, run layer 0 .. L-1 one after the other
    (each a :class:`LayerEngine` or :class:`PoolEngine` step; with ``trace``, one o_trace beat after each), then step
    t+1. After step T-1: scan the last layer's n_out neurons for the readout's class, then send n_out o_result beats.

    Between layers: a dense layer's output is its engine's n_out-bit register, read as W-bit words; a conv or pool
    layer's output is a feature-map RAM of H_out * W_out words of C bits (one position per word, position-major),
    written by the producer and read by the next engine. With ``trace``, a conv or pool layer's beat carries its map's
    spike count at that step (the map itself lives in RAM), a dense layer's beat its spike bits.

    Members
    -------
    i_spikes : In(stream.Signature(W_0))
    o_result : Out(stream.Signature(result_layout(net)))
    o_trace : Out(stream.Signature(trace_layout(net))), only with ``trace=True``
    """

    def __init__(self, net: Network, config: HwConfig | None = None, trace: bool = False):
        self._MustUse__silence = True  # no 'never used' warning if validation below fails
        if not isinstance(net, Network):
            raise TypeError(f"net must be a bsnn_hw.Network, not {type(net).__name__}")
        if config is None:
            config = HwConfig.default(net)
        if not isinstance(config, HwConfig):
            raise TypeError(f"config must be a HwConfig, not {type(config).__name__}")
        config.validate(net)
        if not isinstance(trace, bool):
            raise TypeError(f"trace must be a bool, not {trace!r}")
        self.net, self.config, self.trace = net, config, trace
        last = len(net.layers) - 1
        self.engines = [PoolEngine(layer) if layer.kind == "pool" else
                        LayerEngine(layer, lc.parallel, lc.width, net.timesteps, fires=net.layer_fires(i),
                                    keep_count=(i == last), skip=skips_zero(net, config, i))
                        for i, (layer, lc) in enumerate(zip(net.layers, config.layers))]
        for e in self.engines:
            e._MustUse__silence = True   # owned and elaborated by this top
        self.input_width = config.layers[0].width
        self.input_words = contract.ceil_div(net.n_in, self.input_width)
        sig = {
            "i_spikes": In(stream.Signature(self.input_width)),
            "o_result": Out(stream.Signature(result_layout(net, config.early_exit))),
        }
        if trace:
            sig["o_trace"] = Out(stream.Signature(trace_layout(net)))
        self._MustUse__silence = False
        super().__init__(sig)

    def memories(self) -> list[dict]:
        mems = [memory_info("input_buffer", "ram", self.input_words, self.input_width, small_to_logic=False)]
        for i, e in enumerate(self.engines):
            mems += [dict(d, name=f"layer{i}_{d['name']}") for d in e.memories()]
            if not hasattr(e, "o_spikes"):
                mems.append(memory_info(f"layer{i}_map", "ram", e.positions, self._map_width(i)))
        return mems

    def _map_width(self, i):
        return self.net.layers[i].out_shape[2]

    def elaborate(self, platform):
        m = Module()
        net = self.net
        L, T, n_out = len(net.layers), net.timesteps, net.n_out
        W0, NW0 = self.input_width, self.input_words
        for i, e in enumerate(self.engines):
            m.submodules[f"layer{i}"] = e
        last = self.engines[-1]

        # --- input buffer: the current step's words, padding masked on write --------------------------------------
        m.submodules.inbuf = inbuf = Memory(shape=unsigned(W0), depth=max(2, NW0), init=[])  # >= 2: no 0-bit address
        in_wr = inbuf.write_port()
        in_rd = inbuf.read_port()
        n_last_bits = net.n_in - (NW0 - 1) * W0
        w_in = Signal(index_bits(NW0))
        masked = Signal(W0)
        if n_last_bits == W0:
            m.d.comb += masked.eq(self.i_spikes.payload)
        else:
            m.d.comb += masked.eq(Mux(w_in == NW0 - 1, self.i_spikes.payload & ((1 << n_last_bits) - 1),
                                      self.i_spikes.payload))
        m.d.comb += [in_wr.addr.eq(w_in), in_wr.data.eq(masked),
                     in_rd.addr.eq(self.engines[0].o_in_addr), in_rd.en.eq(self.engines[0].o_in_en),
                     self.engines[0].i_in_data.eq(in_rd.data)]
        if getattr(self.engines[0], "skip", False):
            # which input words hold a spike: one flag per word, written with the word (every word is rewritten
            # each step, so no clear is needed)
            nz0 = Signal(NW0, name="input_nonzero")
            with m.If(in_wr.en):
                m.d.sync += nz0.bit_select(w_in, 1).eq(masked.any())
            m.d.comb += self.engines[0].i_nz.eq(nz0)
        # inter-layer buffers: a feature-map RAM after a conv or pool layer; otherwise the previous engine's output
        # register, read as W-bit words (zero padded)
        for i in range(1, L):
            e, prev = self.engines[i], self.engines[i - 1]
            if not hasattr(prev, "o_spikes"):
                C, depth = self._map_width(i - 1), prev.positions
                fmap = Memory(shape=unsigned(C), depth=max(2, depth), init=[], attrs=memory_attrs(max(2, depth), C))
                m.submodules[f"map{i - 1}"] = fmap
                wr, rd = fmap.write_port(), fmap.read_port()
                m.d.comb += [wr.addr.eq(prev.o_map_addr), wr.data.eq(prev.o_map_data), wr.en.eq(prev.o_map_en),
                             rd.addr.eq(e.o_in_addr), rd.en.eq(e.o_in_en), e.i_in_data.eq(rd.data)]
                continue
            padded = Signal(e.words * e.width)
            m.d.comb += padded.eq(prev.o_spikes)
            word = Signal(e.width, name=f"layer{i}_in_word", reset_less=True)
            if e.words == 1:
                m.d.sync += word.eq(padded)
            else:
                m.d.sync += word.eq(padded.word_select(e.o_in_addr, e.width))
            m.d.comb += e.i_in_data.eq(word)
            if getattr(e, "skip", False):
                # the previous layer's output register is stable during this step: its words' flags are ORs
                m.d.comb += e.i_nz.eq(Cat(padded[k * e.width:(k + 1) * e.width].any() for k in range(e.words)))

        # --- sequencing -------------------------------------------------------------------------------------------
        t = Signal(index_bits(T))
        layer = Signal(index_bits(L))
        done_any = Signal()
        m.d.comb += done_any.eq(Cat(*(e.o_done for e in self.engines)).any())
        start = Signal()
        for i, e in enumerate(self.engines):
            m.d.comb += [e.i_start.eq(start & (layer == i)), e.i_first.eq(t == 0)]

        # "first" readout: the first output spike in (step, index) order; groups come out in index order
        found = Signal()
        first_idx = Signal(index_bits(n_out))
        P_last = last.parallel
        spk = last.o_fire_spikes
        lowest = Signal(index_bits(P_last) if P_last > 1 else 1)
        for p in reversed(range(P_last)):
            with m.If(spk[p]):
                m.d.comb += lowest.eq(p)
        with m.If(last.o_fire_valid & spk.any() & ~found):
            m.d.sync += [found.eq(1), first_idx.eq(last.o_fire_group * P_last + lowest)]

        # readout scan and result streaming share the last engine's state read port
        P = P_last
        lanes_m = Array(last.o_rd_membrane[p] for p in range(P))
        lanes_c = Array(last.o_rd_count[p] for p in range(P))
        j, g, p_ = Signal(index_bits(n_out + 1)), Signal(index_bits(last.groups)), Signal(index_bits(P))
        # scan pipeline
        s_valid, s_idx, s_lane = Signal(), Signal(index_bits(n_out)), Signal(index_bits(P))
        by_count = net.readout == "count"
        M_last = net.layers[-1].membrane_bits
        best = Signal(signed(max(M_last, count_bits(T) + 1)))
        best_idx = Signal(index_bits(n_out))
        cls = Signal(index_bits(n_out))
        value = Signal.like(best)
        m.d.comb += value.eq(lanes_c[s_lane] if by_count else lanes_m[s_lane])
        m.d.sync += s_valid.eq(0)
        with m.If(s_valid & ((s_idx == 0) | (value > best))):   # strict >: ties keep the lowest index
            m.d.sync += [best.eq(value), best_idx.eq(s_idx)]

        def advance():
            with m.If(p_ == P - 1):
                m.d.sync += [p_.eq(0), g.eq(g + 1)]
            with m.Else():
                m.d.sync += p_.eq(p_ + 1)
            m.d.sync += j.eq(j + 1)

        # result pipeline registers
        r_valid, r_idx, r_lane, r_last = Signal(), Signal(index_bits(n_out)), Signal(index_bits(P)), Signal()
        stall = r_valid & ~self.o_result.ready
        m.d.comb += [
            self.o_result.valid.eq(r_valid),
            self.o_result.payload.index.eq(r_idx),
            self.o_result.payload.count.eq(lanes_c[r_lane]),
            self.o_result.payload.membrane.eq(lanes_m[r_lane]),
            self.o_result.payload.cls.eq(cls),
            self.o_result.payload.last.eq(r_last),
        ]
        if self.trace:
            spikes_by_layer = Array(e.o_spikes if hasattr(e, "o_spikes") else e.o_step_count for e in self.engines)
            m.d.comb += [self.o_trace.payload.layer.eq(layer), self.o_trace.payload.step.eq(t),
                         self.o_trace.payload.spikes.eq(spikes_by_layer[layer])]

        early = self.config.early_exit
        if early:
            m.d.comb += self.o_result.payload.step.eq(t)     # t holds the decision step from SCAN to RESULT

        def next_layer():
            with m.If(layer == L - 1):
                m.d.sync += layer.eq(0)
                # early exit: decide at the end of the first step with an output spike ("first" readout)
                with m.If((t == T - 1) | found if early else (t == T - 1)):
                    m.d.sync += [j.eq(0), g.eq(0), p_.eq(0)]
                    m.next = "SCAN"
                with m.Else():
                    m.d.sync += t.eq(t + 1)
                    m.next = "INPUT"
            with m.Else():
                m.d.sync += layer.eq(layer + 1)
                m.next = "RUN"

        with m.FSM(init="INPUT"):
            with m.State("INPUT"):
                m.d.comb += [self.i_spikes.ready.eq(1), in_wr.en.eq(self.i_spikes.valid)]
                with m.If(self.i_spikes.valid):
                    with m.If(w_in == NW0 - 1):
                        m.d.sync += w_in.eq(0)
                        m.next = "RUN"
                    with m.Else():
                        m.d.sync += w_in.eq(w_in + 1)
            with m.State("RUN"):
                m.d.comb += start.eq(1)
                m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(done_any):
                    if self.trace:
                        m.next = "TRACE"
                    else:
                        next_layer()
            if self.trace:
                with m.State("TRACE"):
                    m.d.comb += self.o_trace.valid.eq(1)
                    with m.If(self.o_trace.ready):
                        next_layer()
            with m.State("SCAN"):
                # issue one neuron per cycle; compare one cycle later
                m.d.comb += [last.i_rd_addr.eq(g), last.i_rd_en.eq(1)]
                m.d.sync += [s_valid.eq(1), s_idx.eq(j), s_lane.eq(p_)]
                advance()
                with m.If(j == n_out - 1):
                    m.next = "SCAN_END"
            with m.State("SCAN_END"):
                m.d.sync += [j.eq(0), g.eq(0), p_.eq(0)]
                m.next = "CLASS"
            with m.State("CLASS"):
                if net.readout == "first":
                    m.d.sync += cls.eq(Mux(found, first_idx, best_idx))
                else:
                    m.d.sync += cls.eq(best_idx)
                m.next = "RESULT"
            with m.State("RESULT"):
                issue = (j < n_out) & ~stall
                m.d.comb += [last.i_rd_addr.eq(g), last.i_rd_en.eq(issue)]
                with m.If(~stall):
                    m.d.sync += [r_valid.eq(issue), r_idx.eq(j), r_lane.eq(p_), r_last.eq(j == n_out - 1)]
                    with m.If(issue):
                        advance()
                with m.If(r_valid & self.o_result.ready & r_last):
                    m.d.sync += [r_valid.eq(0), t.eq(0), layer.eq(0), found.eq(0), j.eq(0), g.eq(0), p_.eq(0)]
                    m.next = "INPUT"
                    if early:
                        with m.If(t != T - 1):           # the sample's remaining steps: take and drop their beats
                            m.d.sync += t.eq(t + 1)
                            m.next = "DRAIN"
            if early:
                with m.State("DRAIN"):
                    m.d.comb += self.i_spikes.ready.eq(1)
                    with m.If(self.i_spikes.valid):
                        with m.If(w_in == NW0 - 1):
                            m.d.sync += w_in.eq(0)
                            with m.If(t == T - 1):
                                m.d.sync += t.eq(0)
                                m.next = "INPUT"
                            with m.Else():
                                m.d.sync += t.eq(t + 1)
                        with m.Else():
                            m.d.sync += w_in.eq(w_in + 1)
        return m
