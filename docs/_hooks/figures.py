"""An mkdocs hook: the benchmark figures (benchmarks/results/*.png) are served as figures/<name>.png.

mkdocs only serves files inside docs/; rather than keep copies of the figures there, the build adds
the ones the pages link to from where the benchmarks write them, so the site always shows the
committed figures. A page that links to a figure that does not exist fails `mkdocs build --strict`.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
LINK = re.compile(r"figures/([\w.-]+\.png)")


def on_files(files: Files, config, **kwargs) -> Files:
    docs = Path(config["docs_dir"])
    wanted = {name for page in docs.rglob("*.md") for name in LINK.findall(page.read_text(encoding="utf-8"))}
    for name in sorted(wanted):
        if (RESULTS / name).is_file():
            files.append(File.generated(config, f"figures/{name}", abs_src_path=str(RESULTS / name)))
    return files
