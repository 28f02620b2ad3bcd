"""Checkpoints: one folder per step, written atomically.

    RUN/checkpoints/step-00000500/
        model.safetensors     the model's weights and buffers
        ema.safetensors       the EMA weights, when training keeps them
        state.pt              optimizer, scheduler, step, counters (torch.load(weights_only=True))
        config.yaml           the run's configuration

A folder is written under a temporary name and renamed into place, so a checkpoint is
either whole or absent, whatever kills the process.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fvae.config import RunConfig
from fvae.models import LatentFlowModel, model_from_config

CHECKPOINTS = "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete, or of another configuration."""


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_checkpoint(run_dir: str | Path, step: int, config: RunConfig, model: torch.nn.Module,
                    state: dict[str, Any], ema: torch.nn.Module | None = None, keep: int = 3) -> Path:
    """Write the checkpoint of ``step`` under ``run_dir`` and keep the ``keep`` newest."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_tensors(model), tmp / "model.safetensors")
    if ema is not None:
        save_file(_tensors(ema), tmp / "ema.safetensors")
    torch.save({"step": step, **state}, tmp / "state.pt")
    config.save_yaml(tmp / "config.yaml")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / "state.pt").exists() and (p / "model.safetensors").exists())


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself, or the newest checkpoint of a run folder."""
    path = Path(path)
    if (path / "model.safetensors").exists() and (path / "state.pt").exists():
        return path
    found = list_checkpoints(path)
    if not found:
        raise CheckpointError(f"no checkpoint at {path}: expected a run folder with {CHECKPOINTS}/step-*/ "
                              f"or a checkpoint folder with model.safetensors and state.pt")
    return found[-1]


def load_state(checkpoint: Path) -> dict[str, Any]:
    return torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=True)


def check_compatible(checkpoint: Path, config: RunConfig) -> None:
    """Fail, naming every differing field, if ``checkpoint`` holds another model config."""
    saved = RunConfig.load_yaml(checkpoint / "config.yaml").model.__dict__
    wanted = config.model.__dict__
    diffs = [f"model.{k}: checkpoint {saved[k]!r}, config {wanted[k]!r}" for k in wanted if saved[k] != wanted[k]]
    if diffs:
        raise CheckpointError(f"checkpoint {checkpoint} was made for another model configuration:\n  "
                              + "\n  ".join(diffs))


def load_weights(module: torch.nn.Module, file: Path) -> None:
    """Load safetensors weights, with a clear message when names or shapes differ."""
    tensors = load_file(file)
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    shapes = [f"{k}: checkpoint {tuple(tensors[k].shape)}, model {tuple(own[k].shape)}"
              for k in set(own) & set(tensors) if tensors[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"weights in {file} do not fit the model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, shape mismatches {shapes[:5]}")
    module.load_state_dict(tensors)


def load_model(path: str | Path, use_ema: bool = True, device: str | torch.device = "cpu"
               ) -> tuple[LatentFlowModel, RunConfig, Path]:
    """The model of a run or checkpoint folder (its EMA weights when saved and ``use_ema``), in eval mode."""
    checkpoint = resolve_checkpoint(path)
    config = RunConfig.load_yaml(checkpoint / "config.yaml")
    model = model_from_config(config.model)
    ema_file = checkpoint / "ema.safetensors"
    load_weights(model, ema_file if use_ema and ema_file.exists() else checkpoint / "model.safetensors")
    return model.to(device).eval(), config, checkpoint
