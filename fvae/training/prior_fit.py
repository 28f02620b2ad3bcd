"""The second stage of a two-stage prior (``model.prior_fit=after``, or ``refit`` after joint
training): fit the top prior to the top latents of training images, with the model's weights as
they are (Dai & Wipf, 2019)."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from fvae.data import dequantize
from fvae.data.batches import readable_batches
from fvae.models import LatentFlowModel


@torch.no_grad()
def fit_top_prior(model: LatentFlowModel, dataset: Dataset, max_images: int = 10_000, seed: int = 0,
                  batch_size: int = 250) -> None:
    """EM-fit ``model.prior`` (:meth:`~fvae.models.priors.LatentPrior.fit`) to ``z_top = F_x(u)`` of
    ``max_images`` training images (a draw fixed by ``seed``, dequantized, one ``u`` each), per class
    for a class-conditional model. The model is left in eval mode, where the fitted prior counts."""
    device = next(model.parameters()).device
    model.eval()
    with torch.random.fork_rng(devices=[]):
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        order = torch.randperm(len(dataset), generator=g)[:max_images].tolist()
        tops, classes = [], []
        for images, labels in readable_batches(dataset, order, batch_size, "training"):
            x = dequantize(images, g).to(device)
            y = labels.to(device) if model.num_classes else None
            tops.append(model.top_latents(x, y).double().cpu())
            classes.append(labels)
    model.prior.fit(torch.cat(tops), torch.cat(classes) if model.num_classes else None)
