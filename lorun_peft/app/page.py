"""``lorun app``: a web page (Gradio) to try task bundles on your own photographs, offline on a CPU.

Pick a task (a zoo bundle, a Hub repo, or with ``--allow-local`` a folder), give an image (upload
or built-in), degrade it with the task's operator or treat it as the measurement, and see truth |
initial estimate | restored with PSNR/SSIM, every stage's output and the parameter report.
Switching task swaps the bundle into the live network and says how long it took. The work is done
by :class:`~lorun_peft.app.playground.Playground`; this module only lays out the page.

Needs the optional extra: ``pip install "lorun_peft[app]"``.

>>> page = build(Playground())  # doctest: +SKIP
>>> page.launch(server_name="127.0.0.1")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LorunError
from ..plots import save_png
from .playground import BUILT_IN, DEGRADE, MEASUREMENT, Limits, Playground, Restoration

__all__ = ["build", "serve"]

INTRO = """# lorun_peft: try a task bundle
One shared base denoiser, one LoRA adapter per stage: choose a task, give a photograph, restore it.
The zoo's networks are gray. A colour image stays colour: CS, deblurring and inpainting restore R, G and B
one by one; super-resolution restores the luma and takes the chroma from its cubic estimate. Switching task swaps
the bundle into the live network; the base is never reloaded."""
MODES = {"degrade it with the task's operator (truth known: PSNR/SSIM)": DEGRADE,
         "it is the measurement (e.g. a low-resolution image)": MEASUREMENT}


def _gradio() -> Any:
    try:
        import gradio
    except ImportError as err:
        raise ImportError('lorun app needs Gradio: pip install "lorun_peft[app]"') from err
    return gradio


def build(play: Playground) -> Any:
    """The page (a ``gradio.Blocks``) around ``play``."""
    gr = _gradio()
    tasks = play.zoo_tasks()
    out_dir = Path(tempfile.mkdtemp(prefix="lorun_app_"))

    def run(task: str, source: str, subfolder: str, revision: str, upload: str | None, builtin: str,
            mode: str, sigma: float, switch: bool, progress: Any = gr.Progress(track_tqdm=True)) -> tuple:
        status = []
        try:
            wanted = (source or "").strip() or task
            if switch or play.task != wanted:
                status.append(play.select(wanted, subfolder, revision))
            image = play.read_upload(upload) if upload else play.built_in(builtin)
            result = play.restore(image, MODES.get(mode, DEGRADE), float(sigma))
        except (LorunError, FileNotFoundError, ImportError) as err:
            return (f"**Error:** {err}", *[gr.update()] * 7)  # the last restoration stays on the page
        status.append(f"restored {play.task} in {result.seconds:.2f} s" + (f" ({result.colour})" if result.colour else ""))
        path = out_dir / f"restored-{play.task.replace('/', '_')}.png"
        _save_png(result.restored, path)
        return ("  \n".join(status), *_views(result), play.report(), str(path))

    with gr.Blocks(title="lorun_peft") as page:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column():
                task = gr.Radio(tasks, value=tasks[0] if tasks else None, label="Task (pretrained zoo)", elem_id="task")
                with gr.Accordion("... or a Hub repo" + (" / local folder" if play.allow_local else ""), open=False):
                    source = gr.Textbox(label="Hub repo id" + (" or local folder" if play.allow_local else ""),
                                        placeholder="user/lorun-cs", value="", elem_id="source")
                    subfolder = gr.Textbox(label="subfolder", value="", elem_id="subfolder")
                    revision = gr.Textbox(label="revision (branch, tag or commit)", value="", elem_id="revision")
                    load = gr.Button("Load this task", elem_id="load")
            with gr.Column():
                upload = gr.File(label=f"Upload an image (up to {play.limits.max_upload_mb:g} MB, "
                                       f"{play.limits.max_side} px a side)", type="filepath", elem_id="upload")
                builtin = gr.Dropdown(list(BUILT_IN), value=BUILT_IN[0], label="... or a built-in photograph", elem_id="builtin")
                mode = gr.Radio(list(MODES), value=next(iter(MODES)), label="The image:", elem_id="mode")
                sigma = gr.Slider(0, 0.1, value=0, step=0.005, label="measurement noise sigma (image range 0-1)", elem_id="sigma")
                restore = gr.Button("Restore", variant="primary", elem_id="restore")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            truth = gr.Image(label="truth", interactive=False, height=300, elem_id="truth")
            initial = gr.Image(label="initial estimate", interactive=False, height=300, elem_id="initial")
            restored = gr.Image(label="restored", interactive=False, height=300, elem_id="restored")
        metrics = gr.Markdown(elem_id="metrics")
        stages = gr.Gallery(label="output of every stage (stage_0 ... stage_K-1)", columns=5, height="auto", elem_id="stages")
        with gr.Row():
            report = gr.Textbox(label="parameter report", lines=8, interactive=False, elem_id="report")
            download = gr.File(label="download the restored image", interactive=False, elem_id="download")

        # Named endpoints with named parameters, as gradio_client shows them (/restore, /load_task, /switch_task).
        def restore_image(task: str, source: str, subfolder: str, revision: str, upload: str | None, builtin: str,
                          mode: str, sigma: float) -> tuple:
            """Restore the image with the task (a zoo name, or the Hub repo / folder in ``source``)."""
            return run(task, source, subfolder, revision, upload, builtin, mode, sigma, False)

        def load_task(task: str, source: str, subfolder: str, revision: str, upload: str | None, builtin: str,
                      mode: str, sigma: float) -> tuple:
            """Load the task again (a new revision of a Hub repo, say), then restore the image."""
            return run(task, source, subfolder, revision, upload, builtin, mode, sigma, True)

        def switch_task(task: str, subfolder: str, revision: str, upload: str | None, builtin: str, mode: str,
                        sigma: float) -> tuple:
            """Swap in the zoo task chosen on the page, then restore the image."""
            return run(task, "", subfolder, revision, upload, builtin, mode, sigma, True)

        outputs = [status, truth, initial, restored, metrics, stages, report, download]
        common = [task, source, subfolder, revision, upload, builtin, mode, sigma]
        restore.click(restore_image, common, outputs, api_name="restore")
        load.click(load_task, common, outputs, api_name="load_task")
        task.change(switch_task, [task, subfolder, revision, upload, builtin, mode, sigma], outputs, api_name="switch_task")
    return page


def _views(result: Restoration) -> tuple:
    """truth, initial, restored, the metrics table and the stage gallery for the page."""
    blank = np.zeros_like(result.restored)
    u8 = _to_uint8
    table = "| | PSNR (dB) | SSIM |\n|---|---|---|\n" + "".join(
        f"| {name} | {result.metrics[f'{name} PSNR (dB)']:.2f} | {result.metrics[f'{name} SSIM']:.4f} |\n"
        for name in ("initial", "restored")
    ) if result.metrics else "no truth to compare with (the image is the measurement)"
    truth = result.truth if result.truth is not None else blank
    return (u8(truth), u8(result.initial), u8(result.restored), table, [(u8(x), label) for x, label in result.stages])


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (image.clip(0, 1) * 255).round().astype(np.uint8)


def _save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    save_png(path, Image.fromarray(_to_uint8(image)))


def serve(host: str = "127.0.0.1", port: int = 7860, *, allow_local: bool = False, limits: Limits = Limits(),
          open_browser: bool = False) -> None:
    """Start the page on ``host:port`` (loopback unless told otherwise) and block until stopped."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry calls
    gr = _gradio()
    page = build(Playground(limits, allow_local=allow_local))
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: works offline
    page.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, inbrowser=open_browser, share=False,
        max_file_size=f"{limits.max_upload_mb:g}mb", theme=theme, footer_links=[],
    )
