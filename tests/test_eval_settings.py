"""Evaluation settings have one home, the manifest's eval section: the suites' options take its
names and defaults, the Evaluator actor and `orch eval` both build their options from it, and the
suite names come from one table."""
from __future__ import annotations

import textwrap
from dataclasses import fields

import pytest
import typer
from typer.testing import CliRunner

import orchestrator.models  # noqa: F401  (the variant catalog)
from orchestrator.actors.evaluator import eval_options
from orchestrator.cli import app
from orchestrator.cli.eval import _section
from orchestrator.eval.options import SECTION_SETTINGS, EvalOptions
from orchestrator.eval.suites import REGISTRY, get_suite
from orchestrator.manifest import load_manifest
from orchestrator.manifest.schema import DrawBenchSpec, EvalSpec, GenEvalSpec
from orchestrator.manifest.suites import SUITE_TABLE, SUITES

# The eval fields that are not suite options: when and what to evaluate (the coordinator's), and
# the oracle switch (it takes the model's own CLIP: model.vcdm.clip).
SCHEDULING = {"suites", "every", "evaluate_base", "oracle"}
MAPPED = {"world", "drawbench", "geneval"}  # from_spec maps these (unset world: mixed; the sections' fields)

runner = CliRunner()


def test_every_eval_field_is_a_suite_option_or_declared_otherwise():
    """A field added to the eval section flows to the suites (same name in EvalOptions) or is
    declared here as scheduling: it cannot be defined twice or silently dropped."""
    section = set(EvalSpec.model_fields)
    assert section == set(SECTION_SETTINGS) | SCHEDULING | MAPPED
    options = {f.name: f for f in fields(EvalOptions)}
    for name in SECTION_SETTINGS:  # one default each
        assert options[name].default == EvalSpec.model_fields[name].default, name
    assert options["drawbench_per_prompt"].default == DrawBenchSpec.model_fields["per_prompt"].default
    for name in ("clip", "per_prompt", "tags", "max_prompts"):
        assert options[f"geneval_{name}"].default == GenEvalSpec.model_fields[name].default, name


def test_orch_eval_flags_are_the_section_fields_with_their_defaults():
    command = typer.main.get_command(app).commands["eval"].commands["run"]  # `orch eval SOURCE ...`
    by_param = {p.name: p for p in command.params}
    for name in (*SECTION_SETTINGS, "world"):
        p = by_param[name]
        assert "--" + name.replace("_", "-") in p.opts
        default = EvalSpec.model_fields[name].default
        assert getattr(p.default, "value", p.default) == default, name
    assert by_param["drawbench_file"].opts == ["--drawbench"]
    assert by_param["drawbench_per_prompt"].default == DrawBenchSpec.model_fields["per_prompt"].default
    assert [by_param[f"geneval_{n}"].opts for n in GenEvalSpec.model_fields] == [
        ["--geneval"], ["--detector"], ["--colour-clip"], ["--geneval-per-prompt"], ["--geneval-tags"],
        ["--geneval-max-prompts"]]
    assert by_param["geneval_per_prompt"].default == GenEvalSpec.model_fields["per_prompt"].default
    flags = [o for p in command.params for o in p.opts]
    assert len(flags) == len(set(flags))  # no two settings share a flag
    assert "--guidance" in by_param["guidance_scale"].opts  # the older spelling still works


def test_a_manifest_and_the_flags_with_the_same_settings_give_the_same_options(tmp_path):
    (tmp_path / "clip").mkdir()
    (tmp_path / "bench.csv").write_text("Prompt,Category\na red circle,Colors\n")
    (tmp_path / "meta.jsonl").write_text('{"tag": "colors", "include": [{"class": "cup", "count": 1}], '
                                         '"prompt": "a cup"}\n')
    settings = dict(samples=12, seed=7, sampler="ddpm", steps=3, guidance_scale=2.0, batch_size=8, best_of=2,
                    kid_subsets=5, reference_resamples=0, reference_scenes="all", consistency_embeddings=3,
                    consistency_images=2, world="pairs")
    lines = "".join(f"{k}: {v}\n" for k, v in settings.items())
    path = tmp_path / "m.yaml"
    path.write_text("name: unit\nmodel: {variant: sd, resolution: 32}\ndata:\n  train: {kind: shapes, n: 10}\n"
                    "eval:\n" + textwrap.indent(
                        lines + f"clip: {tmp_path / 'clip'}\n"
                        f"drawbench: {{file: {tmp_path / 'bench.csv'}, categories: [Colors], per_prompt: 3}}\n"
                        f"geneval: {{metadata: {tmp_path / 'meta.jsonl'}, detector: {tmp_path / 'clip'}, "
                        f"per_prompt: 2, tags: [colors, counting], max_prompts: 7}}\n", "  "))
    loaded = load_manifest(path)
    from_manifest = eval_options(loaded.manifest, loaded.base_dir)
    flags = {**settings, "clip": str(tmp_path / "clip"), "drawbench_file": str(tmp_path / "bench.csv"),
             "drawbench_categories": "Colors", "drawbench_per_prompt": 3,
             "geneval_metadata": str(tmp_path / "meta.jsonl"), "geneval_detector": str(tmp_path / "clip"),
             "geneval_clip": None, "geneval_per_prompt": 2,
             "geneval_tags": "colors, counting", "geneval_max_prompts": 7}
    from_flags = EvalOptions.from_spec(_section(flags))
    for name in (*SECTION_SETTINGS, "world", "drawbench", "drawbench_categories", "drawbench_per_prompt", "geneval",
                 "geneval_detector", "geneval_clip", "geneval_per_prompt", "geneval_tags", "geneval_max_prompts"):
        assert getattr(from_manifest, name) == getattr(from_flags, name), name
    assert from_manifest.batch_size == 8  # the Evaluator honours eval.batch_size (it used to fix 64)


def test_orch_eval_refuses_bad_settings_naming_the_flag(tmp_path):
    bad_world = runner.invoke(app, ["eval", str(tmp_path), "--suite", "spatial", "--world", "triples"])
    assert bad_world.exit_code == 2 and "--world" in bad_world.output
    stray = runner.invoke(app, ["eval", str(tmp_path), "--suite", "spatial", "--categories", "Counting"])
    assert stray.exit_code == 2 and "--drawbench" in stray.stderr
    bad_per_prompt = runner.invoke(app, ["eval", str(tmp_path), "--suite", "spatial", "--per-prompt", "65"])
    assert bad_per_prompt.exit_code == 2 and "--per-prompt" in bad_per_prompt.output
    stray = runner.invoke(app, ["eval", str(tmp_path), "--suite", "spatial", "--geneval-tags", "colors"])
    assert stray.exit_code == 2 and "--geneval METADATA" in stray.stderr
    no_detector = runner.invoke(app, ["eval", str(tmp_path), "--suite", "geneval", "--geneval", "meta.jsonl"])
    assert no_detector.exit_code == 2 and "--detector: Field required" in no_detector.stderr
    bad_tag = runner.invoke(app, ["eval", str(tmp_path), "--suite", "geneval", "--geneval", "m.jsonl", "--detector",
                                  "shapes", "--geneval-tags", "colours"])
    assert bad_tag.exit_code == 2 and "--geneval-tags" in bad_tag.stderr


def test_suite_names_live_in_one_table():
    assert SUITES == tuple(e.name for e in SUITE_TABLE)
    assert set(REGISTRY) == set(SUITES)
    for name in SUITES:  # each row names a class that runs under that name
        assert get_suite(name).name == name
    with pytest.raises(ValueError, match="known suites: spatial"):
        get_suite("bleu")
    from orchestrator.models.registry import get_variant
    from orchestrator.models.spec import VariantSpec

    sd = get_variant("sd")
    with pytest.raises(ValueError, match="unknown suite.*'bleu'"):
        VariantSpec(**{**{f.name: getattr(sd, f.name) for f in fields(VariantSpec)}, "suites": ("spatial", "bleu")})
