"""Training: data parallelism, exact resume after a kill, recovery from non-finite steps, signals."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import fvae.training.pipeline
import fvae.training.trainer
from fvae.config import RunConfig, apply_overrides
from fvae.models import model_from_config
from fvae.presets import run_config
from fvae.training.checkpoint import CheckpointError, list_checkpoints, load_model, load_state
from fvae.training.ema import ExponentialAverage
from fvae.training.trainer import TrainingDiverged

TINY = ["model.pad_to=null", "model.flow_levels=2",
        "model.encoder_blocks=1", "model.encoder_hidden=8", "model.flow_steps=1", "model.flow_width=16",
        "train.batch_size=16", "train.eval_batches=2", "train.score_samples=0", "train.log_every=5", "train.sample_every=1000"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def tiny_config(*overrides):
    return apply_overrides(run_config("fvae", "mnist"), TINY + list(overrides))


def train(config, out, resume=False):
    """``fvae.train`` on a full config, returning the summary."""
    return fvae.training.pipeline.train(config=config, out=out, resume=resume, progress=False)[1]


def fvae_cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "fvae.cli", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def weights(run_dir):
    return load_file(list_checkpoints(run_dir)[-1] / "model.safetensors")


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=k)


@pytest.mark.slow
def test_two_process_data_parallel_run_ends_with_identical_weights(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           str(Path(__file__).with_name("ddp_worker.py")), str(tmp_path), *TINY, "train.max_steps=12",
           "train.checkpoint_every=6"]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert_same_weights(rank0, rank1)
    assert any(k.endswith("initialized") and bool(v) for k, v in rank0.items())
    fresh = model_from_config(RunConfig.load_yaml(tmp_path / "config.yaml").model)
    moved = [k for k, v in fresh.state_dict().items() if not torch.equal(v, rank0[k])]
    assert moved  # it trained
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 12


@pytest.mark.slow  # an end-to-end run; the fast tier covers its parts
def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    common = [*TINY, "train.max_steps=150", "train.checkpoint_every=10"]
    straight = fvae_cli("train", "--no-progress", "--out", str(tmp_path / "straight"), *common)
    assert straight.wait(timeout=300) == 0, straight.stdout.read()

    killed = fvae_cli("train", "--no-progress", "--out", str(tmp_path / "killed"), *common)
    deadline = time.time() + 120
    while len(list_checkpoints(tmp_path / "killed")) < 2 and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    interrupted_at = load_state(list_checkpoints(tmp_path / "killed")[-1])["step"]
    assert 0 < interrupted_at < 150

    resumed = fvae_cli("train", "--no-progress", "--resume", "--out", str(tmp_path / "killed"))
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    assert load_state(list_checkpoints(tmp_path / "killed")[-1])["step"] == 150
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "killed"))


def _poison(monkeypatch, bad_steps):
    calls = {"n": -1}
    original = fvae.training.trainer.dequantize

    def dequantize(images, generator=None):
        calls["n"] += 1
        x = original(images, generator)
        # call 0 initialises ActNorm; call n is step n - 1
        return x * float("nan") if calls["n"] - 1 in bad_steps else x

    monkeypatch.setattr(fvae.training.trainer, "dequantize", dequantize)


def test_max_time_stops_training_and_is_named_in_the_summary(tmp_path):
    summary = train(tiny_config("train.max_steps=1000000", "train.max_time=2"), tmp_path)
    assert summary["stopped_by"] == "max_time"
    assert 0 < summary["steps"] < 1000000 and 1 < summary["wall_time"] < 10
    assert load_state(list_checkpoints(tmp_path)[-1])["step"] == summary["steps"]


def test_non_finite_steps_are_skipped_and_counted(tmp_path, monkeypatch):
    _poison(monkeypatch, {3, 7, 8})
    summary = train(tiny_config("train.max_steps=20", "train.checkpoint_every=10"), tmp_path)
    assert summary["skipped_steps"] == 3 and summary["steps"] == 20 and summary["stopped_by"] == "max_steps"
    model, _, _ = load_model(tmp_path)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["skipped_steps"] == 3


def test_too_many_non_finite_steps_stop_with_the_last_good_checkpoint_intact(tmp_path, monkeypatch):
    _poison(monkeypatch, set(range(12, 100)))
    config = tiny_config("train.max_steps=60", "train.checkpoint_every=10", "train.max_bad_steps=5")
    with pytest.raises(TrainingDiverged, match=r"8 non-finite steps in a row by step 20 \(train.max_bad_steps=5\).*step-00000010"):
        train(config, tmp_path)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000010"]
    model, _, _ = load_model(tmp_path)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_save_a_checkpoint_before_exiting(tmp_path, sig):
    run = fvae_cli("train", "--no-progress", "--out", str(tmp_path), *TINY, "train.max_steps=100000",
                   "train.checkpoint_every=7")
    deadline = time.time() + 120
    while not (tmp_path / "metrics.jsonl").exists() and time.time() < deadline:  # step 7 checkpointed, evaluated
        time.sleep(0.05)
    run.send_signal(sig)
    assert run.wait(timeout=120) == {signal.SIGTERM: 143, signal.SIGINT: 130}[sig]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopped_by"] == sig.name
    assert f"stopped by {sig.name}; resume with: fvae train --resume" in run.stdout.read()
    assert load_state(list_checkpoints(tmp_path)[-1])["step"] == summary["steps"] > 7


def test_ema_weights_are_saved_and_used(tmp_path):
    train(tiny_config("train.max_steps=10", "train.ema_decay=0.9"), tmp_path)
    checkpoint = list_checkpoints(tmp_path)[-1]
    ema, raw = load_file(checkpoint / "ema.safetensors"), load_file(checkpoint / "model.safetensors")
    assert ema.keys() == raw.keys()
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)
    model, _, _ = load_model(tmp_path)
    assert torch.equal(model.state_dict()["log_sigma2"], ema["log_sigma2"])


def test_checkpoint_of_another_config_fails_naming_the_mismatch(tmp_path):
    train(tiny_config("train.max_steps=2"), tmp_path)
    with pytest.raises(CheckpointError, match=r"model.flow_widths: checkpoint \(16, 16\), config \(32, 32\)"):
        train(tiny_config("train.max_steps=4", "model.flow_width=32"), tmp_path, resume=True)
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config("train.max_steps=4"), tmp_path)


def test_checkpoint_is_loadable_without_pickle(tmp_path):
    train(tiny_config("train.max_steps=2"), tmp_path)
    state = torch.load(list_checkpoints(tmp_path)[-1] / "state.pt", weights_only=True)
    assert state["step"] == 2 and "optimizer" in state


def test_default_command_runs_end_to_end(tmp_path):
    run = fvae_cli("train", "--max-steps", "3", "--out", str(tmp_path / "run"), "train.eval_batches=1")
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 0, output
    run_dir = tmp_path / "run"
    grids = sorted(f"samples_T{t:g}.png" for t in run_config("fvae", "mnist").train.temperatures)
    assert sorted(p.name for p in run_dir.glob("samples*.png")) == grids
    assert list_checkpoints(run_dir)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    config = RunConfig.load_yaml(run_dir / "config.yaml")
    assert config.model.kind == "fvae" and config.data.name == "embedded"


def test_train_help_documents_every_option():
    done = subprocess.run([sys.executable, "-m", "fvae.cli", "train", "--help"], env=ENV, capture_output=True,
                          text=True)
    for option in ("--model", "--preset", "--data", "--data-root", "--config", "--max-steps", "--max-time",
                   "--seed", "--out", "--resume", "--ema", "section.field=value"):
        assert option in done.stdout


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_a_decaying_schedule_resumes_exactly_and_ends_at_zero(tmp_path, schedule):
    import shutil

    from fvae.training.schedule import lr_factor

    config = tiny_config(f"train.schedule={schedule}", "train.warmup_steps=2", "train.max_steps=8",
                         "train.checkpoint_every=4")
    train(config, tmp_path / "whole")
    # the same run as if stopped after step 4: its last checkpoint removed, then resumed
    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
    shutil.rmtree(list_checkpoints(tmp_path / "resumed")[-1])
    assert load_state(list_checkpoints(tmp_path / "resumed")[-1])["step"] == 4
    train(config, tmp_path / "resumed", resume=True)
    assert_same_weights(weights(tmp_path / "whole"), weights(tmp_path / "resumed"))
    assert lr_factor(1, schedule, 2, 8) == 1.0 and lr_factor(8, schedule, 2, 8) == 0.0
    assert 0 < lr_factor(5, schedule, 2, 8) < 1
    halfway = {"cosine": 0.5, "linear": 0.5}[schedule]
    assert lr_factor(5, schedule, 2, 8) == pytest.approx(halfway)


def test_mlflow_logs_the_runs_scalars_images_and_config_and_a_resume_continues_the_same_run(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    config = tiny_config("train.logger=mlflow", "train.max_steps=10", "train.checkpoint_every=10",
                         "train.sample_every=10")
    train(config, tmp_path)
    record = json.loads((tmp_path / "mlflow.json").read_text())
    train(apply_overrides(config, ["train.max_steps=20"]), tmp_path, resume=True)
    assert json.loads((tmp_path / "mlflow.json").read_text()) == record
    client = MlflowClient(record["tracking_uri"])
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["model.kind"] == "fvae"
    assert run.data.params["train.logger"] == "mlflow"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == [5, 10, 15, 20]  # one MLflow run across the resume, every logged step once
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test/bits_per_dim")] == [10, 20]
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert any("samples~T_1" in path for path in images)
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_a_refitted_prior_is_saved_as_fitted_to_the_ema_weights(tmp_path):
    from fvae.data import load_dataset
    from fvae.training.prior_fit import fit_top_prior

    config = tiny_config("model.num_classes=10", "model.prior_fit=refit", "train.max_steps=6",
                         "train.checkpoint_every=6", "train.ema_decay=0.9")
    train(config, tmp_path)
    model, loaded, checkpoint = load_model(tmp_path)  # the EMA weights
    saved = {k: v.clone() for k, v in model.prior.state_dict().items()}
    moving = load_file(checkpoint / "model.safetensors")
    assert not torch.allclose(saved["means"], moving["prior.means"])  # refitted, not the trained prior
    train_set = load_dataset(loaded.data, "train", loaded.model.image_shape)
    fit_top_prior(model, train_set, seed=loaded.train.seed)  # the fit again, to the same weights
    for k, v in model.prior.state_dict().items():
        torch.testing.assert_close(v, saved[k], msg=k)


def test_the_ema_follows_its_warm_up_formula_and_ignores_skipped_steps():
    """``w_ema <- w_ema + ok (1 - d_n) (w - w_ema)``, ``d_n = min(decay, (1 + n) / (10 + n))``, against
    the formula in float64; a skipped step (``ok = 0``) changes neither the average nor ``n``."""
    model = torch.nn.Linear(3, 2).double()
    ema = ExponentialAverage(model, decay=0.5)
    expected = [p.detach().clone() for p in model.parameters()]
    n = 0
    for ok in (1, 1, 0, 1, 1, 1):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        params = list(model.parameters())
        ema.update(params, torch.tensor(float(ok), dtype=torch.float64))
        if ok:
            d = min(0.5, (1 + n) / (10 + n))
            expected = [e + (1 - d) * (p.detach() - e) for e, p in zip(expected, params)]
            n += 1
        assert int(ema.updates) == n
        for e, a in zip(expected, ema.module.parameters()):
            torch.testing.assert_close(a, e, rtol=0, atol=1e-12)


def _held_tensors(obj, seen: set, depth: int = 0):
    """The tensors ``obj`` holds in its attributes, lists, dicts and modules (not its data)."""
    if id(obj) in seen or depth > 4:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, torch.nn.Module):
        yield from obj.state_dict(keep_vars=True).values()
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _held_tensors(item, seen, depth + 1)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _held_tensors(item, seen, depth + 1)
    elif type(obj).__module__.startswith(("fvae.", "torch.optim")) and hasattr(obj, "__dict__"):
        for name, item in vars(obj).items():
            if name not in ("train_set", "test_set", "batches"):
                yield from _held_tensors(item, seen, depth + 1)


def test_what_a_step_updates_in_place_is_the_state_a_cuda_graph_keeps_static(tmp_path):
    """On a GPU the compiled step is a CUDA graph, which PyTorch skips where the step updates a
    tensor not marked static: every tensor a step changes must be in ``Trainer._step_state``."""
    trainer = fvae.training.trainer.Trainer(tiny_config("train.ema_decay=0.9"), tmp_path, progress=False)
    try:
        batches = trainer.batches.from_step(0)
        trainer._train_step(*next(batches))
        held = {id(t): t for t in _held_tensors(trainer, set()) if t.is_floating_point() or t.dtype == torch.long}
        before = {i: t.detach().clone() for i, t in held.items()}
        trainer._train_step(*next(batches))
        changed = {i for i, t in held.items() if not torch.equal(before[i], t.detach())}
        static = {id(t) for t in trainer._step_state()}
        assert id(trainer.skipped.total) in static and len(changed) > 10
        assert changed <= static, [tuple(held[i].shape) for i in changed - static]
    finally:
        trainer.close()


def test_a_non_finite_step_changes_no_weight_and_no_optimizer_state(tmp_path, monkeypatch):
    _poison(monkeypatch, {2})
    trainer = fvae.training.trainer.Trainer(tiny_config("train.ema_decay=0.9"), tmp_path, progress=False)
    try:
        batches = trainer.batches.from_step(0)
        for _ in range(2):
            trainer._train_step(*next(batches))
        before = ({k: v.clone() for k, v in trainer.model.state_dict().items()},
                  {k: v.clone() for k, v in trainer.ema.module.state_dict().items()},
                  [{k: v.clone() for k, v in s.items()} for s in trainer.optimizer.state.values()])
        trainer._train_step(*next(batches))  # step 2: its images are NaN
        after = (trainer.model.state_dict(), trainer.ema.module.state_dict(), list(trainer.optimizer.state.values()))
        for old, new in zip(before[:2], after[:2]):
            assert all(torch.equal(old[k], new[k]) for k in old)
        for old, new in zip(before[2], after[2]):
            assert all(torch.equal(old[k], new[k]) for k in old)
        assert trainer.bad_steps == 1 and int(trainer.ema.updates) == 2 and trainer.step == 3
        trainer._train_step(*next(batches))
        assert trainer.bad_steps == 1 and int(trainer.ema.updates) == 3
    finally:
        trainer.close()
