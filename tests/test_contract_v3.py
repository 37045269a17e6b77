"""Contract v3: the per-step affine drive x = (a I + b) >>> F (BNTT folded). The golden model against the simple
reference (tests/reference.py) over the whole legal range of every new parameter, extremes on purpose (F = 0 and 16,
scale absent, the 18-bit scale and 32-bit bias range ends, saturation, conv per-channel tables); the trainer's int64
model; the artifact's format 4; truncation; refusals."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_artifact import build, refused, split
from test_golden import check_against_reference

from bsnn_hw import artifact, contract, golden, truncate
from bsnn_hw.network import Conv2d, Layer, Network, Pool
from bsnn_hw.train.model import integer_simulate

S_LO, S_HI = -(1 << (contract.STEP_SCALE_BITS - 1)), (1 << (contract.STEP_SCALE_BITS - 1)) - 1
B_LO, B_HI = -(1 << (contract.STEP_BIAS_BITS - 1)), (1 << (contract.STEP_BIAS_BITS - 1)) - 1


def test_drive_rounds_toward_minus_infinity():
    assert contract.step_drive(3, None, -7, 1) == 3 + (-4)             # -7 >>> 1 = -4 (floor)
    assert contract.step_drive(-3, 1, 0, 1) == -2                       # (-3) >>> 1 = -2
    assert contract.step_drive(5, 3, 1, 2) == 4                         # (15 + 1) >>> 2
    assert contract.step_drive(-5, 3, 1, 2) == -4                       # (-14) >>> 2 = floor(-3.5)
    assert contract.step_drive(1000, S_HI, B_HI, 0) == 1000 * S_HI + B_HI   # exact beyond 32 bits
    assert contract.step_drive(7, None, 0, 16) == 7                     # no scale: a = 2^F


def _tables(draw, rng, steps, units):
    frac = draw(st.sampled_from([0, 16, None]))
    frac = int(rng.integers(0, contract.STEP_FRAC_MAX + 1)) if frac is None else frac
    skind = draw(st.sampled_from(["none", "small", "full", "ends", "neg"]))
    scale = {"none": lambda: None,
             "small": lambda: rng.integers(-(1 << frac) * 2, (1 << frac) * 2 + 1, (steps, units)),
             "full": lambda: rng.integers(S_LO, S_HI + 1, (steps, units)),
             "ends": lambda: rng.choice([S_LO, S_HI, 0, 1, -1], (steps, units)),
             "neg": lambda: -rng.integers(1, (1 << frac) + 2, (steps, units))}[skind]()
    bkind = draw(st.sampled_from(["small", "full", "ends", "zero"]))
    bias = {"small": lambda: rng.integers(-(1 << (frac + 3)), (1 << (frac + 3)) + 1, (steps, units)),
            "full": lambda: rng.integers(B_LO, B_HI + 1, (steps, units), dtype=np.int64),
            "ends": lambda: rng.choice([B_LO, B_HI, 0, -1], (steps, units)),
            "zero": lambda: np.zeros((steps, units), dtype=np.int64)}[bkind]()
    return dict(step_scale=scale, step_bias=bias, step_frac=frac), (frac, skind, bkind)


@st.composite
def affine_networks(draw):
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    steps = draw(st.integers(1, 8))
    conv = draw(st.booleans())
    layers = []
    if conv:
        h, c = draw(st.integers(3, 6)), draw(st.integers(1, 3))
        c_out = draw(st.integers(1, 4))
        m = draw(st.sampled_from([4, 12, 32]))
        kw, _ = _tables(draw, rng, steps, c_out)
        layers.append(Conv2d(rng.random((c_out, 3, 3, c)) < 0.5, (h, h, c), rng.integers(1, 2 ** (m - 1), c_out),
                             padding=1, leak_shift=draw(st.one_of(st.none(), st.integers(1, m - 1))),
                             reset=draw(st.sampled_from(contract.RESET_MODES)), membrane_bits=m,
                             fire_once=draw(st.booleans()), **kw))
        if draw(st.booleans()):
            layers.append(Pool(layers[-1].out_shape, 2))
        n_in = layers[-1].n_out
    else:
        n_in = draw(st.integers(1, 70))
    for i in range(draw(st.integers(1, 2))):
        n_out = draw(st.integers(1, 9))
        m = draw(st.sampled_from([2, 5, 16, 32]))
        last = i == 1 or draw(st.booleans())
        kw, _ = _tables(draw, rng, steps, n_out) if draw(st.integers(0, 3)) else ({}, None)
        layers.append(Layer(rng.random((n_out, n_in)) < draw(st.sampled_from([0.0, 0.5, 1.0])),
                            rng.integers(1, 2 ** (m - 1), n_out) if draw(st.booleans()) else 2 ** (m - 1) - 1,
                            leak_shift=draw(st.one_of(st.none(), st.integers(1, m - 1))),
                            reset=draw(st.sampled_from(contract.RESET_MODES)), membrane_bits=m,
                            fire_once=draw(st.booleans()), **kw))
        n_in = n_out
        if last:
            break
    net = Network(layers, steps, draw(st.sampled_from(contract.READOUTS)), "direct")
    spikes = rng.random((draw(st.integers(1, 4)), steps, net.n_in)) < draw(st.sampled_from([0.1, 0.5, 1.0]))
    return net, spikes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(affine_networks())
def test_golden_matches_reference_with_affine(case):
    net, spikes = case
    check_against_reference(net, spikes)
    # the trainer's int64 model agrees too
    pred, counts, membranes = integer_simulate(net, torch.from_numpy(spikes))
    r = golden.simulate(net, spikes)
    for li, layer in enumerate(net.layers):
        np.testing.assert_array_equal(membranes[li].numpy(), r.membrane[li])
        np.testing.assert_array_equal(counts[li].numpy(), r.counts[li])
    np.testing.assert_array_equal(pred.numpy(), r.prediction)


def test_coverage_of_the_extremes():
    """The generator above reaches the corners it must (printed with -s): F at 0 and 16, scale absent and at the
    18-bit ends, bias at the 32-bit ends, saturated membranes."""
    seen = set()

    @settings(max_examples=300, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(affine_networks())
    def probe(case):
        net, spikes = case
        for layer in net.layers:
            if not getattr(layer, "has_affine", False):
                continue
            seen.add(f"F={layer.step_frac}" if layer.step_frac in (0, 16) else "F=mid")
            seen.add("scale=none" if layer.step_scale is None else "scale")
            if layer.step_scale is not None and {S_LO, S_HI} & set(np.unique(layer.step_scale).tolist()):
                seen.add("scale=ends")
            if {B_LO, B_HI} & set(np.unique(layer.step_bias).tolist()):
                seen.add("bias=ends")
            seen.add(layer.kind)
        r = golden.simulate(net, spikes)
        for layer, v in zip(net.layers, r.membrane):
            if layer.has_neurons and layer.has_affine:
                lo, hi = contract.membrane_range(layer.membrane_bits)
                if (v == lo).any() or (v == hi).any():
                    seen.add("saturated")
    probe()
    print("affine coverage:", sorted(seen))
    assert {"F=0", "F=16", "F=mid", "scale=none", "scale", "scale=ends", "bias=ends", "dense", "conv2d",
            "saturated"} <= seen


def _net(frac=12, scale=True, steps=4):
    rng = np.random.default_rng(5)
    return Network([Layer(rng.random((6, 9)) < 0.5, 40, 3,
                          step_scale=rng.integers(-5000, 5000, (steps, 6)) if scale else None,
                          step_bias=rng.integers(-10 ** 6, 10 ** 6, (steps, 6)), step_frac=frac),
                    Layer(rng.random((3, 6)) < 0.5, None)], steps, "membrane", "rate", seed=9)


def test_artifact_round_trip_and_identity(tmp_path):
    for scale in (True, False):
        net = _net(scale=scale)
        assert net.contract_version == 3
        data = artifact.to_bytes(net)
        header, _ = split(data)
        assert header["format_version"] == 4 and header["contract_version"] == 3
        back = artifact.from_bytes(data)
        assert back == net and artifact.identity(back) == artifact.identity(net)
    a, b = _net(), _net()
    assert artifact.identity(a) == artifact.identity(b)
    bias = np.array(a.layers[0].step_bias)
    bias[2, 3] += 1                              # one bias entry changes the identity
    changed = Network([Layer(a.layers[0].weights, a.layers[0].threshold, 3, step_scale=a.layers[0].step_scale,
                             step_bias=bias, step_frac=12), a.layers[1]], 4, "membrane", "rate", seed=9)
    assert artifact.identity(changed) != artifact.identity(a)


def test_artifact_refusals():
    good = artifact.to_bytes(_net())

    def with_affine(edit):
        def f(h):
            edit(h["layers"][0]["step_affine"])
        return f

    def edited(fn):
        header, payload = split(good)
        fn(header)
        return build(header, payload)

    refused(edited(lambda h: h.update(format_version=3)), r"layer 0: a per-step affine \(step_affine\) needs format "
                                                         r"version 4, the file says 3$")
    refused(edited(with_affine(lambda a: a.update(frac=17))), r"step_frac must be in 0\.\.16, not 17$")
    refused(edited(with_affine(lambda a: a["bias"][0].__setitem__(0, 1.5))), r"'bias' entries must be ints, not 1\.5")
    refused(edited(with_affine(lambda a: a["scale"][1].__setitem__(2, 1 << 17))),
            r"'scale' entries must be in -131072\.\.131071, not 131072$")
    refused(edited(with_affine(lambda a: a["bias"][0].__setitem__(0, 1 << 70))), r"'bias' entries must be in")
    refused(edited(with_affine(lambda a: (a["bias"].pop(), a["scale"].pop()))),
            r"has 3 rows but the network runs T = 4 steps")
    refused(edited(with_affine(lambda a: a["bias"].pop())), r"step_scale \(4, 6\) and step_bias \(3, 6\) must have "
                                                             r"the same shape")
    refused(edited(with_affine(lambda a: a["bias"][1].pop())), r"'bias' rows must all have the same length")
    refused(edited(with_affine(lambda a: a.update(bias=[[1] * 5] * 4))), r"step_bias must have shape \(T, 6\)")
    refused(edited(with_affine(lambda a: a.update(bias=None))), r"'bias' must be a list of per-step lists of ints")


@pytest.mark.parametrize("kw, pattern", [
    (dict(step_bias=np.zeros((2, 3)), step_frac=0), r"step_bias must be an integer array"),
    (dict(step_bias=np.zeros((2, 4), int)), r"step_bias must have shape \(T, 3\)"),
    (dict(step_bias=np.zeros((2, 3), int), step_frac=17), r"step_frac must be in 0\.\.16, not 17"),
    (dict(step_bias=np.zeros((2, 3), int), step_frac=-1), r"step_frac must be in 0\.\.16, not -1"),
    (dict(step_bias=np.full((2, 3), 1 << 31)),
     r"step_bias entries must be in -2147483648\.\.2147483647 \(signed 32 bits\), not 2147483648"),
    (dict(step_bias=np.zeros((2, 3), int), step_scale=np.full((2, 3), -(1 << 17) - 1)),
     r"step_scale entries must be in -131072\.\.131071 \(signed 18 bits\), not -131073"),
    (dict(step_bias=np.zeros((2, 3), int), step_scale=np.ones((3, 3), int)), r"must have the same shape"),
    (dict(step_scale=np.ones((2, 3), int)), r"step_scale needs step_bias"),
    (dict(step_frac=4), r"step_frac = 4 needs step_bias"),
])
def test_layer_refusals(kw, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        Layer(np.ones((3, 5), bool), 4, **kw)


def test_network_refuses_wrong_row_count():
    layer = Layer(np.ones((3, 5), bool), 4, step_bias=np.zeros((2, 3), int))
    with pytest.raises(ValueError, match=r"layer 0's per-step affine has 2 rows but the network runs T = 3 steps"):
        Network([layer], 3)


def test_truncate_is_a_prefix():
    net = _net(steps=6)
    x = np.random.default_rng(3).integers(0, 256, (20, 9), dtype=np.uint8)
    full = golden.run(net, x, record=True)
    for steps in (1, 4, 6):
        short = truncate(net, steps)
        assert short.timesteps == steps and short.layers[0].step_bias.shape == (steps, 6)
        assert short.metadata["truncated_from"] == 6
        r = golden.run(short, x, record=True)
        for li in range(2):        # the first T' steps of the full run are the truncated network's whole run
            np.testing.assert_array_equal(r.spikes[li], full.spikes[li][:, :steps])
    assert truncate(net, 6) == net
    with pytest.raises(ValueError, match=r"steps must be in 1\.\.6 \(the network's T\), not 7"):
        truncate(net, 7)
    lat = Network(net.layers, 6, "membrane", "latency")
    with pytest.raises(ValueError, match="latency-coded network cannot be truncated"):
        truncate(lat, 3)


def test_v2_and_v1_files_unchanged():
    """A network without an affine is still written as before (format 1 or 2, contract 1 or 2)."""
    rng = np.random.default_rng(0)
    v1 = Network([Layer(rng.random((3, 4)) < 0.5, 2)], 2)
    header, _ = split(artifact.to_bytes(v1))
    assert (header["format_version"], header["contract_version"]) == (1, 1)
    assert "step_affine" not in json.dumps(header)
    assert not re.search("step_affine", json.dumps(header))


def test_truncate_cli(tmp_path):
    from click.testing import CliRunner

    from bsnn_hw.cli import main
    net = _net(steps=6)
    net.metadata["bntt"] = {"exit_step": 4}
    src = tmp_path / "m.bsnn"
    net.save(src)
    runner = CliRunner()
    r = runner.invoke(main, ["truncate", str(src), "--steps", "exit", "-o", str(tmp_path / "e.bsnn")])
    assert r.exit_code == 0, r.output
    assert artifact.load(tmp_path / "e.bsnn") == truncate(net, 4)
    r = runner.invoke(main, ["inspect", str(tmp_path / "e.bsnn")])
    assert r.exit_code == 0 and "per-step affine drive (contract v3)" in r.output, r.output
    r = runner.invoke(main, ["truncate", str(src), "--steps", "9", "-o", str(tmp_path / "x.bsnn")])
    assert r.exit_code == 1 and "steps must be in 1..6 (the network's T), not 9" in r.output
    assert not (tmp_path / "x.bsnn").exists()
    net.metadata.pop("bntt")
    net.save(src)
    r = runner.invoke(main, ["truncate", str(src), "--steps", "exit", "-o", str(tmp_path / "x.bsnn")])
    assert r.exit_code == 1 and "no exit step in its metadata" in r.output


def test_decide_with_per_step_tables():
    """golden.decide on a network with per-step tables: the state at the decision step d is the network cut to
    d + 1 steps (the tables' first d + 1 rows), as a design that stops there computes it."""
    rng = np.random.default_rng(11)
    steps = 8
    net = Network([Layer(rng.random((12, 20)) < 0.5, 3, 2, step_scale=rng.integers(-900, 900, (steps, 12)),
                         step_bias=rng.integers(-3000, 3000, (steps, 12)), step_frac=8),
                   Layer(rng.random((4, 12)) < 0.5, 2, step_bias=rng.integers(-2, 3, (steps, 4)))],
                  steps, "first", "direct")
    spikes = rng.random((40, steps, 20)) < 0.4
    result, d = golden.decide(net, spikes, record=True)
    assert len(set(d.tolist())) > 1                       # several decision steps, on purpose
    for b in range(len(spikes)):
        short = golden.simulate(truncate(net, int(d[b]) + 1), spikes[b:b + 1, :int(d[b]) + 1])
        for li in range(2):
            np.testing.assert_array_equal(result.membrane[li][b], short.membrane[li][0])
            np.testing.assert_array_equal(result.counts[li][b], short.counts[li][0])
