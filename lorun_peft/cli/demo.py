"""``lorun demo``: first the pretrained zoo (one live network swaps the five CS bundles and restores
a photograph at each ratio, no training), then a task the zoo's base has never seen trained over it:
inpainting, 80 % of the pixels missing (plug-and-play, Block-1 and LoRun at equal steps), with the
PSNR / SSIM table, a PSNR-against-steps chart, the parameter report, figures, a saved model and
its test images (which ``lorun eval --data`` measures again), in minutes on a CPU.

Why inpainting (measured on the shipped test photographs, 60 steps, the zoo's base): a new CS
ratio (0.30) showed nothing, since phase 1 had already trained the base for CS: plug-and-play
34.04 dB, LoRun-9 34.10. Over the same base, inpainting at 80 % missing goes from plug-and-play
26.13 dB to LoRun-9 27.03 (lr 1e-3), deblurring with a motion kernel at noise 2.55/255 from
28.21 to 28.43 (lr 3e-4). The noise schedule's grid reaches down to 0.01, since the validation
images chose the smallest sigma_0 of the CS grid (0.04).

Why part 2 does not retrain from scratch: the earlier part 2 (Algorithm 1 on synthetic images, a
trained sampling matrix at lr 2e-3) showed Block-1 losing 3.3 dB when given 200 more steps, from
Adam's restart moving the matrix the denoiser had adapted to. Here every method starts from one
network, nothing of the operator is trained, and the schedules are cosine."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from .. import zoo
from ..adapters.sharing import inference_engine
from ..data.images import IMAGE_SUFFIXES, center_crop, list_files, load_image, photographs, random_crop
from ..errors import InvalidArgumentError
from ..metrics import psnr
from ..operators import BlockCS, Inpainting
from ..plots import image_grid, inset_box, line_chart, lora_update_figure, save_png, stage_chart, to_display
from ..resolve import run_model_folder
from ..steps import geometric
from ..training.evaluation import evaluate
from ..training.loop import train
from ..training.pretrain import choose_noise_schedule
from ..unfold import measure_and_restore, unfold

__all__ = ["demo", "zoo_tour"]


def demo_photograph(image: Path | None) -> tuple[torch.Tensor, str]:
    """The demo's photograph: ``image`` (colour stays colour: the gray CS networks restore R, G and B
    one by one), else the shipped gray "camera" (256 x 256, CC0)."""
    if image is not None:
        return load_image(image), str(image)
    return photographs(["camera"])[0], "the shipped photograph camera.png (256 x 256, CC0)"


def initial_estimate_words(operator: BlockCS) -> tuple[str, str]:
    """What x0, stage_0's input, is for a block CS operator: a short label and a sentence.

    The zoo's CS bundles fit no estimate Q (``linear_estimate=False``), so x0 is A^T y; their Phi
    has orthonormal rows, so that is each block projected onto them, the least-squares pinv(Phi) y.

    >>> op = BlockCS(0.25, block=8).fit_sampling(torch.rand(4, 1, 32, 32))  # PCA rows: orthonormal
    >>> initial_estimate_words(op)[0]
    'x0 = Phi^T y = A^T y'
    >>> initial_estimate_words(BlockCS(0.25, block=8, linear_estimate=True))[0]
    'x0 = Q y'
    """
    if operator.q is not None:
        return "x0 = Q y", "x0 = Q y per block, Q a linear estimate fitted to training images (stage_0's input)"
    phi = operator.phi.detach().double()
    if torch.allclose(phi @ phi.T, torch.eye(len(phi), dtype=phi.dtype), atol=1e-3):
        side = f"{operator.block}x{operator.block}"
        return "x0 = Phi^T y = A^T y", (f"x0 = Phi^T y = A^T y (stage_0's input): each {side} block projected onto "
                                         "the orthonormal rows of Phi, the least-squares estimate pinv(Phi) y")
    return "x0 = A^T y", "x0 = A^T y per block (stage_0's input)"


@torch.no_grad()
def zoo_tour(x: torch.Tensor, out: Path | None = None) -> dict[str, dict[str, float]]:
    """Swap every CS bundle of the zoo into ONE live network and restore ``x`` (C x H x W) at each
    ratio: prints PSNR of x_0 (stage_0's input; see :func:`initial_estimate_words`) and LoRun, and
    the swap time; with ``out`` writes ``out/zoo.png`` (rows: ratios; truth | x_0 | LoRun).

    >>> scores = zoo_tour(torch.rand(1, 64, 64))  # doctest: +ELLIPSIS
    one live LoRun-9 network...
    >>> sorted(scores)[0], sorted(scores["cs-0.01"])
    ('cs-0.01', ['lorun', 'x0'])
    """
    names = [n for n in zoo.list() if n.startswith("cs-")]
    start = time.perf_counter()
    net = zoo.load(names[-1])
    print(f"one live LoRun-{net.K} network from the pretrained zoo ({time.perf_counter() - start:.1f} s to load, "
          f"no training); each CS bundle swapped in, then a {x.shape[-2]} x {x.shape[-1]} image restored:")
    scores: dict[str, dict[str, float]] = {}
    columns: list[list[torch.Tensor]] = [[], [], []]
    said: list[str] = []
    for name in names:
        tick = time.perf_counter()
        net.load_adapters(zoo.bundle_path(name))
        swap = time.perf_counter() - tick
        label, words = initial_estimate_words(net.operator)
        if words not in said:  # the same for every bundle of the zoo: said once, above the table
            print(f"  {words}")
            print(f"  {'bundle':<8} {'x0 dB':>7} {'LoRun dB':>9} {'swap ms':>8} {'restore s':>10}")
            said.append(words)
        tick = time.perf_counter()
        _, x0, x_hat, _ = measure_and_restore(net, x[None])
        outputs = [o.clamp(0, 1)[0] for o in (x0, x_hat)]
        scores[name] = dict(zip(("x0", "lorun"), (float(psnr(o[None], x[None])) for o in outputs)))
        print(f"  {name:<8} {scores[name]['x0']:7.2f} {scores[name]['lorun']:9.2f} {swap * 1e3:8.1f} "
              f"{time.perf_counter() - tick:10.2f}")
        for column, o in zip(columns, (x, *outputs)):
            column.append(o)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        h, w = x.shape[-2:]
        box = inset_box([t for column in columns for t in column])  # one photograph: one box, where rows differ most
        image_grid(out / "zoo.png", columns, ["truth", label if len(said) == 1 else "$x_0$", f"LoRun-{net.K} (zoo)"],
                   reference=0, row_labels=[f"bundle {n} (ratio {n[3:]})" for n in names], inset=box,
                   title=f"One live LoRun-{net.K} network from the pretrained zoo, a CS bundle swapped in per row, on a "
                         f"{w}x{h} image\n{'; '.join(said)}. The zoo's rows of Phi: the leading PCA directions of "
                         "training blocks, fitted to data, not trained (for them x0 is also the noise-free linear MMSE "
                         "estimate). PSNR / SSIM against the truth under each panel; inset: zoom of the gold box, where "
                         "the panels differ most")
        print(f"figure: {out / 'zoo.png'}")
    return scores


# Part 2's learning rates: the whole base fine-tuned (Block-1), the adapters and steps (LoRun)
BLOCK_1_LR, LORUN_LR = 1e-5, 1e-3
# Part 2's noise schedule grid (sigma_0; sigma_{K-1} from the default grid), chosen on validation images
SIGMA_FIRSTS = (0.15, 0.08, 0.04, 0.02, 0.01)
# Part 2's photographs (shipped, lorun_peft/data/photos): the network trains on patches of these ...
TRAIN_PHOTOS = ("brick", "gravel", "clock")
# ... and is tested on these, never trained on
TEST_PHOTOS = ("camera", "astronaut", "coffee", "chelsea")


def task_images(
    data: Path | None, seed: int, patch: int = 48
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], list[str], str]:
    """Part 2's images: training patches, validation images (to choose the noise schedule, taken
    from the training images) and test images: from ``data`` (its last fifth tests), else
    the shipped photographs (TRAIN_PHOTOS / TEST_PHOTOS); then the test images' names and the source in words."""
    if data is not None:
        files = list_files(data, IMAGE_SUFFIXES)
        held_out = max(1, len(files) // 5) if len(files) > 1 else 0
        train_images = [load_image(f, 1) for f in (files[: len(files) - held_out] if held_out else files)]
        test_files = files[-held_out:] if held_out else files
        test = [load_image(f, 1) for f in test_files]
        names = [f.stem for f in test_files]
        source = f"{len(train_images)} images of {data} ({held_out} held out)"
    else:
        train_images, test, names = photographs(TRAIN_PHOTOS), photographs(TEST_PHOTOS), list(TEST_PHOTOS)
        source = f"patches of the shipped photographs {', '.join(TRAIN_PHOTOS)}; tested on {', '.join(TEST_PHOTOS)}"
    side = min(min(x.shape[-2:]) for x in [*train_images, *test])
    if side < 32:
        raise InvalidArgumentError(f"part 2 needs images of at least 32 x 32 pixels; the smallest side here is {side}")
    generator = torch.Generator().manual_seed(seed)
    patch = min(patch, side)
    patches = torch.stack([random_crop(train_images[i % len(train_images)], patch, generator) for i in range(256)])
    validation = [center_crop(x, min(96, side)) for x in train_images[:4]]
    return patches, validation, [center_crop(x, min(128, side)) for x in test], names, source


def save_test_images(folder: Path, images: list[torch.Tensor], names: list[str]) -> Path:
    """Write part 2's test images (C x H x W in [0, 1], exact in 8 bits: read from 8-bit files)
    as ``folder/NAME.png`` (PNG files an earlier run left there go first), so that ``lorun eval
    --data folder`` measures the demo's own test images. Returns ``folder``.

    >>> import tempfile
    >>> folder = save_test_images(Path(tempfile.mkdtemp()) / "test_images", [torch.zeros(1, 8, 8)], ["flat"])
    >>> sorted(p.name for p in folder.iterdir())
    ['flat.png']
    """
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):  # what an earlier demo left
        old.unlink()
    for i, (x, name) in enumerate(zip(images, names)):
        name = name if names.count(name) == 1 else f"{name}_{i + 1}"  # (a.png and a.tif)
        save_png(folder / f"{name}.png", Image.fromarray(to_display(x)))
    return folder


def largest_cs_bundle() -> str:
    """The zoo's CS bundle of the largest ratio (its base is the one the zoo's CS bundles share)."""
    return [n for n in zoo.list() if n.startswith("cs-")][-1]


@inference_engine("eager")  # small images restored a few times each: preparing the onnxruntime engine would not pay
def demo(
    out: Path,
    missing: float = 0.8,
    K: int = 9,  # noqa: N803
    gamma: float = 10.0,
    steps: int = 60,
    seed: int = 0,
    data: Path | None = None,
    progress: bool = True,
    image: Path | None = None,
) -> dict[str, dict[str, float]]:
    """The zoo's five CS bundles on one photograph (``image``; see :func:`zoo_tour`), then what a user
    does next: a task the zoo's base has never seen (inpainting, ``missing`` of the pixels missing at
    random) over that base, three ways at equal steps: plug-and-play (the base as it is, its noise
    schedule chosen on validation images), Block-1 (the base fine-tuned, lr 1e-5) and LoRun-K (the
    base frozen, K adapters, lr 1e-3). Prints the table and the parameter report; writes demo.png,
    training.png (test PSNR against steps, beside x0's), stages.png, lora_updates.png, the model and
    the test images (test_images/, for ``lorun eval --model OUT --data OUT/test_images``).

    Returns ``{method: {"psnr": dB, "ssim": value}}`` for "linear", "plug-and-play", "Block-1" and "LoRun-K".
    """
    operator = Inpainting(missing=missing, seed=seed)  # checked before part 1; a mask drawn for each image size met
    photo, where = demo_photograph(image)
    print(f"Part 1: the pretrained zoo on {where}")
    zoo_tour(photo, out)
    torch.manual_seed(seed)
    patches, validation, test_set, test_names, source = task_images(data, seed)
    lorun_name = f"LoRun-{K}"
    task = f"inpainting, {missing:.0%} of the pixels missing at random"
    print(f"\nPart 2: a task the zoo's base has never seen: {task}; plug-and-play, Block-1 and {lorun_name} "
          f"over that base at equal steps ({steps}) on {source}")
    base = zoo.load_base(largest_cs_bundle())  # the base the zoo's CS bundles share
    nets = {"plug-and-play": unfold(base, copy.deepcopy(operator), K, share="base", noise_level=True),
            "Block-1": unfold(copy.deepcopy(base), copy.deepcopy(operator), K, share="base", noise_level=True),
            lorun_name: unfold(copy.deepcopy(base), operator, K, gamma=gamma, noise_level=True)}
    choice = choose_noise_schedule(nets["plug-and-play"], validation, firsts=SIGMA_FIRSTS)
    for net in nets.values():
        net.steps.initialise(step=choice["step"], sigma=geometric(choice["sigma_first"], choice["sigma_last"], K))
    print(f"noise schedule chosen untrained on {len(validation)} validation images: sigma {choice['sigma_first']} -> "
          f"{choice['sigma_last']}")
    starts = {name: evaluate(net, test_set, seed=seed).mean() for name, net in nets.items()}
    curves = {name: [start["psnr"]] for name, start in starts.items()}
    start = time.perf_counter()
    for name, lr in (("Block-1", BLOCK_1_LR), (lorun_name, LORUN_LR)):  # test PSNR every quarter, to draw the curve
        result = train(nets[name], patches, steps=steps, lr=lr, batch_size=4, seed=seed, val_data=test_set,
                       val_every=max(1, steps // 4), progress=progress, desc=name)
        curves[name] += [value for _, value in result.val_psnr]
    marks = [step for step, _ in result.val_psnr]
    curves["plug-and-play"] *= len(marks) + 1  # untrained: the same at every mark
    # x0 drawn too, so that the axis shows the gain of training in proportion to the whole restoration
    curves = {"x0 (holes filled)": [starts["plug-and-play"]["x0_psnr"]] * (len(marks) + 1), **curves}
    seconds = time.perf_counter() - start
    evaluations = {name: evaluate(net, test_set, seed=seed, keep_outputs=True) for name, net in nets.items()}
    first = evaluations[lorun_name].mean()
    results = {"linear": {"psnr": first["x0_psnr"], "ssim": first["x0_ssim"]}}
    results.update({name: {k: e.mean()[k] for k in ("psnr", "ssim")} for name, e in evaluations.items()})

    report = nets[lorun_name].parameter_report()
    trained = {"linear": "0", "plug-and-play": "0", "Block-1": f"{report.base + report.step:,}", lorun_name: f"{report.trainable:,}"}
    h, w = test_set[0].shape[-2:]
    print(f"\nOn {len(test_set)} held-out {w}x{h} test images, after {seconds:.0f} s of training ({steps} steps each):")
    print(f"  {'method':<30} {'PSNR (dB)':>9} {'SSIM':>7} {'trained parameters':>19}")
    for name, values in results.items():
        label = "x0: holes filled" if name == "linear" else name
        print(f"  {label:<30} {values['psnr']:9.2f} {values['ssim']:7.4f} {trained[name]:>19}")
    print(f"  test PSNR after {', '.join(map(str, [0, *marks]))} steps: "
          + "; ".join(f"{n} " + " ".join(f"{v:.2f}" for v in c) for n, c in curves.items()))
    print("\n" + str(report))

    out.mkdir(parents=True, exist_ok=True)
    figure, curve, stages, updates = out / "demo.png", out / "training.png", out / "stages.png", out / "lora_updates.png"
    with torch.no_grad():
        x0s = [operator.initial_estimate(operator.A(x[None]))[0] for x in test_set]
    columns = [test_set, x0s, *(e.restored for e in evaluations.values())]
    boxes = [inset_box([column[i] for column in columns]) for i in range(len(test_set))]  # where methods differ most
    image_grid(figure, columns,
               ["truth", "$x_0$: holes filled", "plug-and-play", f"Block-1, {steps} steps", f"{lorun_name}, {steps} steps"],
               scale=2, reference=0, inset=boxes, row_labels=[f"test image {i + 1}: {n}" for i, n in enumerate(test_names)],
               title=f"A task the zoo's base has never seen: {task}, {len(test_set)} held-out {w}x{h} test images "
                     f"(rows). Under each panel: PSNR / SSIM against the truth; inset: zoom of the gold box, placed "
                     f"in each image where the panels differ most.")
    line_chart(curve, curves, x=[0, *marks], xlabel="training steps (each method)", ylabel="mean test PSNR (dB)",
               title=f"Test PSNR against training steps: {task}, over the zoo's base")
    stage_chart(stages, {name: e.stage_psnr for name, e in evaluations.items()}, reference="plug-and-play",
                title=f"Mean PSNR on the test images after each stage ({task}); below, each method minus plug-and-play")
    lora_update_figure(updates, nets[lorun_name])
    model = nets[lorun_name].save_pretrained(run_model_folder(out))
    tests = save_test_images(out / "test_images", test_set, test_names)
    print(f"\nfigures: {figure} (truth | x0 | plug-and-play | Block-1 | {lorun_name}), {curve}, {stages}, {updates}")
    print(f"model: {model}; the test images: {tests}")
    print(f"  {lorun_name}'s {results[lorun_name]['psnr']:.2f} dB again: lorun eval --model {out} --data {tests}")
    return results
