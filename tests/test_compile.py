"""torch.compile on K = 9 networks: one graph for the whole stage loop, no graph break, no
recompilation per stage; at inference one traced denoiser body serves every stage (issue #12).

Checked with counts, not timings: a backend that records the graphs dynamo hands it (and runs
them as traced, or through AOT autograd), dynamo's own counters, and ``fail_on_recompile_limit_hit``.
At inference a stage's denoiser call is a nested compile region
(``torch.ops.higher_order.invoke_subgraph``): one subgraph called K times means one body compiled
for all stages. Training graphs unroll the stages instead (inductor in torch 2.14.1 computes wrong
gradients through a reused region; see ``sharing.call_stage``), still one graph with the stage
index a constant, never a guard.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch import fx, nn
from torch._dynamo.backends.registry import lookup_backend
from torch._dynamo.utils import counters

import lorun_peft
from lorun_peft.adapters.stages import StageAdapters
from lorun_peft.operators import CASSI, BlockCS, BlurDownsample
from lorun_peft.adapters.sharing import call_stage

K = 9


class SmallDenoiser(nn.Module):
    """conv-relu-conv with a residual; with ``sigma`` it also takes a per-sample noise level."""

    def __init__(self, channels: int = 1, sigma: bool = False) -> None:
        super().__init__()
        self.head, self.tail, self.sigma = nn.Conv2d(channels, 4, 3, padding=1), nn.Conv2d(4, channels, 3, padding=1), sigma

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.relu(self.head(x))
        if self.sigma:
            h = h * (1 + sigma.view(-1, 1, 1, 1))
        return x + self.tail(h)


class GraphCounter:
    """A dynamo backend that keeps every graph it is given, then runs it as traced (or with ``then``)."""

    def __init__(self, then: str | None = None) -> None:
        self.graphs: list[fx.GraphModule] = []
        self.then = then

    def __call__(self, gm: fx.GraphModule, example_inputs: list) -> object:
        self.graphs.append(gm)
        return lookup_backend(self.then)(gm, example_inputs) if self.then else gm.forward

    def stage_calls(self, graph: fx.GraphModule) -> list[str]:
        """The subgraph each invoke_subgraph call in ``graph`` (and the bodies nested in it) runs."""
        return [
            node.args[1]
            for module in graph.modules() if isinstance(module, fx.GraphModule)
            for node in module.graph.nodes if node.target is torch.ops.higher_order.invoke_subgraph
        ]


@pytest.fixture
def dynamo():
    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        yield
    torch._dynamo.reset()


def operator(name: str) -> tuple[nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if name == "cs":
        return BlockCS(0.25, block=8), torch.rand(2, 1, 16, 16, generator=g)
    if name == "sr":
        return BlurDownsample(torch.rand(3, 3, generator=g), scale=2), torch.rand(2, 1, 16, 16, generator=g)
    return CASSI(torch.rand(16, 16, generator=g), step=2, bands=4), torch.rand(2, 4, 16, 16, generator=g)


def network(op_name: str, algorithm: str, share: str, adapter: str = "lora", sigma: bool = False, K: int = K, **options):  # noqa: N803
    torch.manual_seed(0)
    op, x = operator(op_name)
    init = {"init_lora_weights": False} if adapter in ("lora", "dora") else {"init_weights": False}  # every factor nonzero
    net = lorun_peft.unfold(SmallDenoiser(x.shape[1], sigma), op, K=K, algorithm=algorithm, share=share, adapter=adapter,
                            noise_level=sigma, adapter_options=init if share == "lora" else {}, **options)
    return net, op.A(x).detach()


def train_pass(model: nn.Module, net: nn.Module, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output and every trainable parameter's gradient of one training step."""
    net.train().zero_grad()
    out = model(y)
    out.square().mean().backward()
    return out.detach(), [p.grad.clone() for p in net.parameters() if p.requires_grad]


def assert_same(compiled: tuple, eager: tuple) -> None:
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-4, atol=1e-4)
    assert len(compiled[1]) == len(eager[1]) > 0
    for a, b in zip(compiled[1], eager[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def assert_graphs(counter: GraphCounter, region_calls: list[int]) -> None:
    """One graph per entry, graph i running ``region_calls[i]`` stage calls of ONE denoiser subgraph
    (0: training, the stages unrolled); no graph break, no recompilation."""
    assert len(counter.graphs) == len(region_calls) == counters["stats"]["unique_graphs"]
    for graph, expected in zip(counter.graphs, region_calls):
        calls = counter.stage_calls(graph)
        assert len(calls) == expected and len(set(calls)) == min(expected, 1), calls
    assert not counters["graph_break"], list(counters["graph_break"])


CASES = [  # every operator with both algorithms and in both modes; every sharing mode in both modes
    # cs, pgd, lora, train (with a noise-level input): test_train_steps_reuse_the_graph_and_eval_after_train_...
    ("cs", "hqs", "lora", "eval"),
    ("cs", "hqs", "base", "train"),
    ("sr", "hqs", "lora", "train"),
    ("sr", "pgd", "base", "eval"),
    ("sr", "hqs", "none", "eval"),
    ("cassi", "hqs", "none", "train"),
    ("cassi", "pgd", "lora", "eval"),
]


@pytest.mark.parametrize("op_name,algorithm,share,mode", CASES)
def test_one_graph_for_all_stages_and_one_denoiser_body_at_inference(dynamo, op_name, algorithm, share, mode):
    net, y = network(op_name, algorithm, share)
    counter = GraphCounter()
    compiled = torch.compile(net, backend=counter)
    if mode == "train":
        assert_same(train_pass(compiled, net, y), train_pass(net, net, y))
    else:
        net.eval()
        if op_name == "cassi":
            net.inference = "peft"  # LoRun eval through the adapter branches instead of merged weights
        with torch.no_grad():
            expected = net(y)
            torch.testing.assert_close(compiled(y), expected, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(compiled(y), expected, rtol=1e-4, atol=1e-4)  # reused, not recompiled
    assert_graphs(counter, [0 if mode == "train" else K])


def test_train_steps_reuse_the_graph_and_eval_after_train_compiles_its_own(dynamo):
    """The issue's sequence: train, train again (no recompile), then eval (one new graph, not 0)."""
    net, y = network("cs", "pgd", "lora", sigma=True)
    counter = GraphCounter()
    compiled = torch.compile(net, backend=counter)
    eager = train_pass(net, net, y)
    assert_same(train_pass(compiled, net, y), eager)
    assert_same(train_pass(compiled, net, y), eager)
    assert_graphs(counter, [0])
    with torch.no_grad():
        torch.testing.assert_close(compiled.eval()(y), net(y), rtol=1e-4, atol=1e-4)
    assert_graphs(counter, [0, K])


def test_gradients_through_aot_autograd_equal_eager(dynamo):
    """AOT autograd (inductor's front end) differentiates the stage loop, stage k's adapter tensors
    swapped into stage_0's slots: the eager gradients."""
    net, y = network("sr", "pgd", "lora", K=3)
    counter = GraphCounter(then="aot_eager")
    assert_same(train_pass(torch.compile(net, backend=counter), net, y), train_pass(net, net, y))
    assert_graphs(counter, [0])


def test_checkpointed_training_compiles_one_graph(dynamo):
    net, y = network("cs", "pgd", "lora", K=3, checkpoint=True)
    counter = GraphCounter()
    assert_same(train_pass(torch.compile(net, backend=counter), net, y), train_pass(net, net, y))
    assert_graphs(counter, [0])


@pytest.mark.parametrize("adapter", ["loha", "lokr"])
def test_loha_lokr_training_compiles_through_merged_weights(dynamo, adapter):
    """PEFT's LoHa/LoKr training forward breaks the graph (``torch.rand(1) > module_dropout``);
    compiled, their stages run the merged weights W0 + delta_k instead: same numbers, one graph."""
    net, y = network("sr", "hqs", "lora", adapter=adapter)
    counter = GraphCounter()
    assert_same(train_pass(torch.compile(net, backend=counter), net, y), train_pass(net, net, y))
    assert_graphs(counter, [0])


@pytest.mark.parametrize("adapter", ["loha", "lokr"])
def test_peft_loha_lokr_training_forward_breaks_the_graph(dynamo, adapter):
    """Pins the PEFT behaviour behind adapters.UNTRACEABLE_IN_TRAINING: if this starts failing,
    PEFT traces LoHa/LoKr training now and StageAdapters.forward can use its adapter path."""
    init = {"init_weights": False}
    stages = StageAdapters(SmallDenoiser(), K=2, gamma=50.0, adapter=adapter, options=init).train()
    explanation = torch._dynamo.explain(stages.model)(torch.rand(1, 1, 8, 8))
    assert explanation.graph_break_count > 0
    assert any("module_dropout" in str(reason) or "Data-dependent" in str(reason) for reason in explanation.break_reasons)


def test_stage_tensors_put_stage_k_in_stage_0_slots():
    """Pins the PEFT naming the compiled path relies on: an adapter's parameters carry its name
    as one dotted segment, so stage k's tensors under stage_0's names run stage k."""
    torch.manual_seed(0)
    stages = StageAdapters(SmallDenoiser(), K=3, gamma=50.0, options={"init_lora_weights": False})
    x = torch.rand(1, 1, 8, 8)
    for k in range(3):
        tensors = stages.stage_tensors(k)
        assert all(".stage_0." in name for name in tensors)
        assert {id(t) for t in tensors.values()} == {id(p) for p in stages.adapter_parameters(k)}
        stages.activate(0)
        torch.testing.assert_close(call_stage(stages.model, tensors, (x,)), stages(k, x))


def test_compile_stages_false_inlines_every_stage(dynamo):
    """The switch for denoisers that break the graph: no region, same outputs; to_lora keeps it."""
    net, y = network("cs", "pgd", "base", K=3)
    net.compile_stages = False
    net.to_lora()
    assert net.compile_stages is False
    counter = GraphCounter()
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(net.eval(), backend=counter)(y), net(y))
    assert len(counter.graphs) == 1 and not counter.stage_calls(counter.graphs[0])
