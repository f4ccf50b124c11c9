"""The trainer: exact resume (in-process and after SIGKILL), checkpoint bytes that depend on the
training state only, checkpoint fallback, cache reuse."""
import dataclasses
import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from orchestrator.data.image_text import shapes_data
from orchestrator.manifest.schema import TrainSpec
from orchestrator.models.registry import get_variant
from orchestrator.models.sd import build_tiny, load_components
from orchestrator.models.sd.options import SDOptions
from orchestrator.storage import open_store
from orchestrator.training.control import LoopConfig, RunControl
from orchestrator.training.loop import Trainer
from orchestrator.training.trial import train_trial

# Every option that carries state or randomness across steps is on.
SPEC = TrainSpec(steps=6, batch_size=4, grad_accum=2, lr=1e-3, warmup_steps=2, checkpoint_every=2,
                 ema_decay=0.99, min_snr_gamma=5.0, noise_offset=0.1, seed=3)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise comparisons need one fixed thread count; tiny models need no more
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    return shapes_data(n=12, seed=0, size=32, caption="spatial")  # 3 batches/epoch: resume crosses epochs


def trainer(store, data, prefix, **config):
    return Trainer(get_variant("sd"), build_tiny(seed=0), data, SPEC, store, prefix,
                   options=SDOptions(caption_dropout=0.2), config=LoopConfig(export_model=False, **config))


def assert_same_state(a: Trainer, b: Trainer):
    sa, sb = a.trained.state_dict(), b.trained.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(torch.equal(x, y) for x, y in zip(a.ema.shadow, b.ema.shadow))
    oa, ob = a.opt.state_dict()["state"], b.opt.state_dict()["state"]
    assert all(torch.equal(oa[i][k], ob[i][k]) for i in oa for k in oa[i])
    assert a.cursor == b.cursor and a.gen.get_state().equal(b.gen.get_state())


def checkpoint_hashes(store, prefix: str) -> dict[int, str]:
    """step -> sha256 of each stored checkpoint blob, checked against the hash its marker recorded."""
    out = {}
    for key in store.list(f"{prefix}/checkpoints/"):
        if key.endswith(".json"):
            marker = json.loads(store.get(key))
            out[marker["step"]] = hashlib.sha256(store.get(marker["key"])).hexdigest()
            assert out[marker["step"]] == marker["sha256"], key
    return out


def disturb_global_rngs(seed: int) -> None:
    """What other code in a process does to the global RNGs: a checkpoint must not depend on it."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def test_exact_resume_in_process(tmp_path, data):
    store = open_store(tmp_path / "blobs")
    ref = trainer(store, data, "ref")
    full = ref.run()
    assert full.step == 6 and full.cache_hits == {"latents": False, "text": False}

    first = trainer(store, data, "split").run(max_steps=3)  # stops between checkpoints: writes one at 3
    assert (first.step, first.checkpoint) == (3, "split/checkpoints/step-00000003.pt")
    resumed = trainer(store, data, "split")
    result = resumed.run()
    assert result.resumed_from == 3 and result.steps_run == 3 and result.cache_hits == {"latents": True, "text": True}
    assert result.final_loss == full.final_loss
    assert_same_state(ref, resumed)
    # the same bytes at every step both wrote (the split run keeps three: step 2 was pruned)
    ref_hashes, split_hashes = checkpoint_hashes(store, "ref"), checkpoint_hashes(store, "split")
    assert sorted(split_hashes) == [3, 4, 6] and all(split_hashes[s] == ref_hashes[s] for s in (4, 6))


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_lr_schedule_decays_to_zero_at_the_last_step_and_resumes_on_it(tmp_path, data, schedule):
    spec = SPEC.model_copy(update={"lr_schedule": schedule})  # warm-up over 2 of the 6 steps
    store = open_store(tmp_path / "blobs")

    def make(prefix, on_metrics=None):
        return Trainer(get_variant("sd"), build_tiny(seed=0), data, spec, store, prefix,
                       options=SDOptions(caption_dropout=0.2), config=LoopConfig(export_model=False),
                       control=RunControl(on_metrics=on_metrics))

    lrs = {}
    ref = make("ref", lambda m: lrs.update({m.step: ref.opt.param_groups[0]["lr"]}))
    assert ref.opt.param_groups[0]["lr"] == pytest.approx(0.5e-3)  # the first warm-up step
    ref.run()
    decay = {"cosine": lambda done: 0.5 * (1 + np.cos(np.pi * done)), "linear": lambda done: 1 - done}[schedule]
    # the rate the next step will use, after each step: the warm-up's end, then the decay over 4 steps
    assert [lrs[k] for k in range(1, 7)] == pytest.approx([1e-3 * decay(d) for d in (0, 0, 0.25, 0.5, 0.75, 1)])
    assert lrs[6] == 0.0
    make("split").run(max_steps=3)
    resumed = make("split")
    resumed.run()
    assert resumed.opt.param_groups[0]["lr"] == 0.0
    assert_same_state(ref, resumed)


def test_a_decaying_schedule_needs_steps_beyond_the_warm_up():
    from orchestrator.training.optim import WarmupThenDecay
    with pytest.raises(ValueError, match="unknown lr schedule 'step'"):
        WarmupThenDecay(2, 6, "step")
    with pytest.raises(ValueError, match="needs total_steps"):
        WarmupThenDecay(6, 6, "cosine")
    assert WarmupThenDecay(3, 0, "constant")(10) == 1.0  # constant needs no total


@pytest.mark.faults
def test_checkpoint_bytes_are_a_function_of_the_training_state(tmp_path, data):
    """Trained twice, with the process's global RNGs left in different states, and stopped and
    resumed: byte-identical checkpoints at every step. The model has dropout, which draws from
    torch's global generator: resume stays bit-exact because each step seeds it from (seed, step)."""
    from orchestrator.models.glide_mini.config import tiny
    from orchestrator.models.glide_mini.model import build
    from orchestrator.models.glide_mini.options import GlideMiniOptions
    from orchestrator.models.glide_mini.tokenizer import shapes_words

    tok = shapes_words(None)
    config = dataclasses.replace(tiny(32, vocab_size=tok.vocab_size), dropout=0.3)
    spec = SPEC.model_copy(update={"min_snr_gamma": None, "steps": 4, "grad_accum": 1})

    def make(prefix: str, dropout: float = 0.3) -> Trainer:
        model = build(dataclasses.replace(config, dropout=dropout), tok, seed=0)
        return Trainer(get_variant("glide_mini"), model, data, spec, store, prefix,
                       options=GlideMiniOptions(train="both", caption_dropout=0.2),
                       config=LoopConfig(export_model=False, device="cpu"))

    store = open_store(tmp_path / "blobs")
    disturb_global_rngs(1)
    once = make("once").run()
    disturb_global_rngs(2)
    twice = make("twice").run()
    assert twice.final_loss == once.final_loss
    hashes = checkpoint_hashes(store, "once")
    assert sorted(hashes) == [2, 4] and checkpoint_hashes(store, "twice") == hashes

    disturb_global_rngs(3)
    make("split").run(max_steps=2)
    disturb_global_rngs(4)
    resumed = make("split").run()
    assert resumed.resumed_from == 2 and resumed.final_loss == once.final_loss
    assert checkpoint_hashes(store, "split") == hashes
    assert make("no-dropout", dropout=0.0).run().final_loss != once.final_loss  # dropout was in play


def test_corrupt_newest_checkpoint_falls_back(tmp_path, data, caplog):
    store = open_store(tmp_path / "blobs")
    trainer(store, data, "run").run(max_steps=4)  # checkpoints at 2 and 4
    newest = tmp_path / "blobs" / "run" / "checkpoints" / "step-00000004.pt"
    found = [p for p in (tmp_path / "blobs").rglob("step-00000004.pt*") if p.is_file()]
    target = newest if newest.exists() else found[0]
    target.write_bytes(b"not a checkpoint")  # damaged behind the store's back
    t = trainer(store, data, "run")
    with caplog.at_level(logging.WARNING):
        assert t.resume() == 2
    assert "skipping checkpoint" in caplog.text


def test_uncached_step_runs(tmp_path, data):
    store = open_store(tmp_path / "blobs")
    result = trainer(store, data, "nocache", use_cache=False).run(max_steps=1)
    assert result.cache_hits is None and store.list("cache/") == []
    assert result.final_loss is not None and result.final_loss > 0


MANIFEST = """\
name: resume-test
model: {{variant: sd, base: tiny-random, resolution: 32}}
data: {{train: {{kind: shapes, captions: spatial, n: 12}}}}
train: {{steps: 6, batch_size: 4, lr: 1.0e-3, checkpoint_every: 2, ema_decay: 0.99, seed: 1}}
storage: {{blobs: {blobs}}}
"""

KILLER = textwrap.dedent("""
    import os, signal, sys, time, torch
    from pathlib import Path
    from orchestrator.storage import open_store
    from orchestrator.training import LoopConfig, RunControl, train_trial
    torch.set_num_threads(1)
    store = open_store(Path(sys.argv[1]).parent / "killed-blobs")
    def kill_after_checkpoint(m):
        if m.step == 3:  # a checkpoint exists at 2; step 3's work is lost
            # step 2's checkpoint uploads in the background: kill once it has landed (a loaded machine
            # once killed before it had, and the resume rightly started from nothing)
            deadline = time.monotonic() + 60
            while (not any(k.endswith("step-00000002.json") for k in store.list("trials/"))
                   and time.monotonic() < deadline):
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)
    train_trial(sys.argv[1], "0", control=RunControl(on_metrics=kill_after_checkpoint),
                config=LoopConfig(num_threads=1))
""")


@pytest.mark.faults
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    for name in ("killed", "straight"):
        (tmp_path / f"{name}.yaml").write_text(MANIFEST.format(blobs=f"./{name}-blobs"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path / "killed.yaml")], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    store = open_store(tmp_path / "killed-blobs")
    assert not store.list("trials/")[-1].endswith("model_index.json")  # it did not finish

    metrics = []
    resumed = train_trial(tmp_path / "killed.yaml", "0", control=RunControl(on_metrics=metrics.append),
                          config=LoopConfig(num_threads=1))
    assert resumed.resumed_from == 2 and resumed.finished and [m.step for m in metrics] == [3, 4, 5, 6]
    straight = train_trial(tmp_path / "straight.yaml", "0", config=LoopConfig(num_threads=1))
    assert straight.resumed_from is None and straight.final_loss == resumed.final_loss

    a = load_components(resumed.model_prefix, store=store).unet.state_dict()
    b = load_components(straight.model_prefix, store=open_store(tmp_path / "straight-blobs")).unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # exported EMA weights, bitwise
    # the killed process's checkpoint and the resumed ones are the straight run's bytes
    prefix = resumed.model_prefix.rsplit("/", 1)[0]
    assert checkpoint_hashes(store, prefix) == checkpoint_hashes(open_store(tmp_path / "straight-blobs"), prefix)
    assert sorted(checkpoint_hashes(store, prefix)) == [2, 4, 6]
    again = train_trial(tmp_path / "killed.yaml", "0", config=LoopConfig(num_threads=1))
    assert again.steps_run == 0 and again.resumed_from == 6  # finished trials do not retrain


def test_trained_text_encoder_and_random_flips_resume_exactly(tmp_path):
    """model.sd.train_text_encoder trains the text encoder with the U-Net (its embeddings are
    never cached) and data random_flip mirrors images per step from the run's generator: both
    still resume bit for bit, and the mirror images' latents are cached as their own content."""
    flips = shapes_data(n=12, seed=0, size=32, caption="spatial")
    flips.random_flip = True
    store = open_store(tmp_path / "blobs")
    options = SDOptions(train_text_encoder=True, caption_dropout=0.2)

    def make(prefix):
        return Trainer(get_variant("sd"), build_tiny(seed=0), flips, SPEC, store, prefix, options=options,
                       config=LoopConfig(export_model=False))

    ref = make("ref")
    before = [p.detach().clone() for p in ref.objective.c.text_encoder.parameters()]
    full = ref.run()
    assert sorted(ref.objective.modules) == ["text_encoder", "unet"]
    assert full.cache_hits == {"latents": False}  # latents cached, text embeddings not
    assert len(store.list("cache/sd/latents/")) == 2 and store.list("cache/sd/text/") == []
    assert not all(torch.equal(a, b) for a, b in zip(before, ref.objective.c.text_encoder.parameters()))
    make("split").run(max_steps=3)
    resumed = make("split")
    result = resumed.run()
    assert result.resumed_from == 3 and result.final_loss == full.final_loss
    assert_same_state(ref, resumed)
    plain = Trainer(get_variant("sd"), build_tiny(seed=0), shapes_data(n=12, seed=0, size=32, caption="spatial"),
                    SPEC, store, "plain", options=options, config=LoopConfig(export_model=False)).run()
    assert plain.final_loss != full.final_loss  # the flips changed what was trained on
