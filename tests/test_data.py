"""Datasets: the embedded digits, image folders, and the errors for bad input."""
import numpy as np
import pytest
import torch
from PIL import Image

from fvae.config import DataConfig, RunConfig, apply_overrides
from fvae.data import DataError, dequantize, embedded_mnist, load_dataset
from fvae.presets import run_config


def test_embedded_split_is_fixed_disjoint_and_class_balanced():
    train, test = embedded_mnist("train"), embedded_mnist("test")
    assert len(train) == 4000 and len(test) == 1000
    assert torch.bincount(train.tensors[1]).tolist() == [400] * 10
    assert torch.bincount(test.tensors[1]).tolist() == [100] * 10
    assert train.tensors[0].dtype == torch.uint8 and train.tensors[0].shape[1:] == (1, 28, 28)
    train_rows = {bytes(x.numpy()) for x in train.tensors[0]}
    assert not any(bytes(x.numpy()) in train_rows for x in test.tensors[0])
    assert torch.equal(embedded_mnist("test").tensors[0], test.tensors[0])


def test_dequantize_stays_in_its_bin():
    k = torch.randint(0, 256, (1000,), dtype=torch.uint8)
    x = dequantize(k)
    assert (x >= k / 256).all() and (x < (k.float() + 1) / 256).all()


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_crops_resizes_and_splits(tmp_path):
    for i in range(20):
        _write(tmp_path / "sub" / f"{i:02d}.png", np.full((40, 60, 3), i * 10, dtype=np.uint8))
    train = load_dataset(DataConfig(str(tmp_path)), "train", (3, 16, 16))
    test = load_dataset(DataConfig(str(tmp_path)), "test", (3, 16, 16))
    assert len(train) == 18 and len(test) == 2
    image, label = train[3]
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8 and label == -1
    assert (image == 30).all()
    grey, _ = load_dataset(DataConfig(str(tmp_path)), "train", (1, 16, 16))[0]
    assert grey.shape == (1, 16, 16)


def test_unreadable_image_is_named(tmp_path):
    _write(tmp_path / "good.png", np.zeros((32, 32), dtype=np.uint8))
    (tmp_path / "broken.png").write_bytes(b"this is not a png")
    ds = load_dataset(DataConfig(str(tmp_path)), "train", (1, 28, 28))
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png"):
        [ds[i] for i in range(len(ds))]


def test_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("no pictures here")
    with pytest.raises(DataError, match="no images"):
        load_dataset(DataConfig(str(tmp_path)), "train", (1, 28, 28))


def test_image_smaller_than_the_preset(tmp_path):
    _write(tmp_path / "small.png", np.zeros((20, 20, 3), dtype=np.uint8))
    ds = load_dataset(DataConfig(str(tmp_path)), "train", (3, 64, 64))
    with pytest.raises(DataError, match="20x20, smaller than the preset's 64x64"):
        ds[0]


def test_dataset_of_another_size_than_the_preset():
    with pytest.raises(DataError, match=r"shape \(1, 28, 28\) but the model takes \(3, 32, 32\)"):
        load_dataset(DataConfig("embedded"), "train", (3, 32, 32))


def test_absent_torchvision_dataset_offline(tmp_path):
    with pytest.raises(DataError, match=r"'cifar10' is not under .* could not be downloaded"):
        load_dataset(DataConfig("cifar10", root=str(tmp_path), download=False), "train", (3, 32, 32))


def test_torchvision_mnist_from_local_idx_files(tmp_path):
    """torchvision's MNIST read from IDX files written here from the embedded digits: no download."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = embedded_mnist(split).tensors
        images = images[:, 0].numpy()
        header = np.array([2051, len(images), 28, 28], dtype=">i4").tobytes()
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        header = np.array([2049, len(labels)], dtype=">i4").tobytes()
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(header + labels.numpy().astype(np.uint8).tobytes())
    ds = load_dataset(DataConfig("mnist", root=str(tmp_path), download=False), "test", (1, 28, 28))
    assert len(ds) == 1000
    assert torch.equal(ds.tensors[0], embedded_mnist("test").tensors[0])


def test_unknown_dataset_name():
    with pytest.raises(DataError, match="unknown dataset 'imagenette'"):
        load_dataset(DataConfig("imagenette"), "train", (3, 32, 32))


def test_config_yaml_round_trip_and_overrides(tmp_path):
    config = apply_overrides(run_config("glow", "cifar10"), ["model.flow_steps=3", "train.temperatures=[0.5]"])
    config.save_yaml(tmp_path / "c.yaml")
    assert RunConfig.load_yaml(tmp_path / "c.yaml") == config
    assert config.model.flow_steps == 3 and config.train.temperatures == (0.5,)
    with pytest.raises(ValueError, match="unknown model config field 'flow_stepz'"):
        apply_overrides(config, ["model.flow_stepz=3"])


def _random_folder(root, count, size=(48, 40)):
    g = np.random.default_rng(0)
    for i in range(count):
        _write(root / f"{i:03d}.jpg", g.integers(0, 256, (*size, 3), dtype=np.uint8))
    return root


def test_prepare_writes_the_pixels_the_folder_gives(tmp_path):
    import json
    import subprocess
    import sys

    folder = _random_folder(tmp_path / "images", 30)
    done = subprocess.run([sys.executable, "-m", "fvae.cli", "prepare", str(folder), "--preset", "cifar10",
                           "--out", str(tmp_path / "prepared"), "--workers", "2"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    info = json.loads((tmp_path / "prepared" / "prepared.json").read_text())
    assert info["counts"] == {"train": 27, "test": 3} and info["image_shape"] == [3, 32, 32]
    for split in ("train", "test"):
        raw = load_dataset(DataConfig(str(folder)), split, (3, 32, 32))
        prepared = load_dataset(DataConfig(str(tmp_path / "prepared")), split, (3, 32, 32))
        assert len(raw) == len(prepared)
        for i in range(len(raw)):
            assert torch.equal(raw[i][0], prepared[i][0]) and prepared[i][1] == -1
    with pytest.raises(DataError, match="prepared for images of shape"):
        load_dataset(DataConfig(str(tmp_path / "prepared")), "train", (3, 64, 64))
    again = subprocess.run([sys.executable, "-m", "fvae.cli", "prepare", str(folder), "--out",
                            str(tmp_path / "prepared")], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_worker_processes_deliver_the_batches_of_one_process():
    from fvae.data.batches import EpochBatches

    dataset = embedded_mnist("train")
    one = EpochBatches(dataset, 32, seed=5).from_step(120)
    many = EpochBatches(dataset, 32, seed=5, num_workers=2).from_step(120)
    for _ in range(8):  # across the epoch boundary at step 125
        (step_a, a, _), (step_b, b, _) = next(one), next(many)
        assert step_a == step_b and torch.equal(a, b)
