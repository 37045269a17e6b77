"""The `.bsnn` model artifact, format versions 1 to 4 (docs/artifact.md).

Layout::

    offset 0        4 bytes   magic b"BSNN"
    offset 4        4 bytes   H, the header length, uint32 little-endian
    offset 8        H bytes   header: UTF-8 JSON (sorted keys) with every parameter
    offset 8+H      P bytes   payload: packed weight bits of every layer, P = header["payload_bytes"]
    offset 8+H+P   32 bytes   SHA-256 of all the bytes before it

Weights are packed per layer, row (neuron) by row, each row LSB-first into ceil(n_in/8) bytes
(:func:`bsnn_hw.contract.pack_bits`); each layer's ``weights`` entry gives its offset and length in the payload.
Version 3 adds an ensemble (``header["ensemble"]``): S more weight sets after the network's own, member by member,
each laid out as the network's weights are. Version 4 adds a layer's per-step affine drive (contract v3,
``"step_affine"`` in the layer's header entry: its integer tables as JSON lists).
No pickle anywhere. Every load error is an :class:`ArtifactError` with a one-line message.
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from . import contract
from .io import atomic_write_files
from .network import Conv2d, Layer, Network, Pool

MAGIC = b"BSNN"
FORMAT_VERSION = 4            # the newest format this code writes
# v1: dense layers of 1-bit weights (still written for such networks); v2: every kind; v3: v2 plus an ensemble
# (written only for a network that carries one, so plain files and their identities stay as they were); v4: v3 plus
# per-step affine drives (contract v3; written only for networks that have one)
FORMAT_VERSIONS = (1, 2, 3, 4)
LAYER_TYPES = contract.LAYER_KINDS
_DIGEST = 32


class ArtifactError(ValueError):
    """A model file that cannot be loaded: the message names what is wrong and what was expected."""


def _weight_bytes(layer) -> bytes:
    """A layer's weights in the payload: 1-bit weights packed per row (neuron, or conv output channel) LSB-first into
    ceil(fan_in / 8) bytes; k-bit weights one signed byte each (two's complement), row after row. Rows are in the
    weight array's C order: dense (n_out, n_in), conv (C_out, k, k, C_in) with the fan-in in (ky, kx, c) order."""
    return _pack(layer.weights, layer.weight_bits)


def _pack(weights: np.ndarray, bits: int) -> bytes:
    rows = weights.reshape(weights.shape[0], -1)
    if bits == 1:
        return contract.pack_bits(rows).tobytes()
    return rows.astype(np.int8).tobytes()


def _layers_and_payload(net: Network) -> tuple[list, bytes]:
    payload = bytearray()
    layers = []
    for layer in net.layers:
        if layer.kind == "pool":
            layers.append({"type": "pool", "in_shape": list(layer.in_shape), **layer.params()})
            continue
        packed = _weight_bytes(layer)
        entry = {
            "type": layer.kind,
            "n_in": layer.n_in,
            "n_out": layer.n_out,
            "weight_bits": layer.weight_bits,
            "weights": {"offset": len(payload), "nbytes": len(packed)},
            "threshold": None if layer.threshold is None else [int(t) for t in layer.threshold],
            "leak_shift": layer.leak_shift,
            "reset": layer.reset,
            "membrane_bits": layer.membrane_bits,
            "fire_once": layer.fire_once,
        }
        if layer.kind == "conv2d":
            entry.update(layer.geometry())
        if layer.has_affine:
            entry["step_affine"] = {
                "frac": layer.step_frac,
                "scale": None if layer.step_scale is None else layer.step_scale.tolist(),
                "bias": layer.step_bias.tolist()}
        layers.append(entry)
        payload += packed
    return layers, bytes(payload)


def _ensemble_payload(net: Network) -> bytes:
    """The members' weights, member after member, each member's layers in order, packed as the network's own."""
    weighted = [layer for layer in net.layers if layer.has_neurons]
    return b"".join(_pack(w, layer.weight_bits) for member in net.ensemble for w, layer in zip(member, weighted))


def _ensemble_header(net: Network, offset: int, nbytes: int) -> dict:
    return {"members": len(net.ensemble), "offset": offset, "nbytes": nbytes}


def _network_header(net: Network) -> dict:
    return {"timesteps": net.timesteps, "readout": net.readout, "encoding": net.encoding, "seed": net.seed}


def identity(net: Network) -> str:
    """The model's identity: SHA-256 (hex) of what the hardware computes and nothing else - the contract version,
    the network parameters (T, readout, encoding, seed), every layer's parameters and thresholds, and the packed
    weight bits, and an ensemble's member count and member weights. Metadata (training history, timings, accuracy) is
    outside it, so two files with the same weights and parameters have the same identity however they were made.
    Canonical form: the UTF-8 JSON (sorted keys, no spaces) of {"contract_version", "network", "layers"} as in the
    header (plus "ensemble" as in the header when there is one), a NUL byte, then the payload."""
    layers, payload = _layers_and_payload(net)
    canon = {"contract_version": net.contract_version, "network": _network_header(net), "layers": layers}
    if net.ensemble:
        extra = _ensemble_payload(net)
        canon["ensemble"] = _ensemble_header(net, len(payload), len(extra))
        payload += extra
    text = json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(text + b"\0" + payload).hexdigest()


def to_bytes(net: Network) -> bytes:
    layers, payload = _layers_and_payload(net)
    header = {
        "format": "bsnn",
        # a network the first contract expresses is written exactly as before (v1 readers keep reading it); only an
        # ensemble needs version 3
        "format_version": _format_version(net),
        "contract_version": net.contract_version,
        "network": _network_header(net),
        "layers": layers,
        "payload_bytes": len(payload),
        "metadata": net.metadata,
    }
    if net.ensemble:
        extra = _ensemble_payload(net)
        header["ensemble"] = _ensemble_header(net, len(payload), len(extra))
        payload += extra
        header["payload_bytes"] = len(payload)
    try:
        head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    except TypeError as e:
        raise TypeError(f"network metadata must be JSON-serializable: {e}") from None
    body = MAGIC + struct.pack("<I", len(head)) + head + bytes(payload)
    return body + hashlib.sha256(body).digest()


def _format_version(net: Network) -> int:
    """The oldest format that holds ``net``: 4 with a per-step affine or the "pixel" input (contracts 3 and 4), 3
    with an ensemble, 1 for a contract-v1 network, else 2."""
    if net.contract_version >= 3:
        return 4
    return 3 if net.ensemble else 1 if net.contract_version == 1 else 2


def _read_affine(ah, where: str) -> dict:
    """A layer's "step_affine" entry -> Layer keyword arguments; ints are checked as Python ints (a huge number must
    not reach NumPy) and floats refused."""
    if not isinstance(ah, dict):
        raise ArtifactError(f"{where}: step_affine must be an object, not {ah!r}")
    frac = _field(ah, "frac", where + " step_affine", int, "an int")

    def table(key, bits, optional):
        rows = ah.get(key)
        if rows is None and optional:
            return None
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
            raise ArtifactError(f"{where}: step_affine {key!r} must be a list of per-step lists of ints")
        for r in rows:
            for v in r:
                if type(v) is not int:
                    raise ArtifactError(f"{where}: step_affine {key!r} entries must be ints, not {v!r}")
                if not lo <= v <= hi:
                    raise ArtifactError(f"{where}: step_affine {key!r} entries must be in {lo}..{hi}, not {v}")
        if len({len(r) for r in rows}) != 1:
            raise ArtifactError(f"{where}: step_affine {key!r} rows must all have the same length")
        return np.array(rows, dtype=np.int64)

    return dict(step_frac=frac, step_scale=table("scale", contract.STEP_SCALE_BITS, True),
                step_bias=table("bias", contract.STEP_BIAS_BITS, False))


def file_digest(net: Network) -> str:
    """SHA-256 (hex) of the file this network saves to (the last 32 bytes of it): the file's integrity check, which
    also covers the metadata. The model's identity is :func:`identity`."""
    return to_bytes(net)[-_DIGEST:].hex()


def save(net: Network, path) -> None:
    """Write atomically: a temporary file beside ``path``, renamed over it once complete."""
    data = to_bytes(net)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, expected a .bsnn file name")
    atomic_write_files({path: data})


def load(path) -> Network:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise ArtifactError(f"{path}: is a directory, expected a .bsnn model file") from None
    return from_bytes(data, str(path))


def _diagnose(data: bytes) -> str:
    """Why a file fails its checksum. Trailing bytes are named only when the file without them passes the checksum;
    anything else is corruption (or truncation, when the header, read for a hint only, announces a longer file)."""
    try:
        (hlen,) = struct.unpack("<I", data[4:8])
        header = json.loads(data[8:8 + hlen].decode("utf-8"))
        expected = 8 + hlen + int(header["payload_bytes"]) + _DIGEST
    except Exception:          # noqa: BLE001 - a hint only: any failure means "no hint"
        expected = None
    if expected is not None and 8 + _DIGEST <= expected < len(data) and \
            hashlib.sha256(data[:expected - _DIGEST]).digest() == data[expected - _DIGEST:expected]:
        return f"{len(data) - expected} unexpected trailing bytes after the checksum"
    hint = f", its header announces {expected}" if expected is not None and expected > len(data) else ""
    return (f"checksum mismatch: the file is corrupted or truncated ({len(data)} bytes{hint}; the SHA-256 of its "
            f"contents does not match the one stored in its last {_DIGEST} bytes)")


def _field(d: dict, key: str, where: str, types, what: str):
    if key not in d:
        raise ArtifactError(f"{where}: missing field {key!r} ({what})")
    value = d[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
        raise ArtifactError(f"{where}: field {key!r} must be {what}, not {value!r}")
    return value


def _tuple(t):
    return t if isinstance(t, tuple) else (t,)


def from_bytes(data: bytes, name: str = "<bytes>") -> Network:
    if len(data) < 8:
        raise ArtifactError(f"{name}: truncated: {len(data)} bytes, shorter than the 8-byte preamble")
    if data[:4] != MAGIC:
        raise ArtifactError(f"{name}: not a .bsnn model file (magic {data[:4]!r}, expected {MAGIC!r})")
    # Integrity before interpretation: a flipped byte anywhere is reported as corruption, never as whatever field it
    # happened to hit.
    if len(data) < 8 + _DIGEST:
        raise ArtifactError(f"{name}: truncated: {len(data)} bytes, shorter than the 8-byte preamble and the "
                            f"{_DIGEST}-byte checksum")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise ArtifactError(f"{name}: {_diagnose(data)}")
    (hlen,) = struct.unpack("<I", data[4:8])
    if len(data) < 8 + hlen + _DIGEST:
        raise ArtifactError(f"{name}: header length {hlen} runs past the end of the {len(data)}-byte file")
    try:
        header = json.loads(data[8:8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{name}: header is not valid JSON ({e})") from None
    except RecursionError:
        raise ArtifactError(f"{name}: header is not valid JSON (nested too deeply)") from None
    if not isinstance(header, dict) or header.get("format") != "bsnn":
        raise ArtifactError(f"{name}: header does not declare format 'bsnn'")
    version = header.get("format_version")
    if type(version) is not int or version not in FORMAT_VERSIONS:
        raise ArtifactError(f"{name}: format version {version!r} is not supported (this bsnn-hw reads versions "
                            f"{', '.join(map(str, FORMAT_VERSIONS))})")
    cv = header.get("contract_version")
    if type(cv) is not int or cv not in contract.CONTRACT_VERSIONS:
        raise ArtifactError(f"{name}: numeric contract version {cv!r} is not supported (this bsnn-hw implements "
                            f"versions {', '.join(map(str, contract.CONTRACT_VERSIONS))})")
    plen = _field(header, "payload_bytes", name, int, "a non-negative int")
    expected = 8 + hlen + plen + _DIGEST
    if plen < 0 or len(data) != expected:
        raise ArtifactError(f"{name}: field 'payload_bytes' = {plen} does not match the file: {len(data)} bytes, "
                            f"expected 8 + {hlen} header + payload + {_DIGEST} checksum bytes")
    payload = data[8 + hlen:8 + hlen + plen]

    net_h = _field(header, "network", name, dict, "an object")
    layers_h = _field(header, "layers", name, list, "a list of layers")
    layers = []
    position = 0                  # layers' weights lie back to back in the payload, in layer order
    for i, lh in enumerate(layers_h):
        where = f"{name}: layer {i}"
        if not isinstance(lh, dict):
            raise ArtifactError(f"{where}: must be an object, not {lh!r}")
        ltype = _field(lh, "type", where, str, "a string")
        if ltype not in LAYER_TYPES:
            raise ArtifactError(f"{where}: layer type {ltype!r} is not supported (supported: "
                                f"{', '.join(LAYER_TYPES)})")
        if version == 1 and ltype != "dense":
            raise ArtifactError(f"{where}: layer type {ltype!r} needs format version 2, the file says 1")
        if ltype == "pool":
            try:
                layers.append(Pool(_field(lh, "in_shape", where, list, "a list [H, W, C]"),
                                   _field(lh, "window", where, int, "an int"), _field(lh, "mode", where, str, "a string")))
            except (TypeError, ValueError) as e:
                raise ArtifactError(f"{where}: {e}") from None
            continue
        wbits = _field(lh, "weight_bits", where, int, "an int")
        if not contract.WEIGHT_BITS_MIN <= wbits <= contract.WEIGHT_BITS_MAX or (version == 1 and wbits != 1):
            raise ArtifactError(f"{where}: {wbits}-bit weights are not supported (supported: "
                                f"{'1' if version == 1 else f'{contract.WEIGHT_BITS_MIN}..{contract.WEIGHT_BITS_MAX}'})")
        n_in = _field(lh, "n_in", where, int, "a positive int")
        n_out = _field(lh, "n_out", where, int, "a positive int")
        if n_in < 1 or n_out < 1:
            raise ArtifactError(f"{where}: n_in and n_out must be positive, not {n_in} and {n_out}")
        if ltype == "conv2d":
            in_shape = _field(lh, "in_shape", where, list, "a list [H, W, C]")
            kernel = _field(lh, "kernel", where, int, "a positive int")
            c_out = _field(lh, "out_channels", where, int, "a positive int")
            if len(in_shape) != 3 or not all(type(v) is int and v >= 1 for v in in_shape) or kernel < 1 or c_out < 1:
                raise ArtifactError(f"{where}: in_shape must be three positive ints and kernel, out_channels "
                                    f"positive, not {in_shape}, {kernel}, {c_out}")
            rows, fan_in = c_out, kernel * kernel * in_shape[2]
            shape = (c_out, kernel, kernel, in_shape[2])
        else:
            rows, fan_in, shape = n_out, n_in, (n_out, n_in)
        wref = _field(lh, "weights", where, dict, "an object")
        off = _field(wref, "offset", where + " weights", int, "an int")
        nbytes = _field(wref, "nbytes", where + " weights", int, "an int")
        need = rows * (contract.ceil_div(fan_in, 8) if wbits == 1 else fan_in)
        if nbytes != need:
            raise ArtifactError(f"{where}: weights take {nbytes} bytes but {rows} rows of {fan_in} {wbits}-bit "
                                f"weights need {need}")
        if off != position or off + nbytes > plen:
            raise ArtifactError(f"{where}: weights at payload bytes {off}..{off + nbytes} must start at byte "
                                f"{position} (right after the previous layer's) and end within the {plen}-byte "
                                f"payload")
        position += nbytes
        if wbits == 1:
            packed = np.frombuffer(payload[off:off + nbytes], dtype=np.uint8).reshape(rows, -1)
            weights = contract.unpack_bits(packed, fan_in).reshape(shape)
            if fan_in % 8 and (packed[:, -1] >> (fan_in % 8)).any():
                raise ArtifactError(f"{where}: padding bits past the fan-in ({fan_in}) in the packed weight rows "
                                    f"must be 0")
        else:
            weights = np.frombuffer(payload[off:off + nbytes], dtype=np.int8).reshape(shape)
        th = lh.get("threshold")
        if th is not None:
            if not isinstance(th, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in th):
                raise ArtifactError(f"{where}: threshold must be a list of ints or null")
            m = lh.get("membrane_bits")
            legal_m = type(m) is int and contract.MEMBRANE_BITS_MIN <= m <= contract.MEMBRANE_BITS_MAX
            hi = contract.membrane_range(m if legal_m else contract.MEMBRANE_BITS_MAX)[1]
            if th and (min(th) < 1 or max(th) > hi):   # as Python ints: 2**70 must not reach NumPy (OverflowError)
                bad = min(th) if min(th) < 1 else max(th)
                raise ArtifactError(f"{where}: threshold must be in 1..{hi} (2^(M-1)-1 for M = {m}), not {bad}")
            th = np.array(th, dtype=np.int64)
        neuron = dict(leak_shift=lh.get("leak_shift"), reset=lh.get("reset"), membrane_bits=lh.get("membrane_bits"),
                      fire_once=lh.get("fire_once"), weight_bits=wbits)
        if "step_affine" in lh:
            if version < 4:
                raise ArtifactError(f"{where}: a per-step affine (step_affine) needs format version 4, the file "
                                    f"says {version}")
            neuron.update(_read_affine(lh["step_affine"], where))
        try:
            if ltype == "conv2d":
                layer = Conv2d(weights, in_shape, th, lh.get("stride"), lh.get("padding"), **neuron)
            else:
                layer = Layer(weights, th, **neuron)
        except (TypeError, ValueError) as e:
            raise ArtifactError(f"{where}: {e}") from None
        if (layer.n_in, layer.n_out) != (n_in, n_out):
            raise ArtifactError(f"{where}: n_in, n_out = {n_in}, {n_out} do not match the layer's geometry "
                                f"({layer.n_in}, {layer.n_out})")
        layers.append(layer)
    ensemble = None
    if "ensemble" in header:
        if version < 3:
            raise ArtifactError(f"{name}: an ensemble needs format version 3, the file says {version}")
        ensemble, position = _read_ensemble(header["ensemble"], layers, payload, position, name)
    if position != plen:
        raise ArtifactError(f"{name}: the layers' weights take {position} bytes but the payload has {plen}")
    try:
        net = Network(layers, net_h.get("timesteps"), net_h.get("readout"), net_h.get("encoding"),
                      net_h.get("seed", 1), metadata=header.get("metadata") or {}, ensemble=ensemble)
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{name}: {e}") from None
    if net.contract_version > cv:
        raise ArtifactError(f"{name}: the network needs numeric contract version {net.contract_version} (encoding "
                            f"{net.encoding!r}), the file says {cv}")
    _refuse_unknown_fields(header, net, name)
    return net


HEADER_FIELDS = ("format", "format_version", "contract_version", "network", "layers", "payload_bytes", "metadata",
                 "ensemble")


def _refuse_unknown_fields(header: dict, net: Network, name: str) -> None:
    """Refuse a field this reader does not know, anywhere but in the free-form metadata: it could carry a meaning
    (a bias, another reset rule) that the network loaded without it would silently drop, so a file is read whole or
    not at all. The known fields are those the writer gives the loaded network (every field a format version has
    had is still written)."""
    layers, _ = _layers_and_payload(net)
    checks = [("", header, HEADER_FIELDS), (" network", header["network"], _network_header(net))]
    for i, (got, want) in enumerate(zip(header["layers"], layers)):
        checks.append((f" layer {i}", got, want))
        checks += [(f" layer {i} {key}", got[key], want[key]) for key in ("weights", "step_affine")
                   if isinstance(got.get(key), dict) and isinstance(want.get(key), dict)]
    if "ensemble" in header:
        checks.append((" ensemble", header["ensemble"], ("members", "offset", "nbytes")))
    for where, got, want in checks:
        extra = sorted(set(got) - set(want))
        if extra:
            raise ArtifactError(f"{name}:{where}: unknown field{'s' * (len(extra) > 1)} {', '.join(map(repr, extra))} "
                                f"(this bsnn-hw reads {', '.join(sorted(want))}; a newer writer's file?)")


def _read_ensemble(eh, layers, payload: bytes, position: int, name: str) -> tuple[list, int]:
    """The members' weight arrays from the payload (format version 3) and the payload position after them."""
    where = f"{name}: ensemble"
    if not isinstance(eh, dict):
        raise ArtifactError(f"{where}: must be an object, not {eh!r}")
    count = _field(eh, "members", where, int, "a positive int")
    off = _field(eh, "offset", where, int, "an int")
    nbytes = _field(eh, "nbytes", where, int, "an int")
    weighted = [layer for layer in layers if layer.has_neurons]
    sizes = [len(_weight_bytes(layer)) for layer in weighted]
    if count < 1:
        raise ArtifactError(f"{where}: members must be at least 1, not {count}")
    if nbytes != count * sum(sizes):
        raise ArtifactError(f"{where}: takes {nbytes} bytes but {count} members of {sum(sizes)} weight bytes need "
                            f"{count * sum(sizes)}")
    if off != position or off + nbytes > len(payload):
        raise ArtifactError(f"{where}: weights at payload bytes {off}..{off + nbytes} must start at byte {position} "
                            f"(right after the network's own) and end within the {len(payload)}-byte payload")
    members = []
    for m in range(count):
        arrays = []
        for i, (layer, size) in enumerate(zip(weighted, sizes)):
            chunk = payload[position:position + size]
            position += size
            rows = layer.weights.shape[0]
            fan_in = int(np.prod(layer.weights.shape[1:]))
            if layer.weight_bits == 1:
                packed = np.frombuffer(chunk, dtype=np.uint8).reshape(rows, -1)
                if fan_in % 8 and (packed[:, -1] >> (fan_in % 8)).any():
                    raise ArtifactError(f"{where}: member {m}, weighted layer {i}: padding bits past the fan-in "
                                        f"({fan_in}) in the packed weight rows must be 0")
                arrays.append(contract.unpack_bits(packed, fan_in).reshape(layer.weights.shape))
            else:
                arrays.append(np.frombuffer(chunk, dtype=np.int8).reshape(layer.weights.shape))
        members.append(arrays)
    return members, position
