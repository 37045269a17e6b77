"""BiSNN: a distribution over binary weights, learned by Bayesian mirror descent (``bsnn-hw train --method bisnn``).

Seed 003 (BiSNN, Jang, Skatchkovsky & Simeone 2020, arXiv 2012.08300; reference code kclip/BayesBiSNN,
optimizer/BBSNN.py) after BayesBiNN (Meng, Bachmann & Khan 2020). The network is the B-SNN of
:class:`~bsnn_hw.train.model.BSNN` under our LIF contract; only how its binary weights are learned changes.

Every binary weight w in {-1, +1} has a mean-field Bernoulli posterior ``q(w = +1) = sigmoid(2 w_r)`` with latent
natural parameter ``w_r`` (the BSNN layers' ``weight`` tensors), mean ``mu = tanh(w_r)``. One training step on a batch
(equations and references in docs/training.md, "BiSNN"):

1. sample (``bisnn_mc`` times): ``delta = 1/2 log(eps / (1 - eps))``, ``eps ~ U(0, 1)``; the concrete relaxation
   ``w_soft = tanh((delta + w_r) / tau)``; the forward pass runs on ``w_hard = sign(delta + w_r)`` (the
   straight-through Gumbel-softmax sampler of BayesBiSNN, so every training forward is an exact member network of
   the contract), or on ``w_soft`` itself with ``bisnn_relaxed`` (the reparameterised sampler);
2. ``g = dL/dw`` at that sample, ``g_hat = mean over samples of g (1 - w_soft^2) / (tau (1 - mu^2))``;
3. the natural parameters move along ``g_hat + rho (w_r - w_prior)``, ``w_prior = 1/2 log(p / (1 - p))`` (0 for
   p = 1/2), ``rho = bisnn_rho`` per training sample: "0.03/N" by default (0.03 of the evidence lower bound's own
   weight 1 / N_train: a little KL term that keeps the members diverse; with ``bisnn_mc = 4`` samples per step it met
   issue 13's accuracy and calibration targets on three seeds of three on Fashion-MNIST, docs/training.md), ``"elbo"``
   (1 / N_train), ``"X/N"`` or a number (0: no KL term, a cold posterior);
   ``bisnn_update = "sgd"`` is BayesBiSNN's mirror descent ``w_r <- (1 - eta rho) w_r - eta (g_hat - rho w_prior)``;
   ``"adam"`` (the default) steps the same direction with Adam; ``eta = bisnn_lr`` on the trainer's cosine schedule;
4. the real-valued scales (thresholds alpha, the output temperature) are point estimates trained by Adam at ``lr``.

Export (:func:`export`): the MAP network, ``W_bit = w_r > 0`` (the sign of the latent parameter; thresholds from the
scales as for B-SNN), carrying an ensemble of ``bisnn_members`` weight sets sampled from q with a generator seeded by
``bisnn_member_seed``. ``metrics["output_scale"]`` is the logit per unit of readout score (alpha_L / T for the
membrane readout), the ``scale`` of :func:`bsnn_hw.ensemble.confidence`.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from bsnn_hw import ensemble as ens
from bsnn_hw.io import encode_predictions
from bsnn_hw.network import Network

from .encoding import _mix, training_seeds
from .layers import BinaryLinear, signs
from .model import BSNN, integer_simulate

METHOD = "bisnn"
UPDATES = ("adam", "sgd")
EPS = 1e-10                     # as BayesBiNN / BayesBiSNN: keeps 1 - mu^2 and 1 - w^2 off zero


def check_config(cfg) -> None:
    """Refuse (ValueError, one line) settings that BiSNN does not train."""
    from .trainer import requirement
    need = requirement("bisnn")
    need(cfg.arch is None, f"trains fully connected layers only, not --arch {cfg.arch}")
    need(cfg.first_bits == 1 and cfg.last_bits == 1, f"learns binary weights only; first/last layer weight bits "
         f"{cfg.first_bits}/{cfg.last_bits} are not supported")
    need(isinstance(cfg.bisnn_members, int) and not isinstance(cfg.bisnn_members, bool) and
         1 <= cfg.bisnn_members <= 1024, f"members must be in 1..1024, not {cfg.bisnn_members!r}")
    need(cfg.bisnn_tau > 0 and math.isfinite(cfg.bisnn_tau), f"tau must be positive, not {cfg.bisnn_tau!r}")
    need(0 < cfg.bisnn_prior < 1, f"prior must be a probability in (0, 1), not {cfg.bisnn_prior!r}")
    try:
        rho = prior_weight(cfg, 1)
    except ValueError:
        rho = None
    need(rho is not None and rho >= 0 and math.isfinite(rho), f"rho must be {RHO_FORMS}, not {cfg.bisnn_rho!r}")
    need(rho != 0 or cfg.bisnn_prior == 0.5, f"a prior of {cfg.bisnn_prior} has no effect with rho 0: give --rho "
         f"elbo or a positive weight")
    need(isinstance(cfg.bisnn_mc, int) and cfg.bisnn_mc >= 1, f"mc-samples must be at least 1, not {cfg.bisnn_mc!r}")
    need(cfg.bisnn_lr > 0 and math.isfinite(cfg.bisnn_lr), f"bisnn lr must be positive, not {cfg.bisnn_lr!r}")
    need(cfg.bisnn_update in UPDATES, f"update must be one of {', '.join(UPDATES)}, not {cfg.bisnn_update!r}")
    need(cfg.bisnn_init > 0 and math.isfinite(cfg.bisnn_init), f"init must be positive, not {cfg.bisnn_init!r}")
    need(cfg.weight_decay == 0, "the prior replaces weight decay (--weight-decay must be 0)")


def config(**settings):
    """A TrainConfig for BiSNN: ``settings`` over the trainer's defaults."""
    from .trainer import TrainConfig
    if settings.get("method", METHOD) != METHOD:
        raise ValueError(f"bisnn.config makes --method {METHOD} configurations, not method {settings['method']!r}")
    return TrainConfig.from_dict({"method": METHOD, **settings}).validate()


# ---------------------------------------------------------------------------------------------------------------
# The posterior and its samples


def latent_layers(model: BSNN) -> list[BinaryLinear]:
    return [fc for fc in model.fcs if isinstance(fc, BinaryLinear)]


RHO_FORMS = "a number >= 0, 'elbo' (1 / training samples) or 'X/N' (X / training samples)"


def _rho_terms(value) -> tuple[float, bool]:
    """(x, per_n) of a KL weight as written: rho = x / N_train when ``per_n`` ("X/N"; "elbo" and None, as older
    checkpoints store it, are 1/N), else rho = x. Syntax only: the range is :func:`check_config`'s. Raises
    ValueError (one line) on anything else."""
    if value is None or value == "elbo":
        return 1.0, True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), False
    if isinstance(value, str):
        text = value.strip()
        per_n = text[-2:].upper() == "/N"
        try:
            return float(text[:-2] if per_n else text), per_n
        except ValueError:
            pass
    raise ValueError(f"rho {value!r} is not {RHO_FORMS}")


def parse_rho(value) -> float | str:
    """The KL weight as written in a config or on the command line, normalised: "elbo", "X/N" or a float."""
    if value is None or value == "elbo":
        return "elbo"
    x, per_n = _rho_terms(value)
    return f"{x!r}/N" if per_n else x


def prior_weight(cfg, n_train: int) -> float:
    """rho, the weight of the KL term per training sample: ``cfg.bisnn_rho`` as a number, X / ``n_train`` for "X/N",
    1 / ``n_train`` for "elbo" (or None)."""
    x, per_n = _rho_terms(cfg.bisnn_rho)
    return x / n_train if per_n else x


def prior_parameter(p: float) -> float:
    """w_prior = 1/2 log(p / (1 - p)): the natural parameter of the Bernoulli prior q(w = +1) = p, 0 < p < 1."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 1:
        raise ValueError(f"the prior probability of a +1 weight must be in (0, 1), not {p!r}")
    return 0.5 * math.log(p / (1 - p))


def concrete_sample(w_r: torch.Tensor, tau: float, generator: torch.Generator):
    """(w_hard, w_soft) for one draw of the logistic noise delta: sign(delta + w_r) (+1 where > 0) and
    tanh((delta + w_r) / tau)."""
    eps = torch.rand(w_r.shape, generator=generator).clamp_(1e-12, 1 - 1e-12).to(w_r.device)
    z = 0.5 * torch.log(eps / (1 - eps)) + w_r
    return signs(z), torch.tanh(z / tau)


@contextlib.contextmanager
def weights_as(model: BSNN, weights: list[torch.Tensor]):
    """Run ``model`` with ``weights`` (one +-1 or relaxed tensor per binary layer) in place of sign(W)."""
    layers = latent_layers(model)
    for fc, w in zip(layers, weights):
        fc.sign_weight = (lambda w=w: w)            # an instance attribute shadows BinaryLinear.sign_weight
    try:
        yield
    finally:
        for fc in layers:
            del fc.sign_weight


def bayes_step(model: BSNN, closure, cfg, eta: float, rho: float, generator: torch.Generator) -> tuple[float, torch.Tensor]:
    """One BiSNN step: ``cfg.bisnn_mc`` samples, the scaled gradient g_hat, the mirror-descent update of every w_r.
    ``closure()`` returns (loss, logits) of the model's forward pass; the scales' gradients are accumulated (mean over
    samples) for their own optimizer. Returns (mean loss, logits of the last sample)."""
    layers = latent_layers(model)
    tau, mc = cfg.bisnn_tau, cfg.bisnn_mc
    g_hat = [torch.zeros_like(fc.weight) for fc in layers]
    loss_sum, logits = 0.0, None
    for _ in range(mc):
        hard, soft = zip(*(concrete_sample(fc.weight.detach(), tau, generator) for fc in layers))
        leaves = [(s if cfg.bisnn_relaxed else h).detach().requires_grad_(True) for h, s in zip(hard, soft)]
        with weights_as(model, leaves):
            loss, logits = closure()
            (loss / mc).backward()
        loss_sum += float(loss.detach())
        for acc, fc, leaf, s in zip(g_hat, layers, leaves, soft):
            mu = torch.tanh(fc.weight.detach())
            acc += leaf.grad * (1 - s * s + EPS) / (tau * (1 - mu * mu + EPS))    # leaf.grad already / mc
    w_prior = prior_parameter(cfg.bisnn_prior)
    with torch.no_grad():
        for fc, g in zip(layers, g_hat):
            if cfg.bisnn_update == "sgd":
                fc.weight.mul_(1 - eta * rho).sub_(eta * (g - rho * w_prior))
                fc.weight.grad = None
            else:       # "adam": the same direction, g_hat + rho (w_r - w_prior), stepped by the Adam optimizer
                fc.weight.grad = g + rho * (fc.weight - w_prior)
    return loss_sum / mc, logits


def sample_members(model: BSNN, count: int, seed: int) -> list[list[np.ndarray]]:
    """``count`` weight sets drawn from q, W_bit ~ Bernoulli(sigmoid(2 w_r)) = Bernoulli((1 + tanh w_r) / 2), from one
    generator seeded by ``seed``: bool arrays, one per binary layer, member after member."""
    g = torch.Generator().manual_seed(int(seed))
    layers = latent_layers(model)
    out = []
    for _ in range(count):
        out.append([(torch.rand(fc.weight.shape, generator=g) < torch.sigmoid(2 * fc.weight.detach().cpu()))
                    .numpy() for fc in layers])
    return out


def output_scale(model: BSNN) -> float:
    """Logit per unit of readout score: alpha_L / T (membrane readout: logits = alpha_L V / T) or the learned
    temperature c (count readout: logits = c counts)."""
    if model.readout == "membrane":
        return float(model.fcs[-1].scale().detach().reshape(-1)[0]) / model.timesteps
    return float(model.log_temperature.detach().exp())


def export(model: BSNN, cfg, metadata: dict | None = None) -> Network:
    """The MAP network (W_bit = w_r > 0) carrying ``cfg.bisnn_members`` sampled weight sets."""
    from .model import to_network
    net = to_network(model, cfg.encoding, seed=cfg.eval_seed)
    members = sample_members(model, cfg.bisnn_members, cfg.bisnn_member_seed)
    return Network(net.layers, net.timesteps, net.readout, net.encoding, net.seed, metadata=metadata or {},
                   ensemble=members)


@torch.no_grad()
def integer_ensemble(net: Network, encoder, x: torch.Tensor, batch_size: int = 1000) -> dict:
    """The exported MAP network and every member run by the trainer's int64 contract (:func:`integer_simulate`) on
    the same spikes (the network's encoder seed): predictions, per-member scores summed (totals) and votes."""
    nets = ens.members(net)
    preds, totals, votes = [], [], []
    for i in range(0, len(x), batch_size):
        spikes = encoder(x[i:i + batch_size], net.seed).bool()
        preds.append(integer_simulate(net, spikes)[0].cpu())
        tot, vot = None, None
        for m in nets:
            p, counts, membranes = integer_simulate(m, spikes)
            score = (counts[-1] if net.readout == "count" else membranes[-1]).cpu().to(torch.int64)
            tot = score if tot is None else tot + score
            one = F.one_hot(p.cpu(), net.n_out)
            vot = one if vot is None else vot + one
        totals.append(tot)
        votes.append(vot)
    return {"map_pred": torch.cat(preds).numpy(), "totals": torch.cat(totals).numpy(),
            "votes": torch.cat(votes).numpy()}


# ---------------------------------------------------------------------------------------------------------------
# The loop


def fit(cfg, out=None, checkpoint=None, resume: bool = False, progress: bool = True,
        log: Callable[[str], None] | None = None, on_epoch_end=None):
    """As :func:`bsnn_hw.train.trainer.fit`, for ``cfg.method == "bisnn"``."""
    from .trainer import (Encoder, TrainResult, _Progress, build_model, check_run, cosine_schedule, cpu_parallelism,
                          dataset_title, evaluate, integer_accuracy, resume_state, save_checkpoint, save_outputs,
                          setup_run)
    check_run(cfg, METHOD, out, checkpoint, resume, log, on_epoch_end)
    cfg.validate()
    log = log or (lambda msg: None)
    started = time.perf_counter()
    device, precision, (xtr, ytr, xte, yte), (xtr_t, ytr_t, xte_t, yte_t), n_classes = setup_run(cfg)
    model = build_model(cfg, xtr.shape[1], n_classes, precision).to(device)
    with torch.no_grad():       # BayesBiNN's start: every weight confident (|w_r| = init) with a random sign
        for fc in latent_layers(model):
            fc.weight.copy_(signs(fc.weight) * cfg.bisnn_init)
    encoder = Encoder(cfg.encoding, xtr.shape[1], cfg.timesteps, device)
    steps_per_epoch = math.ceil(len(ytr) / cfg.batch_size)
    latent = {id(fc.weight) for fc in latent_layers(model)}
    # Adam trains the scales only; the latent natural parameters move by bayes_step. The "eta" group carries the
    # mirror-descent step on the same cosine schedule (it holds no parameters).
    adam_latent = [fc.weight for fc in latent_layers(model)] if cfg.bisnn_update == "adam" else []
    optimizer = torch.optim.Adam([{"params": [p for p in model.parameters() if id(p) not in latent], "lr": cfg.lr},
                                  {"params": adam_latent, "lr": cfg.bisnn_lr}])
    scheduler = cosine_schedule(optimizer, cfg.epochs * steps_per_epoch)
    rho = prior_weight(cfg, len(ytr))
    if checkpoint is None and out is not None:
        checkpoint = Path(str(out) + ".ckpt")
    history, start_epoch = resume_state(checkpoint if resume else None, cfg, model, optimizer, scheduler, log)

    bar = _Progress(progress)
    with bar, cpu_parallelism(model, device, precision) as workers:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            model.train()
            order = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(_mix(cfg.seed, epoch, 1)))
            seeds = training_seeds(len(ytr), cfg.seed, epoch)
            drop_gen = torch.Generator().manual_seed(_mix(cfg.seed, epoch, 2))
            noise_gen = torch.Generator().manual_seed(_mix(cfg.seed, epoch, 4))
            task = bar.start(f"epoch {epoch + 1}/{cfg.epochs}", steps_per_epoch)
            loss_sum, correct, seen = 0.0, 0, 0
            for b in range(steps_per_epoch):
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                idx_d = idx.to(device)
                spikes = encoder(xtr_t[idx_d], seeds[idx].to(device))
                target = ytr_t[idx_d]

                def closure():
                    logits = model(spikes, generator=drop_gen)
                    return F.cross_entropy(logits, target, label_smoothing=cfg.label_smoothing), logits

                optimizer.zero_grad(set_to_none=True)
                with workers.timed():
                    loss, logits = bayes_step(model, closure, cfg, optimizer.param_groups[1]["lr"], rho, noise_gen)
                    optimizer.step()
                scheduler.step()
                loss_sum += loss * len(idx)
                correct += int((logits.argmax(1) == target).sum())
                seen += len(idx)
                bar.advance(task, f"loss {loss_sum / seen:.4f}  acc {100 * correct / seen:.2f}%")
            train_time = time.perf_counter() - t0
            test_acc = evaluate(model, encoder, xte_t, yte_t, cfg.eval_seed)
            mean_abs = float(torch.cat([fc.weight.detach().abs().flatten() for fc in latent_layers(model)]).mean())
            history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "train_accuracy": correct / seen,
                            "test_accuracy": test_acc, "epoch_seconds": train_time,
                            "lr": scheduler.get_last_lr()[0], "mean_abs_latent": mean_abs})
            bar.finish(task, f"loss {loss_sum / seen:.4f}  train {100 * correct / seen:.2f}%  "
                             f"MAP test {100 * test_acc:.2f}%  |w_r| {mean_abs:.2f}  {train_time:.1f}s")
            if not progress:
                log(f"epoch {epoch + 1}/{cfg.epochs}: loss {loss_sum / seen:.4f}  train {100 * correct / seen:.2f}%  "
                    f"MAP test {100 * test_acc:.2f}%  mean |w_r| {mean_abs:.3f}  {train_time:.1f}s")
            if checkpoint is not None:
                save_checkpoint(checkpoint, cfg, model, optimizer, scheduler, epoch + 1, history)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, history[-1])

    # Hardware-exact evaluation: the MAP network as exported, then every member on the same spikes.
    float_acc, float_pred = evaluate(model, encoder, xte_t, yte_t, cfg.eval_seed, predictions=True)
    net = export(model, cfg)
    int_acc, int_pred = integer_accuracy(net, encoder, xte_t, yte_t)
    ie = integer_ensemble(net, encoder, xte_t)
    if not np.array_equal(ie["map_pred"], int_pred):       # the same network, the same contract: must agree
        raise RuntimeError("bisnn: the MAP network's two integer evaluations disagree")
    ens_pred = np.argmax(ie["totals"], axis=1)
    sizes = [xtr.shape[1], *cfg.hidden, n_classes]
    metrics = {"dataset": cfg.dataset, "method": METHOD, "sizes": sizes, "train_samples": int(len(ytr)),
               "test_samples": int(len(yte)), "float_accuracy": float_acc, "integer_accuracy": int_acc,
               "gap_pp": round((float_acc - int_acc) * 100, 4), "members": cfg.bisnn_members,
               "ensemble_accuracy": float((ens_pred == yte).mean()) if len(yte) else 0.0,
               "vote_accuracy": float((np.argmax(ie["votes"], axis=1) == yte).mean()) if len(yte) else 0.0,
               "output_scale": output_scale(model), "rho": rho, "epochs": cfg.epochs, "device": str(device),
               "precision": precision, "epoch_seconds": [h["epoch_seconds"] for h in history],
               "mean_abs_latent": history[-1]["mean_abs_latent"] if history else None}
    if workers.steps:
        metrics["worker_steps"] = {str(k): v for k, v in workers.steps.items()}
    metrics["train_seconds"] = round(time.perf_counter() - started, 2)
    metrics["float_predictions"] = encode_predictions(float_pred)
    save_outputs(net, cfg, metrics, history, out, checkpoint,
                 f"BiSNN {dataset_title(cfg.dataset)} {'-'.join(map(str, sizes))}, T={cfg.timesteps}")
    return TrainResult(net, model, metrics, history)
