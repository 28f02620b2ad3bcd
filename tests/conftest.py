import os
import tempfile

import pytest
import torch


def pytest_configure(config):
    # one cache (the FID classifier) for the whole session, subprocesses included, never the user's
    os.environ["FVAE_CACHE"] = tempfile.mkdtemp(prefix="fvae-test-cache-")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def perturb(module: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    """Move every parameter off its initial value, so that zero-initialised layers are tested too."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def affine_glow():
    """A Glow on 1x4x4 images whose flow is a known affine map, and the Gaussian it defines.

    The flow is: squeeze, ActNorm and a 1x1 convolution set here, an additive coupling whose
    zero-initialised net makes it the identity. Each 2x2 patch ``v_p`` (4 values) maps to
    ``z_p = M (v_p + b)``, ``M = W diag(exp(s))``, so ``v_p ~ N(-b, (M^T M)^-1)``.
    """
    import fvae

    model = fvae.build_model("glow", "mnist", image_shape=(1, 4, 4), pad_to=None, flow_levels=1, flow_steps=1,
                             flow_width=8, coupling="additive", mixing="conv1x1", dequant_sigma=1e-4).double()
    actnorm, conv, _ = model.flow.flows[0].blocks[0].blocks
    g = torch.Generator().manual_seed(1)
    bias = 0.05 * torch.randn(1, 4, 1, 1, generator=g, dtype=torch.float64)
    log_scale = 2.0 + 0.5 * torch.randn(1, 4, 1, 1, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 4, generator=g, dtype=torch.float64) + 2 * torch.eye(4, dtype=torch.float64)
    with torch.no_grad():
        actnorm.bias.copy_(bias)
        actnorm.log_scale.copy_(log_scale)
        actnorm.initialized.fill_(True)
        conv.weight.copy_(weight)
    m = weight @ torch.diag(log_scale.flatten().exp())
    gaussian = torch.distributions.MultivariateNormal(-bias.flatten(), precision_matrix=m.T @ m)
    return model, gaussian


def to_patches(model, x):
    """Images ``(B, 1, 4, 4)`` in [0, 1) -> model-space 2x2 patches ``(B, 4, 4)`` (as the squeeze groups them)."""
    return torch.nn.functional.pixel_unshuffle(model.to_model_space(x), 2).permute(0, 2, 3, 1).reshape(len(x), -1, 4)


def from_patches(model, patches):
    """The inverse of :func:`to_patches`."""
    v = patches.reshape(len(patches), 2, 2, 4).permute(0, 3, 1, 2)
    return torch.nn.functional.pixel_shuffle(v, 2) / model.data_scale + 0.5


def one_line_error(done, code=2):
    """The one stderr line (notes and the run's data line aside) of a command that failed with ``code``,
    no traceback."""
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith(("note:", "data:"))]
    assert len(lines) == 1, done.stderr
    return lines[0]


def run_cli(*args, cwd=None, timeout=None):
    """``fvae ARGS`` run in this process (no interpreter start-up or imports to pay), as a
    ``CompletedProcess`` with its exit code and its stdout and stderr."""
    import contextlib
    import io
    import subprocess

    import fvae.cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            (contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext()):
        code = fvae.cli.main([str(a) for a in args])
    return subprocess.CompletedProcess(["fvae", *map(str, args)], code, out.getvalue(), err.getvalue())
