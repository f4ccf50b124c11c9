"""The Grafana dashboards, as code: sweep overview, trial detail, evaluation, storage & journal.

`python -m orchestrator.telemetry.generate infra` writes them to infra/grafana/dashboards/; a test
checks the committed JSON is what this module renders, and runs every query against a real
Prometheus scraping a real `orch run`.
"""
from __future__ import annotations

from .panels import Dashboard, Panel, Target, Variable

EXP = 'experiment=~"$experiment"'
TRIAL = f'{EXP},trial=~"$trial"'
RATE = "$__rate_interval"
EXPERIMENT = Variable("experiment", "label_values(orch_sweep_trials, experiment)")
TRIALS = Variable("trial", 'label_values(orch_train_steps_total{experiment=~"$experiment"}, trial)')


def _quantiles(metric: str, selector: str, by: str = "") -> tuple[Target, ...]:
    group = f"le{', ' + by if by else ''}"
    prefix = f"{{{{{by}}}}} " if by else ""
    return tuple(Target(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
                        f"{prefix}p{int(q * 100)}") for q in (0.5, 0.9, 0.99))


SWEEP = Dashboard("orch-sweep", "orch · sweep overview", variables=(EXPERIMENT,), panels=(
    Panel("Progress (done or stopped / total)", (
        Target(f'sum(orch_trials{{{EXP},state=~"done|stopped"}}) / sum(orch_sweep_trials{{{EXP}}})', "ended"),),
        unit="percentunit", kind="stat", width=6),
    Panel("Trials in the sweep", (Target(f"sum(orch_sweep_trials{{{EXP}}})", "trials"),), kind="stat", width=6),
    Panel("Queue depth", (Target(f"sum(orch_queue_depth{{{EXP}}})", "queued"),), kind="stat", width=6),
    Panel("Failed trials", (Target(f"sum(orch_trial_failures_total{{{EXP}}})", "failures"),), kind="stat", width=6),
    Panel("Trials by state", (Target(f"sum by (state) (orch_trials{{{EXP}}})", "{{state}}"),), width=12),
    Panel("Trial starts, finishes, failures, retries, early stops", (
        Target(f"sum(orch_trial_starts_total{{{EXP}}})", "starts"),
        Target(f"sum(orch_trial_finishes_total{{{EXP}}})", "finishes"),
        Target(f"sum(orch_trial_failures_total{{{EXP}}})", "failures"),
        Target(f"sum(orch_trial_retries_total{{{EXP}}})", "retries"),
        Target(f"sum(orch_trial_stops_total{{{EXP}}})", "early stops")), width=12),
    Panel("Training throughput (all trials)", (
        Target(f"sum by (experiment) (rate(orch_train_samples_total{{{EXP}}}[{RATE}]))", "{{experiment}}"),),
        unit="short", width=12, description="Examples per second."),
    Panel("Steps per trial", (Target(f"max by (trial) (orch_train_steps_total{{{EXP}}})", "{{trial}}"),), width=12),
))

TRIAL_DETAIL = Dashboard("orch-trial", "orch · trial detail", variables=(EXPERIMENT, TRIALS), panels=(
    Panel("Loss", (Target(f"orch_train_loss{{{TRIAL}}}", "{{trial}}"),), width=12),
    Panel("Learning rate", (Target(f"orch_train_learning_rate{{{TRIAL}}}", "{{trial}}"),), width=12),
    Panel("Samples / s", (Target(f"orch_train_samples_per_second{{{TRIAL}}}", "{{trial}}"),
                          Target(f"sum by (trial) (rate(orch_train_samples_total{{{TRIAL}}}[{RATE}]))",
                                 "{{trial}} (from the counter)")), width=12),
    Panel("Step time quantiles", _quantiles("orch_train_step_seconds", TRIAL, "trial"), unit="s", width=12),
    Panel("Data wait (share of step time)", (
        Target(f"sum by (trial) (rate(orch_train_data_wait_seconds_total{{{TRIAL}}}[{RATE}])) / "
               f"sum by (trial) (rate(orch_train_step_seconds_sum{{{TRIAL}}}[{RATE}]))", "{{trial}}"),),
        unit="percentunit", width=12),
    Panel("Gradient norm", (Target(f"orch_train_grad_norm{{{TRIAL}}}", "{{trial}}"),), width=12),
    Panel("Checkpoint save time", (Target(
        f"max by (trial) (orch_checkpoint_save_seconds_sum{{{TRIAL}}} / orch_checkpoint_save_seconds_count{{{TRIAL}}})",
        "{{trial}} mean"),), unit="s", width=8),
    Panel("Checkpoint bytes written", (Target(f"max by (trial) (orch_checkpoint_written_bytes_total{{{TRIAL}}})",
                                              "{{trial}}"),), unit="bytes", width=8),
    Panel("Checkpoint failures and restarts", (
        Target(f"sum by (trial) (orch_checkpoint_failures_total{{{TRIAL}}})", "{{trial}} checkpoint failures"),
        Target(f"sum by (trial) (orch_train_restarts_total{{{TRIAL}}})", "{{trial}} restarts")), width=8),
    Panel("Memory", (
        Target(f"orch_train_resident_memory_bytes{{{TRIAL}}}", "{{trial}} process RSS"),
        Target(f"orch_cuda_memory_allocated_bytes{{{TRIAL}}}", "{{trial}} CUDA allocated", needs="cuda"),
        Target(f"orch_cuda_memory_reserved_bytes{{{TRIAL}}}", "{{trial}} CUDA reserved", needs="cuda")),
        unit="bytes", width=12),
    Panel("GPU utilisation", (Target(f"orch_gpu_utilization_ratio{{{TRIAL}}}", "{{trial}}", needs="cuda"),),
          unit="percentunit", width=12),
))

EVALUATION = Dashboard("orch-eval", "orch · evaluation", variables=(EXPERIMENT,), panels=(
    Panel("Metrics over the run, per trial (checkpoints, then the final model)", (
        Target(f'orch_eval_metric{{{EXP},weights=~"checkpoint|final"}}', "{{trial}} {{suite}}.{{metric}}"),),
        width=24, height=10),
    Panel("Base, per trial", (Target(f'orch_eval_metric{{{EXP},weights="base"}}',
                                     "{{trial}} {{suite}}.{{metric}}"),), kind="bargauge", width=12),
    Panel("Final model, per trial", (Target(f'orch_eval_metric{{{EXP},weights="final"}}',
                                            "{{trial}} {{suite}}.{{metric}}"),), kind="bargauge", width=12),
    Panel("Final minus base", (Target(
        f'orch_eval_metric{{{EXP},weights="final"}} - ignoring (weights) orch_eval_metric{{{EXP},weights="base"}}',
        "{{trial}} {{suite}}.{{metric}}"),), kind="bargauge", width=12),
    Panel("Evaluation time per suite (mean)", (Target(
        f"max by (suite) (orch_eval_seconds_sum{{{EXP}}} / orch_eval_seconds_count{{{EXP}}})", "{{suite}}"),),
        unit="s", width=6),
    Panel("Evaluation failures", (Target(f"sum(orch_eval_failures_total{{{EXP}}})", "failures"),),
          kind="stat", width=6),
))

STORAGE = Dashboard("orch-storage", "orch · storage & journal", panels=(
    Panel("Blob bytes in / out", (
        Target(f"sum by (backend) (rate(orch_blob_written_bytes_total[{RATE}]))", "{{backend}} written"),
        Target(f"sum by (backend) (rate(orch_blob_read_bytes_total[{RATE}]))", "{{backend}} read")),
        unit="Bps", width=12),
    Panel("Blob operations", (Target(f"sum by (backend, op) (rate(orch_blob_operations_total[{RATE}]))",
                                     "{{backend}} {{op}}"),), unit="ops", width=12),
    Panel("Blob retries", (Target(f"sum(rate(orch_blob_retries_total[{RATE}]))", "retries/s"),), width=8),
    Panel("Blob integrity errors", (Target("sum(orch_blob_integrity_errors_total)", "errors"),), kind="stat", width=8),
    Panel("Journal appends", (Target(f"sum by (backend) (rate(orch_journal_appends_total[{RATE}]))", "{{backend}}"),),
          unit="ops", width=8),
    Panel("Journal append latency", _quantiles("orch_journal_append_seconds", "", "backend"), unit="s", width=24),
))

DASHBOARDS = (SWEEP, TRIAL_DETAIL, EVALUATION, STORAGE)
