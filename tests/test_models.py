"""The models and the general loss: closed forms, exact densities, gradients, training."""
import math

import pytest
import torch
from conftest import affine_glow, perturb, to_patches

import fvae
from fvae.models.base import standard_normal_log_prob

KINDS = ("fvae", "vae", "glow", "composite")
# every kind; the f-VAE with a deeper top level and a net for the split prior; the f-VAE and Glow on
# images padded from 8x8 (to 16x16, its levels of their own steps and widths down to a 1x1 top; to 12x12);
# the f-VAE with an autoregressive top prior
VARIANTS = (*KINDS, "fvae-top-split", "fvae-pad", "glow-pad", "fvae-ar")
TINY = dict(image_shape=(1, 8, 8), pad_to=None, encoder_blocks=1, encoder_hidden=8, flow_levels=2,
            flow_steps=2, flow_width=16, inner_flow_steps=1, latent_dim=6)
VARIANT_OVERRIDES = {
    "fvae-top-split": ("fvae", {"flow_steps": (2, 3), "split_prior_width": 8}),
    "fvae-pad": ("fvae", {"pad_to": 16, "encoder_levels": 2, "flow_levels": 3, "flow_steps": (2, 1, 1),
                          "flow_widths": (16, 8, 8), "pad_value": 3}),
    "glow-pad": ("glow", {"pad_to": 12, "flow_levels": 2}),
    "fvae-ar": ("fvae", {"prior_ar_width": 12}),
    "fvae-fit-after": ("fvae", {"prior_components": 3, "prior_fit": "after"}),
    "fvae-class-couplings": ("fvae", {"class_couplings": True}),
    "glow-class-couplings": ("glow", {"class_couplings": True}),
    "fvae-class-decoder": ("fvae", {"class_decoder": True}),
    "vae-class-decoder": ("vae", {"class_decoder": True}),
}


def slow_except(values, fast):
    """``values`` for ``parametrize``, those not in ``fast`` marked slow: the fast tier checks a
    property on the main kinds, the slow tier on every variant."""
    return [v if v in fast else pytest.param(*(v if isinstance(v, tuple) else (v,)), marks=pytest.mark.slow)
            for v in values]


def tiny(kind, **overrides):
    if kind in VARIANT_OVERRIDES:
        kind, extra = VARIANT_OVERRIDES[kind]
        overrides = {**extra, **overrides}
    config = {**TINY, **({"encoder_levels": 1} if kind != "glow" else {}), **overrides}
    return fvae.build_model(kind, "mnist", **config)


def images(n=8, shape=(1, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return ((torch.randint(0, 256, (n, *shape), generator=g) + torch.rand(n, *shape, generator=g)) / 256)


def test_bits_per_dim_matches_hand_computation():
    # bpd = (nats + D ln 256) / (D ln 2) = 8 + nats / (D ln 2)
    assert fvae.bits_per_dim(0.0, 784) == pytest.approx(8.0)
    assert fvae.bits_per_dim(784 * math.log(2), 784) == pytest.approx(9.0)
    assert fvae.bits_per_dim(1000.0, 784) == pytest.approx(8 + 1000 / 543.4273895589971)
    assert fvae.bits_per_dim(torch.tensor([-784 * 8 * math.log(2)]), 784).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kind", VARIANTS)
def test_api_shapes(kind):
    model = tiny(kind)
    x = images()
    terms = model.loss_terms(x)
    assert set(terms) == {"loss", "reconstruction", "kl"}
    assert all(t.shape == (8,) for t in terms.values())
    torch.testing.assert_close(terms["loss"], terms["reconstruction"] + terms["kl"] - model.log_jacobian)
    assert model.log_likelihood(x, num_samples=4).shape == (8,)
    samples = model.sample(5, temperature=0.8)
    assert samples.shape == (5, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    z = model.encode(x)
    assert z.shape == (8, *model.latent_shape)
    assert model.decode(z).shape == x.shape


@pytest.mark.parametrize("kind", VARIANTS)
def test_wrong_image_shape_is_a_clear_error(kind):
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, 8, 8\)"):
        tiny(kind).loss(torch.rand(2, 3, 8, 8))


def test_general_loss_with_conditional_affine_is_the_vae_closed_form_kl():
    """Case 1: E_u[log q(u) - log|det dF_x/du| - log q(F_x(u))] = KL(N(mu, sigma^2) || N(0, I))."""
    model = tiny("vae").double()
    x = model.to_model_space(images(1).double())
    with torch.no_grad():
        model.encoder.net[1].linear.bias.copy_(torch.linspace(-1, 1, 12, dtype=torch.float64))
        u = torch.randn(200_000, 6, dtype=torch.float64)
        post = model.posterior(x.expand(len(u), -1, -1, -1), u)
    mc = standard_normal_log_prob(u) - post.logdet - standard_normal_log_prob(post.z)
    closed = post.kl[0]
    assert closed > 0.5
    assert abs(mc.mean() - closed) < 4 * mc.std() / math.sqrt(len(u))
    mu, log_sigma = model.encoder.mean_log_sigma(x)
    by_hand = 0.5 * (mu.pow(2) + torch.exp(2 * log_sigma) - 1 - 2 * log_sigma).sum(1)
    torch.testing.assert_close(closed, by_hand[0])


def test_glow_with_affine_flow_has_the_exact_gaussian_density():
    model, gaussian = affine_glow()
    x = images(4, (1, 4, 4)).double()
    exact = gaussian.log_prob(to_patches(model, x)).sum(1) + model.log_jacobian
    torch.testing.assert_close(model.exact_log_likelihood(x), exact, atol=1e-9, rtol=0)
    # case 2: the loss is -log p_F(x + sigma u), sigma = 1e-4: the Gaussian's density up to O(sigma)
    losses = torch.stack([model.loss(x) for _ in range(20)])
    torch.testing.assert_close(losses.mean(0), -exact, atol=2e-2, rtol=0)


@pytest.mark.parametrize("kind", slow_except(VARIANTS, ("fvae", "vae", "glow")))
def test_importance_weighted_bound_tightens_with_more_samples(kind):
    model = tiny(kind).double()
    x = images(4).double()
    model.loss(x)  # ActNorm initialisation
    n = 400
    elbos = -torch.stack([model.loss(x) for _ in range(n)])
    iw1 = torch.stack([model.log_likelihood(x, num_samples=1) for _ in range(n)])
    # K = 1 is the ELBO itself: equal means, to within 5 standard errors
    std_error = ((elbos.var(0) + iw1.var(0)) / n).sqrt()
    assert ((iw1.mean(0) - elbos.mean(0)).abs() < 5 * std_error + 1e-6).all()
    iw = {k: torch.stack([model.log_likelihood(x, num_samples=k, chunk_size=64) for _ in range(20)]).mean(0)
          for k in (10, 100)}
    assert (iw[10] >= elbos.mean(0) - 5 * std_error).all()
    assert (iw[100] >= iw[10] - 5 * std_error).all()


def test_kl_and_decoder_constants_make_sigma2_finite():
    """sigma2's gradient changes sign around the residual's RMS: D log sigma2 is in the loss."""
    model = tiny("fvae")
    x = images()
    with torch.no_grad():
        model.log_sigma2.fill_(math.log(100.0))
    model.loss(x).mean().backward()
    assert model.log_sigma2.grad > 0  # a huge sigma2 is pushed back down


@pytest.mark.parametrize("kind", VARIANTS)
def test_mnist_presets_have_finite_gradients_for_every_parameter(kind):
    overrides = {"flow_steps": (8, 8, 4, 4, 3), "split_prior_width": 8} if kind == "fvae-top-split" else {}
    _check_gradients(fvae.build_model(kind.split("-")[0], "mnist", **overrides), batch=4)


def _check_gradients(model, batch):
    x = images(batch, model.image_shape)
    model.loss(x).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["cifar10", "celebahq64", "celebahq128"])
@pytest.mark.parametrize("kind", KINDS)
def test_full_presets_have_finite_gradients(kind, preset):
    _check_gradients(fvae.build_model(kind, preset), batch=2)


@pytest.mark.parametrize("kind", slow_except(VARIANTS, KINDS))
def test_training_on_a_fixed_batch_lowers_the_loss(kind):
    torch.manual_seed(0)
    model = tiny(kind)
    x = images(32)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)  # at 3e-3 the tiny Glow can end on a spike
    start = fvae.bits_per_dim(model.loss(x).mean().item(), 64)
    for _ in range(300):
        loss = model.loss(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = fvae.bits_per_dim(torch.stack([model.loss(x).mean() for _ in range(5)]).mean().item(), 64)
    assert end < start - 0.3 * abs(start - 8.0) - 1.0, (start, end)


def test_paper_presets_have_the_authors_parameter_counts():
    """E 4.7M, G 4.7M, F 86M, about 96M in all at 128x128 (bojone/flow, f-VAEs.py)."""
    model = fvae.build_model("fvae", "celebahq128")
    count = {name: sum(p.numel() for p in part.parameters()) / 1e6 for name, part in model.named_children()}
    assert count["inner"] == pytest.approx(4.7, abs=0.05)
    assert count["decoder"] == pytest.approx(4.7, abs=0.05)
    assert count["flow"] == pytest.approx(86, rel=0.01)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(96, rel=0.01)


@pytest.mark.parametrize("kind", ["fvae", "glow"])
def test_memory_format_changes_speed_not_values(kind):
    from fvae.models.nets import set_memory_format

    def build(memory_format):
        torch.manual_seed(0)
        return set_memory_format(fvae.build_model(kind, "mnist", flow_steps=2).double(), memory_format)

    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    losses, samples = [], []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        model = build(memory_format)
        model.loss(x)  # ActNorm initialisation
        for p in model.parameters():  # move off the zero-initialised, identity-like start
            p.data.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()),
                                           dtype=p.dtype))
        torch.manual_seed(2)
        losses.append(model.loss(x))
        torch.manual_seed(3)
        samples.append(model.generate(torch.randn(4, *model.latent_shape, dtype=torch.float64)))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(samples[0], samples[1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind, likelihood", slow_except(
    [("fvae", "gaussian"), ("fvae", "discretized"), ("vae", "gaussian"), ("vae", "discretized"),
     ("composite", "discretized"), ("fvae-top-split", "discretized"), ("glow", "gaussian"), ("fvae-pad", "discretized"),
     ("fvae-pad", "gaussian"), ("glow-pad", "gaussian"), ("fvae-fit-after", "discretized")],
    fast=[("fvae", "gaussian"), ("fvae", "discretized"), ("vae", "gaussian"), ("vae", "discretized"),
          ("glow", "gaussian"), ("fvae-pad", "discretized"), ("fvae-fit-after", "discretized")]))
def test_entropy_floor_holds_for_every_model_and_decoder(kind, likelihood):
    """Data drawn uniformly from 4 fixed 8-bit images carries log 4 nats an image; no bound on
    -log P(pixels) may report less, however well a model fits them. Padded models report their
    bound over the 64 real pixels (without the padding's ln 256 a pixel, 10 bits/dim less)."""
    torch.manual_seed(0)
    extra = {} if kind.startswith("glow") else dict(likelihood=likelihood, sigma1_init=0.05, sigma2_init=0.05)
    model = tiny(kind, **extra)
    pixels = torch.randint(0, 256, (4, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        x = (pixels[torch.randint(0, 4, (32,))] + torch.rand(32, 1, 8, 8)) / 256
        loss = model.loss(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x = (pixels.repeat(8, 1, 1, 1) + torch.rand(32, 1, 8, 8)) / 256
    model.eval()
    if kind == "fvae-fit-after":  # the two-stage prior, fitted to the training images' top latents
        from fvae.training.prior_fit import fit_top_prior

        fit_top_prior(model, torch.utils.data.TensorDataset(pixels.repeat(16, 1, 1, 1).to(torch.uint8),
                                                            torch.full((64,), -1)))
    with torch.no_grad():
        bounds = [fvae.bits_per_dim(model.loss(x).mean().item(), 64),
                  fvae.bits_per_dim(-model.log_likelihood(x, 16).mean().item(), 64)]
        if kind.startswith("glow"):
            bounds.append(fvae.bits_per_dim(-model.exact_log_likelihood(x).mean().item(), 64))
    assert min(bounds) >= math.log2(4) / 64, bounds


def test_padding_centres_the_image_on_dequantized_background_and_outputs_are_cropped():
    model = tiny("fvae-pad")
    x = images(5)
    padded = model.pad(x)
    assert padded.shape == (5, 1, 16, 16) and model.latent_shape == (16, 4, 4)
    torch.testing.assert_close(padded[:, :, 4:12, 4:12], x, rtol=0, atol=0)
    border = torch.ones(16, 16, dtype=torch.bool)
    border[4:12, 4:12] = False
    background = padded[:, :, border]
    assert (background >= 3 / 256).all() and (background < 4 / 256).all() and background.std() > 0.5 / 256 / 2
    assert model.sample(3).shape == (3, 1, 8, 8) and model.decode(model.encode(x)).shape == x.shape
    # the scaling's Jacobian over the 256 padded pixels, less ln 256 for each of the 192 extra ones
    assert model.log_jacobian == pytest.approx(256 * math.log(2.0) - 192 * math.log(256))


def test_padding_less_than_the_image_is_a_clear_error():
    with pytest.raises(fvae.config.ConfigError, match="model.pad_to: 6 is not allowed"):
        tiny("fvae", pad_to=6)


def test_steps_and_widths_per_level_build_those_levels():
    model = tiny("fvae-pad")
    steps = [len(level.blocks) for level in model.flow.flows]
    widths = [level.blocks[0].blocks[2].net[0].out_channels for level in model.flow.flows]
    assert steps == [2, 1, 1] and widths == [16, 8, 8]
    # the 1x1 top: its coupling nets are 1x1 convolutions
    assert model.flow.out_shapes[-1] == (64, 1, 1)
    top_convs = [conv for conv in model.flow.flows[-1].modules() if isinstance(conv, torch.nn.Conv2d)]
    assert {conv.kernel_size for conv in top_convs} == {(1, 1)}
    with pytest.raises(fvae.config.ConfigError, match="has 3 values for 2 levels.*one value per level"):
        tiny("fvae", flow_steps=(2, 3, 2))


def test_the_discretized_decoder_is_a_distribution_over_the_256_pixel_values():
    from fvae.models.base import discretized_gaussian_log_prob

    k = torch.arange(256, dtype=torch.float64)
    x = (2 * ((k + 0.5) / 256 - 0.5)).view(256, 1, 1, 1)
    for sigma in (1e-4, 0.01, 0.5, 100.0):
        for mean in (-1.3, -0.2, 0.0, 0.999, 2.0):
            log_p = discretized_gaussian_log_prob(x, torch.full_like(x, mean), torch.tensor(math.log(sigma)), 2.0)
            pmf = (log_p - math.log(128)).exp()  # the density minus log(256 / a)
            assert pmf.sum().item() == pytest.approx(1.0, abs=1e-9)
    # interior bins against Phi differences in float64
    normal = torch.distributions.Normal(torch.tensor(0.1, dtype=torch.float64), 0.02)
    lower = 2 * (k[135:146] / 256 - 0.5)
    expected = (normal.cdf(lower + 2 / 256) - normal.cdf(lower)).log()
    log_p = discretized_gaussian_log_prob(x[135:146], torch.full_like(x[135:146], 0.1),
                                          torch.tensor(math.log(0.02), dtype=torch.float64), 2.0) - math.log(128)
    torch.testing.assert_close(log_p, expected, rtol=1e-9, atol=1e-9)


# --- learned priors: class-conditional and mixtures ------------------------------------------------

CONDITIONAL_KINDS = ("fvae", "vae", "glow", "fvae-pad", "fvae-class-couplings", "glow-class-couplings",
                     "fvae-class-decoder", "vae-class-decoder", "fvae-ar")


@pytest.mark.parametrize("kind", CONDITIONAL_KINDS)
def test_class_conditional_models_take_labels_everywhere_and_refuse_their_absence(kind):
    model = tiny(kind, num_classes=3)
    x, labels = images(6), torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="class-conditional"):
        model.loss(x)
    with pytest.raises(ValueError, match=r"lie in 0\.\.2"):
        model.loss(x, labels + 1)
    assert model.loss(x, labels).shape == (6,)
    assert model.log_likelihood(x, 4, labels=labels).shape == (6,)
    assert model.sample(6, 0.8, labels).shape == (6, 1, 8, 8) and model.sample(4).shape == (4, 1, 8, 8)
    soft = torch.tensor([[0.5, 0.5, 0.0]]).expand(6, -1)
    assert model.decode(model.encode(x, labels), soft).shape == x.shape
    with pytest.raises(ValueError, match="not class-conditional"):
        tiny(kind).loss(x, labels)


@pytest.mark.parametrize("kind", ["vae", "glow", "fvae", "glow-class-couplings", "fvae-class-couplings",
                                  "fvae-class-decoder", "vae-class-decoder"])
def test_the_marginal_over_classes_is_the_mixture_of_the_conditionals(kind):
    """log p(x) = log sum_y p(x|y) p(y), with p(y) the class frequencies: with the same noise, the
    marginal is that mixture of the conditionals; it lies within [max_y p(x|y) p(y), max_y p(x|y)];
    and while the classes' parameters are still equal (at initialisation) a flow's exact marginal is
    each conditional."""
    model = tiny(kind, num_classes=3).double()
    x = images(4).double()
    model.loss(x, torch.zeros(4, dtype=torch.long))  # ActNorm initialisation
    model.prior.set_class_frequencies(torch.tensor([1.0, 2.0, 5.0]))
    exact = kind.startswith("glow")
    marginal = model.exact_marginal_log_likelihood if exact else lambda v: model.marginal_log_likelihood(v, 2)

    def conditionals():
        labels = [torch.full((4,), y, dtype=torch.long) for y in range(3)]
        return torch.stack([model.exact_log_likelihood(x, y) if exact else model.log_likelihood(x, 2, labels=y)
                            for y in labels], 1)

    if exact:
        torch.testing.assert_close(marginal(x), conditionals()[:, 0], rtol=1e-9, atol=1e-9)
    perturb(model.prior, 1.0)
    if not kind.startswith("vae"):
        for split in model.flow.splits:
            perturb(split, 0.3)
    for net in model.modules():
        if getattr(net, "class_bias", None) is not None:  # class-conditional couplings and decoder blocks
            perturb(net, 0.1)
    torch.manual_seed(5)
    m = marginal(x)
    torch.manual_seed(5)  # the same noise, class by class
    per_class = conditionals()
    log_p = model.prior.log_class_prior
    torch.testing.assert_close(log_p.exp(), torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64) / 8)
    torch.testing.assert_close(m, torch.logsumexp(per_class + log_p, 1))
    assert (per_class.std(1) > 1e-3).all()  # the classes now differ
    assert (m <= per_class.max(1).values + 1e-6).all()
    assert (m >= (per_class + log_p).max(1).values - 1e-6).all()


@pytest.mark.parametrize("num_classes, components, ar_width", [(0, 3, None), (2, 1, None), (2, 3, None),
                                                                (0, 1, 8), (2, 1, 8)])
def test_learned_top_priors_are_normalised_and_sample_their_density(num_classes, components, ar_width):
    from fvae.models.priors import LatentPrior

    prior = perturb(LatentPrior((2,), 2, num_classes, components, ar_width=ar_width).double(), 0.5)
    grid = torch.linspace(-12, 12, 801, dtype=torch.float64)
    z = torch.cartesian_prod(grid, grid)
    cell = (grid[1] - grid[0]) ** 2
    label_sets = [None] if not num_classes else [torch.zeros(len(z), dtype=torch.long),
                                                  torch.tensor([[0.3, 0.7]], dtype=torch.float64).expand(len(z), -1)]
    for labels in label_sets:
        density = prior.log_prob(z, labels).exp()
        assert (density.sum() * cell).item() == pytest.approx(1.0, abs=1e-4)
        # samples follow the density: their mean is the density's
        torch.manual_seed(0)
        draws = prior.sample(100_000, 1.0, None if labels is None else labels[:1].expand(100_000, *labels.shape[1:]))
        expected_mean = (density[:, None] * z).sum(0) * cell
        torch.testing.assert_close(draws.mean(0), expected_mean, atol=0.03, rtol=0)


@pytest.mark.parametrize("num_classes", [0, 3])
def test_the_autoregressive_prior_sees_only_earlier_entries_and_inverts_exactly(num_classes):
    """d m_i / d z_j and d log s_i / d z_j vanish for j >= i (MADE's masks), so the Jacobian of
    ``eps = (z - m(z)) / s(z)`` is lower-triangular with diagonal ``1 / s``; the entry-by-entry
    inverse gives back ``z`` from ``eps``."""
    from fvae.models.autoregressive import AutoregressiveGaussian

    torch.manual_seed(0)
    prior = perturb(AutoregressiveGaussian(5, 16, num_classes).double(), 0.5)
    labels = torch.tensor([2]) if num_classes else None
    z = torch.randn(1, 5, dtype=torch.float64)
    for part in (0, 1):
        jac = torch.autograd.functional.jacobian(lambda v: prior.conditionals(v, labels)[part], z)[0, :, 0]
        assert torch.count_nonzero(torch.triu(jac)) == 0
        assert torch.count_nonzero(torch.tril(jac, -1)) > 0
    eps = torch.randn(64, 5, dtype=torch.float64)
    labels = labels.expand(64) if num_classes else None
    z = prior.invert(eps, labels)
    mean, log_scale = prior.conditionals(z, labels)
    torch.testing.assert_close((z - mean) * torch.exp(-log_scale), eps, rtol=1e-10, atol=1e-10)


def test_an_autoregressive_top_prior_refuses_mixtures_and_later_fits():
    with pytest.raises(fvae.config.ConfigError, match="prior_ar_width"):
        tiny("fvae", prior_ar_width=8, prior_components=3)
    with pytest.raises(fvae.config.ConfigError, match="prior_ar_width"):
        tiny("fvae", prior_ar_width=8, prior_fit="refit")


def test_the_class_conditional_vae_kl_is_its_closed_form():
    model = tiny("vae", num_classes=2).double()
    perturb(model.prior, 0.5)
    x = model.to_model_space(images(1).double())
    labels = torch.ones(200_000, dtype=torch.long)
    with torch.no_grad():
        u = torch.randn(200_000, 6, dtype=torch.float64)
        post = model.posterior(x.expand(len(u), -1, -1, -1), u, labels)
        mc = standard_normal_log_prob(u) - post.logdet - model.prior.log_prob(post.z, labels)
    assert abs(mc.mean() - post.kl[0]) < 4 * mc.std() / math.sqrt(len(u))


@pytest.mark.parametrize("kind", slow_except(["fvae", "glow", "vae", "fvae-mixture", "fvae-couplings", "fvae-decoder",
                                               "fvae-ar"], fast=("fvae", "glow", "vae", "fvae-decoder")))
def test_entropy_floor_holds_for_the_conditional_and_the_marginal_bound(kind):
    """Four fixed images, each its own class: H(x | y) = 0 and H(x) = log 4. The conditional bound
    may fall towards 0 bits, never below; the marginal may not fall below log 4 nats an image."""
    extra = {"fvae-mixture": {"prior_components": 3}, "fvae-couplings": {"class_couplings": True},
             "fvae-decoder": {"class_decoder": True}, "fvae-ar": {"prior_ar_width": 16}}.get(kind, {})
    kind = kind.split("-")[0]
    torch.manual_seed(0)
    model = tiny(kind, num_classes=4, **extra,
                 **({} if kind == "glow" else dict(likelihood="discretized", sigma1_init=0.05, sigma2_init=0.05)))
    pixels = torch.randint(0, 256, (4, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        y = torch.randint(0, 4, (32,))
        loss = model.loss((pixels[y] + torch.rand(32, 1, 8, 8)) / 256, y).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    y = torch.arange(4).repeat(8)
    x = (pixels[y] + torch.rand(32, 1, 8, 8)) / 256
    with torch.no_grad():
        marginal = (model.exact_marginal_log_likelihood(x) if kind == "glow"
                    else model.marginal_log_likelihood(x, num_samples=8))
        conditional = model.exact_log_likelihood(x, y) if kind == "glow" else model.log_likelihood(x, 8, labels=y)
    marginal_bpd = fvae.bits_per_dim(-marginal.mean().item(), 64)
    conditional_bpd = fvae.bits_per_dim(-conditional.mean().item(), 64)
    assert marginal_bpd >= math.log2(4) / 64 and conditional_bpd >= 0, (marginal_bpd, conditional_bpd)
    assert conditional_bpd < marginal_bpd


def test_a_class_conditional_decoder_adds_its_class_bias_to_each_block_and_nothing_else():
    """G(v, y) with a class's bias rows at zero is the unconditional G of the same weights; another
    class's rows change the output, and a class weight of 1/2 each is halfway in every hidden layer."""
    from fvae.models.nets import Decoder

    torch.manual_seed(0)
    conditional = perturb(Decoder(1, 2, 2, 8, num_classes=3).double(), 0.2)
    plain = Decoder(1, 2, 2, 8).double()
    plain.load_state_dict({k: v for k, v in conditional.state_dict().items() if not k.endswith("class_bias")})
    blocks = [block for stage in conditional.stages for block in stage]
    with torch.no_grad():
        for block in blocks:
            block.class_bias[0].zero_()
    v = torch.randn(4, 16, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(conditional(v, torch.zeros(4, dtype=torch.long)), plain(v), rtol=1e-12, atol=1e-12)
    assert (conditional(v, torch.ones(4, dtype=torch.long)) - plain(v)).abs().max() > 1e-3
    with torch.no_grad():  # a one-block decoder: a mixed class weight is the mixed bias
        block = blocks[0]
        mixed = block(v, torch.tensor([[0.0, 0.5, 0.5]]).expand(4, -1))
        block.class_bias[0].copy_((block.class_bias[1] + block.class_bias[2]) / 2)
        torch.testing.assert_close(mixed, block(v, torch.zeros(4, dtype=torch.long)), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="class-conditional"):
        conditional(v)


def test_em_fits_a_known_mixture_and_a_prior_fitted_after_training_is_n01_while_training():
    from fvae.models.priors import LatentPrior, standard_normal_log_prob

    g = torch.Generator().manual_seed(0)
    centres, scales = torch.tensor([[-3.0, 1.0], [2.0, -2.0]]), torch.tensor([[0.5, 0.3], [0.8, 1.2]])
    which = (torch.rand(6000, generator=g) < 0.3).long()
    z = centres[which] + scales[which] * torch.randn(6000, 2, generator=g)
    prior = LatentPrior((2,), 2, components=2, fit="after")
    assert not any(p.requires_grad for p in prior.parameters())
    prior.eval()
    torch.testing.assert_close(prior.log_prob(z), standard_normal_log_prob(z))  # a mixture of N(0, I)s
    prior.fit(z)
    order = prior.means[0, :, 0].argsort()
    torch.testing.assert_close(prior.means[0, order], centres, atol=0.08, rtol=0)
    torch.testing.assert_close(torch.exp(5 * torch.tanh(prior.log_scales[0, order] / 5)), scales, atol=0.06, rtol=0)
    torch.testing.assert_close(torch.softmax(prior.logits[0, order], 0), torch.tensor([0.7, 0.3]), atol=0.03, rtol=0)
    assert prior.log_prob(z).mean() > standard_normal_log_prob(z).mean() + 1.0
    prior.train()
    torch.testing.assert_close(prior.log_prob(z), standard_normal_log_prob(z))


def test_a_refitted_prior_trains_with_the_model_and_refits_by_em():
    from fvae.models.priors import LatentPrior, standard_normal_log_prob

    prior = LatentPrior((2,), 2, num_classes=2, components=1, fit="refit")
    assert prior.refitted and all(p.requires_grad for p in prior.parameters())
    z, labels = torch.randn(64, 2), torch.arange(64) % 2
    torch.testing.assert_close(prior.log_prob(z, labels), standard_normal_log_prob(z))  # starts at N(0, I)
    with torch.no_grad():
        prior.means[1] += 2.0
    prior.train()  # in training mode the learned prior counts (unlike fit="after")
    torch.testing.assert_close(prior.log_prob(z[labels == 1], labels[labels == 1]),
                               standard_normal_log_prob(z[labels == 1] - 2.0))
    g = torch.Generator().manual_seed(0)
    data = torch.cat([torch.randn(4000, 2, generator=g) * 0.5 - 1, torch.randn(4000, 2, generator=g) * 2 + 3])
    classes = torch.arange(8000) // 4000
    prior.fit(data, classes)  # one Gaussian per class: the classes' means and spreads
    torch.testing.assert_close(prior.means[:, 0], torch.tensor([[-1.0, -1.0], [3.0, 3.0]]), atol=0.08, rtol=0)
    torch.testing.assert_close(torch.exp(5 * torch.tanh(prior.log_scales[:, 0] / 5)),
                               torch.tensor([[0.5, 0.5], [2.0, 2.0]]), atol=0.06, rtol=0)


@pytest.mark.parametrize("kind", ["fvae", "vae"])
def test_a_prior_fitted_after_training_tightens_the_bound_on_test_images(kind):
    from fvae.training.prior_fit import fit_top_prior

    torch.manual_seed(0)
    model = tiny(kind, prior_components=2, prior_fit="after")
    g = torch.Generator().manual_seed(1)  # two kinds of image, a bimodal aggregate posterior for N(0, I) to miss
    bases = torch.randint(0, 256, (2, 1, 8, 8), generator=g)
    pixels = bases[torch.arange(512) % 2] + torch.randint(-8, 9, (512, 1, 8, 8), generator=g)
    data = torch.utils.data.TensorDataset(pixels.clamp(0, 255).to(torch.uint8), torch.full((512,), -1))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for step in range(150):
        x = (data.tensors[0][torch.randint(0, 400, (32,))].float() + torch.rand(32, 1, 8, 8)) / 256
        loss = model.loss(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test = (data.tensors[0][400:].float() + torch.rand(112, 1, 8, 8)) / 256
    model.eval()
    torch.manual_seed(3)
    before = model.log_likelihood(test, 16).mean()  # still N(0, I): the prior is not fitted yet
    fit_top_prior(model, torch.utils.data.Subset(data, range(400)))
    assert model.prior.means.abs().sum() > 0 and not model.training
    torch.manual_seed(3)
    after = model.log_likelihood(test, 16).mean()
    assert after > before + 0.5, (before, after)


def test_per_level_fields_are_one_explicit_list_that_never_drops_a_value():
    from fvae.config import ConfigError, RunConfig, apply_overrides
    from fvae.presets import run_config

    preset = run_config("fvae", "mnist").model
    assert preset.flow_steps == (8, 8, 4, 4, 4) and preset.flow_widths == (64, 64, 96, 128, 128)
    every = apply_overrides(run_config("fvae", "mnist"), ["model.flow_steps=2"]).model
    assert every.flow_steps == (2,) * 5 and every.flow_widths == preset.flow_widths
    listed = apply_overrides(run_config("fvae", "mnist"), ["model.flow_steps=[3,3,2,1,1]"]).model
    assert listed.flow_steps == (3, 3, 2, 1, 1)
    with pytest.raises(ConfigError, match=r"model.flow_steps: \[8, 8, 4, 4, 4\] has 5 values for 3 levels"):
        fvae.model_config("fvae", "mnist", flow_levels=3)  # the preset's lists are not cut silently
    fewer = fvae.model_config("fvae", "mnist", flow_levels=3, flow_steps=2, flow_widths=(8, 8, 16))
    assert fewer.flow_steps == (2, 2, 2) and fewer.flow_widths == (8, 8, 16)
    uniform = fvae.model_config("fvae", "cifar10", flow_levels=2)  # one repeated value follows the levels
    assert uniform.flow_steps == (8, 8) and uniform.flow_widths == (256, 256)
    # the names of earlier versions, as their config files hold them, become the lists
    old = {"model": {"kind": "fvae", "flow_levels": 3, "flow_steps": 4, "flow_top_steps": 2, "flow_width": 32}}
    assert RunConfig.from_dict(old).model.flow_steps == (4, 4, 2) and RunConfig.from_dict(old).model.flow_widths == (32,) * 3
    old["model"].update(flow_level_steps=[5, 6, 7], flow_level_widths=[8, 9, 10], flow_top_steps=None)
    assert RunConfig.from_dict(old).model.flow_steps == (5, 6, 7) and RunConfig.from_dict(old).model.flow_widths == (8, 9, 10)
    assert fvae.model_config("fvae", "mnist", flow_width=8).flow_widths == (8,) * 5

@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("with_shift", [False, True])
def test_the_fused_group_norm_relu_is_relu_of_group_norm_plus_shift_with_its_gradients(memory_format, with_shift):
    """One autograd node, the values and float64 gradients of ``F.relu(F.group_norm(x) + shift)``."""
    from fvae.models.norm_relu import GroupNormReLU, _GroupNormReLU

    torch.manual_seed(0)
    fused = GroupNormReLU(2, 6).double()
    with torch.no_grad():
        fused.weight.uniform_(0.5, 1.5)
        fused.bias.normal_()
    x = torch.randn(3, 6, 4, 5, dtype=torch.float64).contiguous(memory_format=memory_format).requires_grad_()
    shift = torch.randn(3, 6, 1, 1, dtype=torch.float64, requires_grad=True) if with_shift else None

    def reference(x, weight, bias, shift):
        h = torch.nn.functional.group_norm(x, 2, weight, bias, fused.eps)
        return torch.relu(h if shift is None else h + shift)

    inputs = (x, fused.weight, fused.bias) + ((shift,) if with_shift else ())
    y = fused(x, shift)
    torch.testing.assert_close(y, reference(x, fused.weight, fused.bias, shift), rtol=0, atol=1e-12)
    grad = torch.randn_like(y)
    got = torch.autograd.grad(y, inputs, grad)
    expected = torch.autograd.grad(reference(x, fused.weight, fused.bias, shift), inputs, grad)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)
    assert torch.autograd.gradcheck(
        lambda x, weight, bias, shift=None: _GroupNormReLU.apply(x, weight, bias, shift, 2, fused.eps), inputs)


def test_residual_blocks_load_the_unfused_blocks_state_dict_keys():
    """Checkpoints of ``conv, GroupNorm, ReLU, conv`` bodies (``body.0``, ``body.1``, ``body.3``) still load."""
    from fvae.models.nets import ResidualBlock

    block = ResidualBlock(4, 8)
    assert sorted(block.state_dict()) == ["body.0.bias", "body.0.weight", "body.1.bias", "body.1.weight",
                                          "body.3.bias", "body.3.weight"]


def test_the_fused_group_norm_relu_normalises_a_bf16_channels_last_map_in_fp32():
    """On a CPU a bf16 channels-last input is normalised in fp32 (faster there): the output is the
    fp32 result of the bf16 values, and the input's gradient comes back in bf16."""
    from fvae.models.norm_relu import GroupNormReLU

    torch.manual_seed(0)
    fused = GroupNormReLU(2, 8)
    x = torch.randn(2, 8, 4, 4).to(torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = fused(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, torch.relu(torch.nn.functional.group_norm(x.float(), 2, fused.weight, fused.bias)))
    y.sum().backward()
    assert x.grad.dtype == torch.bfloat16 and x.grad.abs().sum() > 0
