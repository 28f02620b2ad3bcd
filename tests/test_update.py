"""The optimisation update's multi-tensor pieces against PyTorch's own (fvae.training.update)."""
import copy

import pytest
import torch

from fvae.training.update import GradientAdam, clip_by_global_norm_, gradients


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1))
    net[0].to(memory_format=torch.channels_last)  # gradients in another layout than the rest
    net.register_parameter("unused", torch.nn.Parameter(torch.ones(3)))
    return net


def _loss(net: torch.nn.Module, seed: int) -> torch.Tensor:
    x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(seed))
    return net(x.contiguous(memory_format=torch.channels_last)).pow(2).mean() * 50


@pytest.mark.parametrize("accumulate", [False, True])
def test_clipped_adam_steps_equal_torch_adam_with_clip_grad_norm(accumulate):
    ours, reference = _net(), _net()
    update = GradientAdam(ours.parameters(), lr=0.01)
    adam = torch.optim.Adam(reference.parameters(), lr=0.01)
    params = list(ours.parameters())
    for step in range(4):
        grads = gradients(_loss(ours, step), params, accumulate)
        norm = clip_by_global_norm_(grads, 1.0)
        update.step(grads, torch.zeros(()))
        adam.zero_grad()
        _loss(reference, step).backward()
        expected_norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
        adam.step()
        assert norm > 1.0 and torch.allclose(norm, expected_norm)
    for a, b in zip(ours.parameters(), reference.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.equal(ours.unused, torch.ones(3))  # no gradient reaches it: zeros, no change


def test_a_step_with_found_inf_changes_no_weight_and_no_state_and_the_state_dict_loads_back():
    net = _net()
    update = optimizer = GradientAdam(net.parameters(), lr=0.01)
    update.step(gradients(_loss(net, 0), list(net.parameters()), False), torch.zeros(()))
    weights, state = copy.deepcopy(net.state_dict()), copy.deepcopy(optimizer.state_dict())
    grads = gradients(_loss(net, 1) * float("nan"), list(net.parameters()), False)
    update.step(grads, torch.ones(()))
    assert all(torch.equal(a, b) for a, b in zip(weights.values(), net.state_dict().values()))
    after = optimizer.state_dict()["state"]
    for k, s in state["state"].items():
        assert all(torch.equal(s[name], after[k][name]) for name in ("step", "exp_avg", "exp_avg_sq"))
    fresh = GradientAdam(_net().parameters(), lr=0.01)
    fresh.load_state_dict(state)
    assert all(s["step"].item() == 1 for s in fresh.state.values())
    plain = torch.optim.Adam(_net().parameters(), lr=0.01, fused=True)  # a checkpoint of either loads in the other
    plain.load_state_dict(state)
    assert plain.state_dict()["state"].keys() == state["state"].keys()
