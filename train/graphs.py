"""The B-SNN training step, eager or replayed as one CUDA graph.

A B-SNN step is many small kernels: the membrane recurrence runs T steps forward and T steps backward per layer, each
a handful of elementwise kernels on a (batch, neurons) block. On a GPU, launching them costs more than running them
(an H100 trained a 784-512-10, T = 32 epoch no faster than two CPU cores). :class:`TrainStep` captures the whole step
(encode, forward, loss, backward, Adam, clip) once as a CUDA graph and replays it with one launch per step
(``torch.cuda.graphs``, the "whole network capture" recipe):

- Inputs enter through static device buffers (pixels, encoder seeds, labels, dropout draws), filled by device copies
  before each replay. The dropout draws come from the same generator as in eager mode, in the same order, so both
  modes train on the same masks: the trainer's, on the device, are copied device to device; CPU draws are staged
  through pinned memory.
- Nothing in the step reads a value back to the host: the seed range check is skipped (the seeds are in range by
  construction), the LIF backward takes its masked saturation path, the loss and correct-prediction sums stay on the
  device until the epoch ends.
- Adam is ``capturable`` with its learning rate in a device tensor that the cosine schedule fills between replays.
  On CUDA the trainer uses that Adam in both modes, so switching graphs on or off does not change the arithmetic:
  eager and graph training give the same weights (checked by bench/gpu_epoch.py).
- The first steps run eagerly on a side stream (lazy initialisation: cuBLAS handles, Adam's state), the graph is
  captured at the step after them, and a last, smaller batch runs eagerly.

Graphs are used for single-process CUDA training only (``TrainConfig.cuda_graphs``, on by default); on the CPU and
under torchrun the same step runs eagerly.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

WARMUP_STEPS = 3          # eager steps before the capture (PyTorch's recipe: a few, on a side stream)


def make_adam(params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    """Adam; on CUDA the capturable variant (step counts on the device), whose learning rate
    :func:`device_learning_rates` turns into device tensors once the schedule exists; on the CPU the fused kernel
    (one pass over each parameter: 0.22 ms against 0.60 ms per step for 784-128-10's parameters, one thread)."""
    if device.type == "cuda":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, capturable=True)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)


def device_learning_rates(optimizer: torch.optim.Optimizer) -> None:
    """Turn each parameter group's learning rate into a 0-d tensor on its parameters' device, in place (a CUDA graph
    bakes in a Python float; a tensor the scheduler ``fill_``\\ s is read at every replay). Call after the scheduler is
    made (its base rates stay floats, so stepping it reads nothing back) and after loading a checkpoint."""
    for group in optimizer.param_groups:
        device = group["params"][0].device
        lr = group["lr"]
        if isinstance(lr, torch.Tensor):
            lr = float(lr)
        group["lr"] = torch.tensor(lr, dtype=torch.float32, device=device)


def host_learning_rates(state: dict) -> dict:
    """An optimizer ``state_dict`` with tensor learning rates as floats (checkpoints load on any device)."""
    for group in state["param_groups"]:
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = float(group["lr"])
    return state


class TrainStep:
    """One B-SNN training step on a batch: encode, forward, cross-entropy, backward, optimizer step, clip.

    ``step(images, seeds, target, noise, weight=1.0)`` runs it on (B, n) uint8 pixels, (B,) encoder seeds (on the
    device), (B,) labels and the dropout draws of :meth:`BSNN.dropout_noise` (or None; on the device or the CPU,
    the same for every step); ``weight`` scales the loss
    before backward (DistributedDataParallel's share of the global batch). ``loss_sum`` (sum of per-sample losses)
    and ``correct`` accumulate on the device; :meth:`take_totals` reads and clears them.

    With ``graphs`` (CUDA only), steps of the full batch size replay one captured CUDA graph after
    :data:`WARMUP_STEPS` eager ones; a step of another size runs eagerly. If capture fails the step stays eager and
    ``graph_error`` says why.
    """

    def __init__(self, model, net_model, encoder, optimizer, label_smoothing: float, batch_size: int,
                 device: torch.device, graphs: bool):
        self.model, self.net, self.encoder, self.optimizer = model, net_model, encoder, optimizer
        self.label_smoothing, self.batch_size, self.device = label_smoothing, batch_size, device
        self.graphs = bool(graphs) and device.type == "cuda"
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.graph = None
        self.graph_error = None
        self.replays = 0
        self._eager_full = 0

    def _compute(self, images, seeds, target, noise, weight):
        spikes = self.encoder(images, seeds, check=False)
        logits = self.net(spikes, noise=noise)
        loss = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        (loss * weight if weight != 1.0 else loss).backward()
        self.optimizer.step()
        self.model.clip_()
        # The LIF modules keep their last membranes; detached, they no longer hold this step's autograd graph alive
        # (memory, and autograd nodes from one step reused on another stream in the next)
        for lif in self.model.lifs:
            if getattr(lif, "last_membrane", None) is not None:
                lif.last_membrane = lif.last_membrane.detach()
        self.loss_sum.add_(loss.detach() * target.shape[0])
        self.correct.add_((logits.detach().argmax(1) == target).sum())

    def _eager(self, images, seeds, target, noise, weight):
        self.optimizer.zero_grad(set_to_none=True)
        self._compute(images, seeds, target, noise, weight)       # the forward pass moves the draws to the device

    def step(self, images, seeds, target, noise=None, weight: float = 1.0) -> None:
        full = self.graphs and self.graph_error is None and images.shape[0] == self.batch_size and weight == 1.0
        if not full:
            self._eager(images, seeds, target, noise, weight)
            return
        if self.graph is None:
            if self._eager_full < WARMUP_STEPS:
                self._eager_full += 1
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    self._eager(images, seeds, target, noise, weight)
                torch.cuda.current_stream(self.device).wait_stream(side)
                return
            self._capture(images, seeds, target, noise)
            if self.graph is None:                   # capture failed: this step (and the rest) run eagerly
                self._eager(images, seeds, target, noise, weight)
                return
        self._load(images, seeds, target, noise)
        self.graph.replay()
        self.replays += 1

    def _load(self, images, seeds, target, noise):
        self.s_images.copy_(images)
        self.s_seeds.copy_(seeds)
        self.s_target.copy_(target)
        if self.s_noise is not None and self.pinned is None:           # drawn on the device (the trainer's way)
            for n, dev in zip(noise, self.s_noise):
                dev.copy_(n)
        elif self.s_noise is not None:
            # Two pinned staging sets: the host fills one while the device may still be copying from the other.
            slot = self.replays % 2
            self.events[slot].synchronize()
            for pinned, n, dev in zip(self.pinned[slot], noise, self.s_noise):
                pinned.copy_(n)
                dev.copy_(pinned, non_blocking=True)
            self.events[slot].record()

    def _capture(self, images, seeds, target, noise):
        self.s_images, self.s_seeds, self.s_target = images.clone(), seeds.clone(), target.clone()
        self.s_noise = None if noise is None else [n.to(self.device, copy=True) for n in noise]
        self.pinned = None
        if noise and noise[0].device.type == "cpu":
            self.pinned = [[n.clone().pin_memory() for n in noise] for _ in range(2)]
            self.events = [torch.cuda.Event(), torch.cuda.Event()]
            for e in self.events:
                e.record()
        torch.cuda.synchronize(self.device)
        self.optimizer.zero_grad(set_to_none=True)    # the graph allocates the gradients in its own pool
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._compute(self.s_images, self.s_seeds, self.s_target, self.s_noise, 1.0)
        except RuntimeError as e:                    # an operation that a graph cannot hold: stay eager
            self.graph_error = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            warnings.warn(f"CUDA graph capture failed, training eagerly: {self.graph_error}", RuntimeWarning)
            torch.cuda.synchronize(self.device)
            return
        self.graph = graph

    def info(self) -> dict:
        """How the steps ran: ``{"used": bool, "replays": n, "error": None or why capture failed}``."""
        return {"used": self.graph is not None, "replays": self.replays, "error": self.graph_error}

    def take_totals(self) -> tuple[float, int]:
        """(sum of losses, correct predictions) since the last call (one host read-back), then zeroed."""
        loss, correct = float(self.loss_sum), int(self.correct)
        self.loss_sum.zero_()
        self.correct.zero_()
        return loss, correct
