"""NIR interchange (bsnn_hw.nirgraph, docs/nir.md): bsnn -> NIR -> bsnn keeps the identity for every layer kind and
option; a graph without bsnn metadata imports from its NIR parameters alone and computes what the float NIR graph
computes; what does not fit is refused with the list of reasons, or converted with --approximate and reported; the
export loads and runs in snnTorch."""
from __future__ import annotations

import contextlib
import io
import itertools

import numpy as np
import pytest
from test_cli import cli, fails

import nir
from bsnn_hw import artifact, golden, nirgraph
from bsnn_hw.network import Conv2d, Layer, Network, Pool, random_network
from bsnn_hw.nirgraph import NirError, from_nir, simulate_nir, to_nir


def through_file(graph):
    """The graph after nir.write and nir.read (HDF5 bytes), as a user's file would be."""
    return nir.read(io.BytesIO(nirgraph.to_bytes(graph)))


def conv_net(rng, *, leak_shift=2, reset="subtract", weight_bits=1, readout="count", membrane_bits=12,
             fire_once=False, timesteps=5, encoding="rate", uniform_threshold=None):
    """A small conv -> pool -> conv -> dense network with random weights (every kind and the flatten order);
    random thresholds per channel / neuron unless ``uniform_threshold``."""
    def w(shape):
        if weight_bits == 1:
            return rng.random(shape) < 0.5
        lo, hi = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
        return rng.integers(lo, hi + 1, shape).astype(np.int8)
    neuron = dict(leak_shift=leak_shift, reset=reset, membrane_bits=membrane_bits, fire_once=fire_once,
                  weight_bits=weight_bits)
    th = (lambda lo, hi, n: rng.integers(lo, hi, n)) if uniform_threshold is None else \
        (lambda lo, hi, n: uniform_threshold)
    c0 = Conv2d(w((3, 3, 3, 2)), (7, 6, 2), th(1, 6, 3), stride=1, padding=1, **neuron)
    p1 = Pool(c0.out_shape, 2)
    c2 = Conv2d(w((4, 2, 2, 3)), p1.out_shape, th(1, 4, 4), stride=1, padding=0, **neuron)
    last_th = None if readout == "membrane" else th(1, 4, 5)
    d3 = Layer(w((5, c2.n_out)), last_th, **neuron)
    return Network([c0, p1, c2, d3], timesteps, readout, encoding, seed=77, metadata={"note": "conv"})


DENSE_OPTIONS = list(itertools.product((None, 1, 5), ("subtract", "zero"), ("count", "membrane", "first"),
                                       ("rate", "latency", "direct"), (False, True)))


@pytest.mark.parametrize("leak,reset,readout,encoding,fire_once", DENSE_OPTIONS)
def test_round_trip_identity_dense(leak, reset, readout, encoding, fire_once):
    net = random_network([13, 9, 4], timesteps=7, leak_shift=leak, reset=reset, membrane_bits=10,
                         fire_once=fire_once, readout=readout, encoding=encoding, seed=3)
    back = from_nir(through_file(to_nir(net)))
    assert back.identity() == net.identity()
    assert back == net and back.metadata == net.metadata


@pytest.mark.parametrize("weight_bits", [1, 2, 5, 8])
@pytest.mark.parametrize("readout", ["count", "membrane"])
def test_round_trip_identity_conv_pool_kbit(weight_bits, readout):
    net = conv_net(np.random.default_rng(weight_bits), weight_bits=weight_bits, readout=readout)
    back = from_nir(through_file(to_nir(net)))
    assert back.identity() == net.identity()


@pytest.mark.parametrize("weight_bits", [1, 4])
def test_round_trip_unit_threshold(weight_bits):
    """Thresholds folded into the weights (snnTorch's form) come back exactly from the metadata."""
    net = conv_net(np.random.default_rng(11), weight_bits=weight_bits)
    g = to_nir(net, unit_threshold=True)
    assert all(np.all(n.v_threshold == 1) for k, n in g.nodes.items() if k.endswith("_neuron"))
    assert not np.array_equal(g.nodes["layer0_conv"].weight, np.round(g.nodes["layer0_conv"].weight))
    assert from_nir(through_file(g)).identity() == net.identity()
    with pytest.raises(NirError, match="weights are not integers"):
        from_nir(strip_metadata(through_file(g)))


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_round_trip_membrane_readout_with_unused_thresholds(kind):
    """The last layer of a "membrane" readout never fires but may keep thresholds; they are part of the identity."""
    rng = np.random.default_rng(12)
    if kind == "dense":
        net = Network([Layer(rng.random((5, 7)) < 0.5, 2), Layer(rng.random((3, 5)) < 0.5, [1, 2, 3])], 4,
                      readout="membrane")
    else:
        net = Network([Conv2d(rng.random((2, 3, 3, 1)) < 0.5, (5, 5, 1), [4, 5], leak_shift=1)], 4,
                      readout="membrane")
    for unit in (False, True):
        assert from_nir(through_file(to_nir(net, unit_threshold=unit))).identity() == net.identity()


def test_export_refusals():
    dense_then_conv = Network([Layer(np.ones((8, 4), bool), 1), Conv2d(np.ones((1, 2, 2, 2), bool), (2, 2, 2), 1)], 3)
    with pytest.raises(NirError, match=r"export-nir: layer 1 \(conv2d\) reads the vector of dense layer 0 as a map; "
                                       r"NIR has no reshape node"):
        to_nir(dense_then_conv)
    ens = random_network([4, 3], timesteps=2)
    ens.ensemble = [[layer.weights for layer in ens.layers]] * 2
    with pytest.raises(NirError, match=r"export-nir: this model carries an ensemble of 2 weight sets besides its own; "
                                       r"a NIR graph holds one network"):
        to_nir(ens)
    bntt = Network([Layer(np.ones((3, 4), bool), 2, step_bias=np.zeros((2, 3), int))], 2)
    with pytest.raises(NirError, match=r"export-nir: layer 0 has a per-step affine drive \(contract v3, BNTT\)"):
        to_nir(bntt)


def test_round_trip_k_bit_dense_of_only_plus_minus_one_keeps_its_width():
    """A 3-bit layer whose weights happen to be +-1 is not a binary layer: weight_bits travels in metadata."""
    rng = np.random.default_rng(0)
    w = np.where(rng.random((6, 8)) < 0.5, 1, -1).astype(np.int8)
    net = Network([Layer(w, 3, weight_bits=3, membrane_bits=8)], 4, seed=9)
    back = from_nir(through_file(to_nir(net)))
    assert back.layers[0].weight_bits == 3 and back.identity() == net.identity()


def test_trained_conv_model_round_trip():
    path = "/work/models/conv_fashion_small.bsnn"
    try:
        net = artifact.load(path)
    except artifact.ArtifactError:
        pytest.skip(f"{path}: not present on this machine")
    assert from_nir(through_file(to_nir(net))).identity() == net.identity()


def test_export_mapping_shift_leak_and_if():
    """tau = 2^k dt, R = 2^k, v_leak = 0 for a shift leak; IF with R = 1 for none; +inf for a layer that never
    fires; per-channel conv thresholds spread over (C, H, W)."""
    rng = np.random.default_rng(1)
    net = conv_net(rng, leak_shift=3, readout="membrane")
    g = to_nir(net)
    lif = g.nodes["layer0_neuron"]
    assert isinstance(lif, nir.LIF)
    assert np.allclose(lif.tau, 8 * nirgraph.DT) and np.all(lif.r == 8) and not np.any(lif.v_leak)
    assert lif.v_threshold.shape == (3, 7, 6)
    assert np.array_equal(lif.v_threshold[:, 4, 2], net.layers[0].threshold)
    assert np.all(np.isposinf(g.nodes["layer3_neuron"].v_threshold))
    assert isinstance(g.nodes["layer1_pool"], nir.AvgPool2d) and isinstance(g.nodes["layer3_flatten"], nir.Flatten)
    if_net = random_network([4, 3], leak_shift=None, threshold=2)
    node = to_nir(if_net).nodes["layer0_neuron"]
    assert isinstance(node, nir.IF) and np.all(node.r == 1) and np.all(node.v_threshold == 2)


def strip_metadata(graph):
    """The graph as another tool would write it: no bsnn metadata anywhere."""
    graph.metadata = {}
    for node in graph.nodes.values():
        node.metadata = {}
    return graph


@pytest.mark.parametrize("readout", ["count", "first", "membrane"])
def test_foreign_graph_computes_what_the_float_graph_computes(readout):
    """Where the float NIR semantics and the contract coincide (IF neurons, zero reset, a membrane that never
    saturates), the NumPy NIR interpreter, the original network and the network imported without any metadata
    agree spike for spike on the prediction: the weight layouts (OIHW, CHW flatten) and thresholds map right."""
    rng = np.random.default_rng(5)
    net = conv_net(rng, leak_shift=None, reset="zero", readout=readout, membrane_bits=16, timesteps=6,
                   encoding="direct")
    spikes = rng.random((40, 6, net.n_in)) < 0.3
    ref = golden.simulate(net, spikes)
    graph = strip_metadata(through_file(to_nir(net)))
    assert np.array_equal(simulate_nir(graph, spikes, readout=readout), ref.prediction)
    back = from_nir(graph, timesteps=6, readout=readout, encoding="direct")
    assert [lay.membrane_bits for lay in back.layers if lay.has_neurons] == [8, 8, 8]   # 6 x fan-in 18, 12, 16 <= 127
    assert np.array_equal(golden.simulate(back, spikes).prediction, ref.prediction)
    assert np.array_equal(golden.simulate(back, spikes).counts[-1], ref.counts[-1])
    assert "defaults" in back.metadata["nir_import"]


def test_foreign_shift_leak_needs_the_floor_only():
    """A foreign LIF with tau = 2^k dt imports as the shift leak; its float graph differs from the contract only by
    the floor of V / 2^k (and saturation): the interpreter and golden agree on most samples, not all."""
    rng = np.random.default_rng(2)
    net = random_network([30, 20, 6], timesteps=10, leak_shift=2, reset="zero", membrane_bits=16,
                         encoding="direct", seed=4)
    graph = strip_metadata(through_file(to_nir(net)))
    back = from_nir(graph, timesteps=10, encoding="direct")
    assert [lay.leak_shift for lay in back.layers] == [2, 2]
    spikes = rng.random((200, 10, 30)) < 0.4
    agree = (simulate_nir(graph, spikes) == golden.simulate(back, spikes).prediction).mean()
    assert 0.5 < agree <= 1.0


def foreign_graph(weight=None, tau=None, threshold=None, extra=None):
    """A hand-written 4-3 NIR graph (another tool's), one LIF layer, parts replaceable."""
    w = np.array([[1, -1, 1, 1], [-1, -1, 1, -1], [1, 1, 1, -1]], np.float32) if weight is None else weight
    shape = (3,)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([4])}),
        "fc": nir.Linear(weight=w),
        "lif": nir.LIF(tau=np.full(shape, 4e-4 if tau is None else tau), r=np.full(shape, 4.0),
                       v_leak=np.zeros(shape), v_threshold=np.full(shape, 2.0) if threshold is None else threshold,
                       v_reset=np.zeros(shape)),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "output")]
    if extra:
        extra(nodes, edges)
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def test_foreign_graph_exact():
    net = from_nir(foreign_graph())
    lay = net.layers[0]
    assert (lay.leak_shift, lay.reset, lay.weight_bits, list(lay.threshold)) == (2, "zero", 1, [2, 2, 2])
    assert (net.timesteps, net.readout, net.encoding, net.seed) == (16, "count", "rate", 1)


def test_foreign_graph_in_snntorch_convention():
    """snnTorch's export writes tau = dt / (1 - beta), R = tau / dt in floats: beta 0.9375 is the shift k = 4."""
    tau = 1e-4 / (1 - 0.9375)
    graph = foreign_graph(tau=tau)
    graph.nodes["lif"].r = np.full(3, tau / 1e-4)
    assert from_nir(graph).layers[0].leak_shift == 4


def test_refusal_lists_every_misfit():
    graph = foreign_graph(weight=np.full((3, 4), 0.5, np.float32), tau=3e-4, threshold=np.full(3, 2.5))
    with pytest.raises(NirError) as e:
        from_nir(graph)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("cannot import exactly (2 problems; --approximate converts some): ")
    assert "fc: 12 of 12 weights are not integers (e.g. 0.5)" in msg
    assert "lif: tau = 0.0003 s is 3 steps of dt = 0.0001 s, not a shift leak (tau = 2^k dt, k >= 1)" in msg


def test_refusal_threshold_and_gain_and_leak_voltage():
    def edit(nodes, edges):
        nodes["lif"].v_leak = np.full(3, 0.5)
    with pytest.raises(NirError, match=r"lif: v_leak must be 0 \(the contract leaks towards 0\), not 0.5"):
        from_nir(foreign_graph(extra=edit))
    with pytest.raises(NirError, match=r"lif: threshold 2.5 is not an integer"):
        from_nir(foreign_graph(threshold=np.full(3, 2.5)))
    with pytest.raises(NirError, match=r"fc: integer weights -300..300 are outside the 8-bit range -128..127"):
        from_nir(foreign_graph(weight=np.array([[300, -300, 1, 1]] * 3, np.float32)))


def test_refusal_unsupported_node_and_topology():
    def cuba(nodes, edges):
        s = (3,)
        nodes["lif"] = nir.CubaLIF(tau_syn=np.full(s, 1e-3), tau_mem=np.full(s, 1e-3), r=np.ones(s),
                                   v_leak=np.zeros(s), v_threshold=np.ones(s))
    with pytest.raises(NirError, match=r"fc: a Linear must be followed by a LIF, IF, LI or I neuron node, not CubaLIF"):
        from_nir(foreign_graph(extra=cuba))

    def recurrent(nodes, edges):
        nodes["rec"] = nir.Linear(weight=np.eye(3, dtype=np.float32))
        edges += [("lif", "rec"), ("rec", "lif")]
    with pytest.raises(NirError, match=r"topology: only a chain of layers is supported; node\(s\) lif branch or "
                                       r"merge"):
        from_nir(foreign_graph(extra=recurrent))

    def delay(nodes, edges):
        nodes["d"] = nir.Delay(delay=np.ones(3))
        edges[:] = [("input", "fc"), ("fc", "lif"), ("lif", "d"), ("d", "output")]
    with pytest.raises(NirError, match=r"d: node type Delay is not supported"):
        from_nir(foreign_graph(extra=delay))


def test_refusal_of_average_pooling_and_approximate_or():
    net = conv_net(np.random.default_rng(3))
    graph = through_file(to_nir(net))
    nodes = {k: v for k, v in graph.nodes.items() if k != "layer1_or"}
    edges = [(a, b) for a, b in graph.edges if "layer1_or" not in (a, b)] + [("layer1_pool", "layer2_conv")]
    plain_avg = nir.NIRGraph(nodes=nodes, edges=edges, metadata=graph.metadata, type_check=False)
    with pytest.raises(NirError, match=r"layer1_pool: AvgPool2d passes averages of spikes on; the contract pools "
                                       r"spikes with OR"):
        from_nir(plain_avg)
    approx = from_nir(plain_avg, approximate=True)
    assert approx.identity() == net.identity()
    assert any("replaced by OR pooling" in c for c in approx.metadata["nir_import"]["changes"])


def test_sum_pool_with_threshold_is_exact_or_pooling():
    net = conv_net(np.random.default_rng(4))
    graph = to_nir(net)
    graph.nodes["layer1_pool"] = nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                               padding=np.array([0, 0]))
    graph.nodes["layer1_or"] = nir.Threshold(threshold=np.full((3, 3, 3), 0.5))
    assert from_nir(graph).identity() == net.identity()


@pytest.mark.parametrize("then_flatten", [False, True])
def test_sum_pool_into_synapses_imports_exactly_folded(then_flatten):
    """A foreign graph's SumPool2d feeding a Conv2d (or Flatten + Linear) passes spike counts on: imported exactly as
    the folded layer (docs/spec.md 8.5), it computes what the float NIR graph computes."""
    from bsnn_hw.network import fold_sum_pool
    rng = np.random.default_rng(11)
    neuron = dict(leak_shift=None, reset="zero", membrane_bits=16)
    c0 = Conv2d(rng.random((3, 3, 3, 2)) < 0.5, (8, 6, 2), rng.integers(1, 5, 3), padding=1, **neuron)
    pool = Pool(c0.out_shape, 2)
    nxt = Layer(rng.random((5, 36)) < 0.5, rng.integers(1, 6, 5), **neuron) if then_flatten else \
        Conv2d(rng.random((4, 2, 2, 3)) < 0.5, pool.out_shape, rng.integers(1, 5, 4), **neuron)
    layers = [c0, pool, nxt] + ([] if then_flatten else [Layer(rng.random((5, nxt.n_out)) < 0.5, 2, **neuron)])
    graph = strip_metadata(to_nir(Network(layers, 6, "count", "direct")))
    graph.nodes["layer1_pool"] = nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                               padding=np.array([0, 0]))
    del graph.nodes["layer1_or"]
    after = "layer2_flatten" if then_flatten else "layer2_conv"
    graph.edges = [e for e in graph.edges if "layer1_or" not in e] + [("layer1_pool", after)]
    back = from_nir(graph, timesteps=6, encoding="direct")
    folded = fold_sum_pool(nxt, 2, c0.out_shape)
    assert len(back.layers) == len(layers) - 1 and back.layers[1].kind == nxt.kind
    assert np.array_equal(back.layers[1].weights, folded.weights)
    if not then_flatten:
        assert (back.layers[1].kernel, back.layers[1].stride, back.layers[1].padding) == (4, 2, 0)
    spikes = rng.random((60, 6, c0.n_in)) < 0.4
    pred = golden.simulate(back, spikes).prediction
    assert np.array_equal(simulate_nir(graph, spikes), pred)
    assert len(set(pred.tolist())) > 1                       # the comparison is not between constant answers
    odd_layers = [Conv2d(np.ones((3, 3, 3, 2), bool), (7, 6, 2), 1, padding=1), Pool((7, 6, 3), 2),
                  Conv2d(np.ones((4, 2, 2, 3), bool), (3, 3, 3), 1), Layer(np.ones((5, 16), bool), 1)]
    odd = strip_metadata(to_nir(Network(odd_layers, 6)))     # a 7-row map: 2x2 sum pooling would drop a row
    odd.nodes["layer1_pool"] = graph.nodes["layer1_pool"]
    del odd.nodes["layer1_or"]
    odd.edges = [e for e in odd.edges if "layer1_or" not in e] + [("layer1_pool", "layer2_conv")]
    with pytest.raises(NirError, match=r"layer1_pool: sum pooling 2x2 needs a map whose sides are multiples of 2"):
        from_nir(odd)


def test_approximate_lists_changes():
    graph = foreign_graph(weight=np.array([[0.5, -0.25, 0.25, 1.0]] * 3, np.float32), tau=3e-4,
                          threshold=np.full(3, 2.5))
    net = from_nir(graph, approximate=True)
    lay = net.layers[0]
    assert lay.weight_bits == 1 and lay.leak_shift == 2
    assert np.array_equal(lay.weights[0], [True, False, True, True])
    # alpha = mean|w| = 0.5 and gain R dt / tau = 4/3: theta 2.5 / (0.5 * 4/3) = 3.75 -> 3
    assert list(lay.threshold) == [3, 3, 3]
    changes = net.metadata["nir_import"]["changes"]
    assert len(changes) == 4 and any("binarized" in c for c in changes) and any("rounded down" in c for c in changes)


# --- command line ---------------------------------------------------------------------------------------------------

@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.bsnn"
    conv_net(np.random.default_rng(8), weight_bits=3, readout="first", fire_once=True).save(path)
    return path


def test_cli_round_trip(tmp_path, model):
    out = cli("export-nir", model, tmp_path / "m.nir")
    assert "wrote" in out.stdout and (tmp_path / "m.nir").exists()
    r = cli("import-nir", tmp_path / "m.nir", "-o", tmp_path / "back.bsnn")
    assert artifact.load(tmp_path / "back.bsnn").identity() == artifact.load(model).identity()
    assert "changed:" not in r.stdout and "default:" not in r.stdout
    assert "the identity of the exported model" in r.stdout


def test_cli_bad_input(tmp_path, model):
    fails("export-nir", tmp_path / "nope.bsnn", tmp_path / "x.nir", pattern="nope.bsnn: no such model file",
          cwd=tmp_path)
    fails("export-nir", model, tmp_path, pattern="is a directory", cwd=tmp_path)
    fails("import-nir", tmp_path / "nope.nir", "-o", tmp_path / "x.bsnn", pattern="nope.nir: no such NIR file",
          cwd=tmp_path)
    (tmp_path / "junk.nir").write_bytes(b"not hdf5 at all")
    fails("import-nir", tmp_path / "junk.nir", "-o", tmp_path / "x.bsnn",
          pattern=r"junk.nir: not a readable NIR graph \(an HDF5 file written by nir.write\)", cwd=tmp_path)
    nir.write(tmp_path / "float.nir", foreign_graph(weight=np.full((3, 4), 0.5, np.float32)))
    fails("import-nir", tmp_path / "float.nir", "-o", tmp_path / "x.bsnn",
          pattern=r"cannot import exactly \(1 problem; --approximate converts some\): fc: 12 of 12 weights are not "
                  r"integers", cwd=tmp_path)
    fails("import-nir", tmp_path / "float.nir", "-o", tmp_path / "x.bsnn", "--dt", "0",
          pattern="'--dt': expected a finite number > 0, not '0'", cwd=tmp_path)
    fails("import-nir", tmp_path / "float.nir", "-o", tmp_path / "x.bsnn", "--approximate", "--seed", "0",
          pattern="seed", cwd=tmp_path)


def test_cli_approximate_with_data(tmp_path):
    """An approximate import reports its changes and, with --data, the float graph's and the model's accuracy."""
    rng = np.random.default_rng(0)
    net = random_network([64, 24, 10], timesteps=8, leak_shift=None, reset="zero", membrane_bits=16, seed=2)
    graph = to_nir(net)
    graph.nodes["layer0_linear"].weight = graph.nodes["layer0_linear"].weight * rng.uniform(0.5, 1.5, (24, 64))
    nir.write(tmp_path / "g.nir", graph)
    r = cli("import-nir", tmp_path / "g.nir", "-o", tmp_path / "a.bsnn", "--approximate", "--data", "digits",
            "--limit", "100")
    assert "changed: layer0_linear: 1536 of 1536 weights are not integers" in r.stdout
    assert "accuracy on 100 digits test samples: float NIR graph" in r.stdout
    assert artifact.load(tmp_path / "a.bsnn").metadata["nir_import"]["changes"]


# --- snnTorch -------------------------------------------------------------------------------------------------------

def run_snntorch(graph, net, spikes):
    """snnTorch's import of ``graph`` run step by step on the contract's spikes: output spike counts (batch, n_out)."""
    pytest.importorskip("nirtorch")
    snn_import = pytest.importorskip("snntorch.import_nir")
    import torch
    with contextlib.redirect_stdout(io.StringIO()):          # snnTorch prints progress
        model = snn_import.import_from_nir(through_file(graph))
    for m in model.modules():
        if isinstance(m, torch.nn.Flatten):
            m.start_dim = 1                                  # NIR's start_dim counts from the unbatched shape
        if hasattr(m, "reset_mem"):
            m.reset_mem()
    h, w, c = net.input_shape
    counts = 0
    with torch.no_grad():
        for t in range(net.timesteps):
            x = torch.tensor(spikes[:, t].reshape(-1, h, w, c).transpose(0, 3, 1, 2), dtype=torch.float32)
            out = model(x)
            while isinstance(out, tuple):
                out = out[0]
            assert out.shape == (len(spikes), net.n_out) and set(out.unique().tolist()) <= {0.0, 1.0}
            counts = counts + out.numpy().astype(np.int64)
    return counts


def test_export_runs_in_snntorch_as_the_nir_interpreter_does():
    """The plain export (one threshold per layer, LIF layers, zero reset) loads in snnTorch and gives the NumPy NIR
    interpreter's predictions on every sample: the shift leak, the OR-pool pair and the flatten order mean the same
    thing to both."""
    rng = np.random.default_rng(6)
    net = conv_net(rng, reset="zero", timesteps=5, uniform_threshold=2)
    spikes = rng.random((30, 5, net.n_in)) < 0.4
    counts = run_snntorch(to_nir(net), net, spikes)
    assert counts.sum() > 0
    assert np.array_equal(golden.readout("count", counts, None, None, 5), simulate_nir(to_nir(net), spikes))


def test_unit_threshold_export_runs_in_snntorch():
    """Per-channel thresholds: snnTorch only loads the folded form (v_threshold 1); the float32 weights w / theta
    agree with the interpreter up to rounding at exact ties."""
    rng = np.random.default_rng(7)
    net = conv_net(rng, reset="zero", timesteps=5)
    spikes = rng.random((30, 5, net.n_in)) < 0.4
    counts = run_snntorch(to_nir(net, unit_threshold=True), net, spikes)
    agree = (golden.readout("count", counts, None, None, 5) == simulate_nir(to_nir(net), spikes)).mean()
    assert agree >= 0.9


@pytest.mark.parametrize("readout", ["count", "membrane"])
def test_interpreter_numbers_a_conv_output_position_major(readout):
    """A conv last layer: the NIR interpreter reads its (C, H, W) output in the contract's (H, W, C) order."""
    rng = np.random.default_rng(13)
    th = None if readout == "membrane" else 2
    net = Network([Conv2d(rng.random((3, 2, 2, 2)) < 0.5, (4, 4, 2), th, reset="zero")], 5, readout=readout,
                  encoding="direct")
    spikes = rng.random((50, 5, net.n_in)) < 0.5
    assert np.array_equal(simulate_nir(to_nir(net), spikes, readout=readout), golden.simulate(net, spikes).prediction)


def test_cli_readout_that_does_not_fit(tmp_path):
    random_network([6, 4], readout="membrane", timesteps=3).save(tmp_path / "m.bsnn")
    cli("export-nir", tmp_path / "m.bsnn", tmp_path / "m.nir")
    fails("import-nir", tmp_path / "m.nir", "-o", tmp_path / "x.bsnn", "--readout", "count",
          pattern=r"cannot import: readout 'count' needs the last layer to fire \(a finite threshold\)", cwd=tmp_path)
