"""Hardware options on the command line: configuration files (`--config`, written by `bsnn-hw dse`), the on-chip
encoder (`--encoder`, `--encoder-lanes`) and ensembles (`--map-only`) through generate's manifest."""
from __future__ import annotations

import json

import numpy as np
import pytest

import bsnn_hw
from bsnn_hw.hdl import HwConfig, LayerConfig
from bsnn_hw.hdl.cli import load_config_file
from bsnn_hw.network import Network

from test_cli import cli, fails


@pytest.fixture
def rate_model(tmp_path):
    path = tmp_path / "m.bsnn"
    cli("random", "--sizes", "20-8-3", "-o", path, "-T", 5, "--seed", 3, "--encoding", "rate")
    return path


def _config_file(path, net, hw: dict, **extra):
    d = {"format": "bsnn-hw-config", "version": 1, "model_identity": net.identity(), "hw_config": hw, **extra}
    path.write_text(json.dumps(d))
    return path


def test_hw_config_dict_round_trip():
    cfg = HwConfig((LayerConfig(2, 5), LayerConfig(3, 8)), early_exit=True, skip_zero=True, encoder=True,
                   encoder_lanes=5)
    assert HwConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match=r"hw_config has unknown keys \['lanes'\]"):
        HwConfig.from_dict({"layers": [[1, 2]], "lanes": 3})
    with pytest.raises(ValueError, match="hw_config.layers must be a list of \\[P, W\\] or"):
        HwConfig.from_dict({"layers": [1, 2]})


def test_generate_takes_a_config_file(tmp_path, rate_model):
    net = bsnn_hw.load(rate_model)
    conf = _config_file(tmp_path / "c.json", net, {"layers": [[2, 4], [3, 8]], "encoder": True, "encoder_lanes": 2})
    out = tmp_path / "gen"
    r = cli("generate", rate_model, "-o", out, "--config", conf)
    assert "P=2,3, W=4,8" in r.stdout and "20 pixel beats per sample, rate code on chip" in r.stdout
    man = json.loads((out / "bsnn_top.json").read_text())
    assert man["input"] == "pixels" and man["beats_per_sample"] == 20 and man["encoder"]["encoding"] == "rate"
    assert [p["name"] for p in man["ports"]][2:5] == ["i_pixels__valid", "i_pixels__ready", "i_pixels__payload"]
    assert load_config_file(conf, net) == HwConfig((LayerConfig(2, 4), LayerConfig(3, 8)), encoder=True,
                                                   encoder_lanes=2)


def test_config_file_errors(tmp_path, rate_model):
    net = bsnn_hw.load(rate_model)
    good = _config_file(tmp_path / "c.json", net, {"layers": [[2, 4], [3, 8]]})
    fails("generate", rate_model, "-o", tmp_path / "o", "--config", good, "-P", "1,1",
          pattern=r"^Error: --config gives the whole configuration: drop -P/-W", cwd=tmp_path)
    other = _config_file(tmp_path / "other.json", bsnn_hw.random_network([20, 8, 3], seed=9), {"layers": [[1, 1]]})
    fails("generate", rate_model, "-o", tmp_path / "o", "--config", other,
          pattern=r"^Error: .*other\.json was made for model [0-9a-f]+, not this model")
    (tmp_path / "bad.json").write_text("{nope")
    fails("generate", rate_model, "-o", tmp_path / "o", "--config", tmp_path / "bad.json",
          pattern=r"^Error: .*bad\.json: not JSON")
    (tmp_path / "fmt.json").write_text(json.dumps({"format": "x", "version": 1}))
    fails("synth", rate_model, "--config", tmp_path / "fmt.json",
          pattern=r"^Error: .*fmt\.json: not a bsnn-hw configuration")
    wide = _config_file(tmp_path / "wide.json", net, {"layers": [[9, 4], [3, 8]]})
    fails("generate", rate_model, "-o", tmp_path / "o", "--config", wide,
          pattern=r"^Error: .*wide\.json: layer 0: parallel must be in 1\.\.8 \(its n_out\), not 9")
    assert not (tmp_path / "o").exists()


def test_memory_options_on_the_command_line(tmp_path, rate_model):
    """--logic-rom-bits and --spram: carried by the manifest's memories and the config file; refused beside
    --config, below 0, and (SPRAM) on a part without it."""
    net = bsnn_hw.load(rate_model)
    out = tmp_path / "gen"
    cli("generate", rate_model, "-o", out, "--logic-rom-bits", 0, "--spram")
    mems = {m["name"]: m["placement"] for m in json.loads((out / "bsnn_top.json").read_text())["memories"]}
    assert mems["layer0_threshold"] == "block"          # 40 bits: in logic by default (2,048)
    assert "spram" not in mems.values()                  # every state far below 16,384 bits
    conf = _config_file(tmp_path / "c.json", net, {"layers": [[1, 4], [1, 8]], "logic_rom_bits": 0, "spram": True})
    assert load_config_file(conf, net) == HwConfig((LayerConfig(1, 4), LayerConfig(1, 8)), logic_rom_bits=0,
                                                   spram=True)
    for flag in (("--spram",), ("--logic-rom-bits", 8)):
        fails("generate", rate_model, "-o", tmp_path / "o", "--config", conf, *flag,
              pattern=r"^Error: --config gives the whole configuration: drop .*--logic-rom-bits/--spram")
    fails("generate", rate_model, "-o", tmp_path / "o", "--logic-rom-bits", -1, pattern=r"--logic-rom-bits")
    low = HwConfig((LayerConfig(1, 4), LayerConfig(1, 8)), spram=True, spram_min_bits=0)
    assert HwConfig.from_dict(low.to_dict()) == low and low.spram_bits() == 0
    with pytest.raises(ValueError, match="spram_min_bits must be a number of bits \\(an int >= 0\\), not -1"):
        HwConfig((LayerConfig(1, 4),), spram_min_bits=-1)
    assert not (tmp_path / "o").exists()


def test_encoder_options_on_the_command_line(tmp_path, rate_model):
    fails("generate", rate_model, "-o", tmp_path / "o", "--encoder", "--encoder-lanes", 3,
          pattern=r"^Error: encoder_lanes must divide layer 0's width 16 .*, not 3$")
    direct = tmp_path / "d.bsnn"
    cli("random", "--sizes", "20-8-3", "-o", direct, "--encoding", "direct")
    fails("generate", direct, "-o", tmp_path / "o", "--encoder",
          pattern=r"^Error: the on-chip encoder needs the 'rate' or 'latency' encoding, not 'direct'")
    fails("generate", rate_model, "-o", tmp_path / "o", "--encoder-lanes", 2,
          pattern=r"^Error: encoder_lanes applies to the on-chip encoder: set encoder too$")


def test_generate_builds_an_ensemble_unless_map_only(tmp_path):
    base = bsnn_hw.random_network([12, 6, 4], timesteps=3, seed=1)
    rng = np.random.default_rng(0)
    ens = [[rng.random(layer.weights.shape) < 0.5 for layer in base.layers] for _ in range(3)]
    path = tmp_path / "e.bsnn"
    Network(base.layers, 3, "count", "rate", ensemble=ens).save(path)
    r = cli("generate", path, "-o", tmp_path / "e")
    assert "an ensemble of 3 members" in r.stdout
    man = json.loads((tmp_path / "e" / "bsnn_top.json").read_text())
    assert man["members"] == 3 and len(man["member_identities"]) == 3
    assert {f["name"] for f in man["payloads"]["o_result"]} >= {"total", "votes"}
    cli("generate", path, "-o", tmp_path / "m", "--map-only")
    man = json.loads((tmp_path / "m" / "bsnn_top.json").read_text())
    assert man["members"] == 1 and "total" not in {f["name"] for f in man["payloads"]["o_result"]}
    first = tmp_path / "f.bsnn"
    Network(base.layers, 3, "first", "rate", ensemble=ens).save(first)
    fails("generate", first, "-o", tmp_path / "f",
          pattern=r"^Error: an ensemble needs the 'count' or 'membrane' readout")
