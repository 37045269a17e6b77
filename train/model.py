"""The B-SNN multilayer perceptron, its export to a :class:`bsnn_hw.Network`, and the trainer's integer evaluation.

``BSNN(sizes=[64, 128, 10], ...)`` is a chain of :class:`~bsnn_hw.train.layers.BinaryLinear` +
:class:`~bsnn_hw.train.layers.LIF` pairs, all weights binary, no bias, no batchnorm. Dropout (a mask per sample and
neuron, constant over the T steps, not rescaled so that spikes stay 0/1) sits after every hidden layer. The last
layer is read out as in the contract:

- ``"membrane"`` (default, B-SNN's threshold-infinity layer): it never fires; ``logits = alpha_L * V_{T-1} / T``
  (alpha_L > 0 only sets the softmax temperature, so the class, argmax V_{T-1}, does not depend on it);
- ``"count"``: it fires like the hidden layers; ``logits = c * counts`` with a learned temperature c > 0.

:func:`to_network` folds every scale into integer thresholds, ``theta_int = floor(theta / alpha)`` (exact: for an
integer membrane V, ``V > theta / alpha <=> V > floor(theta / alpha)``), and returns the network the hardware runs.
:func:`integer_predict` runs that network with int64 tensors (on any torch device): it is the trainer's hardware-exact
evaluation, an implementation independent of :mod:`bsnn_hw.golden` that the tests compare with it.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from bsnn_hw import contract
from bsnn_hw.checks import check_sizes
from bsnn_hw.network import Conv2d, Layer, Network, Pool, fold_sum_pool

from .layers import LIF, BinaryConv2d, BinaryLinear, QuantLinear, SpikePool, SumPool, from_maps, to_maps

PIXEL_GAIN = 64.0          # "pixel" input: the first layer's initial threshold in units of typical intensity
PIXEL_EXTRA_BITS = 8       # ... and its membrane this many bits wider than the others (at most LIF_MAX_BITS)
LIF_MAX_BITS = 24          # the trainer's LIF holds the membrane in float32: integers are exact up to 2^24

# B-SNN's variants (the paper's names): which of the first and last layers stay binary. "mid": first and last
# multi-bit, the middle binary; "first+mid": the first layer binary too; "last+mid": the last layer binary too.
VARIANTS = {"full": (False, False), "mid": (True, True), "first+mid": (False, True), "last+mid": (True, False)}


def parse_arch(text: str) -> tuple[list, list]:
    """'32c3-p2-64c3-p2-256-10' -> ([("conv", 32, 3), ("pool", 2), ("conv", 64, 3), ("pool", 2)], [256, 10]):
    ``<C>c<k>`` a k x k convolution to C channels (stride 1, padding k // 2: "same" for odd k), ``p<n>`` an n x n OR
    pooling, ``s<n>`` an n x n sum pooling ("sumpool": folded into the layer it feeds at export), a plain number a
    dense layer; conv and pool layers come first, the last number is the class count."""
    front, dense = [], []
    for tok in str(text).lower().split("-"):
        try:
            if "c" in tok:
                c, k = tok.split("c")
                spec = ("conv", int(c), int(k))
            elif tok.startswith("p"):
                spec = ("pool", int(tok[1:]))
            elif tok.startswith("s"):
                spec = ("sumpool", int(tok[1:]))
            else:
                dense.append(int(tok))
                if dense[-1] < 1:
                    raise ValueError
                continue
        except ValueError:
            raise ValueError(f"arch item {tok!r} is not <C>c<k> (conv), p<n> (OR pool), s<n> (sum pool) or a layer "
                             f"size, in {text!r}") from None
        if dense:
            raise ValueError(f"arch {text!r}: conv and pool layers must come before the dense layers")
        if min(spec[1:]) < 1:
            raise ValueError(f"arch item {tok!r} needs positive numbers")
        if spec[0] == "sumpool" and (not front or front[-1][0] != "conv"):
            raise ValueError(f"arch {text!r}: a sum pool (s<n>) must follow a conv layer (it sums that layer's "
                             f"spikes for the next one)")
        if front and front[-1][0] == "sumpool" and spec[0] != "conv":
            raise ValueError(f"arch {text!r}: a sum pool (s<n>) must feed a conv or dense layer, not another pool")
        front.append(spec)
    if not dense:
        raise ValueError(f"arch {text!r} must end with dense layers, the last one the class count")
    return front, dense


def build_front(conv, input_shape, n_in: int, make_conv) -> tuple[list, tuple | None]:
    """The conv/pool front of :func:`parse_arch`'s specs ``conv`` on (H, W, C) maps (``input_shape``, holding the
    ``n_in`` inputs): its modules in order, a ``SpikePool`` per pool and ``make_conv(j, shape, c_out, k)`` per conv
    (j the spec's index, ``shape`` its input map), each checked to fit its map, and the map shape after them (None
    without a front). Raises ValueError (one line) for a shape that does not hold the inputs or a layer that does not
    fit."""
    shape = tuple(input_shape) if conv else None
    if conv and (shape is None or int(np.prod(shape)) != n_in):
        raise ValueError(f"input_shape {input_shape} does not hold the {n_in} inputs")
    modules = []
    for j, spec in enumerate(conv):
        if spec[0] in ("pool", "sumpool"):
            if not 1 <= spec[1] <= min(shape[:2]):
                raise ValueError(f"pool {spec[1]}x{spec[1]} does not fit the {shape[0]}x{shape[1]} map")
            modules.append((SpikePool if spec[0] == "pool" else SumPool)(shape, spec[1]))
        else:
            _, c_out, k = spec
            if k > min(shape[:2]) + 2 * (k // 2):
                raise ValueError(f"conv {k}x{k} does not fit the {shape[0]}x{shape[1]} map")
            modules.append(make_conv(j, shape, c_out, k))
        shape = modules[-1].out_shape
    return modules, shape


def variant_bits(variant: str, bits: int = 8) -> tuple[int, int]:
    """(first_bits, last_bits) of a B-SNN variant with ``bits``-bit multi-bit layers."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    first, last = VARIANTS[variant]
    return (bits if first else 1), (bits if last else 1)


class BSNN(nn.Module):
    """All-binary spiking MLP. ``forward(spikes (B, T, n_in)) -> logits (B, n_classes)``.

    Arguments
    ---------
    sizes : list of int
        Inputs, then each layer's neurons, e.g. [784, 256, 10].
    timesteps : int
    leak_shift, output_leak_shift : int or None
        Leak shift k of the hidden layers and of the output layer (None: no leak).
    reset, membrane_bits, fire_once : as :class:`~bsnn_hw.train.layers.LIF` (every layer).
    readout : "membrane" or "count"
    scale : None, "layer" or "neuron"
        The hidden layers' learned alpha (per-neuron alphas become per-neuron thresholds). The output layer has one
        per-layer alpha (a temperature) for "membrane", per ``scale`` for "count".
    dropout : float
        Drop probability of hidden spikes during training.
    exact : bool
        Train with the contract's integer arithmetic (see :class:`~bsnn_hw.train.layers.LIF`).
    precision : "fp32" or "bf16"
    """

    def __init__(self, sizes, timesteps: int, leak_shift: int | None = None, output_leak_shift: int | None = None,
                 reset: str = "subtract", membrane_bits: int = 16, fire_once: bool = False,
                 readout: str = "membrane", scale: str | None = "neuron", dropout: float = 0.0, exact: bool = True,
                 precision: str = "fp32", slope: float = 5.0, threshold_init: float = 0.5, first_bits: int = 1,
                 last_bits: int = 1, conv=None, input_shape=None, input_max: int = 1):
        super().__init__()
        sizes = check_sizes(sizes)
        conv = list(conv or [])
        if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 1:
            raise ValueError(f"timesteps must be an int >= 1, not {timesteps!r}")
        for name, v in (("first_bits", first_bits), ("last_bits", last_bits)):
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= contract.WEIGHT_BITS_MAX:
                raise ValueError(f"{name} must be 1 (binary) or 2..{contract.WEIGHT_BITS_MAX}, not {v!r}")
        if isinstance(input_max, bool) or input_max not in (1, contract.PIXEL_MAX):
            raise ValueError(f"input_max must be 1 (spikes) or {contract.PIXEL_MAX} (pixels), not {input_max!r}")
        if readout not in ("membrane", "count"):
            raise ValueError(f"readout must be 'membrane' or 'count' for training, not {readout!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout}")
        self.sizes, self.timesteps, self.readout, self.dropout = sizes, timesteps, readout, dropout
        # "pixel" input (input_max 255): the first layer's input is the intensity itself, (B, 1, n_in), the same every
        # step; its currents are computed once and broadcast over T, its membrane is PIXEL_EXTRA_BITS wider, its
        # product float32 (bf16 is exact only for 0/1 inputs), and its scale starts PIXEL_GAIN times smaller.
        self.input_max = int(input_max)
        gain = PIXEL_GAIN if self.input_max > 1 else 1.0
        first_membrane = min(LIF_MAX_BITS, membrane_bits + PIXEL_EXTRA_BITS) if self.input_max > 1 \
            else membrane_bits
        self.dropout_rows = None       # (start, stop, total): this process's rows of a distributed global batch
        self.fcs = nn.ModuleList()
        self.lifs = nn.ModuleList()
        # The conv/pool front (contract v2) on an (H, W, C) input, then the dense layers on its flat output.
        def make_conv(j, shape, c_out, k):
            bits = first_bits if j == 0 else 1
            mag = (1.0 if bits == 1 else (1 << (bits - 1)) / 2) * (gain if j == 0 else 1.0)
            init = 1.0 / max(1.0, threshold_init * math.sqrt(k * k * shape[2]) * mag)
            return BinaryConv2d(shape, c_out, k, 1, k // 2, scale=scale, init_scale=init, bits=bits)

        front, shape = build_front(conv, input_shape, sizes[0], make_conv)
        for j, module in enumerate(front):
            self.fcs.append(module)
            self.lifs.append(nn.Identity() if isinstance(module, SpikePool) else
                             LIF(1.0, leak_shift, reset, first_membrane if j == 0 else membrane_bits, fire_once,
                                 exact=exact, slope=slope))
        if conv:
            sizes = [int(np.prod(shape))] + sizes[1:]
            first_bits = first_bits if not any(s[0] == "conv" for s in conv) else 1
        # A layer fed by a sum pool takes spike counts: its product runs in float32 (bf16 is exact for 0/1 only).
        self.counts_in = {i + 1 for i, fc in enumerate(front) if isinstance(fc, SumPool)}
        n_layers = len(sizes) - 1
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == n_layers - 1
            fires = not (last and readout == "membrane")
            bits = last_bits if last else first_bits if i == 0 else 1
            mag = 1.0 if bits == 1 else (1 << (bits - 1)) / 2      # typical |weight|: the scale starts accordingly
            input_layer = i == 0 and not conv
            if input_layer:
                mag *= gain
            if fires:
                # theta = 1 and alpha = 1 / theta_eff: start every threshold near threshold_init * sqrt(n_in).
                init = 1.0 / max(1.0, threshold_init * math.sqrt(n_in) * mag)
                layer_scale = scale
            else:
                # Temperature of the membrane readout: logits = alpha * V / T.
                init = 4.0 / (math.sqrt(n_in) * mag)
                layer_scale = "layer"
            kw = dict(scale=layer_scale if layer_scale else None, init_scale=init,
                      precision="fp32" if (input_layer and self.input_max > 1) or len(self.fcs) in self.counts_in
                      else precision)
            self.fcs.append(BinaryLinear(n_in, n_out, **kw) if bits == 1 else QuantLinear(n_in, n_out, bits, **kw))
            self.lifs.append(LIF(1.0, output_leak_shift if last else leak_shift, reset,
                                 first_membrane if input_layer else membrane_bits, fire_once,
                                 exact=exact, slope=slope, fires=fires))
        first = next(fc for fc in self.fcs if not isinstance(fc, SpikePool))
        fan_in = first.kernel ** 2 * first.in_shape[2] if isinstance(first, BinaryConv2d) else first.n_in
        bound = contract.current_bound(fan_in, first.bits, self.input_max)
        if bound >= 1 << LIF_MAX_BITS:
            raise ValueError(f"the first layer's synaptic input can reach {bound:,} (fan-in {fan_in} x weight "
                             f"{bound // (fan_in * self.input_max)} x input {self.input_max}), past the 2^24 that "
                             f"float32 training holds exactly: use fewer first-layer weight bits")
        if readout == "count":
            self.log_temperature = nn.Parameter(torch.tensor(math.log(8.0 / timesteps)))
        else:
            self.register_parameter("log_temperature", None)

    def set_precision(self, precision: str) -> None:
        for i, fc in enumerate(self.fcs):
            fc.precision = "fp32" if (i == 0 and self.input_max > 1) or i in self.counts_in else precision

    def set_exact(self, exact: bool) -> None:
        for lif in self.lifs:
            lif.exact = exact

    def dropout_widths(self) -> list[int]:
        """Flat widths of the outputs that dropout masks (every spiking layer but the last; pooling is no layer)."""
        return [fc.n_out for fc in self.fcs if not isinstance(fc, SpikePool)][:-1]

    def dropout_noise(self, generator: torch.Generator | None = None, batch: int | None = None) -> list[torch.Tensor]:
        """The uniform draws behind one training step's dropout masks, on the generator's device (the CPU without
        one): one (rows, 1, width) tensor per masked layer, in layer order (keep where ``draw >= dropout``), for a
        batch of ``batch`` rows. Under DistributedDataParallel (``dropout_rows = (start, stop, total)``) the whole
        global batch is drawn and this process's rows kept, so the masks are those one process draws.
        :meth:`forward` draws them itself unless given ``noise``. The trainer draws on the training device: a conv
        network's draws are tens of MB per step, which the CPU took longer to draw than the GPU took for the step."""
        start, stop, total = self.dropout_rows or (0, batch, batch)
        device = generator.device if generator is not None else "cpu"
        return [torch.rand(total, 1, w, generator=generator, device=device)[start:stop]
                for w in self.dropout_widths()]

    def forward(self, spikes: torch.Tensor, generator: torch.Generator | None = None,
                noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits of a (B, T, n_in) spike batch. In training mode with dropout the masks come from ``noise``
        (:meth:`dropout_noise`'s draws, on any device: the CUDA-graph step keeps them in static buffers) or are drawn
        from ``generator``."""
        x = spikes
        n_layers = len(self.fcs)
        drop = self.training and self.dropout > 0
        if drop and noise is None:
            noise = self.dropout_noise(generator, x.shape[0])
        k = 0
        for i, (fc, lif) in enumerate(zip(self.fcs, self.lifs)):
            if isinstance(fc, SpikePool):
                x = fc(x)
                continue
            scale = fc.neuron_scale() if isinstance(fc, BinaryConv2d) else fc.scale()
            current = fc.synaptic_input(x)
            if i == 0 and self.input_max > 1:          # "pixel": one current row, the same every step
                current = current.expand(-1, self.timesteps, -1)
            keep = None
            if drop and i < n_layers - 1:             # dropout on the layer's output spikes, fused into its LIF
                keep = noise[k].to(current.device) >= self.dropout
                k += 1
            x = lif(current, scale if lif.fires else None, keep)
        if self.readout == "membrane":
            return self.lifs[-1].last_membrane * self.fcs[-1].scale() / self.timesteps
        return x.sum(1) * self.log_temperature.exp()

    @torch.no_grad()
    def clip_(self) -> None:
        for fc in self.fcs:
            if not isinstance(fc, SpikePool):
                fc.clip_()


def to_network(model: BSNN, encoding: str, seed: int = 1, metadata: dict | None = None) -> Network:
    """The integer network the hardware runs: weight bits ``W > 0`` and thresholds ``floor(theta / alpha)``, with
    theta / alpha clamped into [1, 2^(M-1)-1] exactly as the forward pass clamps it (so the integer network makes the
    forward pass's decisions). A sum pool is folded into the layer it feeds (:func:`bsnn_hw.network.fold_sum_pool`):
    the network has one layer fewer per sum pool and computes the same integers."""
    layers = []
    n_layers = len(model.fcs)
    sum_pool = None
    for i, (fc, lif) in enumerate(zip(model.fcs, model.lifs)):
        if isinstance(fc, SumPool):        # not a layer of the contract: folded into the layer it feeds
            sum_pool = fc
            n_layers -= 1
            continue
        if isinstance(fc, SpikePool):
            layers.append(Pool(fc.in_shape, fc.window))
            continue
        weights = fc.weight_bits().cpu().numpy()
        if lif.fires:
            # The forward pass already clamps theta / alpha into [1, 2^(M-1)-1]; Layer refuses anything else.
            scale = fc.scale().detach().cpu() if fc.scale() is not None else None
            n_th = fc.out_channels if isinstance(fc, BinaryConv2d) else fc.n_out
            th = np.broadcast_to(lif.integer_threshold(scale).numpy(), (n_th,)).astype(np.int64)
        else:
            th = None
        if isinstance(fc, BinaryConv2d):
            layer = Conv2d(weights, fc.in_shape, th, fc.stride, fc.padding, lif.leak_shift, lif.reset,
                           lif.membrane_bits, lif.fire_once, weight_bits=fc.bits)
        else:
            layer = Layer(weights, th, lif.leak_shift, lif.reset, lif.membrane_bits, lif.fire_once,
                          weight_bits=fc.bits)
        if sum_pool is not None:
            layer, sum_pool = fold_sum_pool(layer, sum_pool.window, sum_pool.in_shape), None
        layers.append(layer)
    readout = model.readout
    assert len(layers) == n_layers
    return Network(layers, model.timesteps, readout, encoding, seed=seed, metadata=metadata or {})


@torch.no_grad()
def clamped_thresholds(model: BSNN) -> list[int]:
    """Per layer, how many neurons have theta / alpha outside [1, 2^(M-1)-1], the thresholds the contract can hold:
    the forward pass (and so the export) uses the clamped value for them. 0 for non-firing layers. One entry per
    exported layer (a sum pool, folded into the next layer, has none)."""
    counts = []
    for fc, lif in zip(model.fcs, model.lifs):
        if isinstance(fc, SumPool):
            continue
        if not isinstance(lif, LIF) or not lif.fires or fc.scale() is None:
            counts.append(0)
            continue
        raw = lif.threshold / fc.scale().detach().cpu()
        hi = contract.membrane_range(lif.membrane_bits)[1]
        counts.append(int(((raw < 1) | (raw > hi)).sum()))
    return counts


@torch.no_grad()
def integer_simulate(net: Network, spikes: torch.Tensor, output_steps: list | None = None
                     ) -> tuple[torch.Tensor, list, list]:
    """The contract with int64 tensors: ``spikes`` bool/0-1 (B, T, n_in) -> (prediction (B,), counts per layer,
    last membranes per layer). The synaptic sums are float32 products converted to int64 (exact: every partial sum
    is an integer below 2^24 in magnitude). Dense layers of any weight width (contract v2 k-bit included), and the
    per-step affine drive of contract v3 (int64 product, sum and arithmetic shift). With ``output_steps`` (a list)
    the output layer's membrane after every step, (B, T, n_out), is appended to it."""
    if not isinstance(spikes, torch.Tensor):
        raise TypeError(f"spikes must be a torch tensor, not {type(spikes).__name__}")
    device = spikes.device
    batch = spikes.shape[0]
    steps = net.timesteps
    pixel = net.encoding == "pixel"        # spikes: the intensities (B, 1, n_in) or (B, n_in), every step's input
    want = [(batch, 1, net.n_in), (batch, net.n_in)] if pixel else [(batch, steps, net.n_in)]
    if tuple(spikes.shape) not in want:
        raise ValueError(f"spikes must have shape {' or '.join(map(str, want))} for this network, not "
                         f"{tuple(spikes.shape)}")
    x = spikes.float().reshape(batch, 1, -1) if pixel else spikes.float()
    counts, membranes = [], []
    first = None
    for li, layer in enumerate(net.layers):
        if layer.kind == "pool":           # OR pooling of the spike maps: stateless
            out = from_maps(torch.nn.functional.max_pool2d(to_maps(x, layer.in_shape), layer.window), batch, steps)
            counts.append(out.sum(1))
            membranes.append(torch.zeros(batch, layer.n_out, dtype=torch.int64, device=device))
            x = out
            continue
        # float32 is exact below 2^24 ("pixel" sums can exceed it: float64 then)
        ftype = torch.float32 if layer.current_bound(net.layer_input_max(li)) < 1 << 24 else torch.float64
        w = torch.from_numpy(contract.weight_values(layer.weights, layer.weight_bits)).to(device, ftype)
        rows = x.shape[1]                  # T, or 1 for the "pixel" input
        if layer.kind == "conv2d":         # torch's (C_out, C_in, k, k) from the contract's (C_out, k, k, C_in)
            cur = from_maps(torch.nn.functional.conv2d(to_maps(x.to(ftype), layer.in_shape), w.permute(0, 3, 1, 2),
                                                       stride=layer.stride, padding=layer.padding), batch, rows)
            cur = cur.round().to(torch.int64)
        else:
            cur = (x.to(ftype).reshape(batch * rows, -1) @ w.t()).round().to(torch.int64).reshape(batch, rows, -1)
        cur = cur.expand(-1, steps, -1)
        if layer.has_affine:               # contract v3: the drive (a I + b) >>> F, per step and neuron
            a, b = (None if t is None else torch.from_numpy(np.array(t)).to(device)
                    for t in layer.affine_tables(per_neuron=True))
            cur = ((cur << layer.step_frac) if a is None else cur * a) + b
            cur = cur >> layer.step_frac
        lo, hi = contract.membrane_range(layer.membrane_bits)
        fires = net.layer_fires(li)
        theta = torch.from_numpy(np.array(layer.neuron_threshold)).to(device) if fires else None
        v = torch.zeros(batch, layer.n_out, dtype=torch.int64, device=device)
        fired = torch.zeros(batch, layer.n_out, dtype=torch.bool, device=device)
        first = torch.full((batch, layer.n_out), -1, dtype=torch.int64, device=device)
        out = torch.zeros(batch, steps, layer.n_out, dtype=torch.bool, device=device)
        per_step = None
        if output_steps is not None and li == len(net.layers) - 1:
            per_step = torch.zeros(batch, steps, layer.n_out, dtype=torch.int64, device=device)
            output_steps.append(per_step)
        for t in range(steps):
            if layer.leak_shift is not None:
                v = v - (v >> layer.leak_shift)
            v = torch.clamp(v + cur[:, t], lo, hi)
            if not fires:
                if per_step is not None:
                    per_step[:, t] = v
                continue
            fire = v > theta
            v = torch.where(fire, v - theta, v) if layer.reset == "subtract" else torch.where(fire, 0, v)
            spike = fire & ~fired if layer.fire_once else fire
            fired |= fire
            first = torch.where(spike & (first < 0), t, first)
            out[:, t] = spike
            if per_step is not None:
                per_step[:, t] = v
        counts.append(out.sum(1))
        membranes.append(v)
        x = out.float()
    if net.readout == "count":
        pred = torch.argmax(counts[-1], dim=1)
    elif net.readout == "membrane":
        pred = torch.argmax(membranes[-1], dim=1)
    else:
        key = torch.where(first < 0, steps, first)
        pred = torch.where((first < 0).all(1), torch.argmax(membranes[-1], 1), torch.argmin(key, 1))
    return pred, counts, membranes
