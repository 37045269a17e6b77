"""Layer engines: LayerEngine (a dense or conv layer's step: WeightROM + P SynapseArrays + accumulators + NeuronCore)
and PoolEngine (OR pooling of a spike map)."""
from __future__ import annotations

import numpy as np
from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from bsnn_hw import contract
from bsnn_hw.checks import check_bits, check_flag, check_int, is_int as _is_int
from bsnn_hw.network import Conv2d, Layer, Pool

from .config import (POOL_LATENCY, conv_geometry, count_bits, engine_latency, index_bits, memory_info, spram_legal,
                     synapse_latency, word_register)
from .neuron import NeuronCore
from .rom import WeightROM
from .synapse import SynapseArray


def _delay(m, sig, n, name):
    """``sig`` through n registers (tags travel beside the data)."""
    for k in range(n):
        r = Signal.like(sig, name=f"{name}_d{k}")
        m.d.sync += r.eq(sig)
        sig = r
    return sig


def _lowest_set(vec):
    """(any bit set, index of the lowest set bit) of ``vec`` as a balanced tree of clog2(n) multiplexer levels (a
    chain of n priority multiplexers was the event-driven engine's critical path: 32 logic levels on the ECP5). The
    skipping and the event-driven engines' priority encoders."""
    level = [(vec[i], Const(0, 0)) for i in range(len(vec))]
    while len(level) > 1:
        nxt = []
        for k in range(0, len(level) - 1, 2):
            (a_any, a_idx), (b_any, b_idx) = level[k], level[k + 1]
            nxt.append((a_any | b_any, Mux(a_any, Cat(a_idx, Const(0, 1)), Cat(b_idx, Const(1, 1)))))
        if len(level) % 2:
            a_any, a_idx = level[-1]
            nxt.append((a_any, Cat(a_idx, Const(0, 1))))
        level = nxt
    return level[0]


def _several_set(vec):
    """Whether ``vec`` has two or more bits set, as a balanced tree (no carry chain)."""
    level = [(vec[i], Const(0, 1)) for i in range(len(vec))]
    while len(level) > 1:
        nxt = []
        for k in range(0, len(level) - 1, 2):
            (a_any, a_many), (b_any, b_many) = level[k], level[k + 1]
            nxt.append((a_any | b_any, a_many | b_many | (a_any & b_any)))
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0][1]


def _step_counter(m, engine, write, data):
    """o_step_count: the spikes in the map words written since the step's start (a popcount per write)."""
    count = Signal.like(engine.o_step_count)
    with m.If(engine.i_start & ~engine.o_busy):
        m.d.sync += count.eq(0)
    with m.Elif(write):
        m.d.sync += count.eq(count + sum(data[i] for i in range(len(data))))
    m.d.comb += engine.o_step_count.eq(count)


class LayerEngine(wiring.Component):
    """Runs one time step of one dense or conv layer when started.

    Dense layer (``bsnn_hw.Layer``), NW = ceil(n_in / W) words, G = ceil(n_out / P) groups::

        for g in 0..G-1, for w in 0..NW-1 (one word per cycle):
            ROM[g*NW + w] (P lanes) and spike word w  ->  P SynapseArrays  ->  acc[p] += partial sum
            after w = NW-1: the P sums of group g enter the NeuronCore; its spikes land in ``o_spikes``

    Conv layer (``bsnn_hw.Conv2d``, W = C_in: one word is one input position's channels), G = ceil(C_out / P)::

        for (y, x) over the H_out x W_out output positions (row-major), for g in 0..G-1,
        for (ky, kx) over the k x k kernel (one word per cycle):
            input position (y*s + ky - p, x*s + kx - p): its word, or 0 outside the map (padding: no read)
            ROM[g*k*k + ky*k + kx] and that word -> P SynapseArrays -> acc[p]; after the last (ky, kx): NeuronCore
            (state word (y*W_out + x)*G + g); after group G-1 the position's C_out spikes are written to the output
            map (``o_map_*``, word y*W_out + x)

    ``o_done`` pulses ``step_cycles = positions * G * NWw + latency`` cycles after the edge that samples ``i_start``
    (positions = 1 and NWw = NW for a dense layer; H_out * W_out and k * k for conv), with ``latency =
    SynapseArray.latency(W) + 10`` for dense (ROM/spike read 1, word register 1, accumulator 1, NeuronCore 6, done 1)
    and one more for conv (the input address register); by then every state write has landed. Spike words are read
    from outside: the engine drives ``o_in_addr``/``o_in_en`` and expects the word on ``i_in_data`` one cycle later (a
    synchronous RAM read); padding bits past n_in must read as 0. k-bit weights (``layer.weight_bits`` > 1) use
    k-bit SynapseArrays: the same timing.

    ``planes`` = 8 (a "pixel" network's first layer, docs/spec.md section 12): the input holds the intensities' 8
    bit planes, plane b's words at b * NWi + (the plane's word index) (NWi = NW for dense, the map's positions for
    conv); every neuron group walks its words once per plane (b outermost), and the partial sums of plane b enter
    the accumulator shifted left by b: I = sum_b 2^b I(plane_b). ``step_cycles`` = positions * G * NWw * 8 + latency.

    ``skip`` (dense only): the engine reads ``i_nz`` (bit w = input word w holds a spike; stable for the step) and
    issues, per group, only those words (at least one, masked, for an all-zero input): a group costs max(1, nz)
    cycles instead of NW, and the read address is registered (latency + 1).

    ``events`` (dense layers reading spikes; the event-driven, input-major organization, docs/hardware.md)::

        for g in 0..G-1, for each input i that spiked this step, lowest first (one per cycle):
            ROM[g*n_in + i] (P lanes of one weight: input i's weight row for the group) -> P one-input
            SynapseArrays -> acc[p] += w[g*P + p, i] (+-1, or the k-bit weight)
        a group whose input is silent issues one masked cycle (its neurons still leak and write their state)

    The spikes are found by two priority encoders: over ``i_nz`` for the next word holding a spike (W-bit words, read
    as for ``skip``), then over that word's bits. The next word is read while the current one's last spike issues,
    so silent words cost nothing and a group costs max(1, spikes) cycles; ``step_cycles`` (worst case) =
    G * n_in + latency, latency = engine_latency(1) + 1 (the registered ROM address).

    Arguments
    ---------
    layer : bsnn_hw.Layer or bsnn_hw.Conv2d; parallel : P in 1..n_out (C_out for conv); width : W in 1..n_in (= C_in
    for conv); timesteps : T; fires : bool (False: the "membrane" readout's last layer); keep_count : bool (keep spike
    counts for readout); logic_rom_bits : ROMs up to this size in logic (HwConfig.logic_rom_bits); spram : None, or the
    smallest state RAM (bits) that goes to a one-port SPRAM where ``config.spram_legal`` allows (HwConfig.spram_bits)

    Members
    -------
    i_start, i_first -> o_busy, o_done
    o_in_addr, o_in_en, i_in_data (W)
    dense: o_spikes (n_out): the last completed step's spikes, valid while not busy (a shift register during a step)
    conv: o_map_addr, o_map_en, o_map_data (C_out): one output position's spikes per write; o_step_count: the
    spikes written in the last step (valid while not busy; for the trace)
    o_fire_valid, o_fire_group, o_fire_spikes (P): the NeuronCore's results as they come out
    i_rd_addr, i_rd_en -> o_rd_membrane, o_rd_count: the NeuronCore's readout port (only while not busy)
    i_nz (NW): with ``skip``, which input words hold a spike
    i_member (clog2 S): with ``banks`` (an ensemble of S weight sets), the member whose weights the step uses; the
    ROM holds S banks of G*NW words (member s at words s*G*NW ..), read from i_member * G*NW on (hold it stable
    while busy)

    A layer with a per-step affine (contract v3) keeps the step's affine ROM base t*G in a register: 0 on a start
    with ``i_first``, G more on every other start, so the T starts of a sample (of each ensemble member: members
    share the affine) read rows 0..T-1. Nothing else, and no timing, changes.
    """

    def __init__(self, layer, parallel: int, width: int, timesteps: int, fires: bool = True,
                 keep_count: bool = False, skip: bool = False, banks=None, logic_rom_bits: int | None = None,
                 spram: int | None = None, planes: int = 1, events: bool = False):
        self._MustUse__silence = True  # no 'never used' warning if validation below fails
        if not isinstance(layer, (Layer, Conv2d)):
            raise TypeError(f"layer must be a bsnn_hw.Layer or Conv2d, not {type(layer).__name__}")
        self.conv = isinstance(layer, Conv2d)
        units = layer.out_channels if self.conv else layer.n_out
        check_int("parallel", parallel, 1, units, f"the layer's {'C_out' if self.conv else 'n_out'}")
        check_int("width", width, 1, layer.n_in, "the layer's n_in")
        check_int("timesteps", timesteps)
        fires, keep_count = check_flag("fires", fires), check_flag("keep_count", keep_count)
        skip, events = check_flag("skip", skip), check_flag("events", events)
        logic_rom_bits, spram = check_bits("logic_rom_bits", logic_rom_bits), check_bits("spram", spram)
        if self.conv and width != layer.in_shape[2]:
            raise ValueError(f"width must equal the conv layer's C_in ({layer.in_shape[2]}), not {width}: a word is "
                             f"one input position's channels")
        self.layer, self.parallel, self.width, self.timesteps = layer, parallel, width, timesteps
        self.fires, self.keep_count = fires, keep_count
        self.units = units
        self.groups = contract.ceil_div(units, parallel)
        if self.conv:
            self.geometry = conv_geometry(layer)
            self.positions = self.geometry["positions"]
            self.words = layer.kernel * layer.kernel          # words per window (= per neuron)
            self.in_words = layer.in_shape[0] * layer.in_shape[1]
        else:
            self.positions, self.words = 1, contract.ceil_div(layer.n_in, width)
            self.in_words = self.words
        if skip and self.conv:
            raise ValueError("skip (zero-word skipping) is for dense layers: a conv layer's windows are not "
                             "skipped")
        if not _is_int(planes) or planes not in (1, contract.PIXEL_BITS):
            raise ValueError(f"planes must be 1 (spikes) or {contract.PIXEL_BITS} (a 'pixel' input's bit planes), "
                             f"not {planes!r}")
        if skip and planes > 1:
            raise ValueError("skip (zero-word skipping) reads spike words; a 'pixel' input's bit planes are not "
                             "skipped")
        if events and (self.conv or skip or planes > 1):
            raise ValueError("events (the event-driven organization) is for dense layers reading spikes, without "
                             "skip (it skips every silent input itself) and without a 'pixel' input's bit planes")
        self.skip, self.events = skip, events
        self.planes = planes
        self.plane_words = self.in_words              # input words of one plane (of the spike vector)
        self.in_words *= planes                       # plane b's words at b * plane_words
        self.banks = self._check_banks(layer, banks)
        self.members = len(self.banks) if self.banks else 1
        # ROM words per group: its NW words (k*k for conv), or n_in weight rows of P lanes when event-driven
        self.rom_words = layer.n_in if self.events else self.words
        self.rom_width = 1 if self.events else width      # weights per lane in a ROM word (the SynapseArrays' width)
        self.bank_depth = self.groups * self.rom_words    # ROM words of one weight set
        # conv, skip and event engines register the read address (one more cycle of latency)
        self.latency = engine_latency(self.rom_width) + (1 if self.conv or self.skip or self.events else 0)
        self.step_cycles = self.positions * self.groups * self.rom_words * planes + self.latency
        self.logic_rom_bits = logic_rom_bits
        self.core = NeuronCore(layer, parallel, timesteps, fires, keep_count, logic_rom_bits=logic_rom_bits,
                               spram=spram if spram_legal(self.words * planes, self.skip or self.events) else None,
                               input_max=contract.PIXEL_MAX if planes > 1 else 1)
        self.core._MustUse__silence = True   # owned and elaborated by this engine
        P, M = parallel, layer.membrane_bits
        if self.skip or self.events:
            out_skip = {"i_nz": In(self.words)}
        else:
            out_skip = {}
        out = ({"o_map_addr": Out(index_bits(self.positions)), "o_map_en": Out(1), "o_map_data": Out(units),
                "o_step_count": Out(count_bits(layer.n_out))}
               if self.conv else {"o_spikes": Out(layer.n_out)})
        self._MustUse__silence = False
        super().__init__({
            "i_start": In(1), "i_first": In(1), "o_busy": Out(1), "o_done": Out(1),
            "o_in_addr": Out(index_bits(self.in_words)), "o_in_en": Out(1), "i_in_data": In(width),
            **out, **out_skip, **({"i_member": In(index_bits(self.members))} if self.members > 1 else {}),
            "o_fire_valid": Out(1), "o_fire_group": Out(index_bits(self.groups)), "o_fire_spikes": Out(P),
            "i_rd_addr": In(index_bits(self.core.depth)), "i_rd_en": In(1),
            "o_rd_membrane": Out(data.ArrayLayout(signed(M), P)),
            "o_rd_count": Out(data.ArrayLayout(count_bits(timesteps), P)),
        })

    @staticmethod
    def _check_banks(layer, banks):
        if banks is None:
            return None
        if isinstance(banks, (str, bytes, np.ndarray)) or not hasattr(banks, "__iter__"):
            raise TypeError(f"banks must be a list of weight arrays (one per ensemble member), not "
                            f"{type(banks).__name__}")
        banks = list(banks)
        if not banks:
            raise ValueError("banks must hold at least one weight set (one per ensemble member), not none")
        for s, w in enumerate(banks):
            if not isinstance(w, np.ndarray) or w.shape != layer.weights.shape or w.dtype != layer.weights.dtype:
                got = f"{w.dtype} {w.shape}" if isinstance(w, np.ndarray) else type(w).__name__
                raise ValueError(f"banks[{s}] must be a {layer.weights.dtype} array of the layer's weight shape "
                                 f"{layer.weights.shape}, not {got}")
            contract.check_weight_range(w, layer.weight_bits, f"banks[{s}]: ")
        return banks

    def rom_weights(self):
        """The weights as WeightROM rows: (n_out, n_in) for dense, (C_out, k*k*C_in) in (ky, kx, c) order for conv.
        With ``banks``, the S members' rows one after the other, each padded to G*P rows (padding rows pack to the
        same 0 words as unused lanes), so member s's group g is ROM group s*G + g."""
        def rows(w):
            return w.reshape(w.shape[0], -1) if self.conv else w
        if not self.banks:
            return rows(self.layer.weights)
        pad = self.groups * self.parallel - self.units
        out = []
        for w in self.banks:
            r = rows(w)
            out.append(r)
            if pad:
                out.append(np.zeros((pad, r.shape[1]), dtype=r.dtype))
        return np.concatenate(out)

    def memories(self) -> list[dict]:
        k = self.layer.weight_bits
        return ([memory_info("weights", "rom", self.members * self.bank_depth, self.parallel * self.rom_width * k,
                             logic_rom_bits=self.logic_rom_bits)]
                + self.core.memories())

    def elaborate(self, platform):
        m = Module()
        P, G = self.parallel, self.groups
        W = self.rom_width     # the SynapseArrays' width: W, or 1 event-driven (its input words are self.width wide)
        k = self.layer.weight_bits
        m.submodules.rom = rom = WeightROM(self.rom_weights(), P, W, k, self.logic_rom_bits)
        # the member's bank: its first ROM word (0 without banks; i_member is stable while the engine is busy)
        base = Signal(index_bits(self.members * self.bank_depth))
        if self.members > 1:
            m.d.comb += base.eq(self.i_member * self.bank_depth)
        m.submodules.core = core = self.core
        syns = []
        for p in range(P):
            syn = SynapseArray(W, k)
            m.submodules[f"syn{p}"] = syn
            syns.append(syn)
        ls = synapse_latency(W)

        busy = Signal()
        first = Signal()
        m.d.comb += self.o_busy.eq(busy)
        with m.If(self.i_start & ~busy):
            m.d.sync += [busy.eq(1), first.eq(self.i_first)]
        if self.core.affine:
            # the per-step affine's ROM base t*G: 0 at a sample's first step, G more at each later step's start (the
            # top starts each engine exactly once per step, members and samples beginning with i_first)
            step_base = Signal(index_bits(self.core.affine_depth))
            with m.If(self.i_start & ~busy):
                m.d.sync += step_base.eq(Mux(self.i_first, 0, step_base + G))
            m.d.comb += core.i_step_base.eq(step_base)
        # the bit plane being issued ("pixel" input only: no zero-width signal otherwise, which lints as [-1:0])
        plane = Signal(range(self.planes), name="plane") if self.planes > 1 else None
        if self.conv:
            read_valid, read_pad, t_first, t_last, t_group, t_state = self._issue_conv(m, rom, base, plane)
        elif self.skip:
            read_valid, read_pad, t_first, t_last, t_group, t_state = self._issue_skip(m, rom, base)
        elif self.events:
            read_valid, read_pad, t_first, t_last, t_group, t_state = self._issue_events(m, rom, base)
        else:
            read_valid, read_pad, t_first, t_last, t_group, t_state = self._issue_dense(m, rom, base, plane)
        wr = int(word_register(W))   # the word register's cycle (none for a wide engine)
        d = 1 + wr + ls
        tag_plane = _delay(m, plane, d, "tp") if plane is not None else None
        tag_valid = _delay(m, read_valid, d, "tv")
        tag_first = _delay(m, t_first, d, "tf")
        tag_last = _delay(m, t_last, d, "tl")
        tag_group = _delay(m, t_group, d, "tg")
        tag_state = _delay(m, t_state, d, "ts") if self.conv else None

        # word register: ROM and spike words from their synchronous reads (a padded position reads as no spikes);
        # a wide engine takes them straight from the reads
        spikes_w = Signal(W, reset_less=True)      # data registers: the tags/valids carry the reset
        weights_w = Signal(P * W * k, reset_less=True)
        pad_r = _delay(m, read_pad, 1, "pad")
        # event-driven: the issued input spiked (a masked issue, a silent group's one cycle, did not)
        words = [spikes_w.eq(~pad_r if self.events else Mux(pad_r, 0, self.i_in_data)), weights_w.eq(rom.o_data)]
        if wr:
            m.d.sync += words
        else:
            m.d.comb += words
        v_syn = _delay(m, read_valid, 1 + wr, "vs")
        for p in range(P):
            m.d.comb += [syns[p].i_valid.eq(v_syn), syns[p].i_spikes.eq(spikes_w),
                         syns[p].i_weights.eq(weights_w[p * W * k:(p + 1) * W * k])]

        # accumulators: acc = (first word ? 0 : acc) + partial sum; after the last word the core takes acc
        acc = [Signal(signed(self.core.sum_width), name=f"acc_{p}", reset_less=True) for p in range(P)]
        with m.If(tag_valid):
            for p in range(P):
                part = syns[p].o_sum if tag_plane is None else (syns[p].o_sum << tag_plane)   # plane b: 2^b I_b
                m.d.sync += acc[p].eq(Mux(tag_first, 0, acc[p]) + part)
        core_valid = Signal()
        core_group = Signal.like(tag_group)
        m.d.sync += [core_valid.eq(tag_valid & tag_last), core_group.eq(tag_group)]
        m.d.comb += [core.i_valid.eq(core_valid), core.i_group.eq(core_group), core.i_first.eq(first)]
        if self.conv:
            core_state = Signal.like(tag_state)
            m.d.sync += core_state.eq(tag_state)
            m.d.comb += core.i_state.eq(core_state)
        m.d.comb += [core.i_sum[p].eq(acc[p]) for p in range(P)]

        # output: groups come out in order 0..G-1 (at every position), so a shift register by P lands group g at bits
        # g*P after G shifts (no address decoder: that was the critical path on iCE40)
        buf = Signal(G * P, reset_less=True)   # fully rewritten before it is read
        shifted = Signal(G * P)
        m.d.comb += shifted.eq(core.o_spikes if G == 1 else Cat(buf[P:], core.o_spikes))
        with m.If(core.o_valid):
            m.d.sync += buf.eq(shifted)
        group_done = core.o_valid & (core.o_group == G - 1)
        done = Signal()
        if self.conv:
            pos_out = Signal(index_bits(self.positions))
            m.d.comb += [self.o_map_addr.eq(pos_out), self.o_map_data.eq(shifted[:self.units]),
                         self.o_map_en.eq(group_done)]
            _step_counter(m, self, group_done, shifted[:self.units])
            with m.If(group_done):
                m.d.sync += pos_out.eq(Mux(pos_out == self.positions - 1, 0, pos_out + 1))
            m.d.sync += done.eq(group_done & (pos_out == self.positions - 1))
        else:
            m.d.comb += self.o_spikes.eq(buf[:self.layer.n_out])
            m.d.sync += done.eq(group_done)
        with m.If(done):
            m.d.sync += busy.eq(0)
        m.d.comb += self.o_done.eq(done)

        m.d.comb += [self.o_fire_valid.eq(core.o_valid), self.o_fire_group.eq(core.o_group),
                     self.o_fire_spikes.eq(core.o_spikes),
                     core.i_rd_addr.eq(self.i_rd_addr), core.i_rd_en.eq(self.i_rd_en),
                     self.o_rd_membrane.eq(core.o_rd_membrane), self.o_rd_count.eq(core.o_rd_count)]
        return m

    def _issue_dense(self, m, rom, base, plane):
        """One (g, w) per cycle; the ROM and spike word are read at once. Returns the read stage's tags."""
        G, NW = self.groups, self.words
        if self.planes > 1:
            return self._issue_dense_planes(m, rom, base, plane)
        issuing = Signal()
        g = Signal(index_bits(G))
        w = Signal(index_bits(NW))
        addr = Signal(len(base))
        with m.If(self.i_start & ~self.o_busy):
            m.d.sync += [issuing.eq(1), g.eq(0), w.eq(0), addr.eq(base)]
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
        m.d.comb += [rom.i_addr.eq(addr), rom.i_en.eq(issuing), self.o_in_addr.eq(w), self.o_in_en.eq(issuing)]
        return issuing, Signal(name="no_pad"), w == 0, last_w, g, None

    def _issue_dense_planes(self, m, rom, base, plane):
        """(g, b, w) per cycle, b = the bit plane: group g's NW ROM words once per plane, the input word b*NW + w
        (a running address: plane-major words come in order)."""
        G, NW, PL = self.groups, self.words, self.planes
        issuing = Signal()
        g = Signal(index_bits(G))
        w = Signal(index_bits(NW))
        addr = Signal(len(base))
        in_addr = Signal(index_bits(self.in_words))
        with m.If(self.i_start & ~self.o_busy):
            m.d.sync += [issuing.eq(1), g.eq(0), w.eq(0), plane.eq(0), addr.eq(base), in_addr.eq(0)]
        last_w, last_b = w == NW - 1, plane == PL - 1
        with m.If(issuing):
            m.d.sync += in_addr.eq(Mux(last_w & last_b, 0, in_addr + 1))
            with m.If(last_w):
                m.d.sync += w.eq(0)
                with m.If(last_b):
                    m.d.sync += [plane.eq(0), addr.eq(addr + 1)]
                    with m.If(g == G - 1):
                        m.d.sync += issuing.eq(0)
                    with m.Else():
                        m.d.sync += g.eq(g + 1)
                with m.Else():
                    m.d.sync += [plane.eq(plane + 1), addr.eq(addr - (NW - 1))]   # the group's words again
            with m.Else():
                m.d.sync += [w.eq(w + 1), addr.eq(addr + 1)]
        m.d.comb += [rom.i_addr.eq(addr), rom.i_en.eq(issuing), self.o_in_addr.eq(in_addr), self.o_in_en.eq(issuing)]
        return issuing, Signal(name="no_pad"), (w == 0) & (plane == 0), last_w & last_b, g, None

    def _issue_skip(self, m, rom, base):
        """Zero-word skipping: per group, only the words whose ``i_nz`` bit is set are issued, lowest first (a
        priority encoder over the pending bits; each issued word's bit is cleared); a group with no such word issues
        one masked word so that its neurons still take their step (leak, state write). Registered like conv."""
        G, NW = self.groups, self.words
        issuing = Signal()
        g = Signal(index_bits(G))
        gbase = Signal(index_bits(self.members * G * NW + 1))            # base + g * NW
        pending = Signal(NW)
        first = Signal()
        with m.If(self.i_start & ~self.o_busy):
            m.d.sync += [issuing.eq(1), g.eq(0), gbase.eq(base), pending.eq(self.i_nz), first.eq(1)]
        w = Signal(index_bits(NW))
        m.d.comb += w.eq(_lowest_set(pending)[1])
        rest = Signal(NW)
        m.d.comb += rest.eq(pending & (pending - 1))         # pending without its lowest set bit
        last = rest == 0
        with m.If(issuing):
            with m.If(last):
                m.d.sync += [pending.eq(self.i_nz), first.eq(1)]
                with m.If(g == G - 1):
                    m.d.sync += issuing.eq(0)
                with m.Else():
                    m.d.sync += [g.eq(g + 1), gbase.eq(gbase + NW)]
            with m.Else():
                m.d.sync += [pending.eq(rest), first.eq(0)]
        a_valid, a_pad, a_first, a_last = Signal(), Signal(), Signal(), Signal()
        a_w = Signal(index_bits(NW), reset_less=True)
        a_rom = Signal(len(base), reset_less=True)
        a_group = Signal(index_bits(G), reset_less=True)
        m.d.sync += [a_valid.eq(issuing), a_pad.eq(pending == 0), a_first.eq(first), a_last.eq(last), a_w.eq(w),
                     a_rom.eq(gbase + w), a_group.eq(g)]
        m.d.comb += [rom.i_addr.eq(a_rom), rom.i_en.eq(a_valid), self.o_in_addr.eq(a_w),
                     self.o_in_en.eq(a_valid & ~a_pad)]
        return a_valid, a_pad, a_first, a_last, a_group, None

    def _issue_events(self, m, rom, base):
        """Event-driven: per group, each input spike (lowest index first) issues its ROM row. ``cur`` holds the
        current word's spikes not yet issued; a word read from ``i_in_data`` is used in the cycle it arrives
        (``fresh``). When the current word's last spike issues, the lowest word still pending is read (or, at a
        group's last spike, the next group's first word), so the next cycle issues its first spike. A group with no
        spike issues one masked cycle. Registered like skip: the stage after returns (valid, pad, first, last,
        group)."""
        G, NW, W, n_in = self.groups, self.words, self.width, self.layer.n_in
        issuing = Signal()
        g = Signal(index_bits(G))
        gbase = Signal(index_bits(self.members * G * n_in + 1))      # base + g * n_in
        pending = Signal(NW)                  # words holding a spike, not yet read (this group)
        cur = Signal(W)                       # spikes of the current word not yet issued
        fresh = Signal()                      # the current word is on i_in_data (read last cycle)
        cwb = Signal(index_bits(NW * W))      # the current word's first input index (w * W)
        first = Signal()

        def lowest(vec, name):
            idx = Signal(index_bits(len(vec)), name=name)
            m.d.comb += idx.eq(_lowest_set(vec)[1])
            return idx

        def fetch(vec):
            """Read the lowest word set in ``vec`` (if any): it is current next cycle; the rest stay pending."""
            w = lowest(vec, f"fetch_{len(fetches)}")
            fetches.append((vec.any(), w))
            m.d.sync += [pending.eq(vec & (vec - 1)), fresh.eq(vec.any()), cur.eq(0), cwb.eq(bases[w])]

        fetches = []     # (enable, word) of each place that may read; at most one is active per cycle
        # w * W from a table (a small LUT ROM): a constant multiplier took two DSPs on the ECP5
        bases = Array(Const(w * W, len(cwb)) for w in range(NW))
        read_en, read_w = Signal(), Signal(index_bits(NW))
        eff = Signal(W)
        m.d.comb += eff.eq(Mux(fresh, self.i_in_data, cur))
        rest = Signal(W)
        m.d.comb += rest.eq(eff & (eff - 1))                        # eff without its lowest spike
        bit = lowest(eff, "spike_bit")
        word_last = Signal()                                         # eff holds at most one spike: rest == 0
        m.d.comb += word_last.eq(~_several_set(eff))
        group_last = word_last & (pending == 0)
        start = self.i_start & ~self.o_busy
        with m.If(start):
            m.d.sync += [issuing.eq(1), g.eq(0), gbase.eq(base), first.eq(1)]
            fetch(self.i_nz)
        s_fetch = len(fetches)
        with m.If(issuing):
            with m.If(group_last):
                m.d.sync += first.eq(1)
                with m.If(g == G - 1):
                    m.d.sync += issuing.eq(0)
                with m.Else():
                    m.d.sync += [g.eq(g + 1), gbase.eq(gbase + n_in)]
                    fetch(self.i_nz)
            with m.Else():
                m.d.sync += first.eq(0)
                with m.If(word_last):
                    fetch(pending)
                with m.Else():
                    m.d.sync += [cur.eq(rest), fresh.eq(0)]
        # the read port: the start's fetch, or the issuing cycle's (a group's next word or the next group's first)
        g_last = g == G - 1
        m.d.comb += [read_en.eq(Mux(start, fetches[0][0],
                                    issuing & Mux(group_last, ~g_last & fetches[s_fetch][0],
                                                  word_last & fetches[s_fetch + 1][0]))),
                     read_w.eq(Mux(start, fetches[0][1], Mux(group_last, fetches[s_fetch][1],
                                                             fetches[s_fetch + 1][1])))]
        a_valid, a_pad, a_first, a_last = Signal(), Signal(), Signal(), Signal()
        a_rom = Signal(len(gbase), reset_less=True)
        a_group = Signal(index_bits(G), reset_less=True)
        m.d.sync += [a_valid.eq(issuing), a_pad.eq(eff == 0), a_first.eq(first), a_last.eq(group_last),
                     a_rom.eq(gbase + cwb + bit), a_group.eq(g)]
        m.d.comb += [rom.i_addr.eq(a_rom), rom.i_en.eq(a_valid), self.o_in_addr.eq(read_w), self.o_in_en.eq(read_en)]
        return a_valid, a_pad, a_first, a_last, a_group, None

    def _issue_conv(self, m, rom, base, plane):
        """Walk (position, group, kernel element) one per cycle; the input address and padding flag are computed
        from running counters (no multiplier) and registered, then the ROM and the input word are read. With bit
        planes, (position, group, plane, kernel element): the kernel is walked once per plane, the input address
        offset by b * positions_in (``plane`` carries the registered stage's b)."""
        layer = self.layer
        G, KK, kk = self.groups, self.words, layer.kernel
        H, Wd = layer.in_shape[0], layer.in_shape[1]
        Ho, Wo = layer.out_shape[0], layer.out_shape[1]
        s, pad = layer.stride, layer.padding
        cb = max(H, Wd) * (s + 1) + kk + pad + 2
        cshape = signed(cb.bit_length() + 1)
        ashape = signed((H * Wd * (s + 1) + (kk + pad + 2) * (Wd + 1)).bit_length() + 1)
        issuing = Signal()
        oy, ox = Signal(index_bits(Ho)), Signal(index_bits(Wo))
        ky, kx = Signal(index_bits(kk)), Signal(index_bits(kk))
        g = Signal(index_bits(G))
        kidx = Signal(index_bits(KK))
        rom_addr = Signal(len(base))
        state = Signal(index_bits(self.positions * G))
        iy0, ix0 = Signal(cshape), Signal(cshape)          # top-left input position of the window
        row0 = Signal(ashape)                                # iy0 * W_in
        krow = Signal(ashape)                                # ky * W_in
        PL = self.planes
        planes = plane is not None
        b = Signal(range(PL), name="plane_issue") if planes else Const(0, 1)
        b_off = Signal(index_bits(self.in_words)) if planes else Const(0, 1)     # b * plane_words
        with m.If(self.i_start & ~self.o_busy):
            m.d.sync += [issuing.eq(1), oy.eq(0), ox.eq(0), ky.eq(0), kx.eq(0), g.eq(0), kidx.eq(0),
                         rom_addr.eq(base), state.eq(0), iy0.eq(-pad), ix0.eq(-pad), row0.eq(-pad * Wd), krow.eq(0)]
            if planes:
                m.d.sync += [b.eq(0), b_off.eq(0)]
        last_k = kidx == KK - 1
        last_b = (b == PL - 1) if planes else Const(1, 1)
        with m.If(issuing):
            if planes:
                with m.If(last_k & ~last_b):          # the next plane: the same window and ROM words again
                    m.d.sync += [kidx.eq(0), ky.eq(0), kx.eq(0), krow.eq(0), b.eq(b + 1),
                                 b_off.eq(b_off + self.plane_words), rom_addr.eq(rom_addr - (KK - 1))]
            with m.Elif(last_k) if planes else m.If(last_k):
                m.d.sync += [kidx.eq(0), ky.eq(0), kx.eq(0), krow.eq(0), state.eq(state + 1)]
                if planes:
                    m.d.sync += [b.eq(0), b_off.eq(0)]
                with m.If(g == G - 1):
                    m.d.sync += [g.eq(0), rom_addr.eq(base)]
                    with m.If(ox == Wo - 1):
                        m.d.sync += [ox.eq(0), ix0.eq(-pad)]
                        with m.If(oy == Ho - 1):
                            m.d.sync += issuing.eq(0)
                        with m.Else():
                            m.d.sync += [oy.eq(oy + 1), iy0.eq(iy0 + s), row0.eq(row0 + s * Wd)]
                    with m.Else():
                        m.d.sync += [ox.eq(ox + 1), ix0.eq(ix0 + s)]
                with m.Else():
                    m.d.sync += [g.eq(g + 1), rom_addr.eq(rom_addr + 1)]
            with m.Else():
                m.d.sync += [kidx.eq(kidx + 1), rom_addr.eq(rom_addr + 1)]
                with m.If(kx == kk - 1):
                    m.d.sync += [kx.eq(0), ky.eq(ky + 1), krow.eq(krow + Wd)]
                with m.Else():
                    m.d.sync += kx.eq(kx + 1)
        iy, ix = Signal(cshape), Signal(cshape)
        m.d.comb += [iy.eq(iy0 + ky), ix.eq(ix0 + kx)]
        inside = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < Wd)
        a_valid, a_pad, a_first, a_last = Signal(), Signal(), Signal(), Signal()
        a_addr = Signal(index_bits(self.in_words), reset_less=True)
        a_rom = Signal(len(base), reset_less=True)
        a_group = Signal(index_bits(G), reset_less=True)
        a_state = Signal(index_bits(self.positions * G), reset_less=True)
        full = Signal(ashape)
        m.d.comb += full.eq(row0 + krow + ix)
        m.d.sync += [a_valid.eq(issuing), a_pad.eq(~inside), a_first.eq((kidx == 0) & (b == 0)),
                     a_last.eq(last_k & last_b), a_addr.eq(full[:len(a_addr)] + b_off), a_rom.eq(rom_addr),
                     a_group.eq(g), a_state.eq(state)]
        if planes:
            a_plane = Signal.like(b, name="a_plane", reset_less=True)
            m.d.sync += a_plane.eq(b)
            m.d.comb += plane.eq(a_plane)
        m.d.comb += [rom.i_addr.eq(a_rom), rom.i_en.eq(a_valid), self.o_in_addr.eq(a_addr),
                     self.o_in_en.eq(a_valid & ~a_pad)]
        return a_valid, a_pad, a_first, a_last, a_group, a_state


class PoolEngine(wiring.Component):
    """OR pooling of a spike map (``bsnn_hw.Pool``, contract section 8.4), one step when started::

        for (y, x) over the H_out x W_out output positions (row-major), for (i, j) over the n x n window:
            read input word (y*n + i)*W_in + (x*n + j) (C bits: one position's channels); OR them
            after the last (i, j): write the C-bit result to output map word y*W_out + x (``o_map_*``)

    ``o_done`` pulses ``step_cycles = H_out * W_out * n * n + POOL_LATENCY`` cycles after the edge that samples
    ``i_start`` (address register 1, read 1, OR/write 1, done 1). Reads as LayerEngine (a synchronous RAM read).

    Members
    -------
    i_start, i_first (ignored: pooling has no state) -> o_busy, o_done
    o_in_addr, o_in_en, i_in_data (C)
    o_map_addr, o_map_en, o_map_data (C); o_step_count: spikes written in the last step (valid while not busy)
    """

    def __init__(self, layer):
        self._MustUse__silence = True  # no 'never used' warning if validation below fails
        if not isinstance(layer, Pool):
            raise TypeError(f"layer must be a bsnn_hw.Pool, not {type(layer).__name__}")
        if layer.mode != "or":
            raise ValueError(f"the pool engine builds OR pooling only, not {layer.mode!r}")
        self.layer = layer
        self.channels = layer.in_shape[2]
        self.width = self.channels
        self.positions = layer.out_shape[0] * layer.out_shape[1]
        self.in_words = layer.in_shape[0] * layer.in_shape[1]
        self.words = layer.window * layer.window
        self.latency = POOL_LATENCY
        self.step_cycles = self.positions * self.words + self.latency
        C = self.channels
        self._MustUse__silence = False
        super().__init__({
            "i_start": In(1), "i_first": In(1), "o_busy": Out(1), "o_done": Out(1),
            "o_in_addr": Out(index_bits(self.in_words)), "o_in_en": Out(1), "i_in_data": In(C),
            "o_map_addr": Out(index_bits(self.positions)), "o_map_en": Out(1), "o_map_data": Out(C),
            "o_step_count": Out(count_bits(layer.n_out)),
        })

    def memories(self) -> list[dict]:
        return []

    def elaborate(self, platform):
        m = Module()
        layer = self.layer
        n, Wd = layer.window, layer.in_shape[1]
        Ho, Wo = layer.out_shape[0], layer.out_shape[1]
        abits = index_bits(self.in_words + n * Wd + n)
        busy, issuing = Signal(), Signal()
        oy, ox = Signal(index_bits(Ho)), Signal(index_bits(Wo))
        i, j = Signal(index_bits(n)), Signal(index_bits(n))
        row0, col0, irow = Signal(abits), Signal(abits), Signal(abits)   # oy*n*W_in, ox*n, i*W_in
        with m.If(self.i_start & ~busy):
            m.d.sync += [busy.eq(1), issuing.eq(1), oy.eq(0), ox.eq(0), i.eq(0), j.eq(0), row0.eq(0), col0.eq(0),
                         irow.eq(0)]
        last_j, last_i = j == n - 1, i == n - 1
        with m.If(issuing):
            with m.If(last_j):
                m.d.sync += j.eq(0)
                with m.If(last_i):
                    m.d.sync += [i.eq(0), irow.eq(0)]
                    with m.If(ox == Wo - 1):
                        m.d.sync += [ox.eq(0), col0.eq(0)]
                        with m.If(oy == Ho - 1):
                            m.d.sync += issuing.eq(0)
                        with m.Else():
                            m.d.sync += [oy.eq(oy + 1), row0.eq(row0 + n * Wd)]
                    with m.Else():
                        m.d.sync += [ox.eq(ox + 1), col0.eq(col0 + n)]
                with m.Else():
                    m.d.sync += [i.eq(i + 1), irow.eq(irow + Wd)]
            with m.Else():
                m.d.sync += j.eq(j + 1)
        a_valid, a_first, a_last = Signal(), Signal(), Signal()
        a_addr = Signal(index_bits(self.in_words), reset_less=True)
        full = Signal(abits)
        m.d.comb += full.eq(row0 + irow + col0 + j)
        m.d.sync += [a_valid.eq(issuing), a_first.eq((i == 0) & (j == 0)), a_last.eq(last_i & last_j),
                     a_addr.eq(full[:len(a_addr)])]
        m.d.comb += [self.o_in_addr.eq(a_addr), self.o_in_en.eq(a_valid)]
        b_valid, b_first, b_last = _delay(m, a_valid, 1, "bv"), _delay(m, a_first, 1, "bf"), _delay(m, a_last, 1, "bl")
        acc = Signal(self.channels, reset_less=True)
        value = Signal(self.channels)
        m.d.comb += value.eq(Mux(b_first, 0, acc) | self.i_in_data)
        with m.If(b_valid):
            m.d.sync += acc.eq(value)
        pos = Signal(index_bits(self.positions))
        write = b_valid & b_last
        m.d.comb += [self.o_map_addr.eq(pos), self.o_map_data.eq(value), self.o_map_en.eq(write)]
        _step_counter(m, self, write, value)
        done = Signal()
        with m.If(write):
            m.d.sync += pos.eq(Mux(pos == self.positions - 1, 0, pos + 1))
        m.d.sync += done.eq(write & (pos == self.positions - 1))
        with m.If(done):
            m.d.sync += busy.eq(0)
        m.d.comb += [self.o_done.eq(done), self.o_busy.eq(busy)]
        return m
