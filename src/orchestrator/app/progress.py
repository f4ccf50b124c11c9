"""What a run shows on the terminal while it lasts: live progress bars per trial, the fallbacks
trainers take (notices) printed above them, and one-line messages, all on stderr.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.actors.launch import RunningSweep
    from orchestrator.experiment.plan import SweepPlan

    from .signals import Preemption


def print_line(text: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(text, markup=False, soft_wrap=True)


def print_notice(notice: dict, console: Any = None) -> None:
    from rich.console import Console

    details = ", ".join(f"{k}={v}" for k, v in notice.items() if k not in ("trial_id", "kind"))
    (console or Console(stderr=True)).print(f"[yellow]warning[/] {notice['trial_id']}: "
                                            f"{notice['kind'].replace('_', ' ')} ({details})", soft_wrap=True)


def show_progress(sweep: RunningSweep, plan: SweepPlan, stop: Preemption, keeper: Any) -> int:
    """Live bars until the sweep ends, with each fallback a trainer takes printed above them;
    returns how many notices were printed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    labels = {t.id: t.label for t in plan.trials}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TextColumn("loss {task.fields[loss]}"),
                  TimeElapsedColumn()) as bar:
        tasks = {t.id: bar.add_task(f"{t.id} {labels[t.id]}", total=t.manifest.train.steps, status="queued",
                                    loss="-") for t in plan.trials}
        shown = 0
        while True:
            ready = sweep.finished(timeout=0.5)
            for tid, p in sweep.progress().items():
                loss = p.get("loss")
                bar.update(tasks[tid], completed=p.get("step", 0), status=p.get("status", ""),
                           loss="-" if loss is None else f"{loss:.4f}")
            for notice in sweep.notices(shown):
                print_notice(notice, bar.console)
                shown += 1
            if ready or keeper.lost or stop.tick(sweep):
                return shown


@contextmanager
def pretrain_bar(total_steps: int, show: bool, what: str) -> Iterator[Callable[[dict], None] | None]:
    """A progress line for the minutes a first run spends pretraining (the VAE stage reports no
    steps, so the bar waits at 0 until the denoiser starts); yields the pretraining's `on_metrics`
    callback, None when not shown."""
    if not show:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn()) as bar:
        task = bar.add_task(f"pretraining the tiny {what}", total=total_steps, loss="-")

        def on_metrics(m: dict) -> None:
            bar.update(task, completed=m["step"], loss=f"{m['loss']:.4f}")

        yield on_metrics
