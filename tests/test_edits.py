"""Editing in latent space: class transfer, attribute directions, continuous contexts, and the
style measures their benchmarks use."""

import numpy as np
import pytest
from conftest import run_cli
import torch
from PIL import Image

import fvae
from fvae.data.datasets import embedded_mnist
from fvae.errors import InputError
from fvae.models.priors import LatentPrior
from fvae.scoring.style import ink_mass, slant, stroke_thickness

TINY = dict(pad_to=None, flow_levels=2, encoder_blocks=1, encoder_hidden=8, flow_steps=1, flow_width=16)


def _bar(width: int, shear: float = 0.0) -> torch.Tensor:
    """A vertical bar ``width`` pixels wide, 20 tall, its column moving ``shear`` per row upwards."""
    image = torch.zeros(1, 1, 28, 28)
    for row in range(4, 24):
        centre = 14 + shear * (14 - row)
        left = int(round(centre - width / 2))
        image[0, 0, row, left:left + width] = 1
    return image


def test_thickness_and_slant_measure_a_bars_width_and_shear():
    for width in (2, 3, 5):
        assert abs(stroke_thickness(_bar(width)).item() - width) / width < 0.25
    assert abs(slant(_bar(3)).item()) < 1e-6
    assert slant(_bar(3, 0.3)).item() == pytest.approx(0.3, abs=0.05)
    assert slant(_bar(3, -0.3)).item() == pytest.approx(-0.3, abs=0.05)
    assert ink_mass(_bar(4)).item() == pytest.approx(80 / 784)


@pytest.mark.parametrize("components, ar_width", [(1, None), (3, None), (1, 16)])
def test_recoloring_keeps_a_latents_place_and_inverts(components, ar_width):
    torch.manual_seed(0)
    prior = LatentPrior((4, 2, 2), 8, num_classes=5, components=components, ar_width=ar_width).double()
    with torch.no_grad():
        for p in prior.parameters():
            p.normal_(0, 0.5)
    z = torch.randn(6, 4, 2, 2, dtype=torch.float64)
    y, to = torch.arange(6) % 5, (torch.arange(6) + 2) % 5
    assert torch.allclose(prior.recolor(z, y, y), z, atol=1e-10)
    moved = prior.recolor(z, y, to)
    assert not torch.allclose(moved, z) and torch.equal(moved.flatten(1)[:, :-8], z.flatten(1)[:, :-8])
    if components == 1:  # a mixture may pick another component on the way back
        assert torch.allclose(prior.recolor(moved, to, y), z, atol=1e-8)


def _conditional_model():
    torch.manual_seed(0)
    return fvae.build_model("fvae", "mnist", num_classes=10, **TINY).eval()


def test_transfer_to_the_own_class_at_temperature_1_is_the_reconstruction():
    model = _conditional_model()
    x = torch.rand(3, 1, 28, 28) * 0.99
    y = torch.tensor([1, 4, 7])
    out = model.transfer(x, y, [4, 1, 7])
    assert out.shape == (3, 3, 1, 28, 28)
    assert torch.allclose(out[2, 2], model.decode(model.encode(x, y), y)[2], atol=1e-5)
    assert torch.allclose(out[0, 1], model.decode(model.encode(x, y), y)[0], atol=1e-5)
    with pytest.raises(InputError, match="class-conditional"):
        fvae.build_model("fvae", "mnist", **TINY).transfer(x, y, [1])


def test_edit_at_strength_0_reconstructs_and_the_direction_has_the_latents_shape():
    model = fvae.build_model("fvae", "mnist", **TINY).eval()
    a, b, x = (torch.rand(4, 1, 28, 28) * 0.99 for _ in range(3))
    direction = model.latent_direction(a, b)
    assert direction.shape == model.latent_shape
    out = model.edit(x, direction, [0.0, 1.0])
    assert torch.allclose(out[:, 0], model.decode(model.encode(x)), atol=1e-5)
    with pytest.raises(InputError, match="latents' shape"):
        model.edit(x, direction.flatten(), [1.0])


def _thin_and_thick(count: int = 15):
    images, labels = embedded_mnist("train").tensors
    x = (images.float() + 0.5) / 256
    ink = ink_mass(x)
    thin, thick = [], []
    for c in range(10):
        members = (labels == c).nonzero().squeeze(1)
        ordered = members[ink[members].argsort()]
        thin.append(ordered[:count])
        thick.append(ordered[-count:])
    return x[torch.cat(thin)], x[torch.cat(thick)]


def test_a_thin_to_thick_direction_thickens_digits_monotonically():
    model = fvae.from_pretrained("fvae-mnist").eval()
    thin, thick = _thin_and_thick()
    images = embedded_mnist("test").tensors[0][::100]  # ten test digits
    out = model.edit((images.float() + 0.5) / 256, model.latent_direction(thin, thick), [-1, 0, 1, 2])
    ink = [ink_mass(out[:, i]).mean().item() for i in range(4)]
    thickness = [stroke_thickness(out[:, i]).mean().item() for i in range(4)]
    assert ink == sorted(ink) and thickness == sorted(thickness) and thickness[-1] > 1.5 * thickness[1]


def cli(*args):
    return run_cli(*args)


def test_fvae_transfer_and_edit_write_their_grids(tmp_path):
    model = _conditional_model()
    model.save_pretrained(tmp_path / "cond")
    digits = embedded_mnist("test").tensors[0]
    for i in (0, 500):
        Image.fromarray(digits[i, 0].numpy()).save(tmp_path / f"digit{i}.png")
    done = cli("transfer", tmp_path / "cond", tmp_path / "digit0.png", tmp_path / "digit500.png",
               "--out", tmp_path / "transfer.png")
    assert done.returncode == 0, done.stderr
    assert "classes read by the model" in done.stdout
    assert Image.open(tmp_path / "transfer.png").size == (11 * 28 + 12 * 2, 2 * 28 + 3 * 2)
    done = cli("transfer", tmp_path / "cond", tmp_path / "digit0.png", "--classes", "0", "--to", "3", "5",
               "--out", tmp_path / "two.png")
    assert done.returncode == 0 and Image.open(tmp_path / "two.png").size == (3 * 28 + 4 * 2, 28 + 2 * 2)
    np.save(tmp_path / "a.npy", digits[:8].numpy())
    np.save(tmp_path / "b.npy", digits[8:16].numpy())
    done = cli("edit", "fvae-mnist", "--from", tmp_path / "a.npy", "--to", tmp_path / "b.npy", tmp_path / "digit0.png",
               "--strengths", "-1,0,1", "--out", tmp_path / "edit.png")
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "edit.png").size == (3 * 28 + 4 * 2, 28 + 2 * 2)
    done = cli("edit", "fvae-mnist", "--from", tmp_path / "a.npy", "--to", tmp_path / "b.npy", tmp_path / "digit0.png",
               "--strengths", "1,nan")
    assert done.returncode == 2 and "not a finite number" in done.stderr


# --- continuous context --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fvae", "vae", "glow", "composite"])
def test_a_context_model_is_affine_in_its_context_and_checks_it(kind):
    torch.manual_seed(0)
    model = fvae.build_model(kind, "mnist", num_context=2, class_couplings=True, class_decoder=True, **TINY).double()
    with torch.no_grad():
        for p in model.parameters():  # away from the zero inits that hide a condition's effect
            p.add_(torch.randn_like(p), alpha=0.1)
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64) * 0.99
    z = torch.randn(2, *model.latent_shape, dtype=torch.float64)
    a, b = torch.randn(2, 2, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    gen = lambda c: model.generate(z, model.prior.conditions(c, 2))  # noqa: E731
    mean = lambda c: model.prior._top(model.prior.conditions(c, 2), 2)[0]  # noqa: E731  the top prior's means
    assert torch.allclose(mean((a + b) / 2), (mean(a) + mean(b)) / 2, atol=1e-10)
    assert not torch.allclose(gen(a), gen(b))
    assert torch.isfinite(model.loss(x, a)).all()
    with pytest.raises(InputError, match=r"pass a \(2, 2\) float tensor, got none"):
        model.loss(x)
    with pytest.raises(InputError, match="float tensor"):
        model.loss(x, torch.tensor([1, 2]))
    with pytest.raises(InputError, match="finite"):
        model.loss(x, torch.full((2, 2), float("nan"), dtype=torch.float64))


def test_fvae_train_with_a_context_array_samples_with_the_context_asked_or_seen(tmp_path):
    images = embedded_mnist("train").tensors[0][:200]
    ink = ink_mass(images.float() / 255)
    model, summary = fvae.train("fvae", data=images, context=ink, out=tmp_path / "run", progress=False,
                                max_steps=2, batch_size=8, eval_batches=1, score_samples=0,
                                model={**TINY, "class_couplings": True})
    assert model.num_context == 1 and np.isfinite(summary["test_bpd"])
    bank = model.prior.context_bank
    assert bank.min() >= ink.min() - 1e-6 and bank.max() <= ink.max() + 1e-6 and bank.std() > 0
    assert model.sample(3, context=torch.tensor([[0.1], [0.2], [0.3]])).shape == (3, 1, 28, 28)
    assert model.sample(3).shape == (3, 1, 28, 28)  # contexts drawn from the training set's
    with pytest.raises(Exception, match="context must be"):
        fvae.train("fvae", data=images, context=ink[:10])
    from fvae.config import ConfigError
    with pytest.raises(ConfigError, match="not both"):
        fvae.build_model("fvae", "mnist", num_classes=10, num_context=1)
