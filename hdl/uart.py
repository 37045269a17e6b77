"""UART host link: 8N1 receiver and transmitter, and :class:`UartHost`, a network top behind a framed UART
(docs/board.md).

Framing (host and board; the check byte is CRC-8/SMBUS, polynomial 0x07, init 0, no reflection, no final XOR, over
every byte of the frame before it, sync byte included; :data:`CHECK` is ``amaranth.lib.crc``'s, software and
hardware from one parameters object):

- host -> board, a **request**: ``0xA5``, the n_in pixels (uint8, input order), the check byte (n_in + 2 bytes).
- board -> host, an **answer**: ``0x5A``, a status byte, then with status 0 (OK) the class (1 byte) and for each
  class i = 0..n_out-1 its fields in :meth:`Framing.fields` order (``count``, then ``membrane``), each
  little-endian in whole bytes (a signed field two's complement), then the check byte. A status other than 0 is
  followed by the check byte alone (3 bytes): 1 BAD_CHECK (the request's check byte is wrong), 2 BAD_BYTE (a byte
  with a low stop bit or a byte lost), 3 TIMEOUT (the request stopped for longer than the timeout between bytes).

Between frames the board ignores bytes other than 0xA5; bytes that arrive while it answers are dropped (the host
waits for an answer before it sends the next request). Every request is answered, a bad one by an error answer, and
the network is reset after a bad one (no half-loaded sample stays behind).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from amaranth import Cat, Const, Module, ResetInserter, Shape, Signal, signed, unsigned
from amaranth.lib import crc, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from bsnn_hw.checks import check_positive, is_int as _is_int
from bsnn_hw.network import Network

from .config import HwConfig
from .top import NetworkTop, result_layout

SYNC_REQUEST = 0xA5
SYNC_ANSWER = 0x5A
STATUS_OK, STATUS_BAD_CHECK, STATUS_BAD_BYTE, STATUS_TIMEOUT = 0, 1, 2, 3
STATUS_NAMES = {STATUS_OK: "OK", STATUS_BAD_CHECK: "BAD_CHECK", STATUS_BAD_BYTE: "BAD_BYTE",
                STATUS_TIMEOUT: "TIMEOUT"}
CHECK = crc.catalog.CRC8_SMBUS(data_width=8)
MIN_DIVISOR = 4           # clock cycles per bit: the receiver samples mid-bit after a 2-stage synchronizer
MAX_BAUD_ERROR = 0.02     # a UART tolerates a few percent between the two ends' bit clocks; refuse more
BITS_PER_BYTE = 10        # 8N1: start, 8 data, stop
DEFAULT_TIMEOUT_BITS = 1 << 16   # between two bytes of a request (0.57 s at 115,200 baud)


def uart_divisor(clock_hz: float, baud: float) -> int:
    """Clock cycles per bit for ``baud`` at ``clock_hz``: the nearest integer, refused (ValueError with the numbers)
    when it is below :data:`MIN_DIVISOR` or when the baud rate it gives is more than :data:`MAX_BAUD_ERROR` away
    from ``baud``."""
    check_positive("clock", clock_hz)
    check_positive("baud", baud)
    div = round(clock_hz / baud)
    if div < MIN_DIVISOR:
        raise ValueError(f"baud {baud:g} is too fast for a {clock_hz / 1e6:g} MHz clock: {clock_hz / baud:.2f} cycles "
                         f"per bit, the receiver needs at least {MIN_DIVISOR} (at most {clock_hz / MIN_DIVISOR:g} baud)")
    err = abs(clock_hz / div - baud) / baud
    if err > MAX_BAUD_ERROR:
        raise ValueError(f"baud {baud:g} cannot be made from a {clock_hz / 1e6:g} MHz clock: the nearest divisor {div} "
                         f"gives {clock_hz / div:.0f} baud, {100 * err:.1f}% off (at most {100 * MAX_BAUD_ERROR:g}%)")
    return div


def _check_divisor(divisor) -> int:
    if not _is_int(divisor):
        raise TypeError(f"divisor must be an int, not {divisor!r}")
    if divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be at least {MIN_DIVISOR} clock cycles per bit, not {divisor}")
    return int(divisor)


class UartRx(wiring.Component):
    """8N1 receiver, ``divisor`` clock cycles per bit.

    ``i_rx`` goes through a 2-flip-flop synchronizer. A low level while idle starts a byte; the start bit is checked
    at its middle (a shorter glitch is ignored), then each data bit (LSB first) and the stop bit are sampled one bit
    time apart. At the stop bit's middle ``o_valid`` strobes for one cycle with ``o_data``; ``o_error`` strobes with
    it when the stop bit is low (a framing error: the byte is delivered all the same, so that a frame's byte count
    stays aligned). Bytes cannot be held back: the consumer takes each strobe or loses it.

    Members
    -------
    i_rx : In(1)
    o_data : Out(8); o_valid, o_error : Out(1)
    """

    def __init__(self, divisor: int):
        self._MustUse__silence = True
        self.divisor = _check_divisor(divisor)
        self._MustUse__silence = False
        super().__init__({"i_rx": In(1, init=1), "o_data": Out(8), "o_valid": Out(1), "o_error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.i_rx, rx, init=1)
        timer = Signal(range(d))
        bit = Signal(range(8))
        shift = Signal(8)
        m.d.comb += self.o_data.eq(shift)
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    with m.If(rx):
                        m.next = "IDLE"          # a glitch, not a start bit
                    with m.Else():
                        m.d.sync += [timer.eq(d - 1), bit.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shift.eq(Cat(shift[1:], rx)), timer.eq(d - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer == 0):
                    m.d.comb += [self.o_valid.eq(1), self.o_error.eq(~rx)]
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """8N1 transmitter, ``divisor`` clock cycles per bit: ``i_data`` is taken (ready) when idle, then sent as a start
    bit, 8 data bits LSB first and a stop bit, 10 * divisor cycles; ``o_tx`` idles high.

    Members
    -------
    i_data : In(stream.Signature(8))
    o_tx : Out(1, init=1)
    """

    def __init__(self, divisor: int):
        self._MustUse__silence = True
        self.divisor = _check_divisor(divisor)
        self._MustUse__silence = False
        super().__init__({"i_data": In(stream.Signature(8)), "o_tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        shift = Signal(BITS_PER_BYTE, init=(1 << BITS_PER_BYTE) - 1)   # LSB goes out first; idle: all ones
        left = Signal(range(BITS_PER_BYTE + 1))
        timer = Signal(range(d))
        m.d.comb += [self.o_tx.eq(shift[0]), self.i_data.ready.eq(left == 0)]
        with m.If(left == 0):
            with m.If(self.i_data.valid):
                m.d.sync += [shift.eq(Cat(Const(0, 1), self.i_data.payload, Const(1, 1))), left.eq(BITS_PER_BYTE),
                             timer.eq(d - 1)]
        with m.Elif(timer == 0):
            m.d.sync += [shift.eq(Cat(shift[1:], Const(1, 1))), left.eq(left - 1), timer.eq(d - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m


# --- the framing, host side (a software model of what UartHost sends and expects) ------------------------------------

class FrameError(ValueError):
    """An answer that is not a well-formed frame (wrong sync, unknown status, short, or a wrong check byte)."""


@dataclasses.dataclass
class Answer:
    """One decoded answer: ``status`` (0 OK), and with OK the class and per-class arrays by field name."""
    status: int
    cls: int | None = None
    values: dict | None = None

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


class Framing:
    """The frames for one network (module docstring): :meth:`request`, :meth:`answer` (what the board sends for a
    result), :meth:`error_answer`, :meth:`read_answer` (decode from a ``read(n) -> bytes`` callable) and
    :meth:`expected` (the golden model's answers for a batch of pixels).

    The per-class fields are those of the top's o_result beat other than index, cls and last:
    ``count`` (unsigned, count_bits(T)) and ``membrane`` (signed, the last layer's M bits)."""

    def __init__(self, net: Network, config: HwConfig | None = None):
        if not isinstance(net, Network):
            raise TypeError(f"net must be a bsnn_hw.Network, not {type(net).__name__}")
        if net.n_out > 256:
            raise ValueError(f"the answer carries the class in one byte: at most 256 classes, not {net.n_out}")
        self.net = net
        layout = result_layout(net, config.early_exit if config is not None else False)
        self.fields = []
        for name, field in layout:
            if name in ("index", "cls", "last"):
                continue
            s = Shape.cast(field.shape)
            self.fields.append((name, s.width, s.signed, (s.width + 7) // 8))
        self.n_in, self.n_out = net.n_in, net.n_out
        self.beat_bytes = sum(nb for *_, nb in self.fields)

    @property
    def request_bytes(self) -> int:
        return self.n_in + 2

    @property
    def answer_bytes(self) -> int:
        return 4 + self.n_out * self.beat_bytes

    def request(self, pixels) -> bytes:
        """The request frame for one sample (uint8, n_in values); ValueError on a wrong length or a value outside
        0..255."""
        px = np.asarray(pixels)
        if px.shape != (self.n_in,):
            raise ValueError(f"a request holds {self.n_in} pixels (the network's n_in), not shape {px.shape}")
        if px.size and (not np.issubdtype(px.dtype, np.integer) or px.min() < 0 or px.max() > 255):
            raise ValueError("pixels must be integers in 0..255")
        body = bytes([SYNC_REQUEST]) + bytes(px.astype(np.uint8).tolist())
        return body + bytes([CHECK.compute(body)])

    def answer(self, cls: int, values: dict) -> bytes:
        """The OK answer the board sends for ``cls`` and per-class ``values`` (arrays by field name)."""
        body = bytearray([SYNC_ANSWER, STATUS_OK, int(cls)])
        for i in range(self.n_out):
            for name, width, _, nb in self.fields:
                v = int(values[name][i]) & ((1 << (8 * nb)) - 1)
                body += v.to_bytes(nb, "little")
        return bytes(body) + bytes([CHECK.compute(bytes(body))])

    @staticmethod
    def error_answer(status: int) -> bytes:
        body = bytes([SYNC_ANSWER, status])
        return body + bytes([CHECK.compute(body)])

    def read_answer(self, read) -> Answer:
        """Read and decode one answer with ``read(n) -> bytes`` (which may return fewer bytes on a timeout)."""
        def need(n, what):
            data = read(n)
            if len(data) != n:
                raise FrameError(f"answer cut short: expected {n} byte(s) of {what}, got {len(data)}")
            return bytes(data)
        head = need(2, "sync and status")
        if head[0] != SYNC_ANSWER:
            raise FrameError(f"answer starts with 0x{head[0]:02x}, expected the sync byte 0x{SYNC_ANSWER:02x}")
        status = head[1]
        if status not in STATUS_NAMES:
            raise FrameError(f"unknown status {status} in the answer (expected one of {sorted(STATUS_NAMES)})")
        rest = need(self.answer_bytes - 3 if status == STATUS_OK else 0, "the result")
        check = need(1, "the check byte")[0]
        body = head + rest
        if CHECK.compute(body) != check:
            raise FrameError(f"answer check byte 0x{check:02x} does not match 0x{CHECK.compute(body):02x}")
        if status != STATUS_OK:
            return Answer(status)
        cls = rest[0]
        values = {name: np.zeros(self.n_out, dtype=np.int64) for name, *_ in self.fields}
        k = 1
        for i in range(self.n_out):
            for name, width, sig, nb in self.fields:
                v = int.from_bytes(rest[k:k + nb], "little")
                if sig and v >= 1 << (8 * nb - 1):
                    v -= 1 << (8 * nb)
                values[name][i] = v
                k += nb
        return Answer(status, cls, values)

    def expected(self, pixels) -> list[Answer]:
        """The golden model's answers for ``pixels`` (uint8 (batch, n_in)), encoded with the network's code."""
        from bsnn_hw import golden
        px = np.asarray(pixels, dtype=np.uint8).reshape(-1, self.n_in)
        ref = golden.run(self.net, px)
        out = []
        for b in range(px.shape[0]):
            vals = {"count": ref.counts[-1][b].astype(np.int64), "membrane": ref.membrane[-1][b].astype(np.int64)}
            out.append(Answer(STATUS_OK, int(ref.prediction[b]), {n: vals[n] for n, *_ in self.fields}))
        return out


# --- the hardware ----------------------------------------------------------------------------------------------------

class UartHost(wiring.Component):
    """A :class:`NetworkTop` with its on-chip encoder behind a UART (8N1, ``divisor`` clock cycles per bit) that
    speaks the framing of the module docstring.

    Request: after 0xA5 every byte goes to the top's ``i_pixels`` as it arrives (through a one-pixel register; the top
    is idle and loading, so it takes each pixel long before the next arrives) while the CRC runs over it; the byte
    after the n_in-th pixel is compared with the CRC. Answer: with a good request, 0x5A, 0, then the class and the
    fields of each o_result beat as they come (o_result is held while the transmitter is busy), then the CRC.
    A bad request (wrong check byte, a byte with a low stop bit or one that found the pixel register full, or no byte
    for ``timeout_bits`` bit times mid-request) resets the network top (ResetInserter) and is answered with
    0x5A, status, CRC.

    Timing per sample: (n_in + 2) * 10 * divisor cycles for the request, the top's cycles_per_inference less the
    pixel beats (they overlap the request), and (4 + n_out * beat bytes) * 10 * divisor cycles for the answer.

    Members
    -------
    uart_rx : In(1)  (idle high)
    uart_tx : Out(1) (idle high)
    """

    def __init__(self, net: Network, config: HwConfig | None = None, *, divisor: int,
                 timeout_bits: int = DEFAULT_TIMEOUT_BITS):
        self._MustUse__silence = True
        if not isinstance(net, Network):
            raise TypeError(f"net must be a bsnn_hw.Network, not {type(net).__name__}")
        if config is None:
            config = HwConfig.from_lists(net, encoder=True)
        if not isinstance(config, HwConfig):
            raise TypeError(f"config must be a HwConfig, not {type(config).__name__}")
        if not config.encoder:
            raise ValueError("UartHost needs the on-chip encoder (HwConfig(encoder=True)): the host sends pixels")
        if config.early_exit:
            raise ValueError("UartHost does not carry the early decision's step: build it without early_exit")
        if getattr(net, "ensemble", ()):
            raise ValueError("UartHost runs a single network, not an ensemble: take its MAP network (--map-only)")
        self.divisor = _check_divisor(divisor)
        if not _is_int(timeout_bits):
            raise TypeError(f"timeout_bits must be an int, not {timeout_bits!r}")
        if timeout_bits < 2 * BITS_PER_BYTE:
            raise ValueError(f"timeout_bits must be at least {2 * BITS_PER_BYTE} (two byte times), not {timeout_bits}")
        self.timeout_bits = int(timeout_bits)
        self.top = NetworkTop(net, config)   # validates the config against the network
        self.top._MustUse__silence = True
        self.net, self.config = net, config
        self.framing = Framing(net, config)
        self._MustUse__silence = False
        super().__init__({"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1)})

    def memories(self) -> list[dict]:
        return self.top.memories()

    def elaborate(self, platform):
        m = Module()
        n_in = self.net.n_in
        net_rst = Signal()
        m.submodules.net = ResetInserter({"sync": net_rst})(self.top)
        top = self.top
        m.submodules.rx = rx = UartRx(self.divisor)
        m.submodules.tx = tx = UartTx(self.divisor)
        m.submodules.rx_crc = rx_crc = CHECK.create()
        m.submodules.tx_crc = tx_crc = CHECK.create()
        m.d.comb += [rx.i_rx.eq(self.uart_rx), self.uart_tx.eq(tx.o_tx)]

        # the pixel register in front of the top's i_pixels
        pix, pix_full = Signal(8), Signal()
        m.d.comb += [top.i_pixels.payload.eq(pix), top.i_pixels.valid.eq(pix_full)]
        with m.If(top.i_pixels.ready):
            m.d.sync += pix_full.eq(0)

        count = Signal(range(max(2, n_in)))
        status = Signal(2)
        timeout = self.timeout_bits * self.divisor
        idle = Signal(range(timeout + 1))
        m.d.comb += [rx_crc.data.eq(rx.o_data), tx_crc.data.eq(tx.i_data.payload)]

        # the answer's bytes: one o_result beat's fields, each extended to whole bytes, LSB first
        fields = []
        for name, width, sig, nb in self.framing.fields:
            ext = Signal(signed(8 * nb) if sig else unsigned(8 * nb), name=f"beat_{name}")
            m.d.comb += ext.eq(getattr(top.o_result.payload, name))
            fields.append(ext)
        beat = Signal(8 * self.framing.beat_bytes)
        m.d.comb += beat.eq(Cat(*fields))
        k = Signal(range(max(2, self.framing.beat_bytes)))

        def send(value, feed_crc=True, start_crc=False):
            m.d.comb += [tx.i_data.valid.eq(1), tx.i_data.payload.eq(value)]
            if feed_crc:
                m.d.comb += [tx_crc.valid.eq(tx.i_data.ready), tx_crc.start.eq(start_crc & tx.i_data.ready)]

        def fail(code):
            m.d.comb += net_rst.eq(1)
            m.d.sync += [status.eq(code), pix_full.eq(0)]
            m.next = "ANSWER_SYNC"

        with m.FSM():
            with m.State("IDLE"):
                with m.If(rx.o_valid & ~rx.o_error & (rx.o_data == SYNC_REQUEST)):
                    m.d.comb += [rx_crc.start.eq(1), rx_crc.valid.eq(1)]
                    m.d.sync += [count.eq(0), status.eq(STATUS_OK), idle.eq(0)]
                    m.next = "PIXELS"
            with m.State("PIXELS"):
                m.d.sync += idle.eq(idle + 1)
                with m.If(rx.o_valid):
                    m.d.comb += rx_crc.valid.eq(1)
                    m.d.sync += [idle.eq(0), count.eq(count + 1)]
                    with m.If(rx.o_error | (pix_full & ~top.i_pixels.ready)):
                        m.d.sync += status.eq(STATUS_BAD_BYTE)
                    with m.Else():
                        m.d.sync += [pix.eq(rx.o_data), pix_full.eq(1)]
                    with m.If(count == n_in - 1):
                        m.next = "CHECK"
                with m.Elif(idle == timeout):
                    fail(STATUS_TIMEOUT)
            with m.State("CHECK"):
                m.d.sync += idle.eq(idle + 1)
                with m.If(rx.o_valid):
                    with m.If(rx.o_error):
                        fail(STATUS_BAD_BYTE)
                    with m.Elif(status != STATUS_OK):
                        fail(status)
                    with m.Elif(rx.o_data != rx_crc.crc):
                        fail(STATUS_BAD_CHECK)
                    with m.Else():
                        m.next = "ANSWER_SYNC"
                with m.Elif(idle == timeout):
                    fail(STATUS_TIMEOUT)
            with m.State("ANSWER_SYNC"):
                send(SYNC_ANSWER, start_crc=True)
                with m.If(tx.i_data.ready):
                    m.next = "ANSWER_STATUS"
            with m.State("ANSWER_STATUS"):
                send(status)
                with m.If(tx.i_data.ready):
                    with m.If(status == STATUS_OK):
                        m.next = "ANSWER_CLASS"
                    with m.Else():
                        m.next = "ANSWER_CHECK"
            with m.State("ANSWER_CLASS"):
                with m.If(top.o_result.valid):
                    send(top.o_result.payload.cls)
                    with m.If(tx.i_data.ready):
                        m.d.sync += k.eq(0)
                        m.next = "ANSWER_BEAT"
            with m.State("ANSWER_BEAT"):
                with m.If(top.o_result.valid):
                    send(beat.word_select(k, 8))
                    with m.If(tx.i_data.ready):
                        m.d.sync += k.eq(k + 1)
                        with m.If(k == self.framing.beat_bytes - 1):
                            m.d.comb += top.o_result.ready.eq(1)   # the beat's last byte is out: take the next
                            m.d.sync += k.eq(0)
                            with m.If(top.o_result.payload.last):
                                m.next = "ANSWER_CHECK"
            with m.State("ANSWER_CHECK"):
                send(tx_crc.crc, feed_crc=False)
                with m.If(tx.i_data.ready):
                    m.next = "IDLE"
        return m


def request_cycles(framing: Framing, divisor: int) -> int:
    """Clock cycles a request takes on the wire."""
    return framing.request_bytes * BITS_PER_BYTE * divisor


def answer_cycles(framing: Framing, divisor: int) -> int:
    """Clock cycles an OK answer takes on the wire."""
    return framing.answer_bytes * BITS_PER_BYTE * divisor


def link_bound(framing: Framing, baud: float) -> float:
    """Images per second the link allows at most (request and answer on the wire one after the other, as the host
    sends the next request after the answer; the inference time comes on top)."""
    return baud / (BITS_PER_BYTE * (framing.request_bytes + framing.answer_bytes))
