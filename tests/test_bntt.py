"""BNTT (``--method bntt``): tiny digits runs of both variants through the CLI whose artifacts (contract v3) the golden
model reproduces, the folding of both variants checked spike for spike against the golden model on hand-set
parameters (negative gammas included), the early-exit rule on hand-set gammas, the accuracy-vs-steps curve against
truncated networks, checkpoint/resume, and the refusals. Every run here is tiny (seconds)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import bsnn_hw
from bsnn_hw import contract, data, golden
from bsnn_hw.cli import main
from bsnn_hw.network import truncate

TINY = ["--dataset", "digits", "--hidden", "24", "-T", "5", "--epochs", "2", "--threads", "1", "--device", "cpu",
        "--weight-decay", "1e-3", "-q"]


@pytest.fixture(scope="module", params=["per-step", "shared"])
def cli_run(request, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bntt") / "m.bsnn"
    r = CliRunner().invoke(main, ["train", "--method", "bntt", "--bntt-variant", request.param, "--out", str(out),
                                  "--json", *TINY])
    assert r.exit_code == 0, r.output
    return request.param, out, json.loads(r.stdout)


def test_cli_run_writes_a_v3_artifact_that_golden_reproduces(cli_run):
    variant, out, metrics = cli_run
    net = bsnn_hw.load(out)
    assert net.contract_version == 3 and net.readout == "membrane" and net.encoding == "rate"
    hidden = net.layers[0]
    assert hidden.has_affine and hidden.step_bias.shape == (5, 24)
    if variant == "per-step":
        assert hidden.step_scale is not None and np.all(hidden.threshold == 64)
        assert metrics["hardware_model_agrees"] is True
        assert metrics["hardware_model_accuracy"] == metrics["integer_accuracy"]
    else:
        assert hidden.step_scale is None and hidden.step_frac == 0
        assert metrics["gap_pp"] == 0                # trained in the exported arithmetic
    x, y = data.load_dataset("digits", "test")
    g = golden.run(net, x)
    assert float((g.prediction == y).mean()) == pytest.approx(metrics["integer_accuracy"])
    info = net.metadata["bntt"]
    assert info["variant"] == variant and info["exit_threshold"] == 0.1
    assert len(info["gamma_mean"]) == 5 and len(info["accuracy_vs_steps"]) == 5
    assert info["accuracy_vs_steps"][-1] == pytest.approx(metrics["integer_accuracy"])
    assert 1 <= info["exit_step"] <= 5 and 1 <= info["steps_within_0.3pp"] <= 5
    assert info["float_accuracy"] == metrics["float_accuracy"]
    # the curve is the truncated network's (golden, T' = 2)
    g2 = golden.run(truncate(net, 2), x)
    assert float((g2.prediction == y).mean()) == pytest.approx(info["accuracy_vs_steps"][1])
    assert out.with_name("m_steps.png").stat().st_size > 0 and out.with_suffix(".png").exists()


# --- folding exactness on hand-set parameters -------------------------------------------------------------------

def _hand_model(variant, seed=0, sizes=(20, 12, 9, 5), steps=6, conv=None, input_shape=None):
    from bsnn_hw.train.bntt import BNTTNet
    torch.manual_seed(seed)
    model = BNTTNet(list(sizes), steps, variant, leak_shift=3, theta_int=40, conv=conv, input_shape=input_shape)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, gamma in enumerate(model.gammas):
            gamma.copy_((torch.rand(gamma.shape, generator=g) * 1.6 - 0.4))   # some negative
            mean, var = model.stats(i)
            mean.copy_(torch.rand(mean.shape, generator=g) * 6 - 3)
            var.copy_(torch.rand(var.shape, generator=g) * 8 + 0.5)
        for fc in model.fcs:
            fc.weight.uniform_(-1, 1, generator=g)
    return model.eval()


# conv (3 channels, 3x3) -> OR pool 2x2 -> conv (4 channels, 3x3) -> pool -> dense 12 -> 5 classes, on 8x8 maps
CONV = [("conv", 3, 3), ("pool", 2), ("conv", 4, 3), ("pool", 2)]


@pytest.mark.parametrize("variant", ["per-step", "shared"])
@pytest.mark.parametrize("arch", ["dense", "conv"])
def test_exported_arithmetic_equals_the_integer_network_spike_for_spike(variant, arch):
    """The torch model in the exported arithmetic against the golden model on the exported network, every hidden
    spike: dense layers (per-neuron tables) and conv layers (per-channel tables over every position, pools
    between)."""
    from bsnn_hw.train.bntt import to_network
    if arch == "dense":
        model, n_in = _hand_model(variant), 20
    else:
        model, n_in = _hand_model(variant, sizes=(64, 12, 5), conv=CONV, input_shape=(8, 8, 1)), 64
    assert any((gm < 0).any() for gm in model.gammas)
    net, report = to_network(model, seed=3)
    spikes = (torch.rand(64, 6, n_in, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    model.hardware = variant == "per-step"          # shared: the exact (default) model is the exported arithmetic
    rec = []
    with torch.no_grad():
        logits = model(spikes, record=rec)
    g = golden.simulate(net, spikes.bool().numpy(), record=True)
    hidden = [sp for layer, sp in zip(net.layers, g.spikes) if layer.has_neurons][:-1]
    assert len(rec) == len(hidden) == model.n_hidden
    for a, b in zip(rec, hidden):
        np.testing.assert_array_equal(a.numpy().astype(bool), b)
        assert 0 < b.mean() < 1                     # spikes and silences: the comparison can fail
    np.testing.assert_array_equal(logits.argmax(1).numpy(), g.prediction)
    np.testing.assert_array_equal(model.out_lif.last_membrane.numpy().astype(np.int64), g.membrane[-1])
    assert report["table_entries_clamped"] == 0 and len(report["membrane_bits"]) == model.n_hidden + 1
    if arch == "conv":
        assert [type(layer).__name__ for layer in net.layers] == ["Conv2d", "Pool", "Conv2d", "Pool", "Layer",
                                                                   "Layer"]
        assert net.layers[2].step_bias.shape == (6, 4)            # per (step, output channel)
        assert (net.layers[2].step_scale is not None) == (variant == "per-step")


@pytest.mark.parametrize("variant", ["per-step", "shared"])
def test_cli_conv_run_is_reproduced_by_golden(tmp_path, variant):
    out = tmp_path / "c.bsnn"
    r = CliRunner().invoke(main, ["train", "--method", "bntt", "--bntt-variant", variant, "--out", str(out), "--json",
                                  "--dataset", "digits", "--arch", "4c3-p2-10", "-T", "4", "--epochs", "1",
                                  "--threads", "1", "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.stdout)
    net = bsnn_hw.load(out)
    assert [type(layer).__name__ for layer in net.layers] == ["Conv2d", "Pool", "Layer"]
    assert net.layers[0].step_bias.shape == (4, 4)
    x, y = data.load_dataset("digits", "test")
    g = golden.run(net, x)
    assert float((g.prediction == y).mean()) == pytest.approx(metrics["integer_accuracy"])
    if variant == "per-step":
        assert metrics["hardware_model_agrees"] is True


def test_shared_negative_gamma_flips_weights_and_bias():
    """One neuron with gamma < 0: its weight bits flip (I -> -I), its bias is +round(mu), threshold floor(1/|s|);
    the float model (exact arithmetic) and the golden model give the same spikes."""
    from bsnn_hw.train.bntt import BNTTNet, to_network
    model = BNTTNet([3, 2, 2], 4, "shared", leak_shift=None).eval()
    with torch.no_grad():
        model.fcs[0].weight.copy_(torch.tensor([[0.5, -0.5, 0.5], [0.5, -0.5, 0.5]]))
        model.gammas[0].copy_(torch.tensor([0.3, -0.3]))
        model.mean0.copy_(torch.tensor([[0.6, 0.6], [-1.4, -1.4], [2.5, 2.5], [0.0, 0.0]]))
        model.var0.copy_(torch.tensor([1.0, 1.0]))
    net, _ = to_network(model)
    layer = net.layers[0]
    np.testing.assert_array_equal(layer.weights, [[True, False, True], [False, True, False]])
    s = 0.3 / np.sqrt(1.0 + 1e-4)
    assert list(layer.threshold) == [int(np.floor(1 / s))] * 2
    np.testing.assert_array_equal(layer.step_bias[:, 0], np.round(-np.array([0.6, -1.4, 2.5, 0.0])))
    np.testing.assert_array_equal(layer.step_bias[:, 1], np.round(np.array([0.6, -1.4, 2.5, 0.0])))
    spikes = torch.tensor([[[1, 0, 1], [1, 0, 1], [0, 1, 0], [1, 1, 1]], [[0, 1, 0]] * 4]).float()
    rec = []
    model(spikes, record=rec)
    g = golden.simulate(net, spikes.bool().numpy(), record=True)
    np.testing.assert_array_equal(rec[0].numpy().astype(bool), g.spikes[0])
    assert g.spikes[0][:, :, 0].any() and g.spikes[0][:, :, 1].any()      # both neurons fire somewhere


def test_per_step_tables_follow_the_formulas_and_refuse_what_does_not_fit():
    from bsnn_hw.train.bntt import BNTTNet, to_network
    model = BNTTNet([4, 3, 2], 2, "per-step", theta_int=64).eval()
    with torch.no_grad():
        model.gammas[0].copy_(torch.tensor([[0.5, -0.25, 1.0], [0.125, 0.0, 2.0]]))
        model.mean0.copy_(torch.tensor([[1.0, 0.5, -2.0], [0.0, 3.0, 1.0]]))
        model.var0.fill_(1.0 - 1e-4)                           # g = gamma exactly
    net, report = to_network(model)
    layer = net.layers[0]
    frac = layer.step_frac
    assert round(2 ** (frac + 1) * 64 * 2.0) > 2 ** 17 - 1 >= round(2 ** frac * 64 * 2.0)   # the largest F that fits
    g = model.gammas[0].detach().double().numpy()
    mu = model.mean0.double().numpy()
    np.testing.assert_array_equal(layer.step_scale, np.round(2 ** frac * 64 * g))
    np.testing.assert_array_equal(layer.step_bias, np.round(-(2 ** frac) * 64 * g * mu) + 2 ** (frac - 1))
    assert report["step_frac"] == [frac] and report["scale_entries_zero"] == [0]
    with torch.no_grad():
        model.gammas[0].fill_(1e4)                             # 64e4 > 2^17 even at F = 0
    with pytest.raises(ValueError, match="beyond the signed 18-bit range even at F = 0"):
        to_network(model)


def test_scale_bits_bound_the_exported_scale():
    """--bntt-scale-bits: F fills the narrower width; the network stays the exported arithmetic, spike for spike."""
    from bsnn_hw.train.bntt import to_network
    model = _hand_model("per-step")
    model.scale_max = 7                                       # Theta g reaches 39: 4 bits cannot hold it at F = 0
    with pytest.raises(ValueError, match="beyond the signed 4-bit range even at F = 0; lower --bntt-theta or raise "
                                         "--bntt-scale-bits"):
        to_network(model)
    for bits in (8, 12, 18):
        model = _hand_model("per-step")
        model.scale_max = (1 << (bits - 1)) - 1
        net, _ = to_network(model, seed=3)
        a = net.layers[0].step_scale
        assert np.abs(a).max() <= (1 << (bits - 1)) - 1 and contract.signed_width(a) <= bits
        assert np.abs(a).max() > (1 << (bits - 2)) - 1        # F is the largest that fits: the width is used
        spikes = (torch.rand(16, 6, 20, generator=torch.Generator().manual_seed(2)) < 0.4).float()
        model.hardware = True
        with torch.no_grad():
            logits = model(spikes)
        np.testing.assert_array_equal(logits.argmax(1).numpy(), golden.simulate(net, spikes.bool().numpy()).prediction)


# --- early exit -----------------------------------------------------------------------------------------------------

def test_exit_rule_on_hand_set_gammas():
    from bsnn_hw.train.bntt import BNTTNet, exit_step, smallest_within
    assert exit_step([0.9, 0.5, 0.09, 0.2], 0.1) == 2           # skip step 2 (0-based) and after
    assert exit_step([0.9, 0.5, 0.2], 0.1) == 3                 # never below: T
    assert exit_step([0.05, 0.5], 0.1) == 1                     # at least one step
    assert smallest_within([0.5, 0.9, 0.9975, 1.0]) == 3 and smallest_within([0.5, 0.9]) == 2
    model = BNTTNet([4, 2, 3, 2], 3, "per-step")
    with torch.no_grad():
        model.gammas[0].copy_(torch.tensor([[1.0, -1.0], [0.4, 0.2], [0.1, 0.0]]))
        model.gammas[1].copy_(torch.tensor([[0.5, 0.5, 0.5], [-0.3, 0.3, 0.3], [0.0, 0.1, -0.05]]))
    gm = model.gamma_mean()
    np.testing.assert_allclose(gm, [(1.0 + 0.5) / 2, (0.3 + 0.3) / 2, (0.05 + 0.05) / 2])
    assert exit_step(gm, 0.1) == 2
    shared = BNTTNet([4, 2, 2], 2, "shared")
    with torch.no_grad():
        shared.gammas[0].copy_(torch.tensor([2.0, -1.0]))
        shared.var0.copy_(torch.tensor([4.0, 1.0]))
        shared.step_var0.copy_(torch.tensor([[4.0, 1.0], [1.0, 0.0]]))
    e = 1e-4
    want = [(2 * np.sqrt((4 + e) / (4 + e)) + 1) / 2,
            (2 * np.sqrt((1 + e) / (4 + e)) + np.sqrt(e / (1 + e))) / 2]
    np.testing.assert_allclose(shared.gamma_mean(), want)


# --- checkpoints and refusals ---------------------------------------------------------------------------------------

def test_resume_equals_an_uninterrupted_run(tmp_path):
    from bsnn_hw.train import bntt
    from bsnn_hw.train.trainer import fit
    torch.set_num_threads(1)
    cfg = dict(dataset="digits", hidden=[16], timesteps=3, epochs=1, bntt_finetune=1, threads=1, device="cpu")
    whole = fit(bntt.config(**cfg), progress=False)

    class Stop(Exception):
        pass

    def stop(epoch, record):
        raise Stop
    ckpt = tmp_path / "r.ckpt"
    with pytest.raises(Stop):
        fit(bntt.config(**cfg), checkpoint=ckpt, progress=False, on_epoch_end=stop)
    resumed = fit(bntt.config(**cfg), checkpoint=ckpt, resume=True, progress=False)
    assert resumed.network == whole.network
    assert [h["finetune"] for h in resumed.history] == [False, True]


@pytest.mark.parametrize("flags, message", [
    (["--bntt-variant", "shared"], "--bntt-variant only apply to --method bntt"),
    (["--method", "bisnn", "--exit-threshold", "0.2"], "--exit-threshold only apply to --method bntt"),
    (["--method", "bntt", "--encoding", "latency"], "needs the rate code"),
    (["--method", "bntt", "--readout", "count"], "reads the class from the last layer's membrane"),
    (["--method", "bntt", "--scale", "neuron"], "--scale does not apply to --method bntt"),
    (["--method", "bntt", "--variant", "mid"], "trains all-binary layers"),
    (["--method", "bntt", "--arch", "4c3-p2-7"], "ends with 7 outputs but digits has 10 classes"),
    (["--method", "bntt", "--arch", "4c3-s2-10"], "pools with OR pooling only (p<n>), not the sum pooling"),
    (["--method", "bntt", "-M", "20"], "--membrane-bits does not apply"),
    (["--method", "bntt", "--bntt-variant", "shared", "--bntt-finetune", "2"], "--bntt-finetune is for per-step"),
    (["--method", "bntt", "--bntt-theta", "0"], "theta (the integer threshold) must be in 1.."),
    (["--method", "bntt", "--bntt-scale-bits", "19"], "scale bits must be in 2..18, not 19"),
    (["--bntt-scale-bits", "8"], "--bntt-scale-bits only apply to --method bntt"),
    (["--method", "bntt", "--exit-threshold", "-1"], "exit threshold must be a number >= 0"),
    (["--method", "bntt", "--fire-once"], "does not train fire-once neurons"),
])
def test_refusals(tmp_path, flags, message):
    out = tmp_path / "x.bsnn"
    r = CliRunner().invoke(main, ["train", "--epochs", "1", "--out", str(out), "-q", *flags])
    assert r.exit_code == 1 and message in r.output, (flags, r.output)
    assert len(r.output.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("variant", ["per-step", "shared"])
def test_accuracy_vs_steps_is_the_truncated_networks_accuracy(variant):
    """One run's per-step output membranes against each truncated network (T' = 1..T) run on its own."""
    from bsnn_hw.train.bntt import accuracy_vs_steps, to_network
    from bsnn_hw.train.model import integer_simulate
    from bsnn_hw.train.trainer import Encoder
    model = _hand_model(variant, sizes=(64, 12, 5), conv=CONV, input_shape=(8, 8, 1))
    net, _ = to_network(model, seed=3)
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 256, (300, 64), dtype=torch.uint8, generator=g)
    enc = Encoder("rate", 64, 6, "cpu")
    first = integer_simulate(net, enc(x, 3).bool())[0]
    y = torch.where(torch.rand(300, generator=g) < 0.6, first, torch.randint(0, 5, (300,), generator=g))
    curve = accuracy_vs_steps(net, enc, x, y, batch_size=128)
    spikes = enc(x, 3).bool()
    want = [int((integer_simulate(truncate(net, t), spikes[:, :t])[0] == y).sum()) / 300 for t in range(1, 7)]
    assert curve == pytest.approx(want, abs=1e-12)
    assert len(set(round(c, 6) for c in curve)) > 1      # the steps differ: the comparison can fail
