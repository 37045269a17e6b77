"""The `bsnn-hw` command line: random, inspect, run; every error is one line on stderr, a non-zero exit, no
traceback and no output file."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import bsnn_hw
from bsnn_hw import golden, random_network
from bsnn_hw.cli import main


def cli(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], prog_name="bsnn-hw", catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception                   # a bug: a traceback would have reached the user
    if ok:
        assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def fails(*args, pattern: str, cwd: Path | None = None):
    """Run a command that must fail: non-zero exit, exactly one line on stderr starting "Error: " and matching
    ``pattern``, no traceback, and no new file in ``cwd``."""
    before = sorted(os.listdir(cwd)) if cwd else None
    r = cli(*args, ok=False)
    assert r.exit_code != 0
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert re.search(pattern, lines[0]), lines[0]
    if cwd is not None:
        assert sorted(os.listdir(cwd)) == before, "a failing command left a file behind"
    return lines[0]


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.bsnn"
    cli("random", "--sizes", "20-8-3", "-o", path, "-T", 6, "--seed", 3)
    return path


# --- random ----------------------------------------------------------------------------------------------------

def test_random_writes_the_random_network(model):
    assert bsnn_hw.load(model) == random_network([20, 8, 3], timesteps=6, seed=3)


def test_random_options(tmp_path):
    out = tmp_path / "r.bsnn"
    r = cli("random", "--sizes", "10,6,4", "-o", out, "--timesteps", 9, "--leak-shift", "none", "--reset", "zero",
            "-M", 8, "--fire-once", "--readout", "membrane", "--encoding", "latency", "--threshold", 3, "--seed", 5)
    assert str(out) in r.stdout and "10-6-4" in r.stdout and "84 weight bits" in r.stdout
    net = bsnn_hw.load(out)
    assert net == random_network([10, 6, 4], timesteps=9, leak_shift=None, reset="zero", membrane_bits=8,
                                 fire_once=True, readout="membrane", encoding="latency", threshold=3, seed=5)
    assert net.layers[0].params() == dict(leak_shift=None, reset="zero", membrane_bits=8, fire_once=True)
    assert net.layers[0].threshold.tolist() == [3] * 6 and net.layers[1].threshold is None
    cli("random", "--sizes", "10-4", "-o", out, "--leak-shift", 3)
    assert bsnn_hw.load(out).layers[0].leak_shift == 3


@pytest.mark.parametrize("args,pattern", [
    (["--sizes", "20-3", "-M", 40], r"^Error: membrane_bits must be in 2\.\.32, not 40$"),
    (["--sizes", "20-3", "--leak-shift", 99], r"^Error: leak_shift must be in 1\.\.15 \(membrane_bits - 1\) or None, "
                                              r"not 99$"),
    (["--sizes", "20-3", "--leak-shift", "abc"], r"^Error: --leak-shift must be an int or 'none', not 'abc'$"),
    (["--sizes", "20-x"], r"^Error: --sizes must look like 784-128-10, not '20-x'$"),
    (["--sizes", "20"], r"^Error: --sizes needs at least two positive sizes .*not '20'$"),
    (["--sizes", "20-0"], r"^Error: --sizes needs at least two positive sizes .*not '20-0'$"),
    (["--sizes", "20-3", "--threshold", 0], r"^Error: threshold must be in 1\.\.32767 .*not 0$"),
    (["--sizes", "20-3", "--threshold", "2.5"], r"^Error: Invalid value for '--threshold': '2\.5' is not a valid "
                                                r"integer \(see 'bsnn-hw random --help'\)$"),
    (["--sizes", "20-3", "-T", 0], r"^Error: timesteps must be at least 1, not 0$"),
    (["--sizes", "20-3", "--reset", "soft"], r"^Error: Invalid value for '--reset'"),
    (["--sizes", "20-3", "--bogus"], r"^Error: No such option.*--bogus"),
    ([], r"^Error: Missing option '--sizes' \(see 'bsnn-hw random --help'\)$"),
])
def test_random_errors(tmp_path, args, pattern):
    out = tmp_path / "bad.bsnn"
    fails("random", *args, *(["-o", out] if args else []), pattern=pattern, cwd=tmp_path)


def test_random_error_keeps_existing_file(model):
    before = model.read_bytes()
    fails("random", "--sizes", "20-3", "-M", 40, "-o", model, pattern="membrane_bits")
    assert model.read_bytes() == before


def test_random_into_missing_directory_creates_it(tmp_path):
    cli("random", "--sizes", "4-2", "-o", tmp_path / "nope" / "m.bsnn")
    assert bsnn_hw.load(tmp_path / "nope" / "m.bsnn").sizes == [4, 2]


# --- inspect ---------------------------------------------------------------------------------------------------

def test_inspect_table(model):
    r = cli("inspect", model)
    out = r.stdout
    assert "20-8-3" in out and "T=6" in out and "readout=count" in out
    # weight memory 20*8 + 8*3 = 184 bits; synaptic ops per inference 6 * 184 = 1,104
    assert "weight memory: 184 bits" in out
    assert "synaptic operations per inference: 1,104" in out
    assert bsnn_hw.load(model).identity() in out


def test_inspect_json(model):
    info = json.loads(cli("inspect", model, "--json").stdout)
    net = bsnn_hw.load(model)
    assert info["sizes"] == [20, 8, 3] and info["timesteps"] == 6
    assert info["weight_memory_bits"] == 20 * 8 + 8 * 3 == 184
    assert info["synaptic_ops_per_inference"] == 6 * (20 * 8 + 8 * 3) == 1104
    assert [lay["weight_bits"] for lay in info["layers"]] == [160, 24]
    assert [lay["synaptic_ops"] for lay in info["layers"]] == [960, 144]
    assert [(lay["n_in"], lay["n_out"]) for lay in info["layers"]] == [(20, 8), (8, 3)]
    lay0 = info["layers"][0]
    assert lay0["leak_shift"] == 4 and lay0["reset"] == "subtract" and lay0["membrane_bits"] == 16
    assert lay0["threshold_min"] == int(net.layers[0].threshold.min())
    assert lay0["threshold_max"] == int(net.layers[0].threshold.max())
    assert info["identity"] == net.identity()
    assert info["contract_version"] == 1


def test_inspect_membrane_readout_shows_never_fires(tmp_path):
    path = tmp_path / "m.bsnn"
    cli("random", "--sizes", "6-4-2", "-o", path, "--readout", "membrane")
    assert "never fires" in cli("inspect", path).stdout
    info = json.loads(cli("inspect", path, "--json").stdout)
    assert info["layers"][1]["fires"] is False and info["layers"][1]["threshold_min"] is None


def test_inspect_errors(model, tmp_path):
    data = bytearray(model.read_bytes())
    data[-40] ^= 1                                    # a payload byte: the checksum no longer matches
    bad = tmp_path / "corrupt.bsnn"
    bad.write_bytes(bytes(data))
    fails("inspect", bad, pattern=r"corrupt\.bsnn: checksum mismatch")
    bad.write_bytes(bytes(data[:30]))
    fails("inspect", bad, pattern=r"corrupt\.bsnn: truncated")
    fails("inspect", tmp_path / "missing.bsnn", pattern=r"missing\.bsnn: no such model file$")
    fails("inspect", pattern=r"^Error: Missing argument 'MODEL'")


# --- run -------------------------------------------------------------------------------------------------------

@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (7, 20), dtype=np.uint8)
    y = rng.integers(0, 3, 7)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    return x, y


def test_run_npy_json(model, inputs, tmp_path):
    x, _ = inputs
    out = json.loads(cli("run", model, tmp_path / "x.npy", "--json").stdout)
    ref = golden.run(bsnn_hw.load(model), x)
    assert out["samples"] == 7
    assert out["prediction"] == ref.prediction.tolist()
    assert out["counts"] == [c.tolist() for c in ref.counts]
    assert "accuracy" not in out


def test_run_npz_with_labels(model, inputs, tmp_path):
    x, y = inputs
    out = json.loads(cli("run", model, tmp_path / "d.npz", "--json").stdout)
    pred = golden.run(bsnn_hw.load(model), x).prediction
    assert out["prediction"] == pred.tolist()
    assert out["accuracy"] == pytest.approx(float((pred == y).mean()))
    table = cli("run", model, tmp_path / "d.npz").stdout
    assert f"accuracy: {(pred == y).mean() * 100:.2f}%" in table
    assert "prediction" in table and "label" in table


def test_run_bool_spike_trains(model, tmp_path):
    spikes = np.random.default_rng(1).random((4, 6, 20)) < 0.5
    np.save(tmp_path / "s.npy", spikes)
    out = json.loads(cli("run", model, tmp_path / "s.npy", "--json").stdout)
    assert out["prediction"] == golden.simulate(bsnn_hw.load(model), spikes).prediction.tolist()


def test_run_membrane_readout_reports_membrane(tmp_path, inputs):
    path = tmp_path / "m.bsnn"
    cli("random", "--sizes", "20-5-3", "-o", path, "--readout", "membrane", "--encoding", "latency")
    out = json.loads(cli("run", path, tmp_path / "x.npy", "--json").stdout)
    ref = golden.run(bsnn_hw.load(path), inputs[0])
    assert out["membrane"] == ref.membrane[-1].tolist() and out["prediction"] == ref.prediction.tolist()


def test_run_errors(model, inputs, tmp_path):
    (tmp_path / "garbage.npy").write_bytes(b"\x93NUMPY this is not an array")
    fails("run", model, tmp_path / "garbage.npy", pattern=r"garbage\.npy: not a readable \.npy/\.npz array file")
    (tmp_path / "text.npy").write_text("1,2,3\n")
    fails("run", model, tmp_path / "text.npy", pattern=r"text\.npy: not a readable \.npy/\.npz array file")
    np.save(tmp_path / "wide.npy", np.zeros((2, 21), dtype=np.uint8))
    fails("run", model, tmp_path / "wide.npy", pattern=r"wide\.npy: intensities must have shape \(batch, 20\), "
                                                       r"not \(2, 21\)$")
    np.save(tmp_path / "float.npy", np.zeros((2, 20)))
    fails("run", model, tmp_path / "float.npy", pattern=r"inputs must be uint8 intensities or bool spike trains, "
                                                         r"not float64$")
    np.save(tmp_path / "spk.npy", np.zeros((2, 5, 20), dtype=bool))
    fails("run", model, tmp_path / "spk.npy", pattern=r"spike trains must have shape \(batch, 6, 20\), "
                                                       r"not \(2, 5, 20\)$")
    np.savez(tmp_path / "nox.npz", inputs=inputs[0])
    fails("run", model, tmp_path / "nox.npz", pattern=r"expected an array named 'x' \(and optionally 'y'\), found "
                                                       r"inputs$")
    np.savez(tmp_path / "bady.npz", x=inputs[0], y=np.zeros(3, dtype=np.int64))
    fails("run", model, tmp_path / "bady.npz", pattern=r"labels 'y' must have shape \(7,\), not \(3,\)$")
    np.savez(tmp_path / "stry.npz", x=inputs[0], y=np.array(["a"] * 7))
    fails("run", model, tmp_path / "stry.npz", pattern=r"labels 'y' must be integer class indices, not <U1$")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    fails("run", model, tmp_path / "obj.npy", pattern=r"obj\.npy: not a readable")
    fails("run", model, tmp_path / "missing.npy", pattern=r"missing\.npy: no such input file$")
    fails("run", tmp_path / "missing.bsnn", tmp_path / "x.npy", pattern=r"missing\.bsnn: no such model file$")
    fails("run", model, model, pattern=r"inputs must be a \.npy or \.npz file, not '\.bsnn'$")
    listing = sorted(os.listdir(tmp_path))
    fails("run", model, pattern=r"Missing argument 'INPUTS'")
    assert sorted(os.listdir(tmp_path)) == listing


def test_run_direct_model_refuses_intensities(tmp_path, inputs):
    path = tmp_path / "d.bsnn"
    cli("random", "--sizes", "20-3", "-o", path, "--encoding", "direct")
    fails("run", path, tmp_path / "x.npy", pattern=r"the model's encoding is 'direct', so inputs must be bool spike "
                                                   r"trains")


# --- the group -------------------------------------------------------------------------------------------------

def test_help_and_version():
    out = cli("--help").stdout
    for name in ("inspect", "random", "run", "train", "generate", "synth", "verify", "calibrate", "export-nir", "import-nir"):
        assert name in out
    assert bsnn_hw.__version__ in cli("--version").stdout
    fails("xyzzy", pattern=r"^Error: No such command 'xyzzy' \(see 'bsnn-hw --help'\)$")


def test_installed_command_errors_are_one_line(tmp_path):
    # The real console script (or `python -m bsnn_hw.cli`), in a fresh process: one line on stderr, exit 1.
    script = Path(sys.executable).parent / "bsnn-hw"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "bsnn_hw.cli"]
    (tmp_path / "bad.bsnn").write_bytes(b"BSNN\x05\x00\x00\x00{}")
    p = subprocess.run(cmd + ["inspect", "bad.bsnn"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 1
    assert p.stderr.splitlines() == ["Error: bad.bsnn: truncated: 10 bytes, shorter than the 8-byte preamble and "
                                     "the 32-byte checksum"]
    assert p.stdout == ""


def test_run_corrupted_input_files(model, tmp_path):
    # Any corruption of an input file gives a one-line error (or, if the damage is harmless, a normal run).
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (3, 20), dtype=np.uint8)
    np.save(tmp_path / "ok.npy", x)
    np.savez(tmp_path / "ok.npz", x=x, y=np.arange(3))
    np.savez_compressed(tmp_path / "okc.npz", x=x)
    for name in ("ok.npy", "ok.npz", "okc.npz"):
        good = (tmp_path / name).read_bytes()
        for trial in range(12):
            raw = bytearray(good)
            pos = int(rng.integers(0, len(raw)))
            if trial % 3 == 0:
                raw = raw[:pos]
            else:
                raw[pos] ^= int(rng.integers(1, 256))
            bad = tmp_path / f"bad{trial}{Path(name).suffix}"
            bad.write_bytes(bytes(raw))
            r = cli("run", model, bad, "--json", ok=False)
            if r.exit_code != 0:
                assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("Error: "), r.stderr
            bad.unlink()
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04garbage")
    fails("run", model, tmp_path / "bad.npz", pattern=r"bad\.npz: not a readable \.npy/\.npz array file")
    (tmp_path / "hello.npy").write_bytes(b"hello")
    fails("run", model, tmp_path / "hello.npy", pattern=r"hello\.npy: not a readable \.npy/\.npz array file \(no "
                                                         r"NumPy array header; object arrays are never loaded\)$")
