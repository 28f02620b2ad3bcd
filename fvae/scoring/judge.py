"""The judge: a small classifier whose features and confidence make the sample score.

It is trained to tell the classes of a labelled dataset (the ten digits) apart, and all of
them from one extra class, "none": images that are not of any class. So that its features
follow shape rather than pixel statistics, the real images are seen through random
augmentations (small affine changes, blur, noise, stroke width, contrast) and keep their
label, while the "none" images are made on the fly: random pen strokes, chimeras of two
images of different classes, two images of different classes overlaid, and noise fields. The validation (``benchmarks/validate_score.py``) degrades held-out images
in ways that are *not* among these negatives (patch shuffles, graded blur and noise).

Images are ``(B, C, H, W)`` floats in ``[0, 1]`` throughout.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fvae.scoring.degrade import gaussian_blur


class Judge(nn.Module):
    """``(B, C, H, W)`` in ``[0, 1]`` -> logits over ``num_classes + 1`` classes, the last "none".

    :meth:`features` is the ``feature_dim``-d penultimate layer that FID and precision/recall
    are computed on. ``recognizable_rule`` says what counts as recognizable
    (:data:`fvae.scoring.score.RECOGNIZABLE_RULES`): ``"class"``, one class with probability
    at least 0.9, or ``"object"``, some class rather than "none" with probability at least 0.9.
    """

    def __init__(self, channels: int, num_classes: int, feature_dim: int = 128, recognizable_rule: str = "class"):
        super().__init__()
        self.num_classes = num_classes
        self.recognizable_rule = recognizable_rule

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *block(channels, 16), nn.MaxPool2d(2),
            *block(16, 32), *block(32, 32), nn.MaxPool2d(2),
            *block(32, 64), *block(64, 64), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
            nn.Linear(64 * 9, feature_dim), nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes + 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x - 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# --- augmentations of real images (label kept) --------------------------------------------------

def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def random_affine(x: torch.Tensor, g: torch.Generator, rotate: float = 15.0, scale: float = 0.15,
                  shift: float = 0.12, shear: float = 0.15) -> torch.Tensor:
    """Each image rotated by up to ``rotate`` degrees, scaled by ``1 +- scale``, sheared, shifted
    by up to ``shift`` of its size and elastically distorted; resampled bicubically, which blurs
    less than bilinear resampling (the judge should not learn that digits are soft)."""
    n = len(x)
    angle = torch.deg2rad(_uniform(n, -rotate, rotate, g))
    s = _uniform(n, 1 - scale, 1 + scale, g)
    sh = _uniform(n, -shear, shear, g)
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin + sh, _uniform(n, -shift, shift, g) * 2], 1),
                         torch.stack([sin, cos, _uniform(n, -shift, shift, g) * 2], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid + elastic_field(x, g), mode="bicubic", align_corners=False,
                         padding_mode="zeros").clamp(0, 1)


def elastic_field(x: torch.Tensor, g: torch.Generator, strength: float = 2.0, smoothness: int = 4) -> torch.Tensor:
    """A smooth random displacement field ``(B, H, W, 2)`` in grid units, up to about ``strength``
    pixels (Simard et al., 2003): coarse noise upsampled bicubically."""
    n, _, h, w = x.shape
    coarse = torch.randn(n, 2, smoothness, smoothness, generator=g)
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    return field * strength * torch.tensor([2.0 / w, 2.0 / h]) * torch.rand(n, 1, 1, 1, generator=g)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """With some probability each: a random affine change, thicker strokes, blur (sigma up to
    1.5 px), lower contrast, additive Gaussian noise (std up to 0.15), up to 30% of uniform noise
    mixed in. Some images stay untouched: resampling alone softens them slightly."""
    n = len(x)

    def chance(p: float) -> torch.Tensor:
        return (torch.rand(n, generator=g) < p).view(n, 1, 1, 1)

    x = torch.where(chance(0.7), random_affine(x, g), x)
    thick = (x + F.max_pool2d(x, 3, 1, 1)) / 2
    x = torch.where(chance(0.1), thick, x)
    x = torch.where(chance(0.2), gaussian_blur(x, _uniform(n, 0.3, 1.5, g)), x)
    x = torch.where(chance(0.2), x * _uniform(n, 0.6, 1.0, g).view(n, 1, 1, 1), x)
    noise = torch.randn(x.shape, generator=g) * _uniform(n, 0.0, 0.15, g).view(n, 1, 1, 1)
    x = torch.where(chance(0.25), x + noise, x)
    weight = _uniform(n, 0.0, 0.3, g).view(n, 1, 1, 1)  # a grey, grainy background
    x = torch.where(chance(0.15), (1 - weight) * x + weight * torch.rand(x.shape, generator=g), x)
    return x.clamp(0, 1)


# --- images of no class ("none") ---------------------------------------------------------------

def random_strokes(n: int, shape: tuple[int, int, int], g: torch.Generator, max_strokes: int = 4) -> torch.Tensor:
    """``n`` images of 2 to ``max_strokes`` random quadratic Bezier strokes, pen radius 0.7-2 px
    (one stroke alone is too often a "1")."""
    c, h, w = shape
    points = 24
    t = torch.linspace(0, 1, points).view(1, 1, points, 1)
    ctrl = 0.15 + 0.7 * torch.rand(n, max_strokes, 3, 2, generator=g)  # (n, S, 3 control points, xy)
    curve = ((1 - t) ** 2 * ctrl[:, :, None, 0] + 2 * t * (1 - t) * ctrl[:, :, None, 1]
             + t ** 2 * ctrl[:, :, None, 2])  # (n, S, P, 2) in [0, 1]
    used = torch.arange(max_strokes)[None] < torch.randint(2, max_strokes + 1, (n, 1), generator=g)
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    pixels = torch.stack([xs.flatten() / w, ys.flatten() / h], 1)  # (HW, 2)
    dist = torch.cdist(curve.flatten(1, 2) * torch.tensor([w, h]), pixels * torch.tensor([w, h]))  # (n, S*P, HW)
    dist = dist.view(n, max_strokes, points, h * w).amin(2)
    dist = torch.where(used[..., None], dist, torch.inf).amin(1)  # (n, HW)
    radius = _uniform(n, 0.7, 2.0, g)[:, None]
    ink = (radius + 0.5 - dist).clamp(0, 1) * _uniform(n, 0.7, 1.0, g)[:, None]
    return ink.view(n, 1, h, w).expand(n, c, h, w).contiguous()


def chimeras(a: torch.Tensor, b: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One side of ``a`` joined to the other side of ``b`` along a random vertical or horizontal cut."""
    n, _, h, w = a.shape
    horizontal = torch.rand(n, generator=g) < 0.5
    cut = torch.randint(h // 3, 2 * h // 3 + 1, (n,), generator=g)
    rows = torch.arange(h).view(1, h, 1) < cut.view(n, 1, 1)
    cols = torch.arange(w).view(1, 1, w) < cut.view(n, 1, 1)
    mask = torch.where(horizontal.view(n, 1, 1), rows.expand(n, h, w), cols.expand(n, h, w))[:, None]
    return torch.where(mask, a, b)


def overlays(a: torch.Tensor, b: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """``a`` overlaid with ``b`` (of another class) shifted by 3 to 6 pixels each way."""
    shift = torch.randint(3, 7, (2,), generator=g) * (torch.randint(0, 2, (2,), generator=g) * 2 - 1)
    return torch.maximum(a, torch.roll(b, (int(shift[0]), int(shift[1])), (2, 3)))


def noise_fields(n: int, shape: tuple[int, int, int], g: torch.Generator) -> torch.Tensor:
    """Uniform noise, or smooth random blobs (coarse noise upsampled and thresholded)."""
    c, h, w = shape
    uniform = torch.rand(n, c, h, w, generator=g) * _uniform(n, 0.3, 1.0, g).view(n, 1, 1, 1)
    coarse = torch.randn(n, c, 4, 4, generator=g)
    blobs = (F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False) - 0.8).mul(2).clamp(0, 1)
    return torch.where((torch.rand(n, generator=g) < 0.5).view(n, 1, 1, 1), uniform, blobs)


def none_images(x: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """As many images of no class as ``x`` has rows, each of a kind drawn at random, built from
    the (augmented) real images ``x`` where the kind needs them."""
    n = len(x)
    partner = torch.randperm(n, generator=g)
    other = x[partner]
    differ = (labels != labels[partner]).view(n, 1, 1, 1)
    strokes = random_strokes(n, tuple(x.shape[1:]), g)
    kinds = [
        strokes,
        torch.where(differ, chimeras(x, other, g), strokes),
        torch.where(differ, overlays(x, other, g), strokes),
        noise_fields(n, tuple(x.shape[1:]), g),
    ]
    weights = torch.tensor([0.5, 0.15, 0.2, 0.15])
    kind = torch.multinomial(weights, n, replacement=True, generator=g)
    return torch.stack(kinds)[kind, torch.arange(n)]


def train_judge(images: torch.Tensor, labels: torch.Tensor, steps: int = 2000, batch_size: int = 128,
                seed: int = 0, progress: bool = True, recognizable_rule: str = "class") -> Judge:
    """Fit a :class:`Judge` to ``uint8`` images ``(N, C, H, W)`` with integer labels ``(N,)``.

    Each step: ``batch_size`` augmented real images with their labels and ``batch_size / 2``
    "none" images, augmented alike (AdamW 1e-3 with weight decay 1e-3, cosine decay, cross-entropy).
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    num_classes = int(labels.max()) + 1
    judge = Judge(images.shape[1], num_classes, recognizable_rule=recognizable_rule)
    optimizer = torch.optim.AdamW(judge.parameters(), lr=1e-3, weight_decay=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    judge.train()
    for _ in tqdm(range(steps), desc="training the judge", disable=not progress):
        index = torch.randint(len(images), (batch_size,), generator=g)
        x = augment(images[index].float() / 255, g)
        y = labels[index]
        # the negatives go through the same augmentations, so that only shape tells them apart
        negatives = augment(none_images(x[: batch_size // 2], y[: batch_size // 2], g), g)
        logits = judge(torch.cat([x, negatives]))
        target = torch.cat([y, torch.full((len(negatives),), num_classes)])
        loss = F.cross_entropy(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return judge.eval()
