"""`lorun app` in a real browser: headless Chromium (Debian's package) driven by Playwright loads
the page from a server this test starts on 127.0.0.1, uploads a photograph, restores it, switches
task (a swap, then super-resolution), survives a bad upload, and saves a screenshot in
``test-artifacts/app.png`` (``LORUN_ARTIFACTS`` overrides the folder)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorun_peft.cli.parser import build_parser

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright
except ImportError:  # the page fixture skips, saying why
    PlaywrightTimeout, sync_playwright = TimeoutError, None

CHROMIUM = os.environ.get("LORUN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# A sandbox-less, offline Chromium: no first-run, sync, component-update or background calls.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("LORUN_ARTIFACTS", "test-artifacts"))


def test_app_command_line():
    args = build_parser().parse_args(["app", "--port", "8000", "--allow-local", "--max-side", "512"])
    assert (args.host, args.port, args.allow_local, args.max_side, args.max_upload_mb) == ("127.0.0.1", 8000, True, 512, 10.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("gradio", reason='the page needs Gradio: pip install "lorun_peft[app]"')
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen([sys.executable, "-m", "lorun_peft.cli", "app", "--port", str(port), "--threads", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"lorun app exited: {process.stdout.read()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("lorun app did not listen within 120 s")
    yield f"http://127.0.0.1:{port}/"
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def page(server):
    if sync_playwright is None:
        pytest.skip("the browser test needs Playwright: pip install playwright")
    if CHROMIUM is None:
        pytest.skip("no Chromium to drive: apt-get install -y chromium (or set LORUN_CHROMIUM)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(server, wait_until="networkidle")
        page.wait_for_selector("#restore")
        yield page
        browser.close()


def _wait_for_status(page, text: str) -> str:
    page.wait_for_function(f"document.querySelector('#status').innerText.includes({text!r})", timeout=120_000)
    return page.locator("#status").inner_text()


def _upload(page, path: Path) -> None:
    """Upload ``path`` as a person does: clear the file shown, click the field, choose the file."""
    shown = f"document.querySelector('#upload').innerText.includes({path.name!r})"
    for _ in range(3):  # a click landing while the field re-renders opens no chooser: click again
        clear = page.locator("#upload").get_by_label("Clear")
        if clear.count():
            clear.first.click()
        try:
            with page.expect_file_chooser(timeout=10_000) as chooser:
                page.locator("#upload").get_by_text("Click to Upload").click()
            chooser.value.set_files(str(path))
            page.wait_for_function(shown, timeout=30_000)
            return
        except PlaywrightTimeout:
            continue
    pytest.fail(f"could not upload {path.name}: {page.locator('#upload').inner_text()!r}")


def _metrics(page) -> dict[str, tuple[float, float]]:
    rows = [line.split("\t") for line in page.locator("#metrics").inner_text().splitlines()]
    return {row[0].strip(): (float(row[1]), float(row[2])) for row in rows if row[0].strip() in ("initial", "restored")}


def test_restore_swap_and_bad_input_in_a_browser(page, tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).normal(128, 20, (120, 96)).clip(0, 255).astype(np.uint8)).save(photo)
    _upload(page, photo)
    page.get_by_label("cs-0.25", exact=True).check()  # choosing a task restores the current image
    status = _wait_for_status(page, "restored cs-0.25")
    assert "LoRun-9 network" in status
    scores = _metrics(page)
    assert set(scores) == {"initial", "restored"} and scores["restored"][0] > 0
    assert page.locator("#stages img").count() == 9
    assert "stage_8" in page.locator("#stages").inner_text()
    assert "total / Block-9" in page.locator("#report textarea").input_value()
    assert "restored-cs-0.25" in page.locator("#download").inner_text()
    link = page.locator("#download a").first
    download = page.request.get(link.get_attribute("href"))  # what the browser would save
    assert download.ok and download.body()[:8] == b"\x89PNG\r\n\x1a\n"

    page.get_by_label("cs-0.10", exact=True).check()
    status = _wait_for_status(page, "restored cs-0.10")
    assert "swapped cs-0.10 into the live LoRun-9 network" in status and " ms" in status
    assert _metrics(page)["restored"][0] < scores["restored"][0]  # fewer measurements, lower PSNR

    page.get_by_label("sr-x2-k0", exact=True).check()
    assert "new HQS LoRun-9 network around the base in memory" in _wait_for_status(page, "restored sr-x2-k0")

    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    _upload(page, bad)
    page.locator("#restore").click()
    assert "notes.png is not an image this page can read" in _wait_for_status(page, "Error")

    _upload(page, photo)  # and the page still works
    page.get_by_label("cs-0.50", exact=True).check()
    assert "swapped cs-0.50" in _wait_for_status(page, "restored cs-0.50")

    page.locator("#upload").get_by_label("Clear").first.click()  # a built-in colour photograph
    page.locator("#builtin input").click()
    page.get_by_role("option", name="astronaut").click()
    page.get_by_label("cs-0.10", exact=True).check()
    _wait_for_status(page, "restored cs-0.10")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)
    assert (ARTIFACTS / "app.png").stat().st_size > 10_000


def test_the_api_has_named_endpoints_and_mixed_tasks_at_once_are_each_served_by_their_own(server):
    """gradio_client sees /restore, /load_task and /switch_task with named parameters; six clients
    asking for three different tasks at once each get the restoration of their own task."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client

    api = Client(server, verbose=False).view_api(return_format="dict", print_info=False)
    assert {"/restore", "/load_task", "/switch_task"} <= set(api["named_endpoints"])
    assert not api["unnamed_endpoints"]
    names = [p["parameter_name"] for p in api["named_endpoints"]["/restore"]["parameters"]]
    assert names == ["task", "source", "subfolder", "revision", "upload", "builtin", "mode", "sigma"]

    def ask(task: str) -> tuple[str, tuple]:
        client = Client(server, verbose=False)
        return task, client.predict(task=task, upload=None, builtin="camera", api_name="/restore")  # as the README shows

    tasks = ["cs-0.10", "cs-0.50", "sr-x2-k0"] * 2
    with ThreadPoolExecutor(len(tasks)) as pool:
        answers = list(pool.map(ask, tasks))
    tables: dict[str, set[str]] = {}
    for task, (status, _truth, _initial, _restored, metrics, _stages, report, _download) in answers:
        assert f"restored {task} in" in status, status
        assert report.startswith(task), report
        tables.setdefault(task, set()).add(metrics)
    assert all(len(found) == 1 for found in tables.values()), tables  # the same task, the same restoration
    assert len({next(iter(found)) for found in tables.values()}) == 3  # each task its own


def test_space_example_builds_the_page():
    gradio = pytest.importorskip("gradio", reason='the page needs Gradio: pip install "lorun_peft[app]"')
    import runpy

    from huggingface_hub import SpaceCard

    space = Path(__file__).resolve().parents[1] / "examples" / "space"
    assert isinstance(runpy.run_path(str(space / "app.py"), run_name="space")["demo"], gradio.Blocks)
    card = SpaceCard.load(space / "README.md")
    assert (card.data.sdk, card.data.app_file) == ("gradio", "app.py")
    assert "lorun_peft[app]" in (space / "requirements.txt").read_text().split()


def test_without_gradio_the_command_says_how_to_install_it(monkeypatch, capsys):
    from lorun_peft.cli.parser import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # as if the app extra were not installed
    assert main(["app", "--port", "1"]) == 2
    assert 'lorun app needs Gradio: pip install "lorun_peft[app]"' in capsys.readouterr().err
