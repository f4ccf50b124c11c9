"""An experiment as it runs: its checked plan, which travels by value (`plan`), and the run's
writes to the journal (`journaling`). Ray-free: the actors, the app and the HTTP head share it."""
from .plan import SweepPlan, plan_sweep, recorded_plan

__all__ = ["SweepPlan", "plan_sweep", "recorded_plan"]
