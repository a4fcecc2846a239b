"""Operator speed at the paper's sizes, batch 1: A, A^T and prox_l2 for BlockCS (1 x 256 x 256,
every ratio; prox_l2 with Phi fixed, its Gram matrices factored once per version of Phi, beside the
same call while Phi trains, when they are rebuilt and LU-solved every time), BlurDownsample (3 x 256 x 256, x2/x3/x4) and CASSI (28 x 256 x 256), and, side by
side, deepinv's CompressiveSpectralImaging on the same cube when deepinv is installed.

    python -m benchmarks.operators [--threads 1]
"""

from __future__ import annotations

import argparse

import torch

from lorun_peft.operators.kernels import kernel_bank
from lorun_peft.operators import CASSI, BlockCS, BlurDownsample

from .common import median_ms, save


def bench(op, x: torch.Tensor, repeats: int) -> dict[str, float]:
    with torch.no_grad():
        y = op.A(x)
        row = {
            "A_ms": median_ms(lambda: op.A(x), repeats),
            "At_ms": median_ms(lambda: op.A_adjoint(y), repeats),
            "prox_ms": median_ms(lambda: op.prox_l2(x, y, 0.5), repeats),
        }
    if isinstance(op, BlockCS):  # side by side: the Gram matrices rebuilt and LU-solved on every call,
        with torch.enable_grad():  # as they must be while Phi trains (the path every call took before)
            row["prox_rebuilt_ms"] = median_ms(lambda: op.prox_l2(x, y, 0.5), repeats)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    rows: dict[str, dict[str, float]] = {}
    gray = torch.rand(1, 1, 256, 256, generator=g)
    for ratio in (0.01, 0.04, 0.10, 0.25, 0.30, 0.40, 0.50):
        rows[f"BlockCS ratio {ratio:.2f} 1x256x256"] = bench(BlockCS(ratio, block=32), gray, args.repeats)
    rgb = torch.rand(1, 3, 256, 256, generator=g)
    for scale in (2, 3, 4):
        size = 256 - 256 % scale
        rows[f"BlurDownsample x{scale} 3x{size}x{size}"] = bench(
            BlurDownsample(kernel_bank()[0], scale), rgb[..., :size, :size], args.repeats
        )
    mask = torch.rand(256, 256, generator=g)
    cube = torch.rand(1, 28, 256, 256, generator=g)
    rows["CASSI 28x256x256 step 2"] = bench(CASSI(mask, step=2, bands=28), cube, args.repeats)
    try:
        import deepinv

        theirs = deepinv.physics.CompressiveSpectralImaging((28, 256, 256), mask=mask.expand(28, 256, 256).clone())
        with torch.no_grad():
            y = theirs.A(cube)
            rows["deepinv CompressiveSpectralImaging 28x256x256"] = {
                "A_ms": median_ms(lambda: theirs.A(cube), 3, 1),
                "At_ms": median_ms(lambda: theirs.A_adjoint(y), 3, 1),
            }
    except Exception as err:  # noqa: BLE001 - optional comparison
        print(f"(deepinv comparison skipped: {err})")
    width = max(len(name) for name in rows)
    print(f"{'operator':<{width}}  {'A ms':>8} {'A^T ms':>8} {'prox ms':>8} {'prox, Gram rebuilt ms':>22}")
    for name, r in rows.items():
        print(f"{name:<{width}}  {r['A_ms']:8.2f} {r['At_ms']:8.2f} {r.get('prox_ms', float('nan')):8.2f} "
              f"{r.get('prox_rebuilt_ms', float('nan')):22.2f}")
    print(f"saved {save('operators', {'rows': rows})}")


if __name__ == "__main__":
    main()
