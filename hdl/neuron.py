"""NeuronCore: P LIF lanes time-multiplexed over the layer's neuron groups, state in RAM, pipelined."""
from __future__ import annotations

import numpy as np
from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from bsnn_hw import contract
from bsnn_hw.checks import check_bits, check_flag, is_int as _is_int
from bsnn_hw.network import Conv2d, Layer

from .config import MAX_SUM_BITS, NEURON_LATENCY, count_bits, index_bits, memory_attrs, memory_info


class NeuronCore(wiring.Component):
    """P LIF neuron lanes over G = ceil(n_out / P) groups (group g = neurons g*P .. g*P+P-1), the contract's update:

        V' = V - (V >>> k)            (arithmetic shift = floor; no leak: V' = V)
        x  = I, or with a per-step affine (contract v3) x = (a[t, j] * I + b[t, j]) >>> F   (exact, then floor)
        V  = sat_M(V' + x)            (exact sum, then one clamp to [-2^(M-1), 2^(M-1)-1])
        fire = V > theta              (strict; never when ``fires`` is False, nor for lanes past n_out)
        V  = V - theta | 0 if fire    (reset "subtract" | "zero")
        out = fire and not fired      (fire-once; otherwise out = fire); fired |= fire; count += out

    Per-neuron state {V: signed M, count: clog2(T+1) bits if ``keep_count``, fired: 1 bit if fire-once} lives in one
    RAM of G words (P lanes each); thresholds in a ROM of G words (a constant when all are equal).

    A conv layer (``bsnn_hw.Conv2d``) has C_out neurons at each of its H_out * W_out positions: groups are channel
    groups (G = ceil(C_out / P)), the thresholds are per channel, and the state RAM holds H_out * W_out * G words,
    word ``pos * G + g``, addressed by ``i_state`` (a port only conv cores have) while ``i_group`` picks the channel
    group (threshold ROM word, lanes past C_out). ``i_first``
    marks step 0 of a sample: the stored state is then taken as 0, so samples start clean without a clear pass (and a
    reset needs none).

    Per-step affine (``layer.has_affine``, BNTT folded; docs/hardware.md): an "affine" ROM of T*G words, word
    ``t*G + g``, lane p (bits [p*(AB+BB), (p+1)*(AB+BB))) holding a[t, g*P+p] in its low AB =
    signed_width(step_scale) bits (no field, AB = 0, without a scale table: a = 2^F) and b[t, g*P+p] in the next
    BB = signed_width(step_bias) bits, two's complement, 0 past n_out (per output channel for conv, shared by every
    position). ``i_step_base`` (a port only such cores have) gives t*G for the current step; the ROM is read at
    ``i_step_base + i_group`` at c0 like the threshold ROM. With a scale table stage 1 registers the product a * I
    (one multiplier per lane, AB x sum_width bits) and b, and stage 2 adds V' + ((a * I + b) >>> F); without one
    stage 1 registers the drive I + (b >>> F) (no multiplier). Every intermediate is exact; the drive x takes
    bits(layer.max_abs_drive) + 1 bits and the stage-2 sum max(M, those) + 1. The pipeline's length does not change.

    Pipeline (latency 6, one group per cycle at most): c0 RAM/ROM read, 1 leak (and the affine's product), 2 add,
    3 saturate, 4 compare, 5 reset + write-back; results appear on ``o_*`` with ``o_valid`` 6 cycles after
    ``i_valid``, the RAM written at the same edge. A group must not be presented again before its previous result
    is out.

    Arguments
    ---------
    layer : bsnn_hw.Layer
    parallel : int, 1..n_out (P)
    timesteps : int >= 1 (T; sizes the counts; the rows of the layer's per-step affine, if it has one)
    fires : bool (False for a "membrane" readout's last layer)
    keep_count : bool (keep spike counts, for the last layer's readout)
    sum_width : int or None (bits of the signed synaptic input; default bits(fan_in * max |w| * input_max) + 1)
    input_max : the largest input value (1: spikes; contract.PIXEL_MAX for a "pixel" network's first layer)

    Members
    -------
    i_valid, i_group, i_first, i_sum (P x signed(sum_width)); i_state (conv only: the state word); i_step_base
    (per-step affine only: t*G, index_bits(T*G) bits)
    o_valid, o_group, o_spikes (P), o_membrane (P x signed(M)), o_count (P x CB)
    i_rd_addr, i_rd_en -> o_rd_membrane, o_rd_count one cycle later (state of a group; shares the RAM read port:
    use only while no group is in flight)
    """

    latency = NEURON_LATENCY

    def __init__(self, layer, parallel: int, timesteps: int, fires: bool = True, keep_count: bool = False,
                 sum_width: int | None = None, logic_rom_bits: int | None = None, spram: int | None = None,
                 input_max: int = 1):
        self._MustUse__silence = True  # no 'never used' warning if validation below fails
        if not isinstance(layer, (Layer, Conv2d)):
            raise TypeError(f"layer must be a bsnn_hw.Layer or Conv2d, not {type(layer).__name__}")
        if not _is_int(input_max) or input_max not in (1, contract.PIXEL_MAX):
            raise ValueError(f"input_max must be 1 (spikes) or {contract.PIXEL_MAX} (pixels), not {input_max!r}")
        conv = isinstance(layer, Conv2d)
        self.units = layer.out_channels if conv else layer.n_out
        self.positions = layer.out_shape[0] * layer.out_shape[1] if conv else 1
        what = "C_out" if conv else "n_out"
        if not _is_int(parallel):
            raise TypeError(f"parallel must be an int, not {parallel!r}")
        if not 1 <= parallel <= self.units:
            raise ValueError(f"parallel must be in 1..{self.units} (the layer's {what}), not {parallel!r}")
        if not _is_int(timesteps):
            raise TypeError(f"timesteps must be an int, not {timesteps!r}")
        if timesteps < 1:
            raise ValueError(f"timesteps must be at least 1, not {timesteps!r}")
        fires, keep_count = check_flag("fires", fires), check_flag("keep_count", keep_count)
        if fires and layer.threshold is None:
            raise ValueError("a layer without thresholds cannot fire: pass fires=False (membrane readout)")
        bound = layer.current_bound(input_max)
        min_sum = bound.bit_length() + 1
        if sum_width is None:
            sum_width = min_sum
        if not _is_int(sum_width):
            raise TypeError(f"sum_width must be an int or None, not {sum_width!r}")
        if not min_sum <= sum_width <= MAX_SUM_BITS:
            raise ValueError(f"sum_width must be in {min_sum}..{MAX_SUM_BITS} (at least signed +-{bound}, the layer's "
                             f"largest synaptic input), not {sum_width!r}")
        self.layer = layer
        self.parallel = parallel
        self.timesteps = timesteps
        self.fires = fires
        self.keep_count = keep_count
        self.logic_rom_bits = check_bits("logic_rom_bits", logic_rom_bits)
        self.spram_min_bits = check_bits("spram", spram)   # None: no SPRAM; else the smallest state RAM (bits) there
        self.sum_width = sum_width
        self.groups = contract.ceil_div(self.units, parallel)
        self.depth = self.positions * self.groups
        self.mbits = layer.membrane_bits
        self.cbits = count_bits(timesteps)
        P, M = parallel, self.mbits
        self.affine = bool(getattr(layer, "has_affine", False))
        if self.affine:
            rows = layer.step_bias.shape[0]
            if rows != timesteps:
                raise ValueError(f"timesteps must be {rows} (the rows of the layer's per-step affine), not "
                                 f"{timesteps}")
            scale, bias = layer.affine_tables()
            self.frac = layer.step_frac
            self.scale_bits = 0 if scale is None else contract.signed_width(scale)
            self.bias_bits = contract.signed_width(bias)
            self.drive_bits = layer.drive_bound(input_max).bit_length() + 1
            self.affine_depth = timesteps * self.groups
        self._MustUse__silence = False
        ports = {"i_state": In(index_bits(self.depth))} if conv else {}
        if self.affine:
            ports["i_step_base"] = In(index_bits(self.affine_depth))
        super().__init__({
            **ports,
            "i_valid": In(1), "i_group": In(index_bits(self.groups)), "i_first": In(1),
            "i_sum": In(data.ArrayLayout(signed(sum_width), P)),
            "o_valid": Out(1), "o_group": Out(index_bits(self.groups)), "o_spikes": Out(P),
            "o_membrane": Out(data.ArrayLayout(signed(M), P)),
            "o_count": Out(data.ArrayLayout(unsigned(self.cbits), P)),
            "i_rd_addr": In(index_bits(self.depth)), "i_rd_en": In(1),
            "o_rd_membrane": Out(data.ArrayLayout(signed(M), P)),
            "o_rd_count": Out(data.ArrayLayout(unsigned(self.cbits), P)),
        })

    # --- software view of the memories --------------------------------------------------------------------------
    def uniform_threshold(self):
        th = self.layer.threshold
        if not self.fires or th is None:
            return None
        return int(th[0]) if np.all(th == th[0]) else None

    def threshold_words(self) -> list[int]:
        """Threshold ROM words: lane p of word g = theta[g*P + p] in M-1 bits (0 past n_out)."""
        tw = self.mbits - 1
        words = []
        for g in range(self.groups):
            value = 0
            for p in range(self.parallel):
                j = g * self.parallel + p
                if j < self.units:
                    value |= int(self.layer.threshold[j]) << (p * tw)
            words.append(value)
        return words

    @property
    def affine_lane_bits(self) -> int:
        """Bits of one lane of an affine ROM word: a (scale_bits, 0 without a scale table) then b (bias_bits)."""
        return self.scale_bits + self.bias_bits if self.affine else 0

    def affine_words(self) -> list[int]:
        """Affine ROM words: word t*G + g, lane p = [a[t, g*P+p] | b[t, g*P+p]] in two's complement, a in the low
        scale_bits (absent without a scale table), b above it; 0 past n_out (C_out for conv)."""
        if not self.affine:
            return []
        scale, bias = self.layer.affine_tables()
        AB, BB, LW = self.scale_bits, self.bias_bits, self.affine_lane_bits
        words = []
        for t in range(self.timesteps):
            for g in range(self.groups):
                value = 0
                for p in range(self.parallel):
                    j = g * self.parallel + p
                    if j < self.units:
                        lane = (int(bias[t, j]) & ((1 << BB) - 1)) << AB
                        if AB:
                            lane |= int(scale[t, j]) & ((1 << AB) - 1)
                        value |= lane << (p * LW)
                words.append(value)
        return words

    @property
    def multipliers(self) -> int:
        """Multipliers the core builds: one per lane with a per-step scale table, else none."""
        return self.parallel if self.affine and self.scale_bits else 0

    @property
    def state_lane_bits(self) -> int:
        return self.mbits + (self.cbits if self.keep_count else 0) + (1 if self.layer.fire_once else 0)

    @property
    def state_spram(self) -> bool:
        """Whether the state RAM goes to SPRAM: allowed by the engine (HwConfig.spram and config.spram_legal) and at
        least ``spram`` bits (HwConfig.spram_min_bits)."""
        return (self.spram_min_bits is not None
                and max(2, self.depth) * self.parallel * self.state_lane_bits >= self.spram_min_bits)

    def memories(self) -> list[dict]:
        """The memories this core instantiates (for the manifest)."""
        mems = [memory_info("state", "ram", self.depth, self.parallel * self.state_lane_bits, spram=self.state_spram)]
        if self.fires and self.uniform_threshold() is None:
            mems.append(memory_info("threshold", "rom", self.groups, self.parallel * (self.mbits - 1),
                                    logic_rom_bits=self.logic_rom_bits))
        if self.affine:
            mems.append(memory_info("affine", "rom", self.affine_depth, self.parallel * self.affine_lane_bits,
                                    logic_rom_bits=self.logic_rom_bits))
        return mems

    def elaborate(self, platform):
        m = Module()
        layer, P, M, CB = self.layer, self.parallel, self.mbits, self.cbits
        fire_once, keep = layer.fire_once, self.keep_count
        SW = self.state_lane_bits
        lo, hi = contract.membrane_range(M)
        gbits = index_bits(self.groups)

        attrs = {"ram_style": "huge"} if self.state_spram else memory_attrs(self.depth, P * SW)
        m.submodules.state = state = Memory(shape=unsigned(P * SW), depth=max(2, self.depth), init=[], attrs=attrs)
        rd = state.read_port()
        wr = state.write_port()
        conv = self.positions > 1 or isinstance(layer, Conv2d)
        i_state = self.i_state if conv else self.i_group
        # One read port serves the pipeline and the readout (never at the same time), so the RAM maps to one EBR.
        rd_addr = Signal.like(rd.addr)
        m.d.comb += [
            rd_addr.eq(Mux(self.i_valid, i_state, self.i_rd_addr)),
            rd.en.eq(self.i_valid | self.i_rd_en),
        ]
        for p in range(P):
            base = p * SW
            m.d.comb += self.o_rd_membrane[p].eq(rd.data[base:base + M])
            if keep:
                m.d.comb += self.o_rd_count[p].eq(rd.data[base + M:base + M + CB])

        uniform = self.uniform_threshold()
        TW = M - 1
        if self.fires and uniform is None:
            m.submodules.threshold = trom = Memory(shape=unsigned(P * TW), depth=max(2, self.groups),
                                                   init=self.threshold_words(),
                                                   attrs=memory_attrs(self.groups, P * TW, rom=True,
                                                                      logic_rom_bits=self.logic_rom_bits))
            th_rd = trom.read_port()
            m.d.comb += th_rd.addr.eq(self.i_group)
        if self.affine:
            # per-step scale and bias: word t*G + g, read at c0 beside the threshold ROM
            AB, BB, LW, F = self.scale_bits, self.bias_bits, self.affine_lane_bits, self.frac
            adepth = max(2, self.affine_depth)
            m.submodules.affine = arom = Memory(shape=unsigned(P * LW), depth=adepth, init=self.affine_words(),
                                                attrs=memory_attrs(adepth, P * LW, rom=True,
                                                                                   logic_rom_bits=self.logic_rom_bits))
            af_rd = arom.read_port()
            m.d.comb += af_rd.addr.eq(self.i_step_base + self.i_group)

        # lanes past n_out (only in the last group) never fire
        n_last = self.units - (self.groups - 1) * P
        last_mask = (1 << n_last) - 1
        all_mask = (1 << P) - 1

        # Data registers are reset_less: only the valid bits (v1..v5, o_valid) need the reset, which keeps the reset
        # net small; nothing reads a data register unless its valid bit says so.
        # stage 1 inputs (registered at c0)
        v1, g1, f1 = Signal(), Signal(gbits), Signal()
        # the state address travels beside the group (the group itself for a dense core)
        sbits = index_bits(self.depth)
        st = [Signal(sbits, name=f"state{k}", reset_less=True) for k in range(1, 6)]
        m.d.sync += [st[0].eq(i_state)] + [st[k].eq(st[k - 1]) for k in range(1, 5)]
        sum1 = [Signal(signed(self.sum_width), name=f"sum1_{p}", reset_less=True) for p in range(P)]
        m.d.sync += [v1.eq(self.i_valid), g1.eq(self.i_group), f1.eq(self.i_first)]
        m.d.sync += [sum1[p].eq(self.i_sum[p]) for p in range(P)]

        # stage 1: leak
        v2, g2 = Signal(), Signal(gbits)
        m.d.sync += [v2.eq(v1), g2.eq(g1)]
        leaked2 = [Signal(signed(M), name=f"leaked2_{p}", reset_less=True) for p in range(P)]
        drive_width = self.drive_bits if self.affine else self.sum_width
        scaled = self.affine and self.scale_bits > 0
        if scaled:      # the product a * I and b (their sum is formed in stage 2)
            prod2 = [Signal(signed(self.scale_bits + self.sum_width), name=f"prod2_{p}", reset_less=True)
                     for p in range(P)]
            bias2 = [Signal(signed(self.bias_bits), name=f"bias2_{p}", reset_less=True) for p in range(P)]
        else:           # the drive x: I, or I + (b >>> F)
            sum2 = [Signal(signed(drive_width), name=f"sum2_{p}", reset_less=True) for p in range(P)]
        count2 = [Signal(CB, name=f"count2_{p}", reset_less=True) for p in range(P)]
        fired2 = [Signal(name=f"fired2_{p}", reset_less=True) for p in range(P)]
        theta2 = [Signal(TW, name=f"theta2_{p}", reset_less=True) for p in range(P)]
        for p in range(P):
            base = p * SW
            vprev = Signal(signed(M), name=f"vprev_{p}")
            m.d.comb += vprev.eq(Mux(f1, 0, rd.data[base:base + M]))
            if layer.leak_shift is None:
                m.d.sync += leaked2[p].eq(vprev)
            else:
                m.d.sync += leaked2[p].eq(vprev - (vprev >> layer.leak_shift))   # signed >>: floor
            if self.affine:
                # x = (a * I + b) >>> F: every intermediate at its full width (exact); x itself fits the drive's
                # width (|x| <= layer.max_abs_drive)
                lane = af_rd.data[p * LW:(p + 1) * LW]
                b = Signal(signed(BB), name=f"bias1_{p}")
                m.d.comb += b.eq(lane[AB:])
                if AB:
                    # the product (a hard multiplier where the part has one) and b registered here, their sum in
                    # stage 2: the multiplier and the wide adder in different stages (ECP5: 134 MHz against 107)
                    a = Signal(signed(AB), name=f"scale1_{p}")
                    m.d.comb += a.eq(lane[:AB])
                    m.d.sync += [prod2[p].eq(a * sum1[p]), bias2[p].eq(b)]
                else:
                    # a = 2^F: (2^F I + b) >>> F = I + (b >>> F), no multiplier
                    m.d.sync += sum2[p].eq(sum1[p] + (b >> F))
            else:
                m.d.sync += sum2[p].eq(sum1[p])
            if keep:
                m.d.sync += count2[p].eq(Mux(f1, 0, rd.data[base + M:base + M + CB]))
            if fire_once:
                m.d.sync += fired2[p].eq(Mux(f1, 0, rd.data[base + SW - 1]))
            if self.fires:
                if uniform is None:
                    m.d.sync += theta2[p].eq(th_rd.data[p * TW:(p + 1) * TW])
                else:
                    m.d.comb += theta2[p].eq(uniform)

        def carry(sigs, stage):
            out = []
            for p, s in enumerate(sigs):
                r = Signal.like(s, name=f"{s.name[:-len(str(p)) - 2]}{stage}_{p}", reset_less=True)
                m.d.sync += r.eq(s)
                out.append(r)
            return out

        # stage 2: exact add
        v3, g3 = Signal(), Signal(gbits)
        m.d.sync += [v3.eq(v2), g3.eq(g2)]
        total3 = [Signal(signed(max(M, drive_width) + 1), name=f"total3_{p}", reset_less=True) for p in range(P)]
        if scaled:
            for p in range(P):
                acc = Signal(signed(max(self.scale_bits + self.sum_width, self.bias_bits) + 1), name=f"affine2_{p}")
                drive = Signal(signed(drive_width), name=f"drive2_{p}")
                m.d.comb += [acc.eq(prod2[p] + bias2[p]), drive.eq(acc >> self.frac)]   # signed >>: floor
                m.d.sync += total3[p].eq(leaked2[p] + drive)
        else:
            m.d.sync += [total3[p].eq(leaked2[p] + sum2[p]) for p in range(P)]
        count3, fired3, theta3 = carry(count2, 3), carry(fired2, 3), carry(theta2, 3)

        # stage 3: saturate
        v4, g4 = Signal(), Signal(gbits)
        m.d.sync += [v4.eq(v3), g4.eq(g3)]
        mem4 = [Signal(signed(M), name=f"mem4_{p}", reset_less=True) for p in range(P)]
        for p in range(P):
            m.d.sync += mem4[p].eq(Mux(total3[p] > hi, hi, Mux(total3[p] < lo, lo, total3[p])))
        count4, fired4, theta4 = carry(count3, 4), carry(fired3, 4), carry(theta3, 4)

        # stage 4: strict compare
        v5, g5 = Signal(), Signal(gbits)
        m.d.sync += [v5.eq(v4), g5.eq(g4)]
        lane_ok = Signal(P)
        if n_last == P:
            m.d.comb += lane_ok.eq(all_mask)
        else:
            m.d.comb += lane_ok.eq(Mux(g4 == self.groups - 1, last_mask, all_mask))
        mem5 = carry(mem4, 5)
        fire5 = [Signal(name=f"fire5_{p}", reset_less=True) for p in range(P)]
        if self.fires:
            m.d.sync += [fire5[p].eq((mem4[p] > theta4[p])
                                     & lane_ok[p]) for p in range(P)]
        count5, fired5, theta5 = carry(count4, 5), carry(fired4, 5), carry(theta4, 5)

        # stage 5: reset, fire-once, count, write-back
        words = []
        spikes = []
        for p in range(P):
            vnew = Signal(signed(M), name=f"vnew_{p}")
            if layer.reset == "subtract":
                m.d.comb += vnew.eq(Mux(fire5[p], mem5[p] - theta5[p], mem5[p]))
            else:
                m.d.comb += vnew.eq(Mux(fire5[p], 0, mem5[p]))
            out = Signal(name=f"out_{p}")
            m.d.comb += out.eq(fire5[p] & ~fired5[p] if fire_once else fire5[p])
            cnew = Signal(CB, name=f"cnew_{p}")
            m.d.comb += cnew.eq(count5[p] + out)
            fields = [vnew]
            if keep:
                fields.append(cnew)
            if fire_once:
                fields.append(fired5[p] | fire5[p])
            words.append(Cat(*fields))
            spikes.append(out)
            m.d.sync += self.o_membrane[p].eq(vnew)
            if keep:
                m.d.sync += self.o_count[p].eq(cnew)
        m.d.comb += [wr.data.eq(Cat(*words)), wr.en.eq(v5)]
        if self.state_spram:
            # one address for both ports (the SPRAM has one; Yosys maps a memory to it only when both ports share
            # the address signal): the engine never reads and writes in one cycle (config.spram_legal), so the
            # write-back's address wins only when nothing is read
            shared = Signal.like(rd.addr)
            m.d.comb += [shared.eq(Mux(v5, st[4], rd_addr)), rd.addr.eq(shared), wr.addr.eq(shared)]
            with m.If(v5):
                m.d.comb += rd.en.eq(0)
        else:
            m.d.comb += [rd.addr.eq(rd_addr), wr.addr.eq(st[4])]
        m.d.sync += [self.o_valid.eq(v5), self.o_group.eq(g5), self.o_spikes.eq(Cat(*spikes))]
        return m
