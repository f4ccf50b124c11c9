"""An experiment as it runs: its checked plan, which travels by value (`plan`), the run's writes to
the journal (`journaling`), early stopping (`early_stop`) and shared-cluster admission
(`admission`). Ray-free: the actors, the app and the HTTP head share it.

The plan's names are imported on first use: a trainer process needs `admission` alone, not the
manifest and model catalogue the plan loads.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.lazy import lazy_exports

__all__ = ["SweepPlan", "plan_sweep", "recorded_plan"]
__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, ".plan"))


if TYPE_CHECKING:
    from .plan import SweepPlan, plan_sweep, recorded_plan
