"""Evaluation: bits/dim against a known density."""
import math

import pytest
import torch
from conftest import affine_glow, from_patches, to_patches

from fvae.scoring.evaluate import likelihood_bits_per_dim
from fvae.scoring.metrics import bits_per_dim


def unlabelled(x, size):
    """Batches of ``size`` images, as the evaluator takes them: ``(images, labels)``, no labels."""
    return [(batch, None) for batch in x.split(size)]


def test_bits_per_dim_of_a_known_gaussian_density():
    """A Glow fixed to an affine map is a Gaussian; on data drawn from it the evaluator's
    bits/dim must be the analytic value."""
    model, gaussian = affine_glow()
    torch.manual_seed(0)
    patches = gaussian.sample((20_000, 4))
    x = from_patches(model, patches)
    result = likelihood_bits_per_dim(model, unlabelled(x, 5000), num_samples=4)
    analytic_nats = -(gaussian.log_prob(patches).sum(1).mean() + model.log_jacobian)
    analytic = bits_per_dim(analytic_nats.item(), 16)
    assert result["exact_bpd"] == pytest.approx(analytic, abs=1e-6)
    assert result["elbo_bpd"] == pytest.approx(analytic, abs=1e-3)
    assert result["iw_bpd"] == pytest.approx(analytic, abs=1e-3)
    # and the sample mean is the Gaussian's entropy, within Monte Carlo error
    entropy_nats = 4 * gaussian.entropy() - model.log_jacobian
    assert analytic == pytest.approx(bits_per_dim(entropy_nats.item(), 16), abs=4 * math.sqrt(8 / 20_000) / (16 * math.log(2)))
    torch.testing.assert_close(to_patches(model, x), patches)


def test_median_and_worst_image_show_an_outlier_the_mean_hides():
    """One image the model gives almost no probability moves the mean and the maximum, not the
    median; each equals the per-image figure computed directly."""
    model, gaussian = affine_glow()
    torch.manual_seed(1)
    x = from_patches(model, gaussian.sample((999, 4)))
    outlier = from_patches(model, gaussian.mean + 40 * gaussian.stddev * torch.ones(1, 4, 4))
    per_image = -model.exact_log_likelihood(torch.cat([x, outlier])).double()
    clean = likelihood_bits_per_dim(model, unlabelled(x, 500), num_samples=0)
    result = likelihood_bits_per_dim(model, unlabelled(torch.cat([x, outlier]), 500), num_samples=0)
    assert result["exact_bpd_max"] == pytest.approx(bits_per_dim(per_image.max().item(), 16), rel=1e-9)
    assert result["exact_bpd_max"] == pytest.approx(bits_per_dim(per_image[-1].item(), 16), rel=1e-9)
    assert result["exact_bpd_median"] == pytest.approx(bits_per_dim(per_image.median().item(), 16), rel=1e-9)
    assert result["exact_bpd"] - clean["exact_bpd"] > 0.5
    assert abs(result["exact_bpd_median"] - clean["exact_bpd_median"]) < 0.01
    assert "iw_bpd" not in result and result["elbo_bpd_max"] >= result["elbo_bpd_median"]


def test_auroc_is_the_share_of_pairs_ranked_right_ties_counting_half():
    from fvae.scoring.metrics import auroc

    g = torch.Generator().manual_seed(0)
    negatives = torch.randint(0, 20, (300,), generator=g).double()
    positives = torch.randint(5, 25, (200,), generator=g).double()  # many ties with the negatives
    pairs = (positives[:, None] > negatives[None]).double() + 0.5 * (positives[:, None] == negatives[None]).double()
    assert auroc(negatives, positives) == pytest.approx(pairs.mean().item(), abs=1e-12)
    assert auroc(negatives, negatives + 100) == 1.0 and auroc(negatives + 100, negatives) == 0.0
