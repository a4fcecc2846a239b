"""Bundles on the Hugging Face Hub.

Downloads run against a REAL local Hub server: ``olah`` (PyPI, a self-hosted Hub mirror) serves
plain git repositories created here through the Hub API, started once per session on
127.0.0.1 and stopped by its PID. Uploads cannot be tested that way (no locally runnable server
accepts them), so the upload side is tested at huggingface_hub's boundary: a fake ``HfApi``
records the exact calls (repo, folder, path_in_repo, revision, allow/delete patterns, tag).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub.errors import HfHubHTTPError

import lorun_peft
from lorun_peft.persistence import catalog
from lorun_peft.persistence import _hub as hub
from lorun_peft.persistence import publish
from lorun_peft.persistence import reading
from lorun_peft.persistence import saving
from lorun_peft.persistence import schema
from lorun_peft.cli.parser import add_bundle_commands
from lorun_peft.cli.commands import run_bundle_command
from lorun_peft.denoisers import UNet
from lorun_peft import resolve
from lorun_peft.errors import CorruptFileError, HubError, HubFolderNotFoundError, InvalidArgumentError
from lorun_peft.operators import BlockCS
from lorun_peft.unfold import UnfoldedNetwork, unfold
from olah_server import free_port, git, olah_server

# the HTTP library huggingface_hub is built on (httpx2 in huggingface_hub 2.x, httpx before)
http = sys.modules[HfHubHTTPError.__mro__[1].__module__.split(".")[0]]
REPO = "lorun/cs-tasks"
NETWORK_REPO = "lorun/networks"
TOKEN = "hf_SecretTokenValue1234567890"


def make_net(base: torch.nn.Module, ratio: float, seed: int) -> UnfoldedNetwork:
    torch.manual_seed(seed)
    net = unfold(base, BlockCS(ratio, block=8, seed=seed), K=2, noise_level=True, adapter_options={"init_lora_weights": False})
    return net.eval()


def restore(net: UnfoldedNetwork) -> torch.Tensor:
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        return net(net.operator.A(x))


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """olah serving one git repo with bundles on main, a tag v1 and a branch dev; yields its settings."""
    if shutil.which("git") is None:
        pytest.skip("git is needed for the local Hub server")
    root = tmp_path_factory.mktemp("hub")
    repo = root / "mirrors" / "models" / REPO
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")

    torch.manual_seed(0)
    base = UNet(1, width=4, depth=1)
    local = root / "local"  # the same bundles, kept locally to compare against
    nets = {"v1": make_net(base, 0.10, 1), "main": make_net(base, 0.10, 2), "dev": make_net(base, 0.10, 3)}
    saving.save_base(base, repo / "base")
    make_net(base, 0.25, 4).save_adapters(repo / "cs-0.25")
    family_base = UNet(1, width=4, depth=1)  # a zoo's family base: bundles "blk-..." load over base-blk/
    saving.save_base(family_base, repo / "base-blk")
    family_net = make_net(family_base, 0.25, 6)
    family_net.save_adapters(repo / "blk-0.25")
    nets["v1"].save_adapters(repo / "cs-0.10", metrics={"psnr": 30.5})
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    git(repo, "tag", "v1")
    v1_commit = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "dev")
    nets["dev"].save_adapters(repo / "cs-0.10")
    git(repo, "commit", "-q", "-am", "dev")
    git(repo, "checkout", "-q", "main")
    nets["main"].save_adapters(repo / "cs-0.10")
    git(repo, "commit", "-q", "-am", "main")
    for name, net in nets.items():
        net.save_adapters(local / name)
    # a second repo with whole networks, as save_pretrained writes them
    networks = {"block1": unfold(base, BlockCS(0.25, block=8, seed=5), K=2, share="base").eval(), "lorun": nets["main"]}
    net_repo = root / "mirrors" / "models" / NETWORK_REPO
    net_repo.mkdir(parents=True)
    git(net_repo, "init", "-q", "-b", "main")
    for name, net in networks.items():
        net.save_pretrained(net_repo / name)
    networks["block1"].save_pretrained(net_repo / "run1" / "model")  # a `lorun train --out run1` folder, uploaded as it is
    git(net_repo, "add", "-A")
    git(net_repo, "commit", "-q", "-m", "networks")

    with olah_server(root, f"models/{REPO}") as endpoint:
        yield SimpleNamespace(endpoint=endpoint, local=local, v1_commit=v1_commit, base=base, networks=networks,
                              family_net=family_net)


@pytest.fixture
def opts(server, tmp_path):
    """Hub options for one test: the local server and an empty cache of its own."""
    return {"endpoint": server.endpoint, "cache_dir": str(tmp_path / "cache")}


def local_output(server, name: str) -> torch.Tensor:
    net = make_net(server.base, 0.25, 9)
    return restore(net.load_adapters(server.local / name))


# ---- downloads against the real local server ---------------------------------------------------
@pytest.mark.parametrize("revision", [None, "main", "dev", "v1", "commit"])
def test_load_adapters_from_the_hub_at_branch_tag_and_commit(server, opts, revision):
    wanted = {None: "main", "main": "main", "dev": "dev", "v1": "v1", "commit": "v1"}[revision]
    if revision == "commit":
        revision = server.v1_commit
    net = make_net(server.base, 0.25, 9)
    net.load_adapters(REPO, subfolder="cs-0.10", revision=revision, **opts)
    assert net.operator.measurements == 6
    assert torch.equal(restore(net), local_output(server, wanted))


def test_only_the_wanted_bundle_is_downloaded(server, opts):
    reading.read_bundle(REPO, subfolder="cs-0.10", **opts)
    files = sorted(p.relative_to(Path(opts["cache_dir"])).parts[3:] for p in Path(opts["cache_dir"]).rglob("*") if p.is_file() and "snapshots" in p.parts)
    assert files and all(parts[0] == "cs-0.10" for parts in files), files


def test_load_base_and_bundle_from_the_hub(server, opts):
    net = lorun_peft.load(REPO, REPO, subfolder="cs-0.10", revision="dev", base_subfolder="base", **opts)
    assert torch.equal(restore(net), local_output(server, "dev"))


def test_a_zoo_on_the_hub_loads_a_bundle_over_its_family_base_else_the_shared_one(server, opts, monkeypatch):
    net, _ = resolve.load_network(REPO, subfolder="blk-0.25", **opts)
    assert torch.equal(restore(net), restore(server.family_net))
    bases = []
    monkeypatch.setattr(resolve, "load", lambda *args, **kwargs: bases.append(kwargs["base_subfolder"]) or lorun_peft.load(*args, **kwargs))
    net, _ = resolve.load_network(REPO, subfolder="cs-0.25", **opts)  # the repo has no base-cs/: base/
    assert bases == ["base-cs", "base"]
    assert torch.equal(restore(net), restore(make_net(server.base, 0.25, 4)))
    bases.clear()
    with pytest.raises(HubFolderNotFoundError, match="cs-0.50/lorun_config.json not found") as caught:
        resolve.load_network(REPO, subfolder="cs-0.50", **opts)  # no such bundle: no second try over base/
    assert caught.value.subfolder == "cs-0.50" and len(bases) == 1


def test_endpoint_from_the_environment_at_call_time(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    loaded = reading.read_bundle(REPO, subfolder="cs-0.25", cache_dir=str(tmp_path / "cache"))
    assert loaded.config["operator"]["ratio"] == 0.25


def test_list_bundles_on_the_hub(server, opts):
    infos = {info.name: info for info in catalog.list_bundles(REPO, **opts)}
    assert set(infos) == {"blk-0.25", "cs-0.10", "cs-0.25"}
    assert infos["cs-0.10"].config["metrics"] == {}  # main's cs-0.10 was saved without metrics
    at_v1 = {info.name: info for info in catalog.list_bundles(REPO, revision="v1", **opts)}
    assert at_v1["cs-0.10"].config["metrics"] == {"psnr": 30.5}


@pytest.mark.parametrize("how", ["environment", "huggingface_hub constants"])
def test_offline_with_a_filled_cache(server, opts, monkeypatch, how):
    reading.read_bundle(REPO, subfolder="cs-0.10", revision="dev", **opts)  # fills the cache
    reading.read_bundle(REPO, subfolder="cs-0.10", **opts)
    dead = {**opts, "endpoint": f"http://127.0.0.1:{free_port()}"}  # nothing listens: no request may succeed
    if how == "environment":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    for revision, name in ((None, "main"), ("dev", "dev")):
        net = make_net(server.base, 0.25, 9)
        net.load_adapters(REPO, subfolder="cs-0.10", revision=revision, **dead)
        assert torch.equal(restore(net), local_output(server, name))
    with pytest.raises(HubError, match="not in the local cache"):
        reading.read_bundle(REPO, subfolder="cs-0.25", **dead)  # never downloaded


def test_offline_with_an_empty_cache_is_a_hub_error(server, opts, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError) as caught:
        reading.read_bundle(REPO, subfolder="cs-0.10", revision="v1", **opts)
    message = str(caught.value)
    assert "local cache" in message and REPO in message and "'v1'" in message and "cs-0.10/lorun_config.json" in message


@pytest.mark.parametrize(
    ("repo", "subfolder", "revision", "expected"),
    [
        ("lorun/no-such-repo", "cs-0.10", None, ["lorun/no-such-repo", "not found"]),
        (REPO, "cs-0.10", "no-such-branch", [REPO, "'no-such-branch'"]),
        (REPO, "cs-0.50", None, [REPO, "cs-0.50/lorun_config.json not found", "'main'"]),
    ],
    ids=["repo not found", "revision not found", "subfolder not found"],
)
def test_hub_failures_name_repo_revision_and_file(server, opts, repo, subfolder, revision, expected):
    net = make_net(server.base, 0.25, 9)
    before = restore(net)
    with pytest.raises(HubError) as caught:
        net.load_adapters(repo, subfolder=subfolder, revision=revision, **opts)
    for text in expected:
        assert text in str(caught.value)
    assert torch.equal(restore(net), before)


def test_subfolders_from_the_caller_cannot_escape(server, opts):
    with pytest.raises(InvalidArgumentError, match="subfolder"):
        reading.read_bundle(REPO, subfolder="../../../etc", **opts)


@pytest.mark.parametrize("name", ["block1", "lorun"])
def test_from_pretrained_from_the_hub(server, opts, name):
    net = UnfoldedNetwork.from_pretrained(NETWORK_REPO, subfolder=name, **opts)
    assert net.share == server.networks[name].share
    assert torch.equal(restore(net), restore(server.networks[name]))


def test_the_command_line_takes_hub_ids(server, tmp_path, capsys, monkeypatch):
    from lorun_peft.cli.parser import main

    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert main(["eval", "--model", NETWORK_REPO, "--subfolder", "block1"]) == 0
    assert "synthetic_0" in capsys.readouterr().out
    # a run folder uploaded as it is (run1/model/...) loads as `--model run1` does locally
    assert main(["eval", "--model", NETWORK_REPO, "--subfolder", "run1"]) == 0
    assert "synthetic_0" in capsys.readouterr().out
    # a bundle in a repo, with the repo's own base/ found, at a tag
    assert main(["eval", "--model", REPO, "--subfolder", "cs-0.10", "--revision", "v1"]) == 0
    out = capsys.readouterr().out
    assert "mean" in out
    assert main(["eval", "--model", REPO, "--subfolder", "nothing-here"]) == 2
    assert "nothing-here" in capsys.readouterr().err


def test_pull_and_inspect_commands(server, opts, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", opts["cache_dir"])
    parser = argparse.ArgumentParser()
    add_bundle_commands(parser.add_subparsers(dest="command"))
    target = tmp_path / "pulled"
    args = parser.parse_args(["pull", REPO, "--subfolder", "cs-0.10", "--revision", "v1", "--to", str(target), "--endpoint", server.endpoint])
    assert run_bundle_command(args) == 0
    assert "ratio=0.1" in capsys.readouterr().out
    assert torch.equal(restore(make_net(server.base, 0.25, 9).load_adapters(target)), local_output(server, "v1"))
    run_bundle_command(parser.parse_args(["inspect", REPO, "--endpoint", server.endpoint]))
    assert "3 bundle(s)" in capsys.readouterr().out
    args = ["inspect", REPO, "--subfolder", "cs-0.25", "--base", str(target.parent / "no-base"), "--endpoint", server.endpoint]
    with pytest.raises(InvalidArgumentError):
        run_bundle_command(parser.parse_args(args))


# ---- uploads, at huggingface_hub's boundary ----------------------------------------------------
class FakeHfApi:
    """Records every call lorun_peft makes on HfApi, and what the uploaded folder held then."""

    calls: list = []
    fail_upload: Exception | None = None

    def __init__(self, endpoint=None, token=None, library_name=None):
        FakeHfApi.calls.append(("HfApi", {"endpoint": endpoint, "token": token, "library_name": library_name}))

    def create_repo(self, repo_id, **kwargs):
        FakeHfApi.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def create_branch(self, repo_id, **kwargs):
        FakeHfApi.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        texts = "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())
        FakeHfApi.calls.append(("upload_folder", {**kwargs, "files": files, "token_in_files": TOKEN in texts}))
        if FakeHfApi.fail_upload is not None:
            raise FakeHfApi.fail_upload
        return SimpleNamespace(oid="c0ffee" * 6 + "abcd", commit_url="https://hub/commit")

    def create_tag(self, repo_id, **kwargs):
        FakeHfApi.calls.append(("create_tag", {"repo_id": repo_id, **kwargs}))


@pytest.fixture
def fake_api(monkeypatch):
    FakeHfApi.calls, FakeHfApi.fail_upload = [], None
    monkeypatch.setattr(hub, "HfApi", FakeHfApi)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    return FakeHfApi


@pytest.fixture(scope="module")
def small_net() -> UnfoldedNetwork:
    torch.manual_seed(0)
    return make_net(UNet(1, width=4, depth=1), 0.10, 1)


def test_push_adapters_hands_exactly_one_bundle_to_hfapi(fake_api, small_net):
    small_net.push_adapters(REPO, path_in_repo="cs-ratio-0.10", revision="exp", tag="v2", token=TOKEN, private=True, metrics={"psnr": 28.0})
    names = [name for name, _ in fake_api.calls]
    assert names == ["HfApi", "create_repo", "create_branch", "upload_folder", "create_tag"]
    calls = dict(fake_api.calls)
    assert calls["HfApi"]["token"] == TOKEN
    assert calls["create_repo"] == {"repo_id": REPO, "private": True, "exist_ok": True, "repo_type": "model"}
    assert calls["create_branch"] == {"repo_id": REPO, "branch": "exp", "exist_ok": True, "repo_type": "model"}
    upload = calls["upload_folder"]
    assert upload["repo_id"] == REPO and upload["path_in_repo"] == "cs-ratio-0.10" and upload["revision"] == "exp"
    assert upload["allow_patterns"] == list(schema.BUNDLE_PATTERNS) and upload["delete_patterns"] == ["stage_*/*"]
    assert upload["files"] == [
        "README.md", "lorun_config.json", "stage_0/adapter_config.json", "stage_0/adapter_model.safetensors",
        "stage_1/adapter_config.json", "stage_1/adapter_model.safetensors", "unfolding.safetensors",
    ]
    assert not upload["token_in_files"] and "K=2" in upload["commit_message"]
    assert not Path(upload["folder_path"]).exists(), "the temporary folder is removed after the push"
    assert calls["create_tag"] == {"repo_id": REPO, "tag": "v2", "revision": "c0ffee" * 6 + "abcd", "repo_type": "model"}


def test_push_to_hub_hands_one_saved_network_to_hfapi(fake_api, small_net):
    small_net.push_to_hub(REPO, path_in_repo="cs-net", token=TOKEN)
    upload = dict(fake_api.calls)["upload_folder"]
    assert upload["path_in_repo"] == "cs-net"
    assert "unfold_config.json" in upload["files"] and "bundle/lorun_config.json" in upload["files"]
    assert "base/model.safetensors" in upload["files"] and not upload["token_in_files"]
    block1 = unfold(UNet(1, width=4, depth=1), BlockCS(0.25, block=8), K=2, share="base")
    block1.push_to_hub(REPO)
    uploads = [call for name, call in fake_api.calls if name == "upload_folder"]
    assert "network.safetensors" in uploads[-1]["files"] and "base/model.safetensors" not in uploads[-1]["files"]


def test_push_folder_takes_a_saved_network(fake_api, small_net, tmp_path):
    folder = small_net.save_pretrained(tmp_path / "net")
    publish.push_folder(folder, REPO, path_in_repo="net")
    upload = dict(fake_api.calls)["upload_folder"]
    assert "unfold_config.json" in upload["files"] and "bundle/stage_0/adapter_model.safetensors" in upload["files"]
    shutil.rmtree(folder / "bundle")
    with pytest.raises(CorruptFileError, match="incomplete"):
        publish.push_folder(folder, REPO)
    from lorun_peft.cli.parser import main

    small_net.save_pretrained(tmp_path / "run" / "model")  # what `lorun train --out run` writes
    assert main(["push", str(tmp_path / "run"), REPO, "--path-in-repo", "run"]) == 0
    uploads = [call for name, call in fake_api.calls if name == "upload_folder"]
    assert uploads[-1]["path_in_repo"] == "run" and "unfold_config.json" in uploads[-1]["files"]


def test_push_base_and_push_folder(fake_api, small_net, tmp_path):
    small_net.push_base(REPO, path_in_repo="base")
    upload = dict(fake_api.calls)["upload_folder"]
    assert upload["files"] == ["README.md", "base_config.json", "model.safetensors"] and upload["path_in_repo"] == "base"
    assert upload["revision"] is None and "create_branch" not in dict(fake_api.calls)
    fake_api.calls.clear()
    folder = small_net.save_adapters(tmp_path / "b")
    parser = argparse.ArgumentParser()
    add_bundle_commands(parser.add_subparsers(dest="command"))
    run_bundle_command(parser.parse_args(["push", str(folder), REPO, "--path-in-repo", "cs-0.10", "--tag", "t"]))
    calls = dict(fake_api.calls)
    assert calls["upload_folder"]["folder_path"] == str(folder) and calls["upload_folder"]["path_in_repo"] == "cs-0.10"
    assert calls["create_tag"]["tag"] == "t" and calls["HfApi"]["token"] is None


def test_push_folder_refuses_an_edited_base(fake_api, small_net, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = small_net.save_base(tmp_path / "base")
    weights = load_file(folder / schema.BASE_WEIGHTS_NAME)
    name = next(iter(weights))
    weights[name] = weights[name] + 1
    save_file(weights, folder / schema.BASE_WEIGHTS_NAME)
    with pytest.raises(CorruptFileError, match="does not match the fingerprint"):
        publish.push_folder(folder, REPO)
    assert "upload_folder" not in dict(fake_api.calls)


@pytest.mark.parametrize("status", [401, 403, 500])
def test_a_failed_push_never_shows_the_token(fake_api, small_net, status):
    request = http.Request("POST", f"https://huggingface.co/api/models/{REPO}/commit/main", headers={"authorization": f"Bearer {TOKEN}"})
    response = http.Response(status, request=request)
    fake_api.fail_upload = HfHubHTTPError(f"{status} Client Error for token {TOKEN}", response=response)
    with pytest.raises(HubError) as caught:
        small_net.push_adapters(REPO, path_in_repo="cs-0.10", revision="exp", token=TOKEN)
    error = caught.value
    shown = "".join(__import__("traceback").format_exception(error))
    assert TOKEN not in str(error) and TOKEN not in repr(error) and TOKEN not in shown
    assert REPO in str(error) and "'exp'" in str(error) and "cs-0.10" in str(error)


def test_push_refuses_bad_names_and_offline_mode(fake_api, small_net, monkeypatch):
    with pytest.raises(InvalidArgumentError, match="subfolder"):
        small_net.push_adapters(REPO, path_in_repo="../elsewhere")
    with pytest.raises(InvalidArgumentError):
        small_net.push_adapters("not a repo id")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        small_net.push_adapters(REPO)
    assert [name for name, _ in fake_api.calls] == []


# ---- huggingface_hub's keyword options: checked against its own signatures -----------------------
DOWNLOADS = {
    "read_bundle": lambda net, **kw: reading.read_bundle(REPO, subfolder="cs-0.10", **kw),
    "load_adapters": lambda net, **kw: net.load_adapters(REPO, subfolder="cs-0.10", **kw),
    "load_base": lambda net, **kw: reading.load_base(REPO, subfolder="base", **kw),
    "list_bundles": lambda net, **kw: catalog.list_bundles(REPO, **kw),
    "inspect": lambda net, **kw: catalog.inspect(REPO, **kw),
    "pull": lambda net, **kw: publish.pull(REPO, subfolder="cs-0.10", **kw),
    "lorun_peft.load": lambda net, **kw: lorun_peft.load(REPO, REPO, subfolder="cs-0.10", **kw),
    "hub.download": lambda net, **kw: hub.download(REPO, ["*.json"], **kw),
}
UPLOADS = {
    "push_adapters": lambda net, **kw: net.push_adapters(REPO, **kw),
    "push_base": lambda net, **kw: net.push_base(REPO, **kw),
    "push_folder": lambda net, **kw: publish.push_folder("no-such-folder", REPO, **kw),
    "hub.upload": lambda net, **kw: hub.upload("no-such-folder", REPO, **kw),
}


@pytest.mark.parametrize(
    ("call", "option"),
    [(name, "tokn") for name in DOWNLOADS]  # a misspelling
    + [("read_bundle", "local_dir"), ("pull", "allow_patterns"), ("load_base", "repo_type")],  # set by lorun_peft
)
def test_an_unknown_download_option_is_named_with_the_accepted_ones(fake_api, small_net, call, option):
    with pytest.raises(InvalidArgumentError) as caught:
        DOWNLOADS[call](small_net, **{option: "x"})
    message = str(caught.value)
    assert f"unknown Hub download option {option!r}" in message
    assert "token" in message and "cache_dir" in message and "endpoint" in message and "local_files_only" in message
    assert "local_dir" not in message.split("accepted:")[1] and "allow_patterns" not in message.split("accepted:")[1]
    assert fake_api.calls == []


@pytest.mark.parametrize(
    ("call", "option"),
    [(name, "privat") for name in UPLOADS] + [("push_adapters", "cache_dir"), ("push_base", "delete_patterns"), ("push_folder", "space_sdk")],
)
def test_an_unknown_upload_option_is_named_with_the_accepted_ones(fake_api, small_net, call, option):
    with pytest.raises(InvalidArgumentError) as caught:
        UPLOADS[call](small_net, **{option: True})
    message = str(caught.value)
    assert f"unknown Hub upload option {option!r}" in message
    assert "token" in message and "private" in message and "endpoint" in message and "create_pr" in message
    assert fake_api.calls == []


def test_accepted_options_follow_huggingface_hubs_signatures(fake_api, small_net):
    import inspect

    import huggingface_hub

    assert set(hub.download_options()) <= set(inspect.signature(huggingface_hub.snapshot_download).parameters)
    upload_folder = set(inspect.signature(huggingface_hub.HfApi.upload_folder).parameters)
    assert "commit_description" in hub.upload_options() and "commit_description" in upload_folder
    small_net.push_adapters(REPO, commit_description="trained on Set11", private=False)
    calls = dict(fake_api.calls)
    assert calls["upload_folder"]["commit_description"] == "trained on Set11" and calls["create_repo"]["private"] is False


def test_the_app_engine_takes_hub_ids(server, tmp_path, monkeypatch):
    """`lorun app`'s task field: a bundle with its repo's base at a tag, then a bundle of the same
    base swapped in, then a whole network with its own base."""
    from lorun_peft.app.playground import Playground

    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    play = Playground()
    assert "with its own base" in play.select(REPO, subfolder="cs-0.10", revision="v1")
    message = play.select(REPO, subfolder="cs-0.25")
    assert message.startswith("swapped ") and "cs-0.25" in message and "into the live LoRun-2 network" in message
    assert play.net.operator.ratio == 0.25
    play.select(NETWORK_REPO, subfolder="block1")
    assert play.net.share == "base" and play.restore(torch.rand(1, 16, 16)).restored.shape == (16, 16)
