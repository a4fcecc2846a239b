"""Plug deepinv in, unwrapped: a deepinv physics as the operator, a deepinv DnCNN as the base denoiser.

Any object with deepinv's ``A`` / ``A_adjoint`` (and optionally ``prox_l2``) is an operator, and any
``torch.nn.Module`` is a denoiser; with ``noise_level=True`` it is called as ``D(z, sigma)``, deepinv's
convention. Here: Gaussian blur + x2 downsampling (``--physics blur``: deblurring), HQS with
deepinv's own closed-form ``prox_l2``, a small untrained DnCNN (``pretrained=None``: nothing is
downloaded), Block-1 then LoRun.

    pip install deepinv                              # the optional extra: pip install -e ".[deepinv]"
    python examples/plug_deepinv.py                  # under a minute on one CPU thread
    python examples/plug_deepinv.py --physics blur --steps 300
"""

from __future__ import annotations

import argparse
import time

import torch

import lorun_peft
from lorun_peft.data import synthetic_images

SIZE = 32  # deepinv physics are built for one image size


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description="A deepinv physics and DnCNN inside a LoRun network.")
    parser.add_argument("--steps", type=int, default=200, help="training steps per phase (default 200)")
    parser.add_argument("--K", type=int, default=5, help="stages (default 5)")
    parser.add_argument("--physics", choices=["downsampling", "blur"], default="downsampling",
                        help="deepinv.physics.Downsampling (gaussian filter, x2) or BlurFFT (gaussian kernel, sigma 1.5)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    try:
        import deepinv as dinv
    except ImportError:
        raise SystemExit("plug_deepinv.py needs deepinv: pip install deepinv  (or pip install -e \".[deepinv]\")") from None
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    if args.physics == "downsampling":
        physics = dinv.physics.Downsampling(img_size=(1, SIZE, SIZE), filter="gaussian", factor=2)
    else:
        physics = dinv.physics.BlurFFT(img_size=(1, SIZE, SIZE), filter=dinv.physics.blur.gaussian_blur(sigma=1.5))
    dncnn = dinv.models.DnCNN(in_channels=1, out_channels=1, pretrained=None, depth=5, nf=16)
    net = lorun_peft.unfold(dncnn, physics, K=args.K, algorithm="hqs", share="base", noise_level=True)

    train_images = synthetic_images(64, size=SIZE, seed=0)
    test_images = synthetic_images(4, size=SIZE, seed=1)
    start = time.perf_counter()
    result = lorun_peft.train_two_phase(net, train_images, steps=args.steps, lr=2e-3, batch_size=8, phases=lorun_peft.training.recipe.PAPER,
                                        test_data=test_images, progress=False)
    block1, lorun = result.backbone_evaluation.mean(), result.evaluation.mean()
    print(f"deepinv {type(physics).__name__} + DnCNN, HQS, {args.steps} steps per phase, {time.perf_counter() - start:.0f} s")
    print(f"PSNR on {len(test_images)} test images: A^T y {lorun['x0_psnr']:.2f} dB, "
          f"Block-1 {block1['psnr']:.2f} dB, LoRun-{args.K} {lorun['psnr']:.2f} dB")
    report = net.parameter_report()
    print(f"LoRun-{args.K}: {report.total:,} parameters, {report.fraction_of_block_k:.0%} of Block-{args.K}'s {report.block_k:,}")
    return {"x0_psnr": lorun["x0_psnr"], "block1_psnr": block1["psnr"], "psnr": lorun["psnr"]}


if __name__ == "__main__":
    main()
