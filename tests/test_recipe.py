"""The pieces of the training recipe: BlockCS's linear initial estimate, step initialisation for a
pretrained denoiser, Gaussian-denoiser pretraining, and half-size (float16) storage of bases and
bundles."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import SigmaDenoiser, TinyDenoiser

import lorun_peft
from lorun_peft import unfold
from lorun_peft.persistence import bundle
from lorun_peft.data.images import synthetic_images
from lorun_peft.denoisers import UNet
from lorun_peft.errors import CorruptFileError, InvalidArgumentError
from lorun_peft.operators import BlockCS, operator_from_config
from lorun_peft.training.pretrain import denoise_psnr, train_denoiser
from lorun_peft.steps import HQSStep, PGDStep, geometric


# ---- BlockCS: the linear (ISTA-Net+ Q_init) initial estimate -----------------------------------
def test_unfitted_linear_estimate_is_the_pseudo_inverse() -> None:
    op = BlockCS(0.25, block=8, linear_estimate=True).double()
    x = torch.rand(2, 1, 16, 24, dtype=torch.float64)
    y = op.A(x)
    x0 = op.initial_estimate(y)
    assert x0.shape == x.shape
    # the pseudo-inverse estimate is consistent with the measurement: A x0 = y
    torch.testing.assert_close(op.A(x0), y, rtol=1e-5, atol=1e-5)  # pinv in float32


def test_fitted_linear_estimate_beats_adjoint_and_pseudo_inverse_on_images() -> None:
    images = synthetic_images(24, size=32, seed=1)
    test = synthetic_images(4, size=32, seed=2)
    op = BlockCS(0.25, block=8, linear_estimate=True)
    y = op.A(test)
    error = lambda x: float(((x.detach() - test) ** 2).mean())  # noqa: E731
    pinv, adjoint = error(op.initial_estimate(y)), error(op.A_adjoint(y))
    op.fit_initial_estimate(images, blocks=4000)
    fitted = error(op.initial_estimate(y))
    assert fitted < 0.8 * pinv and fitted < 0.5 * adjoint


def test_linear_estimate_round_trips_through_config_and_state_dict() -> None:
    op = BlockCS(0.1, block=8, linear_estimate=True).fit_initial_estimate(synthetic_images(4, 32), blocks=300)
    assert op.config()["linear_estimate"] is True
    other = operator_from_config(op.config())
    other.load_state_dict(op.state_dict())
    y = op.A(torch.rand(1, 1, 16, 16))
    assert torch.equal(other.initial_estimate(y), op.initial_estimate(y))
    assert "q" not in BlockCS(0.1, block=8).state_dict()  # old bundles keep loading


def test_linear_estimate_gets_gradients_in_a_network() -> None:
    op = BlockCS(0.25, block=8, linear_estimate=True)
    net = unfold(TinyDenoiser(), op, K=2)
    x = torch.rand(2, 1, 16, 16)
    ((net(op.A(x)) - x) ** 2).mean().backward()
    assert op.q.grad is not None and float(op.q.grad.abs().sum()) > 0


def test_linear_estimate_at_a_size_not_multiple_of_the_block() -> None:
    op = BlockCS(0.5, block=8, linear_estimate=True, image_size=(13, 10))
    assert op.initial_estimate(op.A(torch.rand(1, 1, 13, 10))).shape == (1, 1, 13, 10)


def test_fit_without_linear_estimate_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="linear_estimate=True"):
        BlockCS(0.25, block=8).fit_initial_estimate(torch.rand(2, 1, 16, 16))


@pytest.mark.parametrize("images", [torch.rand(2, 1, 4, 4), [], [torch.rand(16, 16)]])
def test_fit_with_bad_images_is_refused(images) -> None:
    with pytest.raises(InvalidArgumentError, match="images must be C x H x W tensors of at least 8 x 8"):
        BlockCS(0.25, block=8, linear_estimate=True).fit_initial_estimate(images)


def test_linear_estimate_flag_must_be_bool() -> None:
    with pytest.raises(InvalidArgumentError, match="linear_estimate must be True or False"):
        BlockCS(0.25, block=8, linear_estimate="yes")


# ---- step initialisation -----------------------------------------------------------------------
@pytest.mark.parametrize("cls", [PGDStep, HQSStep])
def test_initialise_sets_step_and_noise_schedule(cls) -> None:
    steps = cls(4, noise_level=True)
    schedule = geometric(0.1, 0.01, 4)
    steps.initialise(step=0.8, sigma=schedule)
    size = steps.rho if cls is PGDStep else steps.mu
    torch.testing.assert_close(size.values(), torch.full((4,), 0.8))
    got = [float(steps.noise_sigma(k).detach()) for k in range(4)]
    assert got == pytest.approx(schedule, rel=1e-5)


def test_initialised_network_feeds_the_schedule_to_the_denoiser() -> None:
    denoiser = SigmaDenoiser()
    net = unfold(denoiser, BlockCS(0.25, block=8), K=3, share="base", noise_level=True)
    net.steps.initialise(step=1.0, sigma=0.05)
    net(net.operator.A(torch.rand(2, 1, 16, 16)))
    seen = net.denoisers.denoiser.seen_sigma
    torch.testing.assert_close(seen, torch.full((2,), 0.05))


def test_initialise_with_a_wrong_count_is_refused_and_changes_nothing() -> None:
    steps = PGDStep(3, noise_level=True)
    before = {k: v.clone() for k, v in steps.state_dict().items()}
    with pytest.raises(InvalidArgumentError, match="sigma: need one positive finite value or 3 of them"):
        steps.initialise(sigma=[0.1, 0.2])
    with pytest.raises(InvalidArgumentError, match="step: need one positive finite value or 3 of them"):
        steps.initialise(step=[1.0, -1.0, 1.0])
    assert all(torch.equal(before[k], v) for k, v in steps.state_dict().items())


def test_sigma_without_noise_level_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="noise_level=True"):
        PGDStep(3).initialise(sigma=0.1)


@pytest.mark.parametrize("args", [(0.0, 0.1, 3), (0.1, 0.01, 0), (0.1, -1.0, 2)])
def test_geometric_with_bad_arguments_is_refused(args) -> None:
    with pytest.raises(InvalidArgumentError, match="geometric needs"):
        geometric(*args)


# ---- denoiser pretraining ----------------------------------------------------------------------
def test_train_denoiser_learns_to_denoise() -> None:
    torch.manual_seed(0)
    images = synthetic_images(16, size=24, seed=3)
    denoiser = UNet(1, width=8, depth=1)
    before = denoise_psnr(denoiser, images[:4], 0.1)
    result = train_denoiser(denoiser, images, steps=60, batch_size=8, lr=3e-3, sigma_max=0.2, progress=False)
    assert len(result.losses) == 60
    assert denoise_psnr(denoiser, images[:4], 0.1) > before + 1.0


class _Interrupted(UNet):
    """A U-Net whose training run is killed at its ``stop_at``-th forward call."""

    stop_at = 0

    def forward(self, x, sigma=None):
        self.stop_at -= 1
        if self.stop_at == 0:
            raise KeyboardInterrupt
        return super().forward(x, sigma)


def test_train_denoiser_resumes_exactly(tmp_path) -> None:
    images = synthetic_images(8, size=16, seed=4)
    torch.manual_seed(0)
    straight = UNet(1, width=4, depth=1)
    interrupted = _Interrupted(1, width=4, depth=1)
    interrupted.load_state_dict(straight.state_dict())
    options = {"steps": 6, "batch_size": 2, "progress": False}
    train_denoiser(straight, images, **options)
    interrupted.stop_at = 5  # killed during step 5, after the checkpoint of step 4
    with pytest.raises(KeyboardInterrupt):
        train_denoiser(interrupted, images, checkpoint_dir=tmp_path, checkpoint_every=2, **options)
    fresh = UNet(1, width=4, depth=1)
    result = train_denoiser(fresh, images, checkpoint_dir=tmp_path, **options)
    assert result.step == 6 and len(result.losses) == 6
    assert all(torch.equal(p, q) for p, q in zip(straight.state_dict().values(), fresh.state_dict().values()))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"steps": 0}, "steps must be an int >= 1"),
        ({"steps": 2, "batch_size": 0}, "batch_size must be an int >= 1"),
        ({"steps": 2, "sigma_min": 0.3, "sigma_max": 0.1}, "need 0 <= sigma_min <= sigma_max"),
        ({"steps": 2, "lr": 0.0}, "lr must be a positive number, got 0.0"),
        ({"steps": 2, "time_limit": -1}, "time_limit must be a positive number, got -1"),
    ],
)
def test_train_denoiser_bad_arguments(options, message) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        train_denoiser(UNet(1, width=4, depth=1), torch.rand(4, 1, 8, 8), progress=False, **options)


def test_train_denoiser_needs_a_module() -> None:
    with pytest.raises(InvalidArgumentError, match="denoiser must be a torch.nn.Module"):
        train_denoiser(lambda x, s: x, torch.rand(4, 1, 8, 8), steps=1, progress=False)


# ---- float16 storage ---------------------------------------------------------------------------
def _net(seed: int = 0):
    torch.manual_seed(seed)
    base = UNet(1, width=4, depth=1)
    base.load_state_dict({k: v.half().float() for k, v in base.state_dict().items()})
    net = unfold(base, BlockCS(0.25, block=8, linear_estimate=True), K=2, noise_level=True,
                 adapter_options={"init_lora_weights": False})
    return net.eval()


def test_float16_bundle_and_base_round_trip(tmp_path) -> None:
    net = _net()
    base_dir = net.save_base(tmp_path / "base", storage_dtype="float16")
    full = net.save_adapters(tmp_path / "full")
    half = net.save_adapters(tmp_path / "half", storage_dtype="float16")
    size = lambda folder: sum(p.stat().st_size for p in folder.rglob("*.safetensors"))  # noqa: E731
    assert size(half) < 0.7 * size(full)  # small tensors: the headers weigh in
    assert json.loads((base_dir / "base_config.json").read_text())["storage_dtype"] == "float16"
    loaded = lorun_peft.load(base_dir, half)
    assert next(loaded.parameters()).dtype == torch.float32
    assert bundle.fingerprint(loaded) == bundle.fingerprint(net)  # the base is exact in float16
    y = net.operator.A(torch.rand(1, 1, 16, 16))
    with torch.no_grad():
        a, b = net(y), loaded(y)
    assert float((a - b).abs().max()) < 1e-2 and not torch.equal(a, b)


def test_float16_base_of_unrounded_weights_is_refused(tmp_path) -> None:
    torch.manual_seed(0)
    with pytest.raises(InvalidArgumentError, match="not exactly representable in float16"):
        bundle.save_base(UNet(1, width=4, depth=1), tmp_path / "base", storage_dtype="float16")


def test_unknown_storage_dtype_is_refused(tmp_path) -> None:
    with pytest.raises(InvalidArgumentError, match="storage_dtype must be None or one of"):
        _net().save_adapters(tmp_path / "b", storage_dtype="int8")


def test_edited_storage_dtype_is_a_clear_error(tmp_path) -> None:
    folder = _net().save_adapters(tmp_path / "b", storage_dtype="float16")
    config = json.loads((folder / "lorun_config.json").read_text())
    config["storage_dtype"] = "float8"
    (folder / "lorun_config.json").write_text(json.dumps(config))
    with pytest.raises(CorruptFileError, match="storage_dtype"):
        bundle.read_bundle(folder)


def test_geometric_schedule_values() -> None:
    values = geometric(0.08, 0.01, 9)
    assert values[0] == pytest.approx(0.08) and values[-1] == pytest.approx(0.01)
    assert all(math.isclose(values[k + 1] / values[k], values[1] / values[0], rel_tol=1e-9) for k in range(8))
