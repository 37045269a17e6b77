"""Bad input found by a new user's tour of the tool: each gives one line on stderr naming what is wrong and what was
expected, a non-zero exit, no traceback, and nothing half-written."""
from __future__ import annotations

import hashlib
import json
import os
import struct

import numpy as np
import pytest
from test_cli import cli, fails

import bsnn_hw
from bsnn_hw import ArtifactError, Layer, Network, artifact, random_network


def _rewrite_header(data: bytes, edit) -> bytes:
    """A valid file (correct checksum) whose header was changed by ``edit(header_dict)``."""
    (hlen,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8:8 + hlen])
    edit(header)
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = data[:4] + struct.pack("<I", len(head)) + head + data[8 + hlen:-32]
    return body + hashlib.sha256(body).digest()


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.bsnn"
    random_network([20, 8, 3], timesteps=6, seed=3).save(path)
    return path


def test_1_huge_threshold_with_a_valid_checksum(tmp_path, model):
    def edit(h):
        h["layers"][0]["threshold"][0] = 2 ** 70
    bad = tmp_path / "huge.bsnn"
    bad.write_bytes(_rewrite_header(model.read_bytes(), edit))
    with pytest.raises(ArtifactError, match=r"layer 0: threshold must be in 1\.\.32767 .*not 1180591620717411303424"):
        bsnn_hw.load(bad)
    fails("inspect", bad, pattern=r"huge\.bsnn: layer 0: threshold must be in 1\.\.32767")


def test_2_run_with_zero_samples(tmp_path, model):
    np.save(tmp_path / "empty.npy", np.zeros((0, 20), dtype=np.uint8))
    fails("run", model, tmp_path / "empty.npy", pattern=r"empty\.npy: holds 0 samples; expected at least one")


def test_3_run_negative_limit(tmp_path, model):
    np.save(tmp_path / "x.npy", np.zeros((2, 20), dtype=np.uint8))
    fails("run", model, tmp_path / "x.npy", "--limit", "-1", pattern=r"--limit.*-1 is not in the range x>=0")


def test_4_run_a_model_too_long_for_memory(tmp_path, model):
    net = bsnn_hw.load(model)
    long = Network(net.layers, 10 ** 12, net.readout, net.encoding, net.seed)
    long.save(tmp_path / "long.bsnn")
    np.save(tmp_path / "x.npy", np.zeros((2, 20), dtype=np.uint8))
    fails("run", tmp_path / "long.bsnn", tmp_path / "x.npy",
          pattern=r"T = 1000000000000 steps would need about [\d,.]+ [KMGTP]iB of memory but [\d,.]+ [KMGTP]iB is "
                  r"available")
    from bsnn_hw import golden
    with pytest.raises(ValueError, match="would need about"):
        golden.run(long, np.zeros((2, 20), dtype=np.uint8))


def test_5_random_network_too_large_for_memory(tmp_path):
    fails("random", "--sizes", "100000-100000", "-o", tmp_path / "x.bsnn",
          pattern=r"100000-100000 network would need about 93\.1 GiB of memory", cwd=tmp_path)


def test_6_random_output_under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    fails("random", "--sizes", "3-2", "-o", tmp_path / "file" / "x.bsnn",
          pattern=r"file/x\.bsnn: cannot write it: .*file is a file, not a directory", cwd=tmp_path)


def test_6b_output_parents_are_created_the_same_way_everywhere(tmp_path, model):
    cli("random", "--sizes", "3-2", "-o", tmp_path / "a" / "b" / "x.bsnn")
    assert (tmp_path / "a" / "b" / "x.bsnn").exists()
    cli("generate", model, "-o", tmp_path / "c" / "d")
    assert (tmp_path / "c" / "d" / "bsnn_top.v").exists()


def test_7_generate_output_under_a_file(tmp_path, model):
    (tmp_path / "file").write_text("x")
    fails("generate", model, "-o", tmp_path / "file" / "sub",
          pattern=r"file/sub/bsnn_top\.v: cannot write it: .*file is a file, not a directory")
    fails("generate", model, "-o", tmp_path / "file", pattern=r"--out.*file' is a file")
    assert sorted(os.listdir(tmp_path)) == ["file", "m.bsnn"]


def test_8_generate_writes_the_pair_or_nothing(tmp_path, model):
    out = tmp_path / "out"
    (out / "bsnn_top.json").mkdir(parents=True)          # the manifest cannot be written
    fails("generate", model, "-o", out, pattern=r"bsnn_top\.json: is a directory")
    assert sorted(os.listdir(out)) == ["bsnn_top.json"]   # no lone .v, no temporary file
    # An existing pair is replaced whole or kept whole.
    (out / "bsnn_top.json").rmdir()
    cli("generate", model, "-o", out)
    before = {f: (out / f).read_text() for f in ("bsnn_top.v", "bsnn_top.json")}
    from bsnn_hw import io
    real = os.replace
    calls = []

    def flaky(src, dst):
        """The manifest's rename fails once, after the .v was already replaced."""
        calls.append(dst)
        if str(dst).endswith("bsnn_top.json") and ".json." in str(src) and "failed" not in calls:
            calls.append("failed")
            raise OSError(28, "No space left on device", str(dst))
        return real(src, dst)

    other = tmp_path / "other.bsnn"
    random_network([20, 8, 3], timesteps=6, seed=4).save(other)
    io.os.replace = flaky
    try:
        fails("generate", other, "-o", out, pattern=r"No space left on device")
    finally:
        io.os.replace = real
    assert {f: (out / f).read_text() for f in ("bsnn_top.v", "bsnn_top.json")} == before
    assert sorted(os.listdir(out)) == ["bsnn_top.json", "bsnn_top.v"]


def test_9_verify_from_a_directory_with_a_space(tmp_path, monkeypatch, model):
    from bsnn_hw.sim.runner import simulator_missing
    if simulator_missing("verilator"):
        pytest.skip("Verilator not installed")
    where = tmp_path / "my models"
    where.mkdir()
    monkeypatch.chdir(where)
    r = cli("verify", model, "-n", "2", "--json")
    assert json.loads(r.stdout)["agree"] == 2
    assert not any(p.name.startswith(".bsnn") for p in where.iterdir())     # nothing cached in the working directory
    monkeypatch.setenv("BSNN_HW_CACHE", str(where / "cache dir"))
    fails("verify", model, "-n", "2", pattern=r"has a space in its path.*set BSNN_HW_CACHE to a directory without "
                                              r"spaces")


def test_10_a_flipped_header_byte_is_corruption(tmp_path, model):
    data = bytearray(model.read_bytes())
    i = data.index(b'"contract_version":1') + len('"contract_version":')
    data[i] = ord("7")
    bad = tmp_path / "flip.bsnn"
    bad.write_bytes(bytes(data))
    fails("inspect", bad, pattern=r"flip\.bsnn: checksum mismatch: the file is corrupted or truncated")


@pytest.mark.parametrize("option,long", [("-P", "--parallel"), ("-W", "--width")])
@pytest.mark.parametrize("text", ["1,,1", ",1", "1,", ""])
def test_11_empty_list_entries_are_refused(tmp_path, model, option, long, text):
    fails("generate", model, "-o", tmp_path / "o", option, text,
          pattern=rf"{long} must be comma-separated ints, one per layer, none empty")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["module", "wire", "always_ff", "logic"])
def test_11_verilog_keywords_are_refused_as_names(tmp_path, model, name):
    fails("generate", model, "-o", tmp_path / "o", "--name", name,
          pattern=rf"name must not be a Verilog/SystemVerilog reserved word, not '{name}'")


def test_errors_name_the_users_path_not_a_temporary_file(tmp_path, monkeypatch, model):
    """A failure while writing (here: the final rename, as a full disk or a permission would make it) names the
    output the user asked for, never the hidden temporary file beside it, and leaves nothing behind."""
    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(src))

    monkeypatch.setattr(os, "replace", refuse)
    line = fails("random", "--sizes", "3-2", "-o", tmp_path / "x.bsnn",
                 pattern=r"x\.bsnn: cannot write it \(Permission denied\)$")
    assert ".x.bsnn." not in line and not (tmp_path / "x.bsnn").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.bsnn"]
    line = fails("generate", model, "-o", tmp_path / "gen", pattern=r"gen/bsnn_top\.v: cannot write it")
    assert ".bsnn_top.v." not in line and list((tmp_path / "gen").iterdir()) == []


def test_save_refuses_a_directory_path(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        random_network([3, 2]).save(tmp_path)


def test_layer_threshold_api_refuses_huge_python_ints():
    with pytest.raises(ValueError, match=r"threshold must be in 1\.\.127"):
        Layer(np.ones((1, 3), dtype=bool), 2 ** 70, membrane_bits=8)
    assert artifact.identity(random_network([3, 2])) == random_network([3, 2]).identity()


def test_verify_reports_progress_of_each_long_step(tmp_path, model):
    import shutil
    if shutil.which("iverilog") is None:
        pytest.skip("Icarus Verilog not installed")
    from bsnn_hw.sim import verify as vmod
    net = bsnn_hw.load(model)
    lines = []
    x = np.random.default_rng(0).integers(0, 256, (2, 20), dtype=np.uint8)
    rep = vmod.verify(net, net.encode(x), sim="icarus", progress=lines.append, cache_dir=tmp_path / "cache")
    assert rep["agree"] == 2
    text = "\n".join(lines)
    assert "simulating 2 sample(s)" in text and "icarus: building" in text and "icarus: simulating" in text
    lines.clear()
    vmod.verify(net, net.encode(x), sim="icarus", progress=lines.append, cache_dir=tmp_path / "cache")
    assert any("found in the cache" in line for line in lines)


# --- a second tour (every command, ~400 bad inputs): what it found ----------------------------------------------------

@pytest.fixture
def digits_model(tmp_path):
    path = tmp_path / "d.bsnn"
    random_network([64, 16, 10], timesteps=4, seed=5).save(path)
    return path


def test_output_through_a_symbolic_link_keeps_the_link(tmp_path):
    target = tmp_path / "real.bsnn"
    target.write_text("old")
    link = tmp_path / "link.bsnn"
    link.symlink_to(target.name)
    cli("random", "--sizes", "4-2", "-o", link)
    assert link.is_symlink() and os.readlink(link) == target.name
    assert bsnn_hw.load(target).sizes == [4, 2]


def test_output_to_a_fifo_writes_into_it(tmp_path):
    """A device or FIFO (`-o /dev/null`) is written in place: renaming a file over it would replace the node."""
    import stat
    import threading
    from bsnn_hw.io import atomic_write, atomic_write_files
    fifo = tmp_path / "pipe"
    for write in (lambda: atomic_write_files({fifo: b"abc"}), lambda: _write_with(atomic_write, fifo, b"abc")):
        os.mkfifo(fifo)
        got = []
        reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
        reader.start()
        write()
        reader.join(timeout=10)
        assert got == [b"abc"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
        fifo.unlink()


def _write_with(atomic_write, path, data):
    with atomic_write(path, "wb") as f:
        f.write(data)


def test_unwritable_outputs_are_refused_before_the_work(tmp_path, model):
    (tmp_path / "afile").write_text("")
    fails("train", "--dataset", "digits", "--epochs", "1", "-o", tmp_path / "afile" / "m.bsnn",
          pattern=r"--out .*afile/m\.bsnn: cannot write it: .*afile is a file, not a directory")
    if os.path.isdir("/proc/self"):       # Linux: no new file can be made in /proc, not even by root
        fails("synth", model, "--no-pnr", "-o", "/proc/nope/r.json", pattern=r"-o /proc/nope/r\.json: cannot write "
                                                                             r"it: /proc takes no new file")
        fails("verify", model, "-n", "1", "--plot", "/proc/p.png", pattern=r"--plot /proc/p\.png: cannot write it")


def test_verify_samples_beyond_the_split_are_refused(digits_model):
    fails("verify", digits_model, "--data", "digits", "-n", "5", "--offset", "358",
          pattern=r"--samples 5 from --offset 358: digits's test split has 360 samples, so at most 2 from there")
    fails("verify", digits_model, "-n", "100000000000000", pattern=r"--samples 100000000000000 random inputs would "
                                                                  r"need about .* of memory")


@pytest.mark.parametrize("args, pattern", [
    (["verify", "{m}", "--seed", "-5"], r"'--seed': -5 is not in the range x>=0"),
    (["verify", "{m}", "--limit", "-1"], r"'--limit': -1 is not in the range x>=0"),
    (["train", "--seed", "-1"], r"'--seed': -1 is not in the range x>=0"),
    (["synth", "{m}", "--freq", "nan"], r"'--freq': expected a finite number > 0, not 'nan'"),
    (["build", "{m}", "--board", "icebreaker", "--clock", "nan"], r"'--clock': expected a finite number > 0"),
    (["board-run", "{m}", "--port", "loop://", "--timeout", "inf"], r"'--timeout': expected a finite number > 0"),
])
def test_numbers_out_of_range_are_usage_errors(model, args, pattern):
    fails(*[a.format(m=model) for a in args], pattern=pattern)


def test_nan_in_a_training_config_is_refused(tmp_path):
    from bsnn_hw.train.trainer import TrainConfig
    with pytest.raises(ValueError, match=r"slope must be a finite number, not inf"):
        TrainConfig(slope=float("inf")).validate()
    (tmp_path / "c.toml").write_text("weight_decay = nan\n")
    fails("train", "--config", tmp_path / "c.toml", pattern=r"weight_decay must be a finite number, not nan")


def test_board_run_port_names_and_baud(digits_model):
    fails("board-run", digits_model, "--port", "sim:foo", "-n", "1", "--data", "digits",
          pattern=r"--port sim:foo: unknown simulator 'foo', expected sim:icarus or sim:verilator")
    fails("board-run", digits_model, "--port", "loop://", "--baud", "115200.7", "-n", "1", "--data", "digits",
          pattern=r"--baud 115200\.7: a serial port's baud rate is a whole number")


@pytest.mark.parametrize("section, command", [("bntt", ["truncate", "{m}", "--steps", "exit", "-o", "{t}"]),
                                              ("metrics", ["calibrate", "{m}", "-d", "digits", "--limit", "5"])])
def test_metadata_section_of_the_wrong_type(tmp_path, digits_model, section, command):
    net = bsnn_hw.load(digits_model)
    net.metadata[section] = [1]
    net.save(tmp_path / "odd.bsnn")
    fails(*[a.format(m=tmp_path / "odd.bsnn", t=tmp_path / "t.bsnn") for a in command],
          pattern=rf"metadata\.{section} must be a JSON object, not a list")


def test_an_idx_file_without_images(tmp_path, digits_model):
    d = tmp_path / "idx"
    d.mkdir()
    (d / "t10k-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 0, 8, 8))
    (d / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 0))
    fails("verify", digits_model, "--data", d, "-n", "1",
          pattern=r"t10k-images-idx3-ubyte: holds 0 images of 8x8 pixels; expected at least one image")


def test_config_files_that_are_not_text(tmp_path, model):
    (tmp_path / "c.json").write_bytes(b"\xff\xfe")
    fails("generate", model, "-o", tmp_path / "g", "--config", tmp_path / "c.json",
          pattern=r"c\.json: not JSON: not UTF-8 text \(byte 0xff at offset 0\)")
    (tmp_path / "c.toml").write_bytes(b"\xff\xfe")
    fails("train", "--config", tmp_path / "c.toml", pattern=r"c\.toml: not valid TOML: not UTF-8 text")


def test_an_output_that_is_the_input(tmp_path, model):
    before = model.read_bytes()
    fails("export-nir", model, model, pattern=r"OUT .*m\.bsnn is the input .*m\.bsnn itself")
    assert model.read_bytes() == before
    cli("export-nir", model, tmp_path / "m.nir")
    fails("import-nir", tmp_path / "m.nir", "-o", tmp_path / "m.nir", pattern=r"-o .*m\.nir is the input")


def test_nir_metadata_with_an_impossible_time_step(tmp_path, model):
    from bsnn_hw import nirgraph
    graph = nirgraph.to_nir(bsnn_hw.load(model))
    meta = json.loads(graph.metadata[nirgraph.META_KEY])
    meta["dt"] = 0
    graph.metadata[nirgraph.META_KEY] = json.dumps(meta)
    (tmp_path / "dt0.nir").write_bytes(nirgraph.to_bytes(graph))
    fails("import-nir", tmp_path / "dt0.nir", "-o", tmp_path / "o.bsnn", "--approximate",
          pattern=r"metadata 'bsnn': dt must be a number of seconds > 0, not 0")


def test_run_labels_outside_the_classes(tmp_path, model):
    np.savez(tmp_path / "xy.npz", x=np.zeros((2, 20), dtype=np.uint8), y=np.array([0, 3]))
    fails("run", model, tmp_path / "xy.npz", pattern=r"labels 'y' must be classes 0\.\.2 of the model's 3 outputs, "
                                                     r"found 3")


@pytest.mark.parametrize("where", ["header", "network", "layer", "weights"])
def test_unknown_fields_outside_the_metadata_are_refused(tmp_path, model, where):
    """A field the reader does not know could mean something (a bias, another reset): refused, never dropped."""
    def edit(h):
        {"header": h, "network": h["network"], "layer": h["layers"][1], "weights": h["layers"][0]["weights"]}[where][
            "bias"] = [1, 2, 3]
    bad = tmp_path / "extra.bsnn"
    bad.write_bytes(_rewrite_header(model.read_bytes(), edit))
    with pytest.raises(ArtifactError, match=r"unknown field 'bias' \(this bsnn-hw reads .*; a newer writer's file\?\)"):
        bsnn_hw.load(bad)
    ok = tmp_path / "meta.bsnn"           # the metadata is free-form
    ok.write_bytes(_rewrite_header(model.read_bytes(), lambda h: h["metadata"].update(bias=[1, 2, 3])))
    assert bsnn_hw.load(ok).metadata["bias"] == [1, 2, 3]


def test_options_without_effect_are_refused(tmp_path, model, digits_model):
    """An option that would change nothing in the case at hand is refused, not ignored."""
    fails("calibrate", digits_model, "-d", "digits", "--confidence", "votes",
          pattern=r"--confidence votes says how an ensemble's scores become probabilities, and no model here carries")
    fails("calibrate", digits_model, "-d", "fashion", "--split-seed", "3",
          pattern=r"--split-seed chooses digits' train/test split; fashion has a fixed one")
    fails("calibrate", digits_model, "-d", "digits", "--data-root", tmp_path,
          pattern=r"a data root \(--data-root\) is the directory of a named data set on disk .*'digits' takes none")
    fails("calibrate", digits_model, "-d", "digits", "--scale", "nan", pattern=r"'--scale': expected a finite number")
    fails("dse", model, "--samples", "5", pattern=r"--samples gives the spike statistics of --events: add --events")
    fails("train", "--dataset", "fashion-mnist", "--split-seed", "2",
          pattern=r"split_seed chooses digits' train/test split; 'fashion-mnist' has a fixed one")


# --- the Python API (a third tour: ~210 bad calls) ---------------------------------------------------------------------

def test_inputs_are_refused_not_cast():
    """Network.as_inputs (the early decision, the benches) used to cast: 7 became a spike, 300 wrapped to 44."""
    from bsnn_hw import golden
    net = random_network([4, 3], timesteps=4, readout="first", encoding="direct")
    with pytest.raises(ValueError, match=r"must be bool spike trains \(or integers 0/1\), found 7"):
        golden.decide(net, np.full((2, 4, 4), 7, np.uint8))
    with pytest.raises(TypeError, match=r"not float64"):
        golden.decide(net, np.full((2, 4, 4), 0.5))
    _, d = golden.decide(net, np.ones((2, 4, 4), np.int64))          # 0/1 integers are spikes
    assert d.shape == (2,)
    pix = Network(net.layers, 4, "first", "pixel", 1)
    with pytest.raises(ValueError, match=r"uint8 intensities 0\.\.255, found 300"):
        pix.as_inputs(np.full((2, 4), 300))


@pytest.mark.parametrize("call, error, pattern", [
    (lambda e: e.encode(3, 4, "pixel"), TypeError, r"inputs must be uint8 intensities"),
    (lambda e: e.encode(np.zeros((3, 3), bool), 3, "direct"), ValueError, r"shape \(batch, T, n_in\), not \(3, 3\)"),
    (lambda e: e.direct(np.zeros((1, 3, 3), bool), -1, 3), ValueError, r"timesteps must be at least 1, not -1"),
    (lambda e: e.direct(np.zeros((1, 3, 3), bool), 3.0, 3), TypeError, r"timesteps must be an int, not 3\.0"),
    (lambda e: e.pixel(np.zeros((2, 3), np.uint8), 3.0), TypeError, r"n_in must be an int, not 3\.0"),
])
def test_encoders_check_their_arguments(call, error, pattern):
    from bsnn_hw import encode
    with pytest.raises(error, match=pattern):
        call(encode)


def test_api_arguments_of_the_wrong_kind(model):
    from bsnn_hw import golden, truncate
    net = bsnn_hw.load(model)
    spikes = np.zeros((1, net.timesteps, net.n_in), bool)
    with pytest.raises(TypeError, match=r"net must be a bsnn_hw\.Network, not Layer"):
        golden.simulate(net.layers[0], spikes)
    with pytest.raises(TypeError, match=r"record must be True or False, not 'False'"):
        golden.simulate(net, spikes, record="False")
    with pytest.raises(TypeError, match=r"net must be a bsnn_hw\.Network, not str"):
        truncate("net", 2)
    with pytest.raises(TypeError, match=r"sizes must be a sequence of at least two positive ints, not 5"):
        random_network(5)
    with pytest.raises(TypeError, match=r"result must be the golden\.Result of simulate\(net, \.\.\.\), not NoneType"):
        golden.decision_step(net, None)


def test_layer_and_random_network_parameters():
    w = np.ones((3, 4), bool)
    with pytest.raises(ValueError, match=r"reset must be one of .*, not array\('zero'"):
        Layer(w, 2, reset=np.array("zero"))
    with pytest.raises(ValueError, match=r"threshold must have shape \(3,\) to match 3 neurons, not \(0,\)"):
        Layer(w, [])
    with pytest.raises(TypeError, match=r"step_frac must be an int, not 0\.0"):
        Layer(w, 2, step_frac=0.0)
    with pytest.raises(ValueError, match=r"threshold must be in 1\.\.32767 .*, not 0"):
        random_network([4, 3], readout="membrane", threshold=0)


def _hdl_cases():
    """(call, error, pattern) for the generators' own Python API: every one was accepted, cast, or failed deep inside
    Amaranth, NumPy or Yosys before (an audit of ~400 calls)."""
    from bsnn_hw.hdl import config as hc
    from bsnn_hw.hdl.encoder import InputEncoder
    from bsnn_hw.hdl.engine import LayerEngine
    from bsnn_hw.hdl.generate import check_name, generate, manifest
    from bsnn_hw.hdl.neuron import NeuronCore
    from bsnn_hw.hdl.rom import WeightROM
    from bsnn_hw.hdl.synapse import SynapseArray
    from bsnn_hw.hdl.top import NetworkTop
    from bsnn_hw.hdl.uart import uart_divisor
    net = random_network([6, 4, 3], timesteps=4, seed=1)
    layer, cfg = net.layers[0], hc.HwConfig.default(net)
    w = np.ones((3, 5), bool)
    k2 = Layer(np.zeros((4, 6), np.int8), [3] * 4, weight_bits=2)
    return [
        (lambda: SynapseArray(2 ** 40), ValueError, r"width must be in 1\.\.65536 .*not 1099511627776"),
        (lambda: NeuronCore(layer, 1, 4, sum_width=2 ** 40), ValueError, r"sum_width must be in \d+\.\.64"),
        (lambda: NeuronCore(layer, 1, 4, fires="False"), TypeError, r"fires must be True or False, not 'False'"),
        (lambda: NeuronCore(layer, 1, 4, input_max=255.0), ValueError, r"input_max must be 1 .* or 255 .*not 255\.0"),
        (lambda: NeuronCore(layer, 1, 4, spram=-1), ValueError, r"spram must be a number of bits .*not -1"),
        (lambda: LayerEngine(layer, 1, 6, 4, planes=8.0), ValueError, r"planes must be 1 .* or 8 .*not 8\.0"),
        (lambda: LayerEngine(layer, 1, 6, 4, skip="no"), TypeError, r"skip must be True or False, not 'no'"),
        (lambda: LayerEngine(layer, 1, 6, 4, logic_rom_bits="x"), TypeError, r"logic_rom_bits must be a number"),
        (lambda: LayerEngine(layer, 1, 6, 4, banks=5), TypeError, r"banks must be a list of weight arrays"),
        (lambda: LayerEngine(k2, 1, 6, 4, banks=[np.full((4, 6), 5, np.int8)]), ValueError,
         r"banks\[0\]: 2-bit weights must be in -2\.\.1, not 5"),
        (lambda: WeightROM(np.array([[2 ** 64 - 1]], np.uint64), 1, 1, bits=8), ValueError,
         r"8-bit weights must be in -128\.\.127, not 18446744073709551615"),
        (lambda: WeightROM([[1, 2], [3]], 1, 1, bits=4), ValueError, r"weights must be a rectangular"),
        (lambda: WeightROM.contents(w, 0, 5), ValueError, r"parallel must be in 1\.\.3 .*not 0"),
        (lambda: WeightROM(w, 1, 5, logic_rom_bits=True), TypeError, r"logic_rom_bits must be a number of bits"),
        (lambda: InputEncoder(10, 5, 4, "latency", seed="junk"), TypeError, r"seed must be an int"),
        (lambda: InputEncoder(10, 5, 4, "rate", seed=[3, 4]), TypeError, r"seed must be an int .*not \[3, 4\]"),
        (lambda: hc.HwConfig(layers=5), TypeError, r"layers must be a sequence of LayerConfig"),
        (lambda: hc.HwConfig.from_lists(net, parallel=5), TypeError, r"parallel must be a list of ints"),
        (lambda: hc.HwConfig.from_lists(net, parallel=[1.0, 1]), TypeError, r"layer 0: parallel must be an int"),
        (lambda: NetworkTop(net, members=5), TypeError, r"members must be a list of bsnn_hw\.Network"),
        (lambda: generate(net, name="top\n"), ValueError, r"name must be a Verilog identifier"),
        (lambda: check_name("top\n"), ValueError, r"name must be a Verilog identifier"),
        (lambda: generate(net, ensemble="no"), TypeError, r"ensemble must be True or False"),
        (lambda: manifest(net, None, False, "t"), TypeError, r"config must be a HwConfig, not NoneType"),
        (lambda: manifest(net, cfg, False, "module"), ValueError, r"reserved word"),
        (lambda: hc.cycles_per_inference(net, hc.HwConfig(cfg.layers[:1])), ValueError,
         r"the config has 1 layer\(s\) but the network has 2"),
        (lambda: hc.cycles_per_inference(net, cfg, members=0), ValueError, r"members must be at least 1"),
        (lambda: hc.cycles_per_inference(net, cfg, trace="no"), TypeError, r"trace must be True or False"),
        (lambda: uart_divisor(float("inf"), 9600), ValueError, r"clock must be a positive, finite number, not inf"),
    ]


@pytest.mark.parametrize("case", range(29))
def test_hdl_blocks_refuse_bad_parameters(case):
    cases = _hdl_cases()
    assert len(cases) == 29
    call, error, pattern = cases[case]
    with pytest.raises(error, match=pattern):
        call()


def test_hdl_from_lists_takes_none_entries_as_defaults():
    from bsnn_hw.hdl.config import HwConfig
    net = random_network([6, 4, 3], timesteps=4, seed=1)
    cfg = HwConfig.from_lists(net, parallel=[2, None], width=[None, 4])
    assert [(lc.parallel, lc.width) for lc in cfg.layers] == [(2, 6), (1, 4)]


@pytest.mark.parametrize("settings, pattern", [
    (dict(fire_once=1), r"fire_once must be true or false, not 1"),
    (dict(exact="no"), r"exact must be true or false, not 'no'"),
    (dict(leak_shift=2.5), r"leak_shift must be an integer or None, not 2\.5"),
    (dict(eval_seed=1.5), r"eval_seed must be an integer, not 1\.5"),
    (dict(timesteps=True), r"timesteps must be an integer, not True"),
    (dict(lr="0.01"), r"lr must be a number, not '0\.01'"),
    (dict(membrane_bits=40), r"membrane_bits must be in 2\.\.32, not 40"),
    (dict(leak_shift=16), r"leak_shift must be in 1\.\.15 \(membrane_bits - 1\) or None, not 16"),
    (dict(reset="bogus"), r"reset must be one of 'subtract', 'zero', not 'bogus'"),
    (dict(seed=2 ** 70), r"seed must be an integer in 0\.\.2\^63-1"),
    (dict(val_samples=-1), r"val_samples must be a sample count >= 0, not -1"),
    (dict(bstdg_gamma=2.0), r"bstdg_gamma applies to method 'bstdg', not 'bsnn'"),
    (dict(method="bstdg", encoding="latency", leak_shift=None, fire_once=True, readout="first", dropout=0.0,
          scale="layer", slope=3.0), r"--method bstdg: has no surrogate gradient"),
])
def test_training_settings_are_checked_before_any_work(settings, pattern):
    """Each of these trained a whole run and failed at export, or trained something other than what was asked."""
    from bsnn_hw.train.trainer import TrainConfig
    with pytest.raises(ValueError, match=pattern):
        TrainConfig(**settings).validate()


def test_fit_refuses_what_it_could_not_finish_before_loading_data(tmp_path):
    from bsnn_hw.train import bstdg
    from bsnn_hw.train.trainer import TrainConfig, fit, pick_device
    cfg = TrainConfig(dataset="digits", hidden=[8], timesteps=4, epochs=1, threads=1, device="cpu")
    (tmp_path / "d.bsnn").mkdir()
    with pytest.raises(IsADirectoryError, match=r"out .*d\.bsnn: is a directory"):
        fit(cfg, out=tmp_path / "d.bsnn")
    with pytest.raises(ValueError, match=r"the curve plot .*m\.png is also out"):
        fit(cfg, out=tmp_path / "m.png")
    with pytest.raises(ValueError, match=r"checkpoint .*m\.bsnn is also out"):
        fit(cfg, out=tmp_path / "m.bsnn", checkpoint=tmp_path / "m.bsnn")
    with pytest.raises(ValueError, match=r"resume needs a checkpoint"):
        fit(cfg, resume=True)
    with pytest.raises(TypeError, match=r"cfg must be a TrainConfig, not dict"):
        fit({})
    with pytest.raises(ValueError, match=r"this fit trains --method bstdg; the config is for --method bsnn"):
        bstdg.fit(cfg)
    with pytest.raises(ValueError, match=r"device must be auto, cpu or cuda\[:N\], not 'meta'"):
        pick_device("meta")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.bsnn"]      # nothing written


def test_training_encoders_refuse_what_they_would_wrap():
    import torch
    from bsnn_hw.train import bstdg
    from bsnn_hw.train.encoding import RateEncoder, latency
    with pytest.raises(TypeError, match=r"uint8 tensor of intensities"):
        latency(torch.tensor([[300]]), 4)
    with pytest.raises(TypeError, match=r"rate-encoding seeds must be integers, not 1\.5"):
        RateEncoder(3, 4)(torch.zeros((1, 3), dtype=torch.uint8), 1.5)
    net = bstdg.BSTDGNet([6, 4, 3], 4)
    with pytest.raises(ValueError, match=r"shape \(batch, 6\) for this network, not \(2, 3\)"):
        net.run_times(torch.zeros((2, 3), dtype=torch.int64))


def test_torchrun_environment_is_checked(monkeypatch):
    from bsnn_hw.train.distributed import world_size
    monkeypatch.setenv("WORLD_SIZE", "0")
    with pytest.raises(ValueError, match=r"WORLD_SIZE must be an integer >= 1 \(torchrun sets it\), not '0'"):
        world_size()


def test_a_damaged_training_checkpoint_is_named(tmp_path):
    import torch
    from bsnn_hw.train.trainer import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_checkpoint
    path = tmp_path / "c.ckpt"
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": [], "model": {}}, path)
    with pytest.raises(ValueError, match=r"c\.ckpt: a damaged training checkpoint: 'config' must be a dict of "
                                         r"settings, not a list"):
        load_checkpoint(path)


@pytest.mark.parametrize("make, error, pattern", [
    (lambda L, M: L.BinaryLinear(0, 4), ValueError, r"n_in must be at least 1, not 0"),
    (lambda L, M: L.BinaryLinear(4, 4, init_scale=0), ValueError, r"init_scale must be a positive, finite number"),
    (lambda L, M: L.BinaryLinear(4, 4, precision="fp16"), ValueError, r"precision must be one of fp32, bf16"),
    (lambda L, M: L.LIF(threshold=float("nan")), ValueError, r"threshold must be a positive, finite number"),
    (lambda L, M: L.LIF(leak_shift=2.5), TypeError, r"leak_shift must be an int, not 2\.5"),
    (lambda L, M: L.LIF(fire_once="no"), TypeError, r"fire_once must be True or False, not 'no'"),
    (lambda L, M: L.BinaryConv2d((8, 8, 1), 4, kernel=0), ValueError, r"kernel must be at least 1, not 0"),
    (lambda L, M: L.BinaryConv2d((8, 8, 1), 4, kernel=9), ValueError, r"kernel 9x9 does not fit the 8x8 map"),
    (lambda L, M: L.BinaryConv2d((8, 8), 4, kernel=3), ValueError, r"in_shape must be three positive ints"),
    (lambda L, M: L.SpikePool((8, 8, 1), 0), ValueError, r"window must be in 1\.\.8"),
    (lambda L, M: M.BSNN([4, 0, 3], 4), ValueError, r"sizes must hold .* all positive ints"),
    (lambda L, M: M.BSNN([4, 3], 2.5), ValueError, r"timesteps must be an int >= 1, not 2\.5"),
])
def test_training_layers_check_their_parameters(make, error, pattern):
    """Each was accepted with a meaningless shape, or failed later inside torch or math."""
    from bsnn_hw.train import layers, model
    with pytest.raises(error, match=pattern):
        make(layers, model)


def _sim_cases(tmp_path):
    """(call, error, pattern) for the simulation, synthesis and DSE Python API: each was cast, hung, wrote files
    before failing, or failed inside NumPy, cocotb or nextpnr before (an audit of ~440 calls)."""
    from bsnn_hw.hdl import HwConfig, dse, lint, synth
    from bsnn_hw.hdl.uart import Framing
    from bsnn_hw.sim import board_run, configs, runner, verify
    from bsnn_hw.sim.network import Unit, run_network
    net = random_network([6, 4, 3], timesteps=4, seed=1)
    rate = Network(net.layers, 4, "count", "rate", 1)
    spikes = np.zeros((2, 4, 6), bool)
    return [
        (lambda: configs.random_v2_units(0, 1, max_side=0), ValueError, r"max_side must be at least 1, not 0"),
        (lambda: configs.random_full_units(0, -1), ValueError, r"count must be at least 0, not -1"),
        (lambda: board_run.run_link(None, Framing(rate), np.full((2, 6), 3.7)), TypeError,
         r"pixels must be uint8 intensities 0\.\.255 \(or integers in that range\), not float64"),
        (lambda: board_run.run_link(None, Framing(rate), np.full((2, 6), 300)), ValueError,
         r"pixels must be intensities 0\.\.255, found 300"),
        (lambda: board_run.run_link(None, Framing(rate), np.zeros((3, 4), np.uint8)), ValueError,
         r"pixels must have shape \(images, 6\), not \(3, 4\)"),
        (lambda: board_run.run_link(None, Framing(rate), np.zeros((2, 6), np.uint8), [9, 9]), ValueError,
         r"labels must be classes 0\.\.2, found 9"),
        (lambda: board_run.open_port("loop://", 115200.7, 1.0), ValueError, r"baud must be a positive whole number"),
        (lambda: verify.verify(net, spikes, sim="vcs", run_dir=tmp_path / "v"), ValueError,
         r"sim must be one of icarus, verilator, not 'vcs'"),
        (lambda: verify.verify(net, spikes, stalls="False", run_dir=tmp_path / "v"), TypeError,
         r"stalls must be True or False, not 'False'"),
        (lambda: verify.verify(rate, rate.encode(np.zeros((2, 6), np.uint8)), pixels=np.full((2, 6), 200),
                               run_dir=tmp_path / "v"), ValueError, r"pixels must be the images the spikes were"),
        (lambda: verify.load_inputs(net, None, 2, seed=1.5), TypeError, r"--seed must be an int, not 1\.5"),
        (lambda: verify.load_inputs(net, None, 2, offset=3), ValueError, r"--offset 3 chooses test samples"),
        (lambda: run_network([Unit(net, spikes, stall_in=1.5)], "icarus", run_dir=tmp_path / "v"), ValueError,
         r"unit 0: stall_in must be a probability in \[0, 1\), not 1\.5"),
        (lambda: run_network([Unit(net, np.zeros((2, 3, 6), bool))], "icarus", run_dir=tmp_path / "v"), ValueError,
         r"unit 0: spikes must have shape \(samples >= 1, 4, 6\), not \(2, 3, 6\)"),
        (lambda: runner.run_cocotb("module t; endmodule", "t", "m", "icarus", waves="False"), TypeError,
         r"waves must be True or False, not 'False'"),
        (lambda: synth.synthesize("module t; endmodule", "t", cache="False"), TypeError,
         r"cache must be True or False, not 'False'"),
        (lambda: synth.place_and_route("module t; endmodule", "t", [], freq=float("nan")), ValueError,
         r"freq must be a positive clock frequency in MHz, not nan"),
        (lambda: synth.implement(net, HwConfig.default(net), pnr="no"), TypeError, r"pnr must be True or False"),
        (lambda: dse.explore(net, "ice40", budget={"lut": 2.5}), TypeError, r"budget lut must be an int, not 2\.5"),
        (lambda: dse.explore(net, "ice40", max_width=0), ValueError, r"max_width must be at least 1, not 0"),
        (lambda: dse.parse_budget(3000), TypeError, r"--budget must be text"),
        (lambda: lint.lint("module t; endmodule", "u"), ValueError, r"the Verilog has no module named 'u'"),
    ]


@pytest.mark.parametrize("case", range(22))
def test_sim_synth_and_dse_refuse_bad_arguments_before_any_work(tmp_path, case):
    cases = _sim_cases(tmp_path)
    assert len(cases) == 22
    call, error, pattern = cases[case]
    with pytest.raises(error, match=pattern):
        call()
    assert not (tmp_path / "v").exists() or not any((tmp_path / "v").iterdir())     # nothing written


def test_encoders_precision_and_input_beats_refuse_unknown_values():
    from bsnn_hw.hdl.testbench import input_beats
    from bsnn_hw.train.bntt import BNTTNet
    from bsnn_hw.train.trainer import Encoder, pick_precision
    with pytest.raises(ValueError, match=r"encoding must be one of rate, latency, pixel, not 'bogus'"):
        Encoder("bogus", 4, 4, "cpu")               # was taken as latency
    with pytest.raises(ValueError, match=r"precision must be auto, fp32 or bf16, not 'fp16'"):
        pick_precision("fp16", None)
    with pytest.raises(ValueError, match=r"a sample must be bool spikes \(T, n_in\)"):
        input_beats(np.full((2, 3), 2), 4)            # a 2 was sent as a spike
    with pytest.raises(ValueError, match=r"theta_int must be an int >= 1 .*not 64\.7"):
        BNTTNet([4, 5, 3], 4, theta_int=64.7)


def test_dse_documents_and_estimates_refuse_unknown_targets():
    from bsnn_hw.hdl import HwConfig, dse, synth
    net = random_network([6, 4, 3], timesteps=4, seed=1)
    cost = dse.estimate(net, HwConfig.default(net), "ice40")
    with pytest.raises(ValueError, match=r"target must be one of .*not 'bogus'"):
        dse.config_document(net, cost, "bogus", "up5k")             # was written into the file
    with pytest.raises(ValueError, match=r"target must be one of .*not 'bogus'"):
        synth.expected_brams([], "bogus")                            # was None, as for a target without a model
    doc = dse.config_document(net, cost, "ice40", "up5k")
    with pytest.raises(ValueError, match=r"configuration version True is not supported"):
        dse.read_config({**doc, "version": True})


def test_bstdg_net_encoders_and_wrapper_ports_refuse_what_they_truncated():
    import torch
    from bsnn_hw.hdl.synth import io_wrapper
    from bsnn_hw.train import bstdg
    from bsnn_hw.train.encoding import RateEncoder, latency
    with pytest.raises(TypeError, match=r"timesteps must be an int, not 2\.7"):
        bstdg.BSTDGNet([6, 4, 3], 2.7)                       # was T = 2
    with pytest.raises(ValueError, match=r"sizes must hold .* all positive ints, not \[6, 0, 3\]"):
        bstdg.BSTDGNet([6, 0, 3], 4)
    with pytest.raises(ValueError, match=r"timesteps must be at least 1, not 0"):
        latency(torch.zeros((1, 3), dtype=torch.uint8), 0)
    with pytest.raises(ValueError, match=r"n_in must be at least 1, not 0"):
        RateEncoder(0, 4)
    ports = [dict(name="clk", direction="in", width=1), dict(name="rst", direction="in", width=1)]
    with pytest.raises(ValueError, match=r"ports\[2\] must be \{name, direction 'in' or 'out', width >= 1\}"):
        io_wrapper(ports + [dict(name="a", direction="in", width=2.5)], "t")
    with pytest.raises(ValueError, match=r"port names must be distinct"):
        io_wrapper(ports + [dict(name="clk", direction="in", width=1)], "t")


def test_spike_statistics_labels_and_prior_are_checked():
    import torch
    from bsnn_hw.hdl import HwConfig, dse
    from bsnn_hw.train import bisnn, bstdg
    from bsnn_hw.train.model import integer_simulate
    net = random_network([6, 4, 3], timesteps=4, seed=1)
    with pytest.raises(ValueError, match=r"stats\[0\] must be int spike counts 0\.\.6 of shape \(samples >= 1, T = 4\)"):
        dse.estimate(net, HwConfig.default(net), stats={0: np.full((2, 2), 1)})     # T = 2: another network's
    with pytest.raises(ValueError, match=r"spikes must have shape \(2, 4, 6\) for this network, not \(2, 4, 5\)"):
        integer_simulate(net, torch.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match=r"labels must be int64 classes 0\.\.2"):
        bstdg.targets(torch.zeros((2, 3), dtype=torch.int64), torch.tensor([0, 5]), 4, 1.0, None)
    with pytest.raises(ValueError, match=r"prior probability of a \+1 weight must be in \(0, 1\), not 1\.0"):
        bisnn.prior_parameter(1.0)
