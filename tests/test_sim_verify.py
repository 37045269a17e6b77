"""`bsnn-hw verify`: the command on a random model, its report, its one-line errors and its exit status on a
mismatch (Icarus, small models: the full-size runs are bench/verify_speed.py)."""
import json

import pytest
from click.testing import CliRunner

from bsnn_hw import golden, random_network
from bsnn_hw.cli import main


@pytest.fixture
def tiny_model(tmp_path):
    path = tmp_path / "tiny.bsnn"
    random_network([20, 8, 4], timesteps=4, seed=3).save(path)
    return path


@pytest.fixture
def icarus():
    from bsnn_hw.sim.runner import simulator_missing
    reason = simulator_missing("icarus")
    if reason:
        pytest.skip(reason)


def _verify(args):
    return CliRunner().invoke(main, ["verify", *map(str, args)])


def test_verify_random_model_json_and_plot(sim, tiny_model, tmp_path):
    png = tmp_path / "spikes.png"
    res = _verify([tiny_model, "--sim", sim, "--samples", 4, "--json", "--plot", png, "--stalls"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["samples"] == rep["checked"] == rep["agree"] == 4 and rep["mismatches"] == 0
    assert rep["first_mismatch"] is None
    assert rep["spikes_per_layer"]["hardware"] == rep["spikes_per_layer"]["golden"]
    assert len(rep["per_sample"][0]["hw_spikes"]) == 2
    assert rep["speed"]["cycles_per_second"] > 0
    assert rep["accuracy"]["float"] is None and rep["accuracy"]["float_source"] == "no labels"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verify_table_on_digits_shape_model(icarus, tmp_path):
    path = tmp_path / "d.bsnn"
    random_network([64, 6, 10], timesteps=3, seed=1, readout="membrane").save(path)
    res = _verify([path, "--sim", "icarus", "--data", "digits", "--samples", 3, "--offset", 5])
    assert res.exit_code == 0, res.output
    assert "bit-exact" in res.output and "accuracy on 3 samples: hardware" in res.output
    assert "3/3 samples agree" in res.output


def test_verify_mismatch_exits_nonzero_and_names_the_first(icarus, tiny_model, monkeypatch):
    real = golden.simulate

    def wrong(net, spikes, record=False, method="matmul"):
        # The host-side reference says neuron 2 of layer 0 spiked at step 1 of sample 0 when it did not (or v.v.).
        r = real(net, spikes, record=record, method=method)
        if record:
            r.spikes[0][0, 1, 2] = ~r.spikes[0][0, 1, 2]
        return r
    monkeypatch.setattr(golden, "simulate", wrong)
    res = _verify([tiny_model, "--sim", "icarus", "--samples", 2, "--json"])
    assert res.exit_code == 1
    rep = json.loads(res.output)
    assert rep["first_mismatch"]["sample"] == 0 and rep["first_mismatch"]["layer"] == 0
    assert rep["first_mismatch"]["neuron"] == 2 and rep["first_mismatch"]["step"] == 1
    assert rep["mismatching_samples"] == 1 and rep["agree"] == 1


@pytest.mark.parametrize("args, message", [
    (["--data", "digits"], "has 64 features per sample but the model has 20 inputs"),
    (["--samples", "0"], "Invalid value for '--samples' / '-n': 0 is not in the range x>=1"),
    (["--parallel", "1,x"], "--parallel must be comma-separated ints"),
    (["--parallel", "9,1"], "parallel must be in 1..8"),
])
def test_verify_errors_are_one_line(icarus, tiny_model, args, message):
    res = _verify([tiny_model, "--sim", "icarus", *args])
    assert res.exit_code != 0
    assert message in res.output and res.output.count("\n") == 1, res.output


def test_verify_missing_model(tmp_path):
    res = _verify([tmp_path / "nope.bsnn"])
    assert res.exit_code != 0 and "no such model file" in res.output


def test_verify_a_trained_sum_pooled_conv_network(sim, tmp_path):
    """Sum pooling folded at export (docs/spec.md 8.5): the folded conv (kernel 6, stride 2, padding 2) and dense
    layers run bit-exact in RTL on real digits, cycles measured = the manifest's formula."""
    from bsnn_hw.train import TrainConfig, fit
    path = tmp_path / "s.bsnn"
    fit(TrainConfig(dataset="digits", arch="4c3-s2-6c3-s2-10", timesteps=2, epochs=1, batch_size=128, threads=1),
        out=path, progress=False)
    res = _verify([path, "--sim", sim, "--data", "digits", "--samples", 2, "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["samples"] == rep["agree"] == 2 and rep["mismatches"] == 0
    assert rep["cycles_per_inference"]["measured"] == rep["cycles_per_inference"]["manifest"]
