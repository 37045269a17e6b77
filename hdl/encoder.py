"""InputEncoder: 8-bit pixels in, the contract's rate or latency spike words out (docs/hardware.md, "On-chip input
encoder"), bit-exact with :mod:`bsnn_hw.encode`."""
from __future__ import annotations

import numpy as np
from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from bsnn_hw import contract
from bsnn_hw.checks import is_int as _is_int

from .config import count_bits, index_bits

ENCODINGS = ("rate", "latency")


def lfsr_matrix(steps: int) -> list[int]:
    """The contract's Galois LFSR advanced ``steps`` steps as a GF(2) linear map: entry j is the state reached from
    the state with only bit j set (the update is linear, so any state's successor is the XOR of its bits' images)."""
    cols = []
    for j in range(contract.LFSR_BITS):
        s = 1 << j
        for _ in range(steps):
            s = contract.lfsr_step(s)
        cols.append(s)
    return cols


def _apply(m: Module, cols: list[int], state: Signal, bits: int, name: str) -> Signal:
    """The low ``bits`` bits of ``cols`` applied to ``state``: each output bit an XOR of state bits."""
    out = Signal(bits, name=name)
    for b in range(bits):
        taps = [state[j] for j in range(len(cols)) if (cols[j] >> b) & 1]
        bit = Const(0, 1)
        for tap in taps:
            bit = bit ^ tap
        m.d.comb += out[b].eq(bit)
    return out


class InputEncoder(wiring.Component):
    """One sample's pixels in, one step's spike words out.

    Load (``i_load``, sampled while idle): take n_in pixels from ``i_pixels`` (one per beat, input order) into the
    pixel RAM, E = ``lanes`` pixels per word (R = ceil(n_in / E) words; word r holds inputs r*E .. r*E + E - 1; lanes
    past n_in hold "never spikes"); for the latency code a lane stores the pixel's spike step
    ``((255 - x) * T) >> 8`` (T for x = 0: never), for the rate code the pixel itself. ``o_done`` pulses the cycle
    after the last pixel's word is written.

    Encode (``i_start`` while idle, ``i_step`` = t, ``i_first`` = t is 0): for r = 0..R-1 read pixel word r and turn
    it into E spikes (lane k spikes iff draw_k < x_k for rate, iff stored step = t for latency); every W / E words
    (E divides W) and at the last, write the assembled W-bit spike word on ``o_wr_*``; then pulse ``o_done``: R + 2
    cycles from the i_start edge to o_done. The rate code draws as :func:`bsnn_hw.encode.rate`: the 16-bit LFSR is
    reseeded with ``seed`` at i_first, and pixel word r's lane k takes the (k+1)-th 8-step draw after the previous
    word's; the LFSR then advances 8 * (the word's valid lanes) steps (one unrolled XOR network per word kind, no
    loop). E trades the pixel RAM's width (block RAMs on a small FPGA) against R cycles per step.

    Members
    -------
    i_pixels : In(stream.Signature(8))
    i_load, i_start, i_first : In(1); i_step : In(clog2 T)
    o_busy, o_done : Out(1)
    o_wr_en : Out(1); o_wr_addr : Out(clog2 NW); o_wr_data : Out(W)
    """

    def __init__(self, n_in: int, width: int, timesteps: int, encoding: str, seed: int = 1, lanes: int | None = None):
        self._MustUse__silence = True  # no 'never used' warning if validation below fails
        for name, v, lo in (("n_in", n_in, 1), ("width", width, 1), ("timesteps", timesteps, 1)):
            if not _is_int(v):
                raise TypeError(f"{name} must be an int, not {v!r}")
            if v < lo:
                raise ValueError(f"{name} must be at least {lo}, not {v}")
        if width > n_in:
            raise ValueError(f"width must be in 1..{n_in} (n_in), not {width}")
        lanes = width if lanes is None else lanes
        if not _is_int(lanes):
            raise TypeError(f"lanes must be an int, not {lanes!r}")
        if not 1 <= lanes <= width or width % lanes:
            raise ValueError(f"lanes (pixels per pixel-RAM word) must divide the input word width {width}, not "
                             f"{lanes}")
        if encoding not in ENCODINGS:
            raise ValueError(f"the on-chip encoder builds the {' and '.join(ENCODINGS)} codes, not {encoding!r} "
                             f"(a 'direct' model takes spike trains from the host)")
        self.n_in, self.width, self.timesteps, self.encoding = n_in, width, timesteps, encoding
        # one LFSR seed (1..65535), checked for every code although only "rate" draws from it
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an int (the encoder's one LFSR seed), not {seed!r}")
        seed = int(contract.check_seed(seed))
        self.seed = seed if encoding == "rate" else 1
        self.words = contract.ceil_div(n_in, width)             # spike words per step (NW)
        self.lanes = lanes
        self.pixel_words = contract.ceil_div(n_in, lanes)        # R
        self.last_lanes = n_in - (self.pixel_words - 1) * lanes
        self.lane_bits = 8 if encoding == "rate" else count_bits(timesteps)
        self._MustUse__silence = False
        super().__init__({
            "i_pixels": In(stream.Signature(8)),
            "i_load": In(1), "i_start": In(1), "i_first": In(1), "i_step": In(index_bits(timesteps)),
            "o_busy": Out(1), "o_done": Out(1),
            "o_wr_en": Out(1), "o_wr_addr": Out(index_bits(self.words)), "o_wr_data": Out(width),
        })

    def memories(self) -> list[dict]:
        from .config import memory_info
        return [memory_info("pixels", "ram", self.pixel_words, self.lanes * self.lane_bits)]

    def elaborate(self, platform):
        m = Module()
        W, NW, T, lb = self.width, self.words, self.timesteps, self.lane_bits
        E, R, K = self.lanes, self.pixel_words, self.width // self.lanes
        never = 0 if self.encoding == "rate" else T        # a padding lane's value: never spikes
        m.submodules.mem = mem = Memory(shape=unsigned(E * lb), depth=max(2, R), init=[])
        wr, rd = mem.write_port(), mem.read_port()

        loading, encoding = Signal(), Signal()
        done = Signal()
        m.d.comb += [self.o_busy.eq(loading | encoding), self.o_done.eq(done)]
        m.d.sync += done.eq(0)

        # --- load: a word register filled lane by lane, written when full or at the last pixel ------------------
        blank = Const(sum(never << (k * lb) for k in range(E)), E * lb)
        word = Signal(E * lb, init=blank.value)
        lane = Signal(index_bits(E))
        waddr = Signal(index_bits(R))
        value = Signal(lb)
        px = self.i_pixels.payload
        if self.encoding == "rate":
            m.d.comb += value.eq(px)
        else:
            m.d.comb += value.eq(Mux(px == 0, T, ((255 - px) * T) >> 8))
        merged = Signal(E * lb)
        m.d.comb += merged.eq(word)
        for k in range(E):
            with m.If(lane == k):
                m.d.comb += merged.word_select(k, lb).eq(value)
        take = loading & self.i_pixels.valid
        m.d.comb += self.i_pixels.ready.eq(loading)
        last_lane = Mux(waddr == R - 1, self.last_lanes - 1, E - 1)
        with m.If(self.i_load & ~self.o_busy):
            m.d.sync += [loading.eq(1), lane.eq(0), waddr.eq(0), word.eq(blank)]
        with m.If(take):
            with m.If(lane == last_lane):
                m.d.comb += [wr.addr.eq(waddr), wr.data.eq(merged), wr.en.eq(1)]
                m.d.sync += [lane.eq(0), word.eq(blank), waddr.eq(waddr + 1)]
                with m.If(waddr == R - 1):
                    m.d.sync += [loading.eq(0), done.eq(1)]
            with m.Else():
                m.d.sync += [lane.eq(lane + 1), word.eq(merged)]

        # --- encode one step: read pixel word r, one cycle later turn it into E spikes of spike word r // K -------
        r = Signal(index_bits(R))
        k_i = Signal(index_bits(K))                  # r mod K and r // K, as running counters
        w_i = Signal(index_bits(NW))
        issuing = Signal()
        r_valid, r_last, r_k, r_w = Signal(), Signal(), Signal(index_bits(K)), Signal(index_bits(NW))
        step = Signal(index_bits(T))
        with m.If(self.i_start & ~self.o_busy):
            m.d.sync += [encoding.eq(1), issuing.eq(1), r.eq(0), k_i.eq(0), w_i.eq(0), step.eq(self.i_step)]
        m.d.comb += [rd.addr.eq(r), rd.en.eq(issuing)]
        m.d.sync += [r_valid.eq(issuing), r_last.eq(r == R - 1), r_k.eq(k_i), r_w.eq(w_i)]
        with m.If(issuing):
            with m.If(r == R - 1):
                m.d.sync += issuing.eq(0)
            m.d.sync += r.eq(r + 1)
            with m.If(k_i == K - 1):
                m.d.sync += [k_i.eq(0), w_i.eq(w_i + 1)]
            with m.Else():
                m.d.sync += k_i.eq(k_i + 1)
        spikes = Signal(E)
        lanes = [rd.data[k * lb:(k + 1) * lb] for k in range(E)]
        if self.encoding == "rate":
            state = Signal(contract.LFSR_BITS, init=self.seed)
            with m.If(self.i_start & ~self.o_busy & self.i_first):
                m.d.sync += state.eq(self.seed)
            for k in range(E):
                draw = _apply(m, lfsr_matrix(contract.LFSR_STEPS_PER_DRAW * (k + 1)), state, 8, f"draw_{k}")
                m.d.comb += spikes[k].eq(draw < lanes[k])
            full = _apply(m, lfsr_matrix(contract.LFSR_STEPS_PER_DRAW * E), state, contract.LFSR_BITS, "adv_full")
            part = _apply(m, lfsr_matrix(contract.LFSR_STEPS_PER_DRAW * self.last_lanes), state,
                          contract.LFSR_BITS, "adv_last")
            with m.If(r_valid):
                m.d.sync += state.eq(Mux(r_last, part, full))
        else:
            for k in range(E):
                m.d.comb += spikes[k].eq(lanes[k] == step)
        # the spike word: K pixel words' spikes side by side (lane k of part j is bit j*E + k)
        acc = Signal(W)
        merged_w = Signal(W)
        if K == 1:
            m.d.comb += merged_w.eq(spikes)
        else:
            parts = [Mux(r_k == j, spikes, acc[j * E:(j + 1) * E]) for j in range(K)]
            m.d.comb += merged_w.eq(Cat(*parts))
            with m.If(r_valid):
                m.d.sync += acc.eq(Mux((r_k == K - 1) | r_last, 0, merged_w))
        m.d.comb += [self.o_wr_en.eq(r_valid & ((r_k == K - 1) | r_last)), self.o_wr_addr.eq(r_w),
                     self.o_wr_data.eq(merged_w)]
        with m.If(r_valid & r_last):
            m.d.sync += [encoding.eq(0), done.eq(1)]
        return m
