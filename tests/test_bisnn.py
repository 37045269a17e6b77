"""BiSNN (``--method bisnn``), ensembles and ``bsnn-hw calibrate``: the artifact's ensemble extension (format 3, older
versions unchanged), the ensemble's integers against its members run one by one, the refusals, a tiny training run
whose MAP network and members the golden model reproduces, and the calibration metrics against hand-written
references. Every run here is tiny (seconds)."""
from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import bsnn_hw
from bsnn_hw import ArtifactError, Layer, Network, artifact, calibrate, data, golden
from bsnn_hw import ensemble as ens
from bsnn_hw.cli import main
from bsnn_hw.network import random_network

TINY = dict(dataset="digits", hidden=[24], timesteps=4, epochs=2, batch_size=64, bisnn_lr=0.3, bisnn_members=3,
            threads=1, device="cpu")


# --- helpers ---------------------------------------------------------------------------------------------------

def split(blob: bytes):
    (hlen,) = struct.unpack("<I", blob[4:8])
    return json.loads(blob[8:8 + hlen]), blob[8 + hlen:-32]


def build(header: dict, payload: bytes) -> bytes:
    """An artifact with a correct checksum, so that only content validation can catch an edit."""
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = b"BSNN" + struct.pack("<I", len(head)) + head + payload
    return body + hashlib.sha256(body).digest()


def with_ensemble(net: Network, count: int, seed: int = 0) -> Network:
    rng = np.random.default_rng(seed)
    members = [[rng.random(layer.weights.shape) < 0.5 for layer in net.layers] for _ in range(count)]
    return Network(net.layers, net.timesteps, net.readout, net.encoding, net.seed, metadata=dict(net.metadata),
                   ensemble=members)


def small(readout="count", seed=1, sizes=(20, 12, 5), timesteps=6) -> Network:
    net = random_network(list(sizes), timesteps=timesteps, seed=seed)
    layers = list(net.layers)
    if readout == "membrane":
        last = layers[-1]
        layers[-1] = Layer(last.weights, None, last.leak_shift, last.reset, last.membrane_bits, last.fire_once)
    return Network(layers, net.timesteps, readout, net.encoding, net.seed)


# --- artifact ----------------------------------------------------------------------------------------------------

def test_artifact_round_trip_identity_and_version():
    plain = small()
    net = with_ensemble(plain, 4)
    blob = artifact.to_bytes(net)
    header, payload = split(blob)
    assert header["format_version"] == 3 and header["ensemble"]["members"] == 4
    back = artifact.from_bytes(blob)
    assert back == net and len(back.ensemble) == 4 and back.identity() == net.identity()
    for m_in, m_out in zip(net.ensemble, back.ensemble):
        for a, b in zip(m_in, m_out):
            np.testing.assert_array_equal(a, b)
    # a plain network keeps its version and identity: the ensemble adds to them and is covered by the identity
    assert split(artifact.to_bytes(plain))[0]["format_version"] == 1
    assert "ensemble" not in split(artifact.to_bytes(plain))[0]
    assert net.identity() != plain.identity()
    flipped = [list(m) for m in net.ensemble]
    flipped[3][1] = ~flipped[3][1]
    other = Network(net.layers, net.timesteps, net.readout, net.encoding, net.seed, ensemble=flipped)
    assert other.identity() != net.identity() and other != net
    fewer = Network(net.layers, net.timesteps, net.readout, net.encoding, net.seed, ensemble=net.ensemble[:3])
    assert fewer.identity() != net.identity()


def test_older_versions_still_load(tmp_path):
    plain = small()
    v1 = artifact.to_bytes(plain)
    assert artifact.from_bytes(v1) == plain and not artifact.from_bytes(v1).ensemble
    wide = Network([Layer(np.ones((5, 20), dtype=np.int8), 3, weight_bits=4)], 4, "count", "rate")
    v2 = artifact.to_bytes(wide)
    assert split(v2)[0]["format_version"] == 2 and artifact.from_bytes(v2) == wide
    # an ensemble over k-bit layers is stored as those layers are
    wide_e = Network(wide.layers, 4, "count", "rate", ensemble=[[np.full((5, 20), -3, dtype=np.int8)]])
    assert artifact.from_bytes(artifact.to_bytes(wide_e)) == wide_e


@pytest.mark.parametrize("edit, message", [
    (lambda h, p: ({**h, "format_version": 2}, p), r"ensemble needs format version 3, the file says 2"),
    (lambda h, p: ({**h, "ensemble": {**h["ensemble"], "nbytes": 10}}, p), r"ensemble: takes 10 bytes"),
    (lambda h, p: ({**h, "ensemble": {**h["ensemble"], "members": 0}}, p), r"members must be at least 1"),
    (lambda h, p: ({**h, "ensemble": {**h["ensemble"], "offset": 1}}, p), r"must start at byte"),
    (lambda h, p: ({**h, "ensemble": [1]}, p), r"ensemble: must be an object"),
    (lambda h, p: ({**h, "ensemble": {"members": 2}}, p), r"missing field 'offset'"),
])
def test_bad_ensemble_headers_are_refused(edit, message):
    header, payload = split(artifact.to_bytes(with_ensemble(small(), 2)))
    with pytest.raises(ArtifactError, match=message) as e:
        artifact.from_bytes(build(*edit(header, payload)))
    assert "\n" not in str(e.value)


def test_padding_bits_of_members_must_be_zero():
    net = with_ensemble(small(sizes=(13, 6, 3)), 2)        # 13 inputs: 3 padding bits per packed row
    header, payload = split(artifact.to_bytes(net))
    payload = bytearray(payload)
    payload[header["ensemble"]["offset"] + 1] |= 0x80
    with pytest.raises(ArtifactError, match=r"member 0, weighted layer 0: padding bits"):
        artifact.from_bytes(build(header, bytes(payload)))


@pytest.mark.parametrize("ensemble, exc, message", [
    ([], ValueError, r"at least 1 member"),
    ([[np.zeros((12, 20), bool)]], ValueError, r"member 0 has 1 weight arrays but the network has 2"),
    ([[np.zeros((12, 20), bool), np.zeros((5, 11), bool)]], ValueError, r"member 0, weighted layer 1: .*shape"),
    ([[np.zeros((12, 20), np.int8), np.zeros((5, 12), bool)]], TypeError, r"member 0, weighted layer 0: .*bool"),
    (np.zeros((1, 2)), TypeError, r"ensemble must be a list of members"),
    ([np.zeros((12, 20), bool)], TypeError, r"member 0 must be a list of weight arrays"),
])
def test_bad_ensembles_are_refused(ensemble, exc, message):
    net = small()
    with pytest.raises(exc, match=message):
        Network(net.layers, net.timesteps, net.readout, net.encoding, net.seed, ensemble=ensemble)


# --- ensemble inference ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("readout", ["count", "membrane"])
def test_ensemble_equals_members_run_one_by_one(readout):
    net = with_ensemble(small(readout), 5, seed=7)
    x, _ = data.load_dataset("digits", "test")
    x = x[:60, :20]
    got = ens.run(net, x)
    assert [len(m.layers) for m in ens.members(net)] == [2] * 5 and ens.members(small(readout)) == []
    totals = np.zeros((60, 5), dtype=np.int64)
    votes = np.zeros((60, 5), dtype=np.int64)
    spikes = net.encode(x)
    for weights, result in zip(net.ensemble, got.members):
        # each member built here from its weights alone, independently of ensemble.members()
        layers = [Layer(w, layer.threshold, layer.leak_shift, layer.reset, layer.membrane_bits, layer.fire_once)
                  for w, layer in zip(weights, net.layers)]
        member = Network(layers, net.timesteps, readout, net.encoding, net.seed)
        r = golden.simulate(member, spikes)
        score = r.counts[-1] if readout == "count" else r.membrane[-1]
        np.testing.assert_array_equal(result.prediction, r.prediction)
        totals += score
        for n, c in enumerate(r.prediction):
            votes[n, c] += 1
    np.testing.assert_array_equal(got.totals, totals)
    np.testing.assert_array_equal(got.votes, votes)
    assert (got.votes.sum(1) == 5).all()
    for n in range(60):          # the contract's argmax: the first of the largest totals
        assert got.prediction[n] == min(c for c in range(5) if totals[n, c] == totals[n].max())
    np.testing.assert_array_equal(ens.simulate(net, spikes).totals, got.totals)


def test_ensemble_refusals():
    with pytest.raises(ValueError, match=r"carries no ensemble"):
        ens.run(small(), np.zeros((1, 20), np.uint8))
    first = small()
    first = Network(first.layers, first.timesteps, "first", first.encoding, first.seed)
    with pytest.raises(ValueError, match=r"readout 'first' .* not supported for ensembles"):
        ens.run(with_ensemble(first, 2), np.zeros((1, 20), np.uint8))
    with pytest.raises(ValueError, match=r"scale must be a positive number"):
        ens.confidence(np.zeros((1, 3)), np.zeros((1, 3)), 2, 0.0)
    with pytest.raises(ValueError, match=r"confidence must be one of mean-logit, votes"):
        ens.confidence(np.zeros((1, 3)), np.zeros((1, 3)), 2, 1.0, kind="max")


def test_confidence_functions():
    totals = np.array([[10, 20, 0], [4, 4, 4]])
    votes = np.array([[1, 3, 0], [2, 1, 1]])
    p = ens.confidence(totals, votes, 4, 0.5)
    e = np.exp(0.5 * totals / 4)
    np.testing.assert_allclose(p, e / e.sum(1, keepdims=True))
    np.testing.assert_allclose(ens.confidence(totals, votes, 4, 1.0, "votes"),
                               (votes + 0.5) / (4 + 1.5))


# --- calibration metrics -----------------------------------------------------------------------------------------

def reference_ece(conf, correct, bins=15):
    """ECE written out as a loop over bins ((m-1)/bins, m/bins]."""
    total = 0.0
    for m in range(1, bins + 1):
        lo, hi = (m - 1) / bins, m / bins
        members = [i for i, c in enumerate(conf) if (lo < c <= hi) or (m == 1 and c == 0)]
        if members:
            acc = sum(correct[i] for i in members) / len(members)
            avg = sum(conf[i] for i in members) / len(members)
            total += len(members) / len(conf) * abs(acc - avg)
    return total


def test_ece_against_a_hand_written_reference():
    rng = np.random.default_rng(5)
    conf = rng.uniform(0.1, 1.0, 200)
    conf[:5] = [1 / 15, 2 / 15, 1.0, 0.5, 14 / 15]          # bin edges go to the lower bin
    correct = rng.random(200) < conf
    assert calibrate.ece(conf, correct) == pytest.approx(reference_ece(conf, correct), abs=1e-12)
    # worked by hand: two samples at 0.9 (one right), two at 0.3 (both wrong): 2/4*|0.5-0.9| + 2/4*|0-0.3| = 0.35
    assert calibrate.ece([0.9, 0.9, 0.3, 0.3], [True, False, False, False]) == pytest.approx(0.35)


def test_nll_and_brier_by_hand():
    prob = np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]])
    s = calibrate.scores(prob, np.array([0, 2]), np.array([0, 1]))
    assert s["accuracy"] == 0.5
    assert s["nll"] == pytest.approx(-(np.log(0.7) + np.log(0.25)) / 2)
    assert s["brier"] == pytest.approx(((0.3 ** 2 + 0.2 ** 2 + 0.1 ** 2) + (0.25 ** 2 + 0.75 ** 2 + 0.5 ** 2)) / 2)
    assert s["ece"] == pytest.approx(0.5 * abs(1 - 0.7) + 0.5 * abs(0 - 0.5))
    with pytest.raises(ValueError, match=r"labels must be classes 0..2"):
        calibrate.scores(prob, np.array([0, 2]), np.array([0, 3]))


# --- training ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from bsnn_hw.train import bisnn
    from bsnn_hw.train.trainer import fit
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bisnn") / "m.bsnn"
    return fit(bisnn.config(**TINY), out=out, progress=False), out


def test_training_exports_map_and_members_exactly(trained):
    from bsnn_hw.train.trainer import Encoder, integer_accuracy
    from bsnn_hw.train.bisnn import integer_ensemble
    result, out = trained
    net = bsnn_hw.load(out)
    assert net == result.network and len(net.ensemble) == 3
    m = result.metrics
    assert m["method"] == "bisnn" and m["gap_pp"] == 0 and m["output_scale"] > 0
    assert net.metadata["metrics"]["output_scale"] == m["output_scale"]
    # MAP = sign of the latent natural parameters
    model = result.model
    for layer, fc in zip(net.layers, model.fcs):
        np.testing.assert_array_equal(layer.weights, fc.weight.detach().numpy() > 0)
    # the golden model reproduces the trainer's integer predictions of the MAP network and of the ensemble
    x, y = data.load_dataset("digits", "test")
    g = golden.run(net, x)
    enc = Encoder("rate", x.shape[1], net.timesteps, "cpu")
    acc, pred = integer_accuracy(net, enc, torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_array_equal(g.prediction, pred)
    assert acc == pytest.approx(m["integer_accuracy"])
    er = ens.run(net, x)
    ie = integer_ensemble(net, enc, torch.from_numpy(x))
    np.testing.assert_array_equal(er.totals, ie["totals"])
    np.testing.assert_array_equal(er.votes, ie["votes"])
    assert float((er.prediction == y).mean()) == pytest.approx(m["ensemble_accuracy"])


def test_members_are_seeded_samples_of_the_posterior(trained):
    from bsnn_hw.train.bisnn import sample_members
    result, _ = trained
    a = sample_members(result.model, 2, seed=11)
    b = sample_members(result.model, 2, seed=11)
    c = sample_members(result.model, 2, seed=12)
    assert all(np.array_equal(x, y) for ma, mb in zip(a, b) for x, y in zip(ma, mb))
    assert not all(np.array_equal(x, y) for ma, mc in zip(a, c) for x, y in zip(ma, mc))
    # the frequency of +1 follows sigmoid(2 w_r): 400 draws, a loose 5-sigma band per weight on average
    w_r = result.model.fcs[1].weight.detach()
    draws = np.mean([m[1] for m in sample_members(result.model, 400, seed=3)], axis=0)
    p = torch.sigmoid(2 * w_r).numpy()
    assert np.abs(draws - p).mean() < 5 * np.sqrt(0.25 / 400)


def test_training_cli_and_refusals(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["train", "--members", "4", "--epochs", "1", "--out", str(tmp_path / "x.bsnn"), "-q"])
    assert r.exit_code != 0 and "--members only apply to --method bisnn" in r.output
    for flags, message in [(["--tau", "0"], "tau must be positive"), (["--prior", "1"], "prior must be a probability"),
                           (["--members", "0"], "members must be in 1..1024"),
                           (["--mc-samples", "0"], "mc-samples must be at least 1"),
                           (["--variant", "mid"], "learns binary weights only"),
                           (["--bisnn-init", "0"], "init must be positive"),
                           (["--val-samples", "5000"], "val_samples must be in 0.."),
                           (["--rho", "-1"], "rho must be a number >= 0, 'elbo'"),
                           (["--rho", "-0.5/N"], "rho must be a number >= 0, 'elbo'"),
                           (["--prior", "0.7", "--rho", "0"], "has no effect with rho 0")]:
        r = runner.invoke(main, ["train", "--method", "bisnn", "--epochs", "1", "--out", str(tmp_path / "y.bsnn"),
                                 "-q", *flags])
        assert r.exit_code == 1 and message in r.output, (flags, r.output)
        assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "y.bsnn").exists()
    r = runner.invoke(main, ["train", "--method", "bisnn", "--rho", "half", "--out", str(tmp_path / "y.bsnn")])
    assert r.exit_code == 2 and "is not a number >= 0, 'elbo'" in r.output


def test_prior_weight():
    """rho: "0.03/N" by default, "elbo" or None 1 / training samples, "X/N" X / training samples, else the number
    given; anything else refused in one line."""
    from bsnn_hw.train import bisnn
    from bsnn_hw.train.trainer import TrainConfig
    assert TrainConfig(method="bisnn").bisnn_rho == "0.03/N"
    for given, expected in [(None, 1 / 500), ("elbo", 1 / 500), (0, 0.0), (1e-3, 1e-3), ("0.03/N", 0.03 / 500),
                            (" 2/n", 2 / 500), ("1e-3", 1e-3), ("0/N", 0.0)]:
        cfg = TrainConfig(method="bisnn", bisnn_rho=given, bisnn_prior=0.7 if expected else 0.5).validate()
        assert bisnn.prior_weight(cfg, 500) == expected, given
    assert bisnn.parse_rho("0.5/N") == "0.5/N" and bisnn.parse_rho("5e-1/N") == "0.5/N"
    for bad in ("half", "/N", "x/N", True, [1]):
        with pytest.raises(ValueError, match="is not a number >= 0"):
            bisnn.parse_rho(bad)
    with pytest.raises(ValueError, match="rho must be a number >= 0"):
        TrainConfig(method="bisnn", bisnn_rho="inf/N").validate()


# --- calibrate command -------------------------------------------------------------------------------------------

def test_validation_slice_is_held_out():
    from bsnn_hw.train.trainer import TrainConfig, load_data, validation_split
    cfg = TrainConfig(dataset="digits", val_samples=100)
    xtr, ytr, _, _ = load_data(cfg)
    full, _ = data.load_dataset("digits", "train")
    _, _, xv, yv = validation_split(cfg)
    assert len(ytr) == len(full) - 100 and len(yv) == 100
    np.testing.assert_array_equal(np.concatenate([xtr, xv]), full)


def test_calibrate_command(trained, tmp_path):
    _, out = trained
    runner = CliRunner()
    plot = tmp_path / "rel.png"
    r = runner.invoke(main, ["calibrate", str(out), "--dataset", "digits", "--compare", str(out), "--plot", str(plot),
                             "--json", "--limit", "120"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    kinds = [row["kind"] for row in doc["results"]]
    assert kinds == ["single", "ensemble", "single", "ensemble"] and doc["samples"] == 120
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the rows are the golden model's: the MAP row's accuracy is golden's on the same samples
    net = bsnn_hw.load(out)
    x, y = data.load_dataset("digits", "test")
    assert doc["results"][0]["accuracy"] == pytest.approx(float((golden.run(net, x[:120]).prediction == y[:120])
                                                                 .mean()))
    for row in doc["results"]:
        assert 0 <= row["ece"] <= 1 and row["nll"] > 0 and 0 <= row["brier"] <= 2
    r = runner.invoke(main, ["calibrate", str(out), "--dataset", "digits", "--limit", "50"])
    assert r.exit_code == 0 and "ensemble (S=3)" in r.output


def test_calibrate_bad_inputs(trained, tmp_path):
    _, out = trained
    runner = CliRunner()
    plain = tmp_path / "plain.bsnn"
    random_network([64, 8, 10], timesteps=4).save(plain)          # no output scale in its metadata
    wrong = tmp_path / "wrong.bsnn"
    random_network([20, 8, 10], timesteps=4).save(wrong)
    cases = [
        ([str(tmp_path / "missing.bsnn"), "--dataset", "digits"], "no such model file"),
        ([str(out), "--dataset", "digits", "--limit", "0"], "--limit must be at least 1"),
        ([str(out), "--dataset", "digits", "--scale", "-1"], "'--scale': expected a finite number > 0, not '-1'"),
        ([str(plain), "--dataset", "digits"], "carries no output scale"),
        ([str(wrong), "--dataset", "digits", "--scale", "1"], "the data have 64 features but the network has 20"),
        ([str(out), "--dataset", "nonesuch"], "nonesuch"),
        ([str(out), "--dataset", "digits", "--plot", str(tmp_path)], "is a directory"),
    ]
    for args, message in cases:
        r = runner.invoke(main, ["calibrate", *args])
        assert r.exit_code != 0 and message in r.output, (args, r.output)
        assert len(r.output.strip().splitlines()) == 1, r.output
    r = runner.invoke(main, ["calibrate", str(plain), "--dataset", "digits", "--scale", "0.1", "--limit", "20"])
    assert r.exit_code == 0, r.output
