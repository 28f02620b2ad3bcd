"""Mixed precision and compilation: bf16 autocast (on the CPU here) cannot spoil a likelihood,
and a compiled step is the eager step."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_models import KINDS, images, tiny

import fvae
from fvae.config import apply_overrides
from fvae.flows import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    GaussianSplit,
    InvertibleConv1x1,
    InvertibleConv1x1LU,
    MultiScaleGlow,
)
from fvae.presets import run_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def trained(kind):
    """A tiny model moved off its initialisation, so that every part matters."""
    torch.manual_seed(0)
    model = tiny(kind)
    x = images(16)
    model.loss(x)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(20):
        optimizer.zero_grad()
        model.loss(x).mean().backward()
        optimizer.step()
    return model.eval(), x


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_loss_is_within_a_stated_tolerance_of_fp32(kind):
    """bf16 nets change the loss by at most 0.02 bits/dim plus 0.2% of the loss (bf16 rounds to
    0.4%): the log-dets, ActNorm, 1x1 convolutions, priors, residual streams and sums stay fp32."""
    model, x = trained(kind)
    torch.manual_seed(1)
    full = model.loss(x)
    torch.manual_seed(1)
    with torch.autocast(**BF16):
        half = model.loss(x)
    assert half.dtype == torch.float32
    nats_per_bit = x[0].numel() * math.log(2)
    assert ((half - full).abs() <= 0.02 * nats_per_bit + 2e-3 * full.abs()).all(), (half - full) / nats_per_bit


@pytest.mark.parametrize("block", [
    lambda: ActNorm(4), lambda: InvertibleConv1x1(4), lambda: InvertibleConv1x1LU(4), lambda: AffineCoupling(4, 16),
    lambda: AdditiveCoupling(4, 16), lambda: MultiScaleGlow((4, 8, 8), 2, 2, 16, squeeze_first=False)])
def test_inverses_round_trip_and_logdets_stay_fp32_under_bf16_autocast(block):
    flow = block()
    x = torch.randn(8, 4, 8, 8)
    flow(x)  # ActNorm initialisation
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
        with torch.autocast(**BF16):
            y, logdet = flow(x)
            back = flow.inverse(y)
        full_y, full_logdet = flow(x)
    assert y.dtype == logdet.dtype == back.dtype == torch.float32
    torch.testing.assert_close(back, x, atol=1e-4, rtol=0)
    # the log-det is that of the map actually applied (computed in fp32), close to the fp32 map's
    torch.testing.assert_close(logdet, full_logdet, atol=0.05 * x[0].numel() ** 0.5, rtol=0.01)


def test_the_split_prior_whitens_in_fp32():
    split = GaussianSplit(2, 2)
    with torch.no_grad():
        split.conv.weight.normal_(0, 0.3)
    x = torch.randn(4, 4, 4, 4)
    with torch.autocast(**BF16):
        y, logdet = split(x)
        back = split.inverse(y)
    assert y.dtype == logdet.dtype == torch.float32
    torch.testing.assert_close(back, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("amx", [True, False])
@pytest.mark.parametrize("avx512_bf16", [True, False])
def test_a_cpu_multiplies_bf16_in_hardware_where_it_has_avx512_bf16_with_or_without_amx(avx512_bf16, amx,
                                                                                        monkeypatch):
    """AVX-512 BF16's dot products are what oneDNN's bf16 convolutions need to run natively (measured
    faster than fp32 on a Xeon with AMX and on an AMD EPYC without); AMX tiles alone are not."""
    from fvae.training import precision

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert precision.cpu_has_bf16_matmul() is (avx512_bf16 and torch.backends.mkldnn.is_available())


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_on_a_cpu_that_multiplies_bf16_in_hardware(native, monkeypatch, tmp_path):
    """``train.precision=auto`` (the default) trains in bf16 where it was measured faster, a CPU that
    multiplies bf16 in hardware, and in fp32 elsewhere: an emulating CPU, a GPU; ``32`` and ``bf16``
    are obeyed everywhere."""
    from fvae.training import precision
    from fvae.training.trainer import Trainer

    monkeypatch.setattr(precision, "cpu_has_bf16_matmul", lambda: native)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert precision.use_bf16("auto", cpu) is native and not precision.use_bf16("auto", cuda)
    assert precision.use_bf16("bf16", cpu) and precision.use_bf16("bf16", cuda)
    assert not precision.use_bf16("32", cpu) and not precision.use_bf16("32", cuda)
    assert run_config("fvae", "mnist").train.precision == "auto"
    config = apply_overrides(run_config("fvae", "mnist"), [
        "model.encoder_blocks=1", "model.encoder_hidden=8", "model.flow_steps=1", "model.flow_width=16",
        "train.batch_size=16", "train.eval_batches=1", "train.score_samples=20", "train.max_steps=2"])
    seen = []
    real = precision.autocast_for
    monkeypatch.setattr("fvae.training.trainer.autocast_for",
                        lambda device, bf16: seen.append(bf16) or real(device, bf16))
    trainer = Trainer(config, tmp_path, progress=False)
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    assert seen and all(b is native for b in seen)
    assert summary["train_precision"] == ("bf16" if native else "32")
    assert 0 <= summary["precision"] <= 1  # the sample score's precision, not overwritten by the training's


def _train(precision, steps, out):
    config = apply_overrides(run_config("fvae", "mnist"), [
        "model.encoder_blocks=1", "model.encoder_hidden=16", "model.flow_steps=2", "model.flow_width=32",
        "model.likelihood=discretized", "model.sigma1_init=0.05", "model.sigma2_init=0.05",
        "train.batch_size=32", "train.eval_batches=8", "train.score_samples=0", f"train.max_steps={steps}",
        f"train.checkpoint_every={steps}", f"train.precision={precision}"])
    return fvae.train(config=config, out=out, progress=False)[1]


@pytest.mark.slow  # an end-to-end run; the fast tier covers its parts
def test_200_bf16_steps_reach_the_test_bits_per_dim_of_200_fp32_steps(tmp_path):
    full = _train("32", 200, tmp_path / "fp32")["test_bpd"]
    half = _train("bf16", 200, tmp_path / "bf16")["test_bpd"]
    assert abs(half - full) < 0.05, (half, full)


@pytest.mark.parametrize("kind", ["fvae", "glow"])
def test_entropy_floor_holds_in_bf16(kind):
    """Data drawn uniformly from 4 fixed 8-bit images has entropy log 4 nats an image; no bound
    on -log P may report less, in bf16 as in fp32, however well the model fits."""
    torch.manual_seed(0)
    extra = dict(likelihood="discretized", sigma1_init=0.05, sigma2_init=0.05) if kind == "fvae" else {}
    model = tiny(kind, **extra)
    pixels = torch.randint(0, 256, (4, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    floor = math.log2(4) / 64
    for step in range(150):
        x = (pixels[torch.randint(0, 4, (32,))] + torch.rand(32, 1, 8, 8)) / 256
        with torch.autocast(**BF16):
            loss = model.loss(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x = (pixels.repeat(8, 1, 1, 1) + torch.rand(32, 1, 8, 8)) / 256
    with torch.no_grad(), torch.autocast(**BF16):
        bounds = {"elbo": fvae.bits_per_dim(model.loss(x).mean().item(), 64),
                  "iw": fvae.bits_per_dim(-model.log_likelihood(x, 16).mean().item(), 64)}
    assert all(b >= floor for b in bounds.values()), bounds


@pytest.mark.slow  # two minutes of compilation on 2 cores
def test_compiled_training_matches_eager_and_resumes_from_its_checkpoints(tmp_path):
    common = ["model.encoder_blocks=1", "model.encoder_hidden=8", "model.flow_steps=1", "model.flow_width=16",
              "train.batch_size=16", "train.eval_batches=1", "train.score_samples=0", "train.checkpoint_every=3",
              "train.precision=32"]

    def run(out, *extra):
        config = apply_overrides(run_config("fvae", "mnist"), common + list(extra))
        return fvae.train(config=config, out=out, progress=False)

    eager_model, eager = run(tmp_path / "eager", "train.max_steps=6")
    _, compiled = run(tmp_path / "compiled", "train.max_steps=6", "train.compile=true")
    assert compiled["test_bpd"] == pytest.approx(eager["test_bpd"], abs=1e-3)
    x = images(8, (1, 28, 28))
    torch.manual_seed(0)
    expected = eager_model(x)["loss"]
    torch.manual_seed(0)
    torch._inductor.config.fallback_random = True  # the same posterior noise as eager
    try:
        torch.testing.assert_close(torch.compile(eager_model)(x)["loss"], expected, rtol=1e-5, atol=1e-3)
    finally:
        torch._inductor.config.fallback_random = False
    # a compiled run resumes an eager run's checkpoint and the other way round
    config = apply_overrides(run_config("fvae", "mnist"), common + ["train.max_steps=9", "train.compile=true"])
    _, resumed = fvae.train(config=config, out=tmp_path / "eager", resume=True, progress=False)
    assert resumed["steps"] == 9
    config = apply_overrides(run_config("fvae", "mnist"), common + ["train.max_steps=9"])
    _, resumed = fvae.train(config=config, out=tmp_path / "compiled", resume=True, progress=False)
    assert resumed["steps"] == 9


@pytest.mark.slow  # a minute of compilation in two processes; the suite's 2-rank run without compile is in test_train
def test_two_ranks_train_compiled_in_bf16_to_identical_weights(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
           str(Path(__file__).with_name("ddp_worker.py")), str(tmp_path), "model.encoder_blocks=1",
           "model.encoder_hidden=8", "model.flow_steps=1", "model.flow_width=16", "train.batch_size=16",
           "train.eval_batches=1", "train.score_samples=0", "train.max_steps=4", "train.checkpoint_every=4",
           "train.compile=true", "train.precision=bf16", "train.sample_every=1000"]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    for k in rank0:
        torch.testing.assert_close(rank0[k], rank1[k], atol=0, rtol=0, msg=k)
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 4


def compiled_and_eager_grad_norms(tmp_path, steps: int, *overrides: str) -> dict[bool, list[float]]:
    """The gradient norms of ``steps`` training steps of a tiny f-VAE with EMA, eager (``False``) and
    with ``train.compile=true`` (``True``), the same posterior noise in both; ``torch._dynamo``'s
    counters then hold the compiled run's."""
    from torch._dynamo.utils import counters

    from fvae.training.trainer import Trainer

    tiny = ["model.pad_to=null", "model.flow_levels=2", "model.encoder_blocks=1", "model.encoder_hidden=8",
            "model.flow_steps=1", "model.flow_width=16", "train.batch_size=16", "train.score_samples=0",
            "train.ema_decay=0.9", "train.warmup_steps=10", "train.precision=32", *overrides]
    runs = {}
    for compiled in (False, True):
        config = apply_overrides(run_config("fvae", "mnist"), tiny + [f"train.compile={str(compiled).lower()}"])
        trainer = Trainer(config, tmp_path / str(compiled), progress=False)
        counters.clear()
        batches = trainer.batches.from_step(0)
        try:
            with torch._inductor.config.patch(fallback_random=True):  # the same posterior noise as eager
                runs[compiled] = [float(trainer._train_step(*next(batches))[1]) for _ in range(steps)]
        finally:
            trainer.close()
    return runs


@pytest.mark.slow  # a minute of compilation on 2 cores
@pytest.mark.parametrize("mixing", ["conv1x1_lu", "shuffle"])
def test_the_whole_compiled_training_step_is_one_graph_without_breaks_or_recompiles(tmp_path, mixing):
    """``train.compile=true``: forward, ``torch.autograd.grad``, clipping, Adam and the EMA traced as one
    graph (``torch._dynamo`` counts no graph break and one graph over steps whose learning rate
    changes); its steps match the eager ones. ``shuffle``: a permutation, gathered on the CPU by an
    autograd function of its own (``fvae.flows.conv1x1.Permutation``)."""
    from torch._dynamo.utils import counters

    runs = compiled_and_eager_grad_norms(tmp_path, 4, f"model.mixing={mixing}")
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1
    assert runs[True] == pytest.approx(runs[False], rel=1e-3)  # the gradient norms of the same steps
