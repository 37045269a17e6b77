"""A plain Verilog testbench for a generated top: no cocotb, no patches, the file exactly as ``generate`` wrote it.

This is what a user's own bench looks like: a clock, a reset, the i_spikes beats read from a ``$readmemh`` file and
driven with random valid gaps, o_result accepted with random ready stalls, every result beat printed as
``RESULT <hex payload>``. Any X on ``i_spikes__ready`` / ``o_result__valid`` after reset is printed as ``XSTATE``.
:func:`run_plain` builds it with Icarus (``iverilog``, any ``-g`` generation) or Verilator (``--binary``) and returns
the decoded result beats, to be compared with the golden model. The flags used here are the ones docs/hardware.md
documents for a user's own bench.
"""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .network import decode, input_beats, layouts_from_manifest

TB_NAME = "bsnn_plain_tb"
# Verilator's --binary (it implies --timing) with Debian 12's gcc 12 needs C++20 coroutines switched on by hand.
VERILATOR_BINARY_FLAGS = ("--binary", "-CFLAGS", "-std=c++20", "-CFLAGS", "-fcoroutines")


def _port(manifest: dict, name: str) -> int:
    for p in manifest["ports"]:
        if p["name"] == name:
            return int(p["width"])
    raise KeyError(f"manifest has no port {name!r}")


def testbench(manifest: dict, n_beats: int, n_results: int, stall_seed: int = 1, stall: bool = True,
              hexfile: str = "beats.hex") -> str:
    """The bench's Verilog-2001 text for ``n_beats`` input beats and ``n_results`` expected o_result beats."""
    iw, rw = _port(manifest, "i_spikes__payload"), _port(manifest, "o_result__payload")
    # a design with o_trace: always ready, outputs left open
    trace_ports = (",\n    .o_trace__valid(), .o_trace__ready(1'b1), .o_trace__payload()"
                   if manifest.get("trace", False) else "")
    gap = "($random(seed) & 3) != 0" if stall else "1'b1"
    ready = "($random(seed) & 3) != 0" if stall else "1'b1"
    limit = 200 * (n_beats + n_results) * max(1, manifest["cycles_per_inference"]) + 1000
    return f"""`timescale 1ns/1ps
// A plain bench for {manifest['top']}: beats from {hexfile}, random valid gaps and ready stalls, results printed.
module {TB_NAME};
  reg clk = 1'b0;
  reg rst = 1'b1;
  reg in_valid = 1'b0;
  reg [{iw - 1}:0] in_payload = {iw}'d0;
  reg res_ready = 1'b0;
  wire in_ready, res_valid;
  wire [{rw - 1}:0] res_payload;
  reg [{iw - 1}:0] beats [0:{max(1, n_beats) - 1}];
  integer k = 0;
  integer got = 0;
  integer seed = {int(stall_seed)};
  {manifest['top']} dut (
    .clk(clk), .rst(rst),
    .i_spikes__valid(in_valid), .i_spikes__ready(in_ready), .i_spikes__payload(in_payload),
    .o_result__valid(res_valid), .o_result__ready(res_ready), .o_result__payload(res_payload){trace_ports});
  always #5 clk = ~clk;
  initial begin
    $readmemh("{hexfile}", beats);
    repeat (3) @(negedge clk);
    rst = 1'b0;
  end
  // Inputs change on the falling edge; the design samples them on the rising edge.
  always @(negedge clk) if (!rst) begin
    in_valid = (k < {n_beats}) && ({gap});
    in_payload = (k < {n_beats}) ? beats[k] : {iw}'d0;
    res_ready = {ready};
  end
  always @(posedge clk) if (!rst) begin
    if (in_ready !== 1'b0 && in_ready !== 1'b1) $display("XSTATE i_spikes__ready at %0t", $time);
    if (res_valid !== 1'b0 && res_valid !== 1'b1) $display("XSTATE o_result__valid at %0t", $time);
    if (in_valid && in_ready) k = k + 1;
    if (res_valid && res_ready) begin
      $display("RESULT %h", res_payload);
      got = got + 1;
      if (got == {n_results}) $finish;
    end
  end
  initial begin
    #{limit * 10};
    $display("TIMEOUT after %0d input beats and %0d results", k, got);
    $finish;
  end
endmodule
"""


@dataclasses.dataclass
class PlainRun:
    results: list          # decoded o_result beats, in order
    xstates: list          # XSTATE lines
    timeout: bool
    log: str


def run_plain(verilog: str, manifest: dict, net, spikes: np.ndarray, sim: str = "icarus",
              generation: str | None = "2012", stall: bool = True, seed: int = 1, workdir=None) -> PlainRun:
    """Simulate ``spikes`` (batch, T, n_in) through the generated ``verilog`` as written, in a plain bench."""
    beats = []
    for b in range(spikes.shape[0]):
        beats += input_beats(spikes[b], manifest["input_width"], manifest["timesteps"])
    n_results = spikes.shape[0] * manifest["result_beats"]
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="bsnn-plain-"))
    tmp.mkdir(parents=True, exist_ok=True)
    digits = max(1, -(-manifest["input_width"] // 4))
    (tmp / "beats.hex").write_text("".join(f"{v:0{digits}x}\n" for v in beats) or "0\n")
    (tmp / f"{manifest['top']}.v").write_text(verilog)
    (tmp / "tb.v").write_text(testbench(manifest, len(beats), n_results, seed, stall))
    sources = ["tb.v", f"{manifest['top']}.v"]
    if sim == "icarus":
        gen = [f"-g{generation}"] if generation else []
        cmds = [["iverilog", *gen, "-s", TB_NAME, "-o", "tb.vvp", *sources], ["vvp", "-n", "tb.vvp"]]
    elif sim == "verilator":
        from .runner import ensure_verilator_on_path
        ensure_verilator_on_path()
        cmds = [["verilator", *VERILATOR_BINARY_FLAGS, "--top-module", TB_NAME, "-Mdir", "obj", *sources],
                [f"obj/V{TB_NAME}"]]
    else:
        raise ValueError(f"sim must be 'icarus' or 'verilator', not {sim!r}")
    log = []
    for cmd in cmds:
        if shutil.which(cmd[0]) is None and not (tmp / cmd[0]).exists():
            raise FileNotFoundError(f"{cmd[0]} is not installed")
        p = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=600)
        log.append(p.stdout + p.stderr)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{''.join(log)[-3000:]}")
    text = "".join(log)
    layout = layouts_from_manifest(manifest, net)["o_result"]
    results = [decode(int(line.split()[1], 16), layout) for line in text.splitlines() if line.startswith("RESULT ")]
    return PlainRun(results, [ln for ln in text.splitlines() if ln.startswith("XSTATE")], "TIMEOUT" in text, text)
