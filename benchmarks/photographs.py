"""Write the photographs the package ships (``lorun_peft/data/photos/``) from scikit-image's own.

    pip install scikit-image && python -m benchmarks.photographs

Each is the centre 256 x 256 crop of a CC0 or public-domain photograph inside scikit-image's wheel,
saved as an 8-bit PNG (gray or RGB as scikit-image has it): about 0.5 MB for all seven. Their
sources and licences are in ``lorun_peft/data/photos/LICENSES.md``, written here too, so a new user
sees a photograph without installing scikit-image (issue #24, item 5). The zoo's benchmark still
reads the full-size originals (``lorun_peft.data.scikit_image_photographs``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import lorun_peft.data.images as images

# name: (licence, author or source), as scikit-image's docstrings state them
SOURCES = {
    "camera": ("CC0", "Lav Varshney, the photographer"),
    "astronaut": ("public domain", "NASA (the astronaut Eileen Collins)"),
    "coffee": ("CC0", "Rachel Michetti, the photographer (courtesy of Pikolo Espresso Bar)"),
    "chelsea": ("CC0", "Stefan van der Walt, the photographer (Chelsea the cat)"),
    "brick": ("CC0", "CC0Textures, Bricks25 (perspective-corrected and cropped by scikit-image)"),
    "gravel": ("CC0", "CC0Textures, Gravel04 (rescaled and cropped by scikit-image)"),
    "clock": ("public domain", "Stefan van der Walt, the photographer (a motion-blurred wall clock)"),
}
SIZE = 256


def main(out: Path = Path(images.__file__).parent / "photos") -> None:
    from PIL import Image
    from skimage import data

    import skimage

    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# The photographs shipped with lorun_peft",
        "",
        f"Each is the centre {SIZE} x {SIZE} crop of a photograph bundled with scikit-image {skimage.__version__}",
        "(`skimage.data.NAME()`), saved as an 8-bit PNG by `python -m benchmarks.photographs`. None is",
        "used to train or to choose anything in the zoo; the demo's part 2 trains on brick, gravel and clock",
        "and tests on the other four.",
        "",
        "| file | licence | source |",
        "|---|---|---|",
    ]
    for name, (licence, source) in SOURCES.items():
        array = np.asarray(getattr(data, name)())
        top, left = (array.shape[0] - SIZE) // 2, (array.shape[1] - SIZE) // 2
        Image.fromarray(array[top:top + SIZE, left:left + SIZE]).save(out / f"{name}.png", optimize=True)
        lines.append(f"| {name}.png | {licence} | {source} |")
    (out / "LICENSES.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {len(SOURCES)} photographs to {out}: {sum(f.stat().st_size for f in out.glob('*.png')) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
