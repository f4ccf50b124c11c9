"""Ray actor runtime: thin actors that move work and state; the ML core does the work.

    coordinator.py     ExperimentCoordinator: one per experiment, schedules trials, owns the journal
    trainer.py         trainer actors (one per trial, or a data-parallel group)
    shard_planner.py   the shared data plan of a data-parallel group
    evaluator.py       a manifest's eval suites on a trial's weights, as checkpoints land
    launch.py          a driver's side: start or join Ray, start a coordinator, talk to it
    cluster.py         an embedded or joined Ray, node placement; ray_watchdog.py cleans up after it
    plan.py, ownership.py, journaling.py   the plan by value, the experiment's lease, journal writes

Only this package imports Ray. What the CLI and the head call is orchestrator.app.
"""
