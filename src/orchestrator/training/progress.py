"""Rich progress display for a training run: step, loss, it/s, ETA."""
from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .metrics import StepMetrics


class TrainProgress:
    def __init__(self, description: str, total: int, start: int = 0):
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[its]} it/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        self.task = self.progress.add_task(description, total=total, completed=start, loss="-", its="-")

    def __enter__(self) -> "TrainProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def update(self, m: StepMetrics) -> None:
        self.progress.update(self.task, completed=m.step, loss=f"{m.loss:.4f}", its=f"{m.it_per_s:.1f}")
