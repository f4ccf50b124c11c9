"""The results table from a real (SQLite) journal: seeds grouped as mean ± std, a single trial's own
95% interval, sample counts in headers, values resting on no samples left out, metric selection."""
from __future__ import annotations

import json

import pytest

from orchestrator.actors.results import build_table, render_csv, render_json, render_table, select_metrics, split_metrics
from orchestrator.journal import Event, open_journal


def metrics(acc: float, n: int, cond_n: int) -> dict[str, float]:
    return {"spatial.accuracy": acc, "spatial.accuracy.n": n, "spatial.accuracy.ci_low": acc - 0.05,
            "spatial.accuracy.ci_high": acc + 0.05, "spatial.conditional_accuracy": 0.0,
            "spatial.conditional_accuracy.n": cond_n, "winoground.group/Relation": 0.5,
            "winoground.group/Relation.n": 64}


@pytest.fixture
def journal(tmp_path):
    with open_journal(f"sqlite:///{tmp_path / 'j.db'}") as j:
        j.register_experiment("e1", "unit", "{}")
        trials = {"ta": ("generic", 0, 0.10), "tb": ("generic", 1, 0.30), "tc": ("spatial", 0, 0.40)}
        j.register_trials("e1", {t: {"data": {"captions": c}, "train": {"seed": s}} for t, (c, s, _) in trials.items()})
        for tid, (_, _, acc) in trials.items():
            for i, kind in enumerate(["queued", "running", "evaluating"]):
                j.append(Event.for_trial("e1", tid, kind, f"{tid}-{i}"))
            j.append(Event.for_trial("e1", tid, "evaluated", f"{tid}-base", step=0, metrics=metrics(0.0, 100, 0)))
            j.append(Event.for_trial("e1", tid, "evaluated", f"{tid}-final", step=50, metrics=metrics(acc, 100, 20)))
            j.append(Event.for_trial("e1", tid, "done", f"{tid}-done", final_loss=0.5))
        yield j


def test_split_metrics_keeps_a_metric_named_like_an_aux_suffix():
    parts = split_metrics({"fid": 3.0, "fid.n": 10, "x.std": 0.5})
    assert parts == {"fid": {"value": 3.0, "n": 10}, "x.std": {"value": 0.5}}  # no "x": x.std is a metric


def test_seeds_group_and_single_trials_show_their_interval(journal):
    table = build_table(journal, "e1")
    assert table.swept == ["data.captions"]  # the seed groups rows, it is not a column
    generic, spatial = table.rows
    mean, std, n = generic.cell("spatial.accuracy (final)")
    assert (mean, std, n) == (pytest.approx(0.2), pytest.approx(0.02 ** 0.5), 2)  # stdev of 0.1 and 0.3
    assert spatial.interval("spatial.accuracy (final)") == pytest.approx((0.35, 0.45))
    assert generic.cell("spatial.conditional_accuracy (base)") is None  # n=0: no value, not 0.0
    text = render_table(select_metrics(table, None))
    assert "spatial.accuracy (final) n=100" in text and "0.200 ± 0.141" in text and "0.400 [0.350, 0.450]" in text
    assert "winoground" not in text  # per-tag columns stay out of the table...
    record = json.loads(render_json(table))["rows"][0]["winoground.group/Relation (final)"]
    assert record["mean"] == 0.5 and record["per_trial"][0]["n"] == 64  # ...and are in JSON
    assert "spatial.accuracy (final) samples" in render_csv(table).splitlines()[0]


def test_metric_globs_select_columns_and_a_miss_is_an_error(journal):
    table = select_metrics(build_table(journal, "e1"), ["spatial.acc*"])
    assert table.metrics == ["spatial.accuracy (base)", "spatial.accuracy (final)"]
    with pytest.raises(ValueError, match="no metric matches fid"):
        select_metrics(build_table(journal, "e1"), ["fid"])
