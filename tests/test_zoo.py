"""The zoo: listing, loading with SHA-256 checks, clear errors for damaged or unknown files, and
the CLI's ``--model zoo:NAME``. A small zoo is built here; the shipped one is tested in
``test_zoo_shipped.py``."""

from __future__ import annotations

import shutil

import pytest
import torch

import lorun_peft
from lorun_peft import unfold, zoo
from lorun_peft.denoisers import UNet
from lorun_peft.errors import CorruptFileError, InvalidArgumentError
from lorun_peft.operators import BlockCS


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    torch.manual_seed(0)
    base = UNet(1, width=4, depth=1)
    base.load_state_dict({k: v.half().float() for k, v in base.state_dict().items()})
    for ratio in (0.25, 0.5):
        net = unfold(base, BlockCS(ratio, block=8, linear_estimate=True), K=2, noise_level=True,
                     adapter_options={"init_lora_weights": False})
        net.save_adapters(root / f"cs-{ratio:.2f}", storage_dtype="float16")
    net.save_base(root / "base", storage_dtype="float16")
    zoo.write_checksums(root)
    return root


def copy(root, tmp_path):
    return shutil.copytree(root, tmp_path / "zoo")


def damage(path) -> None:
    """Flip every bit of a file's last byte (always a change, unlike overwriting it)."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_list_names_the_bundles(small_zoo) -> None:
    assert zoo.list(small_zoo) == ["cs-0.25", "cs-0.50"]


def test_load_gives_the_bundle_on_the_base(small_zoo) -> None:
    net = zoo.load("cs-0.25", small_zoo)
    same = lorun_peft.load(small_zoo / "base", small_zoo / "cs-0.25")
    y = net.operator.A(torch.rand(1, 1, 16, 16))
    with torch.no_grad():
        assert torch.equal(net(y), same(y))
    assert not net.training and net.operator.ratio == 0.25
    assert zoo.load("zoo:cs-0.50", small_zoo).operator.ratio == 0.5  # the CLI's spelling works too


def test_a_damaged_file_is_a_clear_error(small_zoo, tmp_path) -> None:
    root = copy(small_zoo, tmp_path)
    target = root / "cs-0.25" / "stage_1" / "adapter_model.safetensors"
    damage(target)
    with pytest.raises(CorruptFileError, match="stage_1/adapter_model.safetensors is damaged"):
        zoo.load("cs-0.25", root)
    zoo.load("cs-0.50", root)  # the other bundle is untouched


def test_a_damaged_base_is_a_clear_error(small_zoo, tmp_path) -> None:
    root = copy(small_zoo, tmp_path)
    target = root / "base" / "model.safetensors"
    damage(target)
    with pytest.raises(CorruptFileError, match="base/model.safetensors is damaged"):
        zoo.load("cs-0.50", root)


def test_verify_without_the_base_checks_the_bundle_only(small_zoo, tmp_path) -> None:
    root = copy(small_zoo, tmp_path)
    target = root / "base" / "model.safetensors"
    damage(target)
    zoo.verify("cs-0.50", root, base=False)  # a base already in memory is not read again
    with pytest.raises(CorruptFileError, match="base/model.safetensors is damaged"):
        zoo.verify("cs-0.50", root)
    with pytest.raises(CorruptFileError, match="base/model.safetensors is damaged"):
        zoo.verify(None, root, base=False)  # the base alone is always checked
    bundle = root / "cs-0.25" / "stage_1" / "adapter_model.safetensors"
    damage(bundle)
    with pytest.raises(CorruptFileError, match="stage_1/adapter_model.safetensors is damaged"):
        zoo.verify("cs-0.25", root, base=False)


def test_a_missing_checksum_file_is_a_clear_error(small_zoo, tmp_path) -> None:
    root = copy(small_zoo, tmp_path)
    (root / zoo.SUMS).unlink()
    with pytest.raises(CorruptFileError, match="SHA256SUMS is missing"):
        zoo.load("cs-0.25", root)


def test_a_missing_file_is_a_clear_error(small_zoo, tmp_path) -> None:
    root = copy(small_zoo, tmp_path)
    (root / "cs-0.25" / "unfolding.safetensors").unlink()
    with pytest.raises(CorruptFileError, match="unfolding.safetensors is missing"):
        zoo.load("cs-0.25", root)


def test_an_unlisted_file_is_a_clear_error(small_zoo, tmp_path) -> None:
    root = copy(small_zoo, tmp_path)
    (root / "cs-0.25" / "extra.safetensors").write_bytes(b"x")
    with pytest.raises(CorruptFileError, match="not in SHA256SUMS"):
        zoo.load("cs-0.25", root)


def test_a_malformed_checksum_line_is_a_clear_error(small_zoo, tmp_path) -> None:
    root = copy(small_zoo, tmp_path)
    (root / zoo.SUMS).write_text("nonsense\n")
    with pytest.raises(CorruptFileError, match="line 1 is not"):
        zoo.load("cs-0.25", root)


@pytest.mark.parametrize("name", ["cs-0.33", "base", 3])
def test_an_unknown_bundle_is_a_clear_error(small_zoo, name) -> None:
    with pytest.raises(InvalidArgumentError, match="the zoo has no bundle|must be a string"):
        zoo.load(name, small_zoo)


def test_an_empty_or_missing_zoo_lists_nothing(tmp_path) -> None:
    assert zoo.list(tmp_path) == [] and zoo.list(tmp_path / "absent") == []


def test_lorun_push_publishes_the_zoo_folder_unchanged(small_zoo, monkeypatch):
    from test_hub import FakeHfApi

    from lorun_peft.cli import parser as cli
    from lorun_peft.persistence import _hub as hub

    FakeHfApi.calls, FakeHfApi.fail_upload = [], None
    monkeypatch.setattr(hub, "HfApi", FakeHfApi)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    assert cli.main(["push", str(small_zoo), "user/lorun-zoo", "--tag", "v1"]) == 0
    upload = dict(FakeHfApi.calls)["upload_folder"]
    local = sorted(p.relative_to(small_zoo).as_posix() for p in small_zoo.rglob("*") if p.is_file())
    assert upload["files"] == local and upload["allow_patterns"] is None and upload["path_in_repo"] is None
    assert "cs-0.25" in upload["commit_message"] and "create_tag" in dict(FakeHfApi.calls)


def test_push_refuses_a_damaged_zoo(small_zoo, tmp_path):
    root = copy(small_zoo, tmp_path)
    (root / "cs-0.50" / "lorun_config.json").write_text("{}")
    with pytest.raises(CorruptFileError, match="damaged"):
        zoo.push("user/lorun-zoo", root)


@pytest.fixture(scope="module")
def family_zoo(tmp_path_factory):
    """A shared base/ with a bundle of family "dn", and base-cs/ (other weights) with two CS bundles."""
    root = tmp_path_factory.mktemp("family_zoo")
    torch.manual_seed(1)
    shared, cs_base = UNet(1, width=4, depth=1), UNet(1, width=4, depth=1)
    for base in (shared, cs_base):
        base.load_state_dict({k: v.half().float() for k, v in base.state_dict().items()})
    for name, base in (("cs-0.25", cs_base), ("cs-0.50", cs_base), ("dn-0.25", shared)):
        net = unfold(base, BlockCS(float(name[-4:]), block=8, linear_estimate=True), K=2, noise_level=True,
                     adapter_options={"init_lora_weights": False})
        net.save_adapters(root / name, storage_dtype="float16")
    unfold(shared, BlockCS(0.25, block=8), K=2).save_base(root / "base", storage_dtype="float16")
    unfold(cs_base, BlockCS(0.25, block=8), K=2).save_base(root / "base-cs", storage_dtype="float16")
    zoo.write_checksums(root)
    return root


def test_a_family_base_serves_its_bundles_and_the_shared_base_the_rest(family_zoo) -> None:
    assert zoo.list(family_zoo) == ["cs-0.25", "cs-0.50", "dn-0.25"]  # base-cs/ is not a bundle
    assert [zoo.base_name(n, family_zoo) for n in ("cs-0.25", "zoo:cs-0.50", "cs", "dn-0.25", None)] == [
        "base-cs", "base-cs", "base-cs", "base", "base"]
    y = BlockCS(0.25, block=8).A(torch.rand(1, 1, 16, 16))
    for name, base in (("cs-0.25", "base-cs"), ("dn-0.25", "base")):
        net = zoo.load(name, family_zoo)
        with torch.no_grad():
            assert torch.equal(net(y), lorun_peft.load(family_zoo / base, family_zoo / name)(y))
    with pytest.raises(lorun_peft.errors.IncompatibleBundleError, match="trained on another base"):
        lorun_peft.load(family_zoo / "base", family_zoo / "cs-0.25")  # the fingerprints keep them apart
    cs_base, shared = zoo.load_base("cs", family_zoo), zoo.load_base(root=family_zoo)
    assert not torch.equal(cs_base.state_dict()["conv_out.weight"], shared.state_dict()["conv_out.weight"])


def test_a_damaged_family_base_stops_its_bundles_only(family_zoo, tmp_path) -> None:
    root = shutil.copytree(family_zoo, tmp_path / "zoo")
    target = root / "base-cs" / "model.safetensors"
    damage(target)
    with pytest.raises(CorruptFileError, match="base-cs/model.safetensors is damaged"):
        zoo.load("cs-0.25", root)
    zoo.load("dn-0.25", root)  # over the shared base, untouched


def test_a_bundle_folder_of_the_zoo_loads_over_its_family_base(family_zoo) -> None:
    from lorun_peft.resolve import load_network

    net, _ = load_network(family_zoo / "cs-0.50")  # no --base: the base folder beside, base-cs/
    assert net.base_fingerprint() == zoo.load("cs-0.50", family_zoo).base_fingerprint()


def test_base_specs_of_the_command_line() -> None:
    assert zoo.family_base("zoo:cs-0.25") == zoo.family_base("user/zoo/cs-0.25/") == "base-cs"
    assert zoo.base_for_spec("runs/base") is None and zoo.base_for_spec(None) is None and zoo.base_for_spec("zoo:") is None
    assert zoo.base_for_spec("zoo").config() == zoo.load_base().config()
