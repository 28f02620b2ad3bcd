"""Your own data: any image shape from Python, every config field by name, range hints that fit
the data, and folder splits that do not leak."""
from collections import Counter

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import fvae
from fvae.config import ConfigError
from fvae.data.datasets import DataError, ImageFolder
from fvae.data.folder_split import file_group
from fvae.models.layout import fit_to_shape, squeezes
from fvae.presets import model_config

TINY = {"train.max_steps": 2, "train.batch_size": 8, "train.eval_batches": 1, "train.score_samples": 0,
        "train.sample_every": 1000, "model": {"encoder_hidden": 8, "encoder_blocks": 1, "flow_steps": 1,
                                              "flow_widths": 16}}


@pytest.mark.parametrize("shape", [(40, 8, 8), (40, 28, 28), (40, 3, 32, 32), (40, 3, 48, 64)])
def test_arrays_of_any_shape_train_a_model_laid_out_for_them(shape, tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    model, summary = fvae.train("fvae", data=images, out=tmp_path / "run", progress=False, **TINY)
    image_shape = (1, *shape[1:]) if len(shape) == 3 else shape[1:]
    assert tuple(model.sample(2).shape) == (2, *image_shape) and np.isfinite(summary["test_bpd"])
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]
    assert tuple(saved["image_shape"]) == image_shape and saved["flow_widths"] == [16] * len(saved["flow_steps"]) and saved["encoder_hidden"] == 8
    err = capsys.readouterr().err
    assert ("not the mnist preset's" in err) == (image_shape != (1, 28, 28))


def test_the_layout_pads_and_cuts_levels_to_the_images_size():
    base = model_config("fvae", "mnist")  # E squeezes once, F five levels: 28 padded to 32
    assert squeezes(base) == 5 and base.pad_to == 32
    eight, changed = fit_to_shape(base, (1, 8, 8))
    assert squeezes(eight) == 3 and eight.pad_to is None and eight.flow_levels == 3
    assert eight.flow_widths == base.flow_widths[:3] and "model.flow_levels=3" in changed
    wide, _ = fit_to_shape(base, (3, 48, 64))
    assert wide.pad_to == 64 and squeezes(wide) == 5
    assert fit_to_shape(base, (1, 28, 28)) == (base, "")
    for kind in ("fvae", "glow", "vae", "composite"):
        fitted, _ = fit_to_shape(model_config(kind, "mnist"), (3, 12, 20))
        model = fvae.model_from_config(fitted)
        x = torch.rand(2, 3, 12, 20)
        assert torch.isfinite(model.loss(x)).all() and model.sample(1).shape == (1, 3, 12, 20)


def test_every_config_field_can_be_set_from_python_and_unknown_ones_are_refused(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (20, 8, 8), dtype=np.uint8)
    with pytest.raises(ConfigError, match="unknown model config field 'width'"):
        fvae.train(data=images, **{"model.width": 64})
    with pytest.raises(ConfigError, match="unknown train config field 'widht'"):
        fvae.train(data=images, widht=3)
    with pytest.raises(ConfigError, match="model.flow_widths"):
        fvae.train(data=images, **{"model.flow_widths": -1})


@pytest.mark.parametrize("values, hint", [
    (np.arange(64.0).reshape(1, 8, 8) % 17, r"\(x \* 255 / 16\)"),
    (np.linspace(0, 1, 64).reshape(1, 8, 8), r"\(x \* 255\)\.round"),
    (np.linspace(-1, 1, 64).reshape(1, 8, 8), r"\(\(x - \(-1\)\) \* 255 / 2\)"),
])
def test_the_range_hint_fits_the_values_it_sees(values, hint):
    with pytest.raises(DataError, match=hint):
        fvae.train(data=np.repeat(values, 20, axis=0))


def test_integer_arrays_within_0_255_are_taken_as_they_are():
    from fvae.training.pipeline import images_dataset

    ints = np.random.default_rng(0).integers(0, 256, (3, 8, 8)).astype(np.int64)
    image, label = images_dataset(ints)[1]
    assert image.dtype == torch.uint8 and torch.equal(image[0], torch.as_tensor(ints[1], dtype=torch.uint8))


def _digits_folder(root, per_class=18, classes=10):
    for c in range(classes):
        for i in range(per_class):
            path = root / str(c) / f"{c * 1000 + i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8), 20 * c, np.uint8)).save(path)


def test_a_folder_split_holds_out_a_tenth_of_every_class(tmp_path):
    _digits_folder(tmp_path, per_class=18)  # 180 digits, as in the issue (40 of 180 test digits were 3s)
    train, test = (ImageFolder(tmp_path, s, (1, 8, 8)) for s in ("train", "test"))
    assert Counter(test.labels) == {c: 2 for c in range(10)} and len(train) == 160
    assert not set(train.files) & set(test.files)
    assert all(test.labels[i] == int(f.parent.name) for i, f in enumerate(test.files))


def test_frames_and_crops_of_one_source_stay_on_one_side(tmp_path):
    assert file_group(tmp_path / "clip3_0042.png") == "clip3" == file_group(tmp_path / "clip3-7.png")
    assert file_group(tmp_path / "cat017_crop2.png") == "cat017_crop"
    assert file_group(tmp_path / "IMG_1234.jpg") == "IMG_1234" and file_group(tmp_path / "00017.png") == "00017"
    for clip in range(30):
        for frame in range(6):
            Image.fromarray(np.full((8, 8), clip, np.uint8)).save(tmp_path / f"clip{clip}_{frame:04d}.png")
    test = ImageFolder(tmp_path, "test", (1, 8, 8))
    train = ImageFolder(tmp_path, "train", (1, 8, 8))
    clips = lambda ds: {file_group(f) for f in ds.files}  # noqa: E731
    assert len(test) == 18 and not clips(test) & clips(train)


def test_the_split_barely_moves_when_files_are_added(tmp_path):
    _digits_folder(tmp_path, per_class=30, classes=2)
    before = set(ImageFolder(tmp_path, "test", (1, 8, 8)).files)
    for i in range(30, 40):  # a third more images in each class
        for c in range(2):
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / str(c) / f"{c * 1000 + i:05d}.png")
    after = set(ImageFolder(tmp_path, "test", (1, 8, 8)).files)
    assert len(after) == 8 and len(before - after) <= 2  # at most the margin of each class moves


def test_a_test_subfolder_is_the_test_split(tmp_path, capsys):
    _digits_folder(tmp_path / "train", per_class=12, classes=3)
    _digits_folder(tmp_path / "test", per_class=2, classes=3)
    train, test = (ImageFolder(tmp_path, s, (1, 8, 8)) for s in ("train", "test"))
    assert len(train) == 36 and len(test) == 6 and train.classes == test.classes == ["0", "1", "2"]
    assert all("test" in f.parts for f in test.files) and sorted(set(test.labels)) == [0, 1, 2]
    assert test.how == "the test/ subfolder"
    fvae.train(data=str(tmp_path), out=tmp_path / "run", progress=False,
               **{**TINY, "model.image_shape": (1, 8, 8), "model.pad_to": None, "model.flow_levels": 2})
    assert "data: 36 training and 6 test images (held out: the test/ subfolder)" in capsys.readouterr().err
