"""Tallies of a human evaluation (Lin & Srikanth's DrawBench protocol): per model, the rate
of "matches the prompt" with a 95% Wilson interval and the mean quality rank; the pairwise
preference matrix; Cohen's kappa between graders on the match labels.

Pure arithmetic over the latest grade of each (grader, item) — the journal keeps revisions and
hands over only the newest (journal/grading.py), so a re-submitted grade counts once.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Iterable, Sequence

from .stats import wilson_interval


@dataclass
class GradingTally:
    task_id: str
    models: list[str]
    rows: list[dict]                        # model, n, match_rate, ci_low, ci_high, mean_rank
    preference: list[list[float | None]]    # [i][j]: fraction of grades ranking model i above model j
    kappa: float | None                     # Cohen's kappa on match labels (mean over grader pairs)
    graders: list[str]


@dataclass(frozen=True)
class Agreement:
    """Cohen's kappa over the (item, model) match labels of items two graders both graded."""
    kappa: float | None
    items: int    # items graded by both (summed over grader pairs)
    labels: int   # yes/no labels compared
    pairs: int    # grader pairs with at least one item in common


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float | None:
    """Cohen's kappa of two raters' yes/no labels of the same units; None when undefined (no
    units, or chance agreement 1: both raters gave one and the same label to everything)."""
    if len(a) != len(b):
        raise ValueError(f"kappa needs paired labels, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return None
    po = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return None if pe == 1 else (po - pe) / (1 - pe)


def preference_matrix(models: Sequence[str], rankings: Iterable[Sequence[str]]) -> list[list[float | None]]:
    """[i][j] = fraction of rankings that put models[i] above models[j] (None on the diagonal and
    where no ranking holds both)."""
    above = [[0] * len(models) for _ in models]
    both = [[0] * len(models) for _ in models]
    index = {m: i for i, m in enumerate(models)}
    for ranking in rankings:
        pos = {m: r for r, m in enumerate(ranking) if m in index}
        for mi, mj in combinations(pos, 2):
            i, j = index[mi], index[mj]
            both[i][j] += 1
            both[j][i] += 1
            if pos[mi] < pos[mj]:
                above[i][j] += 1
            else:
                above[j][i] += 1
    return [[None if i == j or not both[i][j] else above[i][j] / both[i][j] for j in range(len(models))]
            for i in range(len(models))]


def agreement(models: Sequence[str], grades: Iterable[Any]) -> Agreement:
    """Kappa per pair of graders over the items both graded (units: item × model); with more than
    two graders, the mean over pairs (Light's kappa)."""
    by_grader: dict[str, dict[int, dict[str, bool]]] = defaultdict(dict)
    for g in grades:
        by_grader[g.grader][g.item] = g.match
    kappas, items, labels, pairs = [], 0, 0, 0
    for ga, gb in combinations(sorted(by_grader), 2):
        common = sorted(set(by_grader[ga]) & set(by_grader[gb]))
        if not common:
            continue
        a = [bool(by_grader[ga][i][m]) for i in common for m in models]
        b = [bool(by_grader[gb][i][m]) for i in common for m in models]
        pairs, items, labels = pairs + 1, items + len(common), labels + len(a)
        k = cohen_kappa(a, b)
        if k is not None:
            kappas.append(k)
    return Agreement(sum(kappas) / len(kappas) if kappas else None, items, labels, pairs)


def tally(task_id: str, models: Sequence[str], grades: Sequence[Any]) -> GradingTally:
    """`grades`: the newest grade of each (grader, item): `.grader`, `.item`, `.match` {model:
    bool}, `.ranking` [models, best first]."""
    rows = []
    for m in models:
        labels = [bool(g.match[m]) for g in grades if m in g.match]
        ranks = [g.ranking.index(m) + 1 for g in grades if m in g.ranking]
        lo, hi = wilson_interval(sum(labels), len(labels))
        rows.append({"model": m, "n": len(labels), "match_rate": sum(labels) / len(labels) if labels else None,
                     "ci_low": lo if labels else None, "ci_high": hi if labels else None,
                     "mean_rank": sum(ranks) / len(ranks) if ranks else None})
    return GradingTally(task_id, list(models), rows, preference_matrix(models, [g.ranking for g in grades]),
                        agreement(models, grades).kappa, sorted({g.grader for g in grades}))


def task_tally(journal: Any, task_id: str) -> GradingTally:
    return tally(task_id, journal.grading_task(task_id)["models"], journal.grades(task_id))


def experiment_tallies(journal: Any, experiment_id: str) -> list[GradingTally]:
    """One tally per grading task with a model from `experiment_id`, oldest task first; [] if none."""
    return [task_tally(journal, t) for t in journal.grading_task_ids(experiment_id)]
