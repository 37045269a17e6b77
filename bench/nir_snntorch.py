"""A bsnn model exported to NIR, loaded in snnTorch, run on test images: how often its predictions agree with the golden
model, and where the differences come from.

    OMP_NUM_THREADS=1 .venv/bin/python bench/nir_snntorch.py --model /work/models/conv_fashion_small.bsnn \\
        --data fashion-mnist --samples 1000

Every runner gets the same input spikes (the model's own encoding, bit for bit), so every difference is one of
semantics. Four runs on them:

* golden: the contract (integer membrane, floor of the shift leak, saturation, the model's reset, fire-once);
* NIR (NumPy): ``bsnn_hw.nirgraph.simulate_nir`` on the plain export - NIR's own equations in float64 (Euler at dt,
  multiplicative leak 1 - 2^-k, zero reset to v_reset, no saturation), none of the metadata;
* snnTorch: ``snntorch.import_nir.import_from_nir`` on the file written by ``export-nir --unit-threshold`` (the form it
  takes: one threshold per layer), run step by step in float32. snnTorch 1.0.0 makes every LIF a ``Leaky`` with
  zero reset, and every IF a ``Leaky`` with beta = 0.9 (it leaks), subtract reset and init_hidden=False (it returns
  a tuple, so an IF layer followed by another layer fails to run: reported under ``failed_to_run``); its Flatten
  keeps NIR's start_dim 0, which would flatten the batch too, so the bench sets start_dim = 1 (NIR's shapes have no
  batch axis, PyTorch's do);
* snnTorch, IF fixed: the same modules with the layers NIR calls IF as NIR says (beta = 1, zero reset), to compare
  with NIR (NumPy): what remains is float32 vs float64 and the thresholds folded into the weights;
* snnTorch, IF and reset fixed: also each layer's reset from the metadata (subtract), to compare with golden: what
  remains is float vs integer - the floor of the shift leak and saturation (``saturation_possible`` says whether
  T x max|I| can reach the membrane's range at all).

Prints one JSON object: accuracies and pairwise agreement (fraction of samples with the same predicted class).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time

import numpy as np


def snntorch_model(graph_bytes: bytes):
    import nir
    import torch
    from snntorch.import_nir import import_from_nir
    with contextlib.redirect_stdout(io.StringIO()):          # snnTorch prints its progress and warnings
        model = import_from_nir(nir.read(io.BytesIO(graph_bytes)))
    for m in model.modules():
        if isinstance(m, torch.nn.Flatten):
            m.start_dim = 1
    return model


def neuron_modules(model, net):
    """{layer index: the snnTorch module of that layer's neurons} (the node names of bsnn_hw.nirgraph)."""
    mods = dict(model.named_modules())
    out = {}
    for i, layer in enumerate(net.layers):
        if layer.has_neurons:
            name = f"layer{i}_neuron"
            out[i] = mods.get(name) or mods.get(f"nir_node_{name}")
    return out


def fix_if(model, net) -> None:
    """The layers NIR calls IF as NIR says: no leak (beta = 1) and reset to v_reset = 0 (snnTorch 1.0.0 imports an
    IF as a Leaky with beta 0.9, subtract reset and init_hidden=False)."""
    import torch
    for i, m in neuron_modules(model, net).items():
        if net.layers[i].leak_shift is None:
            m.beta = torch.tensor(1.0)
            m.reset_mechanism = "zero"
            m.state_function = m._base_zero
            m.init_hidden = True         # imported with init_hidden=False, it returns (spk, mem): the next layer fails


def fix_reset(model, net) -> None:
    """Each layer's reset mode from the metadata (snnTorch imports every LIF with zero reset, NIR's v_reset)."""
    for i, m in neuron_modules(model, net).items():
        layer = net.layers[i]
        m.reset_mechanism = layer.reset
        m.state_function = m._base_sub if layer.reset == "subtract" else m._base_zero


def run_snntorch(model, net, spikes: np.ndarray, batch: int) -> np.ndarray:
    """Predictions of the snnTorch model on the contract's spikes (batch, T, n_in), with the model's readout."""
    import torch
    from bsnn_hw import golden
    last = neuron_modules(model, net)[len(net.layers) - 1]
    preds = []
    shape = net.input_shape
    with torch.no_grad():
        for b0 in range(0, spikes.shape[0], batch):
            s = spikes[b0:b0 + batch]
            for m in model.modules():
                if hasattr(m, "reset_mem"):
                    m.reset_mem()
            counts = first = None
            for t in range(net.timesteps):
                x = s[:, t].astype(np.float32)
                if len(shape) == 3:
                    h, w, c = shape
                    x = x.reshape(-1, h, w, c).transpose(0, 3, 1, 2)
                out = model(torch.from_numpy(np.ascontiguousarray(x)))
                while isinstance(out, tuple):                # nirtorch: (output, state); IF modules: (spk, mem)
                    out = out[0]
                if out.ndim == 4:                            # a map: the contract numbers it position-major
                    out = out.permute(0, 2, 3, 1)
                spk = out.reshape(len(s), -1).numpy() > 0
                if counts is None:
                    counts = np.zeros(spk.shape, np.int64)
                    first = np.full(spk.shape, -1, np.int64)
                first[(first < 0) & spk] = t
                counts += spk
            mem = last.mem if last.mem.ndim != 4 else last.mem.permute(0, 2, 3, 1)
            mem = mem.reshape(len(s), -1).numpy().astype(np.float64)
            preds.append(golden.readout(net.readout, counts, mem, first, net.timesteps))
    return np.concatenate(preds)


def run(args) -> dict:
    from bsnn_hw import golden, load, nirgraph
    from bsnn_hw.data import load_dataset

    net = load(args.model)
    x, y = load_dataset(args.data, "test")
    x, y = x[:args.samples], y[:args.samples]
    spikes = net.encode(x)
    t0 = time.perf_counter()
    preds = {"golden": golden.simulate(net, spikes).prediction}
    plain = nirgraph.to_nir(net)
    preds["nir_numpy"] = np.concatenate([nirgraph.simulate_nir(plain, spikes[i:i + args.batch], readout=net.readout)
                                         for i in range(0, len(spikes), args.batch)])
    graph_bytes = nirgraph.to_bytes(nirgraph.to_nir(net, unit_threshold=True))
    model = snntorch_model(graph_bytes)
    failures = {}
    try:
        preds["snntorch"] = run_snntorch(model, net, spikes, args.batch)
    except (TypeError, RuntimeError) as e:           # an IF layer before another layer (see fix_if)
        failures["snntorch"] = f"{type(e).__name__}: {' '.join(str(e).split())}"
    fix_if(model, net)
    preds["snntorch_if_fixed"] = run_snntorch(model, net, spikes, args.batch)
    fix_reset(model, net)
    preds["snntorch_if_and_reset_fixed"] = run_snntorch(model, net, spikes, args.batch)
    names = list(preds)
    rep = {
        "model": args.model, "data": args.data, "samples": int(len(y)), "timesteps": net.timesteps,
        "readout": net.readout, "encoding": net.encoding,
        "layers": [repr(layer) for layer in net.layers],
        "accuracy": {k: round(float((v == y).mean()), 4) for k, v in preds.items()},
        "agreement_with_golden": {k: round(float((preds[k] == preds["golden"]).mean()), 4) for k in names[1:]},
        "agreement_with_nir_numpy": {k: round(float((preds[k] == preds["nir_numpy"]).mean()), 4)
                                     for k in ("snntorch", "snntorch_if_fixed") if k in preds},
        "failed_to_run": failures,
        # |V| <= T x max|I| in every layer: when this bound fits the membrane, saturation can never happen
        "saturation_possible": any(net.timesteps * layer.max_abs_current > (1 << (layer.membrane_bits - 1)) - 1
                                   for layer in net.layers if layer.has_neurons),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return rep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="/work/models/conv_fashion_small.bsnn")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args(argv)
    try:
        rep = run(args)
    except (ValueError, OSError) as e:
        print(f"Error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    print(json.dumps(rep, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
