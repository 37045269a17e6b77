"""Valid/ready stream driver and monitor for cocotb 2 (amaranth.lib.stream ports: ``<name>__valid``,
``<name>__ready``, ``<name>__payload``), shaped like cocotbext-axi's AxiStreamSource/Sink.

A beat moves on a rising clock edge where valid and ready are both 1. Both classes touch Python only at transactions
and stalls: while the other side holds its handshake signal low they wait on that signal's rising edge rather than
polling every clock, so the simulator runs free in between (an engine that keeps ``ready`` low for 6,000 cycles while
it computes costs two Python wake-ups, not 6,000).

Stalls are seeded: ``stall_prob`` is the chance, before each beat, of a gap (source: valid low; sink: ready low) of
1..``stall_max`` cycles. ``random.Random(seed)`` makes every run reproducible.

Sampling rule: handshake signals and the payload are read in the ``ReadOnly`` phase before an edge (settled values,
exactly what that edge samples, since the bench changes nothing between ``ReadOnly`` and the edge), never right
after ``RisingEdge``, where simulators differ on whether the edge's updates are already visible.
"""
from __future__ import annotations

import random

from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge


def _port(dut, prefix: str, member: str):
    name = f"{prefix}__{member}"
    try:
        return getattr(dut, name)
    except AttributeError:
        raise AttributeError(f"the design has no port {name!r} (a stream port needs {prefix}__valid, "
                             f"{prefix}__ready and {prefix}__payload)") from None


class _StreamEnd:
    """One end of a stream port: its three signals and the seeded stalls."""

    def __init__(self, dut, prefix: str, clk, stall_prob: float, stall_max: int, seed: int):
        if isinstance(stall_prob, bool) or not isinstance(stall_prob, (int, float)) or not 0 <= stall_prob < 1:
            raise ValueError(f"stall_prob must be a probability in [0, 1), not {stall_prob!r}")
        if isinstance(stall_max, bool) or not isinstance(stall_max, int) or stall_max < 1:
            raise ValueError(f"stall_max must be an int >= 1 (cycles), not {stall_max!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, not {seed!r}")
        self.clk = clk
        self.valid = _port(dut, prefix, "valid")
        self.ready = _port(dut, prefix, "ready")
        self.payload = _port(dut, prefix, "payload")
        self.stall_prob = stall_prob
        self.stall_max = stall_max
        self.rng = random.Random(seed)

    async def _maybe_stall(self, handshake) -> None:
        """Before a beat: with probability ``stall_prob``, hold ``handshake`` low for 1..``stall_max`` cycles."""
        if self.stall_prob and self.rng.random() < self.stall_prob:
            handshake.value = 0
            await ClockCycles(self.clk, self.rng.randint(1, self.stall_max))


class StreamDriver(_StreamEnd):
    """Drives beats into a stream input of the design (``valid``/``payload`` out, ``ready`` in)."""

    def __init__(self, dut, prefix: str, clk, stall_prob: float = 0.0, stall_max: int = 4, seed: int = 0):
        super().__init__(dut, prefix, clk, stall_prob, stall_max, seed)
        self.beats_sent = 0
        self.first_accept_time = None     # sim time (steps) of the first accepted beat since the last mark()
        self.last_accept_time = None
        self.valid.value = 0
        self.payload.value = 0

    def idle(self) -> None:
        self.valid.value = 0

    async def send(self, beats, on_accept=None) -> None:
        """Send every beat; returns after the clock edge that accepted the last one (valid is low again).
        ``on_accept(index)`` is called at the edge that accepts beat ``index``."""
        from cocotb.utils import get_sim_time
        for k, beat in enumerate(beats):
            await self._maybe_stall(self.valid)
            self.payload.value = int(beat)
            self.valid.value = 1
            while True:
                await ReadOnly()                 # settled: what the next edge will sample
                if self.ready.value == 1:
                    await RisingEdge(self.clk)   # the beat moves at this edge
                    break
                # Not ready: sleep until ready rises instead of waking up every clock.
                await RisingEdge(self.ready)
            now = get_sim_time("step")
            if self.first_accept_time is None:
                self.first_accept_time = now
            self.last_accept_time = now
            self.beats_sent += 1
            if on_accept is not None:
                on_accept(k)
            # Drop valid at once; the next beat raises it again (in this same time step if there is no stall).
            self.valid.value = 0

    def mark(self) -> None:
        self.first_accept_time = None
        self.last_accept_time = None


class StreamMonitor(_StreamEnd):
    """Receives beats from a stream output of the design into a queue; drives ``ready`` (with seeded stalls).

    :meth:`start` spawns the receiving task; :meth:`recv` takes the next beat from the queue, so no beat is lost
    whatever the consumer awaits in between."""

    def __init__(self, dut, prefix: str, clk, stall_prob: float = 0.0, stall_max: int = 4, seed: int = 0):
        from cocotb.queue import Queue
        super().__init__(dut, prefix, clk, stall_prob, stall_max, seed)
        self.ready.value = 0
        self.beats = 0
        self.queue = Queue()
        self._task = None

    def start(self) -> None:
        import cocotb
        self.stop()
        self._task = cocotb.start_soon(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.ready.value = 0

    def clear(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()

    async def _run(self) -> None:
        from cocotb.utils import get_sim_time
        while True:
            await self._maybe_stall(self.ready)
            self.ready.value = 1
            while True:
                await ReadOnly()                 # settled: what the next edge will sample
                if self.valid.value == 1:
                    value = self.payload.value.to_unsigned()
                    await RisingEdge(self.clk)   # ready is 1, so the beat moves at this edge
                    self.queue.put_nowait((value, get_sim_time("step")))
                    self.beats += 1
                    break
                await RisingEdge(self.valid)

    async def recv(self) -> tuple[int, int]:
        """The next beat: (payload as an unsigned int, sim time in steps of the edge that moved it)."""
        return await self.queue.get()


def field(value: int, lsb: int, width: int, signed: bool = False) -> int:
    """Extract a bit field from an unsigned integer (two's complement when ``signed``)."""
    v = (value >> lsb) & ((1 << width) - 1)
    if signed and width and v >> (width - 1):
        v -= 1 << width
    return v
