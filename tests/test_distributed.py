"""Training in several processes as a user launches it: ``torchrun ... --no-python fvae train``, on
one node and on two (c10d rendezvous on 127.0.0.1, gloo), resumed with the same or another number
of processes, with no warnings from DDP."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fvae.training.checkpoint import list_checkpoints, load_state

TINY = ["model.pad_to=null", "model.flow_levels=2",
        "model.encoder_blocks=1", "model.encoder_hidden=8", "model.flow_steps=1", "model.flow_width=16",
        "train.batch_size=16", "train.eval_batches=1", "train.score_samples=0", "train.sample_every=1000"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
FVAE = ["--no-python", str(Path(sys.executable).with_name("fvae"))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(out: Path, steps: int, resume: bool = False) -> list[str]:
    return ["train", "--no-progress", "--out", str(out), "--max-steps", str(steps),
            *(["--resume"] if resume else []), *TINY, "train.checkpoint_every=4"]


def one_node(nproc: int, args: list[str]) -> subprocess.CompletedProcess:
    cmd = [*TORCHRUN, f"--nproc_per_node={nproc}", f"--master_port={free_port()}", *FVAE, *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)


def two_nodes(args: list[str]) -> list[subprocess.CompletedProcess]:
    """docs/engine.md's multi-node command, both nodes on this machine."""
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [subprocess.Popen([*TORCHRUN, "--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
                               f"--rdzv-endpoint={endpoint}", "--rdzv-id=fvae-test", *FVAE, *args],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = []
    for node in nodes:
        out, err = node.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(node.args, node.returncode, out, err))
    return results


def assert_no_warnings(done: subprocess.CompletedProcess) -> None:
    assert "Warning" not in done.stderr and "strides" not in done.stderr, done.stderr[-3000:]


@pytest.mark.slow  # an end-to-end run; the fast tier covers its parts
def test_resuming_with_another_number_of_processes_says_the_data_order_changes(tmp_path):
    two = one_node(2, train_args(tmp_path, 4))
    assert two.returncode == 0, two.stderr[-3000:]
    assert_no_warnings(two)
    one = subprocess.run([sys.executable, "-m", "fvae", *train_args(tmp_path, 8, resume=True)], env=ENV,
                         capture_output=True, text=True, timeout=300)  # 2 -> 1
    assert one.returncode == 0, one.stderr
    note = [line for line in one.stderr.splitlines() if "process(es)" in line]
    assert len(note) == 1 and "trained with 2 process(es), this run has 1" in note[0] and "another order" in note[0]
    assert load_state(list_checkpoints(tmp_path)[-1])["world_size"] == 1
    two = one_node(2, train_args(tmp_path, 12, resume=True))  # 1 -> 2
    assert two.returncode == 0, two.stderr[-3000:]
    assert "trained with 1 process(es), this run has 2" in two.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 12


@pytest.mark.slow  # an end-to-end run; the fast tier covers its parts
def test_two_nodes_on_one_machine_train_checkpoint_and_resume(tmp_path):
    for steps, resume in ((4, False), (8, True)):
        nodes = two_nodes(train_args(tmp_path, steps, resume))
        for node in nodes:
            assert node.returncode == 0, node.stderr[-3000:]
            assert_no_warnings(node)
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["world_size"] == 2 and summary["steps"] == steps
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000004", "step-00000008"]
