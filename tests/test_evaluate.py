"""Evaluation: bits/dim against a known density, FID's properties."""
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from conftest import affine_glow, from_patches, to_patches
from fvae.data import embedded_mnist
from fvae.evaluate import likelihood_bits_per_dim
from fvae.fid import CLASSIFIER_NAME, FeatureExtractor, frechet_distance
from fvae.metrics import bits_per_dim


def test_bits_per_dim_of_a_known_gaussian_density():
    """A Glow fixed to an affine map is a Gaussian; on data drawn from it the evaluator's
    bits/dim must be the analytic value."""
    model, gaussian = affine_glow()
    torch.manual_seed(0)
    patches = gaussian.sample((20_000, 4))
    x = from_patches(model, patches)
    result = likelihood_bits_per_dim(model, x.split(5000), num_samples=4)
    analytic_nats = -(gaussian.log_prob(patches).sum(1).mean() + model.log_jacobian)
    analytic = bits_per_dim(analytic_nats.item(), 16)
    assert result["exact_bpd"] == pytest.approx(analytic, abs=1e-6)
    assert result["elbo_bpd"] == pytest.approx(analytic, abs=1e-3)
    assert result["iw_bpd"] == pytest.approx(analytic, abs=1e-3)
    # and the sample mean is the Gaussian's entropy, within Monte Carlo error
    entropy_nats = 4 * gaussian.entropy() - model.log_jacobian
    assert analytic == pytest.approx(bits_per_dim(entropy_nats.item(), 16), abs=4 * math.sqrt(8 / 20_000) / (16 * math.log(2)))
    torch.testing.assert_close(to_patches(model, x), patches)


def test_frechet_distance_matches_scipy():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 6, generator=g, dtype=torch.float64)
    b = 0.5 * torch.randn(400, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g,
                                                                                    dtype=torch.float64) + 1.0
    ca, cb = np.cov(a.numpy().T), np.cov(b.numpy().T)
    expected = (np.sum((a.numpy().mean(0) - b.numpy().mean(0)) ** 2) + np.trace(ca + cb)
                - 2 * np.trace(scipy.linalg.sqrtm(ca @ cb).real))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


@pytest.fixture(scope="module")
def classifier_features():
    return FeatureExtractor("classifier", "embedded", embedded_mnist("train"), 1, progress=False)


def test_classifier_features_are_those_of_an_accurate_classifier(classifier_features):
    assert classifier_features.name == CLASSIFIER_NAME
    images, labels = embedded_mnist("test").tensors
    logits = classifier_features.classifier(images.float() / 255)
    assert (logits.argmax(1) == labels).float().mean() > 0.9


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_noise(classifier_features):
    images = embedded_mnist("test").tensors[0].float() / 255
    real = classifier_features(images)
    assert abs(frechet_distance(real, real)) < 1e-6 * real.pow(2).sum(1).mean()
    g = torch.Generator().manual_seed(0)
    fids = [frechet_distance(real, classifier_features((images + s * torch.randn(images.shape, generator=g)).clamp(0, 1)))
            for s in (0.05, 0.2, 0.5)]
    assert 0 < fids[0] < fids[1] < fids[2]


def test_inception_features_when_asked_but_absent_is_a_clear_error():
    try:
        import torchmetrics  # noqa: F401
        pytest.skip("torchmetrics is installed here")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="Inception features are not available"):
        FeatureExtractor("inception", "embedded", embedded_mnist("train"), 1)
