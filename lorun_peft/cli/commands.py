"""What the ``lorun`` commands do, once :mod:`lorun_peft.cli.parser` has parsed the arguments: build,
train and load networks (``load_model``: every saved form, see :mod:`lorun_peft.resolve`), evaluate,
restore, inspect, plot, convert,
and the Hub commands (``push``, ``pull``, ``inspect BUNDLE``). The operators, images and files
they work on come from :mod:`lorun_peft.cli.inputs`.

>>> from lorun_peft.cli.parser import build_parser
>>> args = build_parser().parse_args(["inspect", "--task", "cs", "--K", "2", "--width", "4", "--depth", "1"])
>>> run(args)  # doctest: +ELLIPSIS
configuration: task cs, ...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

from ..persistence import bundle
from .. import zoo
from ..data.colour import POLICY_TEXT, as_gray_batch, from_gray_batch
from ..data.images import image_channels, load_image
from ..metrics import psnr, shave
from ..denoisers import DENOISERS, build_denoiser
from ..errors import InvalidArgumentError
from ..training.evaluation import Evaluation, evaluate
from ..persistence.atomic import atomic_write
from ..operators import fit_operator, operator_from_config
from ..plots import lora_norm_figure, lora_update_figure, stage_chart
from ..training.pretrain import choose_noise_schedule
from ..training.recipe import PAPER, RECIPE, train_two_phase
from .datasets import cmd_data, named_data
from .inputs import (
    as_input,
    evaluation_images,
    fit_images,
    folder_images,
    is_main,
    make_operator,
    measurement_colour,
    metric_options,
    read_channels,
    read_measurement,
    record_settings,
    write_measurement,
    say,
    task_channels,
    training_data,
    use_mask,
    whole_images,
    write_output,
)
from ..config import UnfoldConfig
from ..resolve import describe, load_network, run_model_folder
from ..persistence.networks import NETWORK_CONFIG
from ..unfold import UnfoldedNetwork, colour_policy, measure_and_restore, unfold
from ..export import OnnxNetwork, is_onnx, to_int8, to_onnx
from ..export.tiles import TiledNetwork, may_need_tiles, tiling_refusal
from ..data.images import center_crop, modcrop
from ..tasks import task_of

ONNX_COMMANDS = ("eval", "restore")  # the commands that run an exported .onnx file

__all__ = ["run", "load_model", "network_config", "build_network", "run_bundle_command", "is_bundle_command"]


# ========================================================================== building networks
def network_config(args: argparse.Namespace, operator: Any, share: str, denoiser: torch.nn.Module | None = None) -> dict[str, Any]:
    """The command line's configuration of a new network (the shape :func:`lorun_peft.resolve.describe`
    gives a loaded one): task, channels, operator config, denoiser (from ``args``, or a given
    built-in ``denoiser``'s) and the unfolding settings."""
    channels = task_channels(args)
    options = {"in_channels": channels, "depth": args.depth}
    options["width" if args.denoiser == "unet" else "dim"] = args.width
    denoiser_config = denoiser.config() if denoiser is not None else build_denoiser(args.denoiser, **options).config()
    settings = UnfoldConfig(K=args.K, algorithm=args.algorithm, gamma=10.0 if args.gamma is None else args.gamma,
                            share=share, adapter=args.adapter, noise_level=True)
    return {
        "task": args.task,
        "channels": channels,
        "operator": operator.config(),
        "denoiser": {"name": args.denoiser, "config": denoiser_config},
        "unfold": settings.settings(),
    }


def build_network(config: dict[str, Any], operator: Any = None) -> UnfoldedNetwork:
    """An (untrained) network from a configuration written by :func:`network_config`."""
    denoiser = build_denoiser(config["denoiser"]["name"], **config["denoiser"]["config"])
    operator = operator if operator is not None else operator_from_config(config["operator"])
    return unfold(denoiser, operator, config=UnfoldConfig.from_dict(config["unfold"]))


def base_denoiser_name(base: torch.nn.Module) -> str:
    """The command line's name of a built-in denoiser class (``unet``, ...)."""
    name = next((n for n, cls in DENOISERS.items() if type(base) is cls), None)
    if name is None:
        raise InvalidArgumentError(f"the base is a {type(base).__name__}, not one of the built-in denoisers {sorted(DENOISERS)}")
    return name


def _pretrained_base(spec: str) -> torch.nn.Module:
    """``--base``: a zoo base ("zoo", "zoo:cs") or a base folder written by ``save_base``."""
    base = zoo.base_for_spec(spec)
    return bundle.load_base(Path(spec)) if base is None else base


def load_model(spec: str | Path, device: str | torch.device = "cpu", *, base: str | None = None,
               subfolder: str | None = None, revision: str | None = None) -> tuple[UnfoldedNetwork, dict[str, Any]]:
    """The network ``spec`` names (see :func:`lorun_peft.resolve.load_network`: a run or
    save_pretrained folder, a bundle with its base, a Hub repo, zoo:NAME, an old model file),
    in eval mode on ``device``, and its command-line configuration (:func:`lorun_peft.resolve.describe`)."""
    net, note = load_network(spec, base=base, subfolder=subfolder, revision=revision)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return net.to(device).eval(), describe(net)


def _load_args_model(args: argparse.Namespace, device: str | torch.device = "cpu") -> tuple[UnfoldedNetwork, dict[str, Any]]:
    if is_onnx(args.model):  # a file written by `lorun export`, run on onnxruntime
        if args.command not in ONNX_COMMANDS:
            raise InvalidArgumentError(f"lorun {args.command} needs a PyTorch model; {args.model} is an ONNX file "
                                       f"(lorun {' and '.join(ONNX_COMMANDS)} run those)")
        if getattr(args, "mask", None) is not None:
            raise InvalidArgumentError(f"--mask: {args.model} holds its mask; export the model again with --mask for another one")
        net = OnnxNetwork(args.model)
        if net.simulates:
            raise InvalidArgumentError(f"{args.model} simulates its measurements (exported with --simulate): "
                                       "export it without --simulate to restore measurements")
        return net, net.config
    return load_model(args.model, device, base=getattr(args, "base", None), subfolder=getattr(args, "subfolder", None),
                      revision=getattr(args, "revision", None))


# ================================================================================ commands
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise InvalidArgumentError(f"--device {name!r} is not a device: {err}") from err


def cmd_train(args: argparse.Namespace) -> None:
    for name in ("steps", "batch_size", "patch", "K"):
        if getattr(args, name) < 1:
            raise InvalidArgumentError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    phases = {"recipe": RECIPE, "paper": PAPER}.get(args.phase, (args.phase,))
    if args.phase == "adapters":
        if (args.init is None) == (args.base is None):
            raise InvalidArgumentError("--phase adapters needs either --init (a model to continue) or --base (a pretrained base denoiser)")
    elif args.init is not None or args.base is not None:
        raise InvalidArgumentError(f"--{'init' if args.init is not None else 'base'} is only for --phase adapters")
    if args.init is not None:
        net, config = load_model(args.init)
        if net.share not in ("base", "lora"):
            raise InvalidArgumentError(f"--init {args.init} holds a share={net.share!r} network; adapters need Block-1 or LoRun")
        args.task, args.channels = config["task"], config["channels"]
    else:
        base = _pretrained_base(args.base) if args.base is not None else None
        if base is not None:
            args.denoiser, args.channels = base_denoiser_name(base), base.config()["in_channels"]
        operator = make_operator(args)
        config = network_config(args, operator, "base", denoiser=base)
        net = build_network(config, operator)
        if base is not None:
            net.denoisers.denoiser.load_state_dict(base.state_dict())
    net.to(_device(args.device))
    training = {
        "phases": list(phases), "steps": args.steps, "adapter_steps": args.adapter_steps or args.steps,
        "lr": args.lr, "adapter_lr": args.adapter_lr or args.lr, "batch_size": args.batch_size,
        "noise_sigma": args.noise_sigma, "patch": args.patch, "seed": args.seed, "precision": args.precision,
        "data": str(args.data) if args.data else "built-in", "val": str(args.val) if args.val else None,
    }
    if args.base is not None:
        training["base"] = args.base
    record_settings(args.out / "checkpoints", {**config, "training": training}, fresh=args.fresh)
    data, val = training_data(args, config, net.operator)
    if args.init is None and getattr(net.operator, "q", None) is not None:
        net.operator.fit_initial_estimate(whole_images(data))
        say("initial estimate: the linear MMSE estimate x0 = Q y, Q fitted on the training images")
    if args.base is not None and val is not None:
        chosen = choose_noise_schedule(net, val)
        say(f"steps set for the pretrained base on the validation images: sigma {chosen['sigma_first']} -> "
             f"{chosen['sigma_last']} ({chosen['psnr']:.2f} dB before training)")
    say(f"lorun train: task {config['task']}, phases {', '.join(phases)}, {args.steps} steps each, output {args.out}")
    result = train_two_phase(
        net, data, steps=args.steps, adapter_steps=args.adapter_steps, lr=args.lr, adapter_lr=args.adapter_lr,
        gamma=args.gamma, phases=phases, checkpoint_dir=args.out / "checkpoints", seed=args.seed,
        batch_size=args.batch_size, noise_sigma=args.noise_sigma, val_data=val, val_every=args.val_every,
        checkpoint_every=args.checkpoint_every, resume=not args.fresh, progress=not args.no_progress,
        precision=args.precision,
    )
    if not is_main():
        return
    path = net.save_pretrained(run_model_folder(args.out))
    log = {
        phase: {"losses": r.losses, "val_psnr": r.val_psnr, "seconds": r.seconds}
        for phase, r in (("denoiser", result.denoiser), ("backbone", result.backbone), ("adapters", result.adapters))
        if r is not None
    }
    with atomic_write(args.out / "train_log.json") as f:
        f.write(json.dumps(log).encode())
    for phase, entry in log.items():
        val_text = f", validation PSNR {entry['val_psnr'][-1][1]:.2f} dB" if entry["val_psnr"] else ""
        val_text += " (Gaussian denoising, sigma 25/255)" if phase == "denoiser" and val_text else ""
        say(f"{phase}: final loss {entry['losses'][-1]:.4g}{val_text}, {entry['seconds']:.0f} s")
        if phase == "denoiser" and result.schedule is not None:
            say(f"steps set for the pretrained denoiser on the validation images: sigma {result.schedule['sigma_first']} "
                 f"-> {result.schedule['sigma_last']} ({result.schedule['psnr']:.2f} dB before the adapters)")
    say(str(net.parameter_report()))
    say(f"model: {path}")


def _evaluate_model(net: UnfoldedNetwork, config: dict[str, Any], args: argparse.Namespace, **extra: Any) -> Evaluation:
    images, names = evaluation_images(config, net.operator, args.data, getattr(args, "luma", False), getattr(args, "gray", False))
    images = _onnx_fit(net, images)
    colour = next((p for p in (colour_policy(net, x[None]) for x in images) if p), None)
    if colour:
        say(f"{POLICY_TEXT[colour]}; PSNR {_psnr_where(metric_options(config, net.operator, args))}")
    return evaluate(tiled(net, args, max(x.numel() for x in images)), images, names=names, noise_sigma=args.noise_sigma, seed=args.seed,
                    **metric_options(config, net.operator, args), **extra)


def tiled(net: Any, args: argparse.Namespace, pixels: int) -> Any:
    """``net`` restoring images (of at most ``pixels`` pixels) tile by tile where they may not fit
    the memory (``--tile`` sets the side; :class:`lorun_peft.export.tiles.TiledNetwork`), where its
    task tiles; else ``net``."""
    tile = getattr(args, "tile", None)
    if tile is None and not may_need_tiles(pixels):
        return net
    refusal = tiling_refusal(net)
    if refusal is None:
        return TiledNetwork(net, tile=tile)
    if getattr(args, "tile", None) is not None:
        raise InvalidArgumentError(f"--tile: {refusal}")
    return net


def cmd_eval(args: argparse.Namespace) -> None:
    net, config = _load_args_model(args, _device(args.device))
    use_mask(net.operator, getattr(args, "mask", None))
    result = _evaluate_model(net, config, args)
    options = metric_options(config, net.operator, args)
    where = "Y channel, " if options["y_channel"] and config["channels"] == 3 else "the luma (Y of YCbCr) restored directly, " if args.luma else ""
    print(f"{config['task']} model {args.model}; {where}border {options['border']}; x0 = the operator's initial estimate")
    print(result.table)
    for path, text in ((args.csv, result.table.to_csv()), (args.json, result.table.to_json())):
        if path is not None:
            with atomic_write(path) as f:
                f.write(text.encode())
            print(f"wrote {path}")


@torch.no_grad()
def cmd_restore(args: argparse.Namespace) -> None:
    if args.output.suffix.lower() not in (".png", ".npy"):
        raise InvalidArgumentError(f"OUTPUT must end in .png or .npy, got {args.output}")
    net, config = _load_args_model(args, _device(args.device))
    use_mask(net.operator, getattr(args, "mask", None))  # cassi: the full mask of the measurement's system
    reference = next(net.parameters())
    operator = net.operator
    if args.measurement:
        y = read_measurement(args.input, config, operator, args.gray).to(reference)
        colour_file = measurement_colour(args.input)  # R, G and B measured one by one (lorun measure of a colour image)
        if colour_file and task_of(operator).measurement_is_image:
            y, colour_file = from_gray_batch(y), False  # one colour image again: restored by the task's colour policy
        if getattr(args, "real_scale", False):
            from ..data.spectral import scale_real_measurement

            y = scale_real_measurement(y, bands=config["channels"]).to(reference)
        size = task_of(operator).measurement_size(operator, y) or getattr(operator, "image_size", None)
        with fit_operator(operator, size) if size else contextlib.nullcontext():
            try:
                pixels = (size[0] * size[1] if size else y.shape[-2] * y.shape[-1]) * y.shape[0] * 3  # colour: 3 images
                x_hat = measure_and_restore(tiled(net, args, pixels), None, y=y, stages=False)[2].clamp(0, 1)
            except InvalidArgumentError as err:
                raise InvalidArgumentError(f"measurement {args.input} does not fit the model: {err}") from err
        if colour_file:
            x_hat = from_gray_batch(x_hat)
        write_output(args.output, as_input(x_hat[0], args.input, config))
        policy = "channels" if colour_file else colour_policy(net, y) if task_of(operator).measurement_is_image else None
        print(f"restored {args.input} (y of shape {tuple(y.shape)}) -> {args.output} ({tuple(x_hat.shape[1:])})"
              + (f"; {POLICY_TEXT[policy]}" if policy else ""))
        return
    x = task_of(operator).load_input(args.input, read_channels(config, operator, args.gray))
    x = _onnx_fit(net, fit_images(config, operator, [x]))[0].to(reference)[None]
    result = evaluate(tiled(net, args, x.numel()), x, names=[args.input.name], noise_sigma=args.noise_sigma, seed=args.seed,
                      keep_outputs=True, stages=False, **metric_options(config, operator, args))
    write_output(args.output, as_input(result.restored[0], args.input, config))
    row = result.table.rows[0][1]
    print(f"{args.input} -> {args.output}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f} "
          f"(initial estimate {row['x0_psnr']:.2f} dB)")
    options = metric_options(config, operator, args)
    policy = colour_policy(net, x)
    if policy:
        restored, truth = (shave(image[None], options["border"]) for image in (result.restored[0], x[0].cpu()))
        per_channel = ", ".join(f"{c} {float(psnr(restored[:, i:i + 1], truth[:, i:i + 1])):.2f}" for i, c in enumerate("RGB"))
        print(f"{POLICY_TEXT[policy]}; PSNR {_psnr_where(options)}; per channel: {per_channel} dB")
    elif args.gray and image_channels(args.input) == 3 and config["channels"] == 1:
        print("gray: the colour image was read as gray (--gray)")


def _psnr_where(options: dict[str, Any]) -> str:
    """On which channels ``evaluate`` computes PSNR for a colour image."""
    where = "on Y (the luma)" if options["y_channel"] else "over R, G and B"
    return where + (f", {options['border']} border pixels shaved" if options["border"] else "")


def _onnx_fit(net: Any, images: list[torch.Tensor]) -> list[torch.Tensor]:
    """An ONNX file of a dynamic size (block CS) restores whole blocks: other images are cropped to
    them (a PyTorch network pads instead; the two differ at the border, so the crop is said)."""
    if not isinstance(net, OnnxNetwork):
        return images
    task = task_of(net.operator)
    if task.dynamic_axes(net.operator, simulate=False) is None:
        return images
    multiple, what = task.size_multiple(net.operator)
    cropped = [modcrop(x, multiple) for x in images]
    if any(c.shape != x.shape for c, x in zip(cropped, images)):
        say(f"note: cropped to multiples of the {what} ({multiple} px), which the ONNX file restores")
    return cropped


CALIBRATION_IMAGES = 16


def cmd_export(args: argparse.Namespace) -> None:
    net, config = _load_args_model(args)
    use_mask(net.operator, args.mask)  # cassi: the file restores snapshots of this mask's system
    report = to_onnx(net, args.output, image_size=args.image_size, simulate=args.simulate, atol=args.atol, opset=args.opset,
                     source=str(args.model))
    print(report)
    if args.int8 is None:
        return
    images, _ = folder_images(config, args.int8, operator=net.operator)
    fixed = [d for d in report.input_shape[2:] if isinstance(d, int)]
    if not fixed:  # dynamic: whole blocks of any size
        images = [modcrop(x, task_of(net.operator).size_multiple(net.operator)[0]) for x in images]
    else:  # the file's own size: larger images are cropped to it, smaller ones left out
        height, width = report.image_size
        images = [center_crop(x, height, width) for x in images if x.shape[-2] >= height and x.shape[-1] >= width]
    images = [x for x in images if min(x.shape[-2:]) > 0][:CALIBRATION_IMAGES]
    if not images:
        raise InvalidArgumentError(f"--int8 {args.int8}: no image there is large enough to calibrate on")
    target = args.output.with_name(f"{args.output.stem}-int8.onnx")
    print(f"wrote {to_int8(report.path, target, images)} (int8, calibrated on {len(images)} images of {args.int8}); "
          "measure it before use: `lorun eval --model` on both files")


@torch.no_grad()
def cmd_measure(args: argparse.Namespace) -> None:
    net, config = _load_args_model(args, _device(args.device))
    operator = net.operator
    task = task_of(operator)
    if not task.simulates_files:
        raise InvalidArgumentError(f"lorun measure does not simulate {task.name} measurements: a {task.name} model restores real ones")
    image = load_image(args.input, read_channels(config, operator, args.gray))
    x = fit_images(config, operator, [image])[0].to(next(net.parameters()))[None]
    policy = colour_policy(net, x)
    with fit_operator(operator, x.shape[-2:]):
        y = task.simulate(operator, as_gray_batch(x) if policy else x, args.noise_sigma, torch.Generator().manual_seed(args.seed))
    write_measurement(args.output, y, operator, colour=bool(policy))
    sampling = getattr(operator, "sampling_fingerprint", None)
    print(f"measured {args.input} ({tuple(x.shape[1:])}) -> {args.output} (y of shape {tuple(y.shape)})"
          + (f", sampling {sampling}" if sampling else "")
          + ("; colour: R, G and B measured one by one" if policy else ""))


def cmd_inspect(args: argparse.Namespace) -> None:
    if args.model is not None:
        net, config = _load_args_model(args)
        print(f"model {args.model}: task {config['task']}, operator {config['operator']['type']}, "
              f"denoiser {config['denoiser']['name']}, {json.dumps(config['unfold'])}")
        for line in task_of(net.operator).describe(net.operator):
            print(line)
        if getattr(args, "export_sampling", None) is not None:
            if not hasattr(net.operator, "export_sampling"):
                raise InvalidArgumentError(f"--export-sampling needs a block CS model; {args.model} measures with {config['operator']['type']}")
            print(f"wrote {net.operator.export_sampling(args.export_sampling)} ({net.operator.measurements} x "
                  f"{net.operator.block} x {net.operator.block})")
    elif getattr(args, "export_sampling", None) is not None:
        raise InvalidArgumentError("--export-sampling needs --model (a model whose sampling to export)")
    else:
        operator = make_operator(args)
        config = network_config(args, operator, "lora")
        net = build_network(config, operator)
        print(f"configuration: task {args.task}, {operator!r}".replace("\n", " "))
    print(net.rank_table())
    print()
    report = net.parameter_report()
    print(report)


def cmd_plot(args: argparse.Namespace) -> None:
    net, config = _load_args_model(args, _device(args.device))
    model = Path(args.model)
    default = Path(str(args.model).replace(":", "-")) if str(args.model).startswith(zoo.PREFIX) else (
        model if model.is_dir() else model.parent if model.exists() else Path(str(args.model).replace("/", "--")))
    folder = args.out or default  # a zoo model's figures go to ./zoo-NAME/
    result = _evaluate_model(net, config, args)
    curve = folder / "stage_psnr.png"
    name = f"{'LoRun' if net.share == 'lora' else {'base': 'Block-1', 'none': 'Block-K'}[net.share]}-{net.K}"
    stage_chart(curve, {name: result.stage_psnr}, title=f"Mean PSNR after each stage of {name} ({args.model}; "
                f"test images: {args.data or 'built-in'})")
    print(f"wrote {curve}: " + ", ".join(f"{v:.2f}" for v in result.stage_psnr))
    if net.share == "lora":
        updates, norms = folder / "lora_updates.png", folder / "lora_norms.png"
        shown = lora_update_figure(updates, net, layers=args.layers)
        lora_norm_figure(norms, net)
        print(f"wrote {updates} (|delta W| per stage of {', '.join(shown)})")
        print(f"wrote {norms} (||delta W|| / ||W0|| per stage and layer)")
    else:
        print("no LoRA updates to draw: the model has no adapters")


def cmd_convert(args: argparse.Namespace) -> None:
    net, _ = _load_args_model(args)
    folder = net.save_pretrained(args.out)
    print(f"wrote {folder} (save_pretrained; load with UnfoldedNetwork.from_pretrained or --model {folder})")


# ================================================================================ the Hub
def is_bundle_command(args: argparse.Namespace) -> bool:
    """Whether :func:`run_bundle_command` handles ``args`` (push, pull, or inspect with a BUNDLE)."""
    command = getattr(args, "command", None)
    return command in ("push", "pull") or (command == "inspect" and getattr(args, "bundle", None) is not None)


def run_bundle_command(args: argparse.Namespace) -> int:
    """Run a command added by :func:`add_bundle_commands`; raises LorunError subclasses on failure."""
    if not is_bundle_command(args):
        raise InvalidArgumentError(f"not a bundle command: {getattr(args, 'command', None)!r} (inspect needs a BUNDLE)")
    if args.command == "push":
        what = bundle.push_folder(
            args.folder, args.repo_id, path_in_repo=args.path_in_repo, revision=args.revision, tag=args.tag,
            private=args.private, commit_message=args.message, endpoint=args.endpoint,
        )
        print(f"pushed {args.folder} to {args.repo_id}/{args.path_in_repo or ''} ({getattr(what, 'commit_url', what)})")
    elif args.command == "pull":
        local = bundle.pull(args.repo_id, subfolder=args.subfolder, revision=args.revision, endpoint=args.endpoint)
        if args.to is not None:
            local = bundle.copy_bundle(local, args.to)
        print(bundle.inspect(local))
        print(f"\nbundle at {local}")
    else:
        print(bundle.inspect(args.bundle, subfolder=args.subfolder, revision=args.revision, base=args.base, endpoint=args.endpoint))
    sys.stdout.flush()
    return 0


# ==================================================================================== run
COMMANDS = {"train": cmd_train, "eval": cmd_eval, "restore": cmd_restore, "measure": cmd_measure, "export": cmd_export,
            "inspect": cmd_inspect, "plot": cmd_plot, "convert": cmd_convert, "data": cmd_data}


def run(args: argparse.Namespace) -> None:
    """Run the parsed command ``args``; raises LorunError subclasses (and FileNotFoundError) on failure."""
    named_data(args)  # --data set5: the folder of the test set's images
    if args.command == "push" and (run_model_folder(args.folder) / NETWORK_CONFIG).is_file():
        args.folder = run_model_folder(args.folder)  # a `lorun train --out` folder: push its network
    if args.command == "push" and zoo.is_zoo(args.folder):  # the whole zoo folder, unchanged
        what = zoo.push(args.repo_id, args.folder, path_in_repo=args.path_in_repo, revision=args.revision, tag=args.tag,
                        private=args.private, commit_message=args.message, endpoint=args.endpoint)
        print(f"pushed the zoo {args.folder} to {args.repo_id}/{args.path_in_repo or ''} ({getattr(what, 'commit_url', what)})")
    elif is_bundle_command(args):
        run_bundle_command(args)
    else:
        COMMANDS[args.command](args)
