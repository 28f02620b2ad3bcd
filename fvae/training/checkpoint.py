"""Checkpoints: one folder per step, written atomically and verified when read.

    RUN/checkpoints/step-00000500/
        model.safetensors     the model's weights and buffers
        ema.safetensors       the EMA weights, when training keeps them
        state.pt              optimizer, scheduler, step, counters (torch.load(weights_only=True))
        config.yaml           the run's configuration
        manifest.json         size and SHA-256 of each file above, written last

A folder is written under a temporary name, its files and the folder fsynced, and renamed into
place, so a checkpoint is either whole or absent, whatever kills the process. The manifest
catches what happens after the write (a truncated copy, a flipped bit): readers take the newest
checkpoint that verifies and say which newer ones they skipped. A write that fails (disk full,
no permission) removes its temporary folder, leaves the checkpoints already there untouched, and
raises :class:`CheckpointWriteError` naming the cause and the last good checkpoint.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from fvae.config import ConfigError, RunConfig
from fvae.errors import CheckpointError, CheckpointWriteError
from fvae.models import LatentFlowModel, model_from_config
from fvae.models.budget import check_budget
from fvae.models.weights import load_weights

CHECKPOINTS = "checkpoints"
MANIFEST = "manifest.json"
REQUIRED = ("model.safetensors", "state.pt", "config.yaml")




def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_files(folder: Path, config: RunConfig, model: torch.nn.Module, state: dict[str, Any],
                 ema: torch.nn.Module | None) -> None:
    save_file(_tensors(model), folder / "model.safetensors")
    if ema is not None:
        save_file(_tensors(ema), folder / "ema.safetensors")
    torch.save(state, folder / "state.pt")
    config.save_yaml(folder / "config.yaml")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    manifest = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    for p in folder.iterdir():
        _fsync(p)
    _fsync(folder)


def save_checkpoint(run_dir: str | Path, step: int, config: RunConfig, model: torch.nn.Module,
                    state: dict[str, Any], ema: torch.nn.Module | None = None, keep: int | None = 3) -> Path:
    """Write the checkpoint of ``step`` under ``run_dir`` and keep the ``keep`` newest (all: None)."""
    root = Path(run_dir) / CHECKPOINTS
    final = root / f"step-{step:08d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _write_files(tmp, config, model, {"step": step, **state}, ema)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(root)
    except (OSError, RuntimeError, SafetensorError) as error:  # how torch.save and safetensors report a full disk
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointWriteError(f"could not write the checkpoint of step {step} under {root}: "
                                   f"{write_failure_cause(error, root, checkpoint_bytes(model, state, ema))}; "
                                   f"{last_good(run_dir)}") from error
    if keep is not None:
        prune_checkpoints(run_dir, keep)
    return final


def remove_checkpoint(checkpoint: Path) -> None:
    """Delete a checkpoint folder, renamed first, so that it is never seen half deleted."""
    doomed = checkpoint.with_name(f".{checkpoint.name}.old-{os.getpid()}")
    os.replace(checkpoint, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Keep the ``keep`` newest checkpoints of a run."""
    for old in list_checkpoints(run_dir)[:-keep]:
        remove_checkpoint(old)


def checkpoint_bytes(model: torch.nn.Module, state: dict[str, Any], ema: torch.nn.Module | None) -> int:
    """About how many bytes a checkpoint of ``model``, ``state`` and ``ema`` takes: its tensors."""
    def tensors(value: Any) -> int:
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
        if isinstance(value, dict):
            return sum(tensors(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return sum(tensors(v) for v in value)
        return 0

    return tensors(model.state_dict()) + tensors(state) + (tensors(ema.state_dict()) if ema is not None else 0)


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def write_failure_cause(error: BaseException, folder: Path, needed: int) -> str:
    """Why a write failed, in words: "no space left on device" (with the free space and what was
    needed) when the disk is full, whatever the library's own message (torch's is "unexpected
    pos ..."); else the error itself."""
    try:
        free = shutil.disk_usage(folder if folder.exists() else folder.parent).free
    except OSError:
        free = None
    if getattr(error, "errno", None) == errno.ENOSPC or (free is not None and free < needed):
        room = f"{_size(free)} free there" if free is not None else "the free space is unknown"
        need = f"; the checkpoint needs about {_size(needed)}" if needed else ""
        return f"no space left on device ({room}{need})"
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def last_good(run_dir: str | Path) -> str:
    """"the last good checkpoint is PATH", or "no checkpoint was written yet"."""
    good = newest_valid_checkpoint(run_dir, quiet=True)
    return f"the last good checkpoint is {good}" if good else "no checkpoint was written yet"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The checkpoint folders of a run that hold every required file, oldest first (not yet verified)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if all((p / name).exists() for name in REQUIRED))


def verify(checkpoint: Path) -> str | None:
    """None if every file of ``checkpoint`` matches its manifest, else what is wrong, naming the
    file. A checkpoint without a manifest (fvae 0.1) passes, with a note on stderr."""
    manifest_file = checkpoint / MANIFEST
    if not manifest_file.exists():
        print(f"note: {checkpoint} has no {MANIFEST} (written by an older fvae); its files cannot be verified",
              file=sys.stderr)
        return None
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, ValueError) as error:
        return f"{manifest_file} is unreadable ({error})"
    for name in REQUIRED:
        if name not in manifest:
            return f"{manifest_file} does not list {name}"
    for name, expected in manifest.items():
        path = checkpoint / name
        if not path.exists():
            return f"{path} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{path} has {path.stat().st_size} bytes, the manifest says {expected['bytes']} (truncated?)"
        if _sha256(path) != expected["sha256"]:
            return f"{path} does not match its SHA-256 in the manifest (damaged)"
    return None


def newest_valid_checkpoint(run_dir: str | Path, quiet: bool = False) -> Path | None:
    """The newest checkpoint of a run that verifies; the newer ones skipped are named on one
    line of stderr (unless ``quiet``)."""
    skipped = []
    for checkpoint in reversed(list_checkpoints(run_dir)):
        problem = verify(checkpoint)
        if problem is None:
            if skipped and not quiet:
                print(f"note: skipped {len(skipped)} damaged newer checkpoint(s): " + "; ".join(skipped),
                      file=sys.stderr)
            return checkpoint
        skipped.append(problem)
    if skipped and not quiet:
        print("note: every checkpoint is damaged: " + "; ".join(skipped), file=sys.stderr)
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself (verified), or the newest valid checkpoint of a run folder."""
    path = Path(path)
    if (path / "model.safetensors").exists() and (path / "state.pt").exists():
        problem = verify(path)
        if problem:
            raise CheckpointError(f"checkpoint {path} is damaged: {problem}")
        return path
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    if not list_checkpoints(path):
        raise CheckpointError(f"no checkpoint at {path}: expected a run folder with {CHECKPOINTS}/step-*/ "
                              f"or a checkpoint folder with model.safetensors and state.pt")
    found = newest_valid_checkpoint(path)
    if found is None:
        raise CheckpointError(f"every checkpoint under {path / CHECKPOINTS} is damaged")
    return found


def load_state(checkpoint: Path) -> dict[str, Any]:
    try:
        return torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds on a damaged file
        raise CheckpointError(f"cannot read {checkpoint / 'state.pt'}: {type(error).__name__}: {error}") from error


def load_config(checkpoint: Path) -> RunConfig:
    try:
        return RunConfig.load_yaml(checkpoint / "config.yaml")
    except ConfigError as error:
        raise CheckpointError(f"{checkpoint / 'config.yaml'}: {error}") from error


def check_compatible(checkpoint: Path, config: RunConfig) -> None:
    """Fail, naming every differing field, if ``checkpoint`` holds another model config."""
    saved = load_config(checkpoint).model.__dict__
    wanted = config.model.__dict__
    diffs = [f"model.{k}: checkpoint {saved[k]!r}, config {wanted[k]!r}" for k in wanted if saved[k] != wanted[k]]
    if diffs:
        raise CheckpointError(f"checkpoint {checkpoint} was made for another model configuration:\n  "
                              + "\n  ".join(diffs))


def load_model(path: str | Path, use_ema: bool = True, device: str | torch.device = "cpu"
               ) -> tuple[LatentFlowModel, RunConfig, Path]:
    """The model of a run or checkpoint folder (its EMA weights when saved and ``use_ema``), in eval mode."""
    checkpoint = resolve_checkpoint(path)
    config = load_config(checkpoint)
    check_budget(config.model, device=device)  # a config.yaml may ask for a model no machine holds
    model = model_from_config(config.model)
    ema_file = checkpoint / "ema.safetensors"
    load_weights(model, ema_file if use_ema and ema_file.exists() else checkpoint / "model.safetensors")
    return model.to(device).eval(), config, checkpoint
