"""Nothing lost, nothing silently wrong: resume with changed settings, divergence, unreadable test
images, oversized configs and YAML bombs, odd image files, output paths, signals' exit codes, torn
logs, weights of the wrong type."""
import json
import os
import time

import numpy as np
import pytest
from conftest import one_line_error, run_cli
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import fvae
from fvae.config import ConfigError, apply_overrides
from fvae.data.datasets import DataError, read_image
from fvae.errors import TrainingDiverged, WeightsError
from fvae.models.weights import load_weights
from fvae.presets import run_config
from fvae.training.checkpoint import list_checkpoints, load_state
from fvae.training.pipeline import train
from fvae.training.run_log import read_records

TINY = ["model.pad_to=null", "model.flow_levels=2", "model.encoder_blocks=1", "model.encoder_hidden=8",
        "model.flow_steps=1", "model.flow_width=16", "train.batch_size=16", "train.eval_batches=1",
        "train.score_samples=0", "train.sample_every=1000", "train.log_every=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def tiny(*overrides):
    return apply_overrides(run_config("fvae", "mnist"), TINY + list(overrides))


def cli(*args, cwd=None, timeout=300):
    return run_cli(*args, cwd=cwd)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run of 4 steps (a checkpoint at 4), kept pristine: tests copy it or read it."""
    root = tmp_path_factory.mktemp("recovery") / "run"
    train(config=tiny("train.max_steps=4", "train.checkpoint_every=4"), out=root, progress=False)
    return root


# --- 1, 2: resume with another learning rate; divergence -------------------------------------------
def test_a_resume_with_another_lr_applies_it_and_says_so(tmp_path, capsys):
    train(config=tiny("train.max_steps=4", "train.checkpoint_every=4", "train.warmup_steps=0"), out=tmp_path,
          progress=False)
    capsys.readouterr()
    train(config=tiny("train.max_steps=6", "train.checkpoint_every=6", "train.warmup_steps=0", "train.lr=1e-5"),
          out=tmp_path, resume=True, progress=False)
    assert "train.lr is 1e-05 from step 4 on" in capsys.readouterr().err
    state = load_state(list_checkpoints(tmp_path)[-1])
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [1e-5]
    assert state["scheduler"]["base_lrs"] == [1e-5]
    assert fvae.RunConfig.load_yaml(tmp_path / "config.yaml").train.lr == 1e-5


def test_following_the_divergence_message_recovers_the_run(tmp_path):
    common = ["train.checkpoint_every=4", "train.max_bad_steps=3", "train.warmup_steps=0"]
    train(config=tiny("train.max_steps=4", *common), out=tmp_path, progress=False)
    with pytest.raises(TrainingDiverged, match=r"the last good checkpoint is .*step-00000004.*lower train.lr"):
        train(config=tiny("train.max_steps=200", "train.lr=10", *common), out=tmp_path, resume=True, progress=False)
    for checkpoint in list_checkpoints(tmp_path):  # every checkpoint kept is finite and evaluates finitely
        assert all(torch.isfinite(t).all() for t in load_file(checkpoint / "model.safetensors").values()
                   if t.is_floating_point())
    assert all(np.isfinite(r["test_bpd"]) for r in read_records(tmp_path / "metrics.jsonl"))
    # the advice: lower train.lr and resume
    _, summary = train(config=tiny("train.max_steps=30", "train.lr=1e-3", *common), out=tmp_path, resume=True,
                       progress=False)
    assert summary["steps"] == 30 and np.isfinite(summary["test_bpd"])


def test_weights_that_are_not_finite_or_of_another_type_are_refused(tmp_path):
    model = torch.nn.Linear(2, 2)
    save_file({"weight": torch.full((2, 2), float("nan")), "bias": torch.zeros(2)}, tmp_path / "nan.safetensors")
    with pytest.raises(WeightsError, match=r"non-finite values .* weight"):
        load_weights(model, tmp_path / "nan.safetensors")
    save_file({k: v.double() for k, v in model.state_dict().items()}, tmp_path / "f64.safetensors")
    with pytest.raises(WeightsError, match="bias: float64, model float32"):
        load_weights(model, tmp_path / "f64.safetensors")
    save_file({k: v.half() for k, v in model.state_dict().items()}, tmp_path / "f16.safetensors")
    load_weights(model, tmp_path / "f16.safetensors")  # how the shipped models are stored


# --- 3: an unreadable test image --------------------------------------------------------------------
def test_an_unreadable_test_image_is_skipped_and_named_and_training_is_kept(tmp_path):
    folder = tmp_path / "images"
    for i in range(40):
        path = folder / ("test" if i % 10 == 9 else "train") / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 6 * i, np.uint8)).save(path)
    (folder / "test" / "009.png").write_bytes(b"not a png")
    done = cli("train", "--no-progress", "--data", folder, "--out", tmp_path / "run", *TINY,
               "model.image_shape=[1,8,8]", "train.batch_size=8", "train.max_steps=4", "train.checkpoint_every=4")
    assert done.returncode == 0, done.stderr
    assert "skipped 1 unreadable test image(s); the first: cannot read image" in done.stderr
    assert np.isfinite(json.loads((tmp_path / "run" / "summary.json").read_text())["test_bpd"])


# --- 4: memory bombs ---------------------------------------------------------------------------------
def test_a_model_too_big_for_the_machine_is_refused_before_it_is_built(tmp_path):
    config = tiny("model.flow_width=8192", "model.flow_steps=48", "model.image_shape=[3,256,256]",
                  "model.flow_levels=4")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"would need about .* GiB .* parameters.*model.flow_widths=\(8192"):
        train(config=config, out=tmp_path / "run", progress=False)
    assert time.perf_counter() - started < 30 and not (tmp_path / "run" / "checkpoints").exists()


def test_the_budget_counts_the_parameters_and_one_steps_activations_without_allocating(monkeypatch):
    import fvae.models.budget as budget

    config = tiny().model
    params = sum(p.numel() for p in fvae.model_from_config(config).parameters())
    model = budget._meta_model(config)
    assert sum(p.numel() for p in model.parameters()) == params
    small, large = budget.activation_bytes(model, config, 2), budget.activation_bytes(model, config, 8)
    assert 0 < small < large <= 4 * small + 1e6  # activations grow with the batch; weights do not
    monkeypatch.setattr(budget, "available_bytes", lambda device=None: 4 * params * 4 + small)
    budget.check_budget(config, 2, copies=4)  # fits
    with pytest.raises(ConfigError, match=r"GiB of activations at train.batch_size=8"):
        budget.check_budget(config, 8, copies=4)


def test_a_yaml_alias_bomb_is_refused_in_one_line(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for name, previous in zip("bcdefghi", "abcdefgh"):
        levels.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    bomb.write_text("model:\n  " + "\n  ".join(levels) + "\n")
    line = one_line_error(cli("train", "--config", bomb, "--out", tmp_path / "run"))
    assert "aliases" in line and len(line) < 300


# --- 5: image files ------------------------------------------------------------------------------------
def test_16_bit_palette_cmyk_and_transparent_images_are_read_as_they_look(tmp_path):
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024)  # 0 .. 64512 of 65535
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    deep = np.asarray(read_image(tmp_path / "deep.png", 1))
    assert np.array_equal(deep, (ramp.astype(np.int64) // 257).astype(np.uint8))  # scaled, not clipped to white
    grey = Image.fromarray(np.tile(np.arange(0, 256, 32, dtype=np.uint8), (8, 1)))
    grey.convert("P").save(tmp_path / "palette.png")
    grey.convert("CMYK").save(tmp_path / "cmyk.tif")
    assert np.array_equal(np.asarray(read_image(tmp_path / "palette.png", 1)), np.asarray(grey))
    assert np.abs(np.asarray(read_image(tmp_path / "cmyk.tif", 1)).astype(int) - np.asarray(grey)).max() <= 1
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3], rgba[:4, :, 3], rgba[4:, :, 3] = 200, 255, 0  # the bottom half transparent
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    read = np.asarray(read_image(tmp_path / "alpha.png", 3))
    assert (read[:4] == 200).all() and (read[4:] == 0).all()  # laid on black


def test_a_decompression_bomb_or_float_image_is_a_data_error_naming_the_file(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match=r"cannot read image .*big.png: DecompressionBombError"):
        read_image(tmp_path / "big.png", 1)
    monkeypatch.undo()
    Image.fromarray(np.zeros((8, 8), np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(DataError, match=r"float.tif: 32-bit float pixels"):
        read_image(tmp_path / "float.tif", 1)


# --- 7: output paths -----------------------------------------------------------------------------------
def test_unusable_out_paths_are_refused_before_any_work(run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "a file is in the way" in one_line_error(cli("sample", run, "--out", blocker, "--num", "4"))
    assert "cannot make this folder" in one_line_error(cli("sample", run, "--out", blocker / "sub", "--num", "4"))
    (tmp_path / "x.json").mkdir()
    assert "a folder is in the way" in one_line_error(cli("eval", run, "--out", tmp_path / "x.json"))
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "not writable" in one_line_error(cli("sample", run, "--out", locked, "--num", "4"))


def test_sampling_writes_only_into_out_and_never_over_the_training_grids(run, tmp_path):
    grid = (run / "samples_T1.png").read_bytes()
    assert cli("sample", run, "--num", "4", "--temperatures", "1").returncode == 0
    assert (run / "samples" / "samples_T1.png").exists() and (run / "samples_T1.png").read_bytes() == grid
    done = cli("sample", "fvae-mnist", "--out", tmp_path / "mine", "--num", "4", "--temperatures", "0.6", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mine" / "samples_T0.6.png").exists() and not (tmp_path / "fvae-mnist").exists()


def test_eval_out_names_a_json_file(run, tmp_path):
    done = cli("eval", run, "--out", tmp_path / "f.json", "--num-samples", "2", "--score-samples", "0",
               "--max-images", "16")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "f.json").read_text())["metrics"]["num_images"] == 16


# --- 8: torn logs (the exit codes of SIGINT and SIGTERM: tests/test_train.py) --------------------------------
def test_a_torn_last_line_of_metrics_is_left_out_and_the_next_record_starts_a_line(run, tmp_path, capsys):
    import shutil

    shutil.copytree(run, tmp_path / "run")
    metrics = tmp_path / "run" / "metrics.jsonl"
    whole = read_records(metrics)
    with open(metrics, "a") as f:
        f.write('{"step": 8, "test_b')  # a process killed mid-write
    assert read_records(metrics) == whole and "left out 1 line" in capsys.readouterr().err
    train(config=tiny("train.max_steps=6", "train.checkpoint_every=6"), out=tmp_path / "run", resume=True,
          progress=False)
    records = read_records(metrics)
    assert [r["step"] for r in records] == [4, 6]
    assert cli("compare", tmp_path / "run", "--out", tmp_path / "cmp").returncode == 0


def test_labels_of_the_wrong_length_are_an_input_error_everywhere(tmp_path):
    from fvae.data.arrays import load_labels
    from fvae.errors import InputError

    model = fvae.build_model("fvae", "mnist", num_classes=10, pad_to=None, flow_levels=2, encoder_blocks=1,
                             encoder_hidden=8, flow_steps=1, flow_width=16).eval()
    x = torch.rand(4, 1, 28, 28)
    three = torch.tensor([1, 2, 3])
    for call in (lambda: model.loss(x, three), lambda: model.sample(4, labels=three),
                 lambda: model.log_likelihood(x, 2, labels=three)):
        with pytest.raises(InputError, match=r"labels must be a \(4,\) tensor"):
            call()
    np.save(tmp_path / "labels.npy", np.arange(3))
    with pytest.raises(DataError, match="expected 4 integer labels"):
        load_labels(tmp_path / "labels.npy", 4)
