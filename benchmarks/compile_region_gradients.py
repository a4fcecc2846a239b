"""Does inductor get gradients right through a reused nested compile region? (torch 2.14.1 on CPU: no)

lorun_peft reuses one traced denoiser for all K stages only when gradients are off
(``sharing.call_stage``) because of this: a conv-relu-conv region called three times in a chain
gives the first convolution a wrong weight gradient under inductor, while aot_eager and the same
stages inlined are right. Rerun this on a newer torch; when the first line prints rounding-size errors, training
graphs can reuse the region too. ``python -m benchmarks.compile_region_gradients`` (~1 minute).
"""

from __future__ import annotations

import torch
from torch import nn


class Denoiser(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(torch.relu(self.a(x)))


def gradient_errors(backend: str, region: bool) -> list[float]:
    """Largest |compiled - eager| of every parameter's gradient after three unrolled PGD-like stages."""
    torch.manual_seed(0)
    denoiser, rho = Denoiser(), nn.Parameter(torch.tensor(0.5))
    params = [*denoiser.parameters(), rho]
    call = torch.compiler.nested_compile_region(lambda m, x: m(x)) if region else (lambda m, x: m(x))

    def unrolled(y: torch.Tensor) -> torch.Tensor:
        x = y
        for _ in range(3):
            x = call(denoiser, x - rho * (x - y))
        return x

    def gradients(fn) -> list[torch.Tensor]:
        for p in params:
            p.grad = None
        fn(y).square().mean().backward()
        return [p.grad.clone() for p in params]

    y = torch.rand(2, 1, 8, 8)
    eager = gradients(unrolled)
    torch._dynamo.reset()
    compiled = gradients(torch.compile(unrolled, backend=backend))
    return [float((c - e).abs().max()) for c, e in zip(compiled, eager)]


def main() -> None:
    print(f"torch {torch.__version__}: largest gradient error per parameter (a.weight, a.bias, b.weight, b.bias, rho)")
    for backend, region in (("inductor", True), ("inductor", False), ("aot_eager", True)):
        errors = ", ".join(f"{e:.2g}" for e in gradient_errors(backend, region))
        print(f"  {backend:<9} {'reused region' if region else 'inlined      '}: {errors}")


if __name__ == "__main__":
    main()
