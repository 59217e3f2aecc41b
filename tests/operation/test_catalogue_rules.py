"""One row per rule of the operator catalogue: a tiny model calling the operator, traced, and the index-space
relation the rule must declare between the call's inputs, parameters and outputs.

A rule added to the catalogue without a row here fails :func:`test_every_catalogue_rule_has_a_row`.
"""

from typing import Callable, NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from only_train_once import OTO
from only_train_once.dependency_graph.analysis import SpaceAnalysis
from only_train_once.operation import catalogue
from only_train_once.quantization.quantizer import fake_quantize


class Lambda(nn.Module):
    """A model whose forward is ``fn(self, *inputs)``; ``parameters`` become its parameters by name."""

    def __init__(self, fn, **parameters):
        super().__init__()
        self.fn = fn
        for name, value in parameters.items():
            setattr(self, name, value)

    def forward(self, *inputs):
        return self.fn(self, *inputs)


class Traced:
    """The analysis of one traced call: ``root(value, axis)`` is the union-find root of that axis's space."""

    def __init__(self, model: nn.Module, dummy_input, call_name: str):
        self.graph = OTO(model.eval(), dummy_input).graph
        self.analysis = self.graph.analysis
        self.spaces = self.analysis.spaces
        self.node = next(n for n in self.graph.nodes.values() if n.call.name == call_name)

    def root(self, value_id: str, axis: int):
        return self.spaces.find(self.analysis.axes(value_id)[axis])

    def arg(self, index: int, name: str) -> str:
        return self.node.value_arg(index, name)

    def tensor(self, position: int) -> str:
        return self.node.tensor_args[position]

    @property
    def out(self) -> str:
        return self.node.outputs[0]

    def same(self, a, b) -> bool:
        return self.spaces.find(a) is self.spaces.find(b)

    def flat(self, value_id: str, axis: int):
        return [self.spaces.find(f) for f in self.spaces.flat_factors(self.root(value_id, axis))]

    def segments(self, value_id: str, axis: int):
        return [self.spaces.find(s) for s in self.root(value_id, axis).segments]

    def pinned(self, value_id: str, axis: int) -> bool:
        return self.root(value_id, axis).pinned


class Row(NamedTuple):
    rule: str
    call_name: str
    model: Callable[[], nn.Module]
    dummy_input: Callable[[], object]
    relation: Callable[[Traced], bool]


def conv_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))


def image(channels=4):
    return lambda: torch.randn(2, channels, 6, 6)


def tokens(*shape):
    return lambda: torch.randn(*shape)


def param(*shape):
    return nn.Parameter(torch.randn(*shape))


def _first_conv_input(t):
    return t.root(t.arg(0, "input"), 1)


ROWS = [
    Row("conv", "conv2d", lambda: Lambda(lambda m, x: m.b(m.a(x)), a=nn.Conv2d(3, 4, 3), b=nn.Conv2d(4, 2, 1)),
        image(3),
        lambda t: t.same(t.root(t.out, 1), t.root(t.arg(1, "weight"), 0))
        and t.same(t.root(t.arg(2, "bias"), 0), t.root(t.arg(1, "weight"), 0))
        and t.same(_first_conv_input(t), t.root(t.arg(1, "weight"), 1))),
    Row("conv_transpose", "conv_transpose2d",
        lambda: Lambda(lambda m, x: m.b(m.a(x)), a=nn.ConvTranspose2d(3, 4, 3), b=nn.Conv2d(4, 2, 1)), image(3),
        lambda t: t.same(t.root(t.out, 1), t.root(t.arg(1, "weight"), 1))
        and t.same(t.root(t.arg(0, "input"), 1), t.root(t.arg(1, "weight"), 0))),
    Row("linear", "linear", lambda: Lambda(lambda m, x: m.b(m.a(x)), a=nn.Linear(3, 5), b=nn.Linear(5, 2)),
        tokens(2, 3),
        lambda t: t.same(t.root(t.out, -1), t.root(t.arg(1, "weight"), 0))
        and t.same(t.root(t.arg(0, "input"), -1), t.root(t.arg(1, "weight"), 1))),
    Row("matmul", "matmul", lambda: Lambda(lambda m, x: torch.matmul(x, m.w), w=param(4, 5)), tokens(2, 3, 4),
        lambda t: t.same(t.root(t.out, -1), t.root(t.tensor(1), -1))
        and t.same(t.root(t.tensor(0), -1), t.root(t.tensor(1), 0))
        and t.same(t.root(t.out, 1), t.root(t.tensor(0), 1))),
    Row("einsum", "einsum", lambda: Lambda(lambda m, x: torch.einsum("bij,jk->bik", x, m.w), w=param(4, 5)),
        tokens(2, 3, 4),
        lambda t: t.same(t.root(t.out, 2), t.root(t.tensor(1), 1)) and t.same(t.root(t.tensor(0), 2),
                                                                               t.root(t.tensor(1), 0))),
    Row("matvec", "mv", lambda: Lambda(lambda m, x: torch.mv(m.w, x), w=param(5, 4)), tokens(4),
        lambda t: t.same(t.root(t.tensor(0), 1), t.root(t.tensor(1), 0))
        and t.same(t.root(t.out, 0), t.root(t.tensor(0), 0))),
    Row("batch_norm", "batch_norm", lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), image(3),
        lambda t: all(t.same(t.root(t.arg(i, n), 0), t.root(t.arg(0, "input"), 1))
                      for i, n in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")))
        and t.same(t.root(t.out, 1), t.root(t.arg(0, "input"), 1))),
    Row("group_norm", "group_norm", lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4)), image(3),
        lambda t: [f.size for f in t.flat(t.arg(0, "input"), 1)] == [2, 2] and t.flat(t.arg(0, "input"), 1)[1].pinned
        and t.same(t.root(t.arg(2, "weight"), 0), t.root(t.arg(0, "input"), 1))),
    Row("layer_norm", "layer_norm", lambda: nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)), tokens(2, 3),
        lambda t: t.same(t.root(t.arg(2, "weight"), 0), t.root(t.arg(0, "input"), -1))
        and t.pinned(t.arg(0, "input"), -1)),
    Row("embedding", "embedding", lambda: nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2)),
        lambda: torch.tensor([[1, 2, 3]]),
        lambda t: t.same(t.root(t.out, -1), t.root(t.arg(1, "weight"), 1)) and t.pinned(t.arg(1, "weight"), 0)),
    Row("prelu", "prelu", lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.PReLU(4)), image(3),
        lambda t: t.same(t.root(t.arg(1, "weight"), 0), t.root(t.arg(0, "input"), 1))),
    Row("passthrough", "relu", conv_net, image(3),
        lambda t: all(t.same(t.root(t.out, k), t.root(t.arg(0, "input"), k)) for k in range(4))),
    Row("cast_like", "type_as", lambda: Lambda(lambda m, x: m.conv(x).type_as(x), conv=nn.Conv2d(3, 4, 1)), image(3),
        lambda t: all(t.same(t.root(t.out, k), t.root(t.arg(0, "input"), k)) for k in range(4))),
    Row("broadcast", "add", lambda: Lambda(lambda m, x: torch.add(m.fc(x), m.b), fc=nn.Linear(3, 4), b=param(4)),
        tokens(2, 3),
        lambda t: t.same(t.root(t.out, 1), t.root(t.tensor(0), 1)) and t.same(t.root(t.tensor(1), 0),
                                                                               t.root(t.tensor(0), 1))),
    Row("reshape", "view", lambda: Lambda(lambda m, x: m.fc(x).view(2, 3, 4), fc=nn.Linear(3, 12)), tokens(2, 3),
        lambda t: t.flat(t.arg(0, "input"), 1) == [t.root(t.out, 1), t.root(t.out, 2)]),
    Row("permute", "transpose", lambda: Lambda(lambda m, x: m.fc(x).transpose(1, 2), fc=nn.Linear(3, 4)),
        tokens(2, 5, 3),
        lambda t: t.same(t.root(t.out, 1), t.root(t.arg(0, "input"), 2))
        and t.same(t.root(t.out, 2), t.root(t.arg(0, "input"), 1))),
    Row("concat", "cat", lambda: Lambda(lambda m, x: torch.cat([m.a(x), m.b(x)], 1), a=nn.Conv2d(3, 2, 1),
                                        b=nn.Conv2d(3, 4, 1)), image(3),
        lambda t: t.segments(t.out, 1) == [t.root(t.tensor(0), 1), t.root(t.tensor(1), 1)]
        and t.same(t.root(t.out, 2), t.root(t.tensor(0), 2))),
    Row("stack", "stack", lambda: Lambda(lambda m, x: torch.stack([m.a(x), m.b(x)], 1), a=nn.Linear(3, 4),
                                         b=nn.Linear(3, 4)), tokens(2, 3),
        lambda t: t.same(t.root(t.tensor(0), 1), t.root(t.tensor(1), 1)) and t.root(t.out, 1).size == 2
        and t.pinned(t.out, 1) and t.same(t.root(t.out, 2), t.root(t.tensor(0), 1))),
    Row("split", "split", lambda: Lambda(lambda m, x: [p.sum(1) for p in m.fc(x).split([1, 3], 1)],
                                         fc=nn.Linear(3, 4)), tokens(2, 3),
        lambda t: t.segments(t.arg(0, "input"), 1) == [t.root(o, 1) for o in t.node.outputs]),
    Row("unbind", "unbind", lambda: Lambda(lambda m, x: m.fc(x).unbind(1)[0], fc=nn.Linear(3, 4)), tokens(2, 5, 3),
        lambda t: t.pinned(t.arg(0, "input"), 1) and t.same(t.root(t.out, 1), t.root(t.arg(0, "input"), 2))),
    Row("getitem", "__getitem__", lambda: Lambda(lambda m, x: m.fc(x)[..., 0, :], fc=nn.Linear(3, 4)),
        tokens(2, 5, 3),
        lambda t: t.pinned(t.arg(0, "input"), 1) and t.same(t.root(t.out, 1), t.root(t.arg(0, "input"), 2))
        and t.same(t.root(t.out, 0), t.root(t.arg(0, "input"), 0))),
    Row("setitem", "__setitem__", lambda: Lambda(_write_first_column, fc=nn.Linear(3, 4)), tokens(2, 3),
        lambda t: t.pinned(t.arg(0, "input"), 1) and t.same(t.root(t.out, 1), t.root(t.arg(0, "input"), 1))),
    Row("select", "select", lambda: Lambda(lambda m, x: m.fc(x).select(1, 0), fc=nn.Linear(3, 4)), tokens(2, 5, 3),
        lambda t: t.pinned(t.arg(0, "input"), 1) and t.same(t.root(t.out, 1), t.root(t.arg(0, "input"), 2))),
    Row("narrow", "narrow", lambda: Lambda(lambda m, x: m.fc(x).narrow(1, 0, 2), fc=nn.Linear(3, 4)), tokens(2, 3),
        lambda t: t.pinned(t.arg(0, "input"), 1) and t.root(t.out, 1).size == 2
        and t.same(t.root(t.out, 0), t.root(t.arg(0, "input"), 0))),
    Row("view_write", "write_through_view", lambda: Lambda(_scale_a_view, fc=nn.Linear(3, 4)), tokens(2, 3),
        lambda t: all(t.same(t.root(t.out, k), t.root(t.arg(0, "base"), k)) for k in range(2))),
    Row("expand", "expand", lambda: Lambda(lambda m, x: m.fc(x).unsqueeze(1).expand(2, 5, 4), fc=nn.Linear(3, 4)),
        tokens(2, 3),
        lambda t: t.same(t.root(t.out, 2), t.root(t.arg(0, "input"), 2)) and t.pinned(t.out, 1)),
    Row("repeat", "repeat", lambda: Lambda(lambda m, x: m.fc(x).repeat(1, 2), fc=nn.Linear(3, 4)), tokens(2, 3),
        lambda t: t.flat(t.out, 1)[1] is t.root(t.arg(0, "input"), 1) and t.flat(t.out, 1)[0].size == 2),
    Row("pool", "max_pool2d", lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.MaxPool2d(2)), image(3),
        lambda t: t.same(t.root(t.out, 1), t.root(t.arg(0, "input"), 1)) and t.pinned(t.arg(0, "input"), 2)),
    Row("pad", "pad", lambda: Lambda(lambda m, x: F.pad(m.conv(x), (1, 1)), conv=nn.Conv2d(3, 4, 1)), image(3),
        lambda t: t.same(t.root(t.out, 1), t.root(t.arg(0, "input"), 1)) and t.pinned(t.arg(0, "input"), 3)),
    Row("reduction", "mean", lambda: Lambda(lambda m, x: m.conv(x).mean(-1), conv=nn.Conv2d(3, 4, 1)), image(3),
        lambda t: t.same(t.root(t.out, 1), t.root(t.arg(0, "input"), 1)) and t.pinned(t.arg(0, "input"), 3)),
    Row("along_axis", "softmax", lambda: Lambda(lambda m, x: m.fc(x).softmax(-1), fc=nn.Linear(3, 4)), tokens(2, 3),
        lambda t: t.same(t.root(t.out, 0), t.root(t.arg(0, "input"), 0)) and t.pinned(t.arg(0, "input"), 1)),
    Row("normalize", "normalize", lambda: Lambda(lambda m, x: F.normalize(m.fc(x), dim=1), fc=nn.Linear(3, 4)),
        tokens(2, 3),
        lambda t: t.same(t.root(t.out, 1), t.root(t.arg(0, "input"), 1))),
    Row("pixel_shuffle", "pixel_shuffle", lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.PixelShuffle(2)), image(3),
        lambda t: t.pinned(t.arg(0, "input"), 1) and t.same(t.root(t.out, 0), t.root(t.arg(0, "input"), 0))),
    Row("sdpa", "scaled_dot_product_attention",
        lambda: Lambda(lambda m, q, k, v: F.scaled_dot_product_attention(m.q(q), m.k(k), m.v(v)),
                       q=nn.Linear(4, 4), k=nn.Linear(4, 4), v=nn.Linear(4, 6)),
        lambda: (torch.randn(1, 2, 3, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)),
        lambda t: t.same(t.root(t.arg(0, "query"), 1), t.root(t.arg(1, "key"), 1))
        and t.same(t.root(t.arg(1, "key"), 1), t.root(t.arg(2, "value"), 1))
        and t.same(t.root(t.arg(1, "key"), 2), t.root(t.arg(2, "value"), 2))
        and t.same(t.root(t.out, -1), t.root(t.arg(2, "value"), -1))),
    Row("multi_head_attention", "multi_head_attention_forward",
        lambda: Lambda(lambda m, x: m.attn(x, x, x, need_weights=False)[0], attn=nn.MultiheadAttention(8, 2)),
        tokens(3, 1, 8), lambda t: _heads_shared(t)),
    Row("factory", "new_ones", lambda: Lambda(_add_new_ones, fc=nn.Linear(3, 4), out=nn.Linear(4, 2)), tokens(2, 3),
        lambda t: t.pinned(t.out, 1) and f"{t.node.op_name} argument" in t.spaces.reasons(t.root(t.tensor(0), 1))),
    Row("zeros_factory", "zeros", lambda: Lambda(_add_zeros_sized_from, fc=nn.Linear(3, 4), out=nn.Linear(4, 2)),
        tokens(2, 3), lambda t: _zeros_follow_the_axis_they_are_sized_from(t)),
    Row("like_factory", "zeros_like", lambda: Lambda(_zeros_beside, fc=nn.Linear(3, 4), out=nn.Linear(4, 2)),
        tokens(2, 3),
        lambda t: t.same(t.root(t.out, 1), t.root(t.arg(0, "input"), 1))),
    Row("quantize", "fake_quantize",
        lambda: Lambda(lambda m, x: fake_quantize(m.fc(x), m.d, m.q_m), fc=nn.Linear(3, 4),
                       d=nn.Parameter(torch.tensor([0.1])), q_m=nn.Parameter(torch.tensor([4.0]))), tokens(2, 3),
        lambda t: all(t.same(t.root(t.out, k), t.root(t.arg(0, "x"), k)) for k in range(2))),
]


def _write_first_column(module, x):
    y = module.fc(x)
    y[:, 0] = 0.0
    return y


def _scale_a_view(module, x):
    y = module.fc(x).clone()
    y.view(2, 2, 2).mul_(2.0)
    return y


def _add_new_ones(module, x):
    y = module.fc(x)
    return module.out(y + y.new_ones(2, 4))


def _add_zeros_sized_from(module, x):
    y = module.fc(x)
    return module.out(y + torch.zeros(2, y.shape[1]))


def _zeros_follow_the_axis_they_are_sized_from(t):
    """The axis sized from ``y.shape[1]`` is ``y``'s channel space; the literal 2 is a fixed, pinned axis."""
    linear = next(n for n in t.graph.nodes.values() if n.call.name == "linear")
    return t.same(t.root(t.out, 1), t.root(linear.outputs[0], 1)) and not t.pinned(t.out, 1) and t.pinned(t.out, 0)


def _zeros_beside(module, x):
    """The zeros are returned on their own: only the rule relates their axes to ``y``'s."""
    y = module.fc(x)
    return module.out(y), torch.zeros_like(y)


def _heads_shared(t):
    """The in-projection's rows are [q | k | v], each rows = heads x head_dim; q, k and v share their heads."""
    q_rows, k_rows, v_rows = t.segments(t.arg(5, "in_proj_weight"), 0)
    heads = [t.spaces.find(t.spaces.flat_factors(rows)[0]) for rows in (q_rows, k_rows, v_rows)]
    return heads[0] is heads[1] is heads[2] and heads[0].size == 2 \
        and t.same(t.root(t.arg(11, "out_proj_weight"), 1), v_rows)


@pytest.mark.parametrize("row", ROWS, ids=[row.rule for row in ROWS])
def test_each_catalogue_rule_declares_its_index_space_relation(row):
    traced = Traced(row.model(), row.dummy_input(), row.call_name)
    assert catalogue.lookup(row.call_name).propagate.__name__ == row.rule
    assert traced.node.id not in {u.node_id for u in traced.analysis.unknown_operators}
    assert row.relation(traced)


def test_every_catalogue_rule_has_a_row():
    # Rules registered from elsewhere (operation/thirdparty.py, users) have their own tests.
    rules = {kind.propagate.__name__ for kind in catalogue.OP_KINDS.values()
             if kind.propagate.__module__ == catalogue.__name__}
    assert rules == {row.rule for row in ROWS}


def _rerun_rules_on_blank_nodes(graph):
    """Every rule run again on a fresh analysis, on nodes whose recorded findings were cleared (``op_name`` set to
    ``"unset"``); returns each node's findings and the nodes' attributes afterwards."""
    context = SpaceAnalysis(graph)
    findings, after = {}, {}
    for node in graph.nodes.values():
        if node.op_kind is None:
            continue
        node.cfg_params, node.op_name = {}, "unset"
        try:
            findings[node.id] = node.op_kind.propagate(context, node)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError):
            continue
        after[node.id] = (node.cfg_params, node.op_name)
    return findings, after


def _comparable(cfg_params):
    # einsum's contracted spaces belong to one analysis: compare which were found, not the objects
    return {k: (len(v) if k == "einsum_contracted" else v) for k, v in cfg_params.items()}


@pytest.mark.parametrize("row", ROWS, ids=[row.rule for row in ROWS])
def test_each_rule_returns_its_findings_and_the_pass_records_them(row):
    traced = Traced(row.model(), row.dummy_input(), row.call_name)
    recorded = {n.id: (_comparable(n.cfg_params), n.op_name) for n in traced.graph.nodes.values()}
    findings, after = _rerun_rules_on_blank_nodes(traced.graph)
    assert traced.node.id in findings
    for node_id, attributes in after.items():
        assert attributes == ({}, "unset"), f"the {traced.graph.nodes[node_id].op_kind.propagate.__name__} rule " \
                                            "wrote its node"
        found = findings[node_id]
        cfg_params, op_name = recorded[node_id]
        assert cfg_params == (_comparable(found.cfg_params) if found else {})
        if found is not None and found.op_name is not None:
            assert op_name == found.op_name


def test_an_adaptive_pool_to_one_pixel_is_recorded_as_a_global_pool():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1))
    traced = Traced(model, image(3)(), "adaptive_avg_pool2d")
    assert traced.node.op_name == "globalaveragepool"
    found = traced.node.op_kind.propagate(SpaceAnalysis(traced.graph), traced.node)
    assert found.op_name == "globalaveragepool"
