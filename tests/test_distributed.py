"""Data-parallel training (train/distributed.py): two gloo processes under torchrun follow one process's run with
the same global batch - the same rate-code seeds, dropout masks and augmentation, the gradient of the global mean."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bsnn_hw

ARGS = ["train", "--dataset", "digits", "--hidden", "16", "-T", "3", "--epochs", "1", "--batch-size", "50",
        "--threads", "1", "--augment-shift", "1", "--dropout", "0.2", "-q"]


def _bsnn_hw() -> str:
    exe = Path(sys.executable).with_name("bsnn-hw")
    return str(exe) if exe.exists() else shutil.which("bsnn-hw")


@pytest.mark.slow          # three torch start-ups and two trainings: 30-40 s each on the 2-core machine
@pytest.mark.parametrize("readout", ["membrane", "count"])
def test_two_gloo_processes_match_one(tmp_path, readout):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    args = ARGS + ["--readout", readout]
    # 1437 training samples, global batch 50: the last batch (37) splits unevenly (18 + 19), on purpose
    two = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--standalone", "--no-python", _bsnn_hw(), *args,
                          "-o", str(tmp_path / "two.bsnn")], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run([_bsnn_hw(), *args, "-o", str(tmp_path / "one.bsnn")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    a = torch.load(tmp_path / "two.bsnn.ckpt", weights_only=False)["model"]
    b = torch.load(tmp_path / "one.bsnn.ckpt", weights_only=False)["model"]
    assert a.keys() == b.keys()
    for key in a:
        # the same updates up to the all-reduce's float summation order
        assert torch.allclose(a[key], b[key], rtol=0, atol=1e-5), (key, float((a[key] - b[key]).abs().max()))
    assert bsnn_hw.load(tmp_path / "two.bsnn").identity() == bsnn_hw.load(tmp_path / "one.bsnn").identity()
    assert b["fcs.0.weight"].abs().max() > 0          # it trained


def test_other_methods_refuse_torchrun(monkeypatch):
    from bsnn_hw.train import TrainConfig, fit
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"distributed training \(torchrun, WORLD_SIZE = 2\) is built for --method "
                                         r"bsnn only, not --method bntt"):
        fit(TrainConfig(method="bntt"))
