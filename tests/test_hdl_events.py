"""Event-driven (input-major) layers, ``LayerConfig(events=True)``: NetworkTop in Amaranth's simulator against the
golden model bit for bit, each sample's cycles against ``sample_cycles`` (max(1, spikes) per neuron group), and the
refusals. The cocotb regression (sim/configs.py) draws the same option on both simulators."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bsnn_hw.hdl import HwConfig, LayerConfig, cycles_per_inference
from bsnn_hw.hdl.config import layer_latency, sample_cycles, step_cycles
from bsnn_hw.network import Layer, Network

from test_hdl_top import check, make_net, spikes_for


def _config(P, W, events, **kw):
    return HwConfig(tuple(LayerConfig(p, w, e) for p, w, e in zip(P, W, events)), **kw)


def _check_cycles(net, config, spikes, **kw):
    out = check(net, config, spikes, trace=True, **kw)
    want = [s["cycles"] for s in sample_cycles(net, config, spikes, trace=True)]
    assert out.cycles == want
    assert max(out.cycles) <= cycles_per_inference(net, config, trace=True)
    return out


@pytest.mark.parametrize("sizes,P,W,events,density", [
    ([40, 12, 5], (3, 2), (8, 5), (True, True), 0.2),      # both layers, several words, groups
    ([40, 12, 5], (12, 5), (1, 12), (True, False), 0.3),    # W = 1 (one bit per word), P = n_out (one group)
    ([40, 12, 5], (1, 1), (40, 1), (False, True), 0.5),    # W = n_in: one word to search; P = 1
    ([9, 6, 3], (2, 3), (4, 6), (True, False), 1.0),       # every input spikes: the worst case, every word full
    ([70, 9, 4], (4, 3), (70, 9), (True, True), 0.1),      # a wide search word (W > 64), no input ring
])
def test_event_driven_layers_match_golden_and_sample_cycles(sizes, P, W, events, density):
    net = make_net(sizes, 4, seed=sum(P) + W[0])
    config = _config(P, W, events)
    spikes = spikes_for(net, 4, seed=W[1], density=density)
    spikes[0] = False                                  # a silent sample: each group's one masked cycle
    if density < 1:
        spikes[1, :, : min(net.n_in, 2 * W[0])] = True  # full words
        spikes[2, :, :] = False
        spikes[2, :, -1] = True                         # one spike, in the last (padded) word
    out = _check_cycles(net, config, spikes)
    if density == 1.0:
        # every input of the event-driven layer spiking: its worst case, the fixed formula
        assert out.cycles[1:] == [cycles_per_inference(net, config, trace=True)] * 3


def test_event_driven_kbit_fire_once_and_early_decision():
    """k-bit weights (one weight per lane and row), IF neurons with fire-once and the early decision."""
    rng = np.random.default_rng(3)
    l0 = Layer(rng.integers(-8, 8, (10, 30)), threshold=rng.integers(1, 12, 10), weight_bits=4, membrane_bits=10,
               leak_shift=None, fire_once=True)
    l1 = Layer(rng.integers(-128, 128, (4, 10)), threshold=rng.integers(50, 300, 4), weight_bits=8, membrane_bits=14,
               leak_shift=None, fire_once=True)
    net = Network([l0, l1], timesteps=8, readout="first", encoding="latency")
    config = _config((3, 4), (7, 3), (True, True), early_exit=True)
    spikes = spikes_for(net, 5, seed=1, density=0.15)
    _check_cycles(net, config, spikes)


def test_event_driven_stalls_gaps_padding_garbage_and_reset():
    net = make_net([23, 8, 4], 5, seed=5, readout="first", fire_once=True)
    config = _config((3, 2), (6, 3), (True, True))
    check(net, config, spikes_for(net, 3, seed=4, density=0.3), trace=True, src_gap=0.3, sink_stall=0.4, seed=6,
          pad_garbage=True, reset_junk_beats=5, reset_wait=9)


def test_event_driven_beside_skip_zero_and_saves_cycles_on_sparse_input():
    """skip_zero on the dense layer, events on the other; on sparse input the event-driven layer spends fewer cycles
    than the same folding run dense (and than word skipping), with the same outputs."""
    net = make_net([64, 16, 6], 6, seed=11)
    spikes = spikes_for(net, 3, seed=2, density=0.05)
    ev = _config((8, 2), (16, 16), (True, False), skip_zero=True)
    out = _check_cycles(net, ev, spikes)
    dense = _config((8, 2), (16, 16), (False, False))
    skip = _config((8, 2), (16, 16), (False, False), skip_zero=True)
    d = sample_cycles(net, dense, spikes, trace=True)
    s = sample_cycles(net, skip, spikes, trace=True)
    assert sum(out.cycles) < sum(x["cycles"] for x in s) < sum(x["cycles"] for x in d)


def test_event_formulas():
    """step_cycles: G * max(1, spikes) + latency; worst case G * n_in; latency engine_latency(1) + 1."""
    layer = Layer(np.ones((10, 30), bool), threshold=np.ones(10, int))
    lc = LayerConfig(4, 8, True)
    lat = layer_latency(layer, lc)
    assert step_cycles(layer, lc) == 3 * 30 + lat
    assert step_cycles(layer, lc, nonzero_words=0) == 3 + lat
    assert step_cycles(layer, lc, nonzero_words=7) == 21 + lat
    assert lat == layer_latency(layer, LayerConfig(4, 1), skip=True)      # one input per issue, registered address


def test_events_config_round_trip_and_refusals():
    from bsnn_hw.hdl import NetworkTop
    from bsnn_hw.hdl.engine import LayerEngine
    from test_hdl_top import _v2_net
    net = make_net([12, 8, 4], 3, seed=1)
    cfg = _config((2, 1), (4, 8), (True, False))
    assert cfg.to_dict()["layers"] == [[2, 4, "events"], [1, 8]]
    assert HwConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match=r"\[P, W\] or \[P, W, \"events\"\]"):
        HwConfig.from_dict({"layers": [[2, 4, "event"], [1, 8]]})
    with pytest.raises(TypeError, match="events must be a bool"):
        LayerConfig(1, 2, 1)
    conv = _v2_net(3)
    widths = [lc.width for lc in HwConfig.default(conv).layers]
    bad = HwConfig(tuple(LayerConfig(1, w, i == 3) for i, w in enumerate(widths)))
    with pytest.raises(ValueError, match="layer 3: events .* reading a feature map"):
        bad.validate(conv)
    pix = Network(net.layers, 3, "count", "pixel")
    with pytest.raises(ValueError, match="layer 0: events .* 'pixel' network's first layer reads bit planes"):
        _config((1, 1), (4, 8), (True, False)).validate(pix)
    with pytest.raises(ValueError, match="dense layers reading spikes"):
        LayerEngine(net.layers[0], 1, 4, 3, skip=True, events=True)
    other = Network([Layer(~lay.weights, lay.threshold, lay.leak_shift, lay.reset, lay.membrane_bits)
                     for lay in net.layers], net.timesteps, net.readout)      # the same network, other weights
    with pytest.raises(ValueError, match="event-driven layers are not built for ensembles"):
        NetworkTop(net, cfg, members=[net, other])


def test_events_cli_option(tmp_path):
    from click.testing import CliRunner
    from bsnn_hw.cli import main
    net = make_net([12, 8, 4], 3, seed=1)
    model = tmp_path / "m.bsnn"
    net.save(model)
    r = CliRunner().invoke(main, ["generate", str(model), "-o", str(tmp_path / "v"), "-P", "2,1", "-W", "4,8",
                                  "--events", "all"])
    assert r.exit_code == 0, r.output
    assert "(worst case)" in r.output
    man = json.loads((tmp_path / "v" / "bsnn_top.json").read_text())
    assert [lay["events"] for lay in man["layers"]] == [True, True]
    assert man["layers"][0]["memories"][0]["width"] == 2 and man["layers"][0]["memories"][0]["depth"] == 4 * 12
    for bad, msg in (("0,7", "distinct layer indices in 0..1"), ("0,0", "distinct"), ("x", "comma-separated ints")):
        r = CliRunner().invoke(main, ["generate", str(model), "-o", str(tmp_path / "w"), "--events", bad])
        assert r.exit_code != 0 and msg in r.output, (bad, r.output)
        assert not (tmp_path / "w").exists()
