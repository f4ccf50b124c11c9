"""The results table from a real (SQLite) journal: seeds grouped as mean ± std, a single trial's own
95% interval, sample counts in headers, values resting on no samples left out, metric selection."""
from __future__ import annotations

import json

import pytest

from orchestrator.journal import Event, open_journal
from orchestrator.results import build_table, render_csv, render_json, render_table, select_metrics, split_metrics


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


def test_paired_mcnemar_between_trials_that_differ_in_one_field(tmp_path):
    """Trials that share everything but the compared field pair up (seed by seed, lr by lr); the
    test runs on the per-prompt outcomes the spatial suite journals, with hand-counted discordants."""
    from orchestrator.eval.stats import mcnemar
    from orchestrator.results import paired_tests, render_paired

    outcomes = {  # (captions, lr) -> accuracy bits over 10 prompts
        ("generic", 1): "1100000000", ("spatial", 1): "1111110000",
        ("generic", 2): "1010101010", ("spatial", 2): "1010101010",
    }
    with open_journal(f"sqlite:///{tmp_path / 'j.db'}") as j:
        j.register_experiment("e2", "unit", "{}")
        ids = {k: f"t{i}" for i, k in enumerate(outcomes)}
        j.register_trials("e2", {ids[k]: {"data": {"captions": k[0]}, "train": {"lr": k[1]}} for k in outcomes})
        for key, bits in outcomes.items():
            tid = ids[key]
            for i, kind in enumerate(["queued", "running", "evaluating"]):
                j.append(Event.for_trial("e2", tid, kind, f"{tid}-{i}"))
            info = {"spatial": {"outcomes": {"accuracy": bits, "object_accuracy": "1" * 10}}}
            j.append(Event.for_trial("e2", tid, "evaluated", f"{tid}-final", step=20, metrics={"spatial.accuracy": 0.1},
                                     info=info))
            j.append(Event.for_trial("e2", tid, "done", f"{tid}-done"))
        tests = paired_tests(j, "e2", "data.captions")
        with pytest.raises(ValueError, match="train.seed is not swept"):
            paired_tests(j, "e2", "train.seed")
    acc = {t.fields["train.lr"]: t for t in tests if t.metric == "spatial.accuracy"}
    assert (acc[1].a, acc[1].b, acc[1].a_correct, acc[1].b_correct, acc[1].only_a, acc[1].only_b) == \
        ("generic", "spatial", 2, 6, 0, 4)
    assert acc[1].p_value == pytest.approx(mcnemar([True] * 2 + [False] * 8, [True] * 6 + [False] * 4)["p_value"])
    assert acc[1].p_value == pytest.approx(0.125)  # 4 discordant, all one way: 2 * 0.5**4
    assert acc[2].only_a == acc[2].only_b == 0 and acc[2].p_value == 1.0
    assert {t.metric for t in tests} == {"spatial.accuracy", "spatial.object_accuracy"}
    # Holm over the table's 4 tests: 0.125 is the smallest, times 4; the three 1.0s stay 1
    assert acc[1].p_holm == pytest.approx(0.5) and acc[2].p_holm == 1.0
    assert all(t.test == "McNemar exact, two-sided" for t in tests)
    text = render_paired(tests)
    assert "McNemar" in text and "6/10" in text and "0.125" in text and "p (Holm)" in text and "0.5" in text


def test_holm_adjustment_by_hand():
    from orchestrator.results.paired import holm

    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone: 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.2]) == [0.2] and holm([0.6, 0.7]) == [1.0, 1.0] and holm([]) == []


def test_a_sweep_over_variants_shows_only_what_differs_within_each(tmp_path):
    """sd and sd3 trials carry their own options sections: `model.sd.*` is compared among the sd
    trials only, so the variant's defaults are not columns; what differs within a variant still is."""
    from orchestrator.results.table import swept_paths

    def config(variant: str, captions: str, options: dict) -> dict:
        return {"model": {"variant": variant, "base": f"assets/{variant}", variant: options},
                "data": {"train": {"captions": captions}}}

    configs = {"t1": config("sd", "generic", {"caption_dropout": 0.0, "lora": None}),
               "t2": config("sd", "spatial", {"caption_dropout": 0.0, "lora": {"rank": 4}}),
               "t3": config("sd3", "generic", {"train_text_encoders": True}),
               "t4": config("sd3", "spatial", {"train_text_encoders": True})}
    with open_journal(f"sqlite:///{tmp_path / 'j.db'}") as j:
        j.register_experiment("e3", "unit", "{}")
        j.register_trials("e3", configs)
        swept = swept_paths(j.experiment_state("e3"))
    assert sorted(swept) == ["data.train.captions", "model.base", "model.sd.lora", "model.sd.lora.rank",
                             "model.variant"]


def test_paired_tests_cover_every_recorded_metric_with_the_test_that_fits(tmp_path):
    """Pass/fail outcomes of any suite get McNemar, per-sample scores the permutation test, FID and
    KID the paired bootstrap from the features each evaluation kept in the blob store; per-tag
    breakdowns only when selected; a pair scored against different references is refused."""
    import numpy as np

    from orchestrator.eval.fid import features_to_bytes
    from orchestrator.results import paired_tests, render_paired
    from orchestrator.storage import LocalBlobStore

    store = LocalBlobStore(tmp_path / "blobs", fsync=False)
    rng = np.random.default_rng(0)
    ref_x = rng.standard_normal((60, 8))
    store.put("cache/ref.npz", features_to_bytes(ref_x))
    base = rng.standard_normal((40, 8))
    sides = {"generic": (base, "0" * 30 + "1" * 10, [1.0] * 40),
             "spatial": (base + 3.0, "1" * 40, [2.0 + 0.01 * i for i in range(40)])}

    def info(captions: str, reference: str = "cache/ref.npz") -> dict:
        feats, bits, scores = sides[captions]
        key = f"experiments/e4/grids/{captions}-final-fid-features.npz"
        store.put(key, features_to_bytes(feats))
        return {"clip_r_precision": {"outcomes": {"r_at_1": bits}},
                "winoground": {"outcomes": {"group": bits, "group/Relation": bits[:20]}},
                "scorer": {"outcomes": {"score": scores}},
                "fid": {"reference": reference, "weights_sha256": "w", "features": "fid-features.npz",
                        "artifacts": {"fid-features.npz": key}}}

    with open_journal(f"sqlite:///{tmp_path / 'j.db'}") as j:
        j.register_experiment("e4", "unit", "{}")
        j.register_trials("e4", {f"t-{c}": {"data": {"captions": c}} for c in sides})
        for c in sides:
            for i, kind in enumerate(["queued", "running", "evaluating"]):
                j.append(Event.for_trial("e4", f"t-{c}", kind, f"{c}-{i}"))
            j.append(Event.for_trial("e4", f"t-{c}", "evaluated", f"{c}-final", step=10, metrics={}, info=info(c)))
            j.append(Event.for_trial("e4", f"t-{c}", "done", f"{c}-done"))
        tests = {t.metric: t for t in paired_tests(j, "e4", "data.captions", store=store, resamples=200)}
        tagged = paired_tests(j, "e4", "data.captions", ["winoground.*"], store=store)
        j.append(Event.for_trial("e4", "t-spatial", "evaluated", "spatial-later", step=20, metrics={},
                                 info=info("spatial", reference="cache/other.npz")))
        with pytest.raises(ValueError, match="different reference"):
            paired_tests(j, "e4", "data.captions", ["fid"], store=store)
    assert set(tests) == {"clip_r_precision.r_at_1", "winoground.group", "scorer.score", "fid", "fid.kid"}
    rp = tests["clip_r_precision.r_at_1"]
    assert rp.test.startswith("McNemar") and (rp.a_correct, rp.b_correct, rp.only_a, rp.only_b) == (10, 40, 0, 30)
    score = tests["scorer.score"]
    assert score.test.startswith("paired sign-flip") and score.p_value < 0.01 and score.ci_low > 0
    assert (score.a_value, score.b_value) == (1.0, pytest.approx(2.195))
    fid = tests["fid"]
    assert fid.test.startswith("paired bootstrap") and fid.b_value > fid.a_value and fid.ci_low > 0
    assert fid.p_value == pytest.approx(2 / 201) and tests["fid.kid"].p_value == pytest.approx(2 / 201)
    assert sorted(t.metric for t in tagged) == ["winoground.group", "winoground.group/Relation"]
    text = render_paired(list(tests.values()))
    assert "10/40" in text and "sign-flip" in text and "bootstrap" in text and "+" in text
