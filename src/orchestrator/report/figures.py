"""The report's plots, drawn with matplotlib's Agg backend (no display) and saved as PNG files."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: a headless machine has no display to open
import matplotlib.pyplot as plt  # noqa: E402

from .collect import TrialReport  # noqa: E402

DPI = 80


def moving_average(ys: Sequence[float], window: int) -> list[float]:
    """Trailing mean over up to `window` points (noisy per-step losses read better smoothed)."""
    out, total = [], 0.0
    for i, y in enumerate(ys):
        total += y
        if i >= window:
            total -= ys[i - window]
        out.append(total / min(i + 1, window))
    return out


def _finite(xs: Sequence[int], ys: Sequence[float | None]) -> tuple[list[int], list[float]]:
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
    return [p[0] for p in pts], [p[1] for p in pts]


def _save(fig, path: Path, right: float = 0.97) -> Path:
    # Fixed margins, not tight_layout: its text measuring doubled the time of a 16-trial report.
    fig.subplots_adjust(left=0.09, right=right, bottom=0.16, top=0.88, wspace=0.28)
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})  # no URL inside a file we send
    plt.close(fig)
    return path


def training_curves(trial: TrialReport, path: Path) -> Path:
    """Loss (and its moving mean) and learning rate over steps, side by side."""
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(9, 3))
    xs, loss = _finite(trial.steps, trial.loss)
    ax_loss.plot(xs, loss, lw=0.8, alpha=0.5, label="loss")
    if len(loss) >= 10:
        w = max(len(loss) // 20, 2)
        ax_loss.plot(xs, moving_average(loss, w), lw=1.5, label=f"moving mean of {w}")
    ax_loss.set(title="training loss", xlabel="step")
    ax_loss.legend(loc="upper right", fontsize=8)
    xs, lr = _finite(trial.steps, trial.lr)
    ax_lr.plot(xs, lr, color="tab:orange")
    ax_lr.set(title="learning rate", xlabel="step")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    return _save(fig, path)


def metric_over_steps(metric: str, trials: Sequence[TrialReport], path: Path) -> Path:
    """One line per trial: the metric at each evaluated step, with its 95% interval where it has one."""
    fig, ax = plt.subplots(figsize=(9, max(3.4, 0.2 * len(trials) + 0.8)))
    for i, t in enumerate(trials):
        style = ("-", "--", ":")[i // 10 % 3]  # the colour cycle has 10: tell the 11th line from the 1st
        pts = [(e.step, e.metrics[metric]) for e in t.evaluations if metric in e.metrics]
        if not pts:
            continue
        xs = [s for s, _ in pts]
        ys = [m["value"] for _, m in pts]
        if all("ci_low" in m and "ci_high" in m for _, m in pts):
            err = [[y - m["ci_low"] for y, (_, m) in zip(ys, pts)], [m["ci_high"] - y for y, (_, m) in zip(ys, pts)]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, ls=style, label=t.label)
        else:
            ax.plot(xs, ys, marker="o", ls=style, label=t.label)
    ax.set(title=metric, xlabel="step")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside: lines stay visible
    return _save(fig, path, right=0.7)
