"""NIR interchange: a :class:`~bsnn_hw.network.Network` as a NIR graph (``.nir``, nir >= 1.0.8) and back.

``to_nir(net)`` writes every layer as NIR primitives; ``from_nir(graph)`` reads such a graph back, **exactly or not
at all**: bsnn -> NIR -> bsnn gives the identical model identity (:func:`bsnn_hw.artifact.identity`), and a graph the
contract cannot represent exactly is refused with the list of what does not fit, unless ``approximate=True`` (then
the changes are listed). The CLI commands are ``bsnn-hw export-nir`` and ``bsnn-hw import-nir``; docs/nir.md has the
mapping table.

Time. NIR is continuous-time; one contract time step is ``dt`` = :data:`DT` seconds (1e-4 s, the step snnTorch's
``import_from_nir`` assumes), and the graph's metadata records it. With forward Euler, NIR's LIF
``tau v' = (v_leak - v) + R I`` becomes ``v <- v + (dt / tau) (v_leak - v + R I)``, so

    tau = 2^k dt,  R = 2^k,  v_leak = 0    gives   v <- v - v / 2^k + I

which is the contract's ``V - (V >>> k) + I`` in reals; the floor of the shift, the saturation at M bits, the
subtractive reset, fire-once, the strict threshold's integer domain and the readout/encoding are what NIR cannot say,
and go to metadata (below). Leak "none" is NIR's IF with ``R = 1``.

Mapping (layer i):

* dense: ``layer{i}_linear`` (nir.Linear, weights +-1 or the k-bit integers, as floats) -> ``layer{i}_neuron``;
  after a map, a ``layer{i}_flatten`` (nir.Flatten, start_dim 0) first, and the weight columns permuted from the
  contract's position-major (H, W, C) order to NIR/PyTorch's channel-major (C, H, W).
* conv2d: ``layer{i}_conv`` (nir.Conv2d, weights (C_out, C_in, k, k), bias 0) -> ``layer{i}_neuron`` with per-neuron
  parameters of shape (C_out, H_out, W_out).
* neurons: nir.LIF (leak shift k) or nir.IF (no leak), v_reset 0, v_threshold = theta; the last layer of a
  "membrane" readout, which never fires, has v_threshold = +inf.
* pool (OR pooling of spikes): ``layer{i}_pool`` (nir.AvgPool2d, window n, stride n) -> ``layer{i}_or`` (nir.LIF
  with tau = dt, R = 1, v_threshold 0: under Euler at dt it fires iff the window average is > 0, i.e. iff any input
  spiked, and holds no state). NIR has no OR/max pooling; this pair is exact and loads in snnTorch.

Metadata (JSON text under the key ``"bsnn"`` of a node's ``metadata``; nir's HDF5 writer keeps flat strings):
graph: ``format``, ``dt``, ``timesteps``, ``readout``, ``encoding``, ``seed``, ``identity``, ``model_metadata``;
synapse: ``layer``, ``kind``, ``weight_bits``; neuron: ``layer``, ``leak`` ("shift" or "none") and ``leak_shift``,
``reset``, ``membrane_bits``, ``fire_once``, ``fires``; pool: ``layer``, ``kind`` "pool", ``mode`` "or".

Import of a graph without this metadata (from another tool): the NIR parameters are the truth, and the contract's
extras take defaults stated in the report - zero reset (NIR's v_reset), no fire-once, the smallest membrane width M
that can never saturate in T steps (T from ``timesteps``, default 16), readout "count" (or "membrane" when the last
node never fires: +inf threshold, nir.LI or nir.I), rate encoding with seed 1.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from . import contract
from .cli import POSITIVE
from .network import Conv2d, Layer, Network, Pool, check_sum_pool, fold_sum_pool

DT = 1e-4                    # seconds per contract time step (snnTorch's import_from_nir assumes dt = 1e-4)
META_KEY = "bsnn"
FORMAT = "bsnn-nir"
FORMAT_VERSION = 1
DEFAULT_TIMESTEPS = 16


class NirError(ValueError):
    """A graph that cannot be imported (or a network that cannot be exported): one line naming what does not fit."""


# --- export ---------------------------------------------------------------------------------------------------------

def _meta(**fields) -> dict:
    return {META_KEY: json.dumps(fields, sort_keys=True, separators=(",", ":"))}


def _chw(shape_hwc) -> np.ndarray:
    h, w, c = shape_hwc
    return np.array([c, h, w])


def _fold(layer, fires: bool, unit_threshold: bool) -> bool:
    """Whether this layer's thresholds are folded into its weights (``unit_threshold`` and thresholds that differ
    within the layer: snnTorch takes one threshold per layer)."""
    return unit_threshold and fires and np.unique(layer.threshold).size > 1


def _neuron_node(nir, layer, index: int, fires: bool, folded: bool, unit_threshold: bool):
    """The NIR neuron node of a dense or conv layer: parameters shaped like its output (n,) or (C, H, W). A layer
    that never fires gets v_threshold +inf, or with ``unit_threshold`` 2^(M-1), which an M-bit membrane never
    exceeds (snnTorch's subtract reset computes 0 * inf = nan)."""
    if layer.kind == "conv2d":
        h, w, c = layer.out_shape
        shape = (c, h, w)
        th = layer.threshold[:, None, None] if layer.threshold is not None else None
    else:
        shape = (layer.n_out,)
        th = layer.threshold
    never = float(2 ** (layer.membrane_bits - 1)) if unit_threshold else np.inf
    v_th = np.full(shape, never) if not fires else np.broadcast_to(th, shape).astype(np.float64)
    zeros = np.zeros(shape)
    extra = {}
    if not fires and layer.threshold is not None:        # kept by the contract though never used: part of identity
        extra = dict(idle_thresholds=[int(t) for t in layer.threshold])
    if folded:
        v_th = np.ones(shape)
        extra = dict(folded=True, thresholds=[int(t) for t in layer.threshold])
    meta = _meta(layer=index, leak="none" if layer.leak_shift is None else "shift", leak_shift=layer.leak_shift,
                 reset=layer.reset, membrane_bits=layer.membrane_bits, fire_once=layer.fire_once, fires=fires,
                 **extra)
    if layer.leak_shift is None:
        return nir.IF(r=np.ones(shape), v_threshold=v_th, v_reset=zeros, metadata=meta)
    q = float(1 << layer.leak_shift)
    return nir.LIF(tau=np.full(shape, q * DT), r=np.full(shape, q), v_leak=zeros.copy(), v_threshold=v_th,
                   v_reset=zeros.copy(), metadata=meta)


def to_nir(net: Network, unit_threshold: bool = False):
    """``net`` as a ``nir.NIRGraph`` (module docstring: the mapping and the metadata). A network with an ensemble of
    weight sets (``net.ensemble``) is refused: a NIR graph holds one network, and exporting only the network's own
    weights would not round-trip its identity (which covers the ensemble).

    ``unit_threshold``: in every layer whose thresholds differ from neuron to neuron (or channel to channel), divide
    each neuron's weights by its threshold theta and set v_threshold = 1 - the same dynamics in reals (the membrane
    is scaled by 1 / theta; leak, subtract reset and threshold scale with it), in the form snnTorch's
    ``import_from_nir`` takes (one threshold per layer). The integer thresholds travel in metadata ("folded",
    "thresholds"), and :func:`from_nir` multiplies them back, so the identity still round-trips."""
    import nir
    ensemble = getattr(net, "ensemble", None)
    if ensemble:
        raise NirError(f"export-nir: this model carries an ensemble of {len(ensemble)} weight sets besides its own; "
                       f"a NIR graph holds one network (save the network without its ensemble to export it)")
    for i, layer in enumerate(net.layers):
        if layer.has_affine:
            raise NirError(f"export-nir: layer {i} has a per-step affine drive (contract v3, BNTT); NIR's nodes are "
                           f"time-invariant and cannot express a scale and bias that change with the step")
    first = net.layers[0]
    in_shape = _chw(first.in_shape) if len(first.in_shape) == 3 else np.array([first.n_in])
    nodes = {"input": nir.Input(input_type={"input": in_shape})}
    chain = ["input"]
    is_map = len(first.in_shape) == 3
    for i, layer in enumerate(net.layers):
        fires = net.layer_fires(i)
        if layer.kind != "dense" and not is_map:
            raise NirError(f"export-nir: layer {i} ({layer.kind}) reads the vector of dense layer {i - 1} as a map; "
                           f"NIR has no reshape node to express that")
        if layer.kind == "pool":
            n = layer.window
            h, w, c = layer.out_shape
            nodes[f"layer{i}_pool"] = nir.AvgPool2d(kernel_size=np.array([n, n]), stride=np.array([n, n]),
                                                    padding=np.array([0, 0]), metadata=_meta(layer=i, kind="pool",
                                                                                            mode=layer.mode))
            shape = (c, h, w)
            nodes[f"layer{i}_or"] = nir.LIF(tau=np.full(shape, DT), r=np.ones(shape), v_leak=np.zeros(shape),
                                            v_threshold=np.zeros(shape), v_reset=np.zeros(shape),
                                            metadata=_meta(layer=i, kind="pool-threshold"))
            chain += [f"layer{i}_pool", f"layer{i}_or"]
            continue
        folded = _fold(layer, fires, unit_threshold)
        wv = contract.weight_values(layer.weights, layer.weight_bits).astype(np.float64)
        if folded:
            wv = wv / layer.threshold.reshape((-1,) + (1,) * (wv.ndim - 1))
        wv = wv.astype(np.float32)
        syn_meta = _meta(layer=i, kind=layer.kind, weight_bits=layer.weight_bits)
        if layer.kind == "conv2d":
            h, w, _ = layer.in_shape
            nodes[f"layer{i}_conv"] = nir.Conv2d(
                input_shape=(h, w), weight=np.ascontiguousarray(wv.transpose(0, 3, 1, 2)), stride=layer.stride,
                padding=layer.padding, dilation=1, groups=1, bias=np.zeros(layer.out_channels, np.float32),
                metadata=syn_meta)
            chain.append(f"layer{i}_conv")
            is_map = True
        else:
            if is_map:
                prev = net.layers[i - 1].out_shape
                nodes[f"layer{i}_flatten"] = nir.Flatten(input_type={"input": _chw(prev)}, start_dim=0)
                chain.append(f"layer{i}_flatten")
                h, w, c = prev
                wv = wv.reshape(layer.n_out, h, w, c).transpose(0, 3, 1, 2).reshape(layer.n_out, -1)
                is_map = False
            nodes[f"layer{i}_linear"] = nir.Linear(weight=np.ascontiguousarray(wv), metadata=syn_meta)
            chain.append(f"layer{i}_linear")
        nodes[f"layer{i}_neuron"] = _neuron_node(nir, layer, i, fires, folded, unit_threshold)
        chain.append(f"layer{i}_neuron")
    last = nodes[chain[-1]]
    nodes["output"] = nir.Output(output_type={"output": np.array(last.output_type["output"])})
    chain.append("output")
    meta = _meta(format=FORMAT, version=FORMAT_VERSION, dt=DT, timesteps=net.timesteps, readout=net.readout,
                 encoding=net.encoding, seed=net.seed, identity=net.identity(), model_metadata=net.metadata)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(chain[:-1], chain[1:])), metadata=meta)


def to_bytes(graph) -> bytes:
    """A NIR graph as the bytes of its HDF5 file (``nir.write``)."""
    import nir
    buf = io.BytesIO()
    nir.write(buf, graph)
    return buf.getvalue()


def read_graph(path):
    """Read a ``.nir`` file; any failure is a :class:`NirError` naming the file and what was expected."""
    import nir
    p = Path(path)
    if not p.exists():
        raise NirError(f"{path}: no such NIR file")
    if p.is_dir():
        raise NirError(f"{path}: is a directory, expected a .nir file")
    try:
        return nir.read(p)
    except Exception as e:   # noqa: BLE001 - h5py and nir raise many kinds of error on arbitrary bytes
        why = " ".join(str(e).split()) or type(e).__name__
        raise NirError(f"{path}: not a readable NIR graph (an HDF5 file written by nir.write): {why}") from None


# --- import ---------------------------------------------------------------------------------------------------------

def _read_meta(node) -> dict:
    """The node's bsnn metadata (empty when there is none); malformed metadata is an error, not ignored."""
    raw = (getattr(node, "metadata", None) or {}).get(META_KEY)
    if raw is None:
        return {}
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        meta = json.loads(str(raw))
    except json.JSONDecodeError as e:
        raise NirError(f"metadata {META_KEY!r} is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise NirError(f"metadata {META_KEY!r} must be a JSON object, not {meta!r}")
    return meta


def _graph_dt(meta: dict, given=None) -> float:
    """Seconds per time step: ``given`` (the --dt option), else the graph's metadata, else :data:`DT`; the metadata's
    must be a finite number > 0."""
    if given is not None:
        return float(given)
    dt = meta.get("dt", DT)
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not (math.isfinite(dt) and dt > 0):
        raise NirError(f"metadata {META_KEY!r}: dt must be a number of seconds > 0, not {dt!r}")
    return float(dt)


@dataclass
class _Import:
    """What an import found: the problems (exact import impossible), the changes made by an approximate import,
    and the defaults it chose where the graph says nothing."""
    approximate: bool
    exported_identity: str | None = None
    problems: list = field(default_factory=list)
    changes: list = field(default_factory=list)
    defaults: list = field(default_factory=list)

    def misfit(self, where: str, what: str, change: str | None = None) -> None:
        """``what`` does not fit the contract; with ``approximate``, ``change`` (if any) is what was done instead."""
        if self.approximate and change is not None:
            self.changes.append(f"{where}: {what}; {change}")
        else:
            self.problems.append(f"{where}: {what}")


def _uniform(values, where: str, name: str, imp: _Import) -> float | None:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return None
    if not np.all(v == v.flat[0]):
        imp.problems.append(f"{where}: {name} must be the same for every neuron of a layer, not "
                            f"{v.min():g}..{v.max():g}")
        return None
    return float(v.flat[0])


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _weights(w, where: str, meta: dict, imp: _Import):
    """NIR weights -> (integer weights, weight_bits, alpha): exact +-1 -> 1 bit; integers -> k bits (the metadata's
    k, else the smallest that holds them). Otherwise a misfit; ``approximate`` binarizes with sign and the scale
    alpha = mean |w| (docs/spec.md section 7 folds it into the threshold)."""
    w = np.asarray(w, dtype=np.float64)
    bits = meta.get("weight_bits")
    finite = np.isfinite(w).all()
    integral = finite and np.array_equal(w, np.round(w))
    lo, hi = contract.weight_range(contract.WEIGHT_BITS_MAX)
    if integral and w.size and w.min() >= lo and w.max() <= hi:
        wi = w.astype(np.int64)
        binary = bool(np.all(np.abs(wi) == 1))
        if bits is None:
            bits = 1 if binary else next(k for k in range(2, contract.WEIGHT_BITS_MAX + 1)
                                         if contract.weight_range(k)[0] <= wi.min() and wi.max()
                                         <= contract.weight_range(k)[1])
        if type(bits) is int and contract.WEIGHT_BITS_MIN <= bits <= contract.WEIGHT_BITS_MAX:
            klo, khi = contract.weight_range(bits)
            if (bits == 1 and binary) or (bits > 1 and wi.min() >= klo and wi.max() <= khi):
                return wi, bits, 1.0
        imp.problems.append(f"{where}: weights {wi.min()}..{wi.max()} do not fit the metadata's weight_bits "
                            f"{bits!r}")
        return None
    if not finite:
        imp.problems.append(f"{where}: weights must be finite")
        return None
    if integral:
        what = f"integer weights {int(w.min())}..{int(w.max())} are outside the 8-bit range {lo}..{hi}"
    else:
        frac = w[w != np.round(w)]
        what = f"{frac.size} of {w.size} weights are not integers (e.g. {_fmt(frac.flat[0])})"
    alpha = float(np.mean(np.abs(w))) or 1.0
    imp.misfit(where, what, f"binarized to sign(w) (0 -> +1) with the scale mean|w| = {_fmt(alpha)} folded into "
                            f"the threshold")
    if not imp.approximate:
        return None
    return np.where(w >= 0, 1, -1).astype(np.int64), 1, alpha


def _square(v, where: str, name: str, imp: _Import) -> int | None:
    a = np.atleast_1d(np.asarray(v)).ravel()
    if a.size == 0 or not np.all(a == a[0]) or a[0] != int(a[0]):
        imp.problems.append(f"{where}: {name} must be one integer for both axes, not {a.tolist()}")
        return None
    return int(a[0])


def _conv_geometry(node, where: str, imp: _Import):
    """(kernel, stride, padding) of a nir.Conv2d, or None after recording why it does not fit."""
    w = np.asarray(node.weight)
    ok = True
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        imp.problems.append(f"{where}: conv weights must be (C_out, C_in, k, k) with a square kernel, not {w.shape}")
        return None
    k = int(w.shape[2])
    if node.groups != 1:
        imp.problems.append(f"{where}: groups must be 1, not {node.groups}")
        ok = False
    dilation = _square(node.dilation, where, "dilation", imp)
    if dilation is None:
        ok = False
    elif dilation != 1:
        imp.problems.append(f"{where}: dilation must be 1, not {dilation}")
        ok = False
    stride = _square(node.stride, where, "stride", imp)
    pad = node.padding
    if isinstance(pad, str):
        if pad == "valid":
            pad = 0
        elif pad == "same" and k % 2 == 1 and stride == 1:
            pad = (k - 1) // 2
        else:
            imp.problems.append(f"{where}: padding {pad!r} with a {k}x{k} kernel has no symmetric integer padding")
            return None
    padding = _square(pad, where, "padding", imp)
    if node.bias is not None and np.any(np.asarray(node.bias) != 0):
        imp.misfit(where, "a non-zero bias (a constant input current) is not part of the contract", "bias dropped")
        ok = ok and imp.approximate
    if stride is None or padding is None or not ok:
        return None
    return k, stride, padding


def _unfold(w: np.ndarray, node, where: str, meta: dict, imp: _Import):
    """Undo ``to_nir(unit_threshold=True)``: weights times the metadata's integer thresholds (one per row), and the
    node's v_threshold = 1 replaced by them. The product must come back to integers (float32 rounding only)."""
    if not meta.get("folded"):
        return w, meta
    th = meta.get("thresholds")
    if not isinstance(th, list) or len(th) != w.shape[0] or not all(type(t) is int for t in th):
        raise NirError(f"cannot import: {where}: metadata 'thresholds' must list {w.shape[0]} ints, one per output "
                       f"row of the weights")
    if not np.all(np.asarray(node.v_threshold) == 1):
        raise NirError(f"cannot import: {where}: the metadata says the thresholds are folded into the weights, but "
                       f"v_threshold is not 1")
    th = np.asarray(th, dtype=np.float64)
    w = w * th.reshape((-1,) + (1,) * (w.ndim - 1))
    near = np.round(w)
    if np.any(np.abs(w - near) > 1e-3):
        raise NirError(f"cannot import: {where}: weights times the folded thresholds are not integers")
    meta = dict(meta, _thresholds=th)
    return near, meta


def _neuron(node, where: str, meta: dict, dt: float, alpha: float, imp: _Import) -> dict | None:
    """A NIR neuron node -> the contract's neuron parameters {threshold, leak_shift, reset, fires, ...}."""
    import nir
    out = {"reset": "zero", "fire_once": False, "membrane_bits": None}
    out.update({key: meta[key] for key in ("reset", "fire_once", "membrane_bits") if key in meta})
    if isinstance(node, (nir.LIF, nir.LI)):
        tau = _uniform(node.tau, where, "tau", imp)
        r = _uniform(node.r, where, "r", imp)
        if np.any(np.asarray(node.v_leak) != 0):
            imp.problems.append(f"{where}: v_leak must be 0 (the contract leaks towards 0), not "
                                f"{_fmt(float(np.max(np.abs(node.v_leak))))}")
        if tau is None or r is None:
            return None
        if not tau > 0:
            imp.problems.append(f"{where}: tau must be positive, not {_fmt(tau)}")
            return None
        q = tau / dt
        k = math.log2(q) if q > 0 else float("nan")
        kr = round(k) if math.isfinite(k) else None
        if kr is None or abs(k - kr) > 1e-9 or kr < 1:
            near = max(1, kr if kr is not None else 1)
            imp.misfit(where, f"tau = {_fmt(tau)} s is {_fmt(q)} steps of dt = {_fmt(dt)} s, not a shift leak "
                              f"(tau = 2^k dt, k >= 1)",
                       f"leak shift k = {near} (lambda {1 - 2.0 ** -near:g} for {1 - 1 / q if q else 0:g})")
            if not imp.approximate:
                return None
            kr = near
        out["leak_shift"] = int(kr)
        gain = r * dt / tau            # Euler: the input enters as (dt / tau) R I
    else:                              # IF, I
        out["leak_shift"] = None
        r = _uniform(node.r, where, "r", imp)
        if r is None:
            return None
        gain = r
    if abs(gain - 1) <= 1e-9:          # tau and R written as floats by another tool: R dt / tau = 1 up to rounding
        gain = 1.0
    if gain != 1:
        imp.misfit(where, f"the input gain R dt / tau (R for IF) is {_fmt(gain)}, not 1",
                   f"threshold divided by {_fmt(gain)}")
        if not imp.approximate:
            return None
    scale = gain * alpha
    if isinstance(node, (nir.LI, nir.I)):
        out.update(threshold=None, fires=False)
        return out
    if np.any(np.asarray(node.v_reset) != 0):
        imp.problems.append(f"{where}: v_reset must be 0 (zero reset; subtract reset comes from bsnn metadata), not "
                            f"{_fmt(float(np.max(np.abs(node.v_reset))))}")
        return None
    th = np.asarray(node.v_threshold, dtype=np.float64)
    if "_thresholds" in meta:                      # folded: v_threshold 1 per neuron stands for theta per row
        rows = meta["_thresholds"]
        th = (th * rows.reshape((-1,) + (1,) * (th.ndim - 1))) if th.ndim else th * rows
    never = np.all(np.isposinf(th)) or (meta.get("fires") is False and type(meta.get("membrane_bits")) is int
                                         and np.all(th == 2.0 ** (meta["membrane_bits"] - 1)))
    if never:
        idle = meta.get("idle_thresholds")
        out.update(threshold=np.asarray(idle, dtype=np.int64) if isinstance(idle, list) else None, fires=False)
        return out
    if not np.isfinite(th).all():
        imp.problems.append(f"{where}: v_threshold must be finite (or +inf for every neuron of a last layer that never "
                            f"fires)")
        return None
    th = th / scale
    if not np.array_equal(th, np.round(th)):
        bad = th[th != np.round(th)].flat[0]
        what = "threshold" if scale == 1 else f"threshold / (input gain x weight scale {_fmt(scale)})"
        imp.misfit(where, f"{what} {_fmt(bad)} is not an integer", "thresholds rounded down (v > x <=> v > floor(x) "
                                                                      "for an integer membrane)")
        if not imp.approximate:
            return None
    th = np.floor(th)
    if th.min() < 1:
        imp.misfit(where, f"threshold {_fmt(th.min())} is below 1", "raised to 1")
        if not imp.approximate:
            return None
        th = np.maximum(th, 1)
    if th.max() >= 2 ** 31:
        imp.problems.append(f"{where}: threshold {_fmt(th.max())} does not fit a 32-bit membrane")
        return None
    out.update(threshold=th.astype(np.int64), fires=True)
    if meta.get("fires") is False:
        imp.problems.append(f"{where}: the metadata says this layer never fires but its threshold is finite")
    return out


def _pool_threshold(node, window: int, average: bool, dt: float) -> bool:
    """Whether ``node`` after a pooling node makes it exactly OR pooling of spikes: a stateless threshold t with
    0 <= t < (smallest non-zero window value), as nir.Threshold, an IF with R = 1, or a LIF with tau = dt, R = 1."""
    import nir
    th = np.asarray(getattr(node, "threshold", getattr(node, "v_threshold", np.nan)), dtype=np.float64)
    smallest = 1.0 / (window * window) if average else 1.0
    ok = th.size > 0 and np.all((th >= 0) & (th < smallest))
    if isinstance(node, nir.LIF):
        ok = ok and np.allclose(node.tau, dt, rtol=1e-9, atol=0) and np.all(np.asarray(node.r) == 1) and \
            not np.any(np.asarray(node.v_leak)) and not np.any(np.asarray(node.v_reset))
    elif isinstance(node, nir.IF):
        ok = ok and np.all(np.asarray(node.r) == 1) and not np.any(np.asarray(node.v_reset))
    elif not isinstance(node, nir.Threshold):
        ok = False
    return bool(ok)


def _chain(graph, imp: _Import) -> list[str] | None:
    """The node names from Input to Output when the graph is one chain; else None (problems recorded)."""
    import nir
    nodes, edges = graph.nodes, list(dict.fromkeys(tuple(e) for e in graph.edges))
    inputs = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
    outputs = [k for k, n in nodes.items() if isinstance(n, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        def few(names):
            return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        imp.problems.append(f"topology: the graph must have one Input and one Output node, not {len(inputs)} "
                            f"({few(inputs)}) and {len(outputs)} ({few(outputs)}); {len(edges)} edge"
                            f"{'s' * (len(edges) != 1)} join its {len(nodes)} nodes")
        return None
    succ, pred = {}, {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
        pred.setdefault(b, []).append(a)
    branching = sorted({a for a, s in succ.items() if len(s) > 1} | {b for b, p in pred.items() if len(p) > 1})
    if branching:
        imp.problems.append(f"topology: only a chain of layers is supported; node(s) {', '.join(branching)} branch "
                            f"or merge (recurrence, skip connections)")
        return None
    order, node = [inputs[0]], inputs[0]
    while node in succ and len(order) <= len(nodes):
        node = succ[node][0]
        order.append(node)
    if order[-1] != outputs[0] or len(order) != len(nodes):
        unused = sorted(set(nodes) - set(order))
        imp.problems.append(f"topology: the chain from {inputs[0]!r} " + (
            f"does not reach {outputs[0]!r}" if order[-1] != outputs[0] else "misses node(s) " + ", ".join(unused)))
        return None
    return order


SYNAPSES = ("Linear", "Affine", "Conv2d")
NEURONS = ("LIF", "IF", "LI", "I")
POOLS = ("AvgPool2d", "SumPool2d")


def _convert(graph, approximate: bool = False, timesteps=None, readout=None, encoding=None, seed=None,
             dt=None) -> tuple[Network, _Import]:
    imp = _Import(approximate)
    gmeta = _read_meta(graph)
    ours = gmeta.get("format") == FORMAT
    if ours and gmeta.get("version") != FORMAT_VERSION:
        raise NirError(f"bsnn metadata version {gmeta.get('version')!r} is not supported (this bsnn-hw reads "
                       f"{FORMAT_VERSION})")
    dt = _graph_dt(gmeta, dt)
    imp.exported_identity = gmeta.get("identity") if ours else None

    def network_param(name, given, default):
        if given is not None:
            return given
        if name in gmeta:
            return gmeta[name]
        imp.defaults.append(f"{name} {default!r}")
        return default

    timesteps = network_param("timesteps", timesteps, DEFAULT_TIMESTEPS)
    if type(timesteps) is not int or timesteps < 1:
        raise NirError(f"cannot import: timesteps must be a positive int, not {timesteps!r}")
    order = _chain(graph, imp)
    if order is None:
        raise NirError("cannot import: " + "; ".join(imp.problems))
    nodes = graph.nodes
    names = order[1:-1]
    first_in = np.asarray(nodes[order[0]].output_type.get("output", nodes[order[0]].input_type.get("input")))
    shape = tuple(int(v) for v in first_in.ravel())          # (n,) or NIR's (C, H, W)
    if len(shape) == 3:
        c, h, w = shape
        cur = (h, w, c)                                      # the contract's map shape
    elif len(shape) == 1:
        cur = (shape[0],)
    else:
        raise NirError(f"cannot import: input: shape {shape} must be (n,) or (C, H, W)")
    specs = []                                               # (kind, dict of constructor arguments) per layer
    i = 0
    while i < len(names):
        name, node = names[i], nodes[names[i]]
        tname = type(node).__name__
        meta = _read_meta(node)
        if tname == "Flatten":
            if len(cur) == 3:
                cur = ("flat", cur)                           # remember the map for the permutation of the next Linear
            i += 1
            continue
        if tname in POOLS:
            if len(cur) != 3:
                imp.problems.append(f"{name}: pooling needs a (C, H, W) map, not a vector")
                break
            n = _square(node.kernel_size, name, "kernel_size", imp)
            s = _square(node.stride, name, "stride", imp)
            p = _square(node.padding, name, "padding", imp)
            if None in (n, s, p) or s != n or p != 0:
                if None not in (n, s, p):
                    imp.problems.append(f"{name}: pooling must have stride = window and no padding, not window {n}, "
                                        f"stride {s}, padding {p}")
                i += 1
                continue
            nxt = nodes[names[i + 1]] if i + 1 < len(names) else None
            if nxt is not None and _pool_threshold(nxt, n, tname == "AvgPool2d", dt):
                i += 2
            elif tname == "SumPool2d" and nxt is not None and type(nxt).__name__ in (*SYNAPSES, "Flatten"):
                # Counts into the next layer's synapses: exact, folded into that layer (docs/spec.md 8.5).
                try:
                    check_sum_pool(cur, n)
                except ValueError as e:
                    imp.problems.append(f"{name}: {e}")
                    break
                specs.append(("sumpool", dict(in_shape=cur, window=n)))
                cur = (cur[0] // n, cur[1] // n, cur[2])
                i += 1
                continue
            else:
                imp.misfit(name, f"{tname} passes {'averages' if tname == 'AvgPool2d' else 'sums'} of spikes on; the "
                                 f"contract pools spikes with OR (a pooling node followed by a threshold in "
                                 f"[0, smallest non-zero value))", "replaced by OR pooling")
                i += 1
            if not 1 <= n <= min(cur[:2]):
                imp.problems.append(f"{name}: window {n} does not fit the {cur[0]}x{cur[1]} map")
                continue
            specs.append(("pool", dict(in_shape=cur, window=n)))
            cur = (contract.pool_output_size(cur[0], n), contract.pool_output_size(cur[1], n), cur[2])
            continue
        if tname not in SYNAPSES:
            imp.problems.append(f"{name}: node type {tname} is not supported (supported: Input, Output, Linear, "
                                f"Affine, Conv2d, Flatten, AvgPool2d, SumPool2d, LIF, IF, LI, I, Threshold after a "
                                f"pooling node)")
            i += 1
            continue
        nxt_name = names[i + 1] if i + 1 < len(names) else None
        nxt = nodes[nxt_name] if nxt_name is not None else None
        if nxt is None or type(nxt).__name__ not in NEURONS:
            imp.problems.append(f"{name}: a {tname} must be followed by a LIF, IF, LI or I neuron node, not "
                                f"{type(nxt).__name__ if nxt is not None else 'the output'}")
            i += 1
            continue
        last = i + 2 == len(names)
        if type(nxt).__name__ in ("LI", "I") and not last:
            imp.problems.append(f"{nxt_name}: a {type(nxt).__name__} node (it never fires) may only be the last layer")
        i += 2
        if tname == "Affine" and np.any(np.asarray(node.bias) != 0):
            imp.misfit(name, "a non-zero bias (a constant input current) is not part of the contract", "bias dropped")
        nmeta = _read_meta(nxt)
        weight, nmeta = _unfold(np.asarray(node.weight, dtype=np.float64), nxt, nxt_name, nmeta, imp)
        wts = _weights(weight, name, meta, imp)
        alpha = wts[2] if wts is not None else 1.0
        neuron = _neuron(nxt, nxt_name, nmeta, dt, alpha, imp)
        if tname == "Conv2d":
            geo = _conv_geometry(node, name, imp)
            if len(cur) != 3:
                imp.problems.append(f"{name}: a conv layer needs a (C, H, W) map, not a vector")
                break
            if wts is None or geo is None or neuron is None:
                c_out = np.asarray(node.weight).shape[0]
                if geo is not None:
                    cur = (contract.conv_output_size(cur[0], geo[0], geo[1], geo[2]),
                           contract.conv_output_size(cur[1], geo[0], geo[1], geo[2]), c_out)
                continue
            k, stride, padding = geo
            th = neuron["threshold"]
            c_out = wts[0].shape[0]
            if th is not None:
                per = th.reshape(c_out, -1) if th.ndim else np.full((c_out, 1), th)
                if not np.all(per == per[:, :1]):
                    imp.problems.append(f"{nxt_name}: a conv layer's threshold must be the same at every position of a "
                                        f"channel")
                    continue
                th = per[:, 0]
            w = wts[0].transpose(0, 2, 3, 1)                  # (C_out, C_in, k, k) -> the contract's OHWI
            spec = dict(weights=w, in_shape=cur, stride=stride, padding=padding, weight_bits=wts[1], **neuron)
            spec["threshold"] = th
            specs.append(("conv2d", spec))
            cur = (contract.conv_output_size(cur[0], k, stride, padding),
                   contract.conv_output_size(cur[1], k, stride, padding), c_out)
            continue
        # dense (Linear / Affine)
        flat_of = None
        if cur and cur[0] == "flat":
            flat_of = cur[1]
            n_in = int(np.prod(flat_of))
        elif len(cur) == 3:
            imp.problems.append(f"{name}: a {tname} after a (C, H, W) map needs a Flatten node before it")
            break
        else:
            n_in = cur[0]
        if wts is None or neuron is None:
            cur = (int(np.asarray(node.weight).shape[0]),)
            continue
        w = wts[0]
        if w.ndim != 2 or w.shape[1] != n_in:
            imp.problems.append(f"{name}: weights {w.shape} do not take the {n_in} inputs before it")
            break
        if flat_of is not None:                               # NIR's (C, H, W) columns -> the contract's (H, W, C)
            h, wd, c = flat_of
            w = w.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
        specs.append(("dense", dict(weights=w, weight_bits=wts[1], **neuron)))
        cur = (w.shape[0],)
    if not imp.problems and (not specs or specs[-1][0] in ("pool", "sumpool")):
        imp.problems.append("topology: the last layer must be a layer of neurons (dense or conv) for the readout")
    if imp.problems:
        raise NirError(f"cannot import exactly ({len(imp.problems)} problem{'s' * (len(imp.problems) > 1)}"
                       f"{'' if approximate else '; --approximate converts some'}): " + "; ".join(imp.problems))
    never = [s for s in specs if s[0] not in ("pool", "sumpool") and not s[1]["fires"]]
    fires_last = specs[-1][1]["fires"]
    readout = network_param("readout", readout, "count" if fires_last else "membrane")
    if (readout == "membrane") == fires_last:
        need = "never to fire (v_threshold +inf, LI or I)" if readout == "membrane" else "to fire (a finite threshold)"
        raise NirError(f"cannot import: readout {readout!r} needs the last layer {need}")
    if never and never[-1] is not specs[-1]:
        raise NirError("cannot import: only the last layer may never fire (v_threshold +inf), for the 'membrane' "
                       "readout")
    encoding = network_param("encoding", encoding, "rate")
    seed = network_param("seed", seed, 1)

    layers, sum_pool = [], None
    for kind, spec in specs:
        li = len(layers)                                     # the network's layer index (a sum pool is none)
        if kind == "pool":
            layers.append(Pool(spec["in_shape"], spec["window"]))
            continue
        if kind == "sumpool":
            sum_pool = spec
            continue
        spec = dict(spec)
        spec.pop("fires")
        m = spec.pop("membrane_bits")
        w = spec.pop("weights")
        bits = spec["weight_bits"]
        if m is None:
            counts = 1 if sum_pool is None else sum_pool["window"] ** 2     # a sum-pooled input: up to n^2 spikes
            m = _membrane_bits_for(w, bits, spec, timesteps, li, imp, counts)
        wb = w > 0 if bits == 1 else w.astype(np.int8)
        if kind == "conv2d":
            layer = _build(Conv2d, li, wb, spec.pop("in_shape"), spec.pop("threshold"), membrane_bits=m, **spec)
        else:
            layer = _build(Layer, li, wb, spec.pop("threshold"), membrane_bits=m, **spec)
        if sum_pool is not None:
            try:
                layer = fold_sum_pool(layer, sum_pool["window"], sum_pool["in_shape"])
            except ValueError as e:
                raise NirError(f"cannot import: layer {li}: {e}") from None
            sum_pool = None
        layers.append(layer)
    model_meta = gmeta.get("model_metadata") if ours and isinstance(gmeta.get("model_metadata"), dict) else {}
    try:
        net = Network(layers, timesteps, readout, encoding, seed, metadata=model_meta)
    except (TypeError, ValueError) as e:
        raise NirError(f"cannot import: {e}") from None
    return net, imp


def _build(cls, index, *args, **kwargs):
    try:
        return cls(*args, **kwargs)
    except (TypeError, ValueError) as e:
        raise NirError(f"cannot import: layer {index}: {e}") from None


def _membrane_bits_for(w, bits, spec, timesteps, index, imp: _Import, input_max: int = 1) -> int:
    """The smallest membrane width M that never saturates in T steps (|V| <= T max|I|) and holds the thresholds and
    the leak shift: NIR has no saturation, so a graph without bsnn metadata imports exactly only with such an M.
    ``input_max``: the largest input value (n^2 after n x n sum pooling)."""
    fan_in = int(np.prod(w.shape[1:]))
    lo, hi = contract.weight_range(bits)
    bound = timesteps * fan_in * input_max * max(-lo, hi)
    th = spec.get("threshold")
    need = max(bound, int(th.max()) if th is not None else 0)
    m = max(2, need.bit_length() + 1, (spec.get("leak_shift") or 0) + 1)
    if m > contract.MEMBRANE_BITS_MAX:
        imp.misfit(f"layer {index}", f"a membrane that never saturates in {timesteps} steps needs {m} bits, more than "
                                     f"{contract.MEMBRANE_BITS_MAX}", f"{contract.MEMBRANE_BITS_MAX}-bit membrane "
                                                                      f"(saturates)")
        m = contract.MEMBRANE_BITS_MAX
    imp.defaults.append(f"layer {index} membrane_bits {m} (never saturates in {timesteps} steps)")
    return m


def from_nir(graph, approximate: bool = False, **options) -> Network:
    """A NIR graph as a :class:`Network`, exactly or not at all (module docstring).

    Raises :class:`NirError` with the one-line list of everything that does not fit, unless ``approximate``; then
    the network's metadata lists the changes under ``"nir_import"``. ``options``: ``timesteps``, ``readout``,
    ``encoding``, ``seed`` (override the graph's bsnn metadata or the defaults), ``dt`` (seconds per step)."""
    net, imp = _convert(graph, approximate, **options)
    if imp.changes or imp.defaults:
        net.metadata["nir_import"] = {"changes": imp.changes, "defaults": imp.defaults}
    return net


# --- a reference interpreter of the NIR graph (float, NIR's own semantics) ------------------------------------------

def simulate_nir(graph, spikes: np.ndarray, dt: float | None = None, readout: str = "count") -> np.ndarray:
    """Predictions of the float NIR graph: a plain NumPy interpreter of NIR's equations (forward Euler at ``dt``,
    float64), no contract extras (no saturation, no floor, zero reset to v_reset, no fire-once).

    ``spikes``: bool (batch, T, n_in), the contract's input order (position-major for a map). ``readout``: "count",
    "membrane" (argmax of the last node's state after T steps) or "first", as docs/spec.md section 3, over the
    output in the contract's order (position-major for a map)."""
    import nir
    from . import golden
    imp = _Import(False)
    order = _chain(graph, imp)
    if order is None:
        raise NirError("; ".join(imp.problems))
    dt = _graph_dt(_read_meta(graph), dt)
    nodes = [graph.nodes[n] for n in order[1:-1]]
    in_shape = tuple(int(v) for v in np.asarray(graph.nodes[order[0]].output_type["output"]).ravel())
    batch, steps, _ = spikes.shape
    state = [None] * len(nodes)
    counts = first = last_v = None
    for t in range(steps):
        x = spikes[:, t].astype(np.float64)
        if len(in_shape) == 3:
            c, h, w = in_shape
            x = x.reshape(batch, h, w, c).transpose(0, 3, 1, 2)
        v_out = None
        for j, node in enumerate(nodes):
            if isinstance(node, nir.Linear):
                x = x @ np.asarray(node.weight, np.float64).T
            elif isinstance(node, nir.Affine):
                x = x @ np.asarray(node.weight, np.float64).T + np.asarray(node.bias, np.float64)
            elif isinstance(node, nir.Conv2d):
                x = _conv_nchw(x, node)
            elif isinstance(node, nir.Flatten):
                x = x.reshape(batch, -1)
            elif isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
                n = int(np.asarray(node.kernel_size).ravel()[0])
                b, c, h, w = x.shape
                x = x[:, :, :h // n * n, :w // n * n].reshape(b, c, h // n, n, w // n, n).sum((3, 5))
                if isinstance(node, nir.AvgPool2d):
                    x = x / (n * n)
            elif isinstance(node, nir.Threshold):
                x = (x > np.asarray(node.threshold)).astype(np.float64)
            elif isinstance(node, (nir.LIF, nir.IF, nir.LI, nir.I)):
                v = state[j] if state[j] is not None else np.zeros_like(x)
                if isinstance(node, (nir.LIF, nir.LI)):
                    v = v + dt / np.asarray(node.tau) * (np.asarray(node.v_leak) - v + np.asarray(node.r) * x)
                else:
                    v = v + np.asarray(node.r) * x
                if isinstance(node, (nir.LI, nir.I)):
                    x, v_out = v, v
                else:
                    z = v > np.asarray(node.v_threshold)
                    v = np.where(z, np.asarray(node.v_reset), v)
                    x, v_out = z.astype(np.float64), v
                state[j] = v
            else:
                raise NirError(f"simulate_nir: node type {type(node).__name__} is not interpreted")
        if x.ndim == 4:                                       # a map: the contract numbers it position-major
            x, v_out = x.transpose(0, 2, 3, 1), v_out.transpose(0, 2, 3, 1)
        out = x.reshape(batch, -1)
        if counts is None:
            counts = np.zeros(out.shape, np.int64)
            first = np.full(out.shape, -1, np.int64)
        spk = out > 0 if not isinstance(nodes[-1], (nir.LI, nir.I)) else np.zeros(out.shape, bool)
        first[(first < 0) & spk] = t
        counts += spk
        last_v = v_out.reshape(batch, -1)
    return golden.readout(readout, counts, last_v, first, steps)


def _conv_nchw(x: np.ndarray, node) -> np.ndarray:
    """NIR's Conv2d (cross-correlation, like PyTorch) on (B, C, H, W) float64, via sliding windows."""
    w = np.asarray(node.weight, np.float64)
    k = w.shape[2]
    s = int(np.asarray(node.stride).ravel()[0])
    p = node.padding if not isinstance(node.padding, str) else (0 if node.padding == "valid" else (k - 1) // 2)
    p = int(np.asarray(p).ravel()[0])
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s]   # (B, C, Ho, Wo, k, k)
    out = np.einsum("bchwij,ocij->bohw", win, w, optimize=True)
    if node.bias is not None:
        out = out + np.asarray(node.bias, np.float64)[None, :, None, None]
    return out


# --- command line ---------------------------------------------------------------------------------------------------

@click.command("export-nir")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--unit-threshold", is_flag=True, help="Fold per-neuron thresholds into the weights (v_threshold = 1): "
              "the form snnTorch's import_from_nir takes (one threshold per layer); still round-trips exactly.")
def export_nir(model, out, unit_threshold):
    """Write MODEL (.bsnn) as a NIR graph OUT (.nir); bsnn-only parameters travel in node metadata (docs/nir.md)."""
    from .cli import load_model
    from .io import atomic_write_files, check_not_input
    check_not_input(out, [model], "OUT")
    net = load_model(model)
    graph = to_nir(net, unit_threshold=unit_threshold)
    atomic_write_files({out: to_bytes(graph)})
    click.echo(f"wrote {out}: {len(graph.nodes)} NIR nodes for {len(net.layers)} layers, dt = {DT:g} s per step, "
               f"identity {net.identity()}")


@click.command("import-nir")
@click.argument("graph_file", metavar="IN", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output .bsnn file.")
@click.option("--approximate", is_flag=True, help="Convert what does not fit exactly (binarize weights, nearest "
              "shift leak, round thresholds down, ...) and list every change.")
@click.option("--timesteps", "-T", type=click.IntRange(min=1), default=None,
              help=f"T (default: the graph's bsnn metadata, else {DEFAULT_TIMESTEPS}).")
@click.option("--readout", type=click.Choice(contract.READOUTS), default=None,
              help="Readout (default: the metadata, else count, or membrane when the last layer never fires).")
@click.option("--encoding", type=click.Choice(contract.ENCODINGS), default=None,
              help="Input encoding (default: the metadata, else rate).")
@click.option("--seed", type=int, default=None, help="Rate encoder seed 1..65535 (default: the metadata, else 1).")
@click.option("--dt", type=POSITIVE, default=None, help=f"Seconds per time step (default: the metadata, else {DT:g}).")
@click.option("--data", default=None, help="Data set (digits, fashion-mnist, ...): print the accuracy of the float NIR "
              "graph and of the imported model on its test split.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Test samples used with --data.")
def import_nir(graph_file, out, approximate, timesteps, readout, encoding, seed, dt, data, limit):
    """Read a NIR graph IN into a .bsnn model, exactly (identical identity for a bsnn export) or, with
    --approximate, with a list of the changes."""
    from .cli import UserError
    from .io import check_not_input
    check_not_input(out, [graph_file], "-o")
    graph = read_graph(graph_file)
    net, imp = _convert(graph, approximate, timesteps=timesteps, readout=readout, encoding=encoding, seed=seed,
                        dt=dt)
    if imp.changes or imp.defaults:
        net.metadata["nir_import"] = {"changes": imp.changes, "defaults": imp.defaults}
    acc = None
    if data is not None:
        from . import golden
        from .data import load_dataset
        x, y = load_dataset(data, "test")
        x, y = x[:limit], y[:limit]
        if x.shape[1] != net.n_in:
            raise UserError(f"--data {data}: {x.shape[1]} features but the model has {net.n_in} inputs")
        spikes = net.encode(x)
        # in chunks: the float interpreter holds every conv window of a batch at once
        pred = np.concatenate([simulate_nir(graph, spikes[i:i + 100], dt, net.readout)
                               for i in range(0, len(spikes), 100)])
        before = float((pred == y).mean())
        after = float((golden.simulate(net, spikes).prediction == y).mean())
        acc = (before, after, len(y))
    net.save(out)
    click.echo(f"wrote {out}: {'-'.join(map(str, net.sizes))}, T={net.timesteps}, readout={net.readout}, "
               f"encoding={net.encoding}, identity {net.identity()}")
    if imp.exported_identity is not None:
        given = [f"--{n}" for n, v in (("timesteps", timesteps), ("readout", readout), ("encoding", encoding),
                                       ("seed", seed)) if v is not None]
        why = "; ".join([f"{', '.join(given)} given"] * bool(given) + ["the changes below"] * bool(imp.changes)) \
            or "the graph was changed after export"
        click.echo("the identity of the exported model" if imp.exported_identity == net.identity() else
                   f"not the identity of the exported model ({imp.exported_identity}): {why}")
    for line in imp.defaults:
        click.echo(f"default: {line}")
    for line in imp.changes:
        click.echo(f"changed: {line}")
    if acc is not None:
        click.echo(f"accuracy on {acc[2]} {data} test samples: float NIR graph {acc[0] * 100:.2f}%, imported model "
                   f"{acc[1] * 100:.2f}% ({(acc[1] - acc[0]) * 100:+.2f} points)")
