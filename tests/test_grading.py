"""Human evaluation's arithmetic and records: Cohen's kappa and the preference matrix against
hand-computed values, revisions of a grade (a re-submission replaces, never adds) on SQLite and
PostgreSQL, the blind order, task building (idempotent, seeded) and bad input."""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.eval.grading import agreement, cohen_kappa, experiment_tallies, preference_matrix, tally
from orchestrator.eval.grading_task import blind_order
from orchestrator.eval.stats import wilson_interval
from orchestrator.journal import Grade, InvalidEvent, JournalConflict, UnknownGradingTask, open_journal
from orchestrator.journal.grading import StaleGrade
from tests.grading_fixtures import finished_experiment

runner = CliRunner()


def test_cohen_kappa_by_hand():
    # po = 4/6, pa = pb = 1/2 -> pe = 1/2 -> kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert cohen_kappa([1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1]) == pytest.approx(1 / 3)
    # po = 3/4, pa = 3/4, pb = 1/2 -> pe = 3/8 + 1/8 = 1/2 -> kappa = 1/2
    assert cohen_kappa([1, 1, 1, 0], [1, 1, 0, 0]) == pytest.approx(0.5)
    assert cohen_kappa([1, 0, 1], [0, 1, 0]) == pytest.approx(-0.8)  # po 0, pe = 2/3*1/3*2 = 4/9
    assert cohen_kappa([1, 1], [1, 1]) is None  # chance agreement 1: undefined, not 1
    assert cohen_kappa([], []) is None


def test_preference_matrix_by_hand():
    m = preference_matrix(["x", "y", "z"], [["x", "y", "z"], ["y", "x", "z"], ["x", "z", "y"]])
    assert m == [[None, pytest.approx(2 / 3), 1.0],
                 [pytest.approx(1 / 3), None, pytest.approx(2 / 3)],
                 [0.0, pytest.approx(1 / 3), None]]
    assert preference_matrix(["x", "y"], []) == [[None, None], [None, None]]


def G(grader, item, match, ranking):
    return Grade("gtask", grader, item, 1, match, ranking)


def test_tally_rows_and_agreement():
    grades = [G("al", 0, {"a": True, "b": True}, ["b", "a"]), G("al", 1, {"a": False, "b": True}, ["b", "a"]),
              G("al", 2, {"a": False, "b": False}, ["a", "b"]), G("bo", 0, {"a": True, "b": False}, ["b", "a"]),
              G("bo", 1, {"a": False, "b": True}, ["b", "a"]), G("bo", 2, {"a": True, "b": False}, ["a", "b"]),
              G("cy", 5, {"a": True, "b": True}, ["a", "b"])]  # an item no one else graded: no pair
    t = tally("gtask", ["a", "b"], grades)
    assert t.graders == ["al", "bo", "cy"]
    a, b = t.rows
    assert (a["model"], a["n"], a["match_rate"], a["mean_rank"]) == ("a", 7, 4 / 7, pytest.approx(11 / 7))
    assert (a["ci_low"], a["ci_high"]) == pytest.approx(wilson_interval(4, 7))
    assert (b["n"], b["match_rate"], b["mean_rank"]) == (7, 4 / 7, pytest.approx(10 / 7))
    assert t.preference == [[None, pytest.approx(3 / 7)], [pytest.approx(4 / 7), None]]
    # al vs bo over items 0..2, units item x model: [1,1,0,1,0,0] vs [1,0,0,1,1,0] -> kappa 1/3
    assert t.kappa == pytest.approx(1 / 3)
    agree = agreement(["a", "b"], grades)
    assert (agree.items, agree.labels, agree.pairs) == (3, 6, 1)


def test_blind_order_is_stable_and_differs_between_graders():
    orders = {g: [tuple(blind_order("gabc", g, i, 4)) for i in range(30)] for g in ("al", "bo")}
    assert orders["al"] == [tuple(blind_order("gabc", "al", i, 4)) for i in range(30)]
    assert orders["al"] != orders["bo"]
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders["al"])
    assert len(set(orders["al"])) > 5  # shuffled, not one fixed order


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_resubmission_replaces_and_revisions_are_checked(backend, tmp_path, request):
    url = f"sqlite:///{tmp_path}/j.db" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    with open_journal(url) as j:
        task = f"g{backend[:6]}{tmp_path.name[-5:]}"
        assert j.register_grading_task(task, ["e1"], {"models": ["a", "b"], "items": [{}, {}]})
        assert not j.register_grading_task(task, ["e1"], {"models": ["a", "b"], "items": [{}, {}]})
        with pytest.raises(JournalConflict):
            j.register_grading_task(task, ["e1"], {"models": ["b", "a"], "items": []})
        first = Grade(task, "al", 0, 0, {"a": True, "b": False}, ["a", "b"])
        assert j.record_grade(first, 0) == (1, True)  # replaces 0: there was no grade
        assert j.record_grade(first, 0) == (1, False)  # the same request again (answer lost): a no-op
        assert j.record_grade(first, 1) == (1, False)  # re-submitted unchanged: a no-op
        changed = Grade(task, "al", 0, 0, {"a": False, "b": False}, ["b", "a"])
        with pytest.raises(StaleGrade) as stale:
            j.record_grade(changed, 0)  # a page showing no grade while revision 1 exists: never an overwrite
        assert stale.value.current == 1 and "revision 1, not 0" in str(stale.value)
        with pytest.raises(StaleGrade) as ahead:
            j.record_grade(changed, 5)  # a revision that never was
        assert ahead.value.current == 1
        with pytest.raises(InvalidEvent):
            j.record_grade(changed, -1)
        assert j.record_grade(changed, 1) == (2, True)
        j.record_grade(Grade(task, "bo", 0, 0, {"a": True, "b": True}, ["a", "b"]), 0)
        latest = j.grades(task)
        assert [(g.grader, g.revision, g.match["a"]) for g in latest] == [("al", 2, False), ("bo", 1, True)]
        assert [g.grader for g in j.grades(task, "bo")] == ["bo"]
        assert j.grading_task_ids("e1")[-1] == task and task not in j.grading_task_ids("e2")
        with pytest.raises(UnknownGradingTask):
            j.grades("gnope")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_writers_of_one_revision_exactly_one_wins(backend, tmp_path, request):
    """Eight writers (separate journals: separate connection pools) that all saw revision 1 send
    different grades at once: one becomes revision 2, the seven others are told revision 2 exists."""
    url = f"sqlite:///{tmp_path}/j.db" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    task = f"gc{backend[:5]}{tmp_path.name[-5:]}"
    with open_journal(url) as j:
        j.register_grading_task(task, ["e1"], {"models": ["a", "b", "c"], "items": [{}]})
        j.record_grade(Grade(task, "al", 0, 0, {"a": True, "b": True, "c": True}, ["a", "b", "c"]), 0)
    journals = [open_journal(url) for _ in range(8)]
    start = threading.Barrier(len(journals))

    def write(k):
        start.wait()
        try:
            # eight grades unlike each other and revision 1 (an identical one is a retry or an unchanged
            # re-submission: a no-op, not a conflict)
            return journals[k].record_grade(Grade(task, "al", 0, 0, {"a": bool(k & 1), "b": bool(k & 2), "c": False},
                                                  ["a", "b", "c"] if k & 4 else ["b", "a", "c"]), 1)
        except StaleGrade as exc:
            return exc.current
    try:
        with ThreadPoolExecutor(len(journals)) as pool:
            outcomes = list(pool.map(write, range(len(journals))))
    finally:
        for j in journals:
            j.close()
    assert sorted(map(str, outcomes)) == ["(2, True)"] + ["2"] * 7, outcomes
    with open_journal(url) as j:
        assert [g.revision for g in j.grades(task)] == [2]


def test_build_is_idempotent_and_seeded_and_bad_input_exits_2(tmp_path, torch_one_thread):
    import io

    import numpy as np
    from PIL import Image

    from orchestrator.storage import open_store

    url, blobs, eid, tid = finished_experiment(tmp_path / "exp")
    args = ["grade", "build", eid, "--shapes", "2", "--samples", "2", "--steps", "2", "--journal", url,
            "--format", "json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["created"] and doc["items"] == 4 and doc["models"] == ["base", tid]
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and json.loads(again.stdout) == {**doc, "created": False}
    with open_journal(url) as j:
        task = j.grading_task(doc["task_id"])
        assert [t.task_id for t in experiment_tallies(j, eid)] == [doc["task_id"]]
        assert experiment_tallies(j, "e000000000000") == []
    store = open_store(blobs)
    pix = {m: np.asarray(Image.open(io.BytesIO(store.get(task["items"][0]["images"][m])))) for m in task["models"]}
    assert pix["base"].shape == (32, 32, 3) and not np.array_equal(pix["base"], pix[tid])
    assert task["items"][0]["prompt"] == task["items"][1]["prompt"] and task["items"][1]["sample"] == 1
    # seeded: the images deleted and built again are the same bytes
    before = {k: store.get(k) for k in store.list(f"grading/{doc['task_id']}/")}
    for k in before:
        store.delete(k)
    with open_journal(url) as j:
        from orchestrator.app.grading import choose_models
        from orchestrator.eval.grading_task import Generation, build_task, shapes_prompts, task_content

        models, _ = choose_models(j, [eid], None)
        content = task_content(models, shapes_prompts(2), {"source": "shapes-heldout", "n": 2},
                               Generation(samples=2, steps=2))
        assert build_task(content, models, store, blobs) == task
    assert {k: store.get(k) for k in before} == before

    def bad(*extra, needle):
        r = runner.invoke(app, ["grade", *extra, "--journal", url])
        assert r.exit_code == 2, (extra, r.stdout, r.stderr)
        assert needle in r.stderr, r.stderr

    bad("build", "e000000000000", "--shapes", "2", needle="no experiment 'e000000000000'")
    bad("build", eid, "--trial", "tnope", "--shapes", "2", needle="no trial tnope")
    bad("build", eid, needle="give the prompts")
    csv = tmp_path / "drawbench.csv"
    csv.write_text("Prompts,Category\nthree red circles,Counting\na cat on a mat,Colors\n")
    bad("build", eid, "--drawbench", str(csv), "--category", "Positional", needle="Positional")
    bad("results", "gnope000000", needle="no grading task 'gnope000000'")
    bad("serve", "gnope000000", "--grader", "al", needle="no grading task 'gnope000000'")
    bad("serve", doc["task_id"], needle="nobody could grade")  # no --grader, no --tokens: no one may grade
    bad("serve", doc["task_id"], "--grader", "al/../x", needle="a grader name is 1-64 letters")


def test_a_task_over_two_experiments_and_chosen_trials(tmp_path, torch_one_thread):
    url, _, e1, t1 = finished_experiment(tmp_path)
    _, _, e2, t2 = finished_experiment(tmp_path, name="grading-fixture-2", lr=3e-4, seed=8)
    both = runner.invoke(app, ["grade", "build", e1, e2, "--shapes", "1", "--steps", "1", "--journal", url,
                               "--format", "json"])
    assert both.exit_code == 0, both.stderr
    doc = json.loads(both.stdout)
    assert doc["models"] == ["base", t1, t2]  # one base: both trials start from the same one
    one = runner.invoke(app, ["grade", "build", e1, e2, "--trial", t2, "--shapes", "1", "--steps", "1",
                              "--journal", url, "--format", "json"])
    assert json.loads(one.stdout)["models"] == ["base", t2]
    csv = tmp_path / "drawbench.csv"  # the default categories: the seed paper's Counting + Positional
    csv.write_text('Prompt,Category\nthree red circles,Counting\na cat on a mat,Colors\n'
                   '"a blue square left of\na red circle",Positional\n')
    drawn = runner.invoke(app, ["grade", "build", e1, "--drawbench", str(csv), "--steps", "1", "--journal", url,
                                "--format", "json"])
    assert drawn.exit_code == 0, drawn.stderr
    with open_journal(url) as j:
        items = j.grading_task(json.loads(drawn.stdout)["task_id"])["items"]
        assert [(i["prompt"], i["category"]) for i in items] == [
            ("three red circles", "Counting"), ("a blue square left of\na red circle", "Positional")]
    with open_journal(url) as j:
        assert [t.task_id for t in experiment_tallies(j, e2)] == [doc["task_id"], json.loads(one.stdout)["task_id"]]
        assert [t.task_id for t in experiment_tallies(j, e1)] == [doc["task_id"], json.loads(drawn.stdout)["task_id"]]
