"""NetworkTop: the layers chained, input buffering, argmax readout, o_result / o_trace streams (docs/hardware.md)."""
from __future__ import annotations

import numpy as np
from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from bsnn_hw import contract
from bsnn_hw.network import Network

from .config import (HwConfig, clog2, count_bits, data_dependent, encoder_lanes, index_bits, input_buffer_info,
                     input_planes, input_ring, issues_by_data, map_memory_info, map_spram, memory_attrs, skips_zero,
                     step_input_words)
from .encoder import InputEncoder
from .engine import LayerEngine, PoolEngine


def total_shape(net: Network, members: int):
    """Shape of an ensemble's per-class total (the sum of S member scores): unsigned for the "count" readout (0..S*T),
    signed M + clog2(S) bits for "membrane"."""
    if net.readout == "count":
        return unsigned(count_bits(members * net.timesteps))
    return signed(net.layers[-1].membrane_bits + clog2(members))


def result_layout(net: Network, early_exit: bool = False, members: int = 1) -> data.StructLayout:
    """o_result payload, fields LSB first: index, count, membrane, cls, last; with ``early_exit`` step (the
    decision step); with an ensemble (``members`` S > 1) total and votes, and count/membrane are the last member's
    (docs/hardware.md, "Ensembles")."""
    fields = {
        "index": unsigned(index_bits(net.n_out)),
        "count": unsigned(count_bits(net.timesteps)),
        "membrane": signed(net.layers[-1].membrane_bits),
        "cls": unsigned(index_bits(net.n_out)),
        "last": unsigned(1),
    }
    if early_exit:
        fields["step"] = unsigned(index_bits(net.timesteps))
    if members > 1:
        fields["total"] = total_shape(net, members)
        fields["votes"] = unsigned(count_bits(members))
    return data.StructLayout(fields)


def trace_spike_bits(net: Network) -> int:
    """Width of the o_trace ``spikes`` field: a dense layer's beat carries its n_out spike bits; a conv or pool
    layer's beat carries the number of spikes in its output map at that step (a count of 0..n_out)."""
    return max(layer.n_out if layer.kind == "dense" else count_bits(layer.n_out) for layer in net.layers)


def trace_layout(net: Network, members: int = 1) -> data.StructLayout:
    """o_trace payload, fields LSB first: layer, step, spikes (see :func:`trace_spike_bits`), and with an ensemble
    (``members`` S > 1) member."""
    fields = {
        "layer": unsigned(index_bits(len(net.layers))),
        "step": unsigned(index_bits(net.timesteps)),
        "spikes": unsigned(trace_spike_bits(net)),
    }
    if members > 1:
        fields["member"] = unsigned(index_bits(members))
    return data.StructLayout(fields)


def _same_affine(a, b) -> bool:
    """Whether two layers carry the same per-step affine (or none): the hardware shares it between members."""
    if getattr(a, "has_affine", False) != getattr(b, "has_affine", False):
        return False
    if not getattr(a, "has_affine", False):
        return True
    same = (lambda x, y: (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y)))
    return a.step_frac == b.step_frac and same(a.step_scale, b.step_scale) and same(a.step_bias, b.step_bias)


def check_members(net: Network, members) -> list:
    """The ensemble members as a list of Networks, each identical to ``net`` except for its weights (the hardware
    shares thresholds, leaks and widths and banks only the weights); [] for None."""
    if members is None:
        return []
    if isinstance(members, (str, bytes, Network)) or not hasattr(members, "__iter__"):
        raise TypeError(f"members must be a list of bsnn_hw.Network (the ensemble's weight sets) or None, not "
                        f"{type(members).__name__}")
    members = list(members)
    for s, mem in enumerate(members):
        if not isinstance(mem, Network):
            raise TypeError(f"members[{s}] must be a bsnn_hw.Network, not {type(mem).__name__}")
        same = (len(mem.layers) == len(net.layers) and mem.timesteps == net.timesteps
                and mem.readout == net.readout)
        for a, b in zip(mem.layers, net.layers):
            if not same:
                break
            if a.kind != b.kind:
                same = False
            elif a.kind == "pool":
                same = a == b
            else:
                same = (a.params() == b.params() and a.weight_bits == b.weight_bits
                        and a.weights.shape == b.weights.shape and a.weights.dtype == b.weights.dtype
                        and np.array_equal(a.threshold, b.threshold)
                        and _same_affine(a, b)
                        and (a.kind != "conv2d" or a.geometry() == b.geometry()))
        if not same:
            raise ValueError(f"members[{s}] differs from the network in more than its weights (layers, thresholds, "
                             f"per-step affine, neuron parameters, T or readout): an ensemble in hardware banks only "
                             f"the weights")
    if len(members) > 1:
        if net.readout == "first":
            raise ValueError("an ensemble needs the 'count' or 'membrane' readout (members' scores are summed), "
                             "not 'first'")
    return members


class NetworkTop(wiring.Component):
    """The whole network behind valid/ready streams (protocol: docs/hardware.md, "The top's protocol").

    For each step t: take the step's NW_0 input words into the input buffer (a "pixel" network: 8 bit planes of
    NW_0 words, plane b's words b-th, docs/hardware.md), run layer 0 .. L-1 one after the other
    (each a :class:`LayerEngine` or :class:`PoolEngine` step; with ``trace``, one o_trace beat after each), then step
    t+1. After step T-1: scan the last layer's n_out neurons for the readout's class, then send n_out o_result beats.

    With ``members`` (an ensemble of S >= 2 weight sets, see :func:`check_members`): the input buffer holds the
    whole sample (T * NW_0 words), member 0 runs as above while it fills, members 1..S-1 replay it from the buffer
    (no input beats), each engine reading its member's ROM bank; each member's scan adds its scores into per-class
    totals and its class into per-class votes; after the last member the class is the argmax of the totals (ties to
    the lowest index) and the n_out o_result beats carry total and votes.

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

    def __init__(self, net: Network, config: HwConfig | None = None, trace: bool = False, members=None):
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
        self.member_nets = check_members(net, members)
        S = self.members = max(1, len(self.member_nets))
        if S > 1 and data_dependent(config):
            raise ValueError("early_exit, skip_zero and event-driven layers are not built for ensembles (members "
                             "replay the buffered input, which keeps no zero-word flags, and every member runs all "
                             "T steps)")
        last = len(net.layers) - 1

        def banks(i):
            return [mem.layers[i].weights for mem in self.member_nets] if self.member_nets else None

        self.engines = [PoolEngine(layer) if layer.kind == "pool" else
                        LayerEngine(layer, lc.parallel, lc.width, net.timesteps, fires=net.layer_fires(i),
                                    keep_count=(i == last), skip=skips_zero(net, config, i), banks=banks(i),
                                    logic_rom_bits=config.logic_rom_bits, spram=config.spram_bits(),
                                    planes=input_planes(net, i), events=lc.events)
                        for i, (layer, lc) in enumerate(zip(net.layers, config.layers))]
        for e in self.engines:
            e._MustUse__silence = True   # owned and elaborated by this top
        self.input_width = config.layers[0].width
        # a step's input words: NW_0, or for a "pixel" network its intensities' 8 bit planes of NW_0 words each
        self.plane_words = contract.ceil_div(net.n_in, self.input_width)
        self.input_words = step_input_words(net, self.input_width)
        self.ring = input_ring(net, self.input_width, encoder=config.encoder, skip=issues_by_data(net, config, 0),
                               members=self.members)
        self.encoder = None
        if config.encoder:
            self.encoder = InputEncoder(net.n_in, self.input_width, net.timesteps, net.encoding, net.seed,
                                        encoder_lanes(config))
            self.encoder._MustUse__silence = True
        sig = {
            **({"i_pixels": In(stream.Signature(8))} if config.encoder
               else {"i_spikes": In(stream.Signature(self.input_width))}),
            "o_result": Out(stream.Signature(result_layout(net, config.early_exit, S))),
        }
        if trace:
            sig["o_trace"] = Out(stream.Signature(trace_layout(net, S)))
        self._MustUse__silence = False
        super().__init__(sig)

    def memories(self) -> list[dict]:
        mems = [input_buffer_info(self.buffer_words, self.input_width, self.ring)]
        if self.encoder is not None:
            mems += [dict(d, name=f"encoder_{d['name']}") for d in self.encoder.memories()]
        for i, e in enumerate(self.engines):
            mems += [dict(d, name=f"layer{i}_{d['name']}") for d in e.memories()]
            if not hasattr(e, "o_spikes"):
                mems.append(map_memory_info(i, e.positions, self._map_width(i), self.config.spram_bits()))
        return mems

    @property
    def buffer_words(self) -> int:
        """Input buffer depth: one step's words, or the whole sample's (T * NW_0) for an ensemble's replay."""
        return self.input_words * (self.net.timesteps if self.members > 1 else 1)

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
        S, ens = self.members, self.members > 1
        in_we = Signal(name="input_we")   # a word into the buffer (from the sequencer or the encoder)
        if not self.ring:
            # >= 2 words: no 0-bit address
            m.submodules.inbuf = inbuf = Memory(shape=unsigned(W0), depth=max(2, self.buffer_words), init=[])
            in_wr = inbuf.write_port()
            in_rd = inbuf.read_port()
        # an ensemble's buffer holds the whole sample: step t's words at t*NW_0 + w (in_base = t*NW_0, a running sum)
        in_base = Signal(index_bits(self.buffer_words)) if ens else Const(0, 1)
        member = Signal(index_bits(S))
        if ens:
            for e in self.engines:
                if hasattr(e, "i_member"):
                    m.d.comb += e.i_member.eq(member)
        w_in = Signal(index_bits(NW0))
        enc = self.encoder
        if enc is not None:
            # pixels in: the encoder writes each step's spike words (padding lanes never spike)
            m.submodules.encoder = enc
            wiring.connect(m, wiring.flipped(self.i_pixels), enc.i_pixels)
            wr_idx, wr_word = enc.o_wr_addr, enc.o_wr_data
            m.d.comb += in_we.eq(enc.o_wr_en)
        else:
            PW = self.plane_words
            n_last_bits = net.n_in - (PW - 1) * W0
            masked = Signal(W0)
            if n_last_bits == W0:
                m.d.comb += masked.eq(self.i_spikes.payload)
            else:
                # the padding bits of each plane's last word (every step's last word without planes)
                last_word = Cat(w_in == (k + 1) * PW - 1 for k in range(NW0 // PW)).any()
                m.d.comb += masked.eq(Mux(last_word, self.i_spikes.payload & ((1 << n_last_bits) - 1),
                                          self.i_spikes.payload))
            wr_idx, wr_word = w_in, masked
        if self.ring:
            # config.input_ring: a write shifts in at the tail, a read moves the head to the tail (which the engine
            # sees the next cycle); writes (INPUT) and reads (RUN/WAIT) never share a cycle
            ring = [Signal(W0, name=f"input_ring_{k}", reset_less=True) for k in range(NW0)]
            read = self.engines[0].o_in_en
            with m.If(in_we | read):
                m.d.sync += [ring[k].eq(ring[k + 1]) for k in range(NW0 - 1)]
                m.d.sync += ring[-1].eq(Mux(in_we, wr_word, ring[0]))
            m.d.comb += self.engines[0].i_in_data.eq(ring[-1])
        else:
            m.d.comb += [in_wr.addr.eq(in_base + wr_idx), in_wr.data.eq(wr_word), in_wr.en.eq(in_we),
                         in_rd.addr.eq(in_base + self.engines[0].o_in_addr), in_rd.en.eq(self.engines[0].o_in_en),
                         self.engines[0].i_in_data.eq(in_rd.data)]
        if hasattr(self.engines[0], "i_nz"):
            # which input words hold a spike: one flag per word, written with the word (every word is rewritten
            # each step, so no clear is needed)
            nz0 = Signal(NW0, name="input_nonzero")
            with m.If(in_we):
                m.d.sync += nz0.bit_select(wr_idx, 1).eq(wr_word.any())
            m.d.comb += self.engines[0].i_nz.eq(nz0)
        # inter-layer buffers: a feature-map RAM after a conv or pool layer; otherwise the previous engine's output
        # register, read as W-bit words (zero padded)
        for i in range(1, L):
            e, prev = self.engines[i], self.engines[i - 1]
            if not hasattr(prev, "o_spikes"):
                C, depth = self._map_width(i - 1), prev.positions
                one_port = map_spram(depth, C, self.config.spram_bits())
                attrs = {"ram_style": "huge"} if one_port else memory_attrs(max(2, depth), C)
                fmap = Memory(shape=unsigned(C), depth=max(2, depth), init=[], attrs=attrs)
                m.submodules[f"map{i - 1}"] = fmap
                wr, rd = fmap.write_port(), fmap.read_port()
                m.d.comb += [wr.data.eq(prev.o_map_data), wr.en.eq(prev.o_map_en), e.i_in_data.eq(rd.data)]
                if one_port:
                    # the SPRAM's one address (Yosys maps a memory to it only when both ports share the address
                    # signal): engine i-1 writes the map during its step and engine i reads it during its own, so the
                    # write's address wins only when nothing is read
                    shared = Signal.like(rd.addr, name=f"map{i - 1}_addr")
                    m.d.comb += [shared.eq(Mux(prev.o_map_en, prev.o_map_addr, e.o_in_addr)), rd.addr.eq(shared),
                                 wr.addr.eq(shared), rd.en.eq(e.o_in_en & ~prev.o_map_en)]
                else:
                    m.d.comb += [wr.addr.eq(prev.o_map_addr), rd.addr.eq(e.o_in_addr), rd.en.eq(e.o_in_en)]
                continue
            padded = Signal(e.words * e.width)
            m.d.comb += padded.eq(prev.o_spikes)
            word = Signal(e.width, name=f"layer{i}_in_word", reset_less=True)
            if e.words == 1:
                m.d.sync += word.eq(padded)
            else:
                m.d.sync += word.eq(padded.word_select(e.o_in_addr, e.width))
            m.d.comb += e.i_in_data.eq(word)
            if hasattr(e, "i_nz"):
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
        if ens:
            # per-class totals and votes over the members; the running argmax of the totals is the ensemble's class
            # once the last member's scan is through (each total is final when its neuron is scanned). The new total
            # is registered before the comparison (a_*): the adder and the comparator would not fit one cycle
            # (nextpnr: 23 MHz on the UP5K), so an ensemble's scan takes one more cycle (SCAN_WAIT)
            tshape = total_shape(net, S)
            totals = [Signal(tshape, name=f"total_{c}") for c in range(n_out)]
            votes = [Signal(count_bits(S), name=f"votes_{c}") for c in range(n_out)]
            totals_a, votes_a = Array(totals), Array(votes)
            acc_val = Signal(signed(max(len(Signal(tshape)), len(value)) + 1))
            best_tot = Signal.like(acc_val)
            tot_idx = Signal(index_bits(n_out))
            m.d.comb += acc_val.eq(Mux(member == 0, 0, totals_a[s_idx]) + value)
            a_valid, a_idx, a_val = Signal(), Signal(index_bits(n_out)), Signal.like(acc_val)
            m.d.sync += [a_valid.eq(s_valid), a_idx.eq(s_idx), a_val.eq(acc_val)]
            with m.If(s_valid):
                for c in range(n_out):
                    with m.If(s_idx == c):
                        m.d.sync += totals[c].eq(acc_val)
            with m.If(a_valid & ((a_idx == 0) | (a_val > best_tot))):
                m.d.sync += [best_tot.eq(a_val), tot_idx.eq(a_idx)]

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
        if ens:
            m.d.comb += [self.o_result.payload.total.eq(totals_a[r_idx]), self.o_result.payload.votes.eq(votes_a[r_idx])]
        if self.trace:
            spikes_by_layer = Array(e.o_spikes if hasattr(e, "o_spikes") else e.o_step_count for e in self.engines)
            m.d.comb += [self.o_trace.payload.layer.eq(layer), self.o_trace.payload.step.eq(t),
                         self.o_trace.payload.spikes.eq(spikes_by_layer[layer])]
            if ens:
                m.d.comb += self.o_trace.payload.member.eq(member)

        early = self.config.early_exit
        if early:
            m.d.comb += self.o_result.payload.step.eq(t)     # t holds the decision step from SCAN to RESULT

        # where a sample starts, and where each step's input comes from
        sample_in, step_in = ("LOAD", "ENCODE") if enc is not None else ("INPUT", "INPUT")

        def next_layer():
            with m.If(layer == L - 1):
                m.d.sync += layer.eq(0)
                # early exit: decide at the end of the first step with an output spike ("first" readout)
                with m.If((t == T - 1) | found if early else (t == T - 1)):
                    m.d.sync += [j.eq(0), g.eq(0), p_.eq(0)]
                    m.next = "SCAN"
                with m.Else():
                    m.d.sync += t.eq(t + 1)
                    if ens:     # members after the first replay the buffered sample
                        m.d.sync += in_base.eq(in_base + NW0)
                        with m.If(member == 0):
                            m.next = step_in
                        with m.Else():
                            m.next = "RUN"
                    else:
                        m.next = step_in
            with m.Else():
                m.d.sync += layer.eq(layer + 1)
                m.next = "RUN"

        with m.FSM(init=sample_in):
            if enc is None:
                with m.State("INPUT"):
                    m.d.comb += [self.i_spikes.ready.eq(1), in_we.eq(self.i_spikes.valid)]
                    with m.If(self.i_spikes.valid):
                        with m.If(w_in == NW0 - 1):
                            m.d.sync += w_in.eq(0)
                            m.next = "RUN"
                        with m.Else():
                            m.d.sync += w_in.eq(w_in + 1)
            else:
                with m.State("LOAD"):                    # a new sample: its pixels into the encoder's RAM
                    m.d.comb += enc.i_load.eq(1)
                    m.next = "LOAD_WAIT"
                with m.State("LOAD_WAIT"):
                    with m.If(enc.o_done):
                        m.next = "ENCODE"
                with m.State("ENCODE"):                  # step t's spike words into the input buffer
                    m.d.comb += [enc.i_start.eq(1), enc.i_first.eq(t == 0), enc.i_step.eq(t)]
                    m.next = "ENCODE_WAIT"
                with m.State("ENCODE_WAIT"):
                    with m.If(enc.o_done):
                        m.next = "RUN"
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
                m.next = "SCAN_WAIT" if ens else "CLASS"
            if ens:
                with m.State("SCAN_WAIT"):               # the last total's comparison
                    m.next = "CLASS"
            with m.State("CLASS"):
                if ens:
                    for c in range(n_out):
                        m.d.sync += votes[c].eq(Mux(member == 0, 0, votes[c]) + (best_idx == c))
                    with m.If(member == S - 1):
                        m.d.sync += [cls.eq(tot_idx), member.eq(0)]
                        m.next = "RESULT"
                    with m.Else():
                        m.d.sync += [member.eq(member + 1), t.eq(0), layer.eq(0), in_base.eq(0)]
                        m.next = "RUN"
                else:
                    m.d.sync += cls.eq(Mux(found, first_idx, best_idx) if net.readout == "first" else best_idx)
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
                    if ens:
                        m.d.sync += in_base.eq(0)
                    m.next = sample_in
                    if early and enc is None:
                        with m.If(t != T - 1):           # the sample's remaining steps: take and drop their beats
                            m.d.sync += t.eq(t + 1)
                            m.next = "DRAIN"
            if early and enc is None:
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
