"""The sample score: its distances against references, and the ruler validated on degraded digits."""
import json

import numpy as np
import pytest
from conftest import run_cli
import scipy.linalg
import torch

from fvae.data import embedded_mnist
from fvae.scoring.degrade import DEGRADATIONS, degrade, shuffle_patches
from fvae.scoring.judge import Judge, augment, none_images, train_judge
from fvae.scoring.score import (
    SCORE_KEYS,
    SampleScorer,
    frechet_distance,
    judge_path,
    laplacian_energy,
    load_judge,
    manifold_precision_recall,
    scorer_for,
)


def test_frechet_distance_matches_scipy():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 6, generator=g, dtype=torch.float64)
    b = 0.5 * torch.randn(400, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g,
                                                                                    dtype=torch.float64) + 1.0
    ca, cb = np.cov(a.numpy().T), np.cov(b.numpy().T)
    expected = (np.sum((a.numpy().mean(0) - b.numpy().mean(0)) ** 2) + np.trace(ca + cb)
                - 2 * np.trace(scipy.linalg.sqrtm(ca @ cb).real))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_precision_and_recall_see_a_dropped_mode_and_an_invented_one():
    g = torch.Generator().manual_seed(0)
    mode_a = torch.randn(400, 4, generator=g, dtype=torch.float64)
    mode_b = torch.randn(400, 4, generator=g, dtype=torch.float64) + 50
    real = torch.cat([mode_a, mode_b])
    same = torch.cat([torch.randn(400, 4, generator=g, dtype=torch.float64),
                      torch.randn(400, 4, generator=g, dtype=torch.float64) + 50])
    precision, recall = manifold_precision_recall(real, same)
    assert precision > 0.9 and recall > 0.9
    # samples of one mode only: all precise, half the real data uncovered
    precision, recall = manifold_precision_recall(real, same[:400])
    assert precision > 0.9 and recall == pytest.approx(0.5, abs=0.06)
    # half the samples far from any real image
    invented = torch.cat([same[:200], same[400:600], torch.randn(400, 4, generator=g, dtype=torch.float64) - 50])
    precision, recall = manifold_precision_recall(real, invented)
    assert precision == pytest.approx(0.5, abs=0.06) and recall > 0.8


def test_laplacian_energy_of_known_images():
    # a checkerboard of 0 and 1: every valid response is +-4, so the mean square is 16
    board = (torch.arange(5)[:, None] + torch.arange(5)[None]) % 2
    assert laplacian_energy(board.float().expand(3, 1, 5, 5)) == pytest.approx(16.0)
    # a linear ramp has no curvature; a constant image none either
    ramp = torch.linspace(0, 1, 6).expand(2, 1, 6, 6)
    assert laplacian_energy(ramp) == pytest.approx(0.0, abs=1e-12)
    assert laplacian_energy(torch.full((2, 1, 6, 6), 0.3)) == pytest.approx(0.0, abs=1e-12)
    # one bright pixel in the middle of a 3x3 image: the single valid response is -4
    dot = torch.zeros(1, 1, 3, 3)
    dot[0, 0, 1, 1] = 1
    assert laplacian_energy(dot) == pytest.approx(16.0)


def test_shuffle_patches_moves_exactly_the_share_asked():
    x = torch.arange(2 * 28 * 28, dtype=torch.float32).view(2, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(shuffle_patches(x, 0.0, g), x)
    out = shuffle_patches(x, 0.5, g)
    patches = lambda t: t.view(2, 4, 7, 4, 7).permute(0, 1, 3, 2, 4).reshape(2, 16, 49)  # noqa: E731
    moved = (patches(out) != patches(x)).any(2).sum(1)
    assert moved.tolist() == [8, 8]
    assert torch.equal(out.flatten(1).sort(1).values, x.flatten(1).sort(1).values)  # same pixels, moved


@pytest.fixture(scope="module")
def scorer():
    """The shipped judge of the embedded digits, with half the test split as the reference."""
    images = embedded_mnist("test").tensors[0].float() / 255
    return SampleScorer(load_judge("embedded", None, 1), images[0::2], "judge-embedded"), images[1::2]


def test_the_judge_of_the_embedded_digits_ships_with_fvae():
    assert judge_path("embedded", 1).exists()


def test_real_held_out_digits_are_recognizable(scorer):
    scorer, held_out = scorer
    score = scorer.score(held_out)
    assert score["recognizable"] >= 0.9
    assert score["precision"] > 0.8 and score["recall"] > 0.8


def test_class_accuracy_reads_held_out_digits_as_their_own_class_and_shuffled_labels_at_chance(scorer):
    scorer, held_out = scorer
    labels = embedded_mnist("test").tensors[1][1::2]
    own = scorer.score(held_out, labels)["class_accuracy"]
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    chance = scorer.score(held_out, shuffled)["class_accuracy"]
    assert own >= 0.95 and 0.03 < chance < 0.2, (own, chance)
    assert "class_accuracy" not in scorer.score(held_out)
    with pytest.raises(ValueError, match="class indices"):
        scorer.score(held_out, labels + 10)


def test_score_command_takes_the_labels_the_images_were_drawn_for(tmp_path):
    test = embedded_mnist("test")
    np.save(tmp_path / "digits.npy", test.tensors[0][:100].numpy())
    (tmp_path / "labels.txt").write_text("\n".join(str(int(y)) for y in test.tensors[1][:100]))
    out = tmp_path / "score.json"
    done = run_cli("score", str(tmp_path / "digits.npy"), "--labels",
                           str(tmp_path / "labels.txt"), "--json", str(out))
    assert done.returncode == 0, done.stderr
    assert "class_accuracy" in done.stdout and json.loads(out.read_text())["class_accuracy"] >= 0.9
    (tmp_path / "short.txt").write_text("1\n2\n")
    bad = run_cli("score", str(tmp_path / "digits.npy"), "--labels",
                          str(tmp_path / "short.txt"))
    assert bad.returncode == 2 and "expected 100 integer labels" in bad.stderr


@pytest.mark.parametrize("kind", list(DEGRADATIONS))
def test_the_score_worsens_with_every_step_of_each_degradation(scorer, kind):
    scorer, held_out = scorer
    g = torch.Generator().manual_seed(0)
    scores = [scorer.score(degrade(held_out, kind, s, g)) for s in DEGRADATIONS[kind]]
    fids = [s["fid"] for s in scores]
    recognizable = [s["recognizable"] for s in scores]
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert all(b <= a + 0.02 for a, b in zip(recognizable, recognizable[1:])), recognizable
    assert recognizable[-1] < recognizable[0] - 0.2


def test_sharpness_is_one_for_real_digits_and_falls_with_every_blur_step(scorer):
    scorer, held_out = scorer
    assert 0.9 <= scorer.score(held_out)["sharpness"] <= 1.1
    g = torch.Generator().manual_seed(0)
    sharpness = [scorer.score(degrade(held_out, "blur", s, g))["sharpness"] for s in DEGRADATIONS["blur"]]
    assert all(a > b for a, b in zip(sharpness, sharpness[1:])), sharpness
    assert sharpness[DEGRADATIONS["blur"].index(1)] < 0.15
    # noise raises it: it is read beside FID and recognizable, never alone
    assert scorer.score(degrade(held_out, "additive_noise", 0.2, g))["sharpness"] > 2


def test_readable_blurred_digits_rank_above_shuffled_patches(scorer):
    scorer, held_out = scorer
    g = torch.Generator().manual_seed(0)
    blurred = scorer.score(degrade(held_out, "blur", 1.0, g))
    for share in DEGRADATIONS["shuffled_patches"][1:]:
        shuffled = scorer.score(degrade(held_out, "shuffled_patches", share, g))
        assert blurred["fid"] < shuffled["fid"]
        assert blurred["recognizable"] > shuffled["recognizable"]


def test_training_a_judge_on_a_labelled_dataset_separates_its_classes_from_none():
    images, labels = embedded_mnist("train").tensors
    keep = labels < 2  # zeros and ones: a few dozen steps suffice
    judge = train_judge(images[keep], labels[keep], steps=60, batch_size=64, progress=False)
    assert isinstance(judge, Judge) and judge.num_classes == 2
    test_images, test_labels = embedded_mnist("test").tensors
    x = test_images[test_labels < 2].float() / 255
    with torch.no_grad():
        predicted = judge(x).argmax(1)
        g = torch.Generator().manual_seed(1)
        none = judge(none_images(augment(x, g), test_labels[test_labels < 2], g)).argmax(1)
    assert (predicted == test_labels[test_labels < 2]).float().mean() > 0.9
    assert (none == 2).float().mean() > 0.6


def test_score_command_on_a_folder_and_an_array(tmp_path):
    from PIL import Image

    images = embedded_mnist("test").tensors[0][:200]
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image[0].numpy()).save(folder / f"{i:03d}.png")
    np.save(tmp_path / "blank.npy", np.zeros((200, 28, 28), dtype=np.uint8))
    scores = {}
    for name, path in (("real", folder), ("blank", tmp_path / "blank.npy")):
        out = tmp_path / f"{name}.json"
        done = run_cli("score", str(path), "--json", str(out))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "recognizable" in done.stdout and "sharpness" in done.stdout
        scores[name] = json.loads(out.read_text())
        assert set(SCORE_KEYS) | {"num_images", "features"} <= set(scores[name])
        assert scores[name]["num_images"] == 200
    assert scores["real"]["recognizable"] > 0.9 > 0.1 > scores["blank"]["recognizable"]
    assert scores["real"]["fid"] < scores["blank"]["fid"]


@pytest.mark.parametrize("content, message", [
    (np.zeros((5, 3, 28, 28), dtype=np.uint8), "shape"),
    (np.full((5, 28, 28), 2.0, dtype=np.float32), r"\[0, 1\]"),
    (np.zeros((5, 28), dtype=np.uint8), "expected images of shape"),
])
def test_score_command_rejects_bad_arrays_in_one_line(tmp_path, content, message):
    np.save(tmp_path / "bad.npy", content)
    done = run_cli("score", str(tmp_path / "bad.npy"))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and __import__("re").search(message, done.stderr)


def test_scorer_for_a_dataset_without_a_shipped_judge_trains_and_caches_one(monkeypatch, tmp_path, capsys):
    import fvae.scoring.score

    monkeypatch.setenv("FVAE_CACHE", str(tmp_path))
    calls = []

    def quick(images, labels, progress):
        calls.append((len(images), progress))
        return train_judge(images, labels, steps=2, batch_size=8, progress=False)

    monkeypatch.setattr(fvae.scoring.score, "train_judge", quick)
    train, test = embedded_mnist("train"), embedded_mnist("test")
    for _ in range(2):
        scorer = scorer_for("my-digits", train, test, 1)
    assert calls == [(len(train), True)]  # trained once, with progress shown, then loaded from the cache
    notice = capsys.readouterr().err
    assert "training a judge for my-digits" in notice and "minutes" in notice and "cached at" in notice
    assert judge_path("my-digits", 1).exists() and str(tmp_path) in str(judge_path("my-digits", 1))
    assert scorer.score(test.tensors[0][:50].float() / 255)["num_images"] == 50


def test_the_two_recognizable_rules_and_the_rule_saved_with_a_judge(tmp_path):
    from fvae.scoring.score import _load, save_judge

    probs = torch.tensor([[0.95, 0.03, 0.02],   # one class: recognizable by both rules
                          [0.50, 0.45, 0.05],   # split between two classes: an object, not one class
                          [0.30, 0.30, 0.40]])  # mostly "none": neither
    images = torch.rand(4, 1, 8, 8)
    expected = {"class": [True, False, False], "object": [True, True, False]}
    for rule in ("class", "object"):
        judge = Judge(1, 2, recognizable_rule=rule)
        save_judge(judge, tmp_path / f"{rule}.safetensors")
        loaded = _load(tmp_path / f"{rule}.safetensors")
        assert loaded.recognizable_rule == rule
        scorer = SampleScorer(loaded, images, "test")
        assert scorer.recognizable(probs).tolist() == expected[rule]
