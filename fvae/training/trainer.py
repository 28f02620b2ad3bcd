"""Training: a thin loop over torch DistributedDataParallel, launched by ``torchrun``.

One process per device (see :mod:`fvae.training.distributed`). The model stays a plain ``nn.Module``;
the :class:`Trainer` owns optimisation, precision, compilation, checkpoints and recovery, and
hands the logs to :class:`~fvae.training.run_log.RunLog` and the data order to
:class:`~fvae.data.batches.EpochBatches`. A run resumed from a checkpoint repeats exactly the
steps of an uninterrupted one.

Everything that can fail on bad input (the model, the data, the checkpoint to resume from)
is checked before anything is written to the run folder, and the folder is locked against a
second writer (:mod:`fvae.training.runlock`).
"""
from __future__ import annotations

import contextlib
import math
import signal
import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm import tqdm

from fvae.config import RunConfig
from fvae.data import dataset_key, dequantize, load_dataset
from fvae.data.batches import EpochBatches, read_items, step_seed
from fvae.data.labels import class_counts, training_contexts
from fvae.errors import PathExists, PathMissing, TrainingDiverged
from fvae.models import LatentFlowModel, model_from_config
from fvae.models.budget import TRAINING_COPIES, check_budget
from fvae.models.weights import load_weights
from fvae.scoring.evaluate import draw_samples, sample_score, test_bits_per_dim
from fvae.scoring.score import CLASS_SCORE_KEYS, SCORE_KEYS, SampleScorer, scorer_for
from fvae.training.checkpoint import (
    CheckpointWriteError,
    check_compatible,
    last_good,
    list_checkpoints,
    load_state,
    newest_valid_checkpoint,
    prune_checkpoints,
    remove_checkpoint,
    save_checkpoint,
    write_failure_cause,
)
from fvae.training.counters import SkippedSteps, TrainingClock
from fvae.training.distributed import all_mean, all_true, any_rank, barrier, setup_distributed
from fvae.training.ema import ExponentialAverage
from fvae.training.precision import autocast_for, set_tf32, use_bf16
from fvae.training.prior_fit import fit_top_prior
from fvae.training.run_log import RunLog
from fvae.training.runlock import RunLock
from fvae.training.schedule import lr_factor
from fvae.training.update import GradientAdam, clip_by_global_norm_, gradients


class Trainer:
    """Trains ``config.model`` on ``config.data`` (or on ``train_set``/``test_set`` when given:
    datasets of ``(uint8 image, label)``), writing everything under ``run_dir``."""

    def __init__(self, config: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
                 train_set: Dataset | None = None, test_set: Dataset | None = None):
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        self.ctx = setup_distributed()
        tc = config.train
        torch.manual_seed(tc.seed)  # the same initial weights and fixed buffers on every rank
        check_budget(config.model, tc.batch_size, self.ctx.device, TRAINING_COPIES + bool(tc.ema_decay))
        self.model = model_from_config(config.model).to(self.ctx.device)
        shape = config.model.image_shape
        self.train_set = train_set if train_set is not None else load_dataset(config.data, "train", shape)
        self.test_set = test_set if test_set is not None else load_dataset(config.data, "test", shape)
        self.class_counts = (class_counts(self.train_set, config.model.num_classes, config.data.name)
                             if config.model.num_classes else None)
        self.batches = EpochBatches(self.train_set, tc.batch_size, tc.seed, self.ctx.rank, self.ctx.world_size,
                                    tc.num_workers, pin_memory=self.ctx.device.type == "cuda")
        self.optimizer = GradientAdam(self.model.parameters(), lr=tc.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda n: lr_factor(n, tc.schedule, tc.warmup_steps, tc.max_steps))
        self.ema = ExponentialAverage(self.model, tc.ema_decay) if tc.ema_decay else None
        self.params = [p for p in self.model.parameters() if p.is_floating_point()]
        self.noise = torch.Generator(self.ctx.device)  # the dequantization noise, drawn where the step runs
        self.step, self.unreadable, self.elapsed = 0, 0, 0.0
        self.skipped = SkippedSteps(self.ctx.device)
        self.bf16 = use_bf16(tc.precision, self.ctx.device)
        if self.ctx.device.type == "cuda":
            set_tf32(tc.tf32)
        self.lock = RunLock(self.run_dir) if self.ctx.is_main else None
        self._resume_or_start(resume)
        # buffers are equal on every rank (seeded init, ActNorm on one shared batch, or the checkpoint)
        self.ddp = (DistributedDataParallel(self.model, forward_sync_buffers=False) if self.ctx.world_size > 1
                    else self.model)
        self.forward, self._compiled_step = self.ddp, None
        if tc.compile:
            self._compile()
        self.stop_signal: str | None = None
        self._prior_fitted_at: int | None = None
        self._scorer: SampleScorer | None = None
        self._score_unavailable = False
        if self.ctx.is_main:  # after every check, so that a refused run says one line
            how = getattr(self.test_set, "how", None)
            print(f"data: {len(self.train_set):,} training and {len(self.test_set):,} test images"
                  + (f" (held out: {how})" if how else ""), file=sys.stderr)
            if self.bf16 and self.config.train.precision == "auto":
                print("note: training in bf16 autocast, which train.precision=auto picks on a CPU that multiplies "
                      "bf16 in hardware (train.precision=32 for fp32)", file=sys.stderr)

    # --- set-up ---------------------------------------------------------------------------
    def _resume_or_start(self, resume: bool) -> None:
        """Lock the run folder, then continue from its newest valid checkpoint or start afresh."""
        found = list_checkpoints(self.run_dir)
        if found and not resume:
            raise PathExists(f"{self.run_dir} already holds checkpoints: pass --resume to continue that run, "
                                  f"or choose another --out")
        if resume and not found:
            raise PathMissing(f"--resume: no checkpoint under {self.run_dir / 'checkpoints'}")
        if self.lock is not None:
            self.lock.acquire()
        try:
            if resume:
                checkpoint = newest_valid_checkpoint(self.run_dir)
                if checkpoint is None:
                    raise PathMissing(f"--resume: every checkpoint under {self.run_dir / 'checkpoints'} "
                                            f"is damaged")
                self._restore(checkpoint)
            else:
                if self.class_counts is not None:
                    self.model.prior.set_class_frequencies(self.class_counts)
                if self.config.model.num_context:
                    self.model.prior.set_contexts(training_contexts(self.train_set, self.config.model.num_context))
                self._initialize_actnorm()
        except BaseException:
            self.close()
            raise

    @torch.no_grad()
    def _initialize_actnorm(self) -> None:
        """ActNorm's data-dependent init on one batch that is the same on every rank."""
        tc = self.config.train
        g = torch.Generator().manual_seed(tc.seed)
        index = torch.randperm(len(self.train_set), generator=g)[: tc.batch_size * self.ctx.world_size]
        images, labels, _ = read_items(self.train_set, index.tolist())  # the unreadable ones left out
        torch.manual_seed(tc.seed)
        self.model(dequantize(images, g).to(self.ctx.device), self._labels(labels))
        if self.ema is not None:
            self.ema.copy_from(self.model)

    def _restore(self, checkpoint: Path) -> None:
        check_compatible(checkpoint, self.config)
        load_weights(self.model, checkpoint / "model.safetensors")
        if self.ema is not None:  # a run that kept no EMA before starts one at the restored weights
            if (checkpoint / "ema.safetensors").exists():
                load_weights(self.ema.module, checkpoint / "ema.safetensors")
            else:
                self.ema.copy_from(self.model)
        state = load_state(checkpoint)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.elapsed = state["step"], state["elapsed"]
        self._apply_lr(checkpoint)
        self.skipped = SkippedSteps(self.ctx.device, state["bad_steps"])
        self.unreadable = state.get("unreadable_images", 0)
        if self.ema is not None:
            self.ema.updates.fill_(state.get("ema_updates", 0))
        started_with = state.get("world_size", self.ctx.world_size)
        if started_with != self.ctx.world_size and self.ctx.is_main:
            batch = self.config.train.batch_size
            print(f"note: {checkpoint} was trained with {started_with} process(es), this run has "
                  f"{self.ctx.world_size}: from step {self.step} on, each step takes {batch} x {self.ctx.world_size} "
                  f"images instead of {batch} x {started_with}, in another order than the original run's "
                  f"(weights, optimizer, schedule and step count carry over)", file=sys.stderr)

    def _apply_lr(self, checkpoint: Path) -> None:
        """Make the restored optimizer and schedule follow this run's ``train.lr``, which may differ from
        the checkpoint's (a resume with ``--lr``, as the divergence message advises); say so where it does."""
        lr = self.config.train.lr
        before = self.scheduler.base_lrs[0]
        self.scheduler.base_lrs = [lr] * len(self.optimizer.param_groups)
        for group, factor in zip(self.optimizer.param_groups, self.scheduler.lr_lambdas):
            group["initial_lr"], group["lr"] = lr, lr * factor(self.scheduler.last_epoch)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        if before != lr and self.ctx.is_main:
            print(f"note: train.lr is {lr:g} from step {self.step} on (the checkpoint {checkpoint.name} trained "
                  f"with {before:g})", file=sys.stderr)

    def close(self) -> None:
        """Release the run folder's lock (``fit`` does this when it ends)."""
        if self.lock is not None:
            self.lock.release()

    # --- the loop -------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to ``max_steps`` or ``max_time``; returns the run's summary."""
        tc = self.config.train
        with self._session() as (log, bar):
            clock = TrainingClock(self.elapsed)
            batches = self.batches.from_step(self.step)
            while (stopped_by := self._stop_reason(clock)) is None:
                terms, grad_norm = self._train_step(*next(batches))
                self.elapsed = clock.elapsed
                bar.update(1)
                if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                    self._log_step(log, bar, terms, grad_norm, clock)
                with clock.paused():  # evaluation, samples and checkpoints are not training time
                    if self.step % tc.sample_every == 0:
                        self._write_samples(log)
                    if self.step % tc.checkpoint_every == 0:
                        self._checkpoint(log)
            return self._finish(log, stopped_by)

    @contextlib.contextmanager
    def _session(self):
        """The run log and progress bar of :meth:`fit`; SIGINT and SIGTERM end the loop after the
        current step; a write that fails names the cause and what survives; the lock is released."""
        log = RunLog(self.run_dir, self.ctx.is_main, self.config.train.logger, self.config.to_dict())
        bar = tqdm(total=self.config.train.max_steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (self.progress and self.ctx.is_main))
        handlers = self._catch_signals()
        try:
            if self.ctx.is_main:
                self.config.save_yaml(self.run_dir / "config.yaml")
            yield log, bar
        except OSError as error:  # a full disk, a folder made read-only: say what survives
            if isinstance(error, CheckpointWriteError):
                raise
            cause = write_failure_cause(error, self.run_dir, 0)
            raise CheckpointWriteError(f"could not write to {self.run_dir}: {cause}; training stopped at step "
                                       f"{self.step}; {last_good(self.run_dir)}") from error
        finally:
            bar.close()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            log.close()
            self.close()

    def _stop_reason(self, clock: TrainingClock) -> str | None:
        """Why training stops before the next step (``max_steps``, ``max_time``, a signal's name), or
        None. Several ranks agree on it at log steps only, so that other steps need no collective."""
        tc = self.config.train
        if self.step >= tc.max_steps:
            return "max_steps"
        if self.ctx.world_size > 1 and self.step % tc.log_every:
            return None
        if any_rank(self.stop_signal is not None, self.ctx):
            return self.stop_signal or "a signal on another rank"
        if tc.max_time is not None and any_rank(clock.elapsed >= tc.max_time, self.ctx):
            return "max_time"
        return None

    def _labels(self, labels: torch.Tensor) -> torch.Tensor | None:
        """A batch's labels on the device, for a class-conditional model; None for the others."""
        model = self.config.model
        return labels.to(self.ctx.device, non_blocking=True) if model.num_classes or model.num_context else None

    def _train_step(self, step: int, images: torch.Tensor, labels: torch.Tensor, unreadable: int
                    ) -> tuple[dict, torch.Tensor]:
        """One optimisation step on this rank's batch, its noise seeded by ``(seed, step, rank)``;
        returns the loss terms and the gradient norm as device tensors (nothing is read back)."""
        seed = step_seed(self.config.train.seed, step, self.ctx.rank)
        torch.manual_seed(seed)
        x = dequantize(images.to(self.ctx.device, non_blocking=True), self.noise.manual_seed(seed))
        self.model.train()
        terms, grad_norm = self._update(x, self._labels(labels))
        self.scheduler.step()
        self.step, self.unreadable = step + 1, self.unreadable + unreadable
        return terms, grad_norm

    def _compile(self) -> None:
        """``train.compile``: one process compiles the whole step (:meth:`_step_on_device`: forward,
        gradients, clipping, Adam, EMA) into one graph, captured as a CUDA graph on a GPU; under DDP,
        whose all-reduce hangs on backward's gradient accumulation, the forward pass only."""
        if self.ctx.world_size > 1:
            self.forward = torch.compile(self.ddp)
            return
        cuda = self.ctx.device.type == "cuda"
        if cuda:  # a CUDA graph that updates an input not marked static is skipped (eager again)
            for t in self._step_state():
                torch._dynamo.mark_static_address(t)
        self._lr = torch.zeros((), device=self.ctx.device)  # an input, not a constant: no recompile as it changes
        self.optimizer._opt_called = True  # its steps run inside the graph, where an LR scheduler cannot see them
        self._compiled_step = torch.compile(self._step_on_device, mode="reduce-overhead" if cuda else None)

    def _step_state(self) -> list[torch.Tensor]:
        """Every tensor :meth:`_step_on_device` updates in place: the weights, Adam's state, the EMA
        and the skipped-step counts. Each keeps its address for the whole run."""
        state = self.params + [t for s in self.optimizer.state.values() for t in s.values()]
        state += [self.skipped.total, self.skipped.run, self.skipped.longest]
        if self.ema is not None:
            state += [*self.ema.module.parameters(), self.ema.updates]
        return state

    def _update(self, x: torch.Tensor, labels: torch.Tensor | None) -> tuple[dict, torch.Tensor]:
        """One step on the device (:meth:`_step_on_device`), compiled or not."""
        if self._compiled_step is None:
            return self._step_on_device(x, labels)
        with torch._dynamo.config.patch(trace_autograd_ops=True):  # torch.autograd.grad inside the graph
            return self._compiled_step(x, labels, self._lr.fill_(self.optimizer.param_groups[0]["lr"]))

    def _step_on_device(self, x: torch.Tensor, labels: torch.Tensor | None, lr: torch.Tensor | None = None
                        ) -> tuple[dict, torch.Tensor]:
        """Forward, backward, clipping, Adam and the EMA, all on the device in multi-tensor ops
        (:mod:`fvae.training.update`), with no value read back. A step whose loss or gradient is not
        finite on any rank changes nothing (Adam's ``found_inf`` masks its update, as
        ``GradScaler``'s does, and the EMA's weight is 0) and is counted in :class:`SkippedSteps`.
        ``lr``: the learning rate as a 0-d tensor (the compiled step's), else the optimizer's."""
        with autocast_for(self.ctx.device, self.bf16):
            terms = self.forward(x, labels)
        loss = terms["loss"].float().mean()
        logged = {k: v.detach().float().mean() for k, v in terms.items()}
        # nats per dimension: gradient norms of order 1
        grads = gradients(loss / self.model.num_dims, self.optimizer.trained, accumulate=self.ctx.world_size > 1)
        grad_norm = clip_by_global_norm_(grads, self.config.train.grad_clip)
        ok = all_true(torch.isfinite(loss) & torch.isfinite(grad_norm), self.ctx)
        self.optimizer.update(grads, (~ok).float(), lr)
        if self.ema is not None:
            self.ema.update(self.params, ok.float())
        self.skipped.record(ok)
        return logged, grad_norm

    def _check_divergence(self) -> None:
        """Raise :class:`TrainingDiverged` where ``max_bad_steps`` steps in a row were skipped since
        the last check (at log steps and before checkpoints: a read-back)."""
        longest = self.skipped.longest_run()
        if longest >= self.config.train.max_bad_steps:
            raise TrainingDiverged(f"{longest} non-finite steps in a row by step {self.step} (train.max_bad_steps="
                                   f"{self.config.train.max_bad_steps}); training stopped; {last_good(self.run_dir)}; "
                                   f"lower train.lr or raise train.grad_clip and resume from it")

    @property
    def bad_steps(self) -> int:
        """Steps skipped so far (a read-back)."""
        return int(self.skipped.total)

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

    def _log_step(self, log: RunLog, bar, terms: dict, grad_norm: torch.Tensor, clock: TrainingClock) -> None:
        tc = self.config.train
        self._check_divergence()
        terms = {k: all_mean(v, self.ctx).item() for k, v in terms.items()}
        bar.set_postfix(loss=f"{terms['loss']:.1f}", bad=self.bad_steps)
        rate = clock.images_per_second(tc.log_every * tc.batch_size * self.ctx.world_size)
        extras = {"train/grad_norm": grad_norm.item(), "train/lr": self.scheduler.get_last_lr()[0],
                  "train/skipped_steps": self.bad_steps, "train/unreadable_images": self.unreadable,
                  "train/images_per_second": rate}
        log.training(self.step, terms, self.model.num_dims,
                     extras | {f"scales/{k}": v.item() for k, v in self.model.scales().items()})

    def eval_model(self) -> LatentFlowModel:
        """The model samples and evaluations use: the EMA weights where kept; with a prior fitted
        after training (``model.prior_fit=after`` or ``refit``), that prior fitted to these weights
        first (without EMA weights, a refitted prior goes on training from the fit)."""
        model = (self.ema.module if self.ema is not None else self.model).eval()
        if model.prior.refitted and self._prior_fitted_at != self.step:
            fit_top_prior(model, self.train_set, seed=self.config.train.seed)
            self._prior_fitted_at = self.step
        return model

    def _write_samples(self, log: RunLog) -> None:
        if self.ctx.is_main:
            tc = self.config.train
            log.samples(self.step, {t: draw_samples(self.eval_model(), 64, t, seed=tc.seed) for t in tc.temperatures})

    def test_score(self) -> dict | None:
        """The sample score of ``score_samples`` samples at ``score_temperature``, where the
        dataset has labels to train a judge on (see :mod:`fvae.scoring.score`)."""
        tc = self.config.train
        if not tc.score_samples or self._score_unavailable:
            return None
        if self._scorer is None:
            try:
                self._scorer = scorer_for(dataset_key(self.config.data), self.train_set, self.test_set,
                                          self.config.model.image_shape[0])
            except ValueError:  # an unlabelled dataset has no judge
                self._score_unavailable = True
                return None
        return sample_score(self.eval_model(), self._scorer, tc.score_samples, tc.score_temperature, seed=tc.seed)

    def _evaluate(self) -> dict:
        """What ``metrics.jsonl`` records at a checkpoint: test bits/dim and the sample score."""
        tc = self.config.train
        record = {"step": self.step, "wall_time": round(self.elapsed, 3),
                  "test_bpd": test_bits_per_dim(self.eval_model(), self.test_set, tc.batch_size, tc.eval_batches,
                                                tc.seed + 1, self.ctx.device),
                  "skipped_steps": self.bad_steps, "unreadable_images": self.unreadable}
        score = self.test_score()
        if score is None:
            return record
        return record | {k: score[k] for k in SCORE_KEYS + CLASS_SCORE_KEYS if k in score}

    def _checkpoint(self, log: RunLog) -> Path | None:
        """Save a checkpoint, then evaluate it (rank 0; every rank waits), so that a failing evaluation
        loses no training. A state that is not finite (its weights, or the test bits/dim it gives) is
        never kept as a checkpoint: training stops with :class:`TrainingDiverged` naming the last good one."""
        path = None
        self._check_divergence()
        if self.ctx.is_main:
            if not bool(torch.stack(torch._foreach_norm(self.params)).isfinite().all()):
                self._diverged("the weights are not finite")
            state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "bad_steps": self.bad_steps, "elapsed": self.elapsed, "unreadable_images": self.unreadable,
                     "ema_updates": int(self.ema.updates) if self.ema is not None else 0,
                     "world_size": self.ctx.world_size}
            self.eval_model()  # a prior refitted to the weights evaluated is saved as fitted
            path = save_checkpoint(self.run_dir, self.step, self.config, self.model, state,
                                   self.ema.module if self.ema is not None else None, keep=None)
            record = self._evaluate()
            if not math.isfinite(record["test_bpd"]):
                remove_checkpoint(path)
                self._diverged(f"its test bits/dim are {record['test_bpd']}")
            prune_checkpoints(self.run_dir, self.config.train.keep_checkpoints)
            log.evaluation(record)
        barrier(self.ctx)
        return path

    def _diverged(self, why: str) -> None:
        raise TrainingDiverged(f"the model diverged by step {self.step}: {why}; training stopped; "
                               f"{last_good(self.run_dir)}; lower train.lr or raise train.grad_clip and resume "
                               f"from it")

    def _finish(self, log: RunLog, stopped_by: str) -> dict:
        """Final samples, checkpoint and ``summary.json``; ``stopped_by`` is ``max_steps``,
        ``max_time`` or the name of the signal that stopped training."""
        if self.step % self.config.train.sample_every:
            self._write_samples(log)
        last = newest_valid_checkpoint(self.run_dir, quiet=True)
        done = last is not None and load_state(last)["step"] == self.step
        checkpoint = last if done else self._checkpoint(log)
        summary = {}
        if self.ctx.is_main:
            last_eval = log.last_evaluation() or {}
            summary = {"steps": self.step, "wall_time": round(self.elapsed, 2), "test_bpd": last_eval.get("test_bpd"),
                       **{k: last_eval[k] for k in SCORE_KEYS + CLASS_SCORE_KEYS if k in last_eval},
                       "skipped_steps": self.bad_steps, "unreadable_images": self.unreadable,
                       "stopped_by": stopped_by, "checkpoint": str(checkpoint), "world_size": self.ctx.world_size,
                       "train_precision": "bf16" if self.bf16 else "32"}
            log.summary(summary)
            if self.unreadable:
                print(f"note: {self.unreadable} training image(s) could not be read (damaged, or smaller than the "
                      f"model's images) and were skipped, each replaced by the next readable one", file=sys.stderr)
        return summary
