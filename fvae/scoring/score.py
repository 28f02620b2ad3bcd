"""The sample score: how much a set of images looks like a dataset's test split, as a person sees it.

Four numbers, all in the features of the dataset's :class:`~fvae.scoring.judge.Judge`:

* ``fid``: the Fréchet distance between Gaussian fits to the two sets' features,
  ``||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1^1/2 S_2 S_1^1/2)^1/2)``;
* ``precision`` and ``recall``: the k-nearest-neighbour manifold estimates of Kynkäänniemi
  et al. (2019): the share of samples inside the union of balls around the real features
  (each ball reaching its ``k``-th nearest real neighbour), and the share of real images
  inside the samples' balls;
* ``recognizable``: the share of images the judge recognizes, by its rule
  (:data:`RECOGNIZABLE_RULES`): for digits, one class with probability at least
  ``RECOGNIZABLE_CONFIDENCE`` (so not "none", and not split between classes); for clothes, whose
  classes overlap (shirt, T-shirt, pullover, coat), some class rather than "none" with that
  probability;
* ``sharpness``: the clarity of the images relative to the reference's, in pixels rather than
  features (:func:`laplacian_energy`): 1 for images as sharp as real ones, below 1 for blurred.
  Noise raises it too, so it is read beside FID and ``recognizable``, never alone;
* ``class_accuracy``, for images drawn for given classes (a class-conditional model's): the share
  the judge reads as the class asked for (its most probable output, "none" included, is that class).

The judges of the embedded digits and of Fashion-MNIST ship with fvae (``fvae/scoring/weights/``),
so every user scores with the same ruler; for another labelled dataset one is trained on first
use from the training split (saying so, with progress) and cached under ``~/.cache/fvae`` (or
``$FVAE_CACHE``). Inception features, where their
weights can be had, give the standard FID as a separate number, ``fid_inception``.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from fvae.data.batches import readable_batches
from fvae.errors import InputError, ScoreUnavailable
from fvae.scoring.judge import Judge, train_judge

SCORE_KEYS = ("fid", "precision", "recall", "recognizable", "sharpness")
# and, for images drawn for given classes (a class-conditional model's), the share read as that class
CLASS_SCORE_KEYS = ("class_accuracy",)
RECOGNIZABLE_CONFIDENCE = 0.9
RECOGNIZABLE_RULES = {
    "class": "the judge gives one class probability >= 0.9",
    "object": "the judge gives the classes together probability >= 0.9 (not 'none')",
}
SHIPPED_JUDGES = ("embedded", "fashion-mnist")
NEIGHBOURS = 3
SHIPPED = Path(__file__).with_name("weights")
JUDGE_VERSION = 1


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID between feature sets ``a``: ``(N, F)`` and ``b``: ``(M, F)``, in float64.

    Raises ValueError where a feature is not finite (e.g. from a sample that is not).
    """
    for name, feats in (("first", a), ("second", b)):
        bad = (~feats.isfinite().all(1)).sum().item()
        if bad:
            raise InputError(f"{bad} of {len(feats)} feature rows of the {name} set are not finite "
                             f"(non-finite images?); FID is undefined")
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    evals, evecs = torch.linalg.eigh(cov_a)
    sqrt_a = evecs @ torch.diag(evals.clamp(min=0).sqrt()) @ evecs.T
    cross = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def manifold_precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = NEIGHBOURS) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) of feature sets ``(N, F)``, ``(M, F)``.

    ``precision = mean_j [exists i: ||f_j - r_i|| <= d_k(r_i)]`` with ``d_k(r_i)`` the distance
    from ``r_i`` to its ``k``-th nearest neighbour among the real features; ``recall`` the same
    with the roles swapped.
    """
    real, fake = real.double(), fake.double()

    def inside(points: torch.Tensor, centres: torch.Tensor) -> float:
        radii = torch.cdist(centres, centres).kthvalue(k + 1, dim=1).values  # +1: the centre itself
        return (torch.cdist(points, centres) <= radii[None]).any(1).double().mean().item()

    return inside(fake, real), inside(real, fake)


LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian_energy(images: torch.Tensor) -> float:
    """The mean squared response of the 3x3 Laplacian over images ``(N, C, H, W)`` in ``[0, 1]``:

        e(X) = 1/(N C (H-2) (W-2)) sum_{n, c, i, j} (x[i-1, j] + x[i+1, j] + x[i, j-1] + x[i, j+1] - 4 x[i, j])^2

    (valid positions only), in float64. ``sharpness = e(samples) / e(reference)``: a blur
    lowers it (to 0.46, 0.08, 0.02 for digits blurred by 0.5, 1, 1.5 pixels), as does a mean
    over possible images; pixel noise raises it.
    """
    x = images.double()
    kernel = LAPLACIAN.to(x).expand(x.shape[1], 1, 3, 3)
    return torch.nn.functional.conv2d(x, kernel, groups=x.shape[1]).pow(2).mean().item()


def cache_dir() -> Path:
    return Path(os.environ.get("FVAE_CACHE", Path.home() / ".cache" / "fvae")).expanduser()


def _readable(dataset: Dataset, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of ``dataset`` that can be read, and its label (:func:`~fvae.data.batches.readable_batches`)."""
    batches = list(readable_batches(dataset, list(range(len(dataset))), 1024, what))
    return torch.cat([images for images, _ in batches]), torch.cat([labels for _, labels in batches])


def _labelled(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(dataset, "tensors"):
        images, labels = dataset.tensors
    else:
        images, labels = _readable(dataset, "training")
    if labels.dim() != 1 or labels.is_floating_point() or (labels < 0).any():
        raise InputError("the dataset has no labels: the sample score needs a labelled training split "
                         "to train its judge")
    return images, labels


def _load(path: Path) -> Judge:
    weights = load_file(path)
    with safe_open(path, "pt") as f:
        rule = (f.metadata() or {}).get("recognizable_rule", "class")
    judge = Judge(weights["body.0.weight"].shape[1], weights["head.1.weight"].shape[0] - 1, recognizable_rule=rule)
    judge.load_state_dict(weights)
    return judge.eval()


def judge_path(dataset_key: str, channels: int) -> Path:
    """Where the judge of a dataset lives: shipped with fvae for :data:`SHIPPED_JUDGES`, else in the cache."""
    if dataset_key in SHIPPED_JUDGES:
        return SHIPPED / f"judge-{dataset_key}-v{JUDGE_VERSION}.safetensors"
    digest = hashlib.sha1(f"{dataset_key}|{channels}|v{JUDGE_VERSION}".encode()).hexdigest()[:12]
    return cache_dir() / "judges" / f"{digest}.safetensors"


def save_judge(judge: Judge, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, tmp,
              metadata={"recognizable_rule": judge.recognizable_rule})
    os.replace(tmp, path)


def load_judge(dataset_key: str, train_set: Dataset | None, channels: int) -> Judge:
    """The judge of the dataset named ``dataset_key``: shipped, cached, or trained now on
    ``train_set`` (labelled) and cached, saying so on stderr and showing progress."""
    path = judge_path(dataset_key, channels)
    if path.exists():
        return _load(path)
    if train_set is None:
        raise InputError(f"no judge for dataset {dataset_key!r} at {path}, and no training split to train one")
    images, labels = _labelled(train_set)
    print(f"fvae: training a judge for {dataset_key} ({len(images):,} labelled images, 2,000 steps; about 10 "
          f"minutes on 2 CPU cores), once: the sample score needs one; it is cached at {path}", file=sys.stderr)
    judge = train_judge(images, labels, progress=True)
    save_judge(judge, path)
    return judge


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


class SampleScorer:
    """Scores image sets against fixed reference images (a test split), in a judge's features.

    ``reference``: ``(N, C, H, W)`` floats in ``[0, 1]``. ``inception``: also compute
    ``fid_inception`` (raises RuntimeError where Inception weights cannot be loaded).
    """

    def __init__(self, judge: Judge, reference: torch.Tensor, name: str, inception: bool = False):
        self.judge, self.name = judge.eval(), name
        self.reference_features, _ = self.judge_outputs(reference)
        self.reference_energy = laplacian_energy(reference)
        self.inception = None
        if inception:
            try:
                self.inception = InceptionFeatures()
            except Exception as error:  # not installed, or its weights cannot be fetched offline
                raise ScoreUnavailable(f"Inception features are not available: {error}") from error
            self.reference_inception = self._batched(self.inception, reference)

    @staticmethod
    @torch.no_grad()
    def _batched(fn, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        return torch.cat([fn(images[i:i + batch_size].float().cpu()) for i in range(0, len(images), batch_size)])

    @torch.no_grad()
    def judge_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(N, F)`` (float64) and class probabilities ``(N, classes + 1)`` of images in ``[0, 1]``."""
        features = self._batched(self.judge.features, images.clamp(0, 1))
        probs = torch.softmax(self.judge.head(features), dim=1)
        return features.double(), probs

    def recognizable(self, probs: torch.Tensor) -> torch.Tensor:
        """Per image: does the judge recognize it, by its rule (:data:`RECOGNIZABLE_RULES`)?"""
        classes = probs[:, : self.judge.num_classes]
        confidence = classes.amax(1) if self.judge.recognizable_rule == "class" else classes.sum(1)
        return confidence >= RECOGNIZABLE_CONFIDENCE

    def class_accuracy(self, probs: torch.Tensor, labels: torch.Tensor) -> float:
        """The share of images whose most probable judge output ("none" included) is their label."""
        if labels.shape != (len(probs),) or labels.min() < 0 or labels.max() >= self.judge.num_classes:
            raise InputError(f"labels must be ({len(probs)},) class indices in 0..{self.judge.num_classes - 1}, "
                             f"as the judge's classes")
        return (probs.argmax(1) == labels.to(probs.device)).double().mean().item()

    def score(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float | int | str]:
        """``fid``, ``precision``, ``recall``, ``recognizable``, ``sharpness`` of ``images``
        ``(N, C, H, W)`` in ``[0, 1]``, and ``class_accuracy`` where ``labels`` ``(N,)`` say which
        class each image was drawn for; images that are not finite are counted (``nonfinite``) and
        scored as blank."""
        images = images.float()
        finite = images.flatten(1).isfinite().all(1)
        images = torch.where(finite.view(-1, 1, 1, 1), images, torch.zeros(()))
        features, probs = self.judge_outputs(images)
        precision, recall = manifold_precision_recall(self.reference_features, features)
        result: dict[str, float | int | str] = {
            "fid": frechet_distance(features, self.reference_features), "precision": precision, "recall": recall,
            "recognizable": self.recognizable(probs).double().mean().item(),
            "sharpness": laplacian_energy(images.clamp(0, 1)) / self.reference_energy, "num_images": len(images),
            "nonfinite": int((~finite).sum()), "features": self.name, "recognizable_rule": self.judge.recognizable_rule,
        }
        if labels is not None:
            result["class_accuracy"] = self.class_accuracy(probs, labels)
        if self.inception is not None:
            result["fid_inception"] = frechet_distance(self._batched(self.inception, images),
                                                       self.reference_inception)
        return result


def scorer_for(dataset_key: str, train_set: Dataset | None, test_set: Dataset, channels: int,
               inception: bool = False) -> SampleScorer:
    """A :class:`SampleScorer` against every image of ``test_set`` (``uint8`` images, scaled by 1/255)."""
    judge = load_judge(dataset_key, train_set, channels)
    reference = _readable(test_set, "test")[0].float() / 255
    name = f"judge-{dataset_key if dataset_key in SHIPPED_JUDGES else Path(dataset_key).name}-v{JUDGE_VERSION}"
    return SampleScorer(judge, reference, name, inception)
