"""McNemar's exact test between trials that differ only in one swept field, on the per-prompt
spatial outcomes of their final evaluation (`orch results --paired FIELD`).
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .render import format_field
from .table import field_values, swept_paths

if TYPE_CHECKING:
    from orchestrator.journal import Journal

PAIRED_METRICS = {"spatial.accuracy": ("spatial", "accuracy"),
                  "spatial.object_accuracy": ("spatial", "object_accuracy")}


@dataclass(frozen=True)
class PairedTest:
    """McNemar's exact test between two trials that differ only in `field`, judged on the same
    prompts with the same noise (the Evaluator's paired protocol)."""
    fields: dict[str, Any]   # what the two trials share (the other swept fields, the seed)
    field: str
    a: Any
    b: Any
    metric: str
    a_correct: int
    b_correct: int
    n: int
    only_a: int
    only_b: int
    p_value: float
    test: str = "McNemar exact, two-sided"
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


def _final_outcomes(journal: Journal, experiment_id: str, trial_id: str) -> dict[str, str] | None:
    events = [e for e in journal.events(experiment_id, trial_id, kinds=["evaluated"]) if e.payload.get("step")]
    if not events:
        return None
    last = max(events, key=lambda e: (e.payload["step"], e.seq or 0))
    return ((last.payload.get("info") or {}).get("spatial") or {}).get("outcomes")


def paired_tests(journal: Journal, experiment_id: str, field: str) -> list[PairedTest]:
    """Every pair of finished trials whose configs differ only in `field`, tested on each metric of
    PAIRED_METRICS at their final evaluation."""
    from itertools import combinations

    from orchestrator.eval.spatial import mcnemar
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
    tests = []
    for key, members in groups.items():
        for (va, ta), (vb, tb) in combinations(members, 2):
            oa, ob = _final_outcomes(journal, experiment_id, ta), _final_outcomes(journal, experiment_id, tb)
            if not oa or not ob:
                raise ValueError(f"trials {ta} and {tb} have no per-prompt spatial outcomes to pair "
                                 f"(the spatial suite records them)")
            for metric, (_, name) in PAIRED_METRICS.items():
                a = [c == "1" for c in oa[name]]
                b = [c == "1" for c in ob[name]]
                if len(a) != len(b):
                    raise ValueError(f"{ta} and {tb} were judged on {len(a)} and {len(b)} prompts: not paired")
                m = mcnemar(a, b)
                tests.append(PairedTest(json.loads(key), field, va, vb, metric, sum(a), sum(b), len(a),
                                        m["only_a"], m["only_b"], m["p_value"]))
    if not tests:
        raise ValueError(f"no two finished trials of {experiment_id} differ only in {field}")
    return [replace(t, p_holm=q) for t, q in zip(tests, holm([t.p_value for t in tests]))]


def render_paired(tests: list[PairedTest], width: int = 1000) -> str:
    from rich.console import Console
    from rich.table import Table

    field = tests[0].field
    t = Table(title=f"paired: {field} (same prompts and noise; p (Holm): adjusted over the {len(tests)} tests shown)")
    shared = list(tests[0].fields)
    for k in shared:
        t.add_column(k, no_wrap=True)
    for col in ("metric", "a", "b", "a correct", "b correct", "only a", "only b", "test", "p", "p (Holm)"):
        t.add_column(col, no_wrap=True, justify="left" if col in ("metric", "a", "b") else "right")
    for x in tests:
        t.add_row(*[format_field(x.fields[k]) for k in shared], x.metric, format_field(x.a), format_field(x.b),
                  f"{x.a_correct}/{x.n}", f"{x.b_correct}/{x.n}", str(x.only_a), str(x.only_b), x.test,
                  f"{x.p_value:.3g}", "" if x.p_holm is None else f"{x.p_holm:.3g}")
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(t)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"
