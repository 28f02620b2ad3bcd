"""Where a run's scalars, sample grids and config go besides its folder: TensorBoard (the default)
or MLflow (``train.logger=mlflow``, the optional extra ``pip install fvae[mlflow]``).

A tracker has ``scalar(tag, value, step)``, ``image(tag, grid, step)`` (a grid ``(C, H, W)`` in
``[0, 1]``) and ``close()``. The MLflow tracker logs to ``$MLFLOW_TRACKING_URI`` where it is set,
else to a local file store in ``RUN/mlruns`` (``mlflow ui --backend-store-uri RUN/mlruns``; MLflow 3
keeps that store in maintenance and wants ``MLFLOW_ALLOW_FILE_STORE=true``, which fvae sets for
it), under the experiment ``fvae``; it keeps the MLflow run's id in ``RUN/mlflow.json``, so that
a resumed run continues the same MLflow run.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from fvae.errors import Unavailable


class TensorBoardTracker:
    """TensorBoard event files in ``RUN/tensorboard``."""

    def __init__(self, run_dir: Path, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        self.writer.add_image(tag, grid, step)

    def close(self) -> None:
        self.writer.close()


def _flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """``{"model": {"kind": "fvae"}} -> {"model.kind": "fvae"}``, values as text (MLflow params)."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


class MLflowTracker:
    """An MLflow run: the config as params, scalars as metrics, grids as images (module docstring)."""

    def __init__(self, run_dir: Path, config: dict):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as error:
            raise Unavailable("train.logger=mlflow needs MLflow: pip install 'fvae[mlflow]'") from error
        self.record = run_dir / "mlflow.json"
        saved = json.loads(self.record.read_text()) if self.record.exists() else None
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (saved or {}).get("tracking_uri") \
            or (run_dir / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(uri)
        if saved is not None:
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            experiment = self.client.get_experiment_by_name("fvae")
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment("fvae")
            self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
            for key, value in _flatten(config).items():
                self.client.log_param(self.run_id, key, value)
            self.record.write_text(json.dumps({"tracking_uri": uri, "run_id": self.run_id}))

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.client.log_metric(self.run_id, tag, float(value), step=step)

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        array = (grid.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        self.client.log_image(self.run_id, array, key=tag.replace("=", "_"), step=step)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def make_tracker(name: str, run_dir: Path, config: dict):
    """The tracker ``train.logger`` names, writing for the run in ``run_dir``."""
    return {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker}[name](run_dir, config)
