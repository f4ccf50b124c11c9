"""Paired tests between trials that differ only in one swept field (`orch results --paired FIELD`),
on what their final evaluations recorded per sample: both trials were judged on the same prompts
with the same noise, so sample i of one pairs with sample i of the other.

- Pass/fail outcomes (every suite's info["outcomes"] "0"/"1" strings: spatial, CLIP-R-Precision,
  DrawBench, Winoground, matching): McNemar's exact test.
- Continuous per-sample scores (info["outcomes"] lists of floats): a paired sign-flip permutation
  test on the per-sample differences.
- FID and KID (set-level distances): a paired bootstrap over the sample indices, from the
  generated features each evaluation kept in the blob store.

Holm's adjustment runs over every test the table shows.
"""
from __future__ import annotations

import fnmatch
import io
import json
from dataclasses import dataclass, replace
from itertools import combinations
from typing import TYPE_CHECKING, Any, Callable

from .render import format_field
from .table import field_values, swept_paths

if TYPE_CHECKING:
    from orchestrator.journal import Journal

MCNEMAR = "McNemar exact, two-sided"
# The set-level suites whose paired test reads kept features: suite -> its metrics (metric name in
# the table -> which distance).
FEATURE_SUITES = {"fid": {"fid": "fid", "fid.kid": "kid"}, "fid_clip": {"fid_clip": "fid", "fid_clip.kid": "kid"}}


@dataclass(frozen=True)
class PairedTest:
    """One metric compared between two trials that differ only in `field`, judged on the same
    prompts with the same noise (the Evaluator's paired protocol)."""
    fields: dict[str, Any]   # what the two trials share (the other swept fields, the seed)
    field: str
    a: Any
    b: Any
    metric: str
    n: int                   # paired samples
    a_value: float           # the metric on each side: a pass rate, a mean score, a distance
    b_value: float
    p_value: float
    test: str
    # McNemar: the passes on each side and the discordant samples
    a_correct: int | None = None
    b_correct: int | None = None
    only_a: int | None = None
    only_b: int | None = None
    # Permutation and bootstrap: a 95% interval of b - a
    ci_low: float | None = None
    ci_high: float | None = None
    # Holm's step-down adjustment over every test of the table (all pairs and metrics), which
    # controls the family-wise error rate; equal to p_value when only one test is made.
    p_holm: float | None = None


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order: the i-th smallest of m is multiplied by
    (m - i + 1), capped at 1, and kept monotone (never below an adjusted smaller one)."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda k: p_values[k])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _final_info(journal: Journal, experiment_id: str, trial_id: str) -> dict[str, Any] | None:
    """The per-suite info of the trial's final evaluation (the highest step; its latest record)."""
    events = [e for e in journal.events(experiment_id, trial_id, kinds=["evaluated"]) if e.payload.get("step")]
    if not events:
        return None
    last = max(events, key=lambda e: (e.payload["step"], e.seq or 0))
    return last.payload.get("info") or {}


def _metric_name(suite: str, name: str) -> str:
    return suite if name == suite else f"{suite}.{name}"


def _selected(metric: str, patterns: list[str] | None) -> bool:
    """As the table's columns: the given globs, else the headline metrics (no per-tag breakdowns)."""
    if patterns is None:
        return "/" not in metric
    return any(fnmatch.fnmatchcase(metric, p) for p in patterns)


class _Pairing:
    """The tests between two trials' final evaluations."""

    def __init__(self, shared: dict[str, Any], field: str, a: tuple[Any, str, dict], b: tuple[Any, str, dict],
                 features: Callable[[str], Any]):
        self.shared, self.field, self.features = shared, field, features
        (self.va, self.ta, self.ia), (self.vb, self.tb, self.ib) = a, b

    def _make(self, metric: str, n: int, a_value: float, b_value: float, p: float, test: str, **extra: Any):
        return PairedTest(self.shared, self.field, self.va, self.vb, metric, n, a_value, b_value, p, test, **extra)

    def tests(self, patterns: list[str] | None, resamples: int, seed: int) -> list[PairedTest]:
        from orchestrator.eval.results import OUTCOMES

        out = []
        for suite in [s for s in self.ia if s in self.ib]:
            oa, ob = self.ia[suite].get(OUTCOMES) or {}, self.ib[suite].get(OUTCOMES) or {}
            for name in [k for k in oa if k in ob]:
                metric = _metric_name(suite, name)
                if _selected(metric, patterns):
                    out.append(self._per_sample(metric, oa[name], ob[name], resamples, seed))
            for metric, which in FEATURE_SUITES.get(suite, {}).items():
                if _selected(metric, patterns):
                    out.append(self._distance(suite, metric, which, resamples, seed))
        return out

    def _per_sample(self, metric: str, a: Any, b: Any, resamples: int, seed: int) -> PairedTest:
        if len(a) != len(b):
            raise ValueError(f"{metric}: trials {self.ta} and {self.tb} were judged on {len(a)} and {len(b)} "
                             f"samples: not paired")
        if isinstance(a, str) and isinstance(b, str):
            from orchestrator.eval.stats import mcnemar

            fa, fb = [c == "1" for c in a], [c == "1" for c in b]
            m = mcnemar(fa, fb)
            n = len(fa)
            return self._make(metric, n, sum(fa) / n if n else 0.0, sum(fb) / n if n else 0.0, m["p_value"], MCNEMAR,
                              a_correct=sum(fa), b_correct=sum(fb), only_a=m["only_a"], only_b=m["only_b"])
        from orchestrator.eval.paired_bootstrap import paired_permutation

        r = paired_permutation(a, b, resamples=resamples, seed=seed)
        return self._make(metric, len(a), r.a, r.b, r.p_value, r.test, ci_low=r.ci_low, ci_high=r.ci_high)

    def _distance(self, suite: str, metric: str, which: str, resamples: int, seed: int) -> PairedTest:
        from orchestrator.eval.fid import features_in, load_reference
        from orchestrator.eval.paired_bootstrap import paired_fid_bootstrap, paired_kid_bootstrap

        sa, sb = self.ia[suite], self.ib[suite]
        for key in ("reference", "weights_sha256", "clip_sha256"):
            if sa.get(key) != sb.get(key):
                raise ValueError(f"{metric}: trials {self.ta} and {self.tb} were scored with different {key} "
                                 f"({sa.get(key)} vs {sb.get(key)}): not paired")
        store = self.features(metric)
        xs = []
        for trial, info in ((self.ta, sa), (self.tb, sb)):
            key = (info.get("artifacts") or {}).get(info.get("features", ""))
            if key is None:
                raise ValueError(f"{metric}: trial {trial}'s evaluation kept no "
                                 f"generated features (evaluated before they were kept): re-evaluate it to pair")
            xs.append(features_in(store.get(key)))
        if len(xs[0]) != len(xs[1]):
            raise ValueError(f"{metric}: {len(xs[0])} and {len(xs[1])} generated images: not paired")
        ref, ref_x = load_reference(sa["reference"], store)
        if which == "fid":
            r = paired_fid_bootstrap(xs[0], xs[1], ref, resamples=resamples, seed=seed)
        else:
            if ref_x is None:
                raise ValueError(f"{metric}: the reference {sa['reference']} holds no features for KID")
            r = paired_kid_bootstrap(xs[0], xs[1], ref_x, resamples=resamples, seed=seed)
        return self._make(metric, len(xs[0]), r.a, r.b, r.p_value, r.test, ci_low=r.ci_low, ci_high=r.ci_high)


def paired_tests(journal: Journal, experiment_id: str, field: str, metrics: list[str] | None = None,
                 *, resamples: int = 1000, seed: int = 0, store: Any = None) -> list[PairedTest]:
    """Every pair of finished trials whose configs differ only in `field`, tested on every metric
    both final evaluations recorded per sample (or kept features for), that `metrics` (globs, as the
    table's) selects: by default the headline metrics. `store`: where kept features are read
    (default: the experiment's blob store, as its plan was journaled), needed for FID and KID only."""
    from orchestrator.journal import TrialStatus

    state = journal.experiment_state(experiment_id)
    swept = swept_paths(state)
    if field not in swept:
        raise ValueError(f"{field} is not swept in experiment {experiment_id}; swept: {', '.join(swept) or 'nothing'}")
    others = [k for k in swept if k != field]
    groups: dict[str, list[tuple[Any, str]]] = {}
    for trial in state.trials.values():
        if trial.status is not TrialStatus.DONE:
            continue
        config = trial.config or {}
        key = json.dumps(field_values(config, others), sort_keys=True, default=str)
        groups.setdefault(key, []).append((field_values(config, [field])[field], trial.trial_id))
    opened: list[Any] = [store]

    def features_store(metric: str) -> Any:
        if opened[0] is None:
            from orchestrator.experiment.plan import recorded_plan
            from orchestrator.storage import open_store

            try:
                opened[0] = open_store(recorded_plan(journal, experiment_id).blobs_uri)
            except (LookupError, ValueError, OSError) as exc:
                raise ValueError(f"{metric}: the kept features are in the experiment's blob store, which cannot "
                                 f"be opened: {exc}") from None
        return opened[0]

    tests: list[PairedTest] = []
    for key, members in groups.items():
        for (va, ta), (vb, tb) in combinations(members, 2):
            ia, ib = _final_info(journal, experiment_id, ta), _final_info(journal, experiment_id, tb)
            if not ia or not ib:
                raise ValueError(f"trials {ta} and {tb} have no final evaluation to pair")
            found = _Pairing(json.loads(key), field, (va, ta, ia), (vb, tb, ib), features_store).tests(
                metrics, resamples, seed)
            if not found:
                raise ValueError(f"trials {ta} and {tb} share no per-sample outcomes or kept features to pair"
                                 + (f" among the metrics {', '.join(metrics)}" if metrics else ""))
            tests += found
    if not tests:
        raise ValueError(f"no two finished trials of {experiment_id} differ only in {field}")
    return [replace(t, p_holm=q) for t, q in zip(tests, holm([t.p_value for t in tests]))]


def _result(t: PairedTest, side: str) -> str:
    if t.test == MCNEMAR:
        return f"{getattr(t, f'{side}_correct')}/{t.n}"
    return f"{getattr(t, f'{side}_value'):.4g}"


def _difference(t: PairedTest) -> str:
    if t.ci_low is None:
        return f"{t.only_a} / {t.only_b}"
    return f"{t.b_value - t.a_value:+.4g} [{t.ci_low:+.4g}, {t.ci_high:+.4g}]"


def render_paired(tests: list[PairedTest], width: int = 1000) -> str:
    from rich.console import Console
    from rich.table import Table

    field = tests[0].field
    t = Table(title=f"paired: {field} (same prompts and noise; p (Holm): adjusted over the {len(tests)} tests shown)")
    shared = list(tests[0].fields)
    for k in shared:
        t.add_column(k, no_wrap=True)
    columns = ("metric", "a", "b", "a result", "b result", "only a / only b, or b - a [95% CI]", "test", "p",
               "p (Holm)")
    for col in columns:
        t.add_column(col, no_wrap=True, justify="left" if col in ("metric", "a", "b", "test") else "right")
    for x in tests:
        t.add_row(*[format_field(x.fields[k]) for k in shared], x.metric, format_field(x.a), format_field(x.b),
                  _result(x, "a"), _result(x, "b"), _difference(x), x.test, f"{x.p_value:.3g}",
                  "" if x.p_holm is None else f"{x.p_holm:.3g}")
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(t)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"
