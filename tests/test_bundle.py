"""Task bundles on disk: layout, PEFT compatibility, bit-exact round trips (also in a fresh
process), atomic saves and atomic live swaps across CS ratios, and clear errors for bad bundles."""

from __future__ import annotations

import gc
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest
import torch
from conftest import MatrixOperator, TinyDenoiser
from huggingface_hub import ModelCard
from peft import PeftModel
from safetensors.torch import load_file

import lorun_peft
from lorun_peft.persistence import bundle
from lorun_peft.persistence import catalog
from lorun_peft.persistence import reading
from lorun_peft.persistence import saving
from lorun_peft.persistence import schema
from lorun_peft.persistence import atomic as lorun_io
from lorun_peft.cli.parser import add_bundle_commands
from lorun_peft.cli.commands import run_bundle_command
from lorun_peft.denoisers import UNet
from lorun_peft.errors import CorruptFileError, IncompatibleBundleError, InvalidArgumentError
from lorun_peft.persistence.fingerprint import base_state, fingerprint
from lorun_peft.operators import BlockCS
from lorun_peft.unfold import UnfoldedNetwork, unfold


# ---- helpers -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base() -> TinyDenoiser:
    torch.manual_seed(0)
    return TinyDenoiser()


def make_net(base: torch.nn.Module, ratio: float = 0.25, K: int = 3, seed: int = 1, **options) -> UnfoldedNetwork:  # noqa: N803
    """A LoRun network with random (non-zero) adapters, steps and sampling matrix from ``seed``."""
    torch.manual_seed(seed)
    options.setdefault("adapter_options", {"init_lora_weights": False})
    net = unfold(base, BlockCS(ratio, block=8, seed=seed), K, **options)
    with torch.no_grad():
        for p in net.steps.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def measurement(net: UnfoldedNetwork, seed: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return net.operator.A(torch.rand(2, 1, 16, 16, generator=g))


def output(net: UnfoldedNetwork, y: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return net(measurement(net) if y is None else y)


def snapshot(net: UnfoldedNetwork) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "operator": net.operator,
        "params": [id(p) for p in net.parameters()],
        "grad": [p.requires_grad for p in net.parameters()],
    }


def assert_unchanged(net: UnfoldedNetwork, before: dict) -> None:
    after = snapshot(net)
    assert after["operator"] is before["operator"]
    assert after["params"] == before["params"] and after["grad"] == before["grad"]
    assert after["state"].keys() == before["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key


@pytest.fixture
def saved(tmp_path, base):
    """A live 0.25 network, a 0.10 network on the same base, and both saved as bundles."""
    net25, net10 = make_net(base, 0.25, seed=1), make_net(base, 0.10, seed=2)
    return net25, net10, net25.save_adapters(tmp_path / "cs-0.25"), net10.save_adapters(tmp_path / "cs-0.10")


# ---- layout, config, card ------------------------------------------------------------------------
def test_bundle_layout_config_and_card(tmp_path, base):
    net = make_net(base, algorithm="hqs", noise_level=False, K=2)
    folder = net.save_adapters(tmp_path / "b", metrics={"psnr": 31.25, "ssim": 0.91, "dataset": "Set11"}, base_model="user/base")
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert names == [
        "README.md", "lorun_config.json",
        "stage_0/adapter_config.json", "stage_0/adapter_model.safetensors",
        "stage_1/adapter_config.json", "stage_1/adapter_model.safetensors",
        "unfolding.safetensors",
    ]
    config = json.loads((folder / "lorun_config.json").read_text())
    assert config["K"] == 2 and config["algorithm"] == "hqs" and config["share"] == "lora"
    assert config["gamma"] == net.gamma and config["adapter"] == "lora" and config["noise_level"] is False
    assert config["target_modules"] is None and config["format_version"] == schema.FORMAT_VERSION
    assert config["operator"] == net.operator.config()
    assert config["denoiser"]["qualname"] == "TinyDenoiser" and config["denoiser"]["registry_name"] is None
    assert config["base_fingerprint"] == fingerprint(base) and config["library_version"]
    assert config["ranks"] == {r.name: r.rank for r in net.rank_table().layers}
    unfolding = load_file(folder / "unfolding.safetensors")
    assert set(unfolding) == {"steps.mu.raw", "operator.phi"}
    assert torch.equal(unfolding["operator.phi"], net.operator.phi.detach())
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "peft" and card.data.pipeline_tag == "image-to-image"
    assert {"lorun_peft", "compressive-sensing"} <= set(card.data.tags) and card.data.base_model == "user/base"
    assert card.data.metrics == ["psnr", "ssim"] and card.data.base_fingerprint == fingerprint(base)
    assert "| PSNR (dB) | 31.25 |" in card.text and "| SSIM | 0.91 |" in card.text and "Set11" in card.text
    assert not list(tmp_path.glob(".b.*")), "no temporary folder is left behind"


def test_fingerprint_ignores_peft_wrapping_and_sees_every_bit(base):
    net = make_net(base)
    assert fingerprint(base) == fingerprint(net) == net.base_fingerprint()
    assert set(base_state(net)) == set(base.state_dict())
    reordered = dict(reversed(list(base.state_dict().items())))
    assert fingerprint(reordered) == fingerprint(base)
    other = TinyDenoiser()
    other.load_state_dict(base.state_dict())
    with torch.no_grad():
        other.body.bias[0] = torch.nextafter(other.body.bias[0], torch.tensor(1.0))
    assert fingerprint(other) != fingerprint(base)
    with torch.no_grad():  # an in-place change of the live base is seen by the cached fingerprint
        before = net.base_fingerprint()
        net.denoisers.model.body.base_layer.bias.mul_(2)
    assert net.base_fingerprint() != before


def test_vanilla_peft_loads_every_stage(saved, base):
    net, _, folder, _ = saved
    z = torch.rand(2, 1, 16, 16)
    for k in range(net.K):
        fresh = TinyDenoiser()
        fresh.load_state_dict(base.state_dict())
        model = PeftModel.from_pretrained(fresh, str(folder), subfolder=f"stage_{k}").eval()
        with torch.no_grad():
            assert torch.equal(model(z), net.denoisers(k, z))


def test_save_leaves_the_network_unchanged(tmp_path, base):
    net = make_net(base).train()
    before = snapshot(net)
    net.save_adapters(tmp_path / "b")
    assert_unchanged(net, before)
    assert net.training


def test_save_replaces_a_bundle_but_not_other_folders(tmp_path, saved):
    net25, net10, folder25, _ = saved
    net10.save_adapters(folder25)  # replace in place
    assert reading.read_bundle(folder25).config["operator"]["ratio"] == 0.10
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(InvalidArgumentError, match="refusing"):
        net25.save_adapters(tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_operator_without_config_is_a_clear_error(tmp_path, base):
    net = unfold(base, MatrixOperator((1, 16, 16), m=64), K=2)
    with pytest.raises(InvalidArgumentError, match=r"MatrixOperator has no config\(\)"):
        net.save_adapters(tmp_path / "b")
    assert not any(tmp_path.iterdir())


def test_only_lorun_networks_save_bundles(tmp_path, base):
    block1 = unfold(base, BlockCS(0.25, block=8), K=2, share="base")
    with pytest.raises(InvalidArgumentError, match="to_lora"):
        block1.save_adapters(tmp_path / "b")
    folder = block1.save_base(tmp_path / "base")  # the Block-1 base is the base LoRun will use
    assert json.loads((folder / "base_config.json").read_text())["fingerprint"] == block1.to_lora().base_fingerprint()


# ---- loading and round trips -------------------------------------------------------------------
def test_load_with_a_custom_denoiser_needs_the_module(tmp_path, saved, base):
    net, _, folder, _ = saved
    base_folder = net.save_base(tmp_path / "base")
    assert sorted(p.name for p in base_folder.iterdir()) == ["README.md", "base_config.json", "model.safetensors"]
    with pytest.raises(InvalidArgumentError, match="module="):
        lorun_peft.load(base_folder, folder)
    rebuilt = lorun_peft.load(base_folder, folder, module=TinyDenoiser())
    assert torch.equal(output(rebuilt), output(net))
    from_module = lorun_peft.load(base, folder)
    assert torch.equal(output(from_module), output(net)) and not from_module.training
    other = TinyDenoiser()
    with pytest.raises(IncompatibleBundleError, match="another base"):
        lorun_peft.load(other, folder)


FRESH_PROCESS = textwrap.dedent(
    """
    import pickle, sys, torch
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling is not allowed")
    torch.load = pickle.load = pickle.loads = refuse
    from safetensors.torch import load_file, save_file
    import lorun_peft
    torch.set_num_threads(1)
    base, folder, y, out = sys.argv[1:5]
    net = lorun_peft.load(base, folder)
    with torch.no_grad():
        x, stages = net(load_file(y)["y"], return_stages=True)
    save_file({"x": x.clone(), **{f"s{k}": s.clone() for k, s in enumerate(stages)}}, out)
    """
)


def test_round_trip_is_bit_exact_in_a_fresh_process(tmp_path):
    """The library's own UNet is rebuilt from base_config.json; HQS with a noise-level input."""
    from safetensors.torch import save_file

    torch.manual_seed(3)
    net = unfold(UNet(1, width=4, depth=1), BlockCS(0.10, block=8), K=3, algorithm="hqs", noise_level=True,
                 adapter_options={"init_lora_weights": False}).eval()
    base_folder, folder = net.save_base(tmp_path / "base"), net.save_adapters(tmp_path / "bundle")
    y = measurement(net)
    save_file({"y": y}, tmp_path / "y.safetensors")
    script = tmp_path / "fresh.py"
    script.write_text(FRESH_PROCESS)
    args = [sys.executable, str(script), str(base_folder), str(folder), str(tmp_path / "y.safetensors"), str(tmp_path / "out.safetensors")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = load_file(tmp_path / "out.safetensors")
    with torch.no_grad():
        x, stages = net(y, return_stages=True)
    assert torch.equal(result["x"], x)
    for k, s in enumerate(stages):
        assert torch.equal(result[f"s{k}"], s)


# ---- swapping in a live network ----------------------------------------------------------------
def test_swap_across_cs_ratios_in_a_live_network(saved, base):
    net25, net10, folder25, folder10 = saved
    live = make_net(base, 0.25, seed=9)  # placeholder adapters, same base weights
    live.load_state_dict(net25.state_dict())
    y25, y10 = measurement(net25), measurement(net10)
    adapter_ids = [id(p) for k in range(live.K) for p in live.denoisers.adapter_parameters(k)]
    base_ids = [id(p) for p in live.denoisers.base_parameters()]

    live.load_adapters(folder10)
    assert live.operator.measurements == net10.operator.measurements == 6
    assert torch.equal(output(live, y10), output(net10, y10))
    live.load_adapters(folder25)
    assert live.operator.measurements == 16
    assert torch.equal(output(live, y25), output(net25, y25))
    assert [id(p) for k in range(live.K) for p in live.denoisers.adapter_parameters(k)] == adapter_ids
    assert [id(p) for p in live.denoisers.base_parameters()] == base_ids

    same_shape = live.operator
    live.load_adapters(reading.read_bundle(folder25))  # same operator settings: updated in place
    assert live.operator is same_shape


def test_training_works_after_a_swap(saved):
    net25, _, _, folder10 = saved
    net25.train().load_adapters(folder10)
    assert net25.operator.training
    loss = net25(measurement(net25)).square().mean()
    loss.backward()
    assert net25.operator.phi.grad is not None
    assert all(p.grad is not None for k in range(net25.K) for p in net25.denoisers.adapter_parameters(k))


def _missing_stage(folder: Path, **_) -> None:
    shutil.rmtree(folder / "stage_2")


def _truncated(folder: Path, **_) -> None:
    path = folder / "stage_1" / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:-7])


def _random_bytes(folder: Path, **_) -> None:
    path = folder / "unfolding.safetensors"
    path.write_bytes(random.Random(0).randbytes(path.stat().st_size))


def _flipped_bit(folder: Path, **_) -> None:
    path = folder / "stage_0" / "adapter_model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def _invalid_json(folder: Path, **_) -> None:
    path = folder / "lorun_config.json"
    path.write_text(path.read_text()[:-20])


def _edited_k(folder: Path, **_) -> None:
    path = folder / "lorun_config.json"
    path.write_text(path.read_text().replace('"K": 3', '"K": 2'))


def _edited_rank(folder: Path, **_) -> None:
    path = folder / "stage_0" / "adapter_config.json"
    config = json.loads(path.read_text())
    config["rank_pattern"] = {k: v + 1 for k, v in config["rank_pattern"].items()}
    path.write_text(json.dumps(config))


def _edited_operator(folder: Path, **_) -> None:
    path = folder / "lorun_config.json"
    config = json.loads(path.read_text())
    config["operator"].update(ratio=0.5, measurements=32)
    path.write_text(json.dumps(config))


def _other_k(folder: Path, base, tmp_path, **_) -> Path:
    return make_net(base, K=2).save_adapters(tmp_path / "k2")


def _other_ranks(folder: Path, base, tmp_path, **_) -> Path:
    return make_net(base, target_modules=["body", "tail"]).save_adapters(tmp_path / "other-targets")


def _other_base(folder: Path, tmp_path, **_) -> Path:
    torch.manual_seed(123)
    return make_net(TinyDenoiser()).save_adapters(tmp_path / "other-base")


def _other_algorithm(folder: Path, base, tmp_path, **_) -> Path:
    return make_net(base, algorithm="hqs").save_adapters(tmp_path / "hqs")


BAD_BUNDLES = {
    "missing stage": (_missing_stage, CorruptFileError, "lacks stage_2"),
    "truncated safetensors": (_truncated, CorruptFileError, "not a valid safetensors"),
    "random-bytes safetensors": (_random_bytes, CorruptFileError, "not a valid safetensors"),
    "flipped bit": (_flipped_bit, CorruptFileError, "sha256 mismatch"),
    "invalid json": (_invalid_json, CorruptFileError, "not valid JSON"),
    "edited K": (_edited_k, CorruptFileError, "edited or damaged"),
    "edited rank": (_edited_rank, CorruptFileError, "sha256 mismatch"),
    "edited operator": (_edited_operator, CorruptFileError, "operator state"),
    "different K": (_other_k, IncompatibleBundleError, "K: bundle 2, network 3"),
    "rank pattern that does not fit": (_other_ranks, IncompatibleBundleError, "rank pattern does not fit"),
    "another base": (_other_base, IncompatibleBundleError, "another base denoiser"),
    "another algorithm": (_other_algorithm, IncompatibleBundleError, "algorithm"),
}


@pytest.mark.parametrize("case", list(BAD_BUNDLES))
def test_a_bad_bundle_leaves_the_live_network_bit_identical(case, saved, base, tmp_path):
    net25, _, _, folder10 = saved
    damage, error, message = BAD_BUNDLES[case]
    folder = damage(folder10, base=base, tmp_path=tmp_path) or folder10
    before = snapshot(net25)
    y = measurement(net25)
    reference = output(net25, y)
    with pytest.raises(error, match=message):
        net25.load_adapters(folder)
    assert_unchanged(net25, before)
    assert torch.equal(output(net25, y), reference)


def test_no_memory_growth_over_100_swaps(saved):
    net25, _, folder25, folder10 = saved
    for folder in (folder10, folder25):  # warm up caches
        net25.load_adapters(folder)
    gc.collect()
    tensors = sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))
    parameters = sum(p.numel() for p in net25.parameters())
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    for i in range(100):
        net25.load_adapters(folder10 if i % 2 == 0 else folder25)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    # no growth (fewer is fine: an earlier test's leftovers, e.g. torch.compile's caches, may be freed meanwhile)
    assert sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor)) <= tensors
    assert sum(p.numel() for p in net25.parameters()) == parameters
    assert grown < 64 * 1024, f"python memory grew by {grown} bytes over 100 swaps"


# ---- atomic saving -----------------------------------------------------------------------------
def test_a_save_that_fails_at_any_rename_keeps_a_complete_bundle(saved, base, monkeypatch):
    net25, net10, folder25, _ = saved
    old, new = output(net25), output(net10)
    real_rename = os.rename
    for fail_at in (1, 2):
        calls = []

        def rename(src, dst, fail_at=fail_at, calls=calls):
            calls.append(src)
            if len(calls) == fail_at:
                raise OSError("simulated crash")
            real_rename(src, dst)

        monkeypatch.setattr(lorun_io.os, "rename", rename)
        with pytest.raises(OSError, match="simulated"):
            net10.save_adapters(folder25)
        monkeypatch.setattr(lorun_io.os, "rename", real_rename)
        probe = make_net(base, 0.25, seed=7)
        probe.load_adapters(folder25)
        assert torch.equal(output(probe, measurement(net25)), old)
        assert [p.name for p in folder25.parent.iterdir() if p.name.startswith(".")] == []
    net10.save_adapters(folder25)
    probe.load_adapters(folder25)
    assert torch.equal(output(probe), new)


def test_readers_recover_a_save_killed_between_its_two_renames(saved, base):
    net25, net10, folder25, _ = saved
    aside = folder25.parent / ".cs-0.25.old-deadbeef"
    os.rename(folder25, aside)  # the state a kill between the renames leaves
    (folder25.parent / ".cs-0.25.tmp-x").mkdir()  # and a half-written new folder
    probe = make_net(base, 0.10, seed=7)
    probe.load_adapters(folder25)  # served from the complete old copy
    assert torch.equal(output(probe), output(net25))
    net10.save_adapters(folder25)  # the next save cleans up the old copy
    assert not aside.exists() and folder25.is_dir()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_process_killed_while_saving_never_leaves_a_broken_bundle(tmp_path, base):
    """A forked child replaces the bundle in a loop; SIGKILL at random moments; the target stays whole."""
    nets = [make_net(base, 0.25, seed=1), make_net(base, 0.10, seed=2)]
    target = nets[0].save_adapters(tmp_path / "bundle")
    rng = random.Random(0)
    for _ in range(30):  # the issue asks for at least 30 kills
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: save forever, report each finished save
            try:
                os.close(read)
                for i in range(10**6):
                    saving.save_adapters(nets[i % 2], target)
                    os.write(write, b".")
            finally:
                os._exit(1)
        os.close(write)
        assert os.read(read, 1) == b"."  # at least one save finished
        time.sleep(rng.uniform(0.0, 0.1))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read)
        loaded = reading.read_bundle(target)  # complete: every file parses and matches its sha256
        assert loaded.config["operator"]["ratio"] in (0.25, 0.10)


# ---- paths -------------------------------------------------------------------------------------
def test_names_and_symlinks_cannot_escape(saved, tmp_path):
    _, _, folder25, _ = saved
    for bad in ("../cs-0.10", "/etc", "a/../../b", "a\\b"):
        with pytest.raises(InvalidArgumentError, match="subfolder"):
            reading.read_bundle(tmp_path, subfolder=bad)
    outside = tmp_path / "outside"
    outside.mkdir()
    weights = folder25 / "stage_0" / "adapter_model.safetensors"
    shutil.copy(weights, outside / "w.safetensors")
    weights.unlink()
    weights.symlink_to(outside / "w.safetensors")  # same bytes, but outside the bundle
    with pytest.raises(CorruptFileError, match="outside"):
        reading.read_bundle(folder25)
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked").symlink_to(folder25.parent / "cs-0.10")
    with pytest.raises(CorruptFileError, match="outside"):
        reading.read_bundle(root, subfolder="linked")


# ---- listing, inspecting, the command line ---------------------------------------------------
def test_list_and_inspect_bundles(saved, tmp_path, capsys):
    net25, _, folder25, folder10 = saved
    (tmp_path / "not-a-bundle").mkdir()
    infos = {info.name: info for info in catalog.list_bundles(tmp_path)}
    assert set(infos) == {"cs-0.25", "cs-0.10"}
    assert infos["cs-0.10"].config["operator"]["ratio"] == 0.10 and infos["cs-0.10"].config["K"] == 3
    assert "ratio=0.1" in str(infos["cs-0.10"]) and "K=3" in str(infos["cs-0.10"])

    base_folder = net25.save_base(tmp_path / "base")
    parser = __import__("argparse").ArgumentParser()
    add_bundle_commands(parser.add_subparsers(dest="command"))
    assert run_bundle_command(parser.parse_args(["inspect", str(folder25), "--base", str(base_folder)])) == 0
    text = capsys.readouterr().out
    assert "K=3" in text and "ratio=0.25" in text and "fingerprint matches" in text and "head" in text
    run_bundle_command(parser.parse_args(["inspect", str(tmp_path)]))
    assert "2 bundle(s)" in capsys.readouterr().out
    torch.manual_seed(9)
    saving.save_base(TinyDenoiser(), tmp_path / "other-base")
    assert "DOES NOT match" in catalog.inspect(folder25, base=tmp_path / "other-base")


def test_the_bundle_module_gathers_each_jobs_public_names():
    """``lorun_peft.persistence.bundle`` re-exports the names commands.py, zoo.py and the benchmarks use."""
    from lorun_peft.persistence import fingerprint as fingerprints
    from lorun_peft.persistence import methods
    from lorun_peft.persistence import publish
    from lorun_peft.persistence import swap

    homes = {
        "save_adapters": saving, "save_base": saving, "read_bundle": reading, "load_base": reading, "load_adapters": swap,
        "list_bundles": catalog, "inspect": catalog, "copy_bundle": catalog, "BundleInfo": catalog, "push_adapters": publish,
        "push_base": publish, "push_folder": publish, "pull": publish, "fingerprint": fingerprints, "base_state": fingerprints,
        "BundleMethods": methods, "Bundle": schema, "CONFIG_NAME": schema, "FORMAT_VERSION": schema,
    }
    assert set(homes) <= set(bundle.__all__)
    for name in bundle.__all__:
        assert getattr(bundle, name) is getattr(homes.get(name, schema), name), name
    assert lorun_peft.list_bundles is catalog.list_bundles
