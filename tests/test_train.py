"""The trainer: encoders and arithmetic equal the contract's, export equals golden on real data, determinism, resume,
and the CLI's one-line errors. Every training run here is tiny (seconds)."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bsnn_hw import encode, golden
from bsnn_hw.cli import main
from bsnn_hw.train import (BSNN, LIF, BinaryLinear, RateEncoder, TrainConfig, binary_matmul, fit, integer_simulate,
                           latency, to_network)
from bsnn_hw.train.trainer import Augment, image_shape

TINY = dict(dataset="digits", hidden=[32], timesteps=4, epochs=2, batch_size=128, threads=1)


# --- encoders and arithmetic --------------------------------------------------------------------------------------

def test_rate_encoder_matches_contract():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 37), dtype=np.uint8)
    x[0] = 0
    x[1] = 255
    seeds = rng.integers(1, 65536, 40)
    seeds[:4] = [1, 65535, 8, 2]
    enc = RateEncoder(37, 6)
    got = enc(torch.from_numpy(x), torch.from_numpy(seeds)).numpy().astype(bool)
    np.testing.assert_array_equal(got, encode.rate(x, 6, seeds))
    # One shared seed, as the exported network encodes its inputs.
    np.testing.assert_array_equal(enc(torch.from_numpy(x), 77).numpy().astype(bool), encode.rate(x, 6, 77))
    with pytest.raises(ValueError, match="1..65535"):
        enc(torch.from_numpy(x), 0)


def test_latency_matches_contract():
    x = np.arange(256, dtype=np.uint8).reshape(4, 64)
    np.testing.assert_array_equal(latency(torch.from_numpy(x), 9).numpy().astype(bool), encode.latency(x, 9))


@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_binary_product_equals_the_float_product(monkeypatch, threads):
    """``binary_matmul`` on the CPU with the compiled kernels (the spikes checked and packed in one pass, the popcount
    forward) against the float products: the same forward integers and gradients (the weight gradient up to float32
    summation order); fan-ins below, at and above one
    64-bit word and not a multiple of it, silent and saturated inputs, and inputs that are not spikes (the float
    fallback); on two threads the rows run in parts on two workers."""
    from bsnn_hw.train import layers
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    g = torch.Generator().manual_seed(5)
    for rows, n_in, n_out, density in [(7, 1, 3, 1.0), (33, 64, 5, 0.5), (200, 65, 17, 0.3), (64, 300, 10, 0.0),
                                        (130, 784, 128, 0.28), (40, 129, 2, 1.0)]:
        for spikes in (True, False):
            s = (torch.rand(rows, n_in, generator=g) < density).float()
            if not spikes:
                s = s * 0.5 + (torch.rand(rows, n_in, generator=g) < 0.1).float()
            s.requires_grad_()
            w = torch.where(torch.rand(n_out, n_in, generator=g) > 0.5, 1.0, -1.0).requires_grad_()
            up = torch.randn(rows, n_out, generator=g)
            got = []
            for compiled in (True, False):
                monkeypatch.setattr(layers, "CPU_KERNELS", compiled)
                out = binary_matmul(s, w)
                got.append((out.detach(), *torch.autograd.grad((out * up).sum(), [s, w])))
            (o1, gs1, gw1), (o2, gs2, gw2) = got
            case = (rows, n_in, n_out, density, spikes)
            assert torch.equal(o1, o2) and torch.equal(o1, (s.detach().double() @ w.detach().double().t()).float())
            assert torch.equal(gs1, gs2), case
            torch.testing.assert_close(gw1, gw2, rtol=1e-5, atol=1e-5, msg=str(case))   # BLAS calls in two orders


def test_spike_weight_grad_equals_the_dense_product(monkeypatch):
    """The binary layer's weight gradient from packed spikes (subset-sum tables, train/kernels.py
    ``spike_weight_grad``) against a float64 ``g^T s``: rows not a multiple of 8 (a part-filled last pattern) or of 32
    (a part-filled group of four tables), one row, fan-ins of 1, 8, 65 and 784, widths at the kernel's threshold, a
    part-filled last column block and several blocks; every spike density from none to all. The same bits on one
    worker and on two (column blocks split between them)."""
    from bsnn_hw.train import kernels, layers
    monkeypatch.setattr(layers, "SPIKE_GRAD_MIN_OUT", 1)          # every shape through the kernel
    monkeypatch.setattr(layers, "SPIKE_GRAD_MIN_IN", 1)
    calls = []
    kernel = kernels.spike_weight_grad
    monkeypatch.setattr(kernels, "spike_weight_grad", lambda *a: calls.append(1) or kernel(*a))
    g = torch.Generator().manual_seed(11)
    for rows, n_in, n_out, density in [(1, 1, 32, 1.0), (7, 8, 33, 0.5), (33, 65, 64, 0.3), (2048, 784, 128, 0.28),
                                        (130, 784, 200, 0.0), (41, 129, 1000, 1.0), (8, 784, 65, 0.05)]:
        s = (torch.rand(rows, n_in, generator=g) < density).float()
        w = torch.where(torch.rand(n_out, n_in, generator=g) > 0.5, 1.0, -1.0).requires_grad_()
        up = torch.randn(rows, n_out, generator=g)
        grads = []
        for threads in (1, 2):
            with layers.cpu_workers(threads):                     # the worker count starts at threads
                out = binary_matmul(s, w)
                grads.append(torch.autograd.grad((out * up).sum(), [w])[0])
        ref = (up.double().t() @ s.double()).float()
        case = (rows, n_in, n_out, density)
        torch.testing.assert_close(grads[0], ref, rtol=1e-5, atol=1e-4, msg=str(case))
        assert torch.equal(grads[0], grads[1]), case
        assert calls, case
        calls.clear()


def test_bf16_matmul_is_exact():
    g = torch.Generator().manual_seed(0)
    s = (torch.rand(300, 700, generator=g) < 0.6).float()
    w = torch.where(torch.rand(50, 700, generator=g) > 0.5, 1.0, -1.0)
    ref = (s.double() @ w.double().t()).float()
    assert torch.equal(binary_matmul(s, w, "bf16"), ref)
    assert torch.equal(binary_matmul(s, w, "fp32"), ref)


def test_sign_and_straight_through():
    fc = BinaryLinear(3, 1, scale=None)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[0.5, 0.0, -2.0]]))
    out = fc(torch.ones(1, 1, 3))
    assert out.item() == -1.0            # +1 -1 -1: a latent 0 is bit 0 (-1), as contract.weight_to_bit
    out.sum().backward()
    # Straight-through, clipped: no gradient where |w| > 1.
    assert fc.weight.grad.tolist() == [[1.0, 1.0, 0.0]]
    assert fc.weight_bits().tolist() == [[True, False, False]]
    # binarize's arithmetic form against the rule written out, at the edges: +-0, +-1, just past +-1, tiny values
    from bsnn_hw.train.layers import binarize
    w = torch.cat([torch.tensor([0.0, -0.0, 1.0, -1.0, 1.0000001, -1.0000001, 1e-38, -1e-38, 3.0, -3.0]),
                   torch.randn(500, generator=torch.Generator().manual_seed(0))]).requires_grad_()
    up = torch.randn(w.shape, generator=torch.Generator().manual_seed(1))
    b = binarize(w)
    assert torch.equal(b, torch.where(w > 0, 1.0, -1.0)) and b.dtype == w.dtype
    (grad,) = torch.autograd.grad((b * up).sum(), [w])
    assert torch.equal(grad, torch.where(w.abs() <= 1, up, 0.0))
    from bsnn_hw.train.layers import quantize                  # the k-bit straight-through mask is the same
    (grad,) = torch.autograd.grad((quantize(w, 4) * up).sum(), [w])
    assert torch.equal(grad, torch.where(w.abs() <= 1, up, 0.0))


def test_pack_signs_is_pack_planes_of_the_weight_bits():
    """The binary product's weight packing (train/kernels.py) against bsnn_hw.kernels.pack_planes of [w > 0]: fan-ins
    below, at and above a 64-bit word, +-0 and +-1 weights."""
    from bsnn_hw import kernels
    from bsnn_hw.train import kernels as tk
    rng = np.random.default_rng(3)
    for n_out, n in [(1, 1), (3, 63), (5, 64), (7, 65), (128, 784), (2, 129)]:
        w = rng.choice(np.array([-1.0, 1.0, 0.0, -0.0, 0.3, -0.3], np.float32), size=(n_out, n))
        ref = kernels.pack_planes((w > 0).astype(np.int64), 1)
        got = np.full_like(ref, 0xFFFF)
        tk.pack_signs(w, got)
        assert np.array_equal(got, ref), (n_out, n)


def test_lif_strict_threshold_and_folding():
    # alpha = 1/3: theta / alpha = 3 exactly. V = 3 must not fire, V = 4 must (then subtract 3).
    lif = LIF(threshold=1.0, leak_shift=None, reset="subtract")
    cur = torch.tensor([[[3.0], [0.0], [1.0], [0.0]]])
    spikes = lif(cur, torch.tensor([1 / 3]))
    assert spikes.flatten().tolist() == [0.0, 0.0, 1.0, 0.0]
    assert lif.last_membrane.item() == 1.0
    assert lif.integer_threshold(torch.tensor([1 / 3])).item() == 3
    # A non-integer theta / alpha = 2.5: an integer V fires iff V > 2 (floor), and reset subtracts 2.
    spikes = lif(torch.tensor([[[3.0], [0.0]]]), torch.tensor([0.4]))
    assert spikes.flatten().tolist() == [1.0, 0.0] and lif.last_membrane.item() == 1.0
    assert lif.integer_threshold(torch.tensor([0.4])).item() == 2


def test_lif_refuses_untrainable_widths():
    with pytest.raises(ValueError, match="membrane_bits must be in 2..24"):
        LIF(membrane_bits=32)
    with pytest.raises(ValueError, match="leak_shift must be in 1..7"):
        LIF(leak_shift=8, membrane_bits=8)


@pytest.mark.parametrize("params", [
    dict(leak_shift=2, reset="subtract", readout="membrane", output_leak_shift=3),
    dict(leak_shift=None, reset="zero", readout="count", fire_once=True),
    dict(leak_shift=1, reset="subtract", readout="count", membrane_bits=6, scale="layer"),
    dict(leak_shift=3, reset="zero", readout="membrane", membrane_bits=5, scale=None),
])
def test_exact_forward_equals_golden_on_random_models(params):
    """The torch model in exact mode makes the golden model's decisions, layer by layer (untrained random weights,
    negative leaks, saturation, both resets, fire-once, both readouts)."""
    torch.manual_seed(1)
    model = BSNN([20, 24, 16, 5], timesteps=12, threshold_init=0.4, **params)
    with torch.no_grad():
        for fc in model.fcs:
            fc.weight.uniform_(-1, 1)
            if fc.log_scale is not None:
                fc.log_scale.uniform_(-1.5, 0.0)
    model.eval()
    x = np.random.default_rng(2).integers(0, 256, (64, 20), dtype=np.uint8)
    net = to_network(model, "rate", seed=5)
    spikes = net.encode(x)
    ref = golden.simulate(net, spikes)
    with torch.no_grad():
        logits = model(torch.from_numpy(spikes).float())
    pred, counts, membranes = integer_simulate(net, torch.from_numpy(spikes))
    np.testing.assert_array_equal(pred.numpy(), ref.prediction)
    for layer in range(3):
        np.testing.assert_array_equal(counts[layer].numpy(), ref.counts[layer])
        np.testing.assert_array_equal(membranes[layer].numpy(), ref.membrane[layer])
    np.testing.assert_array_equal(model.lifs[-1].last_membrane.numpy(), ref.membrane[-1])
    np.testing.assert_array_equal(logits.argmax(1).numpy(), ref.prediction)


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("block", [None, 8])
@pytest.mark.parametrize("exact", [True, False])
def test_fused_lif_equals_the_step_by_step_graph(monkeypatch, block, exact, compiled):
    """LIF's fused recurrence (one autograd node, hand-written BPTT: the compiled CPU kernels of train/kernels.py, or
    the torch path in neuron blocks that CUDA tensors take) gives the spikes and membranes of the step-by-step
    autograd graph exactly, and its gradients (input and threshold) up to rounding: every leak, reset, fire-once,
    saturation (M = 6), scale kind, and the non-firing readout."""
    import itertools

    from bsnn_hw.train import layers
    monkeypatch.setattr(layers, "CPU_KERNELS", compiled)
    if compiled and block is not None:
        pytest.skip("the compiled kernels have no neuron blocks")
    if block is not None:
        monkeypatch.setattr(layers, "LIF_BLOCK", block)          # several blocks of 8 // batch = 1..2 columns
    g = torch.Generator().manual_seed(0)
    for leak, reset, once, scale_kind, bits, fires in itertools.product(
            [None, 2], ["subtract", "zero"], [False, True], [None, "layer", "neuron"], [6, 16], [True, False]):
        lif = LIF(1.0, leak, reset, bits, once, exact=exact, fires=fires)
        cur = torch.randint(-12, 13, (5, 9, 7), generator=g).float().requires_grad_()
        scale = (None if scale_kind is None else torch.tensor([0.2]) if scale_kind == "layer"
                 else torch.rand(7, generator=g) * 0.5 + 0.05)
        if scale is not None:
            scale.requires_grad_()
        w_out, w_mem = torch.randn(5, 9, 7, generator=g), torch.randn(5, 7, generator=g)
        keep = torch.rand(5, 1, 7, generator=g) >= 0.3 if reset == "subtract" else None   # dropout, fused
        inputs = [cur] + ([scale] if scale is not None and fires else [])
        results = []
        for fused in (True, False):
            sc = scale if fires else None
            out = lif(cur, sc, keep) if fused else lif._forward_reference(
                cur, lif.effective_threshold(sc) if fires else None, None if keep is None else keep.float())
            mem = lif.last_membrane
            grads = torch.autograd.grad((out * w_out).sum() + (mem * w_mem).sum(), inputs, allow_unused=True)
            results.append((out.detach(), mem.detach(), grads))
        (o1, m1, g1), (o2, m2, g2) = results
        case = (leak, reset, once, scale_kind, bits, fires)
        assert torch.equal(o1, o2) and torch.equal(m1, m2), case
        for a, b in zip(g1, g2):
            assert a is not None and b is not None, case
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=str(case))


# --- training -----------------------------------------------------------------------------------------------------

def test_export_equals_golden_on_digits(tmp_path):
    """The exported artifact, loaded from disk and run through the golden model on the encoded digits test split,
    predicts exactly what the trainer's integer evaluation predicts, for every sample."""
    import bsnn_hw
    from bsnn_hw.data import load_dataset
    from bsnn_hw.train.trainer import Encoder, integer_accuracy
    cfg = TrainConfig(**{**TINY, "hidden": [48], "timesteps": 8, "epochs": 3})
    res = fit(cfg, out=tmp_path / "d.bsnn", progress=False)
    net = bsnn_hw.load(tmp_path / "d.bsnn")
    assert net == res.network
    x, y = load_dataset("digits", "test")
    acc, trainer_pred = integer_accuracy(net, Encoder("rate", 64, 8, "cpu"), torch.from_numpy(x),
                                         torch.from_numpy(y))
    gold = golden.run(net, x).prediction
    np.testing.assert_array_equal(gold, trainer_pred)
    assert acc == pytest.approx(res.metrics["integer_accuracy"]) == pytest.approx((gold == y).mean())
    assert acc > 0.5                          # it learned something in 3 tiny epochs
    assert abs(res.metrics["gap_pp"]) <= 0.5
    meta = net.metadata
    assert meta["config"]["hidden"] == [48] and meta["metrics"]["integer_accuracy"] == acc
    assert (tmp_path / "d.png").stat().st_size > 1000 and (tmp_path / "d.bsnn.ckpt").exists()
    # The float model's per-sample predictions travel in the metadata: verify reports the float accuracy on exactly
    # the samples it simulates.
    from bsnn_hw.sim.verify import float_accuracy, float_predictions
    fp = float_predictions(net, "digits")
    assert fp is not None and len(fp) == len(y)
    assert (fp == y).mean() == pytest.approx(res.metrics["float_accuracy"])
    part, src = float_accuracy(net, "digits", 10, y[10:30])
    assert part == pytest.approx((fp[10:30] == y[10:30]).mean()) and "these samples" in src
    assert float_accuracy(net, "fashion-mnist", 0, y[:5])[0] is None
    assert net.identity() == res.network.identity()


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _augment_reference(img, k):
    """Every image Augment may produce from one (H, W) image: shifts dy, dx in -k..k, zero fill, with/without mirror."""
    h, w = img.shape
    out = []
    for src in (img, img[:, ::-1]):
        for dy in range(-k, k + 1):
            for dx in range(-k, k + 1):
                o = np.zeros_like(src)
                for r in range(h):
                    for c in range(w):
                        if 0 <= r - dy < h and 0 <= c - dx < w:
                            o[r, c] = src[r - dy, c - dx]
                out.append(o)
    return out


def test_augment_against_reference():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(1, 256, (64, 36), dtype=np.uint8))
    aug = Augment(36, 2, True, "cpu")
    y = aug(x, torch.Generator().manual_seed(5))
    assert y.dtype == torch.uint8 and y.shape == x.shape
    assert torch.equal(y, aug(x, torch.Generator().manual_seed(5)))          # reproducible from the seed
    seen = set()
    for xi, yi in zip(x.numpy().reshape(-1, 6, 6), y.numpy().reshape(-1, 6, 6)):
        matches = [i for i, cand in enumerate(_augment_reference(xi, 2)) if np.array_equal(cand, yi)]
        assert matches, "augmented image is no shift/mirror of its source"
        seen.add(matches[0])
    assert len(seen) > 20                                                     # draws vary across the batch
    with pytest.raises(ValueError, match="square images"):
        Augment(35, 1, False, "cpu")
    assert image_shape(3 * 32 * 32) == (3, 32, 32) and image_shape(784) == (1, 28, 28)


def test_augmented_training_is_reproducible():
    cfg = {**TINY, "augment_shift": 1, "label_smoothing": 0.1}
    a, b = fit(TrainConfig(**cfg), progress=False), fit(TrainConfig(**cfg), progress=False)
    plain = fit(TrainConfig(**TINY), progress=False)
    assert a.network == b.network and a.network != plain.network


def test_same_seed_same_model():
    a = fit(TrainConfig(**TINY), progress=False)
    b = fit(TrainConfig(**TINY), progress=False)
    c = fit(TrainConfig(**{**TINY, "seed": 1}), progress=False)
    wa, wb, wc = _weights(a.model), _weights(b.model), _weights(c.model)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert a.network == b.network


def test_resume_after_interrupt_equals_uninterrupted(tmp_path):
    cfg = dict(TINY, epochs=3)
    full = fit(TrainConfig(**cfg), out=tmp_path / "full.bsnn", progress=False)

    def stop(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(TrainConfig(**cfg), out=tmp_path / "r.bsnn", progress=False, on_epoch_end=stop)
    assert not (tmp_path / "r.bsnn").exists() and (tmp_path / "r.bsnn.ckpt").exists()
    logs = []
    resumed = fit(TrainConfig(**cfg), out=tmp_path / "r.bsnn", resume=True, progress=False, log=logs.append)
    assert "after epoch 2/3" in logs[0]
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    wf, wr = _weights(full.model), _weights(resumed.model)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    assert resumed.network == full.network
    # The model's identity is the same (the files differ only in their metadata: timings, resume history).
    import bsnn_hw
    on_disk = bsnn_hw.load(tmp_path / "r.bsnn"), bsnn_hw.load(tmp_path / "full.bsnn")
    assert on_disk[0].identity() == on_disk[1].identity() == full.network.identity()
    # Different settings cannot resume that checkpoint.
    with pytest.raises(ValueError, match="cannot resume, settings differ: lr="):
        fit(TrainConfig(**{**cfg, "lr": 0.01}), out=tmp_path / "r.bsnn", resume=True, progress=False)


def test_init_starts_from_a_checkpoints_weights(tmp_path):
    first = fit(TrainConfig(**dict(TINY, epochs=1)), out=tmp_path / "a.bsnn", progress=False)
    ckpt = str(tmp_path / "a.bsnn.ckpt")
    # A fine-tune at another T with a learning rate too small to flip a sign: the exported network is the first
    # one's, run for 8 steps (a cold start with the same seed is not).
    tuned = fit(TrainConfig(**dict(TINY, epochs=1, timesteps=8, lr=1e-12, init_from=ckpt)), progress=False)
    cold = fit(TrainConfig(**dict(TINY, epochs=1, timesteps=8, lr=1e-12)), progress=False)
    assert tuned.network.timesteps == 8
    assert tuned.network.layers == first.network.layers != cold.network.layers
    with pytest.raises(ValueError, match=r"'fcs.0.log_scale' has shape \(32,\) in the checkpoint but \(33,\) in this "
                                         r"run: the layers differ"):
        fit(TrainConfig(**dict(TINY, hidden=[33], init_from=ckpt)), progress=False)
    with pytest.raises(ValueError, match="'fcs.2.log_scale' is in this run's model but not the checkpoint's"):
        fit(TrainConfig(**dict(TINY, hidden=[32, 8], init_from=ckpt)), progress=False)
    state = torch.load(ckpt, weights_only=True)
    state["config"]["method"] = "bisnn"
    torch.save(state, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="a --method bisnn checkpoint cannot start a --method bsnn run"):
        fit(TrainConfig(**dict(TINY, init_from=str(tmp_path / "other.ckpt"))), progress=False)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a bsnn-hw training checkpoint"):
        fit(TrainConfig(**dict(TINY, init_from=str(tmp_path / "junk.ckpt"))), progress=False)


# --- CLI ----------------------------------------------------------------------------------------------------------

def run_cli(*args):
    return CliRunner().invoke(main, ["train", *args], catch_exceptions=False)


def test_cli_json_and_outputs(tmp_path):
    out = tmp_path / "m.bsnn"
    r = run_cli("--epochs", "1", "--hidden", "16", "-T", "4", "--leak-shift", "none", "--reset", "zero",
                "--out", str(out), "--json", "--quiet")
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["sizes"] == [64, 16, 10] and 0 <= m["integer_accuracy"] <= 1 and m["model"] == str(out)
    assert m["config"]["leak_shift"] is None and m["config"]["reset"] == "zero"
    import bsnn_hw
    net = bsnn_hw.load(out)
    assert net.layers[0].leak_shift is None and net.layers[0].reset == "zero" and net.readout == "membrane"
    assert (tmp_path / "m.png").exists()


def test_cli_config_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('hidden = [8]\ntimesteps = 3\nepochs = 1\nleak_shift = "none"\nreadout = "count"\n')
    r = run_cli("--config", str(cfg), "--out", str(tmp_path / "m.bsnn"), "--json", "-q", "-T", "2")
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["config"]["hidden"] == [8] and m["config"]["timesteps"] == 2 and m["config"]["readout"] == "count"


@pytest.mark.parametrize("args, message", [
    (["--dataset", "fashion-mnist", "--data-root", "/nonexistent/fm"], "apt-get install dataset-fashion-mnist"),
    (["--dataset", "/nonexistent/dir"], "unknown data set '/nonexistent/dir'"),
    (["--dropout", "1.5"], "dropout must be in [0, 1), not 1.5"),
    (["--leak-shift", "abc"], "--leak-shift must be an integer shift k"),
    (["--hidden", "12x"], "--hidden must look like 128 or 256-128"),
    (["--sizes", "60-16-10"], "--sizes starts with 60 inputs but digits has 64 features"),
    (["--sizes", "64-16-3"], "--sizes ends with 3 outputs but digits has 10 classes"),
    (["-T", "0"], "timesteps must be at least 1"),
    (["-M", "30"], "membrane_bits must be at most 24 for --method bsnn"),
    (["--eval-seed", "0"], "eval_seed must be in 1..65535"),
    (["--config", "/nonexistent.toml"], "no such config file"),
    (["--augment-shift", "-1"], "augment_shift must be a pixel count >= 0, not -1"),
    (["--augment-shift", "8"], "augment_shift 8 must be smaller than the image side 8"),
    (["--label-smoothing", "1"], "label smoothing must be in [0, 1), not 1.0"),
    (["--init", "/etc/passwd"], "/etc/passwd: not a bsnn-hw training checkpoint"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    out = tmp_path / "m.bsnn"
    r = CliRunner().invoke(main, ["train", "--epochs", "1", "-q", "--out", str(out), *args])
    assert r.exit_code != 0
    err = r.stderr if r.stderr else r.output
    assert message in err, err
    assert err.strip().count("\n") == 0 and err.startswith("Error:")
    assert not out.exists()


def test_cli_missing_idx_file(tmp_path):
    (tmp_path / "d").mkdir()
    r = CliRunner().invoke(main, ["train", "--dataset", str(tmp_path / "d"), "-q", "--out", str(tmp_path / "m.bsnn")])
    assert r.exit_code == 1
    assert "train-images-idx3-ubyte.gz: no such file" in r.stderr and r.stderr.count("\n") == 1


def test_cli_bad_toml(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("hidden = [8\n")
    r = CliRunner().invoke(main, ["train", "--config", str(cfg)])
    assert r.exit_code == 1 and "not valid TOML" in r.stderr
    cfg.write_text("hiden = [8]\n")
    r = CliRunner().invoke(main, ["train", "--config", str(cfg)])
    assert r.exit_code == 1 and "unknown training setting(s) hiden" in r.stderr


def test_cli_resume_uses_checkpoint_config(tmp_path):
    out = tmp_path / "m.bsnn"
    r = run_cli("--epochs", "1", "--hidden", "8", "-T", "2", "--out", str(out), "-q")
    assert r.exit_code == 0, r.output
    import bsnn_hw
    first = bsnn_hw.load(out)
    out.unlink()
    # --resume with no settings: the checkpoint's own config (hidden 8, T 2) is used; nothing is retrained.
    r = CliRunner().invoke(main, ["train", "--resume", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert "after epoch 1/1" in r.stderr
    assert json.loads(r.stdout)["sizes"] == [64, 8, 10]
    assert bsnn_hw.load(out) == first       # same weights and thresholds (metadata holds timings)


def test_foreign_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "m.bsnn.ckpt"
    bad.write_bytes(b"not a checkpoint")
    r = CliRunner().invoke(main, ["train", "--resume", "--out", str(tmp_path / "m.bsnn")])
    assert r.exit_code == 1 and "not a bsnn-hw training checkpoint" in r.stderr
    torch.save({"format": "something else"}, bad)
    r = CliRunner().invoke(main, ["train", "--resume", "--out", str(tmp_path / "m.bsnn")])
    assert r.exit_code == 1 and "expected format 'bsnn-train-checkpoint'" in r.stderr


def test_unrepresentable_thresholds_are_clamped_and_reported():
    from bsnn_hw.train.model import clamped_thresholds
    model = BSNN([4, 3, 2], timesteps=2, membrane_bits=4)
    with torch.no_grad():
        model.fcs[0].log_scale.copy_(torch.log(torch.tensor([2.0, 0.5, 0.01])))   # theta/alpha = 0.5, 2, 100
    assert clamped_thresholds(model) == [2, 0]
    net = to_network(model, "rate")
    assert net.layers[0].threshold.tolist() == [1, 2, 7]                        # clamped into 1..2^(4-1)-1


# --- multi-bit first/last layers (B-SNN's MID variants, contract v2) ---------------------------------------------

def test_quantize_is_the_signed_kbit_rounding_with_a_straight_through_gradient():
    from bsnn_hw.train.layers import QuantLinear, quantize
    w = torch.tensor([-1.0, -0.99, -0.5, 0.0, 0.004, 0.5, 0.99, 1.0], requires_grad=True)
    q = quantize(w, 8)
    assert q.tolist() == [-128, -127, -64, 0, 1, 64, 127, 127]       # 1.0 * 128 clamps to 127
    assert quantize(w, 2).tolist() == [-2, -2, -1, 0, 0, 1, 2 - 1, 1]
    q.sum().backward()
    assert w.grad.tolist() == [1.0] * 8
    fc = QuantLinear(5, 3, bits=4)
    s = (torch.rand(2, 7, 5) < 0.5).float()
    ints = fc.weight_bits().to(torch.float32)
    assert fc.weight_bits().dtype == torch.int8 and ints.abs().max() <= 8
    torch.testing.assert_close(fc.synaptic_input(s), s @ ints.t())
    with pytest.raises(ValueError, match=r"bits must be in 2\.\.8, not 9"):
        QuantLinear(5, 3, bits=9)


@pytest.mark.parametrize("variant,bits", [("mid", (8, 8)), ("first+mid", (1, 4)), ("last+mid", (4, 1))])
def test_variants_export_equals_golden_on_digits(tmp_path, variant, bits):
    """A multi-bit first and/or last layer trains, exports as contract v2 k-bit dense layers, and the golden model
    predicts exactly the trainer's integer predictions on the whole test split."""
    import bsnn_hw
    from bsnn_hw.data import load_dataset
    from bsnn_hw.train.model import variant_bits
    first, last = bits
    assert variant_bits(variant, 8) == tuple(8 if b > 1 else 1 for b in bits)
    res = fit(TrainConfig(**{**TINY, "epochs": 3, "first_bits": first, "last_bits": last}), out=tmp_path / "v.bsnn",
              progress=False)
    net = bsnn_hw.load(tmp_path / "v.bsnn")
    assert [layer.weight_bits for layer in net.layers] == [first, last] and net.contract_version == 2
    x, y = load_dataset("digits", "test")
    gold = golden.run(net, x).prediction
    assert (gold == y).mean() == pytest.approx(res.metrics["integer_accuracy"])
    np.testing.assert_array_equal(integer_simulate(net, torch.from_numpy(net.encode(x)))[0].numpy(), gold)
    assert res.metrics["integer_accuracy"] > 0.25 and abs(res.metrics["gap_pp"]) <= 0.5     # chance is 0.10


def test_cli_variant_sets_the_bits_and_refuses_a_contradiction(tmp_path):
    r = CliRunner().invoke(main, ["train", "--variant", "mid", "--first-bits", "1", "-o", str(tmp_path / "m.bsnn")])
    assert r.exit_code != 0 and "--variant mid makes the first layer multi-bit, but --first-bits is 1" in r.stderr
    r = CliRunner().invoke(main, ["train", "--variant", "last+mid", "--hidden", "16", "-T", "2", "-e", "1", "-q",
                                  "--json", "-o", str(tmp_path / "l.bsnn")])
    assert r.exit_code == 0, r.output
    cfg = json.loads(r.stdout)["config"]
    assert (cfg["first_bits"], cfg["last_bits"]) == (8, 1)


# --- conv / pool stacks (contract v2) -------------------------------------------------------------------------------

def test_parse_arch():
    from bsnn_hw.train.model import parse_arch
    assert parse_arch("32c3-p2-64c3-p2-256-10") == ([("conv", 32, 3), ("pool", 2), ("conv", 64, 3), ("pool", 2)],
                                                    [256, 10])
    assert parse_arch("784-512-512-10") == ([], [784, 512, 512, 10])
    for bad, msg in (("8c3-32-p2-10", "must come before"), ("8x3-10", "is not <C>c<k>"), ("8c3-p2", "must end with"),
                     ("0c3-10", "positive")):
        with pytest.raises(ValueError, match=msg):
            parse_arch(bad)


@pytest.mark.parametrize("first_bits", [1, 6])
def test_conv_stack_trains_and_exports_bit_exact(tmp_path, first_bits):
    """A conv -> OR pool -> dense network trains on digits, exports as contract-v2 conv2d / pool / dense layers, and
    the golden model predicts exactly the trainer's integer predictions on the whole test split."""
    import bsnn_hw
    from bsnn_hw.data import load_dataset
    cfg = TrainConfig(**{**TINY, "arch": "4c3-p2-16-10", "epochs": 5, "first_bits": first_bits, "timesteps": 8})
    res = fit(cfg, out=tmp_path / "c.bsnn", progress=False)
    net = bsnn_hw.load(tmp_path / "c.bsnn")
    assert [layer.kind for layer in net.layers] == ["conv2d", "pool", "dense", "dense"]
    assert net.layers[0].weight_bits == first_bits and net.layers[0].out_shape == (8, 8, 4)
    assert net.layers[1].out_shape == (4, 4, 4) and net.layers[2].n_in == 64
    x, y = load_dataset("digits", "test")
    gold = golden.run(net, x).prediction
    np.testing.assert_array_equal(integer_simulate(net, torch.from_numpy(net.encode(x)))[0].numpy(), gold)
    assert (gold == y).mean() == pytest.approx(res.metrics["integer_accuracy"])
    assert res.metrics["integer_accuracy"] > 0.25 and abs(res.metrics["gap_pp"]) <= 0.5
    assert res.metrics["sizes"] == [64, 256, 64, 16, 10]


@pytest.mark.parametrize("arch, first_bits", [(None, 1), (None, 8), ("4c3-p2-16-10", 1), ("4c3-p2-16-10", 8)])
def test_pixel_input_trains_and_exports_bit_exact(tmp_path, arch, first_bits):
    """The "pixel" input (contract v4): the intensities are the first layer's current every step. Dense and conv
    first layers, binary and 8-bit, train on digits and export a v4 network whose golden predictions equal the
    trainer's integer predictions on the whole test split; that layer's membrane is PIXEL_EXTRA_BITS wider."""
    import bsnn_hw
    from bsnn_hw.data import load_dataset
    from bsnn_hw.train.model import PIXEL_EXTRA_BITS
    cfg = TrainConfig(**{**TINY, "encoding": "pixel", "arch": arch, "first_bits": first_bits, "epochs": 3})
    res = fit(cfg, out=tmp_path / "p.bsnn", progress=False)
    net = bsnn_hw.load(tmp_path / "p.bsnn")
    assert net.encoding == "pixel" and net.contract_version == 4
    assert net.layers[0].membrane_bits == cfg.membrane_bits + PIXEL_EXTRA_BITS
    assert net.layers[0].weight_bits == first_bits
    x, y = load_dataset("digits", "test")
    gold = golden.run(net, x).prediction
    pred = integer_simulate(net, torch.from_numpy(net.encode(x)).float()[:, None, :])[0].numpy()
    np.testing.assert_array_equal(pred, gold)
    assert (gold == y).mean() == pytest.approx(res.metrics["integer_accuracy"])
    assert res.metrics["integer_accuracy"] > (0.25 if arch else 0.5) and abs(res.metrics["gap_pp"]) <= 0.5


@pytest.mark.parametrize("args, message", [
    (["--encoding", "pixel", "--method", "bstdg"], "the 'pixel' input is trained by --method bsnn only, not 'bstdg'"),
    (["--encoding", "pixel", "--arch", "p2-4c3-10"], "must not start with a pooling layer"),
    (["--encoding", "pixel", "--sizes", "64-8-10", "--first-bits", "8", "--dataset", "digits"], None),
])
def test_cli_pixel_refusals(tmp_path, args, message):
    out = tmp_path / "m.bsnn"
    r = CliRunner().invoke(main, ["train", "--epochs", "1", "-q", "--out", str(out), *args])
    if message is None:              # 64 inputs x 128 x 255 stays below 2^24: trains
        assert r.exit_code == 0, r.output
        return
    assert r.exit_code != 0 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not out.exists()


def test_pixel_sums_past_float32_are_refused():
    from bsnn_hw.train.model import BSNN
    with pytest.raises(ValueError, match=r"can reach 25,589,760 \(fan-in 784 x weight 128 x input 255\), past the "
                                         r"2\^24"):
        BSNN([784, 16, 10], 4, first_bits=8, input_max=255)
    BSNN([784, 16, 10], 4, first_bits=7, input_max=255)


@pytest.mark.parametrize("arch", ["4c3-s2-16-10", "4c3-s2-6c3-s2-10"])
def test_sum_pooling_trains_and_folds_bit_exact(tmp_path, arch):
    """Sum pooling (s<n>) trains on spike counts and is folded into the layer it feeds at export (docs/spec.md 8.5):
    the artifact has no pool layer there, the folded network's integer membranes equal the float model's, and its
    golden predictions equal the trainer's integer predictions on the whole test split."""
    import bsnn_hw
    from bsnn_hw.data import load_dataset
    res = fit(TrainConfig(**{**TINY, "arch": arch, "epochs": 2}), out=tmp_path / "s.bsnn", progress=False)
    net = bsnn_hw.load(tmp_path / "s.bsnn")
    assert [layer.kind for layer in net.layers] == (["conv2d", "dense", "dense"] if arch.count("c") == 1
                                                    else ["conv2d", "conv2d", "dense"])
    if arch.count("c") == 2:          # 6c3 on the 4x4 pooled map -> k 6, stride 2, padding 2 on the 8x8 map
        assert (net.layers[1].kernel, net.layers[1].stride, net.layers[1].padding) == (6, 2, 2)
    assert res.metrics["gap_pp"] == 0
    assert res.metrics["sizes"] == net.sizes and len(res.metrics["thresholds_clamped"]) == len(net.layers)
    x, y = load_dataset("digits", "test")
    spikes = torch.from_numpy(net.encode(x))
    model = res.model.eval()
    with torch.no_grad():
        model(spikes.float())
    float_membrane = model.lifs[-1].last_membrane
    pred, _, membranes = integer_simulate(net, spikes)
    np.testing.assert_array_equal(float_membrane.numpy(), membranes[-1].numpy())
    gold = golden.run(net, x).prediction
    np.testing.assert_array_equal(pred.numpy(), gold)
    assert (gold == y).mean() == pytest.approx(res.metrics["integer_accuracy"])


@pytest.mark.parametrize("arch, message", [
    ("s2-4c3-10", "a sum pool (s<n>) must follow a conv layer"),
    ("4c3-p2-s2-10", "a sum pool (s<n>) must follow a conv layer"),
    ("4c3-s2-p2-10", "must feed a conv or dense layer, not another pool"),
    ("4c3-s3-10", "sum pooling 3x3 needs a map whose sides are multiples of 3"),
    ("4c3-x2-10", "is not <C>c<k> (conv), p<n> (OR pool), s<n> (sum pool) or a layer size"),
])
def test_cli_sum_pool_refusals(tmp_path, arch, message):
    out = tmp_path / "m.bsnn"
    r = CliRunner().invoke(main, ["train", "--arch", arch, "-e", "1", "-q", "-o", str(out)])
    assert r.exit_code != 0 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not out.exists()


def test_cli_arch_errors(tmp_path):
    r = CliRunner().invoke(main, ["train", "--arch", "4c3-10", "--hidden", "16", "-o", str(tmp_path / "m.bsnn")])
    assert r.exit_code != 0 and "--arch gives every layer" in r.stderr
    r = CliRunner().invoke(main, ["train", "--arch", "4c3-p2-7", "-e", "1", "-o", str(tmp_path / "m.bsnn")])
    assert r.exit_code != 0 and "ends with 7 outputs but digits has 10 classes" in r.stderr
    assert not (tmp_path / "m.bsnn").exists()


# --- the training step (train/graphs.py): the same step eagerly and, on CUDA, as a CUDA graph ---------------------

def test_dropout_noise_gives_the_masks_forward_draws():
    """The CUDA-graph step draws dropout before the forward pass (it cannot draw inside): the masks must be those
    forward draws from the same generator, conv layers included."""
    torch.manual_seed(0)
    model = BSNN([64, 24, 10], 6, leak_shift=4, dropout=0.4, conv=[("conv", 2, 3), ("pool", 2)],
                 input_shape=(8, 8, 1)).train()
    assert model.dropout_widths() == [8 * 8 * 2, 24]
    spikes = (torch.rand(5, 6, 64) < 0.4).float()
    inline = model(spikes, generator=torch.Generator().manual_seed(7))
    model.dropout_rows = (0, 5, 5)
    noise = model.dropout_noise(torch.Generator().manual_seed(7))
    assert [tuple(n.shape) for n in noise] == [(5, 1, 128), (5, 1, 24)]
    drawn = model(spikes, noise=noise)
    assert torch.equal(inline, drawn)
    other = model(spikes, noise=model.dropout_noise(torch.Generator().manual_seed(8)))
    assert not torch.equal(inline, other)             # the draws matter: the comparison above can fail
    # a process of a distributed batch keeps its rows of the whole batch's draws
    model.dropout_rows = (2, 4, 5)
    part = model.dropout_noise(torch.Generator().manual_seed(7))
    assert all(torch.equal(p, n[2:4]) for p, n in zip(part, noise))


def test_train_step_is_the_plain_step():
    """TrainStep (eager: every CPU step) against the step written out by hand: encode, forward, loss, backward,
    Adam, clip; the running sums it keeps on the device."""
    from bsnn_hw.train.graphs import TrainStep
    from bsnn_hw.train.trainer import Encoder
    torch.manual_seed(3)
    a = BSNN([64, 32, 10], 8, leak_shift=4, dropout=0.2).train()
    b = BSNN([64, 32, 10], 8, leak_shift=4, dropout=0.2).train()
    b.load_state_dict(a.state_dict())
    enc = Encoder("rate", 64, 8, "cpu")
    opt_a = torch.optim.Adam(a.parameters(), lr=1e-2)
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-2)
    step = TrainStep(a, a, enc, opt_a, 0.1, batch_size=16, device=torch.device("cpu"), graphs=True)
    assert not step.graphs                             # CUDA only
    g = torch.Generator().manual_seed(1)
    losses, correct = 0.0, 0
    for i in range(3):
        x = torch.randint(0, 256, (16, 64), dtype=torch.uint8, generator=g)
        seeds = torch.randint(1, 1000, (16,), generator=g)
        y = torch.randint(0, 10, (16,), generator=g)
        a.dropout_rows = b.dropout_rows = (0, 16, 16)
        noise = a.dropout_noise(torch.Generator().manual_seed(i))
        step.step(x, seeds, y, noise)
        logits = b(enc(x, seeds), noise=noise)
        loss = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)
        opt_b.zero_grad()
        loss.backward()
        opt_b.step()
        b.clip_()
        losses += float(loss.detach()) * 16
        correct += int((logits.argmax(1) == y).sum())
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    got_loss, got_correct = step.take_totals()
    assert got_loss == pytest.approx(losses, rel=1e-6) and got_correct == correct
    assert step.take_totals() == (0.0, 0)
    assert all(lif.last_membrane is None or lif.last_membrane.grad_fn is None for lif in a.lifs)


def test_learning_rates_as_tensors_and_back():
    from bsnn_hw.train.graphs import device_learning_rates, host_learning_rates
    from bsnn_hw.train.trainer import cosine_schedule
    w = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.Adam([w], lr=0.5)
    sched = cosine_schedule(opt, 4)
    device_learning_rates(opt)
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and float(lr) == 0.5
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(0.5 * (1 + np.cos(np.pi / 4)) / 2)
    state = host_learning_rates(opt.state_dict())
    assert isinstance(state["param_groups"][0]["lr"], float)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_and_eager_training_agree_with_device_dropout_draws():
    """On CUDA the trainer draws the dropout masks on the GPU and the graph step copies them device to device: a
    conv network with dropout trains to bit-identical weights eagerly and as CUDA graphs, and the draws matter."""
    def weights(graphs, dropout=0.3):
        cfg = TrainConfig(dataset="digits", arch="4c3-p2-10", timesteps=4, epochs=1, batch_size=32, lr=1e-2,
                          dropout=dropout, device="cuda", cuda_graphs=graphs)
        r = fit(cfg, progress=False)
        assert r.metrics.get("cuda_graphs", {"used": False})["used"] == graphs
        return {k: v.detach().cpu() for k, v in r.model.state_dict().items()}
    eager, graph = weights(False), weights(True)
    assert all(torch.equal(eager[k], graph[k]) for k in eager), [k for k in eager
                                                                  if not torch.equal(eager[k], graph[k])]
    other = weights(True, dropout=0.0)
    assert not all(torch.equal(other[k], graph[k]) for k in graph)


def test_cuda_graphs_setting_is_checked_and_resume_free(tmp_path):
    with pytest.raises(ValueError, match="cuda_graphs must be true or false, not 'yes'"):
        TrainConfig(cuda_graphs="yes").validate()
    from bsnn_hw.train.trainer import config_differences
    assert config_differences(TrainConfig().to_dict(), TrainConfig(cuda_graphs=False).to_dict()) == []
    r = CliRunner().invoke(main, ["train", "--no-cuda-graphs", "--hidden", "8", "--epochs", "1", "-T", "2", "-q",
                                  "--device", "cpu", "--out", str(tmp_path / "m.bsnn")])
    assert r.exit_code == 0, r.output


def test_lif_recurrence_runs_on_one_thread_and_restores_the_count():
    from bsnn_hw.train import layers
    seen = []
    wrapped = layers.serial_on_cpu(lambda x: seen.append(torch.get_num_threads()) or x)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        wrapped(torch.zeros(2))
        assert seen == [1] and torch.get_num_threads() == 2
        wrapped(3)                                     # no tensor: left alone
        assert seen == [1, 2]
        with pytest.raises(ZeroDivisionError):         # restored on errors too
            layers.serial_on_cpu(lambda x: 1 / 0)(torch.zeros(1))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def _steps(counts, sizes=(64, 40, 24, 10), first_bits=1, steps=4):
    """Train a small dense network for ``len(counts)`` steps inside ``cpu_parallelism``, step i on ``counts[i]``
    workers; returns the state dict."""
    from bsnn_hw.train.graphs import TrainStep
    from bsnn_hw.train.trainer import Encoder, cpu_parallelism
    torch.manual_seed(0)
    model = BSNN(list(sizes), 6, leak_shift=3, dropout=0.1, first_bits=first_bits).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    trainer = TrainStep(model, model, Encoder("rate", sizes[0], 6, "cpu"), opt, 0.1, 70, torch.device("cpu"), False)
    rng = np.random.default_rng(1)
    gen = torch.Generator().manual_seed(2)
    with cpu_parallelism(model, torch.device("cpu"), "fp32") as workers:
        assert torch.get_num_threads() == 1
        for count in counts:
            workers.set(count)
            x = torch.from_numpy(rng.integers(0, 256, (70, sizes[0]), dtype=np.uint8))
            y = torch.from_numpy(rng.integers(0, sizes[-1], 70))
            with workers.timed():
                trainer.step(x, torch.from_numpy(rng.integers(1, 65536, 70)), y, model.dropout_noise(gen, 70))
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("first_bits", [1, 4])
def test_cpu_steps_are_the_same_for_any_worker_count(first_bits):
    """Inside ``cpu_parallelism`` the work is cut into parts by shape alone and part sums are added in part order:
    training on 1 worker, on 2, on 3 and switching between them every step gives the same weights, scales and Adam
    state bit for bit (binary layers, and a 4-bit first layer through the pooled float product); the thread count
    is restored after the block."""
    before = torch.get_num_threads()
    runs = [_steps(c, first_bits=first_bits) for c in ([1] * 4, [2] * 4, [3] * 4, [2, 1, 3, 1])]
    assert torch.get_num_threads() == before
    for run in runs[1:]:
        assert run.keys() == runs[0].keys()
        assert all(torch.equal(run[k], runs[0][k]) for k in run), [k for k in run
                                                                    if not torch.equal(run[k], runs[0][k])]
    assert not torch.equal(runs[0]["fcs.0.weight"], _steps([1] * 3, first_bits=first_bits)["fcs.0.weight"])


def test_fit_gives_the_same_network_for_any_thread_count(tmp_path):
    """The user-facing promise: ``bsnn-hw train --threads 1`` and ``--threads 2`` write the same network (dense, CPU),
    and the metrics say how many steps ran on each worker count."""
    nets = [fit(TrainConfig(**{**TINY, "threads": t}), out=tmp_path / f"t{t}.bsnn", progress=False)
            for t in (1, 2)]
    a, b = (r.model.state_dict() for r in nets)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert nets[0].metrics["integer_accuracy"] == nets[1].metrics["integer_accuracy"]
    m1, m2 = nets[0].metrics, nets[1].metrics
    steps = TINY["epochs"] * -(-m1["train_samples"] // TINY["batch_size"])
    assert m1["worker_steps"] == {"1": steps}
    assert sorted(m2["worker_steps"]) == ["1", "2"] and sum(m2["worker_steps"].values()) == steps


@pytest.mark.parametrize("extra", [{}, {"arch": "4c3-p2-8c3-16-10", "encoding": "pixel", "first_bits": 4}],
                         ids=["dense", "conv-pixel"])
def test_training_reads_no_uninitialized_memory(monkeypatch, extra):
    """The trainer turns off torch's filling of new tensors (train/trainer.py ``deterministic``) because every
    element it allocates is written before it is read: with the filling on (NaN in every new float tensor) training
    gives the same weights bit for bit."""
    from bsnn_hw.train import trainer
    cfg = TrainConfig(**{**TINY, **extra})
    plain = fit(cfg, progress=False).model.state_dict()

    def filling(on=True):
        torch.use_deterministic_algorithms(on, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = True
    monkeypatch.setattr(trainer, "deterministic", filling)
    try:
        filled = fit(cfg, progress=False).model.state_dict()
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = False
    assert torch.utils.deterministic.fill_uninitialized_memory is False
    assert all(torch.equal(plain[k], filled[k]) for k in plain)


def _parts_in_child(queue):
    from bsnn_hw.train.layers import _in_parts, cpu_workers
    done = []
    with cpu_workers(2):
        _in_parts(64, done.append)
    queue.put(len(done))


def test_worker_pool_runs_in_a_forked_child(in_forked_child):
    """The parent's worker pool has no threads in a forked child (a multiprocessing worker): the child makes its
    own instead of waiting for ever on the parent's."""
    from bsnn_hw.train.layers import PART_ROWS, _in_parts, _parts, cpu_workers
    with cpu_workers(2):
        _in_parts(64, lambda r: None)                 # the parent's pool now exists
    assert in_forked_child(_parts_in_child) == len(_parts(64, PART_ROWS))


def test_worker_count_follows_the_measured_step_times():
    """WorkerCount on a fake clock: on a quiet machine (2 workers faster) it stays on 2 apart from probes of 1; on a
    busy one (2 workers slower) it settles on 1, and probes of 2 grow rarer as they keep losing; when the load goes
    away it returns to 2 at the next probe. Step times closer than the margin do not move it."""
    from bsnn_hw.train.layers import WorkerCount, cpu_workers
    now = [0.0]
    cost = {}

    def run(workers, steps):
        for _ in range(steps):
            with workers.timed():
                now[0] += cost[workers.count]

    with cpu_workers(2):
        w = WorkerCount(2, window=4, explore=3, clock=lambda: now[0])
        cost.update({1: 0.020, 2: 0.012})                          # quiet
        run(w, 400)
        assert w.count == 2 and w.steps[1] < 0.2 * w.steps[2], w.steps
        cost.update({1: 0.020, 2: 0.030})                          # another job takes a core
        before = dict(w.steps)
        assert w.gap == 8 * 3                                      # probes of 1 kept losing
        run(w, 4)                                                  # one slow window on 2: to 1 at once, and
        assert w.count == 1 and w.best == 1 and w.next_probe == w.windows + 3   # 2 probed again soon
        run(w, 2000)
        on_two = w.steps[2] - before[2]
        assert w.count == 1 and on_two < 0.05 * 2000, w.steps
        assert w.gap == 8 * 3                                      # probes backed off to the longest gap
        cost.update({1: 0.020, 2: 0.012})                          # quiet again
        run(w, 8 * 3 * 4 + 8)
        assert w.count == 2 and w.gap < 8 * 3                     # the winning probe reset the gap
        # differences inside the margin (5 %) do not move it; one beyond it does, at the next probe
        w = WorkerCount(2, window=4, explore=3, clock=lambda: now[0])
        cost.update({1: 0.020, 2: 0.0195})
        run(w, 40)
        cost.update({1: 0.0195, 2: 0.020})
        run(w, 400)
        assert w.count == 2 and w.best == 2, w.steps
        cost.update({1: 0.018, 2: 0.020})
        run(w, 8 * 3 * 4 + 8)
        assert w.count == 1 and w.best == 1, w.steps
        # a probe is compared with the window just before it, not with later ones: a lost probe of 2 workers
        # (inside the margin) does not win when the load slows the next windows on 1
        w = WorkerCount(2, window=4, explore=3, clock=lambda: now[0])
        cost.update({1: 0.020, 2: 0.030})
        run(w, 20)                                                 # 2 (start), probe of 1 (wins), 1, 1, 1
        assert w.best == 1 and w.count == 2                        # the next window probes 2
        cost[2] = 0.0195
        run(w, 4)                                                  # the probe loses: 0.0195 is within 5 % of 0.020
        cost.update({1: 0.021, 2: 0.030})
        run(w, 8)
        assert w.best == 1 and w.steps[2] == 8, w.steps            # two windows of 2: the start and the probe
        single = WorkerCount(1, clock=lambda: now[0])              # one thread: nothing to choose
        cost[1] = 0.01
        run(single, 50)
        assert single.count == 1 and single.steps == {1: 50}
    with pytest.raises(ValueError, match="threads must be a positive integer, not 0"):
        with cpu_workers(0):
            pass


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("batch, shared", [(6, False), (40, False), (40, True)])
def test_compiled_lif_equals_the_torch_path(monkeypatch, exact, batch, shared):
    """The compiled CPU recurrence (train/kernels.py) runs the torch path's float32 operations in the same order:
    spikes, membranes and the input-current gradient are bit for bit the same, over saturation (M = 8), both resets,
    fire-once, leak and none; the threshold gradient (a sum over the batch in another order) up to rounding. A batch
    of 40 runs in three parts on two workers, with a dropout mask fused into the recurrence; ``shared``: one current
    expanded over the steps (a "pixel" layer)."""
    import itertools

    from bsnn_hw.train import layers
    g = torch.Generator().manual_seed(3)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # serial_on_cpu keeps 2 for the torch path
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    cases = list(itertools.product([None, 1, 3], ["subtract", "zero"], [False, True], [8, 16], [True]))
    cases += [(leak, "subtract", False, bits, False) for leak in (None, 3) for bits in (8, 16)]   # a membrane readout
    for leak, reset, once, bits, fires in cases:
        lif = LIF(1.0, leak, reset, bits, once, exact=exact, fires=fires)
        if shared:
            base = (torch.randn(batch, 1, 33, generator=g) * 10).round().requires_grad_()
            cur = base.expand(-1, 20, -1)
        else:
            cur = base = (torch.randn(batch, 20, 33, generator=g) * 40).round().requires_grad_()
        scale = (torch.rand(33, generator=g) * 0.2 + 0.02).requires_grad_()
        w_out, w_mem = torch.randn(batch, 20, 33, generator=g), torch.randn(batch, 33, generator=g)
        keep = torch.rand(batch, 1, 33, generator=g) >= 0.3 if batch > 6 else None     # a dropout mask
        results = []
        for compiled in (True, False):
            monkeypatch.setattr(layers, "CPU_KERNELS", compiled)
            out = lif(cur, scale, keep)
            grads = torch.autograd.grad((out * w_out).sum() + (lif.last_membrane * w_mem).sum(), [base, scale],
                                        allow_unused=not fires)
            results.append((out.detach(), lif.last_membrane.detach(), grads))
        (o1, m1, (gc1, gs1)), (o2, m2, (gc2, gs2)) = results
        case = (leak, reset, once, bits, fires)
        assert o1.sum() > 0 or not fires, case
        assert torch.equal(o1, o2) and torch.equal(m1, m2) and torch.equal(gc1, gc2), case
        # float32 sums over the batch in two orders: equal to rounding of the largest terms
        if fires:
            torch.testing.assert_close(gs1, gs2, rtol=1e-5, atol=1e-6 * float(gs2.abs().max()) + 1e-6, msg=str(case))
        else:
            assert gs1 is None and gs2 is None, case
    monkeypatch.undo()
    torch.set_num_threads(threads)


def test_auto_precision_keeps_dense_cpu_networks_on_the_compiled_kernels(monkeypatch):
    # On a CPU with AVX512-BF16 "auto" used to pick bf16 for every network, which bypasses the compiled kernels
    # (slower there, and the weights then depend on --threads); dense networks now stay in fp32.
    from bsnn_hw.train import layers
    from bsnn_hw.train.trainer import pick_precision
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert pick_precision("auto", cpu, dense=True) == "fp32"
    assert pick_precision("auto", cpu, dense=False) == "bf16"               # conv: torch's bf16 products
    monkeypatch.setattr(layers, "CPU_KERNELS", False)
    assert pick_precision("auto", cpu, dense=True) == "bf16"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert pick_precision("auto", cpu, dense=False) == "fp32"
    assert pick_precision("bf16", cpu, dense=True) == "bf16"                # asked for: as asked
    assert pick_precision("auto", torch.device("cuda"), dense=True) == "bf16"
