"""The .bsnn artifact: round trips across every parameter, and one-line refusals of every kind of bad file."""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bsnn_hw
from bsnn_hw import ArtifactError, Layer, Network, artifact, golden, random_network


# --- helpers ---------------------------------------------------------------------------------------------------

def split(data: bytes):
    """(header dict, payload bytes) of a valid artifact."""
    (hlen,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8:8 + hlen])
    payload = data[8 + hlen:-32]
    return header, payload


def build(header: dict, payload: bytes, magic: bytes = b"BSNN") -> bytes:
    """An artifact from a (possibly edited) header and payload, with a correct checksum: so that only the
    validation of the contents can catch what was edited."""
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = magic + struct.pack("<I", len(head)) + head + payload
    return body + hashlib.sha256(body).digest()


def edited(data: bytes, edit) -> bytes:
    header, payload = split(data)
    out = edit(header)
    if isinstance(out, tuple):
        header, payload = out
    return build(header, payload)


def refused(data: bytes, pattern: str) -> str:
    """Load ``data``, expect an ArtifactError whose one-line message matches ``pattern``; return the message."""
    with pytest.raises(ArtifactError) as info:
        artifact.from_bytes(data, "m.bsnn")
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert msg.startswith("m.bsnn: "), msg
    assert re.search(pattern, msg), msg
    return msg


@pytest.fixture(scope="module")
def good() -> bytes:
    net = Network([Layer(np.random.default_rng(0).random((5, 11)) < 0.5, np.arange(1, 6), 3, "zero", 8, True),
                   Layer(np.random.default_rng(1).random((3, 5)) < 0.5, [1, 2, 3], None, "subtract", 12, False)],
                  6, readout="first", encoding="latency", seed=3, metadata={"origin": "test"})
    return artifact.to_bytes(net)


# --- round trips -----------------------------------------------------------------------------------------------

@st.composite
def networks(draw):
    n_layers = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 70)) for _ in range(n_layers + 1)]
    readout = draw(st.sampled_from(["count", "membrane", "first"]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    layers = []
    for i in range(n_layers):
        m = draw(st.integers(2, 32))
        hi = 2 ** (m - 1) - 1
        th = rng.integers(1, hi + 1, sizes[i + 1])
        if readout == "membrane" and i == n_layers - 1 and draw(st.booleans()):
            th = None
        leak = draw(st.one_of(st.none(), st.integers(1, m - 1)))
        reset = draw(st.sampled_from(["subtract", "zero"]))
        layers.append(Layer(rng.random((sizes[i + 1], sizes[i])) < 0.5, th, leak, reset, m, draw(st.booleans())))
    metadata = draw(st.dictionaries(st.text(max_size=8), st.one_of(
        st.integers(-2 ** 60, 2 ** 60), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10),
        st.booleans(), st.none(), st.lists(st.integers(), max_size=3)), max_size=4))
    return Network(layers, draw(st.integers(1, 1000)), readout=readout,
                   encoding=draw(st.sampled_from(["direct", "rate", "latency"])), seed=draw(st.integers(1, 65535)),
                   metadata=metadata)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(net=networks())
def test_round_trip(net, tmp_path):
    path = tmp_path / "net.bsnn"
    net.save(path)
    back = bsnn_hw.load(path)
    assert back == net
    assert back.metadata == net.metadata
    for a, b in zip(back.layers, net.layers):
        assert a.weights.dtype == bool and np.array_equal(a.weights, b.weights)
        assert (a.threshold is None) == (b.threshold is None)
        assert a.params() == b.params()
    # Saving the loaded network gives the same bytes: the format is canonical.
    assert artifact.to_bytes(back) == path.read_bytes()
    assert artifact.file_digest(back) == path.read_bytes()[-32:].hex()
    assert back.identity() == net.identity()


def test_identity_is_what_the_hardware_computes_not_the_metadata():
    """Metadata (timings, history) changes the file digest but never the identity; any change of weights, thresholds
    or parameters changes the identity."""
    net = random_network([20, 6, 3], timesteps=5, seed=2)
    other_meta = Network(net.layers, net.timesteps, net.readout, net.encoding, net.seed,
                         metadata={"epoch_seconds": [1.23, 4.56], "resumed": True})
    assert other_meta.identity() == net.identity()
    assert artifact.file_digest(other_meta) != artifact.file_digest(net)
    w = net.layers[0].weights.copy()
    w[0, 0] = not w[0, 0]
    changed = [
        Network([Layer(w, net.layers[0].threshold, **net.layers[0].params()), net.layers[1]], 5, net.readout,
                net.encoding, net.seed),
        Network(net.layers, 6, net.readout, net.encoding, net.seed),
        Network(net.layers, 5, "first", net.encoding, net.seed),
        Network(net.layers, 5, net.readout, net.encoding, net.seed + 1),
        Network([net.layers[0], Layer(net.layers[1].weights, net.layers[1].threshold + 1,
                                      **net.layers[1].params())], 5, net.readout, net.encoding, net.seed),
    ]
    ids = {c.identity() for c in changed} | {net.identity()}
    assert len(ids) == len(changed) + 1
    assert len(net.identity()) == 64 and int(net.identity(), 16) >= 0


def test_round_trip_keeps_golden_results(tmp_path):
    net = random_network([30, 12, 4], timesteps=10, leak_shift=2, membrane_bits=9, fire_once=True, readout="first",
                         seed=4)
    net.save(tmp_path / "n.bsnn")
    back = bsnn_hw.load(tmp_path / "n.bsnn")
    spikes = np.random.default_rng(0).random((20, 10, 30)) < 0.4
    a, b = golden.simulate(net, spikes), golden.simulate(back, spikes)
    np.testing.assert_array_equal(a.prediction, b.prediction)
    for x, y in zip(a.counts + a.membrane, b.counts + b.membrane):
        np.testing.assert_array_equal(x, y)


def test_layout(good):
    # magic, uint32 little-endian header length, JSON header, payload, SHA-256 of everything before it.
    assert good[:4] == b"BSNN"
    (hlen,) = struct.unpack("<I", good[4:8])
    header = json.loads(good[8:8 + hlen])
    assert header["format"] == "bsnn" and header["format_version"] == 1 and header["contract_version"] == 1
    assert hashlib.sha256(good[:-32]).digest() == good[-32:]
    assert len(good) == 8 + hlen + header["payload_bytes"] + 32
    # Layer 0: 5 rows of 11 bits -> 2 bytes each, LSB first; layer 1: 3 rows of 5 bits -> 1 byte each.
    l0, l1 = header["layers"]
    assert l0["weights"] == {"offset": 0, "nbytes": 10} and l1["weights"] == {"offset": 10, "nbytes": 3}
    assert header["payload_bytes"] == 13
    payload = good[8 + hlen:-32]
    w0 = np.random.default_rng(0).random((5, 11)) < 0.5
    row0 = sum(1 << i for i in range(11) if w0[0, i])
    assert payload[0] == row0 & 0xFF and payload[1] == row0 >> 8
    assert l0["threshold"] == [1, 2, 3, 4, 5] and l0["leak_shift"] == 3 and l0["reset"] == "zero"
    assert l0["membrane_bits"] == 8 and l0["fire_once"] is True and l0["type"] == "dense" and l0["weight_bits"] == 1
    assert header["network"] == {"timesteps": 6, "readout": "first", "encoding": "latency", "seed": 3}
    assert header["metadata"] == {"origin": "test"}
    assert b"pickle" not in good


# --- refusals: the container ----------------------------------------------------------------------------------

def test_wrong_magic(good):
    refused(b"PK\x03\x04" + good[4:], r"not a \.bsnn model file \(magic b'PK\\x03\\x04', expected b'BSNN'\)")


def test_wrong_version(good):
    refused(edited(good, lambda h: h.update(format_version=5)),
            r"format version 5 is not supported \(this bsnn-hw reads versions 1, 2, 3, 4\)$")
    refused(edited(good, lambda h: h.update(format_version=True)), r"format version True is not supported")
    refused(edited(good, lambda h: h.update(contract_version=7)), r"numeric contract version 7 is not supported")
    refused(edited(good, lambda h: h.update(format="onnx")), r"header does not declare format 'bsnn'$")


def test_bad_checksum(good):
    # Flip one bit in the header, in the payload, and in the stored checksum itself.
    (hlen,) = struct.unpack("<I", good[4:8])
    for pos in (8 + hlen // 2, 8 + hlen + 1, len(good) - 1):
        data = bytearray(good)
        data[pos] ^= 0x10
        msg = refused(bytes(data), r"checksum mismatch|not valid JSON")
        if pos >= 8 + hlen:
            assert "checksum mismatch: the file is corrupted" in msg


@pytest.mark.parametrize("where", ["empty", "preamble", "header", "payload", "checksum", "last byte"])
def test_truncated(good, where):
    (hlen,) = struct.unpack("<I", good[4:8])
    cut = {"empty": 0, "preamble": 5, "header": 8 + hlen // 2, "payload": 8 + hlen + 3,
           "checksum": len(good) - 20, "last byte": len(good) - 1}[where]
    refused(good[:cut], r"truncated")


def test_trailing_bytes(good):
    refused(good + b"\x00", r"1 unexpected trailing bytes after the checksum$")
    refused(good + good, r"unexpected trailing bytes")


def test_header_not_json(good):
    head = b"{not json"
    body = b"BSNN" + struct.pack("<I", len(head)) + head
    refused(body + hashlib.sha256(body).digest(), r"header is not valid JSON")


# --- refusals: the contents (checksum recomputed, so only validation can catch them) ---------------------------

def _set_layer(i, **kw):
    def edit(h):
        h["layers"][i].update(kw)
    return edit


def _set_net(**kw):
    def edit(h):
        h["network"].update(kw)
    return edit


@pytest.mark.parametrize("edit,pattern", [
    (_set_layer(0, threshold=[1, 2, 3, 4, 128]), r"layer 0: threshold must be in 1\.\.127 \(2\^\(M-1\)-1 for M = 8\), "
                                                 r"not 128$"),
    (_set_layer(0, threshold=[0, 2, 3, 4, 5]), r"layer 0: threshold must be in 1\.\.127 .*not 0$"),
    (_set_layer(0, threshold=[1, 2, 3, 4, 5.0]), r"layer 0: threshold must be a list of ints or null$"),
    (_set_layer(0, threshold=[1, 2, 3]), r"layer 0: threshold must have shape \(5,\) to match 5 neurons, not \(3,\)$"),
    (_set_layer(0, threshold=None), r"layer 0 has no threshold; only the last layer of a network with the "
                                    r"'membrane' readout may omit it$"),
    (_set_layer(0, leak_shift=8), r"layer 0: leak_shift must be in 1\.\.7 \(membrane_bits - 1\) or None, not 8$"),
    (_set_layer(0, leak_shift=0), r"layer 0: leak_shift must be in 1\.\.7 .*not 0$"),
    (_set_layer(0, leak_shift=2.0), r"layer 0: leak_shift must be an int or None, not 2\.0$"),
    (_set_layer(0, membrane_bits=40), r"layer 0: membrane_bits must be in 2\.\.32, not 40$"),
    (_set_layer(0, membrane_bits=1), r"layer 0: membrane_bits must be in 2\.\.32, not 1$"),
    (_set_layer(1, membrane_bits=2), r"layer 1: threshold must be in 1\.\.1 \(2\^\(M-1\)-1 for M = 2\), not 3$"),
    (_set_layer(0, reset="soft"), r"layer 0: reset must be one of 'subtract', 'zero', not 'soft'$"),
    (_set_layer(0, fire_once=1), r"layer 0: fire_once must be a bool, not 1$"),
    (_set_layer(0, type="conv2d"), r"layer 0: layer type 'conv2d' needs format version 2, the file says 1$"),
    (_set_layer(0, weight_bits=4), r"layer 0: 4-bit weights are not supported \(supported: 1\)$"),
    (_set_layer(0, n_in=0), r"layer 0: n_in and n_out must be positive, not 0 and 5$"),
    (_set_layer(0, n_in="11"), r"layer 0: field 'n_in' must be a positive int, not '11'$"),
    (_set_net(timesteps=0), r"m\.bsnn: timesteps must be at least 1, not 0$"),
    (_set_net(timesteps=6.0), r"m\.bsnn: timesteps must be an int, not 6\.0$"),
    (_set_net(readout="max"), r"m\.bsnn: readout must be one of 'count', 'membrane', 'first', not 'max'$"),
    (_set_net(encoding="poisson"), r"m\.bsnn: encoding must be one of .*not 'poisson'$"),
    (_set_net(seed=0), r"m\.bsnn: rate-encoding seed must be in 1\.\.65535 .*not 0$"),
    (lambda h: h.update(metadata=[1, 2]), r"m\.bsnn: metadata must be a dict, not list$"),
    (lambda h: (h.update(layers=[], payload_bytes=0), (h, b""))[1], r"m\.bsnn: a network needs at least one layer, "
                                                                     r"not 0$"),
    (lambda h: h.update(layers={}), r"m\.bsnn: field 'layers' must be a list of layers, not \{\}$"),
    (lambda h: h.pop("network"), r"m\.bsnn: missing field 'network'"),
    (lambda h: h["layers"][0].pop("n_out"), r"layer 0: missing field 'n_out'"),
    (lambda h: h.update(payload_bytes=-1), r"payload_bytes"),
])
def test_out_of_range_values(good, edit, pattern):
    refused(edited(good, edit), pattern)


def test_inconsistent_shapes(good):
    # n_in of layer 1 no longer matches n_out of layer 0 (payload resized so the file is otherwise consistent).
    def grow(h):
        header, payload = h, split(good)[1]
        header["layers"][1].update(n_in=9, weights={"offset": 10, "nbytes": 6})
        header["payload_bytes"] = 16
        return header, payload[:10] + b"\x00" * 6
    refused(edited(good, grow), r"layer 1 has n_in = 9 but layer 0 has n_out = 5; they must match$")
    # The byte count of a layer disagrees with its shape.
    refused(edited(good, _set_layer(0, n_out=4)), r"layer 0: weights take 10 bytes but 4 rows of 11 1-bit weights need 8$")
    # Weights overlapping, out of order, or leaving payload bytes unused.
    refused(edited(good, _set_layer(1, weights={"offset": 0, "nbytes": 3})), r"layer 1: weights at payload bytes "
            r"0\.\.3 must start at byte 10")
    refused(edited(good, _set_layer(1, weights={"offset": 11, "nbytes": 3})), r"must start at byte 10")
    refused(edited(good, lambda h: (h.update(payload_bytes=14), None)[1] or (h, split(good)[1] + b"\x00")),
            r"the layers' weights take 13 bytes but the payload has 14$")


def test_nonzero_padding_bits(good):
    # Layer 0 rows are 11 bits in 2 bytes: bits 11..15 of each row's second byte are padding and must be 0.
    header, payload = split(good)
    payload = bytearray(payload)
    payload[1] |= 0x80
    refused(build(header, bytes(payload)), r"layer 0: padding bits past the fan-in \(11\) in the packed weight rows must "
                                           r"be 0$")


def test_missing_and_directory(tmp_path):
    with pytest.raises(ArtifactError, match=r"nope\.bsnn: no such model file$"):
        bsnn_hw.load(tmp_path / "nope.bsnn")
    with pytest.raises(ArtifactError, match=r"is a directory, expected a \.bsnn model file$"):
        bsnn_hw.load(tmp_path)


def test_artifact_error_is_a_value_error():
    assert issubclass(ArtifactError, ValueError)


# --- save is atomic --------------------------------------------------------------------------------------------

def test_save_is_atomic(tmp_path, monkeypatch, good):
    path = tmp_path / "m.bsnn"
    path.write_bytes(good)
    net = random_network([4, 3], seed=1)

    def boom(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        net.save(path)
    assert path.read_bytes() == good                         # the old file is untouched
    assert os.listdir(tmp_path) == ["m.bsnn"]                # and no temporary file is left behind
    monkeypatch.undo()
    net.save(path)
    assert bsnn_hw.load(path) == net and os.listdir(tmp_path) == ["m.bsnn"]


def test_save_creates_missing_directories(tmp_path):
    random_network([4, 3]).save(tmp_path / "missing" / "m.bsnn")
    assert bsnn_hw.load(tmp_path / "missing" / "m.bsnn") == random_network([4, 3])


def test_saved_file_is_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        random_network([4, 3]).save(tmp_path / "m.bsnn")
    finally:
        os.umask(old)
    assert (tmp_path / "m.bsnn").stat().st_mode & 0o777 == 0o644


# --- fuzzing: whatever the bytes, loading either succeeds or raises a one-line ArtifactError ---------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 40, 2 ** 40) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


def _paths(obj, prefix=()):
    """Every (path) to a value inside a JSON object."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _load_or_artifact_error(data: bytes):
    try:
        net = artifact.from_bytes(data, "f.bsnn")
    except ArtifactError as e:
        assert "\n" not in str(e) and str(e).startswith("f.bsnn: ")
        return None
    assert isinstance(net, Network)
    return net


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_header_edits(good, data):
    # Replace any value of the header (checksum recomputed) with any JSON value, or delete it.
    header, payload = split(good)
    paths = [p for p in _paths(header) if p]
    path = data.draw(st.sampled_from(paths))
    parent = header
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()):
        parent[path[-1]] = data.draw(JSON_VALUES)
    elif isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent.pop(path[-1])
    _load_or_artifact_error(build(header, payload))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_bytes(good, data):
    raw = bytearray(good)
    kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    pos = data.draw(st.integers(0, len(raw) - 1))
    if kind == "flip":
        raw[pos] ^= data.draw(st.integers(1, 255))
    elif kind == "cut":
        del raw[pos:pos + data.draw(st.integers(1, 40))]
    else:
        raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    assert _load_or_artifact_error(bytes(raw)) is None       # the checksum or the structure catches every change


def test_deeply_nested_header():
    head = b"[" * 100000 + b"]" * 100000
    body = b"BSNN" + struct.pack("<I", len(head)) + head
    refused(body + hashlib.sha256(body).digest(), r"header is not valid JSON")
