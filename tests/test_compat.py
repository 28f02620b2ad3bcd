"""Runs and Hugging Face folders written by earlier fvae releases still load and compute the same.

``tests/fixtures/v0.1`` and ``v0.2`` hold tiny runs (2 steps) of each model kind made by fvae 0.1
and 0.2 themselves, each with ``expected.safetensors``: what that release's model computed on
four test digits (``encode``, ``sample`` and ``loss`` from seed 0). ``v0.4`` holds class-conditional
runs made by fvae 0.4.0's ``fvae train --max-steps 2 model.num_classes=10`` (tiny sizes: their
config.yaml), whose coupling nets did not take the class (``model.class_couplings`` is absent from
their config): the same, at the four digits' labels.
"""
import shutil
from pathlib import Path

import pytest
from conftest import run_cli
import torch
from safetensors.torch import load_file

import fvae
from fvae.training.checkpoint import load_model

FIXTURES = Path(__file__).with_name("fixtures")
RUNS = [(version, kind) for version in ("v0.1", "v0.2") for kind in ("fvae", "vae", "glow")]


def outputs(model, images, labels=None):
    torch.manual_seed(0)
    encoded, samples = model.encode(images, labels), model.sample(4, temperature=0.7, labels=labels)
    torch.manual_seed(0)
    return {"encoded": encoded, "samples": samples, "loss": model.loss(images, labels).detach()}


@pytest.mark.parametrize("version, kind", RUNS)
def test_runs_of_earlier_releases_load_and_compute_what_they_computed(version, kind):
    run = FIXTURES / version / kind
    expected = load_file(run / "expected.safetensors")
    model, config, _ = load_model(run)
    assert config.model.kind == kind
    for name, value in outputs(model, expected["images"]).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-5, msg=f"{version} {kind}: {name}")


@pytest.mark.parametrize("kind", ["fvae", "glow"])
def test_class_conditional_runs_of_fvae_0_4_load_and_compute_what_they_computed(kind):
    run = FIXTURES / "v0.4" / f"{kind}-conditional"
    expected = load_file(run / "expected.safetensors")
    model, config, _ = load_model(run)
    assert config.model.num_classes == 10 and not config.model.class_couplings
    for name, value in outputs(model, expected["images"], expected["labels"]).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-5, msg=f"v0.4 {kind}: {name}")


def test_a_hub_folder_of_fvae_0_2_loads_as_its_run():
    expected = load_file(FIXTURES / "v0.2" / "fvae" / "expected.safetensors")
    model = fvae.from_pretrained(FIXTURES / "v0.2" / "fvae-hub")
    for name, value in outputs(model, expected["images"]).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("version", ["v0.1", "v0.2"])
def test_commands_and_resume_work_on_runs_of_earlier_releases(version, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / version / "fvae", run)
    for args in (["sample", str(run), "--num", "4"], ["train", "--resume", "--out", str(run), "--max-steps", "3",
                                                      "--no-progress"]):
        done = run_cli(*args)
        assert done.returncode == 0, done.stderr
    assert (run / "samples_T1.png").exists()
    assert load_model(run)[2].name == "step-00000003"
