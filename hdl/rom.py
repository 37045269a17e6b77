"""WeightROM: a layer's weight bits packed into P*W-bit block-RAM words."""
from __future__ import annotations

import numpy as np
from amaranth import Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from bsnn_hw import contract
from bsnn_hw.checks import check_bits, check_int

from .config import index_bits, memory_attrs


def _check_weights(weights, bits: int = 1) -> np.ndarray:
    try:
        w = np.asarray(weights)
    except ValueError:          # NumPy's own words for a ragged list
        raise ValueError("weights must be a rectangular (n_out, n_in) array, not rows of different lengths") from None
    if bits == 1 and w.dtype != bool:
        raise TypeError(f"weights must be a bool array (True = +1), not {w.dtype}")
    if bits > 1 and (w.dtype == bool or not np.issubdtype(w.dtype, np.integer)):
        raise TypeError(f"{bits}-bit weights must be an integer array, not {w.dtype}")
    if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
        raise ValueError(f"weights must have shape (n_out, n_in) with both at least 1, not {w.shape}")
    contract.check_weight_range(w, bits)
    return w


def _check_fold(weights, parallel, width, bits) -> tuple[np.ndarray, int, int, int]:
    """(weights, P, W, k) checked: k in 1..8, the weights' shape and range, P in 1..n_out, W in 1..n_in."""
    bits = check_int("bits", bits, contract.WEIGHT_BITS_MIN, contract.WEIGHT_BITS_MAX, "the weight bits")
    w = _check_weights(weights, bits)
    n_out, n_in = w.shape
    parallel = check_int("parallel", parallel, 1, n_out, "the layer's n_out")
    width = check_int("width", width, 1, n_in, "the layer's n_in")
    return w, parallel, width, bits


class WeightROM(wiring.Component):
    """A layer's weights in block RAM.

    Word ``g*NW + w`` (G = ceil(n_out / P) groups, NW = ceil(n_in / W) words) holds P lanes of W weights of k bits;
    lane p (bits ``[p*W*k, (p+1)*W*k)``) weight i is the weight of neuron g*P + p from input w*W + i, packed by
    :func:`bsnn_hw.contract.pack_weight_words` (k = 1: the bit, 1 = +1; k > 1: k-bit two's complement); weights
    past n_in and lanes past n_out are 0. A conv layer's (C_out, k, k, C_in) weights enter as (C_out, k*k*C_in) rows
    in the contract's (ky, kx, c) order with W = C_in: word w of a group is then kernel position w. An ``amaranth.lib.memory.Memory``
    with init and one synchronous read port, so Yosys infers block RAM.

    Arguments
    ---------
    weights : bool array (n_out, n_in), or integers for ``bits`` > 1
    parallel : int, 1..n_out (P)
    width : int, 1..n_in (W)
    bits : int, 1..8 (k, the layer's weight_bits)

    Members
    -------
    i_addr : In(clog2(depth))   word address
    i_en : In(1)                read enable (o_data holds while low)
    o_data : Out(P*W*k)           ROM[i_addr], one cycle after (latency 1)
    """

    def __init__(self, weights, parallel: int, width: int, bits: int = 1, logic_rom_bits: int | None = None):
        self._MustUse__silence = True  # no 'never used' warning if validation below fails
        w, self.parallel, self.width, self.bits = _check_fold(weights, parallel, width, bits)
        self.init = self.contents(w, parallel, width, bits)
        self.logic_rom_bits = check_bits("logic_rom_bits", logic_rom_bits)
        self.depth = len(self.init)
        self._MustUse__silence = False
        super().__init__({
            "i_addr": In(index_bits(self.depth)),
            "i_en": In(1, init=1),
            "o_data": Out(parallel * width * bits),
        })

    @staticmethod
    def contents(weights, parallel: int, width: int, bits: int = 1) -> list[int]:
        """The ROM words (the software model): see the class docstring."""
        w, parallel, width, bits = _check_fold(weights, parallel, width, bits)
        n_out, n_in = w.shape
        groups = contract.ceil_div(n_out, parallel)
        words = []
        rows = [contract.pack_weight_words(w[j], width, bits) for j in range(n_out)]
        nw = contract.ceil_div(n_in, width)
        width = width * bits    # lane width in bits
        for g in range(groups):
            for k in range(nw):
                value = 0
                for p in range(parallel):
                    j = g * parallel + p
                    if j < n_out:
                        value |= rows[j][k] << (p * width)
                words.append(value)
        return words

    def elaborate(self, platform):
        m = Module()
        # at least 2 words: a 1-word memory has a 0-bit address, which Amaranth writes as a [-1:0] vector
        bits = self.parallel * self.width * self.bits
        m.submodules.mem = mem = Memory(shape=unsigned(bits), depth=max(2, self.depth),
                                        init=self.init, attrs=memory_attrs(self.depth, bits, rom=True,
                                                                                logic_rom_bits=self.logic_rom_bits))
        rd = mem.read_port()
        m.d.comb += [rd.addr.eq(self.i_addr), rd.en.eq(self.i_en), self.o_data.eq(rd.data)]
        return m
