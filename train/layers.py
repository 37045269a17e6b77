"""Torch building blocks of a batchnorm-free binarized SNN (B-SNN), usable in your own models.

Shapes follow the golden model: spike trains are (batch, T, n) float tensors of 0/1. Every layer processes all T
steps of its input at once (the network is feed-forward, so a layer's whole input is known before it runs): the
synaptic input of all steps is one matrix product, and only the membrane recurrence loops over t.

:class:`BinaryLinear`
    ``I_t = alpha * (s_t @ sign(W)^T)``, where ``sign(W) = +1 if W > 0 else -1`` (the contract's bit rule,
    :func:`bsnn_hw.contract.weight_to_bit`) and ``alpha > 0`` is an optional learned scale, one per layer or one per
    neuron. No bias. Backward: straight-through estimator clipped to the latent range,
    ``dL/dW = dL/dsign(W) * 1[|W| <= 1]``; after each optimizer step call :meth:`BinaryLinear.clip_` to keep
    ``W`` in [-1, 1].
:class:`LIF`
    The contract's neuron (docs/spec.md), in units of the integer synaptic input. With ``theta_eff = theta / alpha``
    (``alpha`` the scale of the layer feeding it, 1 without one)::

        V_t = sat_M( V_{t-1} - leak(V_{t-1}) + I_t )      leak(v) = floor(v / 2^k)   (exact mode)
                                                          leak(v) = v / 2^k          (ideal mode)    or 0 (no leak)
        S_t = H(V_t - theta_eff)                          strict: V_t == theta_eff does not fire
        V_t = V_t - S_t * floor(theta_eff)   ("subtract"; theta_eff in ideal mode)     or   V_t * (1 - S_t)  ("zero")
        out_t = S_t, or S_t * (1 - max_{t'<t} S_t')  with fire_once

    For an integer V, ``V > theta_eff  <=>  V > floor(theta_eff)``, so in exact mode (the default) the forward pass
    computes exactly the integers of the contract with threshold ``floor(theta_eff)``, and that is the threshold
    export writes. Backward: ``dS/dV = 1 / (1 + slope * |x|)^2`` with ``x = (V - theta_eff) / theta_eff`` (a fast
    sigmoid, scaled to the threshold), ``floor`` passes gradients straight through, the reset is detached from the
    graph (``detach_reset``), saturation passes no gradient beyond the clamp. Backpropagation runs through all T steps.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os

import numpy as np
import torch
from torch import nn

from bsnn_hw import contract
from bsnn_hw.checks import check_flag, check_int, check_positive

SCALES = (None, "layer", "neuron")
PRECISIONS = ("fp32", "bf16")


def _check_scale(scale, init_scale) -> None:
    if scale not in SCALES:
        raise ValueError(f"scale must be None, 'layer' or 'neuron', not {scale!r}")
    check_positive("init_scale", init_scale)


# bf16 holds integers up to 2^8 exactly; a +-1 x {0,1} product summed over at most 256 terms stays exact.
EXACT_BF16_CHUNK = 256
LATENT_INIT = 0.25      # QuantLinear's latent init range: a quarter of [-1, 1] learns fastest on digits
# float32 CPU tensors take the compiled kernels: the LIF recurrence (train/kernels.py) and the binary product's
# forward pass (bsnn_hw.kernels' popcount). False: the torch path (what CUDA tensors always take).
CPU_KERNELS = True
# The binary layers whose weight gradient takes the subset-sum kernel: at least this many neurons (a table row is 64
# wide) and inputs (the tables' cost is per 8 rows, the lookups' per input: 2,048 rows x 128 neurons with 64 / 128 /
# 256 inputs took 1.7 / 1.9 / 2.5 ms against BLAS's 0.65 / 1.2 / 2.6 ms; with 784 inputs 2.7 against 4.9 ms)
SPIKE_GRAD_MIN_OUT = 32
SPIKE_GRAD_MIN_IN = 256


def _compiled(t: torch.Tensor) -> bool:
    """Whether ``t``'s fused recurrence and binary products run in the compiled CPU kernels (float32 on the CPU)."""
    return CPU_KERNELS and t.device.type == "cpu" and t.dtype == torch.float32


def binary_matmul(spikes: torch.Tensor, sign_w: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """``spikes (N, n_in) @ sign_w.T`` with ``sign_w (n_out, n_in)`` of +-1, exact for 0/1 spikes.

    ``precision="bf16"`` runs the product on bfloat16 units (AMX, tensor cores) in slices of at most 256 inputs whose
    partial sums are exact in bf16, adding the slices in float32; the forward result equals the float32 product bit
    for bit (spikes must be 0/1). Gradients are computed in bf16 (mixed precision)."""
    if precision == "fp32":
        if _compiled(spikes) and spikes.dim() == 2:
            return _BinaryProduct.apply(spikes, sign_w)
        return spikes @ sign_w.t()
    if precision != "bf16":
        raise ValueError(f"precision must be 'fp32' or 'bf16', not {precision!r}")
    s = spikes.to(torch.bfloat16)
    w = sign_w.to(torch.bfloat16).t()
    out = None
    for k in range(0, s.shape[1], EXACT_BF16_CHUNK):
        part = (s[:, k:k + EXACT_BF16_CHUNK] @ w[k:k + EXACT_BF16_CHUNK]).float()
        out = part if out is None else out + part
    return out


class _FloatProduct(torch.autograd.Function):
    """``a @ w.t()`` and its gradients as pooled products (inside :func:`cpu_workers`): a multi-bit layer's."""

    @staticmethod
    def forward(ctx, a, w):
        ctx.save_for_backward(a, w)
        return _pooled_product(a, w.t())

    @staticmethod
    def backward(ctx, g):
        a, w = ctx.saved_tensors
        g_a = _pooled_product(g, w) if ctx.needs_input_grad[0] else None
        # g^T a: 6x faster than (a^T g)^T for a narrow layer (2,048 x 128 -> 10), the same for a wide one
        g_w = _pooled_product_t(g, a) if ctx.needs_input_grad[1] else None
        return g_a, g_w


class _BinaryProduct(_FloatProduct):
    """``spikes @ sign_w.t()`` on the CPU with the golden model's compiled AND-popcount (bsnn_hw.kernels) when the
    spikes are all 0 or 1 (else the float product): the same integers, exact either way. The spikes are checked and
    packed into 64-bit words in one pass (train/kernels.py ``pack_spikes``). The backward pass: ``g @ sign_w`` as the
    float product; the weight gradient ``g^T spikes`` of a layer of at least :data:`SPIKE_GRAD_MIN_OUT` neurons and
    :data:`SPIKE_GRAD_MIN_IN` inputs from the packed words, by tables of subset sums of ``g``'s rows
    (train/kernels.py ``spike_weight_grad``: 784 x 2,048 x 128 in about half BLAS's time; equal up to float32
    summation order), its column blocks on the workers; other layers' as the float product."""

    @staticmethod
    def forward(ctx, spikes, sign_w):
        from . import kernels as tk
        ctx.save_for_backward(spikes, sign_w)
        from bsnn_hw import kernels
        s = spikes.detach().contiguous().numpy()
        words = np.empty((s.shape[0], contract.ceil_div(s.shape[1], 64)), dtype=np.uint64)
        w = sign_w.detach().contiguous().numpy()
        planes = np.empty((1, contract.ceil_div(w.shape[1], 64), w.shape[0]), dtype=np.uint64)
        tk.pack_signs(w, planes)
        out = np.empty((s.shape[0], sign_w.shape[0]), dtype=np.int32)
        binary = {}

        def part(r):                                # rows in the fixed parts of _in_parts, as the LIF kernels
            binary[r.start] = ok = tk.pack_spikes(s[r], words[r])
            if ok:
                kernels.popcount_input(words[r], planes, 2, -1, out[r])
        _in_parts(s.shape[0], part)
        if not all(binary.values()):                                # not a spike train: the float product
            ctx.words = None
            return _pooled_product(spikes, sign_w.t())
        ctx.words = words
        return torch.from_numpy(out).to(spikes.dtype)

    @staticmethod
    def backward(ctx, g):
        from . import kernels as tk
        spikes, w = ctx.saved_tensors
        words, ctx.words = ctx.words, None
        if (words is None or not ctx.needs_input_grad[1] or w.shape[0] < SPIKE_GRAD_MIN_OUT
                or w.shape[1] < SPIKE_GRAD_MIN_IN):
            return _FloatProduct.backward(ctx, g)
        g_a = _pooled_product(g, w) if ctx.needs_input_grad[0] else None
        n_rows, n_in = spikes.shape
        # whole groups of four 8-row chunks (the kernel's unit); the padding rows' patterns are 0
        pats = np.empty((4 * contract.ceil_div(n_rows, 32), 8 * contract.ceil_div(n_in, 8)), dtype=np.uint8)
        tk.spike_patterns(words, n_in, pats)
        g_np = g.detach().contiguous().numpy()
        g_w = torch.empty(w.shape, dtype=g.dtype)
        out = g_w.numpy()
        _in_parts(contract.ceil_div(w.shape[0], tk.GT_BLOCK),
                  lambda r: tk.spike_weight_grad(g_np, pats, n_in, r.start, r.stop, out), 1)
        return g_a, g_w


# The sign and the straight-through mask are arithmetic rather than torch.where on a bool mask: PyTorch's CPU bool
# kernels run one element at a time (128 x 784 weights: 0.54 ms with where, 0.06 ms for the sign below).
def signs(w: torch.Tensor) -> torch.Tensor:
    """+1 where ``w > 0``, else -1 (the contract's bit rule, contract.weight_to_bit; +0.0 and -0.0 give -1), of
    ``w``'s dtype and without a gradient: sign(w) in {-1, 0, 1} minus 1/2, signed."""
    return torch.sign(w.detach()).sub_(0.5).sign_()


def _within_one(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[|w| <= 1] as 0/1 of ``dtype``: sign(1 - |w|) in {-1, 0, 1}, plus 1, at most 1."""
    return (1 - w.abs()).sign_().add_(1).clamp_(max=1).to(dtype)


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w):
        ctx.save_for_backward(w)
        return signs(w)

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        return grad * _within_one(w, grad.dtype)


def binarize(w: torch.Tensor) -> torch.Tensor:
    """+1 where ``w > 0``, else -1 (the contract's bit rule); straight-through gradient clipped to |w| <= 1."""
    return _SignSTE.apply(w)


class BinaryLinear(nn.Module):
    bits = 1                                                   # weight width in the exported layer
    """A fully connected layer with binary (+-1) weights and no bias: ``I = alpha * (s @ sign(W)^T)``.

    Arguments
    ---------
    n_in, n_out : int
    scale : None, "layer" or "neuron"
        A learned positive scale alpha (one, or one per output neuron), stored as its logarithm. Export folds it into
        the next LIF layer's integer threshold; for a "membrane" readout layer it only sets the softmax temperature.
    init_scale : float
        Initial alpha.
    precision : "fp32" or "bf16"
        Arithmetic of the synaptic product (see :func:`binary_matmul`); both give the same forward values.

    Example
    -------
    >>> fc = BinaryLinear(64, 128, scale="neuron")
    >>> i = fc(torch.zeros(8, 16, 64))       # (batch, T, n_in) spikes -> (batch, T, n_out) currents
    """

    def __init__(self, n_in: int, n_out: int, scale: str | None = "layer", init_scale: float = 1.0,
                 precision: str = "fp32"):
        super().__init__()
        check_int("n_in", n_in), check_int("n_out", n_out), _check_scale(scale, init_scale)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.n_in, self.n_out, self.scale_mode, self.precision = n_in, n_out, scale, precision
        # Latent real weights, small and centred so that signs flip freely early on.
        self.weight = nn.Parameter(torch.empty(n_out, n_in).uniform_(-1, 1) * (1.0 / math.sqrt(n_in)))
        if scale is None:
            self.register_parameter("log_scale", None)
        else:
            shape = (1,) if scale == "layer" else (n_out,)
            self.log_scale = nn.Parameter(torch.full(shape, math.log(init_scale)))

    def sign_weight(self) -> torch.Tensor:
        return binarize(self.weight)

    def weight_bits(self) -> torch.Tensor:
        """The weight bits the hardware stores (bool (n_out, n_in), True = +1)."""
        return self.weight.detach() > 0

    def scale(self) -> torch.Tensor | None:
        """alpha (shape (1,) or (n_out,)), or None."""
        return None if self.log_scale is None else self.log_scale.exp()

    def synaptic_input(self, spikes: torch.Tensor) -> torch.Tensor:
        """The integer synaptic input ``s @ sign(W)^T`` (no scale), (..., n_in) -> (..., n_out)."""
        lead = spikes.shape[:-1]
        out = binary_matmul(spikes.reshape(-1, self.n_in), self.sign_weight(), self.precision)
        return out.reshape(*lead, self.n_out)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        i = self.synaptic_input(spikes)
        a = self.scale()
        return i if a is None else i * a

    @torch.no_grad()
    def clip_(self) -> None:
        """Keep the latent weights in [-1, 1] (the range where the straight-through gradient passes)."""
        self.weight.clamp_(-1.0, 1.0)

    def extra_repr(self):
        return f"{self.n_in}, {self.n_out}, scale={self.scale_mode}, bias=False"


class _QuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, bits):
        ctx.save_for_backward(w)
        lo, hi = contract.weight_range(bits)
        return torch.clamp(torch.round(w * (1 << (bits - 1))), lo, hi)

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        return grad * _within_one(w, grad.dtype), None


def quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """The k-bit integer weights of latent ``w`` in [-1, 1]: ``clamp(round(w * 2^(k-1)), -2^(k-1), 2^(k-1) - 1)``
    (round half to even, as torch.round); straight-through gradient clipped to |w| <= 1 (not scaled by 2^(k-1))."""
    return _QuantSTE.apply(w, bits)


class QuantLinear(BinaryLinear):
    """A fully connected layer of signed k-bit integer weights (2 <= k <= 8, contract v2) and no bias:
    ``I = alpha * (s @ q^T)`` with ``q = quantize(W, k)``; B-SNN's multi-bit first/last layers. The latent weights
    start uniform in [-LATENT_INIT, LATENT_INIT]. The synaptic product is float32 (exact: every
    partial sum is an integer below 2^24 for fan-in < 2^24 / 2^(k-1)); ``precision`` ("fp32" or "bf16") is checked
    and ignored."""

    def __init__(self, n_in: int, n_out: int, bits: int, scale: str | None = "layer", init_scale: float = 1.0,
                 precision: str = "fp32"):
        super().__init__(n_in, n_out, scale, init_scale, precision)
        if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= contract.WEIGHT_BITS_MAX:
            raise ValueError(f"bits must be in 2..{contract.WEIGHT_BITS_MAX}, not {bits!r}")
        self.bits = bits
        with torch.no_grad():
            self.weight.uniform_(-LATENT_INIT, LATENT_INIT)

    def sign_weight(self) -> torch.Tensor:
        return quantize(self.weight, self.bits)

    def weight_bits(self) -> torch.Tensor:
        """The integers the hardware stores (int8 (n_out, n_in))."""
        return quantize(self.weight.detach(), self.bits).to(torch.int8)

    def synaptic_input(self, spikes: torch.Tensor) -> torch.Tensor:
        lead = spikes.shape[:-1]
        s, q = spikes.reshape(-1, self.n_in).float(), self.sign_weight()
        out = _FloatProduct.apply(s, q) if _WORKERS is not None and _compiled(s) else s @ q.t()
        return out.reshape(*lead, self.n_out)

    def extra_repr(self):
        return f"{self.n_in}, {self.n_out}, bits={self.bits}, scale={self.scale_mode}, bias=False"


class _Spike(torch.autograd.Function):
    """Heaviside forward (strict: x > 0 fires); fast-sigmoid surrogate backward."""

    @staticmethod
    def forward(ctx, x, slope):
        ctx.save_for_backward(x)
        ctx.slope = slope
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / (1.0 + ctx.slope * x.abs()) ** 2, None


def _floor_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.floor(x) - x).detach()


# On CPUs the recurrence runs on column blocks of about this many elements (batch x neurons): a block's membrane and
# temporaries stay in the caches over the T steps, where whole-layer passes would stream through memory (about 2x
# faster per element on the 2-core reference machine). GPUs take the whole layer at once (fewer kernel launches).
LIF_BLOCK = 1 << 18


def _blocks(batch: int, n: int, device: torch.device):
    if device.type != "cpu":
        return [slice(0, n)]
    width = max(1, LIF_BLOCK // max(1, batch))
    return [slice(j, min(n, j + width)) for j in range(0, n, width)]


def _capturing(device: torch.device) -> bool:
    """True while a CUDA graph is being captured on the current stream (host read-backs are not allowed then)."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def serial_on_cpu(fn):
    """Run ``fn`` with one torch intra-op thread when its first tensor argument is on the CPU (then restore).

    The membrane recurrence is thousands of small elementwise operations per batch. Split over threads, every one of
    them ends in a barrier that waits for all threads; on a busy machine a preempted thread stalls each barrier
    (784-128-10, T = 32, batch 64, with two other jobs running: 2 threads were 3x slower per step than 1). One
    thread costs nothing on blocks this small; the matrix products outside keep every thread."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        threads = torch.get_num_threads()
        if first is None or first.device.type != "cpu" or threads == 1:
            return fn(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
    return wrapper


def _lif_run(current, theta, leak_shift, lo, hi, reset, fire_once, exact, record, keep=None):
    """The membrane recurrence of :class:`LIF` without autograd: returns the output spikes (batch, T, n) (zeros for a
    non-firing layer; times the dropout mask ``keep`` (batch, 1, n) of 0/1 when given), the last membrane (batch, n),
    and with ``record`` the pre-saturation membranes (batch, T, n), which is all the backward pass needs. The float
    values are those of the step-by-step equations. Compiled on the CPU (:func:`_lif_run_compiled`), else torch
    operations (:func:`_lif_run_torch`)."""
    if _compiled(current):
        return _lif_run_compiled(current, theta, leak_shift, lo, hi, reset, fire_once, exact, record, keep)
    out, v, pre = _lif_run_torch(current, theta, leak_shift, lo, hi, reset, fire_once, exact, record)
    return (out if keep is None else out * keep), v, pre


@serial_on_cpu
def _lif_run_torch(current, theta, leak_shift, lo, hi, reset, fire_once, exact, record):
    """:func:`_lif_run` in torch operations, in place, one block of neurons at a time."""
    batch, steps, n = current.shape
    fires = theta is not None
    pre = torch.empty_like(current) if record else None
    out = torch.empty_like(current) if fires else current.new_zeros(batch, steps, n)
    last = current.new_empty(batch, n)
    k = None if leak_shift is None else 2.0 ** -leak_shift
    if fires:
        theta = theta.expand(n)
        theta_sub = torch.floor(theta) if exact else theta
    for cols in _blocks(batch, n, current.device):
        v = last[:, cols]
        v.zero_()
        tmp = torch.empty_like(v)
        fired = torch.zeros_like(v, dtype=torch.bool) if fires and fire_once else None
        th = theta[cols] if fires else None
        for t in range(steps):
            if k is not None:                              # v - floor(v / 2^k)   (exact)   or   v - v / 2^k
                torch.mul(v, k, out=tmp)
                if exact:
                    tmp.floor_()
                v.sub_(tmp)
            if record:
                p = pre[:, t, cols]
                torch.add(v, current[:, t, cols], out=p)
                torch.clamp(p, lo, hi, out=v)
            else:
                v.add_(current[:, t, cols]).clamp_(lo, hi)
            if not fires:
                continue
            o = out[:, t, cols]
            if fire_once:
                s = torch.gt(v, th)                        # strict; = ((v - theta) / theta > 0) for theta >= 1
                torch.logical_and(s, ~fired, out=o)
                fired |= s
                if reset == "subtract":                    # v - S * floor(theta), S the raw spike
                    v.sub_(torch.where(s, theta_sub[cols], 0.0))
                else:
                    v.masked_fill_(s, 0.0)
            else:
                torch.gt(v, th, out=o)
                if reset == "subtract":
                    v.addcmul_(o, theta_sub[cols], value=-1.0)
                else:
                    v.mul_(1.0 - o)
    return out, last, pre


def _lif_run_compiled(current, theta, leak_shift, lo, hi, reset, fire_once, exact, record, keep=None):
    """:func:`_lif_run` by :func:`bsnn_hw.train.kernels.lif_forward`: the same float32 values. A current expanded
    over the steps (stride 0: a "pixel" first layer) is read once per sample, not copied T times; the dropout mask is
    applied as the spikes are written (no extra pass over them); the batch runs in parts on torch's intra-op thread
    count (one join per call, no per-operation barriers)."""
    from . import kernels
    batch, steps, n = current.shape
    fires = theta is not None
    cur = current[:, :1] if current.stride(1) == 0 else current
    cur = cur.contiguous()
    out = cur.new_empty(batch, steps, n)
    last = cur.new_empty(batch, n)
    pre = cur.new_empty(batch, steps, n) if record else None
    th = theta.expand(n).contiguous().numpy() if fires else None
    th_sub = (np.floor(th) if exact else th) if fires else None
    f32, on = kernels.F32, kernels.switch
    leak = None if leak_shift is None else f32(2.0 ** -leak_shift)
    mask = keep.reshape(batch, n).contiguous().numpy() if keep is not None else None
    cur_np, out_np, last_np = (a.numpy() for a in (cur, out, last))
    pre_np = pre.numpy() if record else None
    _in_parts(batch, lambda r: kernels.lif_forward(
        cur_np[r], th, th_sub, leak, on(exact), f32(lo), f32(hi), on(reset == "subtract"), on(fire_once),
        _rows(mask, r), out_np[r], last_np[r], _rows(pre_np, r), on(cur.shape[1] < steps)))
    return out, last, pre


def _rows(a, r):
    """``a[r]``, or None for an absent (None) array: a kernel's optional argument, one part of the batch."""
    return None if a is None else a[r]


# --- CPU parallelism of the compiled path ---------------------------------------------------------------------------
# The compiled kernels and the binary layers' products split their work into parts whose bounds depend on the shapes
# alone, never on the thread count, and hand them to a pool of worker threads as each becomes free. Every part is
# computed the same way whichever thread takes it, and the per-part sums are added in part order, so results are the
# same bit for bit for any number of threads; a worker that the OS preempts holds up only the part it is on.
_POOL = None
_WORKERS: int | None = None       # worker threads of the compiled path (None: torch's intra-op thread count)
PART_ROWS = 16                    # the smallest batch part; a batch is cut into at most PARTS parts
PARTS = 8


def _forget_pool() -> None:
    """In a forked child: the parent's pool has no threads there (it would wait for ever); the child makes its own."""
    global _POOL
    _POOL = None


os.register_at_fork(after_in_child=_forget_pool)


def workers() -> int:
    """Worker threads of the compiled CPU path: :func:`cpu_workers`' count inside it, else torch's thread count."""
    return _WORKERS if _WORKERS is not None else torch.get_num_threads()


class WorkerCount:
    """The worker count of the compiled path inside :func:`cpu_workers`, chosen between 1 and ``most`` by measured
    step times. Results do not depend on it, so it may change between any two steps.

    Wrap each training step in :meth:`timed`. Every ``window`` steps the median step time of the window is kept for
    the count that ran it, and the next window runs the count in use (``best``), except for probes: the count not
    in use gets a window of its own when it has none yet and again ``gap`` windows later (the load on a shared machine
    changes). ``gap`` starts at ``explore``, doubles after each probe that loses (up to 8 ``explore``) and returns to
    ``explore`` when one wins, so a machine that stays busy pays for few slow probes. The count in use changes only
    when the other count's window was faster by more than ``margin`` (a share of the time): on a busy machine window
    medians of the same count scatter by 10-20 %, and a probe of two workers that wins by chance costs a run of slow
    windows after it. A probe is compared with the window just before it. Between probes the count moves only from
    ``most`` to 1, when a window on ``most`` is slower than one worker's last window (a job that takes a core costs
    most while several workers wait for a preempted one, so that switch cannot wait for the next probe, which then
    comes ``explore`` windows later); the way back waits for a probe, because an old, lucky window of ``most`` against
    a slow spell of the load on one worker would buy a slow window for nothing (on a busy machine that was a quarter
    of the steps).
    On a busy machine, where a second worker costs more than it gives, the steps settle on one worker; on a quiet
    one, on ``most``. ``steps`` counts the steps run with each count."""

    def __init__(self, most: int, window: int = 8, explore: int = 12, clock=None, margin: float = 0.05):
        import time
        self.most, self.window, self.explore, self.margin = most, window, explore, margin
        self.clock = clock or time.perf_counter
        self.median = {}                          # count -> median step seconds of its last window
        self.steps = {1: 0, most: 0}
        self.windows, self.gap, self.next_probe, self.probing = 0, explore, 0, False
        self.best = most                          # the count run between probes
        self._times = []
        self.set(most)

    def set(self, count: int) -> None:
        global _WORKERS
        self.count = _WORKERS = count

    @contextlib.contextmanager
    def timed(self):
        t0 = self.clock()
        yield
        self._times.append(self.clock() - t0)
        self.steps[self.count] = self.steps.get(self.count, 0) + 1
        if self.most > 1 and len(self._times) >= self.window:
            self._window_done()

    def _window_done(self) -> None:
        self.median[self.count] = float(np.median(self._times))
        self._times.clear()
        self.windows += 1
        other = 1 if self.best == self.most else self.most
        faster = other in self.median and self.median[other] < (1.0 - self.margin) * self.median[self.best]
        if self.probing:                          # a probe ended: how long until the next one
            self.gap = self.explore if faster else min(2 * self.gap, 8 * self.explore)
            self.next_probe, self.probing = self.windows + self.gap, False
            if faster:                            # it beat the window before it by the margin
                self.best, other = other, self.best
        elif faster and self.best == self.most:
            self.best, other = other, self.best   # a load came: one worker's last window beat this one's
            self.gap = self.explore               # a passing one: back at the next probe, soon
            self.next_probe = self.windows + self.gap
        if other not in self.median or self.windows >= self.next_probe:
            self.probing = True
            self.set(other)
        else:
            self.set(self.best)


@contextlib.contextmanager
def cpu_workers(threads: int):
    """Within the block, torch's own operations run on one thread and the compiled path (LIF kernels, binary and
    multi-bit layers' products) on up to ``threads`` workers of its own; yields the :class:`WorkerCount` that picks
    how many.

    What is left to torch in a dense network's step (Adam, the straight-through sign, the loss, small products) is
    elementwise work over ~10^5 values: split over OpenMP threads, each operation ends in a barrier, and when another
    job holds a core a preempted thread stalls every barrier (two threads were 0.56-0.77x one thread per step with one
    other job running). The worker pool has no barriers inside a call, but each call still waits for its last part:
    on a busy machine one worker is faster, which :class:`WorkerCount` finds out. Conv networks keep torch's threads:
    their time is in torch's convolutions."""
    global _WORKERS
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, not {threads!r}")
    saved_workers, saved_torch = _WORKERS, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield WorkerCount(threads)
    finally:
        _WORKERS = saved_workers
        torch.set_num_threads(saved_torch)


def _parts(n: int, smallest: int) -> list[slice]:
    """Cut 0..n-1 into at most PARTS slices of at least ``smallest`` (the last may be shorter): shapes alone decide."""
    step = max(smallest, -(-n // PARTS))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


def _in_parts(batch: int, fn, smallest: int = PART_ROWS) -> None:
    """``fn(rows)`` over the fixed parts of :func:`_parts` (slices of the batch), on :func:`workers` threads (the
    compiled kernels release the GIL, and so does torch); in order on the calling thread when that is 1. The calling
    thread works too: it and ``workers() - 1`` pool threads take the parts one at a time from a shared iterator (one
    task per helper thread, not one per part: a part is 0.1-1 ms of work, a pool task ~25 us of overhead)."""
    global _POOL
    parts = _parts(batch, smallest)
    n = min(workers(), len(parts))
    if n <= 1:
        for r in parts:
            fn(r)
        return
    from concurrent.futures import ThreadPoolExecutor
    if _POOL is None or _POOL._max_workers < n - 1:
        # torch's thread count (OpenMP's and MKL's) is per thread: a helper's BLAS would otherwise use every core
        # and, for some shapes, split a sum across threads (then the result depends on the thread count)
        _POOL = ThreadPoolExecutor(n - 1, initializer=torch.set_num_threads, initargs=(1,))
    todo = iter(parts)                      # next() on a list iterator is atomic under the GIL

    def drain():
        for r in todo:
            fn(r)
    helpers = [_POOL.submit(drain) for _ in range(n - 1)]
    try:
        drain()
    finally:
        for h in helpers:
            h.result()


def _pooled_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` (float32 CPU matrices), inside :func:`cpu_workers`: the rows of ``a`` in fixed parts on the
    workers, each with single-threaded BLAS; outside it, torch's product."""
    if _WORKERS is None:
        return a @ b
    out = a.new_empty(a.shape[0], b.shape[1])

    def part(r):
        with torch.no_grad():                  # grad mode is per thread: a worker's is on
            torch.mm(a[r], b, out=out[r])
    _in_parts(a.shape[0], part)
    return out


def _pooled_product_t(g: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``g^T @ s`` (a weight gradient, a sum over the rows of both), inside :func:`cpu_workers`: the rows in fixed
    parts of at least 1,024 (each part a whole-width product, the parts' results added in part order) on the
    workers; outside it, torch's product. Splitting the sum keeps every product wide: column blocks of ``s`` ran at
    1.2-1.4x the time of the whole product on two workers, row parts at 0.56x."""
    if _WORKERS is None:
        return g.t() @ s
    parts = _parts(g.shape[0], 1024)
    if len(parts) == 1:
        return g.t() @ s
    sums = [None] * len(parts)

    def part(r):
        with torch.no_grad():
            sums[r.start // parts[0].stop] = g[r].t() @ s[r]        # every part but the last is parts[0].stop long
    _in_parts(g.shape[0], part, 1024)
    total = sums[0]
    for x in sums[1:]:
        total += x
    return total


class _LIFFunction(torch.autograd.Function):
    """:class:`LIF` (detached reset) as one autograd node: the forward recurrence saves only the pre-saturation
    membranes (and, on the torch path, the spikes before dropout; the compiled backward recomputes them); the
    backward pass runs the BPTT recurrence by hand. Its gradients are those of the step-by-step graph
    (:meth:`LIF._forward_reference`): fast-sigmoid surrogate ``1 / (1 + slope * |x|)^2`` of ``x = (V - theta) /
    theta``, straight-through floor (leak factor ``1 - 2^-k``), saturation passing gradient only inside [lo, hi], the
    reset detached from the spike but not from ``floor(theta)``."""

    @staticmethod
    def forward(ctx, current, theta, keep, leak_shift, lo, hi, reset, fire_once, exact, slope):
        args = (current.detach(), None if theta is None else theta.detach(), leak_shift, lo, hi, reset, fire_once,
                exact, True)
        if _compiled(current):          # the backward kernel recomputes the spikes from the membranes
            out, v, pre = _lif_run_compiled(*args, keep=keep)
            raw = None
        else:                           # the torch backward reads the spikes before dropout
            raw, v, pre = _lif_run_torch(*args)
            out = raw if keep is None else raw * keep
        ctx.save_for_backward(pre, raw, theta, keep)
        ctx.cfg = (leak_shift, lo, hi, reset, fire_once, slope)
        if theta is None:
            ctx.mark_non_differentiable(out)
        return out, v

    @staticmethod
    def backward(ctx, g_out, g_last):
        backward = _lif_backward_compiled if _compiled(ctx.saved_tensors[0]) else _lif_backward
        g_cur, g_theta = backward(ctx, g_out, g_last)
        return g_cur, g_theta, None, None, None, None, None, None, None, None


@serial_on_cpu
def _lif_backward(ctx, g_out, g_last):
    """:class:`_LIFFunction`'s backward pass in torch operations (a function, so that :func:`serial_on_cpu` can wrap
    it)."""
    pre, out, theta, keep = ctx.saved_tensors
    leak_shift, lo, hi, reset, fire_once, slope = ctx.cfg
    batch, steps, n = pre.shape
    fires = theta is not None
    spike_grad = fires and g_out is not None
    if spike_grad and keep is not None:
        g_out = g_out * keep                       # the gradient of the spikes before dropout
    want_theta = fires and ctx.needs_input_grad[1]
    c = 1.0 if leak_shift is None else 1.0 - 2.0 ** -leak_shift
    g_cur = torch.empty_like(pre)
    if fires:
        theta_n = theta.detach().expand(n)
        g_theta = pre.new_zeros(n) if want_theta else None
    for cols in _blocks(batch, n, pre.device):
        width = cols.stop - cols.start
        gv = g_last[:, cols].clone() if g_last is not None else pre.new_zeros(batch, width)
        block = pre[:, :, cols]
        if _capturing(pre.device):                     # no host read-back inside a CUDA graph: the masked
            saturated = True                           # path gives the same values
        else:
            low, high = block.aminmax()
            saturated = bool(low < lo) or bool(high > hi)   # else V_t = pre_t and every step passes gradient
        if fires:
            th = theta_n[cols]
            o = out[:, :, cols]
            if fire_once:                              # out_t = S_t (1 - fired_{t-1}): no gradient after a spike
                fired_before = o.cumsum(1).sub_(o) > 0
            acc_u = pre.new_zeros(width) if want_theta and spike_grad else None
            acc_r = pre.new_zeros(width) if want_theta and reset == "subtract" else None
        for t in range(steps - 1, -1, -1):
            p = block[:, t]
            u = p.clamp(lo, hi) if saturated else p
            if fires:
                s = torch.gt(u, th).to(u.dtype) if fire_once else o[:, t]   # the raw spike S_t, as float
                if acc_r is not None:                  # V_t -= S_t * floor(theta): straight through the floor
                    acc_r.add_((gv * s).sum(0))
                if reset == "zero":
                    gv.mul_(1.0 - s)
                if spike_grad:                         # dS/dV / theta = theta / (theta + slope |V - theta|)^2
                    d = torch.sub(u, th).abs_().mul_(slope).add_(th).square_()
                    a = torch.mul(g_out[:, t, cols], th).div_(d)
                    if fire_once:
                        a.masked_fill_(fired_before[:, t], 0.0)
                    if acc_u is not None:              # d x / d theta = -V / theta^2
                        acc_u.add_((a * u).sum(0))
                    gv.add_(a)
            g = g_cur[:, t, cols]
            if saturated:
                torch.mul(gv, u == p, out=g)
            else:
                g.copy_(gv)
            if t:
                torch.mul(g, c, out=gv)
        if want_theta:
            gt = g_theta[cols]
            if acc_u is not None:
                gt.sub_(acc_u / th)
            if acc_r is not None:
                gt.sub_(acc_r)
    if want_theta:
        g_theta = g_theta.sum().reshape(theta.shape) if theta.numel() == 1 else g_theta.reshape(theta.shape)
    else:
        g_theta = None
    return g_cur, g_theta


def _lif_backward_compiled(ctx, g_out, g_last):
    """:func:`_lif_backward` by :func:`bsnn_hw.train.kernels.lif_backward`: the same input-current gradient; the
    threshold gradient summed over the batch in another order (float64 accumulators, one set per part)."""
    from . import kernels
    pre, _, theta, keep = ctx.saved_tensors
    leak_shift, lo, hi, reset, fire_once, slope = ctx.cfg
    batch, steps, n = pre.shape
    fires = theta is not None
    spike_grad = fires and g_out is not None
    want_theta = fires and ctx.needs_input_grad[1]
    f32, on = kernels.F32, kernels.switch
    mask = keep.reshape(batch, n).contiguous().numpy() if keep is not None else None
    th = theta.detach().expand(n).contiguous() if fires else None
    th_np = th.numpy() if fires else None
    g_cur = torch.empty_like(pre)
    g_o = g_out.contiguous().numpy() if spike_grad else None
    g_l = g_last.contiguous().numpy() if g_last is not None else None
    pre_np, g_cur_np = pre.numpy(), g_cur.numpy()
    sums = {}

    def part(r):
        acc_u, acc_r = (np.zeros(n), np.zeros(n)) if want_theta else (None, None)
        kernels.lif_backward(pre_np[r], _rows(mask, r), _rows(g_o, r), _rows(g_l, r), th_np, f32(lo), f32(hi),
                             f32(1.0 if leak_shift is None else 1.0 - 2.0 ** -leak_shift), f32(slope),
                             on(reset == "subtract"), on(fire_once), g_cur_np[r], acc_u, acc_r)
        sums[r.start] = (acc_u, acc_r)
    _in_parts(batch, part)
    g_theta = None
    if want_theta:
        acc_u, acc_r = (sum(sums[k][i] for k in sorted(sums)) for i in (0, 1))
        g = torch.zeros(n, dtype=torch.float64)
        if spike_grad:
            g -= torch.from_numpy(acc_u) / th.double()
        if reset == "subtract":
            g -= torch.from_numpy(acc_r)
        g = g.to(pre.dtype)
        g_theta = g.sum().reshape(theta.shape) if theta.numel() == 1 else g.reshape(theta.shape)
    return g_cur, g_theta


class LIF(nn.Module):
    """Leaky integrate-and-fire neurons under the numeric contract (update equations in the module docstring).

    Arguments
    ---------
    threshold : float
        theta; the effective threshold in units of the integer synaptic input is theta / alpha.
    leak_shift : int or None
        k: the membrane loses ``floor(V / 2^k)`` per step (lambda = 1 - 2^-k); None: no leak (IF).
    reset : "subtract" or "zero"
    membrane_bits : int
        M: the membrane saturates to [-2^(M-1), 2^(M-1)-1]. At most 24, where float32 still holds every integer.
    fire_once : bool
    exact : bool
        True: the integer arithmetic of the contract (floor leak, integer threshold subtracted). False: ideal real
        arithmetic (for comparison).
    slope : float
        Surrogate sharpness.
    fires : bool
        False for a non-spiking readout layer (B-SNN's threshold-infinity layer): it only integrates.
    detach_reset : bool

    ``forward(current, scale=None, keep=None)`` takes (batch, T, n) integer-valued synaptic input and the scale alpha
    of the layer that produced it (tensor of shape (1,) or (n,), or None for 1); it returns the output spikes
    (batch, T, n), times ``keep`` (a (batch, 1, n) dropout mask of 0/1, fused into the recurrence: the spikes the
    neurons use for their resets are not masked), and sets ``self.last_membrane`` to V after the last step (batch, n).

    Example
    -------
    >>> fc, lif = BinaryLinear(64, 128, scale="neuron"), LIF(leak_shift=4)
    >>> spikes = lif(fc.synaptic_input(x), fc.scale())
    """

    def __init__(self, threshold: float = 1.0, leak_shift: int | None = None, reset: str = "subtract",
                 membrane_bits: int = 16, fire_once: bool = False, exact: bool = True, slope: float = 5.0,
                 fires: bool = True, detach_reset: bool = True):
        super().__init__()
        if not isinstance(reset, str) or reset not in contract.RESET_MODES:
            raise ValueError(f"reset must be one of {', '.join(map(repr, contract.RESET_MODES))}, not {reset!r}")
        check_int("membrane_bits", membrane_bits)
        if leak_shift is not None:
            check_int("leak_shift", leak_shift)
        threshold, slope = check_positive("threshold", threshold), check_positive("slope", slope)
        for name, v in (("fire_once", fire_once), ("exact", exact), ("fires", fires), ("detach_reset", detach_reset)):
            check_flag(name, v)
        if not contract.MEMBRANE_BITS_MIN <= membrane_bits <= 24:
            raise ValueError(f"membrane_bits must be in {contract.MEMBRANE_BITS_MIN}..24 for training (float32 holds "
                             f"integers exactly only up to 2^24), not {membrane_bits}")
        if leak_shift is not None and not 1 <= leak_shift <= membrane_bits - 1:
            raise ValueError(f"leak_shift must be in 1..{membrane_bits - 1} (membrane_bits - 1) or None, "
                             f"not {leak_shift}")
        if threshold <= 0:
            raise ValueError(f"threshold must be positive, not {threshold!r}")
        self.threshold, self.leak_shift, self.reset = float(threshold), leak_shift, reset
        self.membrane_bits, self.fire_once, self.exact = membrane_bits, fire_once, exact
        self.slope, self.fires, self.detach_reset = slope, fires, detach_reset
        self.last_membrane = None

    def effective_threshold(self, scale: torch.Tensor | None, device=None) -> torch.Tensor:
        """theta / alpha, clamped into the thresholds the contract can hold, [1, 2^(M-1)-1] (clamping passes no
        gradient, so alpha cannot drift into a threshold export would have to refuse)."""
        lo_hi = contract.membrane_range(self.membrane_bits)
        # torch.full, not torch.tensor: no host-to-device copy (a CUDA graph cannot capture one)
        t = torch.full((1,), self.threshold, device=device) if scale is None else self.threshold / scale
        return t.clamp(1.0, float(lo_hi[1]))

    def integer_threshold(self, scale: torch.Tensor | None) -> torch.Tensor:
        """The contract's integer threshold floor(theta / alpha): identical fire decisions for integer membranes."""
        return torch.floor(self.effective_threshold(scale).detach()).to(torch.int64)

    def forward(self, current: torch.Tensor, scale: torch.Tensor | None = None,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        theta = self.effective_threshold(scale, current.device) if self.fires else None
        if keep is not None:
            keep = keep.to(current.dtype)
        if not self.detach_reset:
            return self._forward_reference(current, theta, keep)
        lo, hi = contract.membrane_range(self.membrane_bits)
        args = (self.leak_shift, float(lo), float(hi), self.reset, self.fire_once, self.exact, self.slope)
        if torch.is_grad_enabled() and (current.requires_grad or (theta is not None and theta.requires_grad)):
            spikes, v = _LIFFunction.apply(current, theta, keep, *args)
        else:
            spikes, v, _ = _lif_run(current.detach(), None if theta is None else theta.detach(), *args[:-1],
                                    record=False, keep=keep)
        self.last_membrane = v
        return spikes

    def _forward_reference(self, current: torch.Tensor, theta: torch.Tensor | None,
                           keep: torch.Tensor | None = None) -> torch.Tensor:
        """The update equations step by step with autograd (the fused :class:`_LIFFunction` computes the same
        values and gradients; this path also serves ``detach_reset=False``)."""
        batch, steps, n = current.shape
        lo, hi = contract.membrane_range(self.membrane_bits)
        theta_sub = None
        if self.fires:
            theta_sub = _floor_ste(theta) if self.exact else theta
        v = current.new_zeros(batch, n)
        fired = current.new_zeros(batch, n) if self.fire_once else None
        out = []
        currents = current.unbind(1)      # one backward node for all steps (indexing per step costs a zero fill each)
        for t in range(steps):
            if self.leak_shift is not None:
                lk = v * (2.0 ** -self.leak_shift)
                v = v - (_floor_ste(lk) if self.exact else lk)
            v = torch.clamp(v + currents[t], lo, hi)
            if not self.fires:
                continue
            s = _Spike.apply((v - theta) / theta, self.slope)
            r = s.detach() if self.detach_reset else s
            v = v - r * theta_sub if self.reset == "subtract" else v * (1.0 - r)
            if self.fire_once:
                s_out = s * (1.0 - fired)
                fired = torch.maximum(fired, s.detach())
                s = s_out
            out.append(s)
        self.last_membrane = v
        if not self.fires:
            return current.new_zeros(batch, steps, n)
        out = torch.stack(out, dim=1)
        return out if keep is None else out * keep

    def extra_repr(self):
        leak = "none" if self.leak_shift is None else f">>>{self.leak_shift}"
        return (f"threshold={self.threshold}, leak={leak}, reset={self.reset}, M={self.membrane_bits}, "
                f"fire_once={self.fire_once}, exact={self.exact}, fires={self.fires}")


# --- convolution and pooling (contract v2) ---------------------------------------------------------------------------
# Spike trains stay flat, (batch, T, n), in the contract's position-major order (index (y * W + x) * C + c), so LIF
# and dropout work unchanged; the conv and pool modules view them as maps.

def to_maps(x: torch.Tensor, shape) -> torch.Tensor:
    """(batch, T, H*W*C) position-major -> (batch*T, C, H, W) for torch's conv and pooling."""
    h, w, c = shape
    return x.reshape(-1, h, w, c).permute(0, 3, 1, 2)


def from_maps(m: torch.Tensor, batch: int, steps: int) -> torch.Tensor:
    """(batch*T, C, H, W) -> (batch, T, H*W*C) position-major."""
    return m.permute(0, 2, 3, 1).reshape(batch, steps, -1)


class BinaryConv2d(nn.Module):
    """A 2-D convolution of spike maps with binary (+-1) or k-bit weights and no bias (contract v2 conv2d):
    ``I = alpha * conv(s, sign(W))`` (``quantize(W, bits)`` for bits > 1), alpha one per layer or per output channel.
    Input and output are flat position-major spike trains; weights export in the contract's (C_out, k, k, C_in)."""

    def __init__(self, in_shape, out_channels: int, kernel: int, stride: int = 1, padding: int = 0,
                 scale: str | None = "neuron", init_scale: float = 1.0, bits: int = 1):
        super().__init__()
        from bsnn_hw.network import check_conv_geometry
        _check_scale(scale, init_scale)
        check_int("out_channels", out_channels)
        self.in_shape = check_conv_geometry(in_shape, kernel, stride, padding)
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= contract.WEIGHT_BITS_MAX:
            raise ValueError(f"bits must be in 1..{contract.WEIGHT_BITS_MAX}, not {bits!r}")
        h, w, c = self.in_shape
        self.out_channels, self.kernel, self.stride, self.padding, self.bits = out_channels, kernel, stride, padding, bits
        self.out_shape = (contract.conv_output_size(h, kernel, stride, padding),
                          contract.conv_output_size(w, kernel, stride, padding), out_channels)
        self.n_in, self.n_out = h * w * c, int(math.prod(self.out_shape))
        fan_in = kernel * kernel * c
        init = (1.0 / math.sqrt(fan_in)) if bits == 1 else LATENT_INIT
        self.weight = nn.Parameter(torch.empty(out_channels, c, kernel, kernel).uniform_(-1, 1) * init)
        self.scale_mode = scale
        if scale is None:
            self.register_parameter("log_scale", None)
        else:
            self.log_scale = nn.Parameter(torch.full((1,) if scale == "layer" else (out_channels,),
                                                     math.log(init_scale)))

    def sign_weight(self) -> torch.Tensor:
        return binarize(self.weight) if self.bits == 1 else quantize(self.weight, self.bits)

    def weight_bits(self) -> torch.Tensor:
        """The weights the hardware stores, in the contract's (C_out, k, k, C_in) order: bits (True = +1) or ints."""
        w = self.weight.detach()
        q = (w > 0) if self.bits == 1 else quantize(w, self.bits).to(torch.int8)
        return q.permute(0, 2, 3, 1).contiguous()

    def scale(self) -> torch.Tensor | None:
        """alpha per layer (1,) or per output channel (C_out,), or None."""
        return None if self.log_scale is None else self.log_scale.exp()

    def neuron_scale(self) -> torch.Tensor | None:
        """alpha of every output neuron in position-major order (the channel fastest)."""
        a = self.scale()
        if a is None or a.numel() == 1:
            return a
        return a.repeat(self.out_shape[0] * self.out_shape[1])

    def synaptic_input(self, spikes: torch.Tensor) -> torch.Tensor:
        batch, steps = spikes.shape[:2]
        out = torch.nn.functional.conv2d(to_maps(spikes, self.in_shape), self.sign_weight(), stride=self.stride,
                                         padding=self.padding)
        return from_maps(out, batch, steps)

    @torch.no_grad()
    def clip_(self) -> None:
        self.weight.clamp_(-1.0, 1.0)

    def extra_repr(self):
        return (f"{self.in_shape} -> {self.out_shape}, k={self.kernel}, stride={self.stride}, pad={self.padding}, "
                f"bits={self.bits}, scale={self.scale_mode}")


class SpikePool(nn.Module):
    """OR pooling of spike maps (contract v2 pool): a window x window max of 0/1 spikes, stride = window. The
    gradient reaches the spiking input of each window (max pooling's)."""

    def __init__(self, in_shape, window: int):
        super().__init__()
        from bsnn_hw.network import check_pool_window
        self.in_shape, self.window = check_pool_window(in_shape, window), window
        h, w, c = self.in_shape
        self.out_shape = (contract.pool_output_size(h, window), contract.pool_output_size(w, window), c)
        self.n_in, self.n_out = h * w * c, int(math.prod(self.out_shape))

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        batch, steps = spikes.shape[:2]
        return from_maps(torch.nn.functional.max_pool2d(to_maps(spikes, self.in_shape), self.window), batch, steps)

    def extra_repr(self):
        return f"{self.in_shape} -> {self.out_shape}, {self.window}x{self.window} OR"


class SumPool(SpikePool):
    """Sum pooling of spike maps: each window x window block's spike count (0..window^2), stride = window, the input
    of the next layer's synapses. Not a layer of the contract: export folds it into the layer it feeds
    (:func:`bsnn_hw.network.fold_sum_pool`, docs/spec.md section 8.5), so the map's sides must be multiples of the
    window. The gradient reaches every input of its window."""

    def __init__(self, in_shape, window: int):
        from bsnn_hw.network import check_sum_pool      # refuse here what export could not fold
        check_sum_pool(in_shape, window)
        super().__init__(in_shape, window)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        batch, steps = spikes.shape[:2]
        maps = to_maps(spikes, self.in_shape)
        return from_maps(torch.nn.functional.avg_pool2d(maps, self.window, divisor_override=1), batch, steps)

    def extra_repr(self):
        return f"{self.in_shape} -> {self.out_shape}, {self.window}x{self.window} sum"
