"""Behaviour of unfold(): per-stage adapters, share modes, data steps, reports and bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import MatrixOperator, SigmaDenoiser, TinyDenoiser
from torch import nn

import lorun_peft
from lorun_peft import unfold
from lorun_peft.errors import InvalidArgumentError, LorunError
from lorun_peft.operators import BlockCS

K = 4


def measure(operator, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return operator.A(torch.rand(n, 1, 8, 8, generator=g))


def lorun(operator, **kwargs):
    # nonzero weights in every adapter factor from the start, so every factor gets a gradient
    init = "init_lora_weights" if kwargs.get("adapter", "lora") in ("lora", "dora") else "init_weights"
    kwargs.setdefault("adapter_options", {init: False})
    return lorun_peft.unfold(TinyDenoiser(), operator, K=K, **kwargs)


@pytest.mark.parametrize("algorithm", ["pgd", "hqs"])
@pytest.mark.parametrize("adapter", ["lora", "dora", "loha", "lokr"])
def test_every_stage_adapter_gets_gradient_and_base_none(operator, algorithm, adapter):
    net = lorun(operator, algorithm=algorithm, adapter=adapter)
    net(measure(operator)).square().mean().backward()
    for k in range(K):
        params = net.denoisers.adapter_parameters(k)
        assert params, f"stage {k} has no adapter parameters"
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), f"stage {k} got no gradient"
        assert all(p.requires_grad for p in params)
    for p in net.denoisers.base_parameters():
        assert not p.requires_grad and p.grad is None
    assert all(p.grad is not None for p in net.steps.parameters())


def test_lora_every_adapter_tensor_gets_gradient(operator):
    net = lorun(operator)
    net(measure(operator)).square().mean().backward()
    for k in range(K):
        for p in net.denoisers.adapter_parameters(k):
            assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("k", [0, 2, K - 1])
def test_editing_one_stage_changes_only_that_stage_and_later(operator, k):
    net = lorun(operator)
    y = measure(operator)
    with torch.no_grad():
        _, before = net(y, return_stages=True)
        for p in net.denoisers.adapter_parameters(k):
            p.add_(0.05)
        _, after = net(y, return_stages=True)
    for j in range(k):
        assert torch.equal(before[j], after[j]), f"stage {j} changed after editing stage {k}"
    for j in range(k, K):
        assert not torch.allclose(before[j], after[j]), f"stage {j} did not change after editing stage {k}"


@pytest.mark.parametrize("gamma", [1.0, 10.0, 25.0, 50.0, 100.0])
def test_ranks_follow_gamma_rule_on_every_layer(operator, gamma):
    net = lorun_peft.unfold(TinyDenoiser(width=40), operator, K=2, gamma=gamma)
    expected = {"head": lorun_peft.gamma_rank(1, 40, gamma), "body": lorun_peft.gamma_rank(40, 40, gamma),
                "tail": lorun_peft.gamma_rank(40, 1, gamma)}
    assert {row.name: row.rank for row in net.rank_table().layers} == expected
    for k in range(2):
        assert net.denoisers.layer_ranks(k) == expected  # what PEFT actually built


def test_rank_patterns_are_anchored_to_full_names(operator):
    """A layer called `conv` and another `inner.conv` of other widths each get their own rank."""

    class Nested(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 40, 3, padding=1)
            self.inner = nn.Module()
            self.inner.conv = nn.Conv2d(40, 20, 3, padding=1)
            self.out = nn.Conv2d(20, 1, 3, padding=1)

        def forward(self, x):
            return self.out(self.inner.conv(self.conv(x)))

    net = lorun_peft.unfold(Nested(), operator, K=2, gamma=50)
    assert net.denoisers.layer_ranks(1) == {"conv": 1, "inner.conv": 10, "out": 1}


def test_gamma_rank_rule():
    assert lorun_peft.gamma_rank(64, 128, 10) == 7  # ceil(6.4)
    assert lorun_peft.gamma_rank(30, 64, 10) == 3  # exactly 3.0, no float round-up
    assert lorun_peft.gamma_rank(3, 3, 1) == 1  # never zero
    assert lorun_peft.gamma_rank(64, 64, 100) == 64


def test_block_k_has_k_times_the_denoiser_parameters(operator):
    one = sum(p.numel() for p in TinyDenoiser().parameters())
    block_k = lorun_peft.unfold(TinyDenoiser(), operator, K=K, share="none")
    denoiser_params = sum(p.numel() for p in block_k.denoisers.parameters())
    assert denoiser_params == K * one
    report = block_k.parameter_report()
    assert report.total == report.block_k == K * one + report.step
    block_1 = lorun_peft.unfold(TinyDenoiser(), operator, K=K, share="base")
    assert sum(p.numel() for p in block_1.denoisers.parameters()) == one


def test_lorun_trainable_count_matches_rank_table(operator):
    net = lorun_peft.unfold(TinyDenoiser(width=40), operator, K=K, gamma=10)
    per_stage = 0
    for row in net.rank_table().layers:
        kernel = 9  # every TinyDenoiser layer is 3 x 3: lora_A is a 3x3 conv, lora_B a 1x1 conv
        per_stage += row.rank * (row.in_dim * kernel + row.out_dim)
    report = net.parameter_report()
    assert set(report.adapters.values()) == {per_stage}
    assert report.trainable == K * per_stage + report.step
    assert report.base == sum(p.numel() for p in TinyDenoiser(width=40).parameters())
    assert report.total == report.base + K * per_stage + report.step
    assert "Block-4 equivalent" in str(report)


def test_rank_table_lists_shared_only_layers(operator):
    class WithTranspose(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Conv2d(1, 4, 2, stride=2)
            self.up = nn.ConvTranspose2d(4, 1, 2, stride=2)

        def forward(self, x):
            return self.up(self.down(x))

    net = lorun_peft.unfold(WithTranspose(), operator, K=2)
    table = net.rank_table()
    assert [row.name for row in table.layers] == ["down"]
    assert table.shared_only[0][:2] == ("up", "ConvTranspose2d")
    assert "transposed" in table.shared_only[0][2]
    assert "shared-only" in str(table)


@pytest.mark.parametrize("share", ["lora", "base", "none"])
@pytest.mark.parametrize("algorithm", ["pgd", "hqs"])
def test_short_training_lowers_loss(operator, images, share, algorithm):
    torch.manual_seed(0)
    op = MatrixOperator(shape=(1, 8, 8), m=32)
    net = lorun_peft.unfold(TinyDenoiser(), op, K=3, share=share, algorithm=algorithm)
    x = images[:, :, :8, :8]
    y = op.A(x)
    with torch.no_grad():
        before = torch.mean((net(y) - x) ** 2).item()
    lorun_peft.train(net, x, steps=40, lr=1e-2, batch_size=8, progress=False, schedule="constant")
    with torch.no_grad():
        after = torch.mean((net(y) - x) ** 2).item()
    assert after < 0.8 * before, (before, after)


def test_lorun_optimises_only_adapters_steps_and_operator(operator, images):
    net = lorun(operator)
    base = [p.detach().clone() for p in net.denoisers.base_parameters()]
    adapters = [p.detach().clone() for p in net.denoisers.adapter_parameters(0)]
    lorun_peft.train(net, images[:, :, :8, :8], steps=3, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(base, net.denoisers.base_parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(adapters, net.denoisers.adapter_parameters(0)))


def test_pgd_step_is_the_formula(operator):
    net = lorun_peft.unfold(TinyDenoiser(), operator, K=1, share="base")
    net.denoisers.denoiser = nn.Identity()
    y = measure(operator)
    x0 = operator.A_adjoint(y)
    expected = x0 - 0.5 * operator.A_adjoint(operator.A(x0) - y)
    torch.testing.assert_close(net(y), expected)


def test_hqs_step_without_prox_solves_the_normal_equations(operator):
    """Operator has no prox_l2: fixed CG steps must match (Phi^T Phi + mu I)^-1 (Phi^T y + mu w)."""
    op = MatrixOperator(shape=(1, 4, 4), m=10).double()
    net = lorun_peft.unfold(TinyDenoiser(), op, K=1, algorithm="hqs", share="base").double()
    net.denoisers.denoiser = nn.Identity()
    y = op.A(torch.rand(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    w = op.A_adjoint(y).flatten(1)
    mu = 0.5
    normal = op.phi.T @ op.phi + mu * torch.eye(16, dtype=torch.float64)
    expected = torch.linalg.solve(normal, (y @ op.phi + mu * w).T).T.view(-1, 1, 4, 4)
    torch.testing.assert_close(net(y), expected, rtol=1e-8, atol=1e-10)


def test_hqs_uses_operator_prox_when_present(operator):
    calls = []

    class WithProx(MatrixOperator):
        def prox_l2(self, z, y, gamma):
            calls.append(float(gamma.detach()))
            return z

    net = lorun_peft.unfold(TinyDenoiser(), WithProx(), K=2, algorithm="hqs")
    net(measure(operator))
    assert calls == [pytest.approx(2.0), pytest.approx(2.0)]  # gamma = 1 / mu_k, mu_k = 0.5


@pytest.mark.parametrize("algorithm,expected", [("pgd", 0.5), ("hqs", 1.0)])
def test_noise_level_gives_per_sample_sigma(operator, algorithm, expected):
    net = lorun_peft.unfold(SigmaDenoiser(), operator, K=2, algorithm=algorithm, noise_level=True, share="base")
    net(measure(operator, n=3))
    sigma = net.denoisers.denoiser.seen_sigma
    assert sigma.shape == (3,)
    torch.testing.assert_close(sigma, torch.full((3,), expected))  # sqrt(rho*lam) or sqrt(lam/mu)


def test_step_parameters_start_at_half_and_stay_positive(operator):
    net = lorun(operator)
    assert all(net.steps.rho(k).item() == pytest.approx(0.5) for k in range(K))
    with torch.no_grad():
        net.steps.rho.raw.fill_(-50.0)
    assert all(net.steps.rho(k).item() > 0 for k in range(K))


def test_checkpointed_gradients_equal_plain_gradients(operator):
    torch.manual_seed(0)
    plain = lorun(operator)
    ckpt = copy.deepcopy(plain)
    ckpt.checkpoint = True
    y = measure(operator)
    for net in (plain, ckpt):
        net.train()
        net(y).square().mean().backward()
    for k in range(K):
        for a, b in zip(plain.denoisers.adapter_parameters(k), ckpt.denoisers.adapter_parameters(k)):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-9)


def test_to_lora_keeps_base_steps_and_operator(operator, images):
    net = lorun_peft.unfold(TinyDenoiser(), operator, K=3, share="base")
    lorun_peft.train(net, images[:, :, :8, :8], steps=5, lr=1e-2, progress=False)
    y = measure(operator)
    with torch.no_grad():
        block_1 = net(y)
    steps_before = net.steps.rho.raw.detach().clone()
    net.to_lora(gamma=20.0)
    assert net.share == "lora" and net.adapter_names == ["stage_0", "stage_1", "stage_2"]
    assert torch.equal(net.steps.rho.raw, steps_before)
    with torch.no_grad():
        torch.testing.assert_close(net(y), block_1)  # LoRA B starts at zero: same function
    assert net.rank_table().gamma == 20.0
    assert all(not p.requires_grad for p in net.denoisers.base_parameters())


def test_unfold_leaves_the_callers_denoiser_untouched(operator):
    denoiser = TinyDenoiser()
    state = {k: v.clone() for k, v in denoiser.state_dict().items()}
    lorun_peft.unfold(denoiser, operator, K=2)
    assert type(denoiser.head) is nn.Conv2d
    assert all(torch.equal(state[k], v) for k, v in denoiser.state_dict().items())


# ---- bad input: each raises InvalidArgumentError naming the argument -------------------------


@pytest.mark.parametrize("K", [0, -1, 2.5, True, "3"])
def test_bad_K(operator, K):  # noqa: N803
    with pytest.raises(InvalidArgumentError, match="K"):
        lorun_peft.unfold(TinyDenoiser(), operator, K=K)


@pytest.mark.parametrize("gamma", [0, -5, 100.5, "10", None])
def test_bad_gamma(operator, gamma):
    with pytest.raises(InvalidArgumentError, match=r"gamma must be a number in \(0, 100\]"):
        lorun_peft.unfold(TinyDenoiser(), operator, K=2, gamma=gamma)


@pytest.mark.parametrize("kwarg,value", [("algorithm", "admm"), ("share", "all"), ("adapter", "ia4")])
def test_unknown_choice(operator, kwarg, value):
    with pytest.raises(InvalidArgumentError, match=f"{kwarg} must be one of"):
        lorun_peft.unfold(TinyDenoiser(), operator, K=2, **{kwarg: value})


@pytest.mark.parametrize("missing", ["A", "A_adjoint"])
@pytest.mark.parametrize("algorithm", ["pgd", "hqs"])
def test_operator_without_A_or_adjoint(missing, algorithm):
    class Partial:
        def A(self, x):  # noqa: N802
            return x

        def A_adjoint(self, y):  # noqa: N802
            return y

    op = Partial()
    setattr(op, missing, None)
    with pytest.raises(InvalidArgumentError, match=f"lacks {missing}"):
        lorun_peft.unfold(TinyDenoiser(), op, K=2, algorithm=algorithm)


def test_denoiser_that_changes_shape(operator):
    net = lorun_peft.unfold(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1)), operator, K=2)
    with pytest.raises(InvalidArgumentError, match="denoiser output shape"):
        net(measure(operator))


@pytest.mark.parametrize("denoiser", [nn.Identity(), nn.Sequential(nn.ConvTranspose2d(1, 1, 1))])
def test_denoiser_without_adaptable_layer(operator, denoiser):
    with pytest.raises(InvalidArgumentError, match="no layer PEFT can adapt"):
        lorun_peft.unfold(denoiser, operator, K=2)
    lorun_peft.unfold(denoiser, operator, K=2, share="base")  # fine without adapters


def test_y_with_wrong_shape(operator):
    net = lorun(operator)
    with pytest.raises(InvalidArgumentError, match=r"y of shape \(2, 23\)"):
        net(torch.rand(2, 23))


def test_y_with_nan_or_wrong_dtype(operator):
    net = lorun(operator)
    y = measure(operator)
    y[0, 3] = float("nan")
    with pytest.raises(InvalidArgumentError, match="NaN or Inf"):
        net(y)
    with pytest.raises(InvalidArgumentError, match="float64"):
        net(measure(operator).double())


def test_to_lora_on_lorun_or_block_k(operator):
    net = lorun(operator)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(InvalidArgumentError, match="already LoRun"):
        net.to_lora()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    with pytest.raises(InvalidArgumentError, match="share='none'"):
        lorun_peft.unfold(TinyDenoiser(), operator, K=2, share="none").to_lora()


def test_to_lora_bad_gamma_changes_nothing(operator):
    net = lorun_peft.unfold(TinyDenoiser(), operator, K=2, share="base")
    with pytest.raises(InvalidArgumentError, match="gamma"):
        net.to_lora(gamma=0)
    assert net.share == "base" and type(net.denoisers.denoiser.head) is nn.Conv2d


def test_bad_target_modules(operator):
    with pytest.raises(InvalidArgumentError, match="target_modules names"):
        lorun_peft.unfold(TinyDenoiser(), operator, K=2, target_modules=["nope"])
    net = lorun_peft.unfold(TinyDenoiser(), operator, K=2, target_modules=["body"])
    assert [row.name for row in net.rank_table().layers] == ["body"]


def test_errors_share_one_hierarchy():
    assert issubclass(InvalidArgumentError, LorunError) and issubclass(InvalidArgumentError, ValueError)


@pytest.mark.parametrize("adapter", ["lora", "dora"])
def test_eval_merged_path_matches_peft_path(operator, adapter):
    net = lorun(operator, adapter=adapter).eval()
    y = measure(operator)
    with torch.no_grad():
        merged = net(y)
        net.inference = "peft"
        peft_path = net(y)
    torch.testing.assert_close(merged, peft_path, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_torch_compile_traces_the_stage_loop(operator, mode):
    """torch.compile (dynamo + AOT autograd; backend aot_eager keeps the test fast) gives the
    eager outputs and gradients in both the training and the merged eval path."""
    torch._dynamo.reset()
    net = getattr(lorun(operator), mode)()
    y = measure(operator)
    compiled = torch.compile(net, backend="aot_eager")
    eager = net(y)
    out = compiled(y)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
    if mode == "train":
        (grad_eager,) = torch.autograd.grad(eager.sum(), net.denoisers.adapter_parameters(K - 1)[0])
        (grad_compiled,) = torch.autograd.grad(out.sum(), net.denoisers.adapter_parameters(K - 1)[0])
        torch.testing.assert_close(grad_compiled, grad_eager, rtol=1e-5, atol=1e-6)


# ---- PEFT conventions: merge_and_unload, print_trainable_parameters ----------------------------
@pytest.mark.parametrize("algorithm", ["pgd", "hqs"])
def test_merge_and_unload_equals_the_merged_path_bit_for_bit(algorithm):
    from peft.tuners.tuners_utils import BaseTunerLayer

    from lorun_peft.denoisers import UNet

    torch.manual_seed(0)
    net = unfold(UNet(1, width=4, depth=1), BlockCS(0.25, block=8), K=3, algorithm=algorithm, noise_level=True,
                 adapter_options={"init_lora_weights": False}).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    plain = net.merge_and_unload()
    assert plain.share == "none" and not any(isinstance(m, BaseTunerLayer) for m in plain.modules())
    y = net.operator.A(torch.rand(2, 1, 16, 16))
    with torch.no_grad():
        assert torch.equal(plain(y), net(y))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the LoRun net is unchanged
    assert plain.operator is not net.operator


def test_merge_and_unload_needs_lorun():
    net = unfold(TinyDenoiser(), BlockCS(0.25, block=8), K=2, share="base")
    with pytest.raises(InvalidArgumentError, match="merge_and_unload needs a LoRun network"):
        net.merge_and_unload()


def test_print_trainable_parameters(capsys):
    net = unfold(TinyDenoiser(), BlockCS(0.25, block=8), K=2)
    net.print_trainable_parameters()
    out = capsys.readouterr().out
    report = net.parameter_report()
    assert out.startswith(f"trainable params: {report.trainable:,d} || all params: {report.total:,d} || trainable%: ")
