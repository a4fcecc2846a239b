"""A Hugging Face Space (Gradio SDK) running `lorun app`'s page: the pretrained zoo's task bundles
on uploaded photographs. The Space runs `python app.py`; locally, `lorun app` serves the same page."""

from lorun_peft.app import build
from lorun_peft.app.playground import Limits, Playground

demo = build(Playground(Limits(max_upload_mb=5, max_side=768)))  # a shared CPU Space: smaller images

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=1).launch(max_file_size="5mb")
