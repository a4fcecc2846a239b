"""Block compressive sensing (the paper's CS): each B x B block measured by m rows of a sampling
matrix; a measurement is a vector per block, recorded with the matrix's fingerprint.

>>> import argparse
>>> op = CompressiveSensing().make_operator(argparse.Namespace(ratio=0.25, block=8, seed=0, learn_matrix=False,
...                                                             linear_estimate=False), channels=1)
>>> type(op).__name__, op.measurements
('BlockCS', 16)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from .base import Option, Task, register_task

__all__ = ["CompressiveSensing"]


@register_task
class CompressiveSensing(Task):
    name = "cs"
    summary = "block compressive sensing: m random or learned projections of every B x B block"
    operator_types = ("BlockCS",)
    measurement_is_image = False
    tiles = "measurement"
    options = (
        Option("--ratio", "sampling ratio in (0, 1] (default 0.25)", type=float, default=0.25),
        Option("--block", "block size in pixels (default 32)", type=int, default=32),
        Option("--linear-estimate", "start from the linear MMSE estimate x0 = Q y, Q fitted by least squares on the "
               "training images (default on; off: x0 = A^T y)", action=argparse.BooleanOptionalAction, default=True),
        Option("--learn-matrix", "train the sampling matrix with the network (default on, as the paper; off: a fixed "
               "matrix with orthonormal rows, as the zoo)", action=argparse.BooleanOptionalAction, default=True),
    )

    def make_operator(self, args: argparse.Namespace, channels: int) -> Any:
        from ..operators import BlockCS

        return BlockCS(args.ratio, block=args.block, channels=channels, seed=args.seed, learnable=args.learn_matrix,
                       init="gaussian" if args.learn_matrix else "orthogonal", linear_estimate=args.linear_estimate)

    def measurement_record(self, operator: Any) -> dict[str, Any]:
        import numpy as np

        from ..operators.sampling import row_fingerprints

        return {"sampling": np.array(operator.sampling_fingerprint), "rows": np.array(operator.measurements),
                "row_fingerprints": np.array(row_fingerprints(operator.phi))}

    def check_record(self, path: Path, contents: dict[str, Any], operator: Any) -> Any:
        """``y`` checked against the sampling it records: the model's own, or more rows of the same
        nested basis (its rows' fingerprints begin with the model's), of which the first m are kept;
        any other sampling is refused (restored with another matrix, the result would be garbage)."""
        from ..operators.sampling import row_fingerprints

        y = contents["y"]
        recorded = str(contents["sampling"]) if "sampling" in contents else None
        expected = operator.sampling_fingerprint
        if recorded is None or recorded == expected:
            return y
        rows = [str(r) for r in contents["row_fingerprints"]] if "row_fingerprints" in contents else []
        ours = row_fingerprints(operator.phi)
        m = len(ours)
        if len(rows) > m and rows[:m] == ours and y.ndim == 4 and y.shape[1] % len(rows) == 0:
            channels = y.shape[1] // len(rows)  # channel c's measurements are y[:, c*R:(c+1)*R]
            kept = y.reshape(y.shape[0], channels, len(rows), *y.shape[2:])[:, :, :m].reshape(y.shape[0], channels * m, *y.shape[2:])
            print(f"note: {path} holds {len(rows)} rows of a nested sampling basis whose first {m} are this model's: "
                  f"restoring with those {m}", flush=True)
            return kept
        raise InvalidArgumentError(
            f"measurement {path} was taken with sampling {recorded}, but this model expects sampling {expected} "
            "(`lorun inspect --model ...` names a model's sampling); restore it with the model it was measured for")

    def measurement_size(self, operator: Any, y: Any) -> tuple[int, int]:
        return y.shape[-2] * operator.block, y.shape[-1] * operator.block

    def describe(self, operator: Any) -> list[str]:
        return [f"sampling: {operator.sampling_fingerprint} ({operator.measurements} patterns of "
                f"{operator.block} x {operator.block} pixels)"]

    def size_multiple(self, operator: Any) -> tuple[int, str]:
        return operator.block, "block"

    def dynamic_axes(self, operator: Any, simulate: bool) -> tuple[str, str] | None:
        return None if simulate else ("rows", "cols")

    def export_metadata(self, operator: Any, simulate: bool) -> dict[str, str]:
        meta = {"sampling": operator.sampling_fingerprint}
        if not simulate:
            meta["image_size"] = f"any multiple of {operator.block}"
        return meta
