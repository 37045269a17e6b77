"""The design-space exploration (bsnn_hw.hdl.dse): memories and block RAMs as the generator builds them, the cost
model's monotonicity, the Pareto front and its pruning, budgets, the configuration file, the command's errors. No
synthesis here: bench/dse_check.py compares the model with Yosys."""
from __future__ import annotations

import itertools
import json
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner

from bsnn_hw import random_network
from bsnn_hw.cli import main
from bsnn_hw.hdl import dse
from bsnn_hw.hdl.config import HwConfig, LayerConfig, cycles_per_inference
from bsnn_hw.hdl.generate import manifest
from bsnn_hw.hdl.synth import expected_brams, memory_plan
from bsnn_hw.network import Conv2d, Layer, Network, Pool


def _conv_net():
    rng = np.random.default_rng(5)
    c1 = Conv2d(rng.random((4, 3, 3, 2)) < 0.5, (6, 6, 2), threshold=rng.integers(1, 4, 4), padding=1,
                membrane_bits=8)
    p1 = Pool(c1.out_shape, 2)
    d = Layer(rng.random((5, p1.out_shape[0] * p1.out_shape[1] * p1.out_shape[2])) < 0.5,
              threshold=rng.integers(1, 3, 5), membrane_bits=9)
    return Network([c1, p1, d], timesteps=3)


NETS = {
    "mlp": lambda: random_network([64, 40, 10], timesteps=8, seed=1),
    "deep": lambda: random_network([50, 24, 12, 5], timesteps=4, seed=2, fire_once=True, readout="first"),
    "uniform": lambda: random_network([20, 7, 3], timesteps=5, seed=3, threshold=3),
    "conv": _conv_net,
}


def _points(net, limit=40):
    """Up to ``limit`` legal configurations from the search's own per-layer options, spread over the product."""
    opts = [dse.layer_options(net, i) for i in range(len(net.layers))]
    allc = list(itertools.product(*opts))
    step = max(1, len(allc) // limit)
    return [HwConfig(tuple(c)) for c in allc[::step]]


# --- memories and block RAMs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(NETS))
def test_memories_equal_the_manifest_and_brams_the_memory_plan(name):
    """The DSE's memory list (engines only, no top, no Verilog) is the manifest's, and its block RAM count is
    synth.expected_brams / memory_plan of the manifest, on both targets, over many foldings."""
    net = NETS[name]()
    points = _points(net)
    # the same foldings with every ROM left to block RAM (HwConfig.logic_rom_bits = 0), and wide layer-0 words
    points += [HwConfig(c.layers, logic_rom_bits=0) for c in points[::4]]
    if net.layers[0].kind == "dense" and net.n_in > 64:
        points.append(HwConfig.from_lists(net, width=[net.n_in] + [None] * (len(net.layers) - 1)))
    for cfg in points:
        mems = manifest(net, cfg, False, "t")["memories"]
        assert dse.design_memories(net, cfg) == mems
        for target in ("ice40", "ecp5"):
            cost = dse.estimate(net, cfg, target)
            assert cost.bram == expected_brams(mems, target)
            assert cost.bram == sum(r["blocks"] for r in memory_plan(mems, target))
            assert cost.cycles == cycles_per_inference(net, cfg)


def test_brams_of_the_784_network_as_the_issue_states():
    """784-128-10 on the UP5K: P=1/W=16 and P=2/W=16 take 28 and 29 EBR, as Yosys maps them (ROMs up to 2 kbit in
    logic; at P=1 the 6,272 x 16 weight ROM takes 26 EBRs at 512 x 8, where 25 at 256 x 16 would need a 25-way read
    multiplexer), P=4/W=16 more than the part's 30."""
    net = random_network([784, 128, 10], timesteps=16, seed=0)
    got = {p: dse.estimate(net, HwConfig.from_lists(net, [p, 1], [16, 16]), "ice40").bram for p in (1, 2, 4)}
    assert got[1] == 28 and got[2] == 29 and got[4] > 30
    assert dse.estimate(net, HwConfig.from_lists(net, [1, 1], [16, 16]), "ice40").cycles == 102_951


# --- the cost model -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["ice40", "ecp5"])
def test_more_lanes_cost_more_logic_and_fewer_cycles(target):
    net = random_network([128, 64, 10], timesteps=8, seed=0)
    prev = None
    for p in (1, 2, 4, 8, 16, 32, 64):
        c = dse.estimate(net, HwConfig.from_lists(net, [p, 1], [16, 16]), target)
        if prev is not None:
            assert c.cycles < prev.cycles
            assert c.lut > prev.lut and c.ff > prev.ff
        prev = c


@pytest.mark.parametrize("target", ["ice40", "ecp5"])
def test_wider_words_cost_more_logic_and_fewer_cycles(target):
    net = random_network([256, 32, 10], timesteps=8, seed=0)
    prev = None
    for w in (4, 8, 16, 32, 64, 128, 256):
        c = dse.estimate(net, HwConfig.from_lists(net, [1, 1], [w, 16]), target)
        if prev is not None:
            assert c.cycles < prev.cycles
            if w != 128:
                assert c.ff > prev.ff
            else:   # past WIDE_TREE = 64 inputs the tree registers every second level: fewer tree flip-flops once
                assert c.ff_features["tree_regs"] < prev.ff_features["tree_regs"]
        prev = c


def test_estimate_refuses_what_it_does_not_model():
    net = NETS["mlp"]()
    with pytest.raises(ValueError, match="target must be one of ice40, ecp5"):
        dse.estimate(net, HwConfig.default(net), "xilinx")
    with pytest.raises(ValueError, match="width must be in 1..64"):
        dse.estimate(net, HwConfig.from_lists(net, [1, 1], [128, 16]), "ice40")
    with pytest.raises(ValueError, match="skip_zero=False"):
        dse.estimate(net, HwConfig.from_lists(net, skip_zero=True), "ice40")
    with pytest.raises(TypeError, match="config must be a HwConfig"):
        dse.estimate(net, [[1, 16], [1, 16]], "ice40")


# --- the search ---------------------------------------------------------------------------------------------------

def test_pareto_on_a_toy():
    pts = [(1, 9), (2, 8), (2, 9), (3, 3), (4, 3), (9, 1), (5, 5), (3, 3)]
    assert dse.pareto(pts, lambda p: p) == [(1, 9), (2, 8), (3, 3), (9, 1)]
    assert dse.pareto([], lambda p: p) == []


def test_layer_options_are_legal_and_pruned():
    net = random_network([784, 128, 10], timesteps=4, seed=0)
    o0 = dse.layer_options(net, 0)
    assert {lc.parallel for lc in o0} == {1, 2, 4, 8, 16, 32, 64, 128}
    # powers of two and the smallest W for each of 1..16 words, each the smallest for its word count (64 -> 61)
    widths = {lc.width for lc in o0}
    assert {1, 2, 4, 8, 16, 32, 784, 392, 262, 196, 157, 131, 112, 98, 88, 79, 72, 66, 61, 56, 53, 49} <= widths
    assert all(-(-784 // (-(-784 // w))) == w for w in widths)            # no wider W with the same word count
    assert len({-(-784 // w) for w in widths}) == len(widths) and 64 not in widths
    o1 = {lc.parallel for lc in dse.layer_options(net, 1)}
    assert o1 == {1, 2, 4, 5, 10}          # 8 gives the same 2 groups as 5: dropped
    assert max(lc.width for lc in dse.layer_options(net, 0, max_width=100)) == 98
    assert max(lc.parallel for lc in dse.layer_options(net, 0, max_parallel=6)) == 4
    for lc in o0:
        HwConfig((lc, LayerConfig(1, 16))).validate(net)
    conv = _conv_net()
    assert {lc.width for lc in dse.layer_options(conv, 0)} == {2}
    assert dse.layer_options(conv, 1) == [LayerConfig(1, 4)]


@pytest.mark.parametrize("name,lim", [("mlp", (8, 16)), ("deep", (2, 4)), ("conv", (8, 16))])
def test_front_is_the_pareto_front_of_every_point(name, lim):
    """The per-layer pruning loses nothing: the front equals the Pareto front of the whole product of options,
    and no front point dominates another."""
    net = NETS[name]()
    lim = dict(max_parallel=lim[0], max_width=lim[1])     # keeps the brute-force product to a few hundred points
    res = dse.explore(net, "ecp5", slack=0, **lim)
    every = [dse.estimate(net, HwConfig(tuple(c)), "ecp5")
             for c in itertools.product(*(dse.layer_options(net, i, **lim) for i in range(len(net.layers))))]
    key = lambda c: (c.cycles, c.lut, c.bram)   # noqa: E731
    assert sorted(map(key, res["front"])) == sorted(set(map(key, dse.pareto(every, key))))
    assert res["chosen"].us == min(c.us for c in every)
    assert res["considered"] <= len(every)


def test_objective_and_slack():
    net = NETS["mlp"]()
    fast = dse.explore(net, "ice40", slack=0)["chosen"]
    small = dse.explore(net, "ice40", objective="luts", slack=0)["chosen"]
    front = dse.explore(net, "ice40", slack=0)["front"]
    assert fast.us == min(c.us for c in front) and small.lut == min(c.lut for c in front)
    loose = dse.explore(net, "ice40", slack=50)["chosen"]
    assert loose.us <= fast.us * 1.5 and loose.lut <= fast.lut
    with pytest.raises(ValueError, match="objective must be one of latency, luts"):
        dse.explore(net, "ice40", objective="power")


def test_budget_limits_the_front_and_refusals_name_the_cheapest_point():
    net = random_network([784, 128, 10], timesteps=16, seed=0)
    res = dse.explore(net, "ice40", "up5k")
    assert res["limits"] == {"lut": 5280, "ff": 5280, "bram": 30}
    assert all(c.bram <= 30 and c.lut <= 5280 for c in res["front"])
    tight = dse.explore(net, "ice40", "up5k", budget={"lut": 2000})
    assert all(c.lut <= 2000 for c in tight["front"])
    with pytest.raises(ValueError, match=r"no folding of this network fits iCE40UP5K-SG48 within lut <= 100, .*"
                                         r"the closest point .* needs [\d,]+ LUT4, [\d,]+ FF and \d+ EBR"):
        dse.explore(net, "ice40", "up5k", budget={"lut": 100})
    big = random_network([1024, 512, 10], timesteps=4, seed=0)
    with pytest.raises(ValueError, match=r"bram <= 30.*needs .* \d+ EBR"):
        dse.explore(big, "ice40", "up5k")


@pytest.mark.parametrize("text,match", [
    ("lut", "NAME=INT"), ("luts=3", "NAME=INT"), ("lut=x", "lut must be a positive int, not 'x'"),
    ("lut=0", "positive int, not 0"), ("lut=3,lut=4", "names lut twice"), ("lut=3,,bram=2", "NAME=INT")])
def test_parse_budget_errors(text, match):
    with pytest.raises(ValueError, match=match):
        dse.parse_budget(text)


def test_parse_budget():
    assert dse.parse_budget("lut=3000, bram=20,ff=9") == {"lut": 3000, "bram": 20, "ff": 9}
    assert dse.parse_budget(None) == {} == dse.parse_budget("")


# --- the configuration file ---------------------------------------------------------------------------------------

def test_config_round_trip(tmp_path):
    from bsnn_hw.io import write_json
    net = NETS["mlp"]()
    res = dse.explore(net, "ecp5")
    doc = dse.config_document(net, res["chosen"], "ecp5", res["device"], {"lut": 1})
    assert doc["format"] == "bsnn-hw-config" and doc["version"] == 1 and doc["device"] == "25k"
    assert doc["hw_config"]["layers"] == res["chosen"].layers and doc["measured"] == {"lut": 1}
    path = tmp_path / "c.json"
    write_json(path, doc)
    assert dse.read_config(path, net) == res["chosen"].config
    assert dse.read_config(json.loads(path.read_text())) == res["chosen"].config
    other = random_network([64, 40, 10], timesteps=8, seed=9)
    with pytest.raises(ValueError, match="was made for model .*, not this model"):
        dse.read_config(path, other)


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.update(format="x"), "not a bsnn-hw configuration"),
    (lambda d: d.update(version=2), "version 2 is not supported"),
    (lambda d: d["hw_config"].update(layers=[[1, 16]] * 3), "the config has 3 layer"),
    (lambda d: d["hw_config"].update(layers=[[1, "16"], [1, 16]]), "list of \\[P, W\\] int pairs"),
    (lambda d: d["hw_config"].update(layers=[[0, 16], [1, 16]]), "parallel must be at least 1"),
    (lambda d: d["hw_config"].update(layers=[[1, 640], [1, 16]]), "width must be in 1..64"),
    (lambda d: d["hw_config"].update(early_exit="yes"), "early_exit must be a bool, not .yes."),
])
def test_read_config_errors(mutate, match):
    net = NETS["mlp"]()
    doc = dse.config_document(net, dse.estimate(net, HwConfig.default(net), "ice40"), "ice40", "up5k")
    mutate(doc)
    with pytest.raises(ValueError, match=match):
        dse.read_config(doc, net)


def test_read_config_not_json(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{nope")
    with pytest.raises(ValueError, match=r"c.json: not JSON"):
        dse.read_config(p)


# --- the command --------------------------------------------------------------------------------------------------

def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="bsnn-hw", catch_exceptions=True)


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.bsnn"
    r = cli("random", "--sizes", "64-40-10", "-o", path, "-T", 8, "--seed", 1)
    assert r.exit_code == 0, r.stderr
    return path


def test_dse_command_prints_the_front_and_writes_the_choice(model, tmp_path):
    out = tmp_path / "chosen.json"
    r = cli("dse", model, "--target", "ecp5", "--budget", "lut=2500", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert "Pareto front on LFE5U-25F" in r.stdout and "chosen (latency)" in r.stdout
    net = random_network([64, 40, 10], timesteps=8, seed=1)
    cfg = dse.read_config(out, net)
    best = dse.explore(net, "ecp5", budget={"lut": 2500})["chosen"]
    assert cfg == best.config
    r = cli("dse", model, "--json", "--objective", "luts", "--slack", 0)
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["chosen"]["target"] == "ice40" and d["chosen"]["predicted"]["lut"] == min(p["lut"] for p in d["front"])


@pytest.mark.parametrize("args,pattern", [
    (["--target", "xilinx"], r"--target must be one of ice40, ecp5, not 'xilinx'"),
    (["--device", "hx9k"], r"device for target ice40 must be one of"),
    (["--budget", "lut=many"], r"--budget lut must be a positive int, not 'many'"),
    (["--budget", "lut=10"], r"no folding of this network fits .* within lut <= 10, .*: the closest point .* needs"),
    (["--objective", "fast"], r"--objective must be one of latency, luts"),
])
def test_dse_command_errors(model, tmp_path, args, pattern):
    out = tmp_path / "never.json"
    before = sorted(os.listdir(tmp_path))
    r = cli("dse", model, *args, "-o", out)
    assert r.exit_code != 0
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert sorted(os.listdir(tmp_path)) == before


def test_dse_command_bad_model(tmp_path):
    bad = tmp_path / "bad.bsnn"
    bad.write_bytes(b"not a model")
    r = cli("dse", bad)
    assert r.exit_code != 0 and len(r.stderr.splitlines()) == 1 and r.stderr.startswith("Error: ")


def test_logic_rom_bits_moves_roms_to_block_ram():
    """HwConfig.logic_rom_bits: ROMs above it leave logic (the attribute goes, block RAM counts follow); validated
    and carried by the configuration file."""
    from bsnn_hw.hdl.generate import generate
    net = random_network([784, 128, 10], timesteps=4, seed=0)
    base = HwConfig.from_lists(net, [2, 1], [196, 16])
    roms = HwConfig(base.layers, logic_rom_bits=1024)
    place = {m["name"]: m["placement"] for m in dse.design_memories(net, base)}
    moved = {m["name"]: m["placement"] for m in dse.design_memories(net, roms)}
    assert place["layer0_threshold"] == place["layer1_weights"] == "logic"          # 1,920 and 1,280 bits
    assert moved["layer0_threshold"] == moved["layer1_weights"] == "block"
    assert moved["layer1_threshold"] == "logic"                                      # 150 bits
    assert dse.estimate(net, roms, "ice40").bram > dse.estimate(net, base, "ice40").bram
    assert dse.estimate(net, roms, "ice40").lut < dse.estimate(net, base, "ice40").lut
    v_base, v_roms = generate(net, base).verilog, generate(net, roms).verilog
    assert v_roms.count('ram_style = "logic"') < v_base.count('ram_style = "logic"')
    assert HwConfig.from_dict(roms.to_dict()) == roms
    with pytest.raises(ValueError, match="logic_rom_bits must be a number of bits \\(an int >= 0\\) or None, not -1"):
        HwConfig(base.layers, logic_rom_bits=-1)
    assert dse.explore(net, "ice40", max_width=196, logic_rom_bits=1024)["chosen"].config.logic_rom_bits == 1024


# --- event-driven layers on measured spike statistics ---------------------------------------------------------------

def test_event_statistics_and_expected_cycles_equal_the_per_sample_formula():
    """spike_statistics counts each dense layer's input spikes per sample and step; expected_cycles is the mean of
    sample_cycles' exact per-sample figures (rounded), and the worst-case formula without statistics is refused."""
    from bsnn_hw.hdl.config import sample_cycles
    net = NETS["deep"]()
    rng = np.random.default_rng(0)
    spikes = rng.random((6, net.timesteps, net.n_in)) < 0.1
    stats = dse.spike_statistics(net, spikes)
    assert sorted(stats) == [0, 1, 2] and stats[0].shape == (6, net.timesteps)
    np.testing.assert_array_equal(stats[0], spikes.sum(axis=2))
    cfg = HwConfig((LayerConfig(4, 16, True), LayerConfig(3, 8), LayerConfig(5, 12, True)))
    want = np.mean([c["cycles"] for c in sample_cycles(net, cfg, spikes)])
    assert dse.expected_cycles(net, cfg, stats) == round(want)
    assert dse.expected_cycles(net, HwConfig.default(net), stats) == cycles_per_inference(net, HwConfig.default(net))
    with pytest.raises(ValueError, match="needs spike statistics"):
        dse.estimate(net, cfg, "ice40")
    c = dse.estimate(net, cfg, "ice40", stats=stats)
    assert c.cycles == round(want) and c.layers == [[4, 16, "events"], [3, 8], [5, 12, "events"]]
    assert c.lut_features["events"] > 0 and c.ff_features["events"] > 0
    # the same bits as the dense ROM, in n_in rows of P per group
    rom = [m for m in dse.design_memories(net, cfg) if m["name"] == "layer0_weights"][0]
    assert (rom["depth"], rom["width"]) == (6 * 50, 4)          # G = 24 / 4 groups of 50 rows


def test_explore_with_statistics_tries_event_driven_layers_where_legal():
    """With sparse input the search finds event-driven points (they are on the front); without statistics, and on
    layers reading a map, it never tries one."""
    net = NETS["mlp"]()
    rng = np.random.default_rng(1)
    sparse = dse.spike_statistics(net, rng.random((8, net.timesteps, net.n_in)) < 0.02)
    res = dse.explore(net, "ecp5", stats=sparse)
    assert any(lc.events for c in res["front"] for lc in c.config.layers)
    assert not any(lc.events for c in dse.explore(net, "ecp5")["front"] for lc in c.config.layers)
    conv = NETS["conv"]()
    stats = dse.spike_statistics(conv, rng.random((4, conv.timesteps, conv.n_in)) < 0.1)
    assert stats == {}
    for c in dse.explore(conv, "ice40", stats=stats)["front"]:
        assert not any(lc.events for lc in c.config.layers)


def test_dse_command_events_needs_data(model):
    r = cli("dse", model, "--events")
    assert r.exit_code != 0 and "give --data" in r.stderr and len(r.stderr.splitlines()) == 1
    r = cli("dse", model, "--data", "digits")
    assert r.exit_code != 0 and "add --events" in r.stderr
    r = cli("dse", model, "--events", "--data", "digits", "--samples", 20, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["front"]         # digits' 64 pixels fit the model's 64 inputs
    r = cli("dse", model, "--events", "--data", "fashion-mnist-nowhere")
    assert r.exit_code != 0 and r.stderr.startswith("Error: --data fashion-mnist-nowhere") and \
        len(r.stderr.splitlines()) == 1


def test_config_file_with_event_driven_layers(tmp_path):
    """An event-driven choice round-trips through the configuration file (and generate --config takes it)."""
    net = NETS["mlp"]()
    cfg = HwConfig((LayerConfig(8, 16, True), LayerConfig(2, 8)))
    rng = np.random.default_rng(2)
    stats = dse.spike_statistics(net, rng.random((4, net.timesteps, net.n_in)) < 0.05)
    cost = dse.estimate(net, cfg, "ice40", stats=stats)
    doc = dse.config_document(net, cost, "ice40", "up5k")
    assert doc["hw_config"]["layers"] == [[8, 16, "events"], [2, 8]]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    assert dse.read_config(path, net) == cfg
    doc["hw_config"]["layers"][0][2] = "event"
    with pytest.raises(ValueError, match=r"\[P, W, \"events\"\] for an event-driven layer"):
        dse.read_config(doc, net)
