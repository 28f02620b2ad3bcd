"""Every command on run folders made by a tiny ``fvae train``, as a user runs them."""
import json
import os
import subprocess
import sys

import pytest

TINY = ["model.encoder_blocks=1", "model.encoder_hidden=8", "model.flow_steps=1", "model.flow_width=16",
        "model.latent_dim=8", "train.batch_size=32", "train.eval_batches=2", "train.score_samples=200",
        "train.checkpoint_every=15"]


def fvae_cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fvae.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=600)


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
