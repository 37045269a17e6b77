"""The contract's input encoders in torch, bit-identical to :mod:`bsnn_hw.encode`, for use inside training loops.

Rate code: input i of a sample spikes at step t iff ``draw[t * n + i] < x[i]``, where draw k is the low byte of the
contract's LFSR state ``8 * (k + 1)`` steps after the sample's seed. The LFSR's byte stream is tabulated once, so
encoding a batch is a single row gather (``index_select``) and a compare - cheap enough to draw fresh spikes, with a
fresh seed per sample, every epoch.
"""
from __future__ import annotations

import numpy as np
import torch

from bsnn_hw import contract
from bsnn_hw.checks import check_int


class RateEncoder:
    """``RateEncoder(n_in, timesteps, device)(x uint8 (B, n), seeds int (B,)) -> float 0/1 (B, T, n)``."""

    def __init__(self, n_in: int, timesteps: int, device="cpu"):
        self.n_in, self.timesteps = check_int("n_in", n_in), check_int("timesteps", timesteps)
        n_draws = n_in * timesteps
        seq, pos = contract.lfsr_tables()
        period = contract.LFSR_PERIOD
        step = contract.LFSR_STEPS_PER_DRAW
        # Draw k of seed s is byte(seq[(pos[s] + 8 (k + 1)) mod P]). Split the byte stream by residue mod 8:
        # rows[r, j] = byte(seq[(r + 8 j) mod P]); seed s with p = pos[s] reads row p % 8 from column p // 8 + 1 on.
        self.row_len = period // step + 1 + n_draws + 1
        k = (np.arange(step)[:, None] + step * np.arange(self.row_len)[None, :]) % period
        rows = (seq[k] & 0xFF).astype(np.uint8)
        self.flat = torch.from_numpy(rows.reshape(-1)).to(device)
        self.windows = self.flat.unfold(0, n_draws, 1)           # a view: windows[i] = flat[i : i + n_draws]
        self.pos = torch.from_numpy(pos).to(device)

    def __call__(self, x: torch.Tensor, seeds, check: bool = True) -> torch.Tensor:
        """``check=False`` skips the seed range check, which reads the seeds back to the host (a CUDA graph cannot;
        the trainer's seeds come from :func:`training_seeds`, in range by construction)."""
        check_intensities(x, self.n_in)
        if isinstance(seeds, (bool, float)) or (isinstance(seeds, (torch.Tensor, np.ndarray))
                                                 and (seeds.dtype.is_floating_point if isinstance(seeds, torch.Tensor)
                                                      else not np.issubdtype(seeds.dtype, np.integer))):
            raise TypeError(f"rate-encoding seeds must be integers, not {seeds!r:.60}")
        seeds = torch.as_tensor(seeds, dtype=torch.int64, device=self.flat.device)
        if seeds.ndim == 0:
            seeds = seeds.expand(x.shape[0])
        if check and seeds.numel() and (int(seeds.min()) < 1 or int(seeds.max()) > contract.LFSR_PERIOD):
            raise ValueError(f"rate-encoding seeds must be in 1..{contract.LFSR_PERIOD}")
        p = self.pos[seeds]
        start = (p % contract.LFSR_STEPS_PER_DRAW) * self.row_len + p // contract.LFSR_STEPS_PER_DRAW + 1
        draws = self.windows.index_select(0, start).view(-1, self.timesteps, self.n_in)
        return as_float(draws < x.to(torch.uint8)[:, None, :])


def check_intensities(x: torch.Tensor, n_in: int | None = None) -> None:
    """Encoder input: a (batch, n_in) uint8 tensor of intensities 0..255 (a wider type would be wrapped, a float
    truncated: refused)."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
        raise TypeError(f"inputs must be a uint8 tensor of intensities 0..255, not "
                        f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.ndim != 2 or (n_in is not None and x.shape[1] != n_in):
        raise ValueError(f"inputs must have shape (batch, {n_in if n_in is not None else 'n_in'}), not "
                         f"{tuple(x.shape)}")


def latency(x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Latency code, as :func:`bsnn_hw.encode.latency`: one spike at step ((255 - x) * T) // 256, none for x == 0."""
    check_intensities(x)
    check_int("timesteps", timesteps)
    x = x.to(torch.int64)
    t_spike = torch.where(x > 0, ((255 - x) * timesteps) // 256, torch.full_like(x, -1))
    steps = torch.arange(timesteps, device=x.device)
    return as_float(steps[None, :, None] == t_spike[:, None, :])


def as_float(spikes: torch.Tensor) -> torch.Tensor:
    """bool -> float32 0/1, through a uint8 view: PyTorch converts uint8 with vector instructions but bool one element
    at a time on the CPU (64 x 32 x 784 spikes: 0.17 ms against 1.7 ms)."""
    return spikes.view(torch.uint8).to(torch.float32)


def training_seeds(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Per-sample rate-encoding seeds (1..65535) for one epoch, a pure function of (seed, epoch): runs that resume
    from a checkpoint draw the same spikes as uninterrupted ones."""
    g = torch.Generator().manual_seed(_mix(seed, epoch, 0x5EED))
    return torch.randint(1, contract.LFSR_PERIOD + 1, (n,), generator=g)


def _mix(*values: int) -> int:
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = ((h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF
