"""Training speed against snnTorch, side by side in one run (issue 11: >= 3x snnTorch per epoch on 2 cores, and no
slowdown from threads on a busy machine).

    .venv/bin/python bench/train_speed.py [--hidden 128] [--timesteps 32] [--batch-size 64] [--steps 60]
        [--threads 1,2] [--repeats 3] [--busy 1] [--no-snntorch]

Both sides train the same network on the same spikes (Fashion-MNIST training images, the contract's rate code):
784-H-10, binary weights with a straight-through sign, per-neuron scale, LIF with leak 1 - 2^-4 and subtract reset,
a non-firing membrane readout, Adam, fast-sigmoid surrogate (slope 5), backpropagation through all T steps.

- bsnn-hw: the trainer's own training step (train/graphs.py ``TrainStep``, eager on the CPU: BinaryLinear, the fused
  LIF recurrence with the contract's floor leak, dropout 0.05);
- snnTorch 1.0.0: ``nn.Linear`` holding the binarized weights times the scale, ``snn.Leaky`` (beta = 1 - 2^-4,
  threshold 1, subtract reset, ``surrogate.fast_sigmoid(slope=5)``) stepped over T in Python, as snnTorch's
  tutorials train; the readout layer's membrane (``reset_mechanism="none"``, threshold above any membrane) as logits;
  dropout 0.05 on the hidden spikes. Real arithmetic (snnTorch has no floor leak), so snnTorch does less work.

For every thread count it times ``--steps`` training steps of ``--batch-size`` (after 3 warm-up steps), repeats
``--repeats`` times interleaved and reports the median milliseconds per step and the epoch time that implies (60,000
images). "vs its 1 thread" is the median, over the repeats, of each repeat's ratio of the one-thread row to this row
(the two measured in the same repeat, so a change of load between repeats cancels; the rows run in reverse order on
every other repeat, so that a bias from the position in a repeat cancels too), with the lowest and highest in
brackets. ``--busy N`` starts N processes that spin on a core for the whole run, the same load for every row (a
busy machine that others can reproduce). ``--no-snntorch`` times bsnn-hw's rows alone (the thread comparison, many
repeats in little time). snnTorch is an optional benchmark dependency (``pip install -e ".[bench]"``).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time


def bsnn_step(hidden, steps, batch):
    import torch

    from bsnn_hw.train import BSNN
    from bsnn_hw.train.graphs import TrainStep, make_adam
    from bsnn_hw.train.trainer import Encoder, cpu_parallelism
    model = BSNN([784, hidden, 10], steps, leak_shift=4, dropout=0.05, precision="fp32").train()
    opt = make_adam(model.parameters(), 5e-4, 0.0, torch.device("cpu"))     # the trainer's (fused on the CPU)
    enc = Encoder("rate", 784, steps, "cpu")
    step = TrainStep(model, model, enc, opt, 0.0, batch, torch.device("cpu"), graphs=False)
    gen = torch.Generator().manual_seed(2)

    def run(x, seeds, y):
        step.step(x, seeds, y, model.dropout_noise(gen, len(y)))
    # the trainer's loop runs in this context: one torch thread, the compiled path on workers chosen by step times
    return run, cpu_parallelism(model, torch.device("cpu"), "fp32")


def snntorch_step(hidden, steps, batch):
    import snntorch as snn
    import torch
    from snntorch import surrogate
    from torch import nn

    from bsnn_hw.train.layers import binarize
    from bsnn_hw.train.trainer import Encoder

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Parameter(torch.empty(hidden, 784).uniform_(-1, 1) / 28)
            self.w2 = nn.Parameter(torch.empty(10, hidden).uniform_(-1, 1) / hidden ** 0.5)
            self.a1 = nn.Parameter(torch.full((hidden,), 1.0 / (0.5 * 28)))
            self.a2 = nn.Parameter(torch.full((1,), 4.0 / hidden ** 0.5))
            grad = surrogate.fast_sigmoid(slope=5)
            self.lif1 = snn.Leaky(beta=1 - 2 ** -4, threshold=1.0, spike_grad=grad, reset_mechanism="subtract")
            self.lif2 = snn.Leaky(beta=1.0, threshold=1e9, spike_grad=grad, reset_mechanism="none")

        def forward(self, s):                             # s (B, T, 784)
            w1 = binarize(self.w1) * self.a1[:, None]
            w2 = binarize(self.w2)
            mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
            keep = (torch.rand(s.shape[0], hidden) >= 0.05).float()
            for t in range(s.shape[1]):
                spk1, mem1 = self.lif1(s[:, t] @ w1.t(), mem1)
                _, mem2 = self.lif2((spk1 * keep) @ w2.t(), mem2)
            return mem2 * self.a2 / s.shape[1]

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=5e-4)
    enc = Encoder("rate", 784, steps, "cpu")

    def run(x, seeds, y):
        logits = net(enc(x, seeds))
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            net.w1.clamp_(-1, 1)
            net.w2.clamp_(-1, 1)
    return run, contextlib.nullcontext(None)


def _measure(args, rows, makers, x, y, seeds, times, shares) -> None:
    """Time every row ``args.repeats`` times, interleaved, into ``times`` (ms per step) and, for the adaptive rows,
    the share of steps run on one worker into ``shares``."""
    import torch
    b = args.batch_size
    for rep in range(args.repeats):
        # every other repeat in reverse order: under load the row measured later in a repeat ran 2-5 % slower (a
        # run with the adaptive row forced to one thread gave 0.95x / 0.98x "one thread against itself")
        for name, t, mode in (rows if rep % 2 == 0 else rows[::-1]):
            torch.set_num_threads(t)
            torch.manual_seed(0)
            run, context = makers[name](args.hidden, args.timesteps, b)
            with context as workers:
                timed = workers.timed if mode == "adaptive" else contextlib.nullcontext
                for i in range(3 + args.steps):
                    if i == 3:
                        t0 = time.perf_counter()
                    with timed():
                        run(x[i * b:(i + 1) * b], seeds[i * b:(i + 1) * b], y[i * b:(i + 1) * b])
                times[(name, t, mode)].append((time.perf_counter() - t0) / args.steps * 1000)
                if mode == "adaptive":
                    shares[(name, t, mode)].append(workers.steps[1] / sum(workers.steps.values()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--timesteps", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=60, help="timed steps per measurement")
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--busy", type=int, default=0, help="processes spinning on a core during the run (default 0)")
    ap.add_argument("--no-snntorch", action="store_true", help="time bsnn-hw alone (the thread comparison)")
    args = ap.parse_args(argv)
    import importlib.util
    if not args.no_snntorch and importlib.util.find_spec("snntorch") is None:
        print("bench/train_speed.py needs snnTorch: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    import torch

    from bsnn_hw import data
    from bsnn_hw.kernels import cpu_target
    from bsnn_hw.train.trainer import retain_heap
    retain_heap()              # as the trainer's setup_run does on the CPU (process-wide: snnTorch gets it too)
    x_all, y_all = data.load_dataset("fashion-mnist", "train")
    n = (args.steps + 3) * args.batch_size
    x, y = torch.from_numpy(x_all[:n]), torch.from_numpy(y_all[:n])
    seeds = torch.randint(1, 65536, (n,), generator=torch.Generator().manual_seed(1))
    makers = {"bsnn-hw": bsnn_step} if args.no_snntorch else {"bsnn-hw": bsnn_step, "snnTorch": snntorch_step}
    threads = [int(t) for t in args.threads.split(",")]
    # bsnn-hw with more than one thread: as the trainer runs (workers chosen by step times) and held at all threads
    rows = [(name, t, mode) for t in threads for name in makers
            for mode in (("adaptive", "fixed") if name == "bsnn-hw" and t > 1 else ("",))]
    times = {row: [] for row in rows}
    shares = {row: [] for row in rows}
    b = args.batch_size
    with contextlib.ExitStack() as stack:
        for _ in range(args.busy):
            spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            stack.callback(spin.kill)
        _measure(args, rows, makers, x, y, seeds, times, shares)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    busy = f"; {args.busy} spinning process(es) beside it" if args.busy else ""
    print(f"784-{args.hidden}-10, T={args.timesteps}, batch {b}, {args.steps} steps x {args.repeats} repeats; "
          f"torch {torch.__version__}; {cpu_target()}; load average {load}{busy}")
    print("| threads | bsnn-hw workers | bsnn-hw ms/step | snnTorch ms/step | ratio | bsnn-hw s/epoch (60,000) | "
          "bsnn-hw vs its 1 thread |")
    print("|---|---|---|---|---|---|---|")
    base = times[("bsnn-hw", threads[0], "")]
    for t in threads:
        theirs = statistics.median(times[("snnTorch", t, "")]) if "snnTorch" in makers else None
        for name, tt, mode in rows:
            if name != "bsnn-hw" or tt != t:
                continue
            ours = statistics.median(times[(name, t, mode)])
            paired = [one / this for one, this in zip(base, times[(name, t, mode)])]
            how = {"": "1", "fixed": f"{t} (held)",
                   "adaptive": f"adaptive ({100 * statistics.mean(shares[(name, t, mode)] or [0]):.0f}% of steps on 1)"}
            vs = f"{theirs:.1f} | {theirs / ours:.2f}x" if "snnTorch" in makers else "- | -"
            print(f"| {t} | {how[mode]} | {ours:.1f} | {vs} | "
                  f"{ours * 60000 / b / 1000:.1f} | {statistics.median(paired):.2f}x "
                  f"[{min(paired):.2f}-{max(paired):.2f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
