"""`orch eval list | diff A B | rerun ID`: the evaluations a journal recorded, what differs between
two, and a rerun compared bit for bit (app/evaluations.py). `orch eval SOURCE --suite ...` itself
is eval.py; EvalGroup sends every other first word there.
"""
from __future__ import annotations

import dataclasses
import json

import typer
from rich.table import Table
from typer.core import TyperGroup

from .common import TextFormat, emit_json, journal_or_default, out, run_errors

RUN = "run"  # the command `orch eval SOURCE ...` is, under the group


class EvalGroup(TyperGroup):
    """`orch eval` runs suites unless its first word names one of the record commands."""

    def parse_args(self, ctx, args):
        if not args or args[0] not in self.commands:
            args = [RUN, *args]
        return super().parse_args(ctx, args)


def _shown(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def list_(journal: str = typer.Option(None, "--journal", help="The journal (default: the default journal)."),
          experiment: str = typer.Option(None, "--experiment", help="Only this experiment's."),
          format: TextFormat = typer.Option(TextFormat.text, "--format")) -> None:
    """The recorded evaluations with their ids (for diff and rerun)."""
    from ..app.evaluations import list_evaluations

    with run_errors("eval list"):
        rows = list_evaluations(journal_or_default(journal), experiment)
    if format is TextFormat.json:
        emit_json([{k: v for k, v in dataclasses.asdict(r).items() if k != "payload"}
                   | {"weights": r.payload.get("weights"), "suites": r.payload.get("suites")} for r in rows])
        return
    t = Table(title="recorded evaluations")
    for col in ("id", "experiment", "trial", "step", "weights", "suites"):
        t.add_column(col, no_wrap=col == "id")
    for r in rows:
        t.add_row(r.eval_id, r.experiment_id, r.trial_id, str(r.step), str(r.payload.get("weights")),
                  ",".join(r.payload.get("suites") or []))
    out.print(t)


def diff(a: str = typer.Argument(..., help="An evaluation id (a unique prefix serves)."),
         b: str = typer.Argument(..., help="The other."),
         journal: str = typer.Option(None, "--journal"),
         format: TextFormat = typer.Option(TextFormat.text, "--format")) -> None:
    """What differs between two evaluations: what they ran with (and which metrics each difference
    can move), then the values."""
    from ..app.evaluations import diff_evaluations

    with run_errors("eval diff"):
        d = diff_evaluations(journal_or_default(journal), a, b)
    if format is TextFormat.json:
        emit_json(d)
        return
    if not d["ran_with"]:
        out.print(f"{d['a']} and {d['b']} ran with the same weights, models, inputs, options, code and runtime")
    else:
        t = Table(title=f"what {d['a']} (a) and {d['b']} (b) ran with")
        for col in ("field", "a", "b", "can move"):
            t.add_column(col)
        for row in d["ran_with"]:
            t.add_row(row["field"], _shown(row["a"]), _shown(row["b"]), row["can_move"])
        out.print(t)
    if d["values"]:
        t = Table(title="values that differ")
        for col in ("metric", "a", "b"):
            t.add_column(col)
        for row in d["values"]:
            t.add_row(row["metric"], _shown(row["a"]), _shown(row["b"]))
        out.print(t)
    else:
        out.print("every metric both report has the same value")


def rerun(eval_id: str = typer.Argument(..., help="An evaluation id (orch eval list)."),
          journal: str = typer.Option(None, "--journal"),
          blobs: str = typer.Option(None, "--blobs", help="Where its weights are (default: its experiment's store)."),
          format: TextFormat = typer.Option(TextFormat.text, "--format")) -> None:
    """Run a recorded evaluation again (same weights, options, suites and thread count) and compare
    every value and per-sample outcome with the record, exactly. Exit 0 if identical, 1 if not."""
    from ..app.evaluations import rerun_evaluation

    with run_errors("eval rerun"):
        r = rerun_evaluation(journal_or_default(journal), eval_id, blobs)
    if format is TextFormat.json:
        emit_json(dataclasses.asdict(r) | {"identical": r.identical})
    elif r.identical:
        out.print(f"[green]identical[/]: {r.eval_id} reproduced, {r.compared} values bit for bit")
    else:
        t = Table(title=f"{r.eval_id}: {len(r.differences)} of {r.compared} values differ")
        for col in ("what", "recorded", "now"):
            t.add_column(col)
        for d in r.differences:
            t.add_row(d["what"], _shown(d["recorded"]), _shown(d["now"]))
        out.print(t)
    if r.ran_with and format is not TextFormat.json:
        t = Table(title="ran with, unlike the record")
        for col in ("field", "recorded", "now", "can move"):
            t.add_column(col)
        for row in r.ran_with:
            t.add_row(row["field"], _shown(row["recorded"]), _shown(row["now"]), row["can_move"])
        out.print(t)
    if not r.identical:
        raise typer.Exit(1)
