"""`orch`: the command line. Thin: parses arguments, calls the library, renders the result.

One module per command group; this file builds `app` from them, in the order `orch --help` lists:

    manifest.py     validate, plan
    experiments.py  run, submit, status, results, report, cancel, resume
    train.py        train, pretrain, sample
    eval.py         eval (running suites); eval_records.py: eval list, diff, rerun
    serve.py        serve (the head's HTTP API)
    data.py, journal.py, blobs.py, grade.py, clip.py, metrics.py   the groups of the same names
    common.py       consoles, formats, errors as exit codes, the local-or-HTTP backend choice

Exit codes: 0 success, 2 bad input (with file, field path and line), 3 another live run owns the
experiment (`run`/`resume`: nothing done; `--wait` waits for it), 1 anything else.
Human output goes through Rich; `--format json` prints one JSON document on stdout.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from local paths or blobs, never a hub
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our own Rich progress is the one to read

import typer  # noqa: E402

from . import blobs, clip, data, experiments, grade, journal, manifest, metrics, serve, train  # noqa: E402
from . import eval as evaluation  # noqa: E402

app = typer.Typer(
    name="orch",
    help="Finetune and evaluate text-to-image diffusion models on compositional reasoning, "
    "from one CPU to a Ray cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for commands in (manifest, experiments, train, evaluation, serve):
    commands.register(app)
for name, group in (("data", data.group), ("journal", journal.group), ("blobs", blobs.group),
                    ("grade", grade.group), ("clip", clip.group), ("metrics", metrics.group)):
    app.add_typer(group, name=name)


def main() -> None:  # pragma: no cover - console entry point
    app()


__all__ = ["app", "main"]
