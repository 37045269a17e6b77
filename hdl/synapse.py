"""SynapseArray: the contract's XNOR-popcount partial sum over one W-bit word, as a pipelined adder tree."""
from __future__ import annotations

from amaranth import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import _is_int, synapse_latency


def sum_shape(width: int):
    """Signed shape holding -W..W."""
    return signed(width.bit_length() + 1)


def popcount_tree(m: Module, bits: list, name: str):
    """Balanced adder tree over 1-bit signals with a register after every level; returns (sum, levels)."""
    level = list(bits)
    depth = 0
    while len(level) > 1:
        nxt = []
        for k in range(0, len(level), 2):
            pair = level[k:k + 2]
            width = max(len(x) for x in pair) + (1 if len(pair) == 2 else 0)
            r = Signal(width, name=f"{name}_l{depth}_{k // 2}", reset_less=True)  # data: valid carries the reset
            m.d.sync += r.eq(pair[0] + pair[1] if len(pair) == 2 else pair[0])
            nxt.append(r)
        level = nxt
        depth += 1
    return level[0], depth


class SynapseArray(wiring.Component):
    """XNOR-popcount of W spike bits against W weight bits (bit 1 = +1):

        o_sum = sum_i s[i] * (2 b[i] - 1) = 2 * popcount(s & b) - popcount(s)        in [-W, W]

    Padding inputs must arrive as s = 0 (they then contribute nothing). Fully pipelined, one word per cycle, no
    stall; latency ``clog2(W) + 1`` cycles (a register after every tree level, then the 2a - s stage).

    Members
    -------
    i_valid : In(1); i_spikes : In(W); i_weights : In(W)
    o_valid : Out(1)            i_valid delayed by ``latency``
    o_sum : Out(signed(bits(W) + 1))
    """

    def __init__(self, width: int):
        self._MustUse__silence = True  # no 'never used' warning if validation below fails
        if not _is_int(width):
            raise TypeError(f"width must be an int, not {width!r}")
        if width < 1:
            raise ValueError(f"width must be at least 1, not {width!r}")
        self.width = width
        self.latency = synapse_latency(width)
        self._MustUse__silence = False
        super().__init__({
            "i_valid": In(1), "i_spikes": In(width), "i_weights": In(width),
            "o_valid": Out(1), "o_sum": Out(sum_shape(width)),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.width
        agree = Signal(w)  # a named signal: slicing an expression would repeat it (TOOLCHAIN gotcha 7)
        m.d.comb += agree.eq(self.i_spikes & self.i_weights)
        a_sum, depth = popcount_tree(m, [agree[i] for i in range(w)], "agree")
        s_sum, _ = popcount_tree(m, [self.i_spikes[i] for i in range(w)], "active")
        out = Signal(sum_shape(w), reset_less=True)
        # Wrap-around arithmetic is exact here: out is wide enough for -W..W.
        m.d.sync += out.eq((a_sum << 1) - s_sum)
        # valid travels alongside the data
        v = self.i_valid
        for k in range(depth + 1):
            r = Signal(name=f"valid_{k}")
            m.d.sync += r.eq(v)
            v = r
        assert depth + 1 == self.latency
        m.d.comb += [self.o_valid.eq(v), self.o_sum.eq(out)]
        return m
