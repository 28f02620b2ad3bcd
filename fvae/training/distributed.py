"""Where a training process runs, and the few collectives the loop needs.

``torchrun --nproc_per_node N`` (and ``--nnodes`` for several machines) sets the ranks in the
environment; :func:`setup_distributed` joins the process group (gloo on CPU, NCCL on GPU).
One process alone needs no group and every collective here is then the identity.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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
    """Join the process group that ``torchrun`` describes, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    return Context(dist.get_rank() if dist.is_initialized() else 0, world_size, device)


def all_mean(value: torch.Tensor, ctx: Context) -> torch.Tensor:
    """The mean of ``value`` over ranks."""
    if ctx.world_size > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= ctx.world_size
    return value


def all_true(flag: torch.Tensor, ctx: Context) -> torch.Tensor:
    """A 0-d bool tensor, true on every rank where ``flag`` is true on all; stays on the device
    (no read-back: a collective that the GPU runs in its stream)."""
    if ctx.world_size == 1:
        return flag
    t = flag.to(torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t.bool()


def any_rank(flag: bool, ctx: Context) -> bool:
    """True on every rank if ``flag`` is true on any."""
    if ctx.world_size == 1:
        return flag
    t = torch.tensor([float(flag)], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_flag(flag: bool, ctx: Context) -> bool:
    """Rank 0's ``flag``, on every rank."""
    if ctx.world_size == 1:
        return flag
    t = torch.tensor([float(flag)], device=ctx.device)
    dist.broadcast(t, 0)
    return bool(t.item())


def barrier(ctx: Context) -> None:
    if ctx.world_size > 1:
        dist.barrier()
