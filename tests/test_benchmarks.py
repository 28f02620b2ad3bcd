"""The benchmark scripts run end to end (tiny budgets; the peers are an optional extra)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_compare_peers_runs_on_a_tiny_budget(tmp_path):
    pytest.importorskip("normflows")
    pytest.importorskip("pythae")
    done = subprocess.run([sys.executable, str(BENCHMARKS / "compare_peers.py"), "--budget", "2", "--iw-samples", "2",
                           "--fid-samples", "50", "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "peers.json").read_text())
    assert [r["model"] for r in result["rows"]] == ["fvae", "vae", "glow", "normflows_glow", "pythae_vae",
                                                    "pythae_vae_iaf"]
    for row in result["rows"]:
        assert row["steps"] > 0 and row["fid_classifier"] > 0
        assert ("exact_bpd" in row) or (row["iw_bpd"] <= row["elbo_bpd"] + 0.05)
    assert set(result["speedups"]) == {"glow_vs_normflows_train_images_per_s", "glow_vs_normflows_sample_images_per_s"}
