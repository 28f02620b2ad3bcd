"""Training from Python: fvae.train on arrays, tensors and datasets, with the CLI's run folder."""
import json

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import fvae
from fvae.config import ConfigError, apply_overrides
from fvae.data import DataError, embedded_mnist
from fvae.presets import run_config
from fvae.training.checkpoint import list_checkpoints, load_model

TINY = ["model.pad_to=null", "model.flow_levels=2",
        "model.encoder_blocks=1", "model.encoder_hidden=8", "model.flow_steps=1", "model.flow_width=16",
        "train.eval_batches=1", "train.score_samples=0"]


def tiny_config():
    return apply_overrides(run_config("fvae", "mnist"), TINY)


def digits(n=200):
    return embedded_mnist("train").tensors[0][:n, 0].numpy()  # (n, 28, 28) uint8


@pytest.mark.parametrize("as_tensor", [False, True])
def test_train_on_an_array_writes_the_run_folder_and_returns_the_model(tmp_path, as_tensor):
    data = digits() if not as_tensor else torch.from_numpy(digits())
    model, summary = fvae.train(config=tiny_config(), data=data, out=tmp_path, progress=False, max_steps=6,
                                batch_size=16, lr=2e-3)
    assert isinstance(model, fvae.FVAE) and not model.training
    assert summary["steps"] == 6 and np.isfinite(summary["test_bpd"])
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "summary.json").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 6
    loaded, config, _ = load_model(tmp_path)
    assert config.train.lr == 2e-3 and config.train.max_steps == 6
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_train_on_a_dataset_and_resume(tmp_path):
    images, labels = embedded_mnist("train").tensors
    data = TensorDataset(images[:160], labels[:160])
    fvae.train(config=tiny_config(), data=data, out=tmp_path, progress=False, max_steps=4, batch_size=16)
    _, summary = fvae.train(config=tiny_config(), data=data, out=tmp_path, progress=False, max_steps=8,
                            batch_size=16, resume=True)
    assert summary["steps"] == 8 and len(list_checkpoints(tmp_path)) == 2


@pytest.mark.parametrize("data, message", [
    (np.zeros((50, 5, 28, 28), dtype=np.uint8), "1 or 3 channels"),
    (np.zeros((50, 28, 28), dtype=np.float32), "must be uint8"),
    (np.zeros((5, 28, 28), dtype=np.uint8), "fewer than one batch"),
])
def test_unusable_data_is_a_clear_error(tmp_path, data, message):
    with pytest.raises(DataError, match=message):
        fvae.train(config=tiny_config(), data=data, out=tmp_path / "run", progress=False, max_steps=2,
                   batch_size=16)
    assert not (tmp_path / "run").exists()


def test_unknown_or_bad_fields_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown train config field"):
        fvae.train(config=tiny_config(), data=digits(), out=tmp_path / "a", max_step=3)
    with pytest.raises(ConfigError, match="train.lr"):
        fvae.train(config=tiny_config(), data=digits(), out=tmp_path / "b", lr=-1.0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
