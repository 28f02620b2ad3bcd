"""Training: a thin loop over torch DistributedDataParallel, launched by ``torchrun``.

One process per device; ``torchrun --nproc_per_node N`` (and ``--nnodes`` for several
machines) sets the ranks and this module joins them. The model stays a plain
``nn.Module``; this loop owns optimisation, logging, checkpoints and recovery.

Reproducibility: a step's data (the epoch's permutation and the batch within it), its
dequantization noise and its posterior noise are functions of ``(seed, step, rank)``, so
a run resumed from a checkpoint repeats exactly the steps of an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid, save_image
from tqdm import tqdm

from fvae.checkpoint import check_compatible, list_checkpoints, load_state, load_weights, save_checkpoint
from fvae.config import RunConfig
from fvae.data import dataset_key, dequantize, load_dataset
from fvae.evaluate import dequantized_batches, sample_fid
from fvae.fid import FeatureExtractor
from fvae.metrics import bits_per_dim
from fvae.models import LatentFlowModel, model_from_config


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row."""


@dataclass
class Context:
    """Where this process runs: rank, world size, device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Context:
    """Join the process group that ``torchrun`` describes (gloo on CPU, NCCL on GPU), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    return Context(dist.get_rank() if dist.is_initialized() else 0, world_size, device)


def _all_mean(value: torch.Tensor, ctx: Context) -> torch.Tensor:
    if ctx.world_size > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= ctx.world_size
    return value


def _any(flag: bool, ctx: Context) -> bool:
    if ctx.world_size == 1:
        return flag
    t = torch.tensor([float(flag)], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step) * 4099 + rank


class EpochBatches:
    """The batches of a step onward: each epoch a permutation seeded by ``(seed, epoch)``,
    rank ``r`` taking every ``world_size``-th index; the last incomplete batch dropped."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, ctx: Context, num_workers: int):
        self.dataset, self.batch_size, self.seed, self.ctx, self.num_workers = dataset, batch_size, seed, ctx, num_workers
        self.steps_per_epoch = len(dataset) // (batch_size * ctx.world_size)
        if self.steps_per_epoch == 0:
            raise ValueError(f"the dataset has {len(dataset)} images, fewer than one batch of "
                             f"{batch_size} x {ctx.world_size} processes")

    def from_step(self, step: int):
        """Yield ``(step, images)`` forever, starting at ``step``."""
        epoch, skip = divmod(step, self.steps_per_epoch)
        while True:
            order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + epoch))
            mine = order[self.ctx.rank::self.ctx.world_size].tolist()
            batches = [mine[i * self.batch_size:(i + 1) * self.batch_size] for i in range(skip, self.steps_per_epoch)]
            loader = DataLoader(self.dataset, batch_sampler=batches, num_workers=self.num_workers)
            for i, (images, _) in enumerate(loader):
                yield epoch * self.steps_per_epoch + skip + i, images
            epoch, skip = epoch + 1, 0


class Trainer:
    """Trains ``config.model`` on ``config.data``, writing everything under ``run_dir``."""

    def __init__(self, config: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True):
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        self.ctx = setup_distributed()
        tc = config.train
        torch.manual_seed(tc.seed)  # the same initial weights and fixed buffers on every rank
        self.model = model_from_config(config.model).to(self.ctx.device)
        self.train_set = load_dataset(config.data, "train", config.model.image_shape)
        self.test_set = load_dataset(config.data, "test", config.model.image_shape)
        self.batches = EpochBatches(self.train_set, tc.batch_size, tc.seed, self.ctx, tc.num_workers)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=tc.lr, fused=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda n: min(1.0, (n + 1) / max(1, tc.warmup_steps)))
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay), use_buffers=True)
                    if tc.ema_decay else None)
        self.step, self.bad_steps, self.elapsed = 0, 0, 0.0
        self.bf16 = tc.precision == "bf16" or (tc.precision == "auto" and self.ctx.device.type == "cuda")
        checkpoints = list_checkpoints(self.run_dir)
        if resume and checkpoints:
            self._restore(checkpoints[-1])
        elif resume:
            raise FileNotFoundError(f"--resume: no checkpoint under {self.run_dir / 'checkpoints'}")
        elif checkpoints:
            raise FileExistsError(f"{self.run_dir} already holds checkpoints: pass --resume to continue that run, "
                                  f"or choose another --out")
        else:
            self._initialize_actnorm()
        self.ddp = (DistributedDataParallel(self.model, broadcast_buffers=False) if self.ctx.world_size > 1
                    else self.model)
        self.stop_signal: str | None = None
        self._features: FeatureExtractor | None = None
        self._fid_unavailable = False

    # --- set-up ---------------------------------------------------------------------------
    @torch.no_grad()
    def _initialize_actnorm(self) -> None:
        """ActNorm's data-dependent init on one batch that is the same on every rank."""
        tc = self.config.train
        g = torch.Generator().manual_seed(tc.seed)
        index = torch.randperm(len(self.train_set), generator=g)[: tc.batch_size * self.ctx.world_size]
        images = torch.stack([self.train_set[int(i)][0] for i in index])
        torch.manual_seed(tc.seed)
        self.model(dequantize(images, g).to(self.ctx.device))
        if self.ema is not None:
            self.ema.module.load_state_dict(self.model.state_dict())

    def _restore(self, checkpoint: Path) -> None:
        check_compatible(checkpoint, self.config)
        load_weights(self.model, checkpoint / "model.safetensors")
        if self.ema is not None and (checkpoint / "ema.safetensors").exists():
            load_weights(self.ema.module, checkpoint / "ema.safetensors")
        state = load_state(checkpoint)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.bad_steps, self.elapsed = state["step"], state["bad_steps"], state["elapsed"]
        if self.ema is not None:
            self.ema.n_averaged.fill_(state.get("ema_updates", 0))

    # --- the loop -------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to ``max_steps`` or ``max_time``; returns the run's summary."""
        tc = self.config.train
        writer = SummaryWriter(str(self.run_dir / "tensorboard")) if self.ctx.is_main else None
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.config.save_yaml(self.run_dir / "config.yaml")
        bar = tqdm(total=tc.max_steps, initial=self.step, disable=not (self.progress and self.ctx.is_main),
                   desc="train", dynamic_ncols=True)
        handlers = self._catch_signals()
        consecutive_bad, started, window = 0, time.perf_counter() - self.elapsed, time.perf_counter()
        batches = self.batches.from_step(self.step)
        stopped_by = "max_steps"
        try:
            while self.step < tc.max_steps:
                if _any(self.stop_signal is not None, self.ctx):
                    stopped_by = self.stop_signal or "a signal on another rank"
                    break
                if tc.max_time is not None and _any(time.perf_counter() - started >= tc.max_time, self.ctx):
                    stopped_by = "max_time"
                    break
                step, images = next(batches)
                terms, grad_norm, ok = self._train_step(step, images)
                self.step = step + 1
                self.elapsed = time.perf_counter() - started
                consecutive_bad = 0 if ok else consecutive_bad + 1
                self.bad_steps += 0 if ok else 1
                if consecutive_bad >= tc.max_bad_steps:
                    last = list_checkpoints(self.run_dir)
                    raise TrainingDiverged(
                        f"{consecutive_bad} non-finite steps in a row (the last at step {step}); training stopped. "
                        f"The last good checkpoint is {last[-1] if last else 'none (none was written yet)'}; "
                        f"lower train.lr or raise train.grad_clip and resume from it")
                bar.update(1)
                if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                    rate = tc.log_every * tc.batch_size * self.ctx.world_size / (time.perf_counter() - window)
                    window = time.perf_counter()
                    self._log(writer, bar, terms, grad_norm, rate)
                paused = time.perf_counter()  # evaluation and checkpoints do not count as training time
                if self.step % tc.sample_every == 0:
                    self._write_samples(writer)
                if self.step % tc.checkpoint_every == 0:
                    self._checkpoint(writer)
                started += time.perf_counter() - paused
                window += time.perf_counter() - paused
            summary = self._finish(writer, stopped_by)
        finally:
            bar.close()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            if writer is not None:
                writer.close()
        return summary

    def _train_step(self, step: int, images: torch.Tensor) -> tuple[dict, torch.Tensor, bool]:
        tc = self.config.train
        seed = _step_seed(tc.seed, step, self.ctx.rank)
        torch.manual_seed(seed)
        x = dequantize(images, torch.Generator().manual_seed(seed)).to(self.ctx.device, non_blocking=True)
        self.model.train()
        autocast = (torch.autocast(self.ctx.device.type, dtype=torch.bfloat16) if self.bf16
                    else contextlib.nullcontext())
        with autocast:
            terms = self.ddp(x)
        loss = terms["loss"].float().mean()
        self.optimizer.zero_grad(set_to_none=True)
        (loss / self.model.num_dims).backward()  # nats per dimension: gradient norms of order 1
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        ok = bool(torch.isfinite(grad_norm)) and bool(torch.isfinite(loss))
        ok = not _any(not ok, self.ctx)
        if ok:
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
        else:
            self.optimizer.zero_grad(set_to_none=True)
        return {k: v.detach().float().mean() for k, v in terms.items()}, grad_norm, ok

    # --- bookkeeping ----------------------------------------------------------------------
    def _catch_signals(self) -> dict:
        """SIGINT and SIGTERM end the loop after the current step, which then checkpoints."""
        def request_stop(signum, _frame):
            self.stop_signal = signal.Signals(signum).name

        handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                handlers[sig] = signal.signal(sig, request_stop)
        return handlers

    def _log(self, writer, bar, terms: dict, grad_norm: torch.Tensor, rate: float) -> None:
        terms = {k: _all_mean(v, self.ctx).item() for k, v in terms.items()}
        bpd = bits_per_dim(terms["loss"], self.model.num_dims)
        bar.set_postfix(loss=f"{terms['loss']:.1f}", bpd=f"{bpd:.3f}", bad=self.bad_steps)
        if writer is None:
            return
        for k, v in terms.items():
            writer.add_scalar(f"train/{k}", v, self.step)
        writer.add_scalar("train/bits_per_dim", bpd, self.step)
        writer.add_scalar("train/grad_norm", grad_norm.item(), self.step)
        writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.step)
        writer.add_scalar("train/skipped_steps", self.bad_steps, self.step)
        writer.add_scalar("train/images_per_second", rate, self.step)
        for k, v in self.model.scales().items():
            writer.add_scalar(f"scales/{k}", v.item(), self.step)

    def _eval_model(self) -> LatentFlowModel:
        return self.ema.module if self.ema is not None else self.model

    def _write_samples(self, writer) -> None:
        if not self.ctx.is_main:
            return
        model = self._eval_model().eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.train.seed)
            for t in self.config.train.temperatures:
                images = model.sample(64, temperature=t).float().cpu()
                save_image(images, self.run_dir / f"samples_T{t:g}.png", nrow=8)
                writer.add_image(f"samples/T={t:g}", make_grid(images, nrow=8), self.step)

    @torch.no_grad()
    def test_bits_per_dim(self) -> float:
        """The test ELBO in bits/dim on ``eval_batches`` batches of test images (a fixed
        random draw, fixed noise)."""
        model = self._eval_model().eval()
        tc = self.config.train
        total, count = 0.0, 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(tc.seed + 1)
            for x in dequantized_batches(self.test_set, tc.batch_size, tc.eval_batches * tc.batch_size,
                                         tc.seed + 1, self.ctx.device):
                nats = model.loss(x)
                total, count = total + nats.sum().item(), count + len(nats)
        return bits_per_dim(total / count, model.num_dims)

    def test_fid(self) -> float | None:
        """FID (classifier features) of ``fid_samples`` samples, where the dataset has labels."""
        tc = self.config.train
        if not tc.fid_samples or self._fid_unavailable:
            return None
        if self._features is None:
            try:
                self._features = FeatureExtractor("classifier", dataset_key(self.config.data), self.train_set,
                                                  self.config.model.image_shape[0], progress=False)
            except ValueError:  # an unlabelled dataset has no classifier features
                self._fid_unavailable = True
                return None
        return sample_fid(self._eval_model().eval(), self.test_set, self._features, tc.fid_samples, seed=tc.seed)

    def _checkpoint(self, writer) -> Path | None:
        path = None
        if self.ctx.is_main:
            test_bpd = self.test_bits_per_dim()
            writer.add_scalar("test/bits_per_dim", test_bpd, self.step)
            record = {"step": self.step, "wall_time": round(self.elapsed, 3), "test_bpd": test_bpd,
                      "skipped_steps": self.bad_steps}
            fid = self.test_fid()
            if fid is not None:
                writer.add_scalar("test/fid_classifier_features", fid, self.step)
                record["fid"] = fid
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "bad_steps": self.bad_steps, "elapsed": self.elapsed,
                     "ema_updates": int(self.ema.n_averaged) if self.ema is not None else 0}
            path = save_checkpoint(self.run_dir, self.step, self.config, self.model, state,
                                   self.ema.module if self.ema is not None else None)
        if self.ctx.world_size > 1:
            dist.barrier()
        return path

    def _finish(self, writer, stopped_by: str) -> dict:
        """Final samples, checkpoint and ``summary.json``; ``stopped_by`` is ``max_steps``,
        ``max_time`` or the name of the signal that stopped training."""
        if self.step % self.config.train.sample_every:
            self._write_samples(writer)
        last = list_checkpoints(self.run_dir)
        done = last and load_state(last[-1])["step"] == self.step
        checkpoint = last[-1] if done else self._checkpoint(writer)
        summary = {}
        if self.ctx.is_main:
            last = json.loads((self.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
            summary = {"steps": self.step, "wall_time": round(self.elapsed, 2), "test_bpd": last["test_bpd"],
                       "skipped_steps": self.bad_steps, "stopped_by": stopped_by,
                       "checkpoint": str(checkpoint), "world_size": self.ctx.world_size}
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def train(config: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train a model as ``config`` says and return the run's summary (see :class:`Trainer`)."""
    return Trainer(config, run_dir, resume=resume, progress=progress).fit()
