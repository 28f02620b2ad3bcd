"""Hugging Face folders: save -> load gives the same model, and the wrong folder is refused."""
import json

import pytest
from conftest import run_cli
import torch
from test_models import KINDS, images, tiny

import fvae
from fvae.models import PretrainedError
from fvae.training.checkpoint import load_model


@pytest.mark.parametrize("kind", KINDS)
def test_save_then_load_gives_the_same_loss_and_samples(kind, tmp_path):
    model = tiny(kind, likelihood="discretized" if kind != "glow" else "gaussian")
    x = images()
    model.loss(x)  # ActNorm's data-dependent initialisation
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.eval().save_pretrained(tmp_path / "folder", metrics={"elbo_bpd": 1.25}, preset="mnist")
    assert {p.name for p in (tmp_path / "folder").iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    loaded = fvae.from_pretrained(tmp_path / "folder")
    assert type(loaded) is type(model) and loaded.config == model.config
    for seed in (0, 1):
        torch.manual_seed(seed)
        expected_loss, expected_samples = model.loss(x), model.sample(4, 0.8)
        torch.manual_seed(seed)
        torch.testing.assert_close(loaded.loss(x), expected_loss, rtol=0, atol=0)
        torch.testing.assert_close(loaded.sample(4, 0.8), expected_samples, rtol=0, atol=0)
    card = (tmp_path / "folder" / "README.md").read_text()
    assert f"kind `{kind}`" in card and "1.25" in card and "fvae.from_pretrained" in card


def test_a_folder_of_another_kind_is_refused(tmp_path):
    tiny("vae").save_pretrained(tmp_path)
    with pytest.raises(PretrainedError, match="holds a 'vae' model"):
        fvae.FVAE.from_pretrained(tmp_path)
    assert isinstance(fvae.VAE.from_pretrained(tmp_path), fvae.VAE)


def test_a_folder_from_a_newer_fvae_is_refused(tmp_path):
    tiny("fvae").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["fvae_version"] = "9.0.0"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(PretrainedError, match="newer than this fvae"):
        fvae.from_pretrained(tmp_path)


@pytest.mark.parametrize("damage, message", [
    (lambda folder: (folder / "config.json").unlink(), "no config.json"),
    (lambda folder: (folder / "config.json").write_text("{not json"), "not valid JSON"),
    (lambda folder: (folder / "config.json").write_text('{"foo": 1}'), "was it saved by fvae"),
    (lambda folder: (folder / "model.safetensors").write_bytes(b"\0" * 10), "cannot read"),
])
def test_a_damaged_folder_is_a_clear_error(tmp_path, damage, message):
    tiny("fvae").save_pretrained(tmp_path)
    damage(tmp_path)
    with pytest.raises(PretrainedError, match=message):
        fvae.from_pretrained(tmp_path)


def test_export_writes_a_loadable_folder_from_a_run(tmp_path):
    run = tmp_path / "run"
    done = run_cli("train", "--max-steps", "4", "--ema", "0.9",
                           "--no-progress", "--out", str(run), "model.encoder_blocks=1", "model.encoder_hidden=8",
                           "model.flow_steps=1", "model.flow_width=16", "train.batch_size=16",
                           "train.eval_batches=1", "train.score_samples=0")
    assert done.returncode == 0, done.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train_precision"] in ("32", "bf16") and "precision" not in summary  # no score: no precision
    summary["precision"] = "bf16"  # what fvae 0.13.0 wrote there, over the sample score's precision
    (run / "summary.json").write_text(json.dumps(summary))
    done = run_cli("export", str(run), "--out", str(tmp_path / "hf"))
    assert done.returncode == 0, done.stderr
    exported = fvae.from_pretrained(tmp_path / "hf")
    ema, _, _ = load_model(run)
    for (name, a), b in zip(exported.state_dict().items(), ema.state_dict().values()):
        assert torch.equal(a, b), name
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "test_bpd" in card and "bf16" not in card
