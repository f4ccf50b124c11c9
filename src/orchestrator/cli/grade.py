"""`orch grade`: human evaluation (build a grading task, serve its page, make links, tally)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from ..results import ResultsFormat
from .common import JOURNAL_HELP, TextFormat, emit_json, err, journal_or_default, out, run_errors

group = typer.Typer(help="Human evaluation: build a grading task, serve its page, tally the grades.",
                    no_args_is_help=True)


@group.command("build")
def grade_build(
    experiment: list[str] = typer.Argument(..., help="Experiment id(s) whose models to compare."),
    trial: list[str] = typer.Option([], "--trial", help="A finished trial whose final model to include "
                                    "(repeatable; default: every finished trial). The base is always included."),
    drawbench: Path = typer.Option(None, "--drawbench", help="DrawBench CSV (Prompts/Prompt, Category)."),
    category: list[str] = typer.Option([], "--category", help="DrawBench categories (repeatable; default: "
                                       "Counting and Positional, as Lin & Srikanth's)."),
    shapes: int = typer.Option(None, "--shapes", min=1, help="Instead of DrawBench: N held-out shapes-world "
                               "spatial prompts."),
    samples: int = typer.Option(1, "--samples", "-k", min=1, help="Images per prompt per model."),
    seed: int = typer.Option(1234, "--seed", min=0, help="The noise every model starts from."),
    steps: int = typer.Option(25, "--steps", min=1),
    guidance: float = typer.Option(3.0, "--guidance", min=0.0),
    resolution: int = typer.Option(None, "--resolution", min=8, help="Default: each model's own."),
    blobs: str = typer.Option(None, "--blobs", help="Where the images go (default: the first experiment's store)."),
    device: str = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    journal: str = typer.Option(None, "--journal", help=JOURNAL_HELP),
    format: TextFormat = typer.Option(TextFormat.text, "--format"),
) -> None:
    """Generate every model's images for the prompts (same noise for all) and journal the task.
    The same task again is found, not rebuilt."""
    from ..app.grading import build
    from ..eval.grading_task import Generation

    gen = Generation(samples=samples, seed=seed, steps=steps, guidance_scale=guidance, resolution=resolution)
    with run_errors("grade build"):
        doc, created = build(journal_or_default(journal), experiment, trial_ids=trial or None,
                             drawbench=drawbench, categories=category or None, shapes=shapes, generation=gen,
                             blobs=blobs, device=device, progress=lambda line: err.print(line, markup=False))
    summary = {"task_id": doc["task_id"], "created": created, "items": len(doc["items"]), "models": doc["models"],
               "blobs": doc["blobs"]}
    if format is TextFormat.json:
        emit_json(summary)
    else:
        out.print(f"grading task {doc['task_id']} ({'built' if created else 'already built'}): "
                  f"{len(doc['items'])} items x {len(doc['models'])} models ({', '.join(doc['models'])})",
                  markup=False, soft_wrap=True)


@group.command("serve")
def grade_serve(
    task: str = typer.Argument(..., help="Grading task id."),
    journal: str = typer.Option(None, "--journal", help=JOURNAL_HELP),
    blobs: str = typer.Option(None, "--blobs", help="Blob store holding the images (default: the task's)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8471, "--port", min=0, max=65535),
    tokens: Path = typer.Option(None, "--tokens", help="Bearer tokens file (as orch serve): a line "
                                "`TOKEN graders=NAME,...` grades as those graders."),
    grader: list[str] = typer.Option([], "--grader", help="Make a fresh token that grades as this grader only "
                                     "(kept in memory while serving) and print its link (repeatable)."),
) -> None:
    """Serve one task's grading page on its own (a laptop: uvicorn, the SQLite journal) until Ctrl-C."""
    import secrets

    from ..api.auth import TokenError, TokenSource, grader_tokens, mint
    from ..api.grading import create_grading_app, grading_link
    from ..journal import open_journal

    url = journal_or_default(journal)
    with run_errors("grade serve"):
        if not grader and tokens is None:  # $ORCH_API_TOKENS' tokens grade as nobody
            raise TokenError("nobody could grade: give --grader NAME (a link each) or --tokens FILE with "
                             "`TOKEN graders=NAME` lines")
        links = mint(grader, lambda: secrets.token_urlsafe(24))
        with open_journal(url, create=False) as j:
            j.grading_task(task)  # an unknown task is exit 2 before anything listens
        source = TokenSource(tokens, extra=grader_tokens(links))
        store = None
        if blobs:
            from ..storage import open_store

            store = open_store(blobs)
        app_ = create_grading_app(url, source, store)
    for name, token in links.items():
        out.print(grading_link(f"http://{host}:{port}", task, name, token), markup=False, soft_wrap=True)
    if not links:
        out.print(grading_link(f"http://{host}:{port}", task, "NAME", f"<a token of {tokens} with graders=NAME>"),
                  markup=False, soft_wrap=True)
    from ..api.server import run_http

    run_http(app_, host, port, log_level="warning")  # the head's deadlines and security headers


@group.command("link")
def grade_link(
    task: str = typer.Argument(..., help="Grading task id."),
    grader: list[str] = typer.Option(..., "--grader", help="A grader to make a link for (repeatable)."),
    tokens: Path = typer.Option(..., "--tokens", help="The head's tokens file (orch serve --tokens): a line "
                                "`TOKEN graders=NAME` is appended per grader; delete it to revoke."),
    url: str = typer.Option("http://127.0.0.1:8470", "--url", help="The head's address as graders reach it."),
) -> None:
    """Grading links for `orch serve`: a fresh token per grader that grades as that grader only. The head
    re-reads its tokens file on each request, so the links work at once."""
    import secrets

    from ..api.auth import TokenError, mint, parse_tokens
    from ..api.grading import grading_link

    with run_errors("grade link"):
        links = mint(grader, lambda: secrets.token_urlsafe(24))
        try:
            fd = os.open(tokens, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)  # a new file: the owner's only
        except OSError as exc:
            raise TokenError(f"cannot open the tokens file {tokens}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "r+b") as f:
            text = f.read().decode("utf-8", errors="replace")
            parse_tokens(text, str(tokens))  # a broken file is not appended to
            lines = "".join(f"{token} graders={name}  # grading task {task}\n" for name, token in links.items())
            f.write((("\n" if text and not text.endswith("\n") else "") + lines).encode())
    for name, token in links.items():
        out.print(grading_link(url.rstrip("/"), task, name, token), markup=False, soft_wrap=True)


@group.command("results")
def grade_results(
    task: str = typer.Argument(..., help="Grading task id."),
    journal: str = typer.Option(None, "--journal", help=JOURNAL_HELP),
    format: ResultsFormat = typer.Option(ResultsFormat.table, "--format"),
) -> None:
    """Per model: match rate (95% Wilson interval), mean rank, n; the preference matrix; Cohen's kappa."""
    from ..app.grading import results_text
    from ..journal import open_journal

    with run_errors("grade results"):
        with open_journal(journal_or_default(journal), create=False) as j:
            text = results_text(j, task, format.value)
    sys.stdout.write(text)
