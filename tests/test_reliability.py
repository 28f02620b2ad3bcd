"""What survives what: damaged checkpoints, failed writes, a second writer, hostile config values,
unreadable images. Every fault here is injected for real (truncated and bit-flipped files, a
full tmpfs, a second process) or, where the machine cannot make one, by patching the writer."""
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import one_line_error, run_cli
import torch
from PIL import Image

import fvae.cli
import fvae.training.checkpoint
from fvae.data.datasets import ImageFolder
from fvae.config import ModelConfig, TrainConfig
from fvae.training.checkpoint import (
    list_checkpoints,
    load_model,
    newest_valid_checkpoint,
    verify,
)

TINY = ["model.pad_to=null", "model.flow_levels=2",
        "model.encoder_blocks=1", "model.encoder_hidden=8", "model.flow_steps=1", "model.flow_width=16",
        "train.batch_size=16", "train.eval_batches=1", "train.score_samples=0", "train.sample_every=1000"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli(*args, timeout=300):
    return run_cli(*args)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with three checkpoints (steps 4, 8, 12), kept pristine: tests copy it."""
    root = tmp_path_factory.mktemp("reliability") / "run"
    done = cli("train", "--no-progress", "--out", root, *TINY, "train.max_steps=12", "train.checkpoint_every=4")
    assert done.returncode == 0, done.stderr
    assert [p.name for p in list_checkpoints(root)] == ["step-00000004", "step-00000008", "step-00000012"]
    return root


@pytest.fixture
def copy(run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def newest(run_dir, name):
    return list_checkpoints(run_dir)[-1] / name


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


# --- checkpoint integrity ----------------------------------------------------------------------

def test_every_checkpoint_carries_a_manifest_that_verifies(run):
    for checkpoint in list_checkpoints(run):
        manifest = json.loads((checkpoint / "manifest.json").read_text())
        assert set(manifest) == {"model.safetensors", "ema.safetensors", "state.pt", "config.yaml"}
        assert all(len(entry["sha256"]) == 64 and entry["bytes"] > 0 for entry in manifest.values())
        assert verify(checkpoint) is None


@pytest.mark.parametrize("damage, name, why", [(truncate, "model.safetensors", "truncated"),
                                               (flip_a_bit, "state.pt", "SHA-256")])
def test_readers_and_resume_skip_a_damaged_newest_checkpoint(copy, damage, name, why):
    damage(newest(copy, name))
    assert why in verify(list_checkpoints(copy)[-1])
    done = cli("sample", copy, "--num", 4, "--out", copy / "pictures")
    assert done.returncode == 0, done.stderr
    assert "skipped 1 damaged newer checkpoint(s)" in done.stderr and name in done.stderr
    done = cli("train", "--no-progress", "--resume", "--out", copy, "train.max_steps=16")
    assert done.returncode == 0, done.stderr
    assert "skipped 1 damaged" in done.stderr
    assert json.loads((copy / "summary.json").read_text())["steps"] == 16
    assert newest_valid_checkpoint(copy).name == "step-00000016"


def test_naming_a_damaged_checkpoint_directly_is_an_error_naming_the_file(copy):
    truncate(newest(copy, "model.safetensors"))
    line = one_line_error(cli("eval", list_checkpoints(copy)[-1], "--num-samples", 0, "--score-samples", 0))
    assert "is damaged" in line and "model.safetensors" in line


def test_a_checkpoint_without_a_manifest_still_loads_with_a_note(copy, capsys):
    (newest(copy, "manifest.json")).unlink()
    model, _, checkpoint = load_model(copy)
    assert checkpoint.name == "step-00000012"
    assert "has no manifest.json" in capsys.readouterr().err


def test_every_checkpoint_damaged_is_a_clear_error(copy):
    for checkpoint in list_checkpoints(copy):
        truncate(checkpoint / "model.safetensors")
    line = one_line_error(cli("sample", copy, "--num", 2))
    assert "every checkpoint" in line and "damaged" in line


# --- failures while writing --------------------------------------------------------------------

def _assert_write_failure_handled(run_dir, done):
    line = one_line_error(done, code=1)
    assert "could not write" in line and "last good checkpoint is" in line and "step-00000012" in line
    assert not list((run_dir / "checkpoints").glob(".*tmp*")), "the temporary folder was left behind"
    assert [p.name for p in list_checkpoints(run_dir)] == ["step-00000004", "step-00000008", "step-00000012"]
    assert all(verify(p) is None for p in list_checkpoints(run_dir))


def test_a_full_disk_stops_training_with_the_last_good_checkpoint_named(run, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (the fault is also injected in the next test)")
    try:
        target = mount / "run"
        shutil.copytree(run, target, ignore=shutil.ignore_patterns("tensorboard"))
        filler = mount / "filler"
        with open(filler, "wb") as f:  # leave a little room: less than one checkpoint
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        filler.write_bytes(b"\0" * (filler.stat().st_size - 40_000))
        done = cli("train", "--no-progress", "--resume", "--out", target, "train.max_steps=16")
        _assert_write_failure_handled(target, done)
        # torch says "unexpected pos ..."; the message names the cause in words, with the numbers
        assert re.search(r"no space left on device \([0-9.]+ (bytes|kB|MB) free there; the checkpoint needs "
                         r"about [0-9.]+ (kB|MB)\)", done.stderr), done.stderr
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_failed_checkpoint_write_removes_its_temporary_folder(copy, monkeypatch, capsys):
    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fvae.training.checkpoint, "save_file", no_space)
    code = fvae.cli.main(["train", "--no-progress", "--resume", "--out", str(copy), "train.max_steps=16"])
    captured = capsys.readouterr()
    _assert_write_failure_handled(copy, subprocess.CompletedProcess([], code, captured.out, captured.err))
    assert "no space left on device" in captured.err


def test_a_write_failure_before_any_checkpoint_says_none_was_written(tmp_path, monkeypatch, capsys):
    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fvae.training.checkpoint, "save_file", no_space)
    code = fvae.cli.main(["train", "--no-progress", "--out", str(tmp_path / "run"), *TINY, "train.max_steps=2"])
    line = one_line_error(subprocess.CompletedProcess([], code, "", capsys.readouterr().err), code=1)
    assert "no space left on device" in line and "no checkpoint was written yet" in line and "none" not in line


# --- one writer per run folder -----------------------------------------------------------------

@pytest.mark.slow  # an end-to-end run; the fast tier covers its parts
def test_a_second_writer_is_refused_until_the_first_ends(copy):
    first = subprocess.Popen([sys.executable, "-m", "fvae.cli", "train", "--no-progress", "--resume", "--out",
                              str(copy), "train.max_steps=100000", "train.checkpoint_every=1000"],
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not _locked(copy):
            assert time.time() < deadline and first.poll() is None, "the first run never took the lock"
            time.sleep(0.1)
        line = one_line_error(cli("train", "--no-progress", "--resume", "--out", copy, "train.max_steps=20"))
        assert "in use by process" in line and str(first.pid) in line
        assert cli("sample", copy, "--num", 2, "--out", copy / "pictures").returncode == 0  # readers need no lock
    finally:
        first.kill()
        first.wait()
    done = cli("train", "--no-progress", "--resume", "--out", copy, "train.max_steps=14")
    assert done.returncode == 0, done.stderr  # the lock died with its process


def _locked(run_dir: Path) -> bool:
    import fcntl

    path = run_dir / ".lock"
    if not path.exists():
        return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


# --- every config value checked where it enters ------------------------------------------------

def _hostile_values(rule, rng):
    """Values the field's rule must refuse."""
    values = [None if not rule.optional else "nonsense", "abc", [], {"a": 1}, True, float("nan"), float("inf"),
              -float("inf"), "1e400"]
    if rule.type in (int, float):
        if rule.low is not None:
            values += [rule.low - 1, rule.low - rng.random() * 1e6]
        if rule.above is not None:
            values += [rule.above, rule.above - rng.random()]
        if rule.high is not None:
            values += [rule.high * 10 + 1, 1e300]
        if rule.type is int:
            values += [1.5, rng.random() + 0.01, "2.5"]
    if rule.choices:
        values += ["unknown", rule.choices[0].upper() + "x", 3]
    if rule.type is tuple:
        values += [[1], [1, 2, 3, 4], [-1, 2, 3], ["a", "b", "c"], [], [0.0]]
    if rule.type is bool:
        values += [2, "maybe", 0.5]
    if rule.type is str and not rule.choices:
        values = [v for v in values if isinstance(v, (list, dict)) or v is None] + [5, 0.5]
    return [v for v in values if not _accepted(rule, v)]


def _accepted(rule, value):
    try:
        rule.check("x", value)
        return True
    except ValueError:
        return False


def _yaml_text(value):
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    return json.dumps(value)


@pytest.mark.slow
def test_hostile_config_values_are_refused_in_one_line_with_nothing_written(tmp_path, capsys):
    rng = random.Random(0)
    cases = []
    for section, cls in (("model", ModelConfig), ("train", TrainConfig)):
        for f in cls.__dataclass_fields__.values():
            if "rule" in f.metadata:
                cases += [f"{section}.{f.name}={_yaml_text(v)}" for v in _hostile_values(f.metadata["rule"], rng)]
    cases += ["data.download=maybe", "data.name=[1, 2]", "data.root=5", "train.lr=[", "model=3", "train.lr",
              "nosection.x=1", "train.nofield=1", "model.likelihood=discretized"]
    cases.remove("model.likelihood=discretized")
    assert len(cases) > 200
    out = tmp_path / "run"
    for case in cases:
        code = fvae.cli.main(["train", "--no-progress", "--out", str(out), *TINY, case])
        captured = capsys.readouterr()
        assert code == 2, (case, captured.err)
        assert "Traceback" not in captured.err and captured.err.count("\n") == 1, (case, captured.err)
        assert not out.exists(), case
    for flags in (["--batch-size", "0"], ["--max-steps", "-5"], ["--lr", "-1"], ["--max-time", "0"],
                  ["--ema", "1.5"], ["--seed", "-3"], ["--model", "glow", "model.likelihood=discretized"]):
        code = fvae.cli.main(["train", "--no-progress", "--out", str(out), *flags])
        assert code == 2 and "Traceback" not in capsys.readouterr().err and not out.exists(), flags


@pytest.mark.parametrize("text, message", [
    ("model: [1, 2", "not valid YAML"),
    ("- just\n- a list", "must be a mapping"),
    ("train:\n  lr: -3", "train.lr"),
    ("train: 5", "expected a mapping"),
    ("model:\n  flow_levels: zero", "model.flow_levels"),
    ("unknown_section: {}", "unknown config sections"),
])
def test_bad_config_files_are_refused_in_one_line(tmp_path, text, message):
    (tmp_path / "run.yaml").write_text(text)
    line = one_line_error(cli("train", "--config", tmp_path / "run.yaml", "--out", tmp_path / "run"))
    assert message in line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # an end-to-end run; the fast tier covers its parts
def test_the_real_command_shows_no_traceback_for_bad_values(tmp_path):
    # one of each way in (an override, a flag, a path); every hostile value is checked in-process above
    for args in (["train.lr=abc"], ["--batch-size", "0"], ["--data", str(tmp_path / "nowhere")]):
        line = one_line_error(cli("train", "--out", tmp_path / "run", *args))
        assert line.startswith("fvae train: error:"), line
        assert not (tmp_path / "run").exists()


# --- data faults -------------------------------------------------------------------------------

def _folder(root, count, size=16):
    root.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(count):
        pixels = (torch.rand(size, size, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(root / f"{i:03d}.png")
    return root


def test_an_unreadable_image_is_skipped_and_counted(tmp_path):
    folder = _folder(tmp_path / "images", 40)
    train = ImageFolder(folder, "train", (1, 8, 8)).files
    train[0].write_bytes(b"this is not a png")  # a training image, unreadable from the first epoch on
    done = cli("train", "--no-progress", "--data", folder, "--out", tmp_path / "run", *TINY,
               "model.image_shape=[1,8,8]", "train.batch_size=8", "train.max_steps=12", "train.checkpoint_every=6")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["unreadable_images"] >= 2  # once per epoch (4 steps of 8 of 36 training images)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["unreadable_images"] == summary["unreadable_images"]


def test_a_training_set_below_one_batch_is_a_clear_error(tmp_path):
    folder = _folder(tmp_path / "images", 5)
    line = one_line_error(cli("train", "--data", folder, "--out", tmp_path / "run", *TINY,
                              "model.image_shape=[1,8,8]", "train.batch_size=16"))
    assert "fewer than one batch" in line
