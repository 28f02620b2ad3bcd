"""Datasets: the embedded digits, image folders, and the errors for bad input."""
import json

import numpy as np
import pytest
from conftest import run_cli
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
    assert (image == int(train.files[3].stem) * 10).all()
    grey, _ = load_dataset(DataConfig(str(tmp_path)), "train", (1, 16, 16))[0]
    assert grey.shape == (1, 16, 16)


def test_an_image_folder_of_class_subfolders_gives_their_labels(tmp_path):
    from fvae.data.labels import class_counts, dataset_labels

    for name, count in (("cat", 12), ("dog", 8), ("emu", 10)):
        for i in range(count):
            _write(tmp_path / name / f"{i:02d}.png", np.full((20, 20, 3), 50, dtype=np.uint8))
    train = load_dataset(DataConfig(str(tmp_path)), "train", (3, 16, 16))
    assert train.classes == ["cat", "dog", "emu"]
    labels = dataset_labels(train)
    assert [train[i][1] for i in range(len(train))] == labels.tolist()
    assert class_counts(train, 3, "pets").tolist() == [sum(labels == c).item() for c in range(3)]
    assert labels.min() == 0 and labels.max() == 2
    with pytest.raises(DataError, match="set model.num_classes=3"):
        class_counts(train, 2, "pets")


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


def write_idx(folder, gzipped=False, count=None):
    """The embedded digits as the four original idx files (``count`` of each split), raw or gzipped."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = embedded_mnist(split).tensors
        images, labels = images[:count, 0].numpy(), labels[:count].numpy().astype(np.uint8)
        files = {f"{prefix}-images-idx3-ubyte": np.array([2051, len(images), 28, 28], dtype=">i4").tobytes()
                 + images.tobytes(),
                 f"{prefix}-labels-idx1-ubyte": np.array([2049, len(labels)], dtype=">i4").tobytes() + labels.tobytes()}
        for name, content in files.items():
            if gzipped:
                (folder / f"{name}.gz").write_bytes(gzip.compress(content))
            else:
                (folder / name).write_bytes(content)
    return folder


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("layout", ["root", "torchvision", "named"])
def test_fashion_mnist_from_idx_files_in_every_layout(tmp_path, gzipped, layout):
    folder = {"root": tmp_path, "torchvision": tmp_path / "FashionMNIST" / "raw",
              "named": tmp_path / "fashion-mnist"}[layout]
    write_idx(folder, gzipped)
    ds = load_dataset(DataConfig("fashion-mnist", root=str(tmp_path), download=False), "test", (1, 28, 28))
    assert torch.equal(ds.tensors[0], embedded_mnist("test").tensors[0])
    assert torch.equal(ds.tensors[1], embedded_mnist("test").tensors[1])


def test_with_no_root_debians_folder_is_found(tmp_path, monkeypatch):
    import fvae.data.idx
    import fvae.data.load

    monkeypatch.setattr(fvae.data.idx, "DEBIAN_ROOT", tmp_path / "usr-share-datasets")
    monkeypatch.setattr(fvae.data.load, "default_root", lambda: tmp_path / "empty-cache")
    write_idx(tmp_path / "usr-share-datasets" / "fashion-mnist", gzipped=True, count=100)
    ds = load_dataset(DataConfig("fashion-mnist", download=False), "train", (1, 28, 28))
    assert len(ds) == 100


def test_an_idx_folder_works_as_a_path(tmp_path):
    write_idx(tmp_path / "digits", count=64)
    ds = load_dataset(DataConfig(str(tmp_path / "digits")), "train", (1, 28, 28))
    assert len(ds) == 64 and ds.tensors[1].tolist() == embedded_mnist("train").tensors[1][:64].tolist()


def test_absent_idx_dataset_names_the_package_the_folders_and_the_files(tmp_path, monkeypatch):
    import fvae.data.idx

    monkeypatch.setattr(fvae.data.idx, "DEBIAN_ROOT", tmp_path / "nowhere")
    with pytest.raises(DataError) as error:
        load_dataset(DataConfig("fashion-mnist", root=str(tmp_path), download=False), "train", (1, 28, 28))
    message = str(error.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message and "train-images-idx3-ubyte[.gz]" in message
    assert "\n" not in message


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:-10], "truncated or damaged"),
    (lambda data: data[:6], "truncated"),
    (lambda data: b"\x00\x00\x0d\x03" + data[4:], "not an idx file of unsigned bytes"),
    (lambda data: b"", "not an idx file"),
])
def test_a_damaged_idx_file_is_a_one_line_error_naming_it(tmp_path, damage, message):
    folder = write_idx(tmp_path / "digits", count=32)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=message) as error:
        load_dataset(DataConfig(str(folder)), "train", (1, 28, 28))
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_broken_gzip_stream_is_a_one_line_error(tmp_path):
    folder = write_idx(tmp_path / "digits", gzipped=True, count=32)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="cannot read idx file"):
        load_dataset(DataConfig(str(folder)), "test", (1, 28, 28))


def test_fvae_train_on_fashion_mnist_by_its_preset_end_to_end(tmp_path):
    write_idx(tmp_path / "FashionMNIST" / "raw", gzipped=True, count=256)
    done = run_cli("train", "--preset", "fashion-mnist", "--data-root",
                           str(tmp_path), "--offline", "--out", str(tmp_path / "run"), "--max-steps", "2",
                           "--no-progress", "model.encoder_blocks=1", "model.encoder_hidden=8", "model.flow_steps=1",
                           "model.flow_width=8", "train.batch_size=16", "train.eval_batches=1",
                           "train.score_samples=0")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 2
    config = RunConfig.load_yaml(tmp_path / "run" / "config.yaml")
    assert config.data.name == "fashion-mnist" and config.train.score_temperature == 1.0


def test_unknown_dataset_name():
    with pytest.raises(DataError, match="unknown dataset 'imagenette'"):
        load_dataset(DataConfig("imagenette"), "train", (3, 32, 32))


def test_config_yaml_round_trip_and_overrides(tmp_path):
    config = apply_overrides(run_config("glow", "cifar10"), ["model.flow_steps=3", "train.temperatures=[0.5]"])
    config.save_yaml(tmp_path / "c.yaml")
    assert RunConfig.load_yaml(tmp_path / "c.yaml") == config
    assert config.model.flow_steps == (3, 3, 3) and config.train.temperatures == (0.5,)
    with pytest.raises(ValueError, match="unknown model config field 'flow_stepz'"):
        apply_overrides(config, ["model.flow_stepz=3"])


def _random_folder(root, count, size=(48, 40)):
    g = np.random.default_rng(0)
    for i in range(count):
        _write(root / f"{i:03d}.jpg", g.integers(0, 256, (*size, 3), dtype=np.uint8))
    return root


def test_prepare_writes_the_pixels_the_folder_gives(tmp_path):
    import json

    folder = _random_folder(tmp_path / "images", 30)
    done = run_cli("prepare", str(folder), "--preset", "cifar10",
                           "--out", str(tmp_path / "prepared"), "--workers", "2")
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
    again = run_cli("prepare", str(folder), "--out",
                            str(tmp_path / "prepared"))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_worker_processes_deliver_the_batches_of_one_process():
    from fvae.data.batches import EpochBatches

    dataset = embedded_mnist("train")
    one = EpochBatches(dataset, 32, seed=5).from_step(120)
    many = EpochBatches(dataset, 32, seed=5, num_workers=2).from_step(120)
    for _ in range(8):  # across the epoch boundary at step 125
        (step_a, a, labels_a, _), (step_b, b, labels_b, _) = next(one), next(many)
        assert step_a == step_b and torch.equal(a, b) and torch.equal(labels_a, labels_b)


@pytest.mark.parametrize("damage, message", [
    (lambda folder: (folder / "train_images.npy").write_bytes((folder / "train_images.npy").read_bytes()[:-500]),
     "train_images.npy is damaged or truncated"),
    (lambda folder: (folder / "train_labels.npy").write_bytes(b"not an array"), "train_labels.npy is damaged"),
    (lambda folder: (folder / "prepared.json").write_text("{"), "prepared.json is damaged"),
])
def test_a_damaged_prepared_folder_is_a_one_line_error(tmp_path, damage, message):
    from fvae.data.prepared import prepare

    folder = tmp_path / "prepared"
    digits = embedded_mnist("test")
    prepare({"train": digits, "test": digits}, "embedded", (1, 28, 28), folder, progress=False)
    damage(folder)
    done = run_cli("train", "--data", str(folder), "--out",
                           str(tmp_path / "run"), "--max-steps", "1", "--no-progress")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr
