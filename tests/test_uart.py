"""hdl/uart.py in Amaranth's simulator: the 8N1 receiver and transmitter, and UartHost's framing against the golden
model (good requests bit-exact, bad ones answered with an error frame, never a hang)."""
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from bsnn_hw.network import random_network
from hdl.config import HwConfig
from hdl.uart import (CHECK, STATUS_BAD_BYTE, STATUS_BAD_CHECK, STATUS_OK, STATUS_TIMEOUT, SYNC_REQUEST, Framing,
                      FrameError, UartHost, UartRx, UartTx, link_bound, uart_divisor)


def test_check_byte_is_crc8_smbus():
    # the published check value of CRC-8/SMBUS (poly 0x07, init 0): the framing's check byte
    assert CHECK.compute(b"123456789") == 0xF4


@pytest.mark.parametrize("clock, baud, div", [(12e6, 115200, 104), (12e6, 1e6, 12), (25e6, 115200, 217),
                                              (12e6, 3e6, 4)])
def test_uart_divisor(clock, baud, div):
    assert uart_divisor(clock, baud) == div


@pytest.mark.parametrize("clock, baud, msg", [
    (12e6, 4e6, "baud 4e+06 is too fast for a 12 MHz clock: 3.00 cycles per bit, the receiver needs at least 4 "
                  "(at most 3e+06 baud)"),
    (12e6, 1.4e6, "baud 1.4e+06 cannot be made from a 12 MHz clock: the nearest divisor 9 gives 1333333 baud, "
                  "4.8% off (at most 2%)"),
    (12e6, 0, "baud must be a positive, finite number, not 0"),
])
def test_uart_divisor_refuses(clock, baud, msg):
    with pytest.raises(ValueError) as e:
        uart_divisor(clock, baud)
    assert str(e.value) == msg


def test_blocks_refuse_bad_divisor():
    with pytest.raises(ValueError, match="divisor must be at least 4 clock cycles per bit, not 3"):
        UartRx(3)
    with pytest.raises(TypeError, match="divisor must be an int, not 4.0"):
        UartTx(4.0)


# --- a bit-level UART model for Amaranth's simulator ----------------------------------------------------------------

async def send_bytes(ctx, pin, data, divisor, stop_bit=1):
    for byte in data:
        bits = [0] + [(byte >> i) & 1 for i in range(8)] + [stop_bit]
        for b in bits:
            ctx.set(pin, b)
            await ctx.tick().repeat(divisor)
    ctx.set(pin, 1)


async def receive_byte(ctx, pin, divisor):
    """Wait for a start bit on ``pin`` and return the byte (and whether its stop bit was high)."""
    while ctx.get(pin):
        await ctx.tick()
    await ctx.tick().repeat(divisor // 2)
    assert ctx.get(pin) == 0, "start bit shorter than half a bit"
    value = 0
    for i in range(8):
        await ctx.tick().repeat(divisor)
        value |= ctx.get(pin) << i
    await ctx.tick().repeat(divisor)
    return value, bool(ctx.get(pin))


def test_tx_rx_loopback():
    """UartTx's line into UartRx: random bytes come back unchanged, with gaps and back-to-back."""
    divisor = 5
    tx, rx = UartTx(divisor), UartRx(divisor)
    from amaranth import Module
    m = Module()
    m.submodules.tx, m.submodules.rx = tx, rx
    m.d.comb += rx.i_rx.eq(tx.o_tx)
    rng = random.Random(3)
    data = [0x00, 0xFF, 0x55, 0xAA] + [rng.randrange(256) for _ in range(12)]
    got = []
    sim = Simulator(m)
    sim.add_clock(1e-6)

    async def source(ctx):
        for byte in data:
            ctx.set(tx.i_data.valid, 1)
            ctx.set(tx.i_data.payload, byte)
            await ctx.tick().until(tx.i_data.ready)
            ctx.set(tx.i_data.valid, 0)
            gap = rng.choice([0, 0, 7])
            if gap:
                await ctx.tick().repeat(gap)

    async def sink(ctx):
        while len(got) < len(data):
            await ctx.tick()
            if ctx.get(rx.o_valid):
                assert not ctx.get(rx.o_error)
                got.append(ctx.get(rx.o_data))

    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run_until(1e-6 * 20_000)
    assert got == data


def test_rx_flags_a_low_stop_bit_and_ignores_a_glitch():
    divisor = 8
    rx = UartRx(divisor)
    seen = []
    sim = Simulator(rx)
    sim.add_clock(1e-6)

    async def bench(ctx):
        ctx.set(rx.i_rx, 1)
        await ctx.tick().repeat(4)
        ctx.set(rx.i_rx, 0)          # a 2-cycle glitch: not a start bit
        await ctx.tick().repeat(2)
        ctx.set(rx.i_rx, 1)
        await ctx.tick().repeat(3 * divisor)
        await send_bytes(ctx, rx.i_rx, [0x3C], divisor, stop_bit=0)
        await ctx.tick().repeat(2 * divisor)
        await send_bytes(ctx, rx.i_rx, [0xC3], divisor)
        await ctx.tick().repeat(2 * divisor)

    async def monitor(ctx):
        while True:
            await ctx.tick()
            if ctx.get(rx.o_valid):
                seen.append((ctx.get(rx.o_data), bool(ctx.get(rx.o_error))))

    sim.add_testbench(bench)
    sim.add_testbench(monitor, background=True)
    sim.run()
    assert seen == [(0x3C, True), (0xC3, False)]


# --- UartHost ---------------------------------------------------------------------------------------------------------

def small_net(readout="count", encoding="rate", seed=1):
    return random_network([12, 6, 3], timesteps=4, seed=seed, readout=readout, encoding=encoding)


def run_host(host, chunks, divisor, max_cycles=20_000):
    """Drive ``chunks`` (each (bytes, answers, stop bit)) into the host's uart_rx, waiting after each for ``answers``
    frames on uart_tx (a frame's length follows from its status byte), as a host does; returns the frames' bytes.
    Fails if the answers do not come within ``max_cycles``."""
    framing = host.framing
    frames = []
    sim = Simulator(host)
    sim.add_clock(1e-6)

    async def host_side(ctx):
        ctx.set(host.uart_rx, 1)
        await ctx.tick().repeat(3)
        want = 0
        for data, answers, stop in chunks:
            await send_bytes(ctx, host.uart_rx, data, divisor, stop_bit=stop)
            want += answers
            waited = 0
            while len(frames) < want:
                await ctx.tick()
                waited += 1
                if waited > max_cycles:
                    raise AssertionError(f"no answer {max_cycles} cycles after a request (a hang?); answers so far: "
                                         f"{frames}")

    async def listener(ctx):
        while True:
            frame = []
            while True:
                byte, stop = await receive_byte(ctx, host.uart_tx, divisor)
                assert stop, "the board sent a byte with a low stop bit"
                frame.append(byte)
                n = framing.answer_bytes if len(frame) >= 2 and frame[1] == STATUS_OK else 3
                if len(frame) == n:
                    break
            frames.append(bytes(frame))

    sim.add_testbench(host_side)
    sim.add_testbench(listener, background=True)
    sim.run()
    return frames


@pytest.mark.parametrize("readout, encoding, lanes", [("count", "rate", None), ("membrane", "latency", 2)])
def test_host_answers_bit_exact_with_golden(readout, encoding, lanes):
    net = small_net(readout, encoding)
    config = HwConfig.from_lists(net, [2, 1], [4, 3], encoder=True, encoder_lanes=lanes)
    divisor = 4
    host = UartHost(net, config, divisor=divisor)
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (3, net.n_in)).astype(np.uint8)
    pixels[0, :4] = [0, 255, 1, 128]
    f = host.framing
    frames = run_host(host, [(f.request(p), 1, 1) for p in pixels], divisor)
    for got, want in zip(frames, f.expected(pixels)):
        assert got == f.answer(want.cls, want.values)
        ans = f.read_answer(iter_reader(got))
        assert ans.ok and ans.cls == want.cls
        for name in want.values:
            np.testing.assert_array_equal(ans.values[name], want.values[name])


def iter_reader(data: bytes):
    pos = [0]

    def read(n):
        out = data[pos[0]:pos[0] + n]
        pos[0] += len(out)
        return out
    return read


def test_host_bad_frames_get_error_answers_then_recovers():
    """Garbage before the sync byte is ignored; a wrong check byte, a low stop bit and a request that stops midway
    are each answered with their error frame, and the next good request is answered bit-exact."""
    net = small_net()
    divisor = 4
    host = UartHost(net, divisor=divisor, timeout_bits=40)
    f = host.framing
    rng = np.random.default_rng(9)
    px = rng.integers(0, 256, (2, net.n_in)).astype(np.uint8)
    good = f.request(px[0])
    bad_check = good[:-1] + bytes([good[-1] ^ 0x01])
    chunks = [(b"\x00\x13" + bad_check, 1, 1),                 # garbage, then a wrong check byte
              (good[:5], 0, 1), (good[5:6], 0, 0), (good[6:], 1, 1),   # a pixel with a low stop bit
              (good[:7], 1, 1),                                 # stops midway: timeout
              (f.request(px[1]), 1, 1)]
    frames = run_host(host, chunks, divisor)
    assert frames[:3] == [f.error_answer(STATUS_BAD_CHECK), f.error_answer(STATUS_BAD_BYTE),
                          f.error_answer(STATUS_TIMEOUT)]
    want = f.expected(px[1:])[0]
    assert frames[3] == f.answer(want.cls, want.values)


def test_framing_host_side_checks():
    net = small_net()
    f = Framing(net)
    assert f.request_bytes == 14 and f.answer_bytes == 4 + 3 * 3
    req = f.request(np.arange(12))
    assert req[0] == SYNC_REQUEST and req[-1] == CHECK.compute(req[:-1])
    with pytest.raises(ValueError, match=r"a request holds 12 pixels \(the network's n_in\), not shape \(11,\)"):
        f.request(np.arange(11))
    with pytest.raises(ValueError, match="pixels must be integers in 0..255"):
        f.request(np.full(12, 256))
    good = f.answer(2, {"count": [1, 2, 3], "membrane": [-1, 300, 0]})
    ans = f.read_answer(iter_reader(good))
    assert ans.cls == 2 and list(ans.values["membrane"]) == [-1, 300, 0]
    with pytest.raises(FrameError, match="does not match"):
        f.read_answer(iter_reader(good[:-1] + bytes([good[-1] ^ 0x80])))
    with pytest.raises(FrameError, match="answer cut short: expected 10 byte"):
        f.read_answer(iter_reader(good[:5]))
    with pytest.raises(FrameError, match="expected the sync byte 0x5a"):
        f.read_answer(iter_reader(b"\x00" + good[1:]))
    assert link_bound(f, 115200) == pytest.approx(115200 / (10 * 27))


def test_host_refuses_what_it_cannot_carry():
    net = small_net()
    with pytest.raises(ValueError, match="UartHost needs the on-chip encoder"):
        UartHost(net, HwConfig.default(net), divisor=4)
    with pytest.raises(ValueError, match="timeout_bits must be at least 20"):
        UartHost(net, divisor=4, timeout_bits=5)
    direct = random_network([12, 3], timesteps=4, encoding="direct")
    with pytest.raises(ValueError, match="the on-chip encoder needs the 'rate' or 'latency' encoding"):
        UartHost(direct, HwConfig.from_lists(direct, encoder=True), divisor=4)
