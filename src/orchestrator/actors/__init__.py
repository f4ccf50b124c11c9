"""Ray actor runtime: thin actors that move work and state; the ML core does the work.

Only this package imports Ray. `api` holds the functions the CLI calls.
"""
from .api import cancel, ensure_base, results, resume, run_experiment, status, submit

__all__ = ["cancel", "ensure_base", "results", "resume", "run_experiment", "status", "submit"]
