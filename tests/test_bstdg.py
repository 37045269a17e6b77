"""BSTDG (``--method bstdg``): spike-time gradients on IF / latency / fire-once / first-spike networks. The training
forward pass equals the contract, the exported artifact's golden predictions equal the trainer's integer
predictions, training moves, and the CLI refuses what BSTDG does not train. Every run here is tiny (seconds)."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import bsnn_hw
from bsnn_hw import contract, data, golden
from bsnn_hw.cli import main
from bsnn_hw.train import bstdg, integer_simulate, latency

TINY = dict(dataset="digits", hidden=[48], timesteps=16, epochs=3, batch_size=64, lr=5e-3,
            bstdg_backward="latent", bstdg_finetune=0, threads=1, device="cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bstdg") / "m.bsnn"
    return bstdg.fit(bstdg.config(**TINY), out=out, progress=False), out


def test_forward_is_the_contract():
    """The sparse running-sum forward pass gives golden's first-spike steps and predictions on a random network."""
    torch.manual_seed(3)
    model = bstdg.BSTDGNet([64, 40, 10], timesteps=12, threshold_init=0.4)
    x, _ = data.load_dataset("digits", "test")
    x = x[:100]
    rec = model.run(latency(torch.from_numpy(x), 12))
    pred, first = model.predict(rec)
    net = bstdg.to_network(model)
    g = golden.run(net, x)
    np.testing.assert_array_equal(pred.numpy(), g.prediction)
    for r, gf in zip(rec, g.first_step):
        np.testing.assert_array_equal(np.where(r["t"].numpy() >= 12, -1, r["t"].numpy()), gf)
    assert ((first.numpy() >= 12) == (g.first_step[-1] < 0).all(1)).all()


def test_targets_follow_bs4nn():
    t = torch.tensor([[3, 4, 9, 16], [16, 16, 16, 16], [5, 2, 2, 16]])
    y = torch.tensor([0, 2, 0])
    got = bstdg.targets(t, y, 16, gamma=1.0, deadline=None)
    # correct class at t_min (T-1 when nothing fires); others within gamma of t_min pushed to t_min + gamma; silent
    # neurons and later ones keep their time.
    assert got.tolist() == [[3, 4, 9, 16], [16, 16, 15, 16], [2, 3, 3, 16]]
    assert bstdg.targets(t, y, 16, gamma=1.0, deadline=1)[:, 0].tolist() == [1, 16, 1]


def test_lead_moves_the_correct_target_ahead_of_every_other_class():
    t = torch.tensor([[3, 4, 9, 16], [16, 16, 16, 16], [5, 2, 2, 16], [2, 2, 7, 16], [1, 1, 16, 16], [6, 16, 16, 16]])
    y = torch.tensor([0, 2, 0, 1, 0, 0])
    plain = bstdg.targets(t, y, 16, gamma=1.0, deadline=None)
    assert torch.equal(bstdg.targets(t, y, 16, gamma=1.0, deadline=None, lead=0.0), plain)
    got = bstdg.targets(t, y, 16, gamma=1.0, deadline=None, lead=2.0)
    # correct target = max(0, min(t_min, t_other - lead)); the other classes' targets are BS4NN's
    assert got[torch.arange(6), y].tolist() == [2, 14, 0, 0, 0, 6]
    others = torch.ones_like(t, dtype=torch.bool)
    others[torch.arange(6), y] = False
    assert torch.equal(got[others], plain[others])
    assert bstdg.targets(t, y, 16, gamma=1.0, deadline=1, lead=2.0)[:, 0].tolist() == [1, 16, 0, 3, 0, 1]


def test_pull_asks_sure_samples_for_an_earlier_correct_spike():
    """A sample is sure when its correct class fires and every other class fires >= margin steps later (or never):
    its correct target becomes t_c - 1 (not below 0); every other entry keeps the target it was given."""
    t = torch.tensor([[5., 8., 16., 16.], [5., 7., 16., 16.], [16., 3., 16., 16.], [0., 16., 16., 16.],
                      [2.5, 16., 16., 5.5], [9., 16., 4., 16.]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 0, 0, 2])
    base = bstdg.targets(t, y, 16, gamma=3.0, deadline=None, lead=2.0)
    got, sure = bstdg.pull_targets(t, y, base, 16, margin=3.0)
    assert sure.tolist() == [True, False, False, True, True, True]
    assert got[torch.arange(6), y].tolist() == [4.0, base[1, 0].item(), base[2, 0].item(), 0.0, 1.5, 3.0]
    others = torch.ones_like(t, dtype=torch.bool)
    others[torch.arange(6), y] = False
    assert torch.equal(got[others], base[others])


def test_pull_weights_the_sure_samples_errors():
    """With pull = 0 the relative targets give a sure sample no error at all; with pull > 0 its gradient (every layer,
    weights and threshold factors) is the pull times that of its one-step-earlier target, and a sample that is not
    sure keeps its own gradient."""
    torch.manual_seed(5)
    model = bstdg.BSTDGNet([64, 30, 10], timesteps=12, threshold_init=0.3)
    x, y = data.load_dataset("digits", "train")
    rec = model.run_times(bstdg.input_times(torch.from_numpy(x[:300]), 12))
    t = rec[-1]["t"].double()
    labels = torch.from_numpy(y[:300])
    # relabel each sample as the class that fired first, so that some are sure and some are not
    first = torch.argmin(rec[-1]["t"], 1)
    _, sure = bstdg.pull_targets(t, first, t, 12, margin=2.0)
    assert bool(sure.any()) and bool((~sure).any())
    only_sure = [{k: v[sure] for k, v in r.items()} for r in rec]
    _, g0, f0, _ = bstdg.gradients(model, only_sure, first[sure], 2.0, None, lead=0.0, pull=0.0)
    assert all(bool((g == 0).all()) for g in g0) and bool((f0 == 0).all())
    _, g_half, f_half, _ = bstdg.gradients(model, only_sure, first[sure], 2.0, None, lead=0.0, pull=0.5)
    _, g_quarter, f_quarter, _ = bstdg.gradients(model, only_sure, first[sure], 2.0, None, lead=0.0, pull=0.25)
    assert all(bool((g != 0).any()) for g in g_half)
    for a, b in zip(g_half, g_quarter):
        torch.testing.assert_close(a, 2 * b)
    torch.testing.assert_close(f_half, 2 * f_quarter)
    # the others: their gradient with any pull is the one without (their targets and weights are untouched)
    rest = [{k: v[~sure] for k, v in r.items()} for r in rec]
    _, g_rest0, _, _ = bstdg.gradients(model, rest, labels[~sure], 2.0, None, pull=0.0)
    _, g_rest, _, _ = bstdg.gradients(model, rest, labels[~sure], 2.0, None, pull=0.5)
    for a, b in zip(g_rest0, g_rest):
        torch.testing.assert_close(a, b)


def test_pull_acts_in_the_finetune_only(monkeypatch):
    pulls = []
    real = bstdg.gradients

    def spy(*a, **k):
        pulls.append(a[10] if len(a) > 10 else k.get("pull", 0.0))
        return real(*a, **k)
    monkeypatch.setattr(bstdg, "gradients", spy)
    bstdg.fit(bstdg.config(**dict(TINY, epochs=1, bstdg_finetune=1, bstdg_pull=0.3)), progress=False)
    n = len(pulls) // 2
    assert pulls == [0.0] * n + [0.3] * n


def test_readout_loss_is_the_per_step_logistic_loss():
    """mean over samples, steps and output neurons of log(1 + exp(-z)) for the correct class and log(1 + exp(z)) for
    the others, z = (V_c(t) - theta_c) / scale, V_c(t) the sum of the weights of the inputs spiked by step t."""
    t_in = torch.tensor([[0, 2, 3], [1, 1, 0]])                     # T = 3: input 2 of sample 0 never spikes
    w = torch.tensor([[1., -1., 1.], [-1., 1., 1.]])
    theta = torch.tensor([0.5, 1.0])
    y = torch.tensor([0, 1])
    v = np.array([[[1, -1], [1, -1], [0, 0]],                        # sample 0: input 0 at step 0, input 1 at step 2
                  [[1, 1], [1, 1], [1, 1]]], dtype=float)            # sample 1: input 2 at 0, inputs 0 and 1 at 1
    v[1, 1:] = [1 + 1 - 1, 1 - 1 + 1]
    z = (v - np.array([0.5, 1.0])) / 2.0
    target = np.zeros_like(z)
    target[0, :, 0] = 1
    target[1, :, 1] = 1
    want = np.mean(np.where(target == 1, np.log1p(np.exp(-z)), np.log1p(np.exp(z))))
    got = bstdg.readout_loss(t_in, w, theta, y, 3, 2.0)
    assert abs(float(got) - want) < 1e-6


def test_readout_fit_changes_the_output_layer_only_and_lowers_its_loss(trained):
    """The anytime readout fit: the hidden layer (weights, thresholds) untouched, the output layer's signs and integer
    thresholds refitted, its loss on the training images lower than before; the thresholds it reports are the ones the
    integer network uses; bad arguments are refused."""
    import copy
    result, _ = trained
    model = copy.deepcopy(result.model)
    x, y = data.load_dataset("digits", "train")
    x, y = torch.from_numpy(x), torch.from_numpy(y).long()
    hidden_w, hidden_th = model.weights[0].detach().clone(), model.integer_thresholds()[0].clone()
    out_w, out_th = bstdg.signs(model.weights[1]).clone(), model.integer_thresholds()[1].clone()
    got = bstdg.fit_readout(model, x, y, epochs=3, scale=4.0, lr=5e-3, seed=1)
    assert torch.equal(model.weights[0].detach(), hidden_w) and torch.equal(model.integer_thresholds()[0], hidden_th)
    assert not torch.equal(bstdg.signs(model.weights[1]), out_w)
    assert not torch.equal(model.integer_thresholds()[1], out_th)
    assert got["loss_after"] < got["loss_before"]
    t_in = bstdg.output_inputs(model, x)
    again = bstdg.readout_loss(t_in, bstdg.signs(model.weights[1]), model.integer_thresholds()[1].float(), y,
                               model.timesteps, 4.0)
    assert abs(float(again) - got["loss_after"]) < 1e-5
    hi = bsnn_hw.contract.membrane_range(model.membrane_bits)[1]
    assert int(model.integer_thresholds()[1].min()) >= 1 and int(model.integer_thresholds()[1].max()) <= hi
    for kw, message in [(dict(epochs=0), "epochs must be"), (dict(scale=0.0), "scale must be a positive number"),
                        (dict(lr=-1.0), "lr must be a positive learning rate")]:
        with pytest.raises(ValueError, match=message):
            bstdg.fit_readout(model, x, y, **{**dict(epochs=1, scale=4.0, lr=1e-3), **kw})


def test_readout_fit_goes_into_the_export_before_the_calibration(tmp_path):
    """--bstdg-readout-epochs: after the last epoch, before the calibration, into the export and not the checkpoint,
    so from_checkpoint refits the same way; the export is the integer network the trainer scored (golden agrees)."""
    settings = dict(TINY, hidden=[16], timesteps=8, epochs=1, bstdg_finetune=1, bstdg_readout_epochs=2)
    res = bstdg.fit(bstdg.config(**settings), out=tmp_path / "r.bsnn", progress=False)
    assert res.metrics["readout"]["epochs"] == 2 and res.metrics["calibration"] is not None
    assert res.metrics["readout"]["loss_after"] < res.metrics["readout"]["loss_before"]
    again = bstdg.from_checkpoint(str(tmp_path / "r.bsnn") + ".ckpt")
    assert again.network == res.network and again.metrics["readout"] == res.metrics["readout"]
    plain = bstdg.from_checkpoint(str(tmp_path / "r.bsnn") + ".ckpt", readout_epochs=0)
    assert plain.metrics["readout"] is None and plain.network.layers[1] != res.network.layers[1]
    assert plain.network.layers[0].weights.tolist() == res.network.layers[0].weights.tolist()
    x, y = data.load_dataset("digits", "test")
    g = golden.run(bsnn_hw.artifact.load(tmp_path / "r.bsnn"), x)
    assert abs(float((g.prediction == y).mean()) - res.metrics["integer_accuracy"]) < 1e-12


def test_local_search_moves_the_last_hidden_layer_and_never_raises_its_loss(trained):
    """The local search: only the last hidden layer's signs and thresholds change (the output layer and the layer
    before it are untouched), its bookkeeping equals a fresh forward pass (the loss it reports is readout_loss of the
    network it leaves, recomputed from the images), the loss does not rise, the latent weights' signs are the flips it
    counts at most, and the thresholds stay legal; bad arguments are refused."""
    import copy
    result, _ = trained
    x, y = data.load_dataset("digits", "train")
    x, y = torch.from_numpy(x[:600]), torch.from_numpy(y[:600]).long()
    for sizes in ([64, 12, 10], [64, 10, 8, 10]):
        model = bstdg.BSTDGNet(sizes, 16, threshold_init=0.3) if len(sizes) == 4 else copy.deepcopy(result.model)
        if len(sizes) == 4:
            torch.manual_seed(3)
            for w in model.weights:
                w.data.uniform_(-1, 1)
        last = len(model.weights) - 1
        before_w = [bstdg.signs(w).clone() for w in model.weights]
        before_th = [t.clone() for t in model.integer_thresholds()]
        got = bstdg.search_hidden(model, x, y, sweeps=2, scale=2.0, seed=5)
        assert got["loss_after"] <= got["loss_before"] and got["samples"] == 600 and got["sweeps"] == 2
        t_in = bstdg.output_inputs(model, x)
        fresh = bstdg.readout_loss(t_in, bstdg.signs(model.weights[last]), model.integer_thresholds()[last].float(), y,
                                   16, 2.0)
        assert abs(float(fresh) - got["loss_after"]) < 1e-5
        for li in range(last + 1):
            if li != last - 1:
                assert torch.equal(bstdg.signs(model.weights[li]), before_w[li])
                assert torch.equal(model.integer_thresholds()[li], before_th[li])
        flipped = int((bstdg.signs(model.weights[last - 1]) != before_w[last - 1]).sum())
        assert 0 < flipped <= got["flips"]
        assert got["threshold_moves"] > 0 and not torch.equal(model.integer_thresholds()[last - 1], before_th[last - 1])
        hi = bsnn_hw.contract.membrane_range(model.membrane_bits)[1]
        th = model.integer_thresholds()[last - 1]
        assert 1 <= int(th.min()) <= int(th.max()) <= hi
    for kw, message in [(dict(sweeps=0), "sweeps must be"), (dict(scale=0.0), "scale must be a positive number")]:
        with pytest.raises(ValueError, match=message):
            bstdg.search_hidden(model, x, y, **{**dict(sweeps=1, scale=4.0), **kw})
    with pytest.raises(ValueError, match="this network has no hidden layer"):
        bstdg.search_hidden(bstdg.BSTDGNet([64, 10], 16), x, y, sweeps=1, scale=4.0)


def test_local_search_goes_into_the_export_between_readout_fit_and_calibration(tmp_path):
    """--bstdg-search-sweeps: after the readout fit, before the calibration, on a seeded draw of
    --bstdg-search-samples training samples; into the export, not the checkpoint (from_checkpoint repeats it); the
    export is the integer network the trainer scored (golden agrees)."""
    settings = dict(TINY, hidden=[16], timesteps=8, epochs=1, bstdg_finetune=1, bstdg_readout_epochs=1,
                    bstdg_search_sweeps=1, bstdg_search_samples=500)
    res = bstdg.fit(bstdg.config(**settings), out=tmp_path / "s.bsnn", progress=False)
    s = res.metrics["search"]
    assert s["samples"] == 500 and s["sweeps"] == 1 and s["loss_after"] <= s["loss_before"]
    assert res.metrics["calibration"] is not None
    again = bstdg.from_checkpoint(str(tmp_path / "s.bsnn") + ".ckpt")
    assert again.network == res.network and again.metrics["search"] == s
    plain = bstdg.from_checkpoint(str(tmp_path / "s.bsnn") + ".ckpt", search_sweeps=0)
    assert plain.metrics["search"] is None and plain.network.layers[0] != res.network.layers[0]
    x, y = data.load_dataset("digits", "test")
    g = golden.run(bsnn_hw.artifact.load(tmp_path / "s.bsnn"), x)
    assert abs(float((g.prediction == y).mean()) - res.metrics["integer_accuracy"]) < 1e-12


def test_scan_outputs_is_first_spikes_and_readout_per_shift():
    """calibrate's one-pass scan over output shifts gives, for every shift u, the readout of first_spikes(v, theta + u)
    (ties to the lowest index, the fallback argmax of the final membrane), on random membranes with ties and silence."""
    g = torch.Generator().manual_seed(4)
    v = torch.randint(-6, 7, (300, 7, 5), generator=g).cumsum(1).float()
    theta = torch.randint(1, 9, (5,), generator=g)
    labels = torch.randint(0, 5, (300,), generator=g)
    mask = torch.rand(300, generator=g) < 0.5
    shifts = list(range(-12, 30))
    correct, hist = bstdg._scan_outputs(v, labels, theta, shifts, 7, mask)
    for k, u in enumerate(shifts):
        pred, first = bstdg.readout(bstdg.first_spikes(v, theta + u), v[:, -1], 7)
        assert int(correct[k]) == int((pred == labels).sum())
        assert torch.equal(hist[k], torch.bincount(first[mask], minlength=8))
    assert int(hist[0, 0]) > 0 and int(hist[-1, 7]) > 0          # shifts that fire at once and that stay silent


def test_crossing_times_interpolate_within_the_firing_step():
    """t_j - 1 + (theta - V[t_j - 1]) / (V[t_j] - V[t_j - 1]), V[-1] = 0; a silent neuron: T."""
    v = torch.tensor([[[0., 3., 0., 9.], [4., 5., 0., 9.], [10., 9., 0., 9.], [12., 13., 0., 9.]]])   # (1, T=4, 4)
    r = {"t": torch.tensor([[2, 0, 4, 0]]), "v": v}
    th = torch.tensor([8, 2, 8, 8])
    got = bstdg.crossing_times(r, th, 4)
    # 1 + (8 - 4) / (10 - 4); -1 + (2 - 0) / 3; silent; -1 + 8 / 9
    torch.testing.assert_close(got, torch.tensor([[1 + 4 / 6, -1 + 2 / 3, 4.0, -1 + 8 / 9]], dtype=torch.float64))
    # on a random network: every firing neuron's crossing lies in [t - 1, t), so the order of steps is kept
    torch.manual_seed(2)
    model = bstdg.BSTDGNet([64, 30, 10], timesteps=10, threshold_init=0.3)
    x, y = data.load_dataset("digits", "train")
    rec = model.run_times(bstdg.input_times(torch.from_numpy(x[:200]), 10))
    t = rec[-1]["t"]
    tc = bstdg.crossing_times(rec[-1], model.integer_thresholds()[-1], 10)
    fired = t < 10
    assert bool(fired.any()) and bool((~fired).any())
    assert bool(((tc >= t - 1) & (tc < t))[fired].all()) and bool((tc[~fired] == 10).all())
    # the error uses them: with "interpolated" the output weights' gradient differs from the step timing's
    labels = torch.from_numpy(y[:200])
    _, g_step, _, _ = bstdg.gradients(model, rec, labels, 1.0, None)
    _, g_int, _, _ = bstdg.gradients(model, rec, labels, 1.0, None, timing="interpolated")
    assert not torch.allclose(g_step[1], g_int[1])


def test_revive_pushes_quiet_silent_hidden_neurons():
    """The revival term: the running firing fractions (first batch sets them, then r <- 0.99 r + 0.01 now); with
    revive > 0 a hidden neuron below min_rate gets -revive on each sample where it is silent, through every input
    that spiked - and nothing changes for a neuron that fired or one that is not quiet; the output layer never."""
    torch.manual_seed(4)
    model = bstdg.BSTDGNet([64, 30, 10], timesteps=10, threshold_init=0.8)
    x, y = data.load_dataset("digits", "train")
    rec = model.run_times(bstdg.input_times(torch.from_numpy(x[:50]), 10))
    fired = (rec[0]["t"] < 10).float()
    assert bool((model.firing_rate(0) == -1).all())
    model.track_rates(rec)
    assert torch.equal(model.firing_rate(0), fired.mean(0))
    model.track_rates(rec)
    torch.testing.assert_close(model.firing_rate(0), fired.mean(0))
    quiet = torch.zeros(30, dtype=torch.bool)
    quiet[::3] = True
    model.firing_rate(0).copy_(torch.where(quiet, 0.01, 0.5))
    labels = torch.from_numpy(y[:50])
    _, base, gf_base, _ = bstdg.gradients(model, rec, labels, 1.0, None, revive=0.0)
    _, pushed, gf, _ = bstdg.gradients(model, rec, labels, 1.0, None, revive=0.3, min_rate=0.05)
    silent = (1 - fired) * quiet.float()
    assert silent.sum() > 0 and (fired * quiet.float()).sum() > 0          # both cases occur
    expect = -0.3 * silent.t() @ (rec[0]["t_in"] < 10).float() / 50
    torch.testing.assert_close(pushed[0] - base[0], expect)
    assert bool((pushed[0] - base[0])[~quiet].eq(0).all()) and bool((expect[quiet] < 0).any())
    assert torch.equal(pushed[1], base[1]) and torch.equal(gf, gf_base)
    # a checkpoint written before the buffers existed still loads (they start afresh)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("rate")}
    fresh = bstdg.BSTDGNet([64, 30, 10], timesteps=10, threshold_init=0.8)
    fresh.load_state_dict(state)
    assert bool((fresh.firing_rate(0) == -1).all()) and torch.equal(fresh.weights[0], model.weights[0])


def test_training_moves_and_exports_exactly(trained):
    result, out = trained
    h = result.history
    assert h[-1]["loss"] < h[0]["loss"] and h[-1]["train_accuracy"] > 0.3
    m = result.metrics
    assert m["integer_accuracy"] > 0.3 and m["gap_pp"] == 0 and m["method"] == "bstdg"
    for key in ("fallback_rate", "median_decision_step", "fallback_count", "hidden_spikes_per_sample"):
        assert key in m
    net = bsnn_hw.load(out)
    assert net.encoding == "latency" and net.readout == "first" and net.timesteps == 16
    assert all(layer.leak_shift is None and layer.fire_once for layer in net.layers)
    assert net.metadata["metrics"]["integer_accuracy"] == m["integer_accuracy"]
    # The artifact, loaded from disk and run by the golden model, predicts what the trainer's integer evaluation does.
    x, y = data.load_dataset("digits", "test")
    g = golden.run(net, x)
    ti, _, _ = integer_simulate(net, latency(torch.from_numpy(x), 16).bool())
    np.testing.assert_array_equal(g.prediction, ti.numpy())
    assert float((g.prediction == y).mean()) == pytest.approx(m["integer_accuracy"])
    first = np.where((g.first_step[-1] < 0).all(1), 16, np.where(g.first_step[-1] < 0, 16, g.first_step[-1]).min(1))
    assert m["fallback_rate"] == pytest.approx(float((first >= 16).mean()))
    assert m["median_decision_step"] == pytest.approx(float(np.median(first)))
    # Ties of the first output step, recounted from golden's first-spike steps.
    t_out = np.where(g.first_step[-1] < 0, 16, g.first_step[-1])
    at_first = t_out == first[:, None]
    tied = (first < 16) & (at_first.sum(1) > 1)
    assert m["tie_count"] == int(tied.sum()) and m["tie_rate"] == pytest.approx(float(tied.mean()))
    right = g.prediction == y
    holds = tied & at_first[np.arange(len(y)), y]
    assert m["tie_oracle_accuracy"] == pytest.approx(float((right | holds).mean()))
    if tied.any():
        assert m["tie_accuracy"] == pytest.approx(float(right[tied].mean()))
        # the readout took the lowest index among the tied neurons
        np.testing.assert_array_equal(g.prediction[tied], at_first[tied].argmax(1))


def test_per_neuron_thresholds_train_and_export_exactly(trained, tmp_path):
    """--scale neuron: every neuron learns its own threshold factor. At the start the per-neuron gradients sum to the
    per-layer one; trained (here from the per-layer checkpoint, --init: the neuron factors start at 1), the thresholds
    differ between neurons, the artifact holds them, and golden on it predicts what the trainer's integer evaluation
    does."""
    torch.manual_seed(5)
    layer = bstdg.BSTDGNet([64, 30, 10], timesteps=10, threshold_init=0.8)
    neuron = bstdg.BSTDGNet([64, 30, 10], timesteps=10, threshold_init=0.8, per_neuron=True)
    neuron.load_state_dict(layer.state_dict(), strict=False)
    x, y = data.load_dataset("digits", "train")
    t_in = bstdg.input_times(torch.from_numpy(x[:80]), 10)
    labels = torch.from_numpy(y[:80])
    _, gw, gf, gn = bstdg.gradients(layer, layer.run_times(t_in), labels, 1.0, None)
    _, gw2, gf2, gn2 = bstdg.gradients(neuron, neuron.run_times(t_in), labels, 1.0, None)
    assert gn == [] and [g.shape for g in gn2] == [(30,), (10,)]
    torch.testing.assert_close(gf2, gf)
    torch.testing.assert_close(torch.stack([g.sum() for g in gn2]), gf)
    for a, b in zip(gw, gw2):
        assert torch.equal(a, b)

    _, out = trained
    res = bstdg.fit(bstdg.config(**dict(TINY, epochs=2, scale="neuron", bstdg_threshold_lr=0.05,
                                        init_from=str(out) + ".ckpt")),
                    out=tmp_path / "n.bsnn", progress=False)
    net = bsnn_hw.load(tmp_path / "n.bsnn")
    assert all(lo < hi for lo, _, hi in res.metrics["threshold_real"])                  # every layer's factors moved
    assert len(set(net.layers[0].neuron_threshold.tolist())) > 1                       # and the hidden integers differ
    assert res.metrics["thresholds"][0] == [int(net.layers[0].neuron_threshold.min()),
                                            int(np.median(net.layers[0].neuron_threshold)),
                                            int(net.layers[0].neuron_threshold.max())]
    x, _ = data.load_dataset("digits", "test")
    ti, _, _ = integer_simulate(net, latency(torch.from_numpy(x), 16).bool())
    np.testing.assert_array_equal(golden.run(net, x).prediction, ti.numpy())
    assert res.metrics["gap_pp"] == 0


def _golden_correct(model, x, y):
    return int((golden.run(bstdg.to_network(model), x).prediction == y).sum())


def test_calibration_is_counted_by_golden_and_is_a_local_optimum(trained):
    """calibrate's counts are the exact integer network's: from thresholds set off on purpose (hidden +3, output +2),
    golden on the training split gives correct_before and correct_after, and after >= before; the hidden offset is
    the best of its candidates as golden counts them (the smallest |d| among equals); no output threshold moved by
    one step scores more; and calibrating the fit's own model again from offsets 0 gives the fit's network."""
    import copy
    result, _ = trained
    x, y = data.load_dataset("digits", "train")
    again = copy.deepcopy(result.model)
    for off in again.threshold_offsets:
        off.zero_()
    assert bstdg.calibrate(again, torch.from_numpy(x), torch.from_numpy(y)) == result.metrics["calibration"]
    assert bstdg.to_network(again) == result.network

    model = copy.deepcopy(again)
    model.threshold_offsets[0].fill_(3)
    model.threshold_offsets[1].fill_(2)
    stage = copy.deepcopy(model)                 # the output thresholds as the hidden stage scores its candidates
    before = _golden_correct(model, x, y)
    cal = bstdg.calibrate(model, torch.from_numpy(x), torch.from_numpy(y))
    assert cal["samples"] == len(y) and cal["correct_before"] == before
    assert cal["correct_after"] == _golden_correct(model, x, y) > before
    hidden, output = cal["offsets"]
    assert isinstance(hidden, int) and len(output) == 10
    assert model.threshold_offsets[0].tolist() == [hidden] * 48
    counts = {}
    for d in {*bstdg.HIDDEN_OFFSETS, hidden - 3}:
        stage.threshold_offsets[0].fill_(3 + d)
        if int(stage.floored_thresholds()[0].min()) >= 1:
            counts[d] = _golden_correct(stage, x, y)
    chosen = hidden - 3
    assert counts[chosen] == max(counts.values()) and len(counts) > 5 and chosen != 0
    assert all(abs(d) >= abs(chosen) for d, c in counts.items() if c == counts[chosen])
    for j in range(10):                          # the output stage ends where no single step of one threshold helps
        for d in (-1, 1):
            trial = copy.deepcopy(model)
            trial.threshold_offsets[1][j] += d
            if int(trial.floored_thresholds()[1][j]) >= 1:
                assert _golden_correct(trial, x, y) <= cal["correct_after"]


def test_calibration_goes_into_the_export_not_the_checkpoint(tmp_path):
    """The epochs (the fine-tune's too) train on the thresholds as trained, and the checkpoint keeps those; the
    calibration after the last epoch goes into the export only, so from_checkpoint, calibrating the same way from the
    same state, exports the fit's network."""
    from bsnn_hw.train.trainer import load_checkpoint
    settings = dict(TINY, hidden=[16], timesteps=8, epochs=1, bstdg_finetune=1)
    res = bstdg.fit(bstdg.config(**settings), out=tmp_path / "f.bsnn", progress=False)
    state = load_checkpoint(str(tmp_path / "f.bsnn") + ".ckpt")
    trained = bstdg.BSTDGNet([64, 16, 10], 8, threshold_init=0.5)
    trained.load_state_dict(state["model"])
    assert not any(int(o.abs().sum()) for o in trained.threshold_offsets)
    assert trained.threshold_summary() == res.history[-1]["thresholds"]
    assert any(int(o.abs().sum()) for o in res.model.threshold_offsets)      # the export's calibration moved some
    assert bstdg.to_network(trained) != res.network
    again = bstdg.from_checkpoint(str(tmp_path / "f.bsnn") + ".ckpt", out=tmp_path / "g.bsnn")
    assert again.network == res.network and again.metrics["calibration"] == res.metrics["calibration"]
    plain = bstdg.from_checkpoint(str(tmp_path / "f.bsnn") + ".ckpt", calibrate_thresholds=False)
    assert plain.network == bstdg.to_network(trained) and plain.metrics["calibration"] is None
    assert plain.network.metadata["config"]["bstdg_calibrate"] is False
    with pytest.raises(TypeError, match="calibrate_thresholds"):
        bstdg.from_checkpoint(str(tmp_path / "f.bsnn") + ".ckpt", calibrate_thresholds="no")


def test_calibration_flag_checkpoints_and_bad_inputs(trained, tmp_path):
    """--no-bstdg-calibrate leaves the trained thresholds (no offsets, no calibration record); a checkpoint written
    before the offsets existed loads with offsets 0; calibrate refuses what it cannot score."""
    res = bstdg.fit(bstdg.config(**dict(TINY, hidden=[16], timesteps=8, epochs=1, bstdg_calibrate=False)),
                    out=tmp_path / "n.bsnn", progress=False)
    assert res.metrics["calibration"] is None
    assert all(int(o.abs().sum()) == 0 for o in res.model.threshold_offsets)
    result, _ = trained
    state = {k: v for k, v in result.model.state_dict().items() if not k.startswith("threshold_offset")}
    old = bstdg.BSTDGNet([64, 48, 10], 16, threshold_init=0.5)
    old.load_state_dict(state)
    assert all(int(o.abs().sum()) == 0 for o in old.threshold_offsets)
    x, y = data.load_dataset("digits", "train")
    xt, yt = torch.from_numpy(x[:50]), torch.from_numpy(y[:50])
    with pytest.raises(TypeError, match="uint8"):
        bstdg.calibrate(old, xt.float(), yt)
    with pytest.raises(ValueError, match=r"shape \(batch, 64\)"):
        bstdg.calibrate(old, xt[:, :32], yt)
    with pytest.raises(ValueError, match="classes 0..9, found 10"):
        bstdg.calibrate(old, xt, torch.full((50,), 10))
    with pytest.raises(ValueError, match="one class per sample"):
        bstdg.calibrate(old, xt, yt[:49])
    with pytest.raises(ValueError, match="at least one sample"):
        bstdg.calibrate(old, xt[:0], yt[:0])


def test_median_step_is_numpys():
    """calibrate's median from a histogram of decision steps is np.median's (decision_metrics'), odd and even counts,
    one value, ties in the middle."""
    rng = np.random.default_rng(4)
    for first in [rng.integers(0, 9, n) for n in (1, 2, 3, 10, 11, 500)] + [np.array([3, 3, 5, 5]), np.array([8])]:
        hist = torch.bincount(torch.from_numpy(first), minlength=9)
        assert bstdg._median_step(hist) == np.median(first) == bstdg.decision_metrics(first, 8)["median_decision_step"]


@pytest.mark.parametrize("budget", [0, 3, 6, 15])
def test_calibration_within_a_decision_budget(trained, budget):
    """With max_median_step L, the calibrated network's median decision step on the training split is <= L and its
    count is the exact network's, as golden runs it; a budget below the unconstrained calibration's median scores
    less than it, one at or above it gives the same thresholds."""
    import copy
    result, _ = trained
    x, y = data.load_dataset("digits", "train")
    model = copy.deepcopy(result.model)
    for off in model.threshold_offsets:
        off.zero_()
    free = result.metrics["calibration"]
    cal = bstdg.calibrate(model, torch.from_numpy(x), torch.from_numpy(y), max_median_step=budget)
    g = golden.run(bstdg.to_network(model), x)
    first = np.where((g.first_step[-1] < 0).all(1), 16, np.where(g.first_step[-1] < 0, 99, g.first_step[-1]).min(1))
    assert cal["median_step_after"] == np.median(first) <= budget
    assert cal["correct_after"] == int((g.prediction == y).sum())
    assert cal["max_median_step"] == budget and cal["median_step_before"] == free["median_step_before"]
    assert cal["correct_before"] == free["correct_before"]
    if budget < free["median_step_after"]:
        assert cal["correct_after"] < free["correct_after"]
    else:
        assert cal == {**free, "max_median_step": budget} and bstdg.to_network(model) == result.network
    assert free["median_step_after"] > 6             # the budgets below bind


@pytest.mark.parametrize("budget, dim", [(3, 1), (6, 1), (8, 2), (10, 2)])
def test_decision_budget_on_held_out_images(trained, budget, dim):
    """With ``budget_x`` (the held-out images of --val-samples) the budget and the medians count there, as golden runs
    the calibrated network on them, and the correct predictions still count on x alone. ``dim``: the held-out images
    divided by it (dimmer pixels spike later), so that their median differs from the training images'."""
    import copy
    result, _ = trained
    x, y = data.load_dataset("digits", "train")
    xa, ya, xb = x[:-300], y[:-300], x[-300:] // dim
    model = copy.deepcopy(result.model)
    for off in model.threshold_offsets:
        off.zero_()
    cal = bstdg.calibrate(model, torch.from_numpy(xa), torch.from_numpy(ya), max_median_step=budget,
                          budget_x=torch.from_numpy(xb))
    net = bstdg.to_network(model)

    def first_steps(images):
        g = golden.run(net, images)
        return g, np.where((g.first_step[-1] < 0).all(1), 16,
                           np.where(g.first_step[-1] < 0, 99, g.first_step[-1]).min(1))
    g_b, first_b = first_steps(xb)
    assert cal["median_step_after"] == np.median(first_b) <= budget
    assert (cal["median_samples"], cal["median_on"], cal["samples"]) == (300, "held-out", len(ya))
    g_a, _ = first_steps(xa)
    assert cal["correct_after"] == int((g_a.prediction == ya).sum())
    with pytest.raises(ValueError, match=r"budget_x needs at least one sample"):
        bstdg.calibrate(copy.deepcopy(model), torch.from_numpy(xa), torch.from_numpy(ya), max_median_step=budget,
                        budget_x=torch.from_numpy(xb[:0]))


def test_decision_budget_refusals(trained, tmp_path):
    """A budget outside 0..T-1, of the wrong type, without the calibration, or that no thresholds reach is refused in
    one line; --bstdg-decision-step reaches the calibration from the CLI and from_checkpoint."""
    import copy
    result, _ = trained
    model = copy.deepcopy(result.model)
    x, y = data.load_dataset("digits", "train")
    xt, yt = torch.from_numpy(x[:64]), torch.from_numpy(y[:64])
    with pytest.raises(ValueError, match=r"max_median_step must be in 0..15 \(a decision step of T = 16\), not 16"):
        bstdg.calibrate(model, xt, yt, max_median_step=16)
    with pytest.raises(ValueError, match=r"not -1"):
        bstdg.calibrate(model, xt, yt, max_median_step=-1)
    with pytest.raises(TypeError, match="max_median_step"):
        bstdg.calibrate(model, xt, yt, max_median_step=2.5)
    # blank images: no input spike, no output spike, every sample decides at T whatever the thresholds
    with pytest.raises(ValueError, match=r"no thresholds give a median decision step <= 15 on these 64 samples"):
        bstdg.calibrate(model, torch.zeros_like(xt), yt, max_median_step=15)
    with pytest.raises(ValueError, match=r"decision step must be a step in 0..T-1 = 7, not 8"):
        bstdg.config(**dict(TINY, timesteps=8, bstdg_decision_step=8)).validate()
    with pytest.raises(ValueError, match=r"it needs --bstdg-calibrate"):
        bstdg.config(**dict(TINY, bstdg_calibrate=False, bstdg_decision_step=3)).validate()
    out = tmp_path / "b.bsnn"
    r = run_cli("--method", "bstdg", "--hidden", "16", "-T", "8", "--epochs", "1", "--threads", "1",
                "--bstdg-decision-step", "2", "--out", str(out), "--json", "-q")
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["config"]["bstdg_decision_step"] == 2 and m["calibration"]["max_median_step"] == 2
    assert m["calibration"]["median_step_after"] <= 2
    r = run_cli("--hidden", "16", "-T", "8", "--epochs", "1", "--bstdg-decision-step", "2", "--out", str(out))
    assert r.exit_code != 0 and "--bstdg-decision-step only apply to --method bstdg" in r.output
    again = bstdg.from_checkpoint(str(out) + ".ckpt", decision_step=None)
    assert again.metrics["calibration"]["max_median_step"] is None
    assert again.network.metadata["config"]["bstdg_decision_step"] is None
    kept = bstdg.from_checkpoint(str(out) + ".ckpt")
    assert kept.network == bsnn_hw.load(out)
    plain = bstdg.from_checkpoint(str(out) + ".ckpt", calibrate_thresholds=False)
    assert plain.metrics["calibration"] is None and plain.network.metadata["config"]["bstdg_decision_step"] is None
    with pytest.raises(TypeError, match="decision_step"):
        bstdg.from_checkpoint(str(out) + ".ckpt", decision_step="2")


def test_checkpoints_that_do_not_fit_are_refused_in_one_line(tmp_path):
    """A checkpoint whose weights do not fit its own config (from_checkpoint) or whose optimizer state is broken
    (resume) is refused with one line naming the file, not torch's multi-line RuntimeError / a bare KeyError."""
    from bsnn_hw.train.trainer import load_checkpoint
    settings = dict(TINY, hidden=[8], timesteps=8, epochs=1)
    bstdg.fit(bstdg.config(**settings), out=tmp_path / "a.bsnn", progress=False)
    state = load_checkpoint(str(tmp_path / "a.bsnn.ckpt"))
    state["config"]["hidden"] = [16]
    torch.save(state, tmp_path / "b.ckpt")
    with pytest.raises(ValueError, match=r"b.ckpt: cannot export: its BSTDGNet state does not fit this run's "
                                         r"\(Error\(s\) in loading state_dict for BSTDGNet: size mismatch") as err:
        bstdg.from_checkpoint(tmp_path / "b.ckpt")
    assert "\n" not in str(err.value)
    state = load_checkpoint(str(tmp_path / "a.bsnn.ckpt"))
    state["optimizer"] = {}
    torch.save(state, tmp_path / "a.bsnn.ckpt")
    with pytest.raises(ValueError, match=r"a.bsnn.ckpt: cannot resume: its Adam state does not fit this run's "
                                         r"\(missing 'param_groups'\)"):
        bstdg.fit(bstdg.config(**settings), out=tmp_path / "a.bsnn", resume=True, progress=False)


def run_cli(*args):
    return CliRunner().invoke(main, ["train", *args])


def test_cli_method_bstdg(tmp_path):
    out = tmp_path / "c.bsnn"
    r = run_cli("--method", "bstdg", "--hidden", "16", "-T", "8", "--epochs", "1", "--threads", "1",
                "--bstdg-lead", "1", "--out", str(out), "--json", "-q")
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["method"] == "bstdg" and m["sizes"] == [64, 16, 10] and 0 <= m["fallback_rate"] <= 1
    assert m["config"]["bstdg_lead"] == 1 and m["config"]["bstdg_calibrate"] is True
    cal = m["calibration"]
    assert cal["samples"] == 1437 and cal["correct_after"] >= cal["correct_before"]
    assert m["config"]["readout"] == "first" and m["config"]["leak_shift"] is None
    net = bsnn_hw.load(out)
    assert net.readout == "first" and net.encoding == "latency"
    r = CliRunner().invoke(main, ["inspect", str(out)])
    assert r.exit_code == 0, r.output
    r = run_cli("--method", "bstdg", "--hidden", "16", "-T", "8", "--epochs", "1", "--threads", "1",
                "--out", str(tmp_path / "d.bsnn"))
    assert r.exit_code == 0 and "fallback" in r.stdout and "median decision step" in r.stdout, r.output
    assert "threshold calibration on 1437 training samples" in r.output
    r = run_cli("--method", "bstdg", "--hidden", "16", "-T", "8", "--epochs", "1", "--threads", "1",
                "--no-bstdg-calibrate", "--out", str(tmp_path / "e.bsnn"), "--json", "-q")
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["calibration"] is None and m["config"]["bstdg_calibrate"] is False


@pytest.mark.parametrize("args, message", [
    (["--arch", "8c3-p2-10"], "--method bstdg: trains fully connected layers only"),
    (["--variant", "mid"], "--method bstdg: trains all-binary layers"),
    (["--encoding", "rate"], "--method bstdg: needs latency-coded input"),
    (["--leak-shift", "4"], "--method bstdg: uses IF neurons"),
    (["--no-fire-once"], "--method bstdg: needs fire-once neurons"),
    (["--readout", "membrane"], "--method bstdg: reads out the first output spike"),
    (["--dropout", "0.1"], "--method bstdg: has no dropout"),
    (["--scale", "none"], "learns threshold factors per layer or per neuron"),
    (["--bstdg-deadline", "99"], "deadline must be a step in 0..T-1"),
    (["--bstdg-revive", "-0.1"], "revive must be >= 0, not -0.1"),
    (["--bstdg-min-rate", "0"], "min rate must be in (0, 1], not 0.0"),
    (["--bstdg-lead", "-1"], "lead must be a number of steps in [0, T) = [0, 32), not -1.0"),
    (["-T", "8", "--bstdg-lead", "8"], "lead must be a number of steps in [0, T) = [0, 8), not 8.0"),
    (["-M", "6"], "needs membrane_bits"),
    (["--bstdg-timing", "late"], "Invalid value for '--bstdg-timing'"),
    (["--bstdg-finetune", "-1"], "finetune must be a number of epochs >= 0, not -1"),
    (["--bstdg-finetune-lr", "0"], "finetune lr must be positive, not 0.0"),
    (["--bstdg-pull", "-0.1"], "pull must be a weight in [0, 1] (0: none), not -0.1"),
    (["--bstdg-pull", "1.5"], "pull must be a weight in [0, 1] (0: none), not 1.5"),
    (["--bstdg-pull", "0.1", "--bstdg-finetune", "0"], "pull acts in the fine-tune epochs"),
    (["--bstdg-readout-epochs", "-1"], "readout epochs must be a whole number >= 0 (0: no readout fit), not -1"),
    (["--bstdg-readout-scale", "0"], "readout scale must be a positive number of membrane steps, not 0.0"),
    (["--bstdg-readout-scale", "nan"], "bstdg_readout_scale must be a finite number, not nan"),
    (["--bstdg-search-sweeps", "-1"], "search sweeps must be a whole number >= 0 (0: no local search), not -1"),
    (["--bstdg-search-samples", "0"], "search samples must be a whole number >= 1, not 0"),
])
def test_cli_bad_combinations(tmp_path, args, message):
    out = tmp_path / "m.bsnn"
    r = run_cli("--method", "bstdg", "--epochs", "1", "-q", "--out", str(out), *args)
    assert r.exit_code != 0
    err = r.stderr or r.output
    assert message in err, err
    assert err.strip().count("\n") == 0 and err.startswith("Error:")
    assert not out.exists()


def test_cli_bstdg_flags_need_the_method(tmp_path):
    r = run_cli("--bstdg-gamma", "2", "--epochs", "1", "-q", "--out", str(tmp_path / "m.bsnn"))
    assert r.exit_code != 0 and "only apply to --method bstdg" in (r.stderr or r.output)


def test_init_fine_tunes_from_a_bstdg_checkpoint(trained, tmp_path):
    """--init with --method bstdg: the weights and threshold factors of the checkpoint, here with a learning rate too
    small to flip a sign or move a threshold, so the network is the trained one; a B-SNN checkpoint is refused."""
    result, out = trained
    ckpt = str(out) + ".ckpt"
    tuned = bstdg.fit(bstdg.config(**dict(TINY, epochs=1, lr=1e-12, init_from=ckpt)), progress=False)
    assert tuned.network.layers == result.network.layers
    from bsnn_hw.train import TrainConfig, fit
    fit(TrainConfig(dataset="digits", hidden=[48], timesteps=4, epochs=1, threads=1), out=tmp_path / "b.bsnn",
        progress=False)
    with pytest.raises(ValueError, match="a --method bsnn checkpoint cannot start a --method bstdg run"):
        bstdg.fit(bstdg.config(**dict(TINY, init_from=str(tmp_path / "b.bsnn.ckpt"))), progress=False)


def test_finetune_freezes_the_thresholds_and_trains_the_weights(monkeypatch):
    """--bstdg-finetune N: N epochs after the main ones, on a fresh cosine from --bstdg-finetune-lr (default lr / 5)
    for the weights, with the threshold factors frozen (they move in the main epochs)."""
    models, seen = [], []
    real_init = bstdg.BSTDGNet.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        models.append(self)

    def record(epoch, h):
        m = models[-1]
        seen.append((h["finetune"], m.log_factor.detach().tolist(), [w.detach().clone() for w in m.weights], h["lr"]))
    monkeypatch.setattr(bstdg.BSTDGNet, "__init__", init)
    result = bstdg.fit(bstdg.config(**dict(TINY, epochs=2, bstdg_finetune=2)), progress=False, on_epoch_end=record)
    assert [f for f, *_ in seen] == [False, False, True, True]
    assert result.metrics["finetune_epochs"] == 2 and result.metrics["epochs_trained"] == 4
    start = [0.0, 0.0]                                                       # f = 1
    assert seen[0][1] != start and seen[1][1] != seen[0][1]                  # the main epochs move the factors
    assert seen[2][1] == seen[1][1] == seen[3][1]                            # the fine-tune does not
    assert any(not torch.equal(a, b) for a, b in zip(seen[1][2], seen[3][2]))   # ... but moves the weights
    # the lr of the next step after each epoch: the main cosine at half of lr = 5e-3, then at 0, where the fine-tune's
    # starts at lr / 5 = 1e-3; it halves by the middle of the fine-tune and ends at 0
    np.testing.assert_allclose([h for *_, h in seen], [2.5e-3, 1e-3, 5e-4, 0], atol=1e-12)


def test_finetune_schedule_per_group():
    from bsnn_hw.train.trainer import finetune_schedule
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 2.0}])
    sched = finetune_schedule(opt, 4, 4, 0.1, frozen_groups=(1,))
    lrs = []
    for _ in range(10):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    np.testing.assert_allclose([x for x, _ in lrs], [1, 0.853553, 0.5, 0.146447, 0.1, 0.085355, 0.05, 0.014645,
                                                      0, 0], atol=1e-6)
    np.testing.assert_allclose([y for _, y in lrs], [2, 1.707107, 1, 0.292893, 0, 0, 0, 0, 0, 0], atol=1e-6)


@pytest.mark.parametrize("epochs, finetune", [(2, 0), (1, 1)])
def test_resume_equals_uninterrupted(tmp_path, epochs, finetune):
    """A run stopped after its first epoch and resumed gives the network of the uninterrupted run (with a fine-tune:
    stopped at the boundary, where Adam starts afresh)."""
    settings = dict(TINY, hidden=[16], timesteps=8, epochs=epochs, bstdg_finetune=finetune)
    whole = bstdg.fit(bstdg.config(**settings), out=tmp_path / "a.bsnn", progress=False)

    class Stop(Exception):
        pass

    def stop(epoch, record):
        raise Stop

    with pytest.raises(Stop):
        bstdg.fit(bstdg.config(**settings), out=tmp_path / "b.bsnn", progress=False, on_epoch_end=stop)
    resumed = bstdg.fit(bstdg.config(**settings), out=tmp_path / "b.bsnn", resume=True, progress=False)
    assert resumed.network == whole.network
    with pytest.raises(ValueError, match="settings differ"):
        bstdg.fit(bstdg.config(**dict(settings, bstdg_gamma=2.0)), out=tmp_path / "b.bsnn", resume=True,
                  progress=False)


def test_decision_bound_policy(load_bench):
    """bench/decision_bound.py's pieces: the arrived input is the latency code cut at step k, and the anytime policy
    decides each image at its first confident step (the last step otherwise), counting correct answers there."""
    from bsnn_hw.contract import latency_step
    bound = load_bench("decision_bound")

    x = np.array([[0, 255, 128, 1]])
    t = latency_step(x, 8)                                   # [-1, 0, 3, 7]: 0 never spikes
    np.testing.assert_array_equal(t, [[-1, 0, 3, 7]])
    np.testing.assert_allclose(bound.arrived(t, 3).numpy(), [[0, 4 / 4, 1 / 4, 0]])
    np.testing.assert_allclose(bound.arrived(t, 7).numpy(), [[0, 8 / 8, 5 / 8, 1 / 8]])

    steps = [2, 5, 9]
    conf = np.array([[0.9, 0.2, 0.6, 0.1],                   # (step, image)
                     [0.5, 0.8, 0.7, 0.3],
                     [0.6, 0.6, 0.6, 0.6]])
    correct = np.array([[True, False, False, False],
                        [False, True, True, False],
                        [False, False, True, True]])
    # c = 0.85: image 0 decides at step 2 (right), the others at the last step (1 wrong, 2 and 3 right)
    assert bound.anytime(conf, correct, steps, 0.85) == (0.75, 9.0)
    # c = 0.65: 0 at step 2, 1 and 2 at step 5, 3 at the last step: all right
    assert bound.anytime(conf, correct, steps, 0.65) == (1.0, 5.0)
    # c = 0.55: image 2 now decides at step 2, where it is wrong; steps 2, 5, 2, 9
    assert bound.anytime(conf, correct, steps, 0.55) == (0.75, 3.5)
    # the best level within a median limit: the lowest c of the best accuracy; None when no c reaches the limit
    acc, c = bound.best_confidence(conf, correct, steps, 9)
    assert acc == 1.0 and 0.6 < c <= 0.7              # only (0.6, 0.7] decides all four right (above)
    acc, c = bound.best_confidence(conf, correct, steps, 4)
    assert acc == 0.75 and 0.3 < c <= 0.6              # median 3.5; at c <= 0.3 image 3 decides wrong at step 5
    assert bound.best_confidence(conf, correct, steps, 1) is None
    assert conf[-1].tolist() == [0.6] * 4                    # the policy did not write into its input


def test_readout_bound_features_are_the_hidden_spikes(load_bench):
    """bench/readout_bound.py reads the exported network's last hidden layer: its spike steps are golden's; a network
    that is not a BSTDG one is refused."""
    bound = load_bench("readout_bound")
    torch.manual_seed(5)
    model = bstdg.BSTDGNet([64, 24, 10], timesteps=12, threshold_init=0.4)
    net = bstdg.to_network(model)
    x, _ = data.load_dataset("digits", "test")
    got = bound.hidden_times(net, x[:80], batch=30).numpy()
    g = golden.run(net, x[:80])
    np.testing.assert_array_equal(np.where(got >= 12, -1, got), g.first_step[0])
    bound.check_network(net, "m.bsnn")
    with pytest.raises(SystemExit, match="is not a BSTDG network"):
        bound.check_network(bsnn_hw.network.random_network([64, 10], timesteps=4), "r.bsnn")


def test_output_width_scores_the_k_bit_network_golden_runs(load_bench):
    """bench/output_width.py: its k-bit output layer (one scale, rounded) is a contract network whose golden run
    gives the accuracy, median decision step (silent = T) and fallback the bench scores from the hidden spikes; the
    membrane width holds n_in * (2^(k-1) - 1); a threshold below 1 is refused; the budget's shift keeps the median."""
    width = load_bench("output_width")
    torch.manual_seed(7)
    model = bstdg.BSTDGNet([64, 24, 10], timesteps=12, threshold_init=0.4)
    net = bstdg.to_network(model)
    x, y = data.load_dataset("digits", "test")
    h = width.hidden_times(net, x)
    w_real = torch.randn(10, 24) * 0.7
    w_real[3, 5] = 2.5                                                   # the largest |w|: it maps to 2^(k-1) - 1
    th_real = torch.rand(10) * 2 + 0.5
    for k in (2, 4, 8):
        wq, thq, m = width.quantise(w_real, th_real, k)
        top = 2 ** (k - 1) - 1
        assert int(wq[3, 5]) == top and int(wq.abs().max()) == top
        assert contract.membrane_range(m)[1] >= 24 * top and m >= 16
        thq = thq.clamp(min=1)
        knet = width.k_bit_network(net, wq, thq, k, m)
        assert knet.layers[-1].weight_bits == k and knet.layers[:-1] == net.layers[:-1]
        g = golden.run(knet, x)
        first = np.where(g.first_step[-1] >= 0, g.first_step[-1], 12).min(axis=1)
        got = width.score(width.membranes(h, wq, 12), torch.from_numpy(y.astype(np.int64)), thq, 12)
        assert got["accuracy"] == float((g.prediction == y).mean())
        assert got["median"] == float(np.median(first))
        assert got["fallback"] == float((first == 12).mean())
    with pytest.raises(ValueError, match="outside 1"):
        width.k_bit_network(net, wq, thq - 50, 8, m)
    v, yt = width.membranes(h, wq, 12), torch.from_numpy(y.astype(np.int64))
    shifts = list(range(1 - int(thq.min()), 200))
    u = width.best_shift(v, yt, thq, shifts, 12, 3)
    assert u is not None and width.score(v, yt, thq + u, 12)["median"] <= 3
    assert width.best_shift(v, yt, thq, [10 ** 6], 12, 3) is None       # nothing fires: every sample at T


def test_frontier_scores_each_budget_s_export(trained, load_bench, monkeypatch, capsys):
    """bench/bstdg_frontier.py: each row is the export from_checkpoint gives within that budget, scored as golden
    scores it (accuracy; median decision step with a silent output counted at T); a budget met keeps the test
    median near it on this tiny network; a budget the calibration refuses is a row, any other error is not; bad
    --budgets are refused."""
    frontier = load_bench("bstdg_frontier")
    _, out = trained
    ckpt = str(out) + ".ckpt"
    assert frontier.parse_budgets("6, none,0") == [6, None, 0]
    for bad in ("x", "6,6", "-1", "", "3,"):
        with pytest.raises(ValueError, match="--budgets"):
            frontier.parse_budgets(bad)
    x, y = data.load_dataset("digits", "test")
    rows = [frontier.point(ckpt, b, 0) for b in (None, 4, 1)]
    for row in rows:
        net = bstdg.from_checkpoint(ckpt, calibrate_thresholds=True, decision_step=row["budget"], readout_epochs=0,
                                    search_sweeps=0).network
        g = golden.run(net, x)
        first = np.where(g.first_step[-1] >= 0, g.first_step[-1], net.timesteps).min(axis=1)
        assert row["integer_accuracy"] == round(100 * float((g.prediction == y).mean()), 2)
        assert row["median_decision_step"] == float(np.median(first))
        assert row["fallback_rate_pct"] == round(100 * float((first == net.timesteps).mean()), 2)
        assert row["both_met"] == (row["integer_accuracy"] >= 87.5 and row["median_decision_step"] <= 16 / 3)
    assert rows[2]["median_decision_step"] < rows[0]["median_decision_step"]    # the budget moved the decision
    assert rows[2]["median_decision_step"] <= 2                                   # test median near training's 1
    assert "| 4 |" in frontier.table(rows) and "| none |" in frontier.table(rows)

    def refuse(*args, **kw):
        raise ValueError("no thresholds give a median decision step <= 0 on these 1797 samples")
    monkeypatch.setattr(frontier.bstdg, "from_checkpoint", refuse)
    row = frontier.point(ckpt, 0, 0)
    assert row == {"budget": 0, "refused": "no thresholds give a median decision step <= 0 on these 1797 samples"}
    assert "refused: no thresholds" in frontier.table([row])
    monkeypatch.setattr(frontier.bstdg, "from_checkpoint", lambda *a, **k: (_ for _ in ()).throw(
        ValueError("m.bsnn.ckpt: a checkpoint of method 'bsnn', not 'bstdg'")))
    assert frontier.main(["--checkpoint", ckpt, "--budgets", "3"]) == 2
    assert "not 'bstdg'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        frontier.main(["--checkpoint", ckpt, "--budgets", "3,x"])
