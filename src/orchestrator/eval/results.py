"""What a suite returns: metric values with their sample counts and intervals, flattened for the journal."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

# info["outcomes"] of a suite: {metric name: per-sample results in the suite's fixed sample order}, a
# "0"/"1" string for pass/fail metrics, a list of floats for continuous per-sample scores. Two models
# judged on the same samples (prompts and noise) pair up by position: results/paired.py tests them.
OUTCOMES = "outcomes"


def bits(flags: Sequence[bool]) -> str:
    """Per-sample pass/fail as a "0"/"1" string (compact in the journal)."""
    return "".join("1" if f else "0" for f in flags)


class MetricUnavailable(RuntimeError):
    """A requested metric cannot be computed as configured (and is not silently skipped)."""


@dataclass(frozen=True)
class MetricValue:
    name: str
    value: float
    n: int                        # samples the value is computed from
    ci_low: float | None = None   # 95% interval; None where none is defined (FID)
    ci_high: float | None = None
    std: float | None = None      # spread over chunks or resamplings, where the protocol reports one
    n_reference: int | None = None  # real images compared against, where there are (FID, KID)


@dataclass
class SuiteResult:
    suite: str
    metrics: list[MetricValue]
    info: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    # Files for people (DrawBench sheets), name -> PNG bytes: stored by whoever holds the blob store
    # (store_artifacts), never in the journal itself.
    artifacts: dict[str, bytes] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"suite": self.suite, "metrics": [asdict(m) for m in self.metrics], "info": self.info,
                "wall_s": self.wall_s}


def store_artifacts(store: Any, prefix: str, results: Sequence[SuiteResult]) -> dict[str, dict[str, str]]:
    """Put each result's artifacts at `<prefix>-<name>` (prefix: where the evaluation's sample grid
    goes, less its `.png`) and record the keys in the suite's info under "artifacts"."""
    keys: dict[str, dict[str, str]] = {}
    for r in results:
        for name, data in r.artifacts.items():
            key = f"{prefix}-{name}"
            store.put(key, data)
            keys.setdefault(r.suite, {})[name] = key
        if r.suite in keys:
            r.info["artifacts"] = keys[r.suite]
    return keys


def flatten_metrics(results: Sequence[SuiteResult]) -> dict[str, float]:
    """{"<suite>.<metric>": value, "<...>.n": n, ".ci_low", ".ci_high", ".std", ".n_reference"}: the
    numbers the `evaluated` event carries (a metric named like its suite is just "<suite>", e.g. "fid")."""
    out: dict[str, float] = {}
    for r in results:
        for m in r.metrics:
            key = r.suite if m.name == r.suite else f"{r.suite}.{m.name}"
            out[key] = float(m.value)
            out[f"{key}.n"] = int(m.n)
            for suffix in ("ci_low", "ci_high", "std", "n_reference"):
                v = getattr(m, suffix)
                if v is not None:
                    out[f"{key}.{suffix}"] = int(v) if suffix == "n_reference" else float(v)
    return out


def jsonable(info: dict[str, Any]) -> dict[str, Any]:
    """Strict JSON for the journal: NaN/inf become None, other odd values their str()."""
    def conv(v: Any) -> Any:
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, (np.integer, np.floating)):
            return conv(v.item())
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if v is None or isinstance(v, (str, int, float, bool)):
            return v
        return str(v) if not isinstance(v, Path) else v.as_posix()
    return conv(info)
