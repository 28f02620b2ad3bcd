"""Every command on run folders made by a tiny ``fvae train``, as a user runs them."""
import json

import pytest
from conftest import run_cli

TINY = ["model.pad_to=null", "model.flow_levels=2",
        "model.encoder_blocks=1", "model.encoder_hidden=8", "model.flow_steps=1", "model.flow_width=16",
        "model.latent_dim=8", "train.batch_size=32", "train.eval_batches=2", "train.score_samples=200",
        "train.checkpoint_every=15"]


def fvae_cli(*args):
    return run_cli(*args)


def ok(*args):
    done = fvae_cli(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for model in ("fvae", "vae"):
        ok("train", "--model", model, "--max-steps", 30, "--no-progress", "--out", root / model, *TINY)
    return root


def test_eval_writes_every_number(runs):
    out = ok("eval", runs / "fvae", "--num-samples", 8, "--max-images", 64, "--score-samples", 200)
    record = json.loads((runs / "fvae" / "eval.json").read_text())
    metrics = record["metrics"]
    assert {"elbo_bpd", "iw_bpd", "recon_mse", "psnr", "fid", "precision", "recall", "recognizable",
            "num_images"} <= set(metrics)
    assert metrics["num_images"] == 64 and metrics["features"] == "judge-embedded-v1"
    assert metrics["score_images"] == 200 and 0 <= metrics["recognizable"] <= 1
    assert metrics["iw_bpd"] <= metrics["elbo_bpd"] + 0.01
    assert record["versions"]["torch"] and record["command"].startswith("fvae eval") and record["seconds"] > 0
    assert "recognizable" in out and "elbo_bpd" in out
    assert (runs / "fvae" / "evals.jsonl").exists()


@pytest.mark.slow  # an end-to-end run; the fast tier covers its parts
def test_out_names_a_new_folder_or_a_file(runs, tmp_path):
    ok("eval", runs / "fvae", "--num-samples", 2, "--max-images", 32, "--score-samples", 0, "--out", tmp_path / "a" / "b")
    ok("eval", runs / "fvae", "--num-samples", 2, "--max-images", 32, "--score-samples", 0,
       "--out", tmp_path / "c" / "mine.json")
    assert json.loads((tmp_path / "a" / "b" / "eval.json").read_text())["metrics"]["num_images"] == 32
    assert json.loads((tmp_path / "c" / "mine.json").read_text())["metrics"]["num_images"] == 32
    ok("reconstruct", runs / "fvae", "--num", 8, "--out", tmp_path / "pictures")
    ok("interpolate", runs / "fvae", "--rows", 2, "--out", tmp_path / "d" / "path.jpg")
    assert (tmp_path / "pictures" / "reconstructions.png").exists() and (tmp_path / "d" / "path.jpg").exists()


def test_sample_reconstruct_interpolate_write_pngs(runs, tmp_path):
    ok("sample", runs / "fvae", "--num", 16, "--temperatures", 1.0, 0.7, "--out", tmp_path)
    assert (tmp_path / "samples_T1.png").exists() and (tmp_path / "samples_T0.7.png").exists()
    ok("reconstruct", runs / "fvae", "--num", 16, "--out", tmp_path / "recon.png")
    ok("interpolate", runs / "fvae", "--rows", 3, "--out", tmp_path / "interp2.png")
    ok("interpolate", runs / "vae", "--images", 4, "--out", tmp_path / "interp4.png")
    from PIL import Image

    assert Image.open(tmp_path / "recon.png").size == (8 * 28 + 18, 4 * 28 + 10)  # 2 rows of inputs + 2 of outputs
    assert Image.open(tmp_path / "interp2.png").size == (9 * 28 + 20, 3 * 28 + 8)
    assert Image.open(tmp_path / "interp4.png").size == (9 * 28 + 20, 9 * 28 + 20)


def test_compare_writes_a_table_and_plots(runs, tmp_path):
    out = ok("compare", runs / "fvae", runs / "vae", "--out", tmp_path)
    rows = json.loads((tmp_path / "comparison.json").read_text())
    assert [r["model"] for r in rows] == ["fvae", "vae"]
    assert all(r["steps"] == 30 and r["parameters"] > 0 for r in rows)
    assert all(r[k] is not None for r in rows for k in ("fid", "precision", "recall", "recognizable"))
    assert (tmp_path / "comparison.png").stat().st_size > 10_000
    assert "| run | model |" in out


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    done = fvae_cli("eval", tmp_path)
    assert done.returncode == 2
    assert "no checkpoint at" in done.stderr
    done = fvae_cli("compare", tmp_path)
    assert done.returncode == 2 and "no metrics.jsonl" in done.stderr


@pytest.mark.slow  # an end-to-end run; the fast tier covers its parts
def test_a_class_conditional_run_draws_the_classes_asked_for_and_reports_both_bounds(tmp_path):
    run = tmp_path / "cond"
    ok("train", "--max-steps", 30, "--no-progress", "--out", run, *TINY, "model.num_classes=10")
    summary = json.loads((run / "summary.json").read_text())
    assert 0 <= summary["class_accuracy"] <= 1  # the trainer's score of samples drawn for every class
    ok("sample", run, "--classes", 7, "--num", 16, "--temperatures", 1.0, "--out", tmp_path / "sevens")
    ok("sample", run, "--temperatures", 1.0, "--out", tmp_path / "all")
    from PIL import Image

    assert Image.open(tmp_path / "sevens" / "samples_T1.png").size == (8 * 28 + 18, 2 * 28 + 6)
    assert Image.open(tmp_path / "all" / "samples_T1.png").size == (8 * 28 + 18, 10 * 28 + 22)  # a row a class
    ok("eval", run, "--num-samples", 2, "--max-images", 32, "--score-samples", 100)
    metrics = json.loads((run / "eval.json").read_text())["metrics"]
    assert metrics["marginal_iw_bpd"] >= metrics["iw_bpd"] - 0.05 and "class_accuracy" in metrics
    ok("interpolate", run, "--rows", 2, "--out", tmp_path / "interp.png")
    ok("reconstruct", run, "--num", 8, "--out", tmp_path / "recon.png")
    wrong = fvae_cli("sample", run, "--classes", 12)
    assert wrong.returncode == 2 and "classes 0..9" in wrong.stderr


def test_class_conditional_training_on_unlabelled_images_is_a_one_line_error(tmp_path):
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(40):
        Image.new("L", (28, 28), color=i).save(folder / f"{i}.png")
    done = fvae_cli("train", "--data", folder, "--max-steps", 2, "--out", tmp_path / "run", *TINY,
                    "model.num_classes=10")
    assert done.returncode == 2 and "needs labelled images" in done.stderr and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_eval_on_another_dataset_writes_per_image_bits_a_histogram_and_the_auroc(runs, tmp_path):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "blobs"
    folder.mkdir()
    g = np.random.default_rng(0)
    for i in range(50):  # smooth grey blobs: nothing like a digit
        Image.fromarray((g.random((7, 7)) * 255).astype(np.uint8)).resize((28, 28)).save(folder / f"{i:02d}.png")
    out = ok("eval", runs / "fvae", "--data", folder, "--num-samples", 2, "--max-images", 40, "--out", tmp_path / "ood")
    record = json.loads((tmp_path / "ood" / "eval-blobs.json").read_text())["metrics"]
    own, other = np.load(tmp_path / "ood" / "bpd-embedded.npy"), np.load(tmp_path / "ood" / "bpd-blobs.npy")
    assert len(own) == 40 and len(other) == 5  # every tenth image of a folder is a test image
    assert record["in_bpd"] == pytest.approx(own.mean()) and record["out_bpd"] == pytest.approx(other.mean())
    assert 0 <= record["auroc"] <= 1 and record["splits"]["embedded"]["bound"] == "iw"
    assert (tmp_path / "ood" / "bpd-embedded-vs-blobs.png").stat().st_size > 5_000
    assert "AUROC" in out
    same = fvae_cli("eval", runs / "fvae", "--data", "embedded")
    assert same.returncode == 2 and "own dataset" in same.stderr
