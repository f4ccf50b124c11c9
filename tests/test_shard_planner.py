"""ShardPlanner: the pure shard rule (deterministic, disjoint, complete), the trainer ranks loading
exactly those shards, the actor's record, and a dead rank's shards handed to its replacement."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from orchestrator.data.image_text import shapes_data
from orchestrator.manifest.schema import TrainSpec
from orchestrator.models.registry import get_variant
from orchestrator.models.sd import build_tiny, load_components
from orchestrator.models.sd.options import SDOptions
from orchestrator.storage import open_store
from orchestrator.training.control import LoopConfig
from orchestrator.training.distributed import DistContext, batches_done, epoch_shards, shard_indices
from orchestrator.training.loop import Trainer
from orchestrator.training.state import BatchOrder

N, BATCH, SEED = 40, 8, 3  # 5 global batches per epoch


@pytest.mark.parametrize("world", [1, 2, 4])
def test_shards_are_deterministic_disjoint_and_complete(world):
    order = BatchOrder(N, BATCH, SEED)
    for epoch in range(3):
        per_rank = [epoch_shards(N, BATCH, SEED, epoch, r, world) for r in range(world)]
        assert per_rank == [epoch_shards(N, BATCH, SEED, epoch, r, world) for r in range(world)]  # deterministic
        for position in range(order.batches_per_epoch):
            slices = [per_rank[r][position] for r in range(world)]
            assert all(len(s) == BATCH // world for s in slices)
            flat = [i for s in slices for i in s]
            assert len(set(flat)) == BATCH  # disjoint
            start = position * BATCH       # and together exactly the single-process batch
            assert sorted(flat) == sorted(order.permutation(epoch)[start:start + BATCH].tolist())
        covered = [i for r in range(world) for batch in per_rank[r] for i in batch]
        assert len(covered) == len(set(covered)) == order.batches_per_epoch * BATCH  # one epoch, no repeats
    # another epoch is another order; the rule does not depend on who asks or when
    assert epoch_shards(N, BATCH, SEED, 0, 0, 2) != epoch_shards(N, BATCH, SEED, 1, 0, 2)
    assert shard_indices(BatchOrder(N, BATCH, SEED), 2, 4, 1, 2).tolist() == epoch_shards(N, BATCH, SEED, 2, 1, 2)[4]


def test_bad_splits_are_refused():
    with pytest.raises(ValueError, match="does not split evenly"):
        epoch_shards(N, BATCH, SEED, 0, 0, 3)
    with pytest.raises(ValueError, match="outside a world"):
        epoch_shards(N, BATCH, SEED, 0, 2, 2)
    assert batches_done(7, 2, 5) == (2, 4)  # 14 global batches: two epochs of 5, then 4 in


def test_trainer_ranks_load_exactly_their_shards_and_match_one_process(tmp_path):
    """Each rank encodes only its shard of every global batch (the planner's rule), and the mean
    of the ranks' losses is the single-process loss (same draws, equal slices)."""
    torch.set_num_threads(1)
    data = shapes_data(n=12, seed=0, size=32, caption="spatial")
    spec = TrainSpec(steps=4, batch_size=4, lr=1e-3, checkpoint_every=4, noise_offset=0.1, seed=1)

    def make(rank: int | None):
        dist = None if rank is None else DistContext(rank, 2)
        t = Trainer(get_variant("sd"), build_tiny(seed=0), data, spec, open_store(tmp_path / f"r{rank}"), "run",
                    options=SDOptions(caption_dropout=0.3), config=LoopConfig(use_cache=False, export_model=False),
                    distributed=dist)
        seen: list[list[int]] = []
        inputs = t.objective._latent_dist
        t.objective._latent_dist = lambda idx, flip=None: (seen.append(idx.tolist()), inputs(idx, flip))[1]
        return t, seen

    (single, _), ranks = make(None), [make(r) for r in range(2)]
    order = BatchOrder(12, 4, spec.seed)
    for b in range(5):  # crosses into the second epoch (3 batches per epoch)
        with torch.no_grad():
            whole = single.objective.loss(single._batch())
            parts = [t.objective.loss(t._batch()) for t, _ in ranks]
        assert torch.allclose(whole, (parts[0] + parts[1]) / 2, atol=1e-6)
        epoch, position = divmod(b, 3)
        for r, (_, seen) in enumerate(ranks):
            assert seen[-1] == shard_indices(order, epoch, position, r, 2).tolist()


# ------------------------------------------------------------------------------- actors
ray = pytest.importorskip("ray")

from orchestrator.actors.shard_planner import ShardPlanner, ShardPlannerActor  # noqa: E402
from tests.test_actors import cluster, write  # noqa: E402,F401  (one Ray for both modules)


def test_planner_record_and_reassignment():
    planner = ShardPlannerActor.remote(N, BATCH, SEED, 2, grad_accum=1, total_steps=12)
    assert ray.get([planner.join.remote("w0", 0), planner.join.remote("w1", 1)]) == [0, 1]
    assert ray.get(planner.shards.remote(1, 0)) == epoch_shards(N, BATCH, SEED, 0, 1, 2)
    with pytest.raises(ray.exceptions.RayTaskError, match="held by w1"):
        ray.get(planner.join.remote("intruder", 1))
    for rank in (0, 1):
        planner.report.remote(rank, 7)
    ray.get(planner.checkpointed.remote(6))
    status = ray.get(planner.status.remote())
    assert status["holders"] == {0: "w0", 1: "w1"} and status["progress"] == {0: 7, 1: 7}
    assert status["cursor"] == (1, 1)  # 6 batches of 5 per epoch: epoch 1, position 1

    handover = ray.get(planner.reassign.remote("w1", "w2"))  # w1's process died
    assert handover["rank"] == 1 and handover["cursor"] == (1, 1)
    shards = handover["shards"]
    assert [(s.epoch, s.position) for s in shards] == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 0), (2, 1)]
    assert all(s.rank == 1 and s.indices == epoch_shards(N, BATCH, SEED, s.epoch, 1, 2)[s.position] for s in shards)
    status = ray.get(planner.status.remote())
    assert status["holders"] == {0: "w0", 1: "w2"} and status["progress"][1] == 6  # post-checkpoint work is lost
    assert status["history"][-1] == ("w2", 1, "w1")
    with pytest.raises(ray.exceptions.RayTaskError, match="holds no rank"):
        ray.get(planner.reassign.remote("w1", "w3"))  # the dead worker holds nothing any more
    ray.kill(planner)
    # the record is plain Python: the same object works without Ray
    local = ShardPlanner(N, BATCH, SEED, 2)
    local.join("a", 0)
    assert [s.position for s in local.unfinished(0)] == [0, 1, 2, 3, 4]  # run length unknown: this epoch


def test_group_replaces_a_killed_rank_and_finishes_identically(tmp_path):
    from orchestrator.actors.trainer import TrainerGroup, worker_id
    from orchestrator.experiment.plan import plan_sweep
    from orchestrator.training import train_trial

    path = write(tmp_path / "ddp", "ddp-kill", steps=40, every=4)
    plan = plan_sweep(path)
    tid = plan.trials[0].id
    group = TrainerGroup(plan.trial(tid).to_json(), plan.blobs_uri, None, world_size=2, use_gpus=False, backend="gloo")
    out: dict = {}
    try:
        first_rank1 = worker_id(group.actors[1])
        victim = group.pids()[1]
        runner = threading.Thread(target=lambda: out.update(group.run()), daemon=True)
        runner.start()
        deadline = time.monotonic() + 120
        while ray.get(group.planner.status.remote())["durable_step"] < 4:  # a checkpoint landed
            assert time.monotonic() < deadline and runner.is_alive()
            time.sleep(0.05)
        os.kill(victim, signal.SIGKILL)
        runner.join(timeout=240)
        assert not runner.is_alive()
        status = ray.get(group.planner.status.remote())
    finally:
        group.shutdown()
    assert out.get("error") is None, out
    assert out["step"] == 40 and out["resumed_from"] is not None and out["resumed_from"] >= 4
    assert group.recoveries == 1
    replacement = status["holders"][1]
    assert replacement != first_rank1 and (replacement, 1, first_rank1) in status["history"]
    single = train_trial(write(tmp_path / "single", "ddp-kill", steps=40, every=4), tid,
                         config=LoopConfig(num_threads=1))
    a = load_components(out["model_prefix"], store=open_store(plan.blobs_uri)).unet.state_dict()
    b = load_components(single.model_prefix, store=open_store(Path(tmp_path) / "single" / "blobs")).unet.state_dict()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, worst
