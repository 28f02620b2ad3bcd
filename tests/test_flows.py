"""Properties every flow block and every whole flow must have: exact inverse, log-det equal to
``log|det|`` of the autograd Jacobian, output shape. Every block of the registry
(:mod:`fvae.flows.registry`) is tested, so a new block is tested by its registry line."""
import pytest
import torch
from conftest import perturb

from fvae.flows import (
    BLOCKS as REGISTRY,
)
from fvae.flows import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    ConditionalAffine,
    ConditionalBlock,
    ConditionalShift,
    FlowSequence,
    GaussianSplit,
    MultiScaleGlow,
    Squeeze,
    build_block,
    glow_step,
)
from fvae.models.nets import AffineContext, Encoder

SHAPE = (4, 4, 4)  # (C, H, W): small enough for a dense Jacobian

BLOCKS = {
    # every registered block, with 3x3 and (where it has a net) 1x1 kernels
    **{name: (lambda name=name: build_block(name, 4, width=8, seed=3)) for name in REGISTRY},
    "affine_kernel_1": lambda: build_block("affine", 4, width=8, kernel_size=1),
    "conditional_affine_kernel_1": lambda: build_block("conditional_affine", 4, width=8, kernel_size=1),
    "class_conditional_split_prior": lambda: GaussianSplit(2, 2, num_classes=3),
    "class_conditional_affine": lambda: build_block("affine", 4, width=8, num_classes=3),
    "class_conditional_additive": lambda: build_block("additive", 4, width=8, num_classes=3),
    "class_conditional_glow": lambda: MultiScaleGlow(SHAPE, 2, 1, 8, squeeze_first=False, num_classes=3,
                                                     class_couplings=True),
    "glow_step_affine": lambda: glow_step(4, 8, "affine", "conv1x1_lu"),
    "glow_step_additive_shuffle": lambda: glow_step(4, 8, "additive", "shuffle"),
    "sequence": lambda: FlowSequence(glow_step(4, 8), Squeeze(), glow_step(16, 8, mixing="conv1x1")),
    "glow_1_level": lambda: MultiScaleGlow(SHAPE, 1, 2, 8, squeeze_first=False),
    "glow_2_levels": lambda: MultiScaleGlow(SHAPE, 2, 2, 8, squeeze_first=False),
    "glow_2_levels_squeeze_first": lambda: MultiScaleGlow(SHAPE, 2, 1, 8, "additive", "reverse"),
    "glow_3_levels_odd_split": lambda: MultiScaleGlow((3, 8, 8), 3, 1, 8),
    "glow_deeper_top_and_net_split_prior": lambda: MultiScaleGlow(SHAPE, 2, 1, 8, squeeze_first=False, top_steps=3,
                                                                  split_width=8),
}


def make_block(name):
    """The block, three inputs, and the context it takes (None, labels or a tensor like x)."""
    block = BLOCKS[name]().double()
    x = torch.randn(16, *(SHAPE if "odd" not in name else (3, 8, 8)), dtype=torch.float64)
    context = None
    if "class_conditional" in name:
        context = torch.arange(16) % 3
    elif isinstance(block, ConditionalBlock):
        context = torch.randn_like(x)
    block(x, context)  # data-dependent initialisation (ActNorm)
    return perturb(block), x[:3], None if context is None else context[:3]


def log_abs_det_jacobian(fn, x):
    """``log|det dfn/dx|`` of each example, from the dense autograd Jacobian."""
    out = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: fn(v[None])[0].flatten(), xi)
        out.append(torch.linalg.slogdet(jac.reshape(xi.numel(), xi.numel()))[1])
    return torch.stack(out)


@pytest.mark.parametrize("name", list(BLOCKS))
def test_inverse_round_trip(name):
    block, x, context = make_block(name)
    y, logdet = block(x, context)
    assert logdet.shape == (x.shape[0],)
    assert y.numel() == x.numel()
    torch.testing.assert_close(block.inverse(y, context), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(BLOCKS))
def test_logdet_matches_autograd_jacobian(name):
    block, x, context = make_block(name)
    _, logdet = block(x, context)
    contexts = [None] * len(x) if context is None else [c[None] for c in context]
    expected = torch.stack([log_abs_det_jacobian(lambda v, c=c: block(v, c)[0], xi[None])[0]
                            for xi, c in zip(x, contexts)])
    torch.testing.assert_close(logdet, expected, atol=1e-6, rtol=1e-6)


def test_conditional_blocks_without_their_context_are_a_clear_error():
    for name in ("conditional_affine", "conditional_shift"):
        with pytest.raises(ValueError, match="is conditional: pass its context"):
            build_block(name, 4, width=8)(torch.randn(2, *SHAPE))
    with pytest.raises(ValueError, match="needs the labels"):
        GaussianSplit(2, 2, num_classes=3)(torch.randn(2, *SHAPE))
    with pytest.raises(ValueError, match="is class-conditional: pass the labels"):
        AffineCoupling(4, 8, num_classes=3)(torch.randn(2, *SHAPE))


@pytest.mark.parametrize("name", ["class_conditional_affine", "class_conditional_additive", "class_conditional_glow"])
def test_class_conditional_couplings_depend_on_the_class(name):
    """Each class is its own invertible map: other labels, other outputs; a one-hot row of
    class weights is the same as the class index."""
    block, x, _ = make_block(name)
    y0, ld0 = block(x, torch.zeros(3, dtype=torch.long))
    y1, _ = block(x, torch.ones(3, dtype=torch.long))
    assert (y0 - y1).abs().amax() > 1e-3
    y0w, ld0w = block(x, torch.nn.functional.one_hot(torch.zeros(3, dtype=torch.long), 3).double())
    torch.testing.assert_close((y0w, ld0w), (y0, ld0))


def test_the_registry_names_the_configs_choices():
    from fvae.config import ModelConfig

    assert {"affine", "additive"} <= set(ModelConfig.__dataclass_fields__["coupling"].metadata["rule"].choices)
    with pytest.raises(ValueError, match="unknown coupling 'spline'"):
        glow_step(4, 8, coupling="spline")
    with pytest.raises(ValueError, match="unknown flow block"):
        build_block("spline", 4)


def test_actnorm_initialises_to_zero_mean_unit_variance():
    x = 3.0 + 2.5 * torch.randn(64, 5, 6, 6, dtype=torch.float64)
    norm = ActNorm(5).double()
    y, _ = norm(x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(5, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(5, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    assert bool(norm.initialized)
    y2, _ = norm(x + 1.0)  # later batches do not re-initialise
    torch.testing.assert_close(y2 - y, torch.exp(norm.log_scale).expand_as(y))


def test_actnorm_reads_its_loaded_state_and_compiles_without_graph_breaks():
    x = 3.0 + 2.5 * torch.randn(64, 5, 6, 6, dtype=torch.float64)
    fresh = ActNorm(5).double().state_dict()
    norm = ActNorm(5).double()
    norm(x + 7.0)
    norm.load_state_dict(fresh)  # an uninitialised state: the next batch initialises again
    y, _ = norm(x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(5, dtype=torch.float64), atol=1e-10, rtol=0)
    trained = ActNorm(5).double()
    trained.load_state_dict(norm.state_dict())  # an initialised state is kept, not overwritten
    torch.testing.assert_close(trained(x + 1.0)[0], norm(x + 1.0)[0])
    explained = torch._dynamo.explain(norm)(x)
    assert explained.graph_count == 1 and explained.graph_break_count == 0


def test_coupling_blocks_start_as_identity():
    x = torch.randn(2, *SHAPE)
    for block in (AffineCoupling(4, 8), AdditiveCoupling(4, 8)):
        y, logdet = block(x)
        torch.testing.assert_close(y, x)
        torch.testing.assert_close(logdet, torch.zeros(2))


def test_multiscale_glow_rejects_odd_sizes_and_wrong_shapes():
    with pytest.raises(ValueError, match="even"):
        MultiScaleGlow((4, 7, 7), 2, 1, 8, squeeze_first=False)
    flow = MultiScaleGlow(SHAPE, 2, 1, 8, squeeze_first=False)
    with pytest.raises(ValueError, match="shape"):
        flow(torch.randn(2, 4, 8, 8))


# --- conditional flows F_x(u) ------------------------------------------------------------------

def _context_net():
    return AffineContext(Encoder(1, 1, 1, 8), 4)


CONDITIONAL = {
    "conditional_affine": lambda: ConditionalAffine(_context_net()),
    "conditional_shift": lambda: ConditionalShift(Encoder(1, 1, 1, 8), sigma_init=0.7),
    # the paper's example: f1 = F1(s1(x) u + m1(x)), f2 = F2(s2(x) f1 + m2(x)), F_x = s3(x) f2 + m3(x)
    "paper_composite": lambda: FlowSequence(
        ConditionalAffine(_context_net()), MultiScaleGlow(SHAPE, 1, 1, 8, squeeze_first=False),
        ConditionalAffine(_context_net()), MultiScaleGlow(SHAPE, 2, 1, 8, squeeze_first=False),
        ConditionalAffine(_context_net())),
}


@pytest.mark.parametrize("name", list(CONDITIONAL))
def test_conditional_flow_inverse_and_logdet(name):
    flow = CONDITIONAL[name]().double()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    u = torch.randn(3, *SHAPE, dtype=torch.float64)
    flow(u, x)
    perturb(flow)
    y, logdet = flow(u, x)
    torch.testing.assert_close(flow.inverse(y, x), u, atol=1e-5, rtol=0)
    expected = torch.stack([
        log_abs_det_jacobian(lambda v, xi=xi: flow(v, xi[None])[0], ui[None])[0] for ui, xi in zip(u, x)])
    torch.testing.assert_close(logdet, expected, atol=1e-6, rtol=1e-6)


def test_composite_logdets_add_up():
    parts = CONDITIONAL["paper_composite"]().double()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    u = torch.randn(2, *SHAPE, dtype=torch.float64)
    perturb(parts)
    total, h = torch.zeros(2, dtype=torch.float64), u
    for step in parts.blocks:
        h, ld = step(h, x) if isinstance(step, ConditionalAffine) else step(h)
        total = total + ld
    y, logdet = parts(u, x)
    torch.testing.assert_close(y, h)
    torch.testing.assert_close(logdet, total)


def test_top_steps_and_split_prior_width_build_what_they_say():
    flow = MultiScaleGlow(SHAPE, 2, 1, 8, squeeze_first=False, top_steps=3, split_width=8)
    assert [len(level.blocks) for level in flow.flows] == [1, 3]
    prior_convs = [m for m in flow.splits[0].modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(prior_convs) == 3 and prior_convs[0].out_channels == 8
    # the prior still starts as N(0, I): its last layer is zero
    assert not prior_convs[-1].weight.any() and not prior_convs[-1].bias.any()


@pytest.mark.parametrize("mixing", ["conv1x1_lu", "conv1x1", "shuffle", "reverse", "dense shuffle"])
@pytest.mark.parametrize("coupling", ["affine", "additive"])
def test_a_glow_level_fused_equals_its_blocks_one_by_one(mixing, coupling):
    """ActNorm and mixing folded into one map a step, built for all steps at once (a 1x1 convolution,
    or for a permutation on the CPU a gather and a per-channel scale; ``dense``: the convolution a
    GPU runs): the same map, log-det and gradients as the blocks run in turn (float64)."""
    import torch.nn.functional as F

    from fvae.flows.conv1x1 import Permutation, _permute_and_scale

    dense = mixing.startswith("dense ")
    level = MultiScaleGlow(SHAPE, 1, 3, 8, coupling, mixing.removeprefix("dense "),
                           squeeze_first=False).double().flows[0]
    for block in level.modules():
        if isinstance(block, Permutation):
            block.dense = dense or None
    x = torch.randn(5, *SHAPE, dtype=torch.float64)
    assert not level._fusable()
    level(x)  # ActNorm's initialisation runs block by block
    perturb(level)
    assert level._fusable()
    gathered = mixing in ("shuffle", "reverse")
    assert level._mixing_maps(x)[0][0].func is (_permute_and_scale if gathered else F.conv2d)
    runs = []
    for forward in (level.forward, lambda v: FlowSequence.forward(level, v)):
        level.zero_grad()
        y, logdet = forward(x)
        (y.pow(2).sum() - logdet.sum()).backward()
        runs.append((y, logdet, [p.grad.clone() for p in level.parameters()]))
    (y, logdet, grads), (y_ref, logdet_ref, grads_ref) = runs
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(logdet, logdet_ref, rtol=0, atol=1e-12)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def test_the_affine_couplings_hand_written_gradient_passes_gradcheck_against_its_formula():
    """``ScaleShift``'s backward against finite differences (float64), and its outputs against
    ``x2 exp(c tanh(raw / c)) + t`` written with autograd's own ops."""
    from fvae.flows.base import soft_clamp
    from fvae.flows.coupling import scale_shift

    g = torch.Generator().manual_seed(0)
    x2 = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=g, requires_grad=True)
    h = (3 * torch.randn(2, 6, 4, 4, dtype=torch.float64, generator=g)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: scale_shift(a, b, 2.0), (x2, h))
    y, log_s = scale_shift(x2, h, 2.0)
    raw, t = h.chunk(2, dim=1)
    torch.testing.assert_close(log_s, soft_clamp(raw, 2.0), rtol=0, atol=1e-14)
    torch.testing.assert_close(y, x2 * torch.exp(soft_clamp(raw, 2.0)) + t, rtol=0, atol=1e-14)


def test_stacking_step_parameters_passes_gradcheck():
    from fvae.flows.base import stack

    parts = [torch.randn(3, 2, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    assert torch.autograd.gradcheck(lambda *p: stack(list(p)) * torch.arange(24.0, dtype=torch.float64).view(4, 3, 2),
                                    parts)
