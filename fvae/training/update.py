"""One optimisation update in a handful of multi-tensor ops: the gradients, their clipping by the
global norm, and an Adam step that a non-finite step leaves undone.

Nothing here loops over the parameters in Python or reads a value back to the host:

* :func:`gradients` takes ``d loss / d theta`` with ``torch.autograd.grad``, which hands the
  gradients back as a list instead of accumulating each into its parameter's ``.grad`` (one op
  per parameter less); under DistributedDataParallel, whose all-reduce hangs on that
  accumulation, with ``backward()``;
* :func:`clip_by_global_norm_` scales them by ``min(1, c / (||g|| + 1e-6))``, as
  ``torch.nn.utils.clip_grad_norm_`` does;
* :class:`GradientAdam` is ``torch.optim.Adam`` whose step takes those gradients and runs
  PyTorch's fused Adam kernel (the functional ``torch.optim.adam.adam``) on its own state;
  ``found_inf`` (1 for a step to skip) leaves weights, moments and step counts as they were, as
  ``GradScaler``'s does.
"""
from __future__ import annotations

import torch
from torch.optim.adam import adam


def gradients(loss: torch.Tensor, params: list[torch.Tensor], accumulate: bool) -> list[torch.Tensor]:
    """``d loss / d p`` for each of ``params`` (zeros for one the loss does not reach).
    ``accumulate=True`` (under DDP) runs ``loss.backward()`` and returns the ``.grad`` it filled."""
    if accumulate:
        for p in params:
            p.grad = None
        loss.backward()
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    return list(torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True))


def clip_by_global_norm_(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale ``grads`` in place by ``min(1, max_norm / (||g|| + 1e-6))``, ``||g||`` the 2-norm of
    all of them together; returns ``||g||`` (before scaling, a 0-d tensor)."""
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return norm


class GradientAdam(torch.optim.Adam):
    """``torch.optim.Adam`` (fused) whose :meth:`step` takes the gradients as a list, one per
    parameter that requires one (:attr:`trained`), instead of reading each ``.grad``. Its state
    (``exp_avg``, ``exp_avg_sq``, ``step``) is created at construction, as Adam would on its first
    step, and its ``state_dict`` is Adam's, so that checkpoints of either load in the other."""

    def __init__(self, params, lr: float):
        super().__init__(params, lr=lr, fused=True)
        if len(self.param_groups) != 1:
            raise ValueError("GradientAdam takes one parameter group")
        self.trained = [p for p in self.param_groups[0]["params"] if p.requires_grad]
        group = self.param_groups[0]  # the traced step reads them once: no guard on a changing group
        self._traced_hyper = (*group["betas"], group["eps"])
        self._take_state()

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._take_state()

    def _take_state(self) -> None:
        """The state tensors of :attr:`trained` as lists (created where missing)."""
        for p in self.trained:
            if not self.state[p]:
                self.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                 "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                 "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        self._lists = [[self.state[p][name] for p in self.trained] for name in ("exp_avg", "exp_avg_sq", "step")]

    def step(self, grads: list[torch.Tensor], found_inf: torch.Tensor, lr: torch.Tensor | None = None) -> None:
        """:meth:`update` (``step`` itself is wrapped by profiling hooks and any LR scheduler, which
        ``torch.compile`` does not trace: call :meth:`update` in a compiled region)."""
        self.update(grads, found_inf, lr)

    @torch.no_grad()
    def update(self, grads: list[torch.Tensor], found_inf: torch.Tensor, lr: torch.Tensor | None = None) -> None:
        """One Adam step with ``grads`` (one per tensor of :attr:`trained`); none at all where
        ``found_inf`` (a 0-d float tensor on the parameters' device) is 1. ``lr`` (a 0-d tensor)
        overrides the group's learning rate; under ``torch.compile`` it must be given, and the step
        is written in plain tensor ops that it traces (the fused kernel is opaque to it: a graph
        break), with the betas and eps the optimizer was built with (no weight decay)."""
        if torch.compiler.is_compiling():
            return self._traced_step(grads, found_inf, lr)
        self._opt_called = True  # what an LR scheduler's wrapper of ``step`` records: a step was taken
        group = self.param_groups[0]
        lr = group["lr"] if lr is None else lr
        beta1, beta2 = group["betas"]
        exp_avgs, exp_avg_sqs, steps = self._lists
        adam(self.trained, grads, exp_avgs, exp_avg_sqs, [], steps, fused=True, found_inf=found_inf,
             amsgrad=group["amsgrad"], beta1=beta1, beta2=beta2, lr=lr, weight_decay=group["weight_decay"],
             eps=group["eps"], maximize=group["maximize"])

    def _traced_step(self, grads: list[torch.Tensor], found_inf: torch.Tensor, lr) -> None:
        """The fused kernel's update, ``m <- lerp(m, g, 1 - b1)``, ``v <- b2 v + (1 - b2) g^2``,
        ``p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``, each kept only where
        ``found_inf`` is 0; the loop is traced once into the compiled graph, never run per step."""
        beta1, beta2, eps = self._traced_hyper
        exp_avgs, exp_avg_sqs, steps = self._lists
        keep = found_inf == 0
        for t in steps:
            t.add_(1 - found_inf)
        step_size = lr / (1 - beta1 ** steps[0])
        root_correction = torch.sqrt(1 - beta2 ** steps[0])
        for p, g, m, v in zip(self.trained, grads, exp_avgs, exp_avg_sqs):
            g = torch.where(keep, g, 0.0)
            m_new = torch.lerp(m, g, 1 - beta1)
            v_new = v * beta2 + (1 - beta2) * g * g
            p_new = p - step_size * m_new / (v_new.sqrt() / root_correction + eps)
            for old, new in ((m, m_new), (v, v_new), (p, p_new)):
                old.copy_(torch.where(keep, new, old))
