"""`orch eval`: evaluation suites on one model, values with their sample counts and intervals.

Its settings are the manifest's eval section: one flag per field (manifest/schema.py EvalSpec,
`--drawbench`, `--categories`, `--per-prompt` for eval.drawbench's; `--geneval`, `--detector`,
`--colour-clip`, `--geneval-per-prompt`, `--geneval-tags`, `--geneval-max-prompts` for eval.geneval's),
derived from the fields with their defaults, help and bounds, and validated by the section. What a
manifest has no key for (the model, the blob store, the journal to record in) is written out below.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.table import Table

from ..eval.options import SECTION_SETTINGS
from ..manifest.schema import DrawBenchSpec, EvalSpec, GenEvalSpec
from ..manifest.suites import SUITE_TABLE
from .common import TextFormat, emit_json, err, out, section_flags

# eval settings with an older flag spelling, kept beside the derived one
OLDER_FLAGS = {"guidance_scale": ("--guidance",)}
DRAWBENCH = "drawbench_"  # prefix of the keywords the command gets for eval.drawbench's fields
GENEVAL = "geneval_"  # ... and for eval.geneval's
# eval.geneval's flags: its file is --geneval; the rest say whose they are where a bare name would be ambiguous
GENEVAL_FLAGS = {"metadata": ("--geneval",), "detector": ("--detector",), "clip": ("--colour-clip",),
                 "per_prompt": ("--geneval-per-prompt",), "tags": ("--geneval-tags",),
                 "max_prompts": ("--geneval-max-prompts",)}


def _flag(name: str) -> tuple[str, ...]:
    return ("--" + name.replace("_", "-"), *OLDER_FLAGS.get(name, ()))


def _drawbench_flag(name: str) -> tuple[str, ...]:
    return ("--drawbench",) if name == "file" else _flag(name)


def _geneval_flag(name: str) -> tuple[str, ...]:
    return GENEVAL_FLAGS[name]


SETTINGS = [*section_flags(EvalSpec, [*SECTION_SETTINGS, "world"], flag=_flag),
            *section_flags(DrawBenchSpec, list(DrawBenchSpec.model_fields), flag=_drawbench_flag,
                           param=lambda name: DRAWBENCH + name),
            *section_flags(GenEvalSpec, list(GenEvalSpec.model_fields), flag=_geneval_flag,
                           param=lambda name: GENEVAL + name)]
SUITES_HELP = "Comma-separated: " + "; ".join(f"{s.name} ({s.summary})" for s in SUITE_TABLE) + "."


def eval_(
    source: str = typer.Argument(None, help="The model: an exported model directory (its model_index.json names "
                                 "the variant), file:// or az:// URI, or a blob key with --blobs."),
    checkpoint: str = typer.Option(None, "--checkpoint", help="The same as SOURCE, e.g. a blob key "
                                   "(model prefix or trials/<id>/checkpoints/step-N.pt) with --blobs."),
    suite: str = typer.Option(..., "--suite", help=SUITES_HELP),
    blobs: str = typer.Option(None, "--blobs", help="Blob store holding the checkpoint, caches and tiny base."),
    base: str = typer.Option(None, "--base",
                             help="Base model of a step-N.pt checkpoint (default: the base it records)."),
    oracle_clip: str = typer.Option(None, "--oracle-clip", help="VCDM: the CLIP it is conditioned on (a manifest's "
                                    "eval.oracle takes model.vcdm.clip); fid/fid_clip also score the oracle arm "
                                    "(images from its embeddings of held-out real images)."),
    sheets: Path = typer.Option(None, "--sheets", help="Write the suites' files here: the DrawBench sheets (PNG), "
                                "GenEval's geneval-results.jsonl."),
    journal: str = typer.Option(None, "--journal",
                                help="Record the results in this journal (with --experiment, --trial, --step)."),
    experiment: str = typer.Option(None, "--experiment"),
    trial: str = typer.Option(None, "--trial"),
    step: int = typer.Option(None, "--step", min=0),
    format: TextFormat = typer.Option(TextFormat.text, "--format"),
    **settings: Any,
) -> None:
    """Run evaluation suites on a checkpoint; values with sample counts and 95% intervals.
    Recorded ones (--journal): `orch eval list`, `orch eval diff A B`, `orch eval rerun ID`."""
    from dataclasses import asdict

    from ..eval.inception import FIDWeightsError
    from ..eval.record import record_results
    from ..eval.suites import EvalOptions, MetricUnavailable, build_context, run_in_context
    from ..storage import open_store

    if (source is None) == (checkpoint is None):
        err.print("orch eval: name the model once, as SOURCE or --checkpoint", markup=False)
        raise typer.Exit(2)
    checkpoint = checkpoint or source
    if journal and not (experiment and trial and step is not None):
        err.print("orch eval: --journal needs --experiment, --trial and --step to record against", markup=False)
        raise typer.Exit(2)
    try:
        spec = _section(settings)
        ctx = build_context(checkpoint, store=open_store(blobs) if blobs else None, base=base,
                            options=EvalOptions.from_spec(spec, oracle_clip=oracle_clip))
        results = run_in_context(ctx, suite)
    except (MetricUnavailable, FIDWeightsError, FileNotFoundError, ValueError) as exc:
        err.print(f"orch eval: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if sheets is not None:
        for r in results:
            for name, data in r.artifacts.items():
                sheets.mkdir(parents=True, exist_ok=True)
                (sheets / name).write_bytes(data)
    if journal:
        from ..eval.receipt import make_receipt
        from ..eval.record import evaluation_id, evaluation_key
        from ..journal import open_journal

        options = asdict(ctx.options)
        with open_journal(journal) as j:
            stored = record_results(j, experiment, trial, step, results, weights=checkpoint, options=options,
                                    receipt=make_receipt(ctx, results))
        eid = evaluation_id(evaluation_key(experiment, trial, step, checkpoint, [r.suite for r in results], options))
        err.print(f"{'recorded' if stored else 'already recorded (kept the first)'}: evaluation {eid} of "
                  f"{checkpoint} for {trial} at step {step} in {journal}", markup=False, soft_wrap=True)
    if format is TextFormat.json:
        emit_json([r.to_json() for r in results])
        return
    table = Table(title=f"eval of {checkpoint}")
    for col in ("suite", "metric", "value", "95% CI", "std", "n"):
        table.add_column(col)
    for r in results:
        for m in r.metrics:
            ci = "" if m.ci_low is None else f"[{m.ci_low:.3f}, {m.ci_high:.3f}]"
            n = str(m.n) if m.n_reference is None else f"{m.n} vs {m.n_reference} real"
            table.add_row(r.suite, m.name, f"{m.value:.4f}", ci, "" if m.std is None else f"{m.std:.4f}", n)
    out.print(table)


def _section(settings: dict[str, Any]) -> EvalSpec:
    """The flags as an eval section, validated by it (files are checked when the suites open them:
    a flag may name a blob key)."""
    settings = {k: getattr(v, "value", v) for k, v in settings.items()}  # choices arrive as Enum members
    values = {k: v for k, v in settings.items() if not k.startswith((DRAWBENCH, GENEVAL))}
    drawbench = {k[len(DRAWBENCH):]: v for k, v in settings.items() if k.startswith(DRAWBENCH)}
    geneval = {k[len(GENEVAL):]: v for k, v in settings.items() if k.startswith(GENEVAL)}
    if drawbench["categories"] is not None:
        drawbench["categories"] = [c.strip() for c in drawbench["categories"].split(",") if c.strip()]
    if drawbench["file"] is not None:
        values["drawbench"] = drawbench
    elif any(v != DrawBenchSpec.model_fields[k].default for k, v in drawbench.items() if k != "file"):
        raise ValueError("--categories and --per-prompt are the drawbench suite's: they need --drawbench CSV")
    if geneval.get("tags") is not None:
        geneval["tags"] = [t.strip() for t in geneval["tags"].split(",") if t.strip()]
    if geneval.get("metadata") is not None:
        values["geneval"] = {k: v for k, v in geneval.items() if v is not None}
    elif any(v is not None and v != GenEvalSpec.model_fields[k].default for k, v in geneval.items()):
        raise ValueError("--detector, --colour-clip, --geneval-per-prompt, --geneval-tags and --geneval-max-prompts "
                         "are the geneval suite's: they need --geneval METADATA")
    try:
        return EvalSpec.model_validate(values, context={"check_files": False})
    except ValidationError as exc:
        raise ValueError("; ".join(f"{_flag_of(e['loc'])}: {e['msg']}" for e in exc.errors())) from None


def _flag_of(loc: tuple) -> str:
    """The flag a validation error's field came from."""
    if len(loc) > 1 and loc[0] == "geneval":
        return _geneval_flag(str(loc[1]))[0]
    name = str(loc[-1]) if len(loc) > 1 and loc[0] == "drawbench" else str(loc[0])
    return (_drawbench_flag if len(loc) > 1 and loc[0] == "drawbench" else _flag)(name)[0]


eval_.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [p for p in inspect.signature(eval_).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    + SETTINGS)


def register(app: typer.Typer) -> None:
    from . import eval_records as records

    group = typer.Typer(cls=records.EvalGroup, add_completion=False, help=eval_.__doc__)
    group.command(name=records.RUN, hidden=True)(eval_)
    group.command(name="list")(records.list_)
    group.command(name="diff")(records.diff)
    group.command(name="rerun")(records.rerun)
    app.add_typer(group, name="eval")
