"""Every metric `orch` exports: name, type, help, labels (the one list the sink, the exporter's help
text, the dashboards and the alert rules read).

Names follow Prometheus' conventions: `orch_` prefix, base units (`_seconds`, `_bytes`), `_total`
on counters. Labels are bounded: an experiment, its trials, a variant, a suite and its metric
names, or a small fixed set (state, op, backend, weights) — never a step or a free string.
"""
from __future__ import annotations

from dataclasses import dataclass

TRIAL = ("experiment", "trial", "variant")
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SLOW_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str                    # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


METRICS = [
    # coordinator
    Metric("orch_trials", "gauge", "Trials of the experiment by state.", ("experiment", "state")),
    Metric("orch_sweep_trials", "gauge", "Trials in the experiment's sweep.", ("experiment",)),
    Metric("orch_queue_depth", "gauge", "Trials waiting for a trainer slot.", ("experiment",)),
    Metric("orch_trial_starts_total", "counter", "Trainer launches.", ("experiment",)),
    Metric("orch_trial_finishes_total", "counter", "Trials that reached done.", ("experiment",)),
    Metric("orch_trial_failures_total", "counter", "Trials journaled as failed.", ("experiment",)),
    Metric("orch_trial_retries_total", "counter", "Launches of a trial that had started before.", ("experiment",)),
    Metric("orch_trial_stops_total", "counter", "Trials stopped early at a rung (sweep.early_stop).", ("experiment",)),
    # trainer
    Metric("orch_train_steps_total", "counter", "Optimiser steps completed.", TRIAL),
    Metric("orch_train_samples_total", "counter", "Training examples consumed (batch size x accumulation per step).",
           TRIAL),
    Metric("orch_train_step_seconds", "histogram", "Wall time of one optimiser step.", TRIAL, STEP_BUCKETS),
    Metric("orch_train_data_wait_seconds_total", "counter",
           "Time the loop spent drawing the next batch (objectives that decode lazily count it in step time).", TRIAL),
    Metric("orch_train_loss", "gauge", "Latest training loss (mean over the step's micro-batches).", TRIAL),
    Metric("orch_train_learning_rate", "gauge", "Latest learning rate.", TRIAL),
    Metric("orch_train_grad_norm", "gauge", "Latest gradient norm before clipping (set when grad_clip is on).", TRIAL),
    Metric("orch_train_samples_per_second", "gauge", "Training throughput over the last reporting interval.", TRIAL),
    Metric("orch_train_last_step_timestamp_seconds", "gauge", "Unix time of the latest completed step.", TRIAL),
    Metric("orch_train_active", "gauge", "1 while a trainer runs the trial's loop, 0 once it returned.", TRIAL),
    Metric("orch_train_restarts_total", "counter", "Trainer processes restarted after dying.", TRIAL),
    Metric("orch_train_resident_memory_bytes", "gauge", "Resident memory of the trainer process.", TRIAL),
    Metric("orch_cuda_memory_allocated_bytes", "gauge", "CUDA memory held by tensors (torch).", TRIAL),
    Metric("orch_cuda_memory_reserved_bytes", "gauge", "CUDA memory reserved by torch's caching allocator.", TRIAL),
    Metric("orch_gpu_utilization_ratio", "gauge", "GPU busy share over the last sample period (NVML, 0-1).", TRIAL),
    Metric("orch_checkpoint_save_seconds", "histogram", "Time to serialise and store one checkpoint.", TRIAL,
           SLOW_BUCKETS),
    Metric("orch_checkpoint_written_bytes_total", "counter", "Checkpoint bytes stored.", TRIAL),
    Metric("orch_checkpoint_failures_total", "counter", "Checkpoint saves that raised.", TRIAL),
    # evaluator
    Metric("orch_eval_seconds", "histogram", "Wall time of one suite on one set of weights.",
           ("experiment", "suite"), SLOW_BUCKETS),
    Metric("orch_eval_metric", "gauge", "Latest value of each evaluated metric (weights: base, checkpoint, final).",
           ("experiment", "trial", "suite", "metric", "weights")),
    Metric("orch_eval_failures_total", "counter", "Evaluations that raised.", ("experiment",)),
    # journal and blob store (every process that uses them)
    Metric("orch_journal_appends_total", "counter", "Events offered to the journal (duplicates included).",
           ("backend",)),
    Metric("orch_journal_append_seconds", "histogram", "Latency of one journal append transaction.", ("backend",),
           FAST_BUCKETS),
    Metric("orch_blob_written_bytes_total", "counter", "Bytes put into the blob store.", ("backend",)),
    Metric("orch_blob_read_bytes_total", "counter", "Bytes read (and verified) from the blob store.", ("backend",)),
    Metric("orch_blob_operations_total", "counter", "Blob store puts and reads.", ("backend", "op")),
    Metric("orch_blob_retries_total", "counter", "Blob store calls retried after a transient fault.", ()),
    Metric("orch_blob_integrity_errors_total", "counter", "Reads whose bytes failed their sha256 or size.", ()),
]
BY_NAME = {m.name: m for m in METRICS}
