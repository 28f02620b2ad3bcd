"""The CUDA path: every model on the GPU computes what it computes on the CPU, bf16 autocast
keeps the loss close, and the trainer runs there. Skipped where no GPU is (CI); run by
benchmarks/gpu_check.sh on a lent device."""
import pytest
import torch
from test_models import KINDS, images, tiny
from test_precision import compiled_and_eager_grad_norms

import fvae

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("kind", KINDS)
def test_the_gpu_computes_what_the_cpu_computes(kind):
    model = tiny(kind).double()
    x = images(8).double()
    model.loss(x)
    torch.manual_seed(0)
    u = torch.randn(8, *model.latent_shape, dtype=torch.float64)
    expected = model.posterior(model.to_model_space(x), u).z
    gpu = model.cuda()
    got = gpu.posterior(gpu.to_model_space(x.cuda()), u.cuda()).z.cpu()
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gpu.generate(got.cuda()).cpu(), model.cpu().generate(expected), rtol=1e-7, atol=1e-7)


def test_permutations_dense_on_the_gpu_give_what_they_give_gathered_on_the_cpu():
    """A flow mixing by ``shuffle``: its fused levels run the permutations as dense convolutions on
    CUDA and as gathers on the CPU (``fvae.flows.conv1x1.Permutation``); the bound and its gradients
    for the same noise agree (float64)."""
    model = tiny("fvae", mixing="shuffle").double()
    x = images(8).double()
    model.loss(x)  # ActNorm's initialisation: the levels fuse from here on
    u = torch.randn(8, *model.latent_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    losses, grads = [], []
    for device in ("cpu", "cuda"):
        model.to(device).zero_grad()
        reconstruction, kl, _ = model.log_weights(model.to_model_space(x.to(device)), u.to(device))
        loss = (reconstruction + kl).sum()
        loss.backward()
        losses.append(loss.item())
        grads.append([p.grad.cpu() for p in model.parameters() if p.grad is not None])
    assert losses[1] == pytest.approx(losses[0], rel=1e-9)
    for gpu, cpu in zip(*grads[::-1]):
        torch.testing.assert_close(gpu, cpu, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_autocast_on_the_gpu_keeps_the_loss(kind):
    model = tiny(kind).cuda()
    x = images(16).cuda()
    model.loss(x)
    torch.manual_seed(0)
    full = model.loss(x)
    torch.manual_seed(0)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        half = model.loss(x)
    assert half.dtype == torch.float32
    assert ((half - full).abs() <= 0.02 * 64 * 0.6931 + 2e-3 * full.abs()).all()


def test_the_trainer_runs_on_the_gpu_in_bf16(tmp_path):
    from fvae.config import apply_overrides
    from fvae.presets import run_config

    config = apply_overrides(run_config("fvae", "mnist"), [
        "model.encoder_blocks=1", "model.encoder_hidden=8", "model.flow_steps=1", "model.flow_width=16",
        "train.batch_size=16", "train.eval_batches=1", "train.score_samples=0", "train.max_steps=5",
        "train.precision=bf16"])
    model, summary = fvae.train(config=config, out=tmp_path, progress=False)
    assert summary["steps"] == 5 and next(model.parameters()).is_cuda


def test_the_compiled_step_is_one_cuda_graph_and_trains_as_the_eager_one(tmp_path):
    """``train.compile=true`` on a GPU: the whole step in one graph, captured as a CUDA graph (no
    input it updates left unmarked: Inductor counts no skip), its steps' gradient norms the eager
    ones'."""
    from torch._dynamo.utils import counters

    runs = compiled_and_eager_grad_norms(tmp_path, 6, "train.tf32=false")
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1 and counters["inductor"]["cudagraph_skips"] == 0
    assert runs[True] == pytest.approx(runs[False], rel=1e-3)
