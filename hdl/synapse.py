"""SynapseArray: the contract's XNOR-popcount partial sum over one W-bit word, as a pipelined adder tree."""
from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from bsnn_hw import contract
from bsnn_hw.checks import check_int

from .config import MAX_WORD_BITS, synapse_latency, tree_stride


def sum_shape(width: int, bits: int = 1):
    """Signed shape holding every partial sum of W inputs: -W..W for 1-bit weights, W * [-2^(k-1), 2^(k-1)-1]
    for k-bit weights."""
    if bits == 1:
        return signed(width.bit_length() + 1)
    return signed((width << (bits - 1)).bit_length() + 1)


def _tree(m: Module, values: list, name: str, signed_: bool, stride: int = 1):
    """Balanced adder tree with a register after every ``stride`` levels and after the last; returns (sum,
    registered stages) = (sum, ceil(levels / stride)). Each sum is one bit wider than its wider operand, so no level
    can overflow."""
    level = list(values)
    depth = stages = 0
    while len(level) > 1:
        nxt = []
        last = len(level) <= 2
        registered = last or (depth + 1) % stride == 0
        for k in range(0, len(level), 2):
            pair = level[k:k + 2]
            width = max(len(x) for x in pair) + (1 if len(pair) == 2 else 0)
            r = Signal(signed(width) if signed_ else width, name=f"{name}_l{depth}_{k // 2}",
                       reset_less=True)  # data: valid carries the reset
            value = pair[0] + pair[1] if len(pair) == 2 else pair[0]
            if registered:
                m.d.sync += r.eq(value)
            else:
                m.d.comb += r.eq(value)
            nxt.append(r)
        level = nxt
        depth += 1
        stages += registered
    return level[0], stages


def popcount_tree(m: Module, bits: list, name: str, stride: int = 1):
    """Adder tree over 1-bit signals (a popcount): (sum, registered stages)."""
    return _tree(m, bits, name, signed_=False, stride=stride)


def signed_tree(m: Module, values: list, name: str, stride: int = 1):
    """Adder tree over signed values (the k-bit lanes' gated weights): (sum, registered stages)."""
    return _tree(m, values, name, signed_=True, stride=stride)


class SynapseArray(wiring.Component):
    """The contract's partial sum of W spike bits against W weights (docs/spec.md sections 2 and 8.2).

    1-bit weights (``bits`` = 1; bit 1 = +1), the XNOR-popcount:

        o_sum = sum_i s[i] * (2 b[i] - 1) = 2 * popcount(s & b) - popcount(s)        in [-W, W]

    k-bit weights (2 <= k <= 8; lane i = bits [i*k, (i+1)*k) of ``i_weights``, two's complement,
    ``contract.pack_weight_words``), spikes gating an adder tree (no multipliers):

        o_sum = sum_i (s[i] ? w[i] : 0)

    Padding inputs must arrive as s = 0 (they then contribute nothing). Fully pipelined, one word per cycle, no
    stall; latency ``ceil(clog2(W) / stride) + 1`` cycles for every k (a register after every ``stride`` tree levels,
    ``config.tree_stride(W)``: 1 up to 64 inputs, 2 above; plus the 2a - s stage for
    k = 1 or the gating stage for k > 1).

    Members
    -------
    i_valid : In(1); i_spikes : In(W); i_weights : In(W * k)
    o_valid : Out(1)            i_valid delayed by ``latency``
    o_sum : Out(sum_shape(W, k))
    """

    def __init__(self, width: int, bits: int = 1):
        self._MustUse__silence = True  # no 'never used' warning if validation below fails
        check_int("width", width, 1, MAX_WORD_BITS, "inputs per word: the widest word a synapse array builds")
        check_int("bits", bits, contract.WEIGHT_BITS_MIN, contract.WEIGHT_BITS_MAX, "the weight bits")
        self.width, self.bits = width, bits
        self.latency = synapse_latency(width)
        self._MustUse__silence = False
        super().__init__({
            "i_valid": In(1), "i_spikes": In(width), "i_weights": In(width * bits),
            "o_valid": Out(1), "o_sum": Out(sum_shape(width, bits)),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.width
        if self.bits > 1:
            return self._elaborate_kbit(m)
        agree = Signal(w)  # a named signal: slicing an expression would repeat it (TOOLCHAIN gotcha 7)
        m.d.comb += agree.eq(self.i_spikes & self.i_weights)
        stride = tree_stride(w)
        a_sum, depth = popcount_tree(m, [agree[i] for i in range(w)], "agree", stride)
        s_sum, _ = popcount_tree(m, [self.i_spikes[i] for i in range(w)], "active", stride)
        out = Signal(sum_shape(w), reset_less=True)
        # Wrap-around arithmetic is exact here: out is wide enough for -W..W.
        m.d.sync += out.eq((a_sum << 1) - s_sum)
        m.d.comb += [self.o_valid.eq(self._valid_after(m, depth + 1)), self.o_sum.eq(out)]
        return m

    def _valid_after(self, m, stages: int):
        """i_valid delayed by ``stages`` registers (valid travels alongside the data); ``stages`` is the latency."""
        assert stages == self.latency
        v = self.i_valid
        for k in range(stages):
            r = Signal(name=f"valid_{k}")
            m.d.sync += r.eq(v)
            v = r
        return v

    def _elaborate_kbit(self, m):
        w, k = self.width, self.bits
        lanes = data.ArrayLayout(signed(k), w)
        weights = data.View(lanes, self.i_weights)
        gated = []
        for i in range(w):
            r = Signal(signed(k), name=f"gated_{i}", reset_less=True)   # spike-gated weight: an AND, no multiplier
            m.d.sync += r.eq(Mux(self.i_spikes[i], weights[i], 0))
            gated.append(r)
        total, depth = signed_tree(m, gated, "wsum", tree_stride(w))
        m.d.comb += [self.o_valid.eq(self._valid_after(m, depth + 1)), self.o_sum.eq(total)]
        return m
