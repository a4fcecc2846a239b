"""The standard test sets by name (``--data set5``), against a REAL local Hub.

``olah`` (see tests/olah_server.py) serves dataset repos laid out as the real ones are
(``eugenesiow/Set5``: ``data/Set5_HR.tar.gz``; ``deepinv/CBSD68``: ``CBSD68.tar.gz``), holding a
few tiny PNGs made here. Every test has its own Hub cache, HF_HOME and data folder; HF_ENDPOINT
points at the local server, so nothing reaches the internet.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from lorun_peft.cli import parser as cli
from lorun_peft.cli.parser import main
from lorun_peft.data import testsets
from lorun_peft.data.testsets import MARKER, MissingDataError, get_testset, list_testsets, resolve_data
from lorun_peft.errors import CorruptFileError, HubError, InvalidArgumentError, LorunError
from olah_server import commit_all, free_port, git_repo, olah_server

SET5 = ["baby.png", "bird.png", "butterfly.png"]


def png(size: tuple[int, int], seed: int, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size[0], size[1], 3) if mode == "RGB" else size
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buffer, format="PNG")
    return buffer.getvalue()


def tar_gz(path: Path, members: list[tuple[str, bytes | None, str | None]]) -> None:
    """A .tar.gz of (name, data, symlink target) members: data for a file, None for a folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """olah serving Set5 (images beside junk: a resource fork, a text file, a link), CBSD68 (its own
    layout), Set14 and Urban100 (an archive with a member escaping its folder)."""
    root = tmp_path_factory.mktemp("hub")
    set5 = git_repo(root, "datasets", "eugenesiow/Set5")
    tar_gz(set5 / "data" / "Set5_HR.tar.gz", [
        ("Set5_HR", None, None),
        *[(f"Set5_HR/{name}", png((24, 24), i), None) for i, name in enumerate(SET5)],
        ("Set5_HR/._baby.png", b"\x00\x05\x16\x07 macOS resource fork", None),
        ("Set5_HR/README.txt", b"not an image", None),
        ("Set5_HR/link.png", None, "baby.png"),
    ])
    tar_gz(set5 / "data" / "Set5_LR_x2.tar.gz", [("Set5_LR_x2/baby.png", png((12, 12), 9), None)])  # never fetched
    commit_all(set5)
    cbsd = git_repo(root, "datasets", "deepinv/CBSD68")
    tar_gz(cbsd / "CBSD68.tar.gz", [(f"CBSD68/{i:04d}.png", png((16, 20), 10 + i), None) for i in range(2)])
    commit_all(cbsd)
    set14 = git_repo(root, "datasets", "eugenesiow/Set14")
    tar_gz(set14 / "data" / "Set14_HR.tar.gz", [(f"Set14_HR/img{i}.png", png((32, 32), 20 + i), None) for i in range(3)])
    commit_all(set14)
    urban = git_repo(root, "datasets", "eugenesiow/Urban100")
    tar_gz(urban / "data" / "Urban100_HR.tar.gz", [("Urban100_HR/a.png", png((8, 8), 30), None), ("../evil.png", png((8, 8), 31), None)])
    commit_all(urban)
    with olah_server(root, "datasets/eugenesiow/Set5") as endpoint:
        yield SimpleNamespace(endpoint=endpoint, root=root)


@pytest.fixture
def env(hub, tmp_path, monkeypatch):
    """This test's own Hub cache, HF_HOME and data folder, the local server as the Hub, online."""
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("LORUN_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    return SimpleNamespace(cache=tmp_path / "hf" / "hub", data=tmp_path / "data", tmp=tmp_path)


def go_offline(monkeypatch) -> None:
    """HF_HUB_OFFLINE on, and the Hub a port nothing listens on: no request may succeed."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")


def images(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".json")


def leftovers(cache: Path) -> list[Path]:
    """Everything lorun_peft wrote into the Hub cache."""
    return sorted(p for p in cache.glob(f"datasets--*/{testsets.EXTRACTED}/*"))


# ---- names -------------------------------------------------------------------------------------
def test_the_parser_names_the_registered_sets():
    assert sorted(cli.TESTSET_NAMES.split(", ")) == sorted(testsets.TESTSETS)


def test_an_unknown_name_lists_the_known_ones(env):
    with pytest.raises(InvalidArgumentError) as caught:
        resolve_data("set6")
    message = str(caught.value)
    assert "'set6' is neither a folder nor a known test set" in message and "folder of images" in message
    assert all(name in message for name in testsets.TESTSETS) and "\n" not in message
    with pytest.raises(InvalidArgumentError, match="data folder not found: .*missing.*a known test set's name also works"):
        resolve_data(env.tmp / "missing")
    with pytest.raises(InvalidArgumentError, match="'nope' is not a known test set; known: bsd100"):
        get_testset("nope")
    assert not env.cache.exists()  # nothing was asked of the Hub


def test_folders_and_file_lists_pass_through(env, tmp_path, monkeypatch):
    files = [tmp_path / "a.png"]
    assert resolve_data(files) is files
    assert resolve_data(tmp_path) == tmp_path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "set5").mkdir()  # a folder named like a test set wins: it is what the user has
    assert resolve_data("set5") == Path("set5")
    assert not env.cache.exists()


# ---- the Hub -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "expected"), [("Set5", SET5), ("cbsd68", ["0000.png", "0001.png"])])
def test_a_name_gives_its_images_downloaded_and_extracted(env, name, expected):
    folder = resolve_data(name)
    assert images(folder) == expected  # only regular image files: no resource fork, text file or link
    assert folder.parent.name == testsets.EXTRACTED and folder.parent.parent.parent == env.cache
    assert folder.parent.parent.name.startswith("datasets--")
    record = (folder / MARKER).read_text()
    assert testsets.TESTSETS[name.lower()].repo in record
    assert Image.open(folder / expected[0]).size in ((24, 24), (20, 16))
    assert leftovers(env.cache) == [folder]  # no temporary folder left
    assert resolve_data(name.upper()) == folder
    if name == "Set5":  # only the archive asked for came down
        assert not list(env.cache.rglob("Set5_LR_x2.tar.gz"))


def test_second_call_offline_works_from_the_cache(env, monkeypatch):
    folder = get_testset("set5")
    go_offline(monkeypatch)
    assert get_testset("set5") == folder
    import shutil

    shutil.rmtree(folder)  # the archive alone is enough: extracted again, offline
    assert images(get_testset("set5")) == SET5


def test_a_cached_set_needs_no_request_even_online(env, monkeypatch):
    folder = get_testset("set5")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # online, but no Hub answers
    assert get_testset("set5") == folder


def test_offline_and_not_cached_says_what_to_do(env, monkeypatch):
    go_offline(monkeypatch)
    with pytest.raises(HubError) as caught:
        resolve_data("set5")
    message = str(caught.value)
    assert message.startswith("test set Set5 is not in the Hub cache and HF_HUB_OFFLINE is set")
    assert "unset HF_HUB_OFFLINE" in message and "eugenesiow/Set5" in message and "\n" not in message
    assert f"put its images in {env.data / 'set5'}" in message
    assert not env.cache.exists() or not leftovers(env.cache)


def test_no_network_and_not_cached_says_what_to_do(env, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # online, nothing listens
    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http, "time", SimpleNamespace(sleep=lambda seconds: None))  # its 5 retries, without the waits
    with pytest.raises(HubError) as caught:
        resolve_data("set14")
    message = str(caught.value)
    assert message.startswith("test set Set14 cannot be downloaded") and "eugenesiow/Set14" in message
    assert "data/Set14_HR.tar.gz" in message and f"put its images in {env.data / 'set14'}" in message and "\n" not in message


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_a_damaged_download_names_the_file_and_refresh_repairs_it(env, damage):
    folder = get_testset("set14")
    blob = next(env.cache.glob("datasets--eugenesiow--Set14/snapshots/*/data/Set14_HR.tar.gz")).resolve()
    data = blob.read_bytes()
    import shutil

    shutil.rmtree(folder)
    blob.chmod(0o644)
    if damage == "truncated":
        blob.write_bytes(data[: len(data) // 2])
    else:
        blob.write_bytes(data[:40] + bytes(b ^ 0x5A for b in data[40:-8]) + data[-8:])
    with pytest.raises(CorruptFileError) as caught:
        get_testset("set14")
    message = str(caught.value)
    assert "test set Set14 is damaged" in message.replace("downloaded archive of ", "")
    assert str(blob) in message and "lorun data get set14 --refresh" in message and "\n" not in message
    assert leftovers(env.cache) == []  # nothing half-extracted
    again = get_testset("set14", refresh=True)
    assert images(again) == ["img0.png", "img1.png", "img2.png"]
    assert leftovers(env.cache) == [again]


def test_an_interrupted_extraction_leaves_nothing(env, monkeypatch):
    real = testsets._image_name
    calls = []

    def fail_on_the_second_image(member, folder):
        name = real(member, folder)
        if name is not None:
            calls.append(name)
            if len(calls) == 2:
                raise KeyboardInterrupt  # killed mid-way (Ctrl-C), after one image was written
        return name

    monkeypatch.setattr(testsets, "_image_name", fail_on_the_second_image)
    with pytest.raises(KeyboardInterrupt):
        get_testset("set5")
    assert leftovers(env.cache) == []
    assert not [p for p in env.cache.rglob("*") if p.suffix == ".png"]
    monkeypatch.setattr(testsets, "_image_name", real)
    assert images(get_testset("set5")) == SET5


def test_an_archive_with_an_escaping_member_is_refused(env):
    with pytest.raises(CorruptFileError, match="unsafe member"):
        get_testset("urban100")
    assert leftovers(env.cache) == []
    assert not (env.cache.parent / "evil.png").exists() and not list(env.tmp.rglob("evil.png"))


# ---- sets put there by hand --------------------------------------------------------------------
def test_a_gray_set_is_read_from_the_data_folder(env):
    folder = env.data / "Set12"  # as DnCNN's testsets/Set12 is named; any case works
    folder.mkdir(parents=True)
    (folder / "01.png").write_bytes(png((8, 8), 1, "L"))
    assert resolve_data("set12") == folder
    local = env.data / "set5"  # a copy by hand wins over the Hub, for any set
    local.mkdir()
    (local / "x.png").write_bytes(png((8, 8), 2))
    assert resolve_data("set5") == local
    assert not env.cache.exists()


def test_a_missing_gray_set_says_where_to_get_it_and_where_to_put_it(env, monkeypatch):
    with pytest.raises(MissingDataError) as caught:
        resolve_data("bsd68")
    message = str(caught.value)
    assert isinstance(caught.value, (LorunError, FileNotFoundError))
    assert "https://github.com/cszn/DnCNN (folder testsets/BSD68)" in message and str(env.data / "bsd68") in message
    assert "LORUN_DATA" in message and "\n" not in message
    (env.data / "set11").mkdir(parents=True)
    with pytest.raises(MissingDataError, match="set11 holds no images.*ISTA-Net-PyTorch \\(folder data/Set11\\)"):
        resolve_data("set11")
    monkeypatch.delenv("LORUN_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(env.tmp / "xdg"))
    assert testsets.data_root() == env.tmp / "xdg" / "lorun_peft" / "data"
    with pytest.raises(MissingDataError, match=str(env.tmp / "xdg" / "lorun_peft" / "data" / "set12")):
        resolve_data("set12")


# ---- the list and the command line -------------------------------------------------------------
def test_list_testsets_says_what_is_cached_and_where(env):
    folder = get_testset("set5")
    (env.data / "set12").mkdir(parents=True)
    (env.data / "set12" / "01.png").write_bytes(png((8, 8), 1, "L"))
    rows = {row.name: row for row in list_testsets()}
    assert list(rows) == list(testsets.TESTSETS)
    assert rows["set5"].cached and rows["set5"].where == folder and "eugenesiow/Set5" in rows["set5"].source
    assert not rows["set14"].cached and rows["set14"].where is None
    assert rows["set12"].cached and rows["set12"].where == env.data / "set12"
    assert not rows["bsd68"].cached and rows["bsd68"].where == env.data / "bsd68"


def test_data_list_and_get_commands(env, capsys):
    assert main(["data", "get", "SET5", "cbsd68"]) == 0
    out = capsys.readouterr().out
    folder = get_testset("set5")
    assert f"set5: 3 images in {folder}" in out and "cbsd68: 2 images in" in out
    assert main(["data", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "cached", "source", "where"]
    row = {line.split()[0]: line for line in lines[1:9]}
    assert row["set5"].split()[1] == "yes" and row["set5"].endswith(str(folder))
    assert row["set14"].split()[1] == "no" and row["set14"].endswith("lorun data get set14")
    assert "github.com/cszn/DnCNN" in row["set12"] and row["set12"].endswith(f"put its images in {env.data / 'set12'}")
    assert main(["data", "get", "set6"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lorun data: error: 'set6' is not a known test set") and err.count("\n") == 1


def test_eval_on_a_test_set_by_name(env, capsys):
    assert main(["eval", "--model", "zoo:sr-x2-k0", "--data", "set5"]) == 0
    out, err = capsys.readouterr()
    assert all(Path(name).stem in out for name in SET5) and "mean" in out
    assert f"--data set5: {get_testset('set5')}" in err
    assert main(["eval", "--model", "zoo:sr-x2-k0", "--data", "set6"]) == 2
    err = capsys.readouterr().err
    assert "lorun eval: error: 'set6' is neither a folder nor a known test set" in err and err.count("\n") == 1


def test_train_val_takes_a_name_and_train_data_does_not(env, tmp_path):
    from argparse import Namespace

    from lorun_peft.cli.datasets import named_data

    (env.data / "set12").mkdir(parents=True)
    (env.data / "set12" / "01.png").write_bytes(png((8, 8), 1, "L"))
    args = Namespace(command="train", data=Path("set12"), val=Path("set12"))
    named_data(args)
    assert args.val == env.data / "set12" and args.data == Path("set12")  # never train on a test set by name
    args = Namespace(command="plot", data=tmp_path)
    named_data(args)
    assert args.data == tmp_path


def test_data_help_needs_no_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom lorun_peft.cli.parser import main\ntry:\n    main(['data', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "list" in proc.stdout and "get" in proc.stdout
