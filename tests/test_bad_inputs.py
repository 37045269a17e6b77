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
