"""``bsnn-hw calibrate``: accuracy and calibration of a network, of its ensemble, and of networks to compare.

For every model evaluated (the MAP network of MODEL; its ensemble when it carries one; every ``--compare`` model) the
integer results come from the golden model (:mod:`bsnn_hw.golden`, :mod:`bsnn_hw.ensemble`) and the class
probabilities from :func:`bsnn_hw.ensemble.confidence` (a single network is an ensemble of one: ``softmax(scale *
score)``, its trainer's own output distribution). Over N samples with labels y, prediction k_n (the contract's class,
the argmax of the integer scores or totals) and probabilities p_n::

    accuracy = mean_n [k_n = y_n]
    NLL      = -mean_n log p_n[y_n]                      (p floored at the smallest positive double)
    Brier    = mean_n sum_c (p_n[c] - [c = y_n])^2       (the multi-class Brier score, 0..2)
    ECE      = sum_m |B_m| / N * |acc(B_m) - conf(B_m)|  15 equal-width bins of conf_n = p_n[k_n]:
               B_m = {n : (m-1)/15 < conf_n <= m/15}, m = 1..15; acc and conf the bin's means

The reliability diagram (``--plot``) shows acc(B_m) against the bin for every model evaluated.
"""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from . import ensemble as ens
from . import golden
from .cli import POSITIVE, UserError, emit_json, given, load_model
from .io import atomic_write

BINS = 15
DATASET_ALIASES = {"fashion": "fashion-mnist"}


# ---------------------------------------------------------------------------------------------------------------
# Metrics


def bin_index(conf: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Bin m - 1 of each confidence, for the bins ((m-1)/bins, m/bins], m = 1..bins (0 goes to the first)."""
    return np.clip(np.ceil(np.asarray(conf, dtype=np.float64) * bins).astype(np.int64) - 1, 0, bins - 1)


def reliability(conf, correct, bins: int = BINS) -> dict:
    """Per bin: sample count, mean accuracy, mean confidence (NaN for an empty bin)."""
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    idx = bin_index(conf, bins)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=correct, minlength=bins) / count
        mean_conf = np.bincount(idx, weights=conf, minlength=bins) / count
    return {"count": count, "accuracy": acc, "confidence": mean_conf}


def ece(conf, correct, bins: int = BINS) -> float:
    """Expected calibration error over ``bins`` equal-width bins (see the module docstring)."""
    r = reliability(conf, correct, bins)
    n = int(r["count"].sum())
    if n == 0:
        return float("nan")
    filled = r["count"] > 0
    return float(np.sum(r["count"][filled] / n * np.abs(r["accuracy"][filled] - r["confidence"][filled])))


def scores(prob: np.ndarray, prediction: np.ndarray, labels: np.ndarray, bins: int = BINS) -> dict:
    """accuracy, NLL, Brier score and ECE of probabilities ``prob`` (N, C) with the model's own ``prediction`` (N,)
    against ``labels`` (N,)."""
    prob = np.asarray(prob, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    prediction = np.asarray(prediction, dtype=np.int64)
    n = len(labels)
    if prob.ndim != 2 or prob.shape[0] != n or prediction.shape != (n,):
        raise ValueError(f"probabilities must be (N, C) and predictions (N,) for N = {n} labels, not {prob.shape} "
                         f"and {prediction.shape}")
    if n and (labels.min() < 0 or labels.max() >= prob.shape[1]):
        raise ValueError(f"labels must be classes 0..{prob.shape[1] - 1} of the model, not up to {labels.max()}")
    rows = np.arange(n)
    onehot = np.zeros_like(prob)
    onehot[rows, labels] = 1.0
    correct = prediction == labels
    conf = prob[rows, prediction]
    return {"samples": n, "accuracy": float(correct.mean()) if n else float("nan"),
            "nll": float(-np.mean(np.log(np.maximum(prob[rows, labels], np.finfo(np.float64).tiny)))),
            "brier": float(np.mean(np.sum((prob - onehot) ** 2, axis=1))),
            "ece": ece(conf, correct, bins), "mean_confidence": float(conf.mean()) if n else float("nan"),
            "reliability": {k: v.tolist() for k, v in reliability(conf, correct, bins).items()}}


# ---------------------------------------------------------------------------------------------------------------
# Models


def _scale(net, given: float | None, name: str) -> float:
    if given is not None:
        return given
    scale = ens.output_scale(net)
    if scale is None:
        raise ValueError(f"{name}: carries no output scale (metadata metrics.output_scale, written by bsnn-hw train); "
                         f"give one with --scale")
    return scale


def evaluate(net, x: np.ndarray, y: np.ndarray, name: str = "model", scale: float | None = None,
             confidence: str = ens.DEFAULT_CONFIDENCE, with_ensemble: bool = True) -> list[dict]:
    """Rows of :func:`scores` for the network (label ``name``) and, when it carries one and ``with_ensemble``, its
    ensemble (label ``name`` + " ensemble (S=...)"). The confidence of a single network is always its softmax."""
    ens.check_readout(net)
    if x.ndim != 2 or x.shape[1] != net.n_in:
        raise ValueError(f"{name}: the data have {x.shape[1] if x.ndim == 2 else '?'} features but the network has "
                         f"{net.n_in} inputs")
    a = _scale(net, scale, name)
    spikes = net.encode(x)
    res = golden.simulate(net, spikes)
    score = ens.member_scores(net, res)
    pred = np.asarray(res.prediction, dtype=np.int64)
    votes = np.eye(net.n_out, dtype=np.int64)[pred]
    rows = [{"model": name, "kind": "single", "members": 1, "scale": a,
             **scores(ens.confidence(score, votes, 1, a), pred, y)}]
    if with_ensemble and net.ensemble:
        er = ens.simulate(net, spikes)
        s = len(net.ensemble)
        rows.append({"model": f"{name} ensemble (S={s})", "kind": "ensemble", "members": s, "scale": a,
                     "confidence": confidence,
                     **scores(ens.confidence(er.totals, er.votes, s, a, confidence), er.prediction, y)})
    return rows


def plot(rows: list[dict], path, title: str = "") -> None:
    """Reliability diagrams, one panel per row: accuracy per confidence bin, the diagonal, the ECE."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    edges = np.linspace(0, 1, BINS + 1)
    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.8), squeeze=False)
    for ax, row in zip(axes[0], rows):
        acc = np.nan_to_num(np.array(row["reliability"]["accuracy"], dtype=np.float64))
        ax.bar(edges[:-1], acc, width=1 / BINS, align="edge", edgecolor="black", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{row['model']}\nacc {100 * row['accuracy']:.2f}%  ECE {row['ece']:.4f}", fontsize=9)
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# The command


@click.command("calibrate")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--dataset", "-d", required=True,
              help="fashion (= fashion-mnist), digits, mnist, or a directory of IDX files.")
@click.option("--data-root", type=click.Path(file_okay=False), help="Directory of a named IDX data set.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--split-seed", type=click.IntRange(min=0), default=0, show_default=True, help="digits: seed of the train/test split.")
@click.option("--limit", type=int, help="Only the first N samples of the split.")
@click.option("--compare", "compare", multiple=True, type=click.Path(dir_okay=False),
              help="Another .bsnn model to evaluate on the same data (repeatable), e.g. a B-SNN network.")
@click.option("--confidence", type=click.Choice(list(ens.CONFIDENCES)), default=ens.DEFAULT_CONFIDENCE,
              show_default=True, help="How an ensemble's totals and votes become probabilities (docs/spec.md 10).")
@click.option("--scale", type=POSITIVE, help="Logit per unit of readout score for MODEL (default: its metadata).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write a reliability diagram PNG here.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def calibrate(model, dataset, data_root, split, split_seed, limit, compare, confidence, scale, plot_path, as_json):
    """Accuracy, NLL, Brier score and ECE (15 bins) of MODEL's MAP network, of its ensemble (when it carries one),
    and of every --compare model, on one data split; optionally a reliability diagram."""
    from . import data
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, not {limit}")
    if plot_path is not None:
        from .io import check_output
        check_output(plot_path, "--plot")
    nets = [(model, load_model(model))] + [(p, load_model(p)) for p in compare]
    if given("confidence") and not any(net.ensemble for _, net in nets):
        raise UserError(f"--confidence {confidence} says how an ensemble's scores become probabilities, and no model "
                        f"here carries an ensemble")
    if given("split_seed") and DATASET_ALIASES.get(dataset, dataset) != "digits":
        raise UserError(f"--split-seed chooses digits' train/test split; {dataset} has a fixed one")
    x, y = data.load_dataset(DATASET_ALIASES.get(dataset, dataset), split, seed=split_seed, root=data_root)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    rows = []
    for i, (path, net) in enumerate(nets):
        if net.n_out <= int(y.max()):
            raise UserError(f"{path}: has {net.n_out} outputs but {dataset} has classes up to {int(y.max())}")
        rows += evaluate(net, x, y, name=Path(path).name, scale=scale if i == 0 else None, confidence=confidence)
    if plot_path is not None:
        plot(rows, plot_path, title=f"{dataset} {split}, {len(y)} samples")
    if as_json:
        emit_json({"dataset": dataset, "split": split, "samples": int(len(y)), "bins": BINS, "results": rows,
                   **({"plot": str(plot_path)} if plot_path else {})})
        return
    click.echo(f"{dataset} {split}: {len(y)} samples, ECE over {BINS} equal-width bins")
    click.echo(f"{'model':<40} {'accuracy':>9} {'NLL':>8} {'Brier':>8} {'ECE':>8}")
    for r in rows:
        click.echo(f"{r['model']:<40} {100 * r['accuracy']:>8.2f}% {r['nll']:>8.4f} {r['brier']:>8.4f} "
                   f"{r['ece']:>8.4f}")
    if plot_path is not None:
        click.echo(f"reliability diagram: {plot_path}")
