"""Fréchet distances between image sets: Inception features when available, else a classifier's.

    FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1^1/2 S_2 S_1^1/2)^1/2)

of Gaussian fits to the two sets' features. Inception features (torchmetrics, weights
from the network or its cache) give the standard FID. Offline they are not to be had, and
fvae uses the penultimate features of a small CNN it trains once on the dataset's labelled
training split and caches: the number is reported as "FID (classifier features)" and is
comparable only with itself.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fvae.data import dequantize

INCEPTION_NAME = "FID (Inception)"
CLASSIFIER_NAME = "FID (classifier features)"


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID between feature sets ``a``: ``(N, F)`` and ``b``: ``(M, F)``, in float64.

    Raises ValueError where a feature is not finite (e.g. from a sample that is not).
    """
    for name, feats in (("first", a), ("second", b)):
        bad = (~feats.isfinite().all(1)).sum().item()
        if bad:
            raise ValueError(f"{bad} of {len(feats)} feature rows of the {name} set are not finite "
                             f"(non-finite images?); FID is undefined")
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    evals, evecs = torch.linalg.eigh(cov_a)
    sqrt_a = evecs @ torch.diag(evals.clamp(min=0).sqrt()) @ evecs.T
    cross = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


class FeatureClassifier(nn.Module):
    """A small CNN: ``(B, C, H, W)`` in ``[0, 1]`` -> logits; :meth:`features` is its 128-d penultimate layer."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(64 * 16, 128), nn.ReLU(),
        )
        self.head = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x - 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def cache_dir() -> Path:
    return Path(os.environ.get("FVAE_CACHE", Path.home() / ".cache" / "fvae")).expanduser()


def _labels(dataset: Dataset) -> torch.Tensor:
    if hasattr(dataset, "tensors"):
        return dataset.tensors[1]
    return torch.tensor([dataset[i][1] for i in range(min(len(dataset), 64))])


def train_classifier(dataset: Dataset, channels: int, epochs: int = 6, seed: int = 0,
                     progress: bool = True) -> FeatureClassifier:
    """Fit :class:`FeatureClassifier` to a labelled ``uint8`` image dataset (Adam, cross-entropy)."""
    labels = _labels(dataset)
    if (labels < 0).any():
        raise ValueError("the dataset has no labels: classifier features need a labelled training split")
    torch.manual_seed(seed)
    model = FeatureClassifier(channels, int(labels.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(dataset, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(seed))
    for _ in tqdm(range(epochs), desc="fid classifier", disable=not progress):
        for images, y in loader:
            loss = nn.functional.cross_entropy(model(dequantize(images)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def cached_classifier(key: str, dataset: Dataset, channels: int, progress: bool = True) -> FeatureClassifier:
    """The classifier for the dataset named ``key``, trained on first use and cached as safetensors."""
    digest = hashlib.sha1(f"{key}|{len(dataset)}|{channels}".encode()).hexdigest()[:12]
    path = cache_dir() / "classifiers" / f"{digest}.safetensors"
    if path.exists():
        weights = load_file(path)
        model = FeatureClassifier(channels, weights["head.weight"].shape[0])
        model.load_state_dict(weights)
        return model.eval()
    model = train_classifier(dataset, channels, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
    return model


class InceptionFeatures:
    """Standard Inception-v3 pool features through torchmetrics; raises when they cannot be loaded."""

    def __init__(self):
        from torchmetrics.image.fid import FrechetInceptionDistance  # optional: pip install torchmetrics[image]

        self.metric = FrechetInceptionDistance(feature=2048, normalize=True)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return self.metric.inception(images.clamp(0, 1).mul(255).to(torch.uint8)).double()


class FeatureExtractor:
    """Maps images in ``[0, 1]`` to the features FID is computed on, and names the result."""

    def __init__(self, kind: str, dataset_key: str, train_set: Dataset, channels: int, progress: bool = True):
        if kind not in ("auto", "inception", "classifier"):
            raise ValueError(f"FID features must be 'auto', 'inception' or 'classifier', got {kind!r}")
        self.name, self.extract, self.classifier = None, None, None
        if kind in ("auto", "inception"):
            try:
                self.extract, self.name = InceptionFeatures(), INCEPTION_NAME
            except Exception as error:  # not installed, or its weights cannot be fetched offline
                if kind == "inception":
                    raise RuntimeError(f"Inception features are not available: {error}") from error
        if self.extract is None:
            self.classifier = cached_classifier(dataset_key, train_set, channels, progress)
            self.extract, self.name = self.classifier.features, CLASSIFIER_NAME

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        return torch.cat([self.extract(images[i:i + batch_size].float().cpu()).double()
                          for i in range(0, len(images), batch_size)])
