"""Sparse mixture-of-experts layers (Hugging Face Mixtral, random init): each expert's hidden units are prunable,
experts are never mixed, the router keeps its expert count, and the compressed model has ragged experts.

The flattened (expert, row) pruning axis these rely on is tested on its own in
``tests/graph/test_pruning_axis.py``; the other Hugging Face families sharing the experts code are in the zoo.
"""

import copy
import logging

import numpy as np
import pytest
import torch

from only_train_once import OTO
from only_train_once.operation.experts import RaggedExperts
from only_train_once.subnet_construction import load_compressed_weights, load_model
from tests.compression_check import model_outputs, relative_error
from tests.thirdparty import import_or_skip

EXPERTS, HIDDEN, WIDTH = 4, 64, 32


@pytest.fixture(scope="module")
def transformers():
    return import_or_skip("transformers")


def mixtral(transformers):
    """A two-layer Mixtral, 4 experts of 64 hidden units, top-2 routing (the zoo's configuration)."""
    config = transformers.MixtralConfig(vocab_size=128, hidden_size=WIDTH, intermediate_size=HIDDEN,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                        num_local_experts=EXPERTS, num_experts_per_tok=2, max_position_embeddings=64,
                                        pad_token_id=0, use_cache=False)
    torch.manual_seed(0)
    return transformers.MixtralModel(config).eval()


def tokens(seed: int) -> dict:
    return {"input_ids": torch.randint(0, 128, (1, 12), generator=torch.Generator().manual_seed(seed))}


def experts_groups(oto):
    return [g for g in oto.groups if any(m.name.endswith("experts.gate_up_proj") for m in g.members)]


def prunable_parameters(oto, groups) -> int:
    return sum(m.tensor.numel() for g in groups if g.is_prunable for m in g.members if m.axis is not None)


def test_each_experts_hidden_units_are_prunable_and_far_outnumber_the_heads(transformers):
    model = mixtral(transformers)
    oto = OTO(model, tokens(0))
    groups = experts_groups(oto)
    assert len(groups) == 2 and all(g.is_prunable and g.num_groups == EXPERTS * HIDDEN for g in groups)
    (member,) = [m for m in groups[0].members if m.axis is not None]
    assert member.axis == (0, 1)  # (expert, row) pairs: the units of different experts are different indices
    keys, units = member.owners
    rows = units.reshape(EXPERTS, 2 * HIDDEN)
    assert (keys == groups[0].key).all()
    # gate row j and up row j of expert e are unit e * HIDDEN + j; no unit holds rows of two experts
    expected = np.arange(EXPERTS)[:, None] * HIDDEN + np.arange(2 * HIDDEN)[None, :] % HIDDEN
    assert np.array_equal(rows, expected)
    router = [g for g in oto.groups if any(m.name == "layers.0.mlp.gate.weight" for m in g.members)]
    assert not router[0].is_prunable  # the router keeps its expert count
    others = [g for g in oto.groups if g not in groups]
    heads_only = prunable_parameters(oto, others)
    assert heads_only > 0 and prunable_parameters(oto, oto.groups) > 5 * heads_only


def test_random_pruning_gives_a_smaller_model_with_ragged_experts_that_reloads(transformers, tmp_path):
    model = mixtral(transformers)
    oto = OTO(model, tokens(0))
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    oto.construct_subnet(out_dir=str(tmp_path))
    full, compressed = load_model(oto.full_group_sparse_model_path), load_model(oto.compressed_model_path)
    for seed in (0, 1, 2):
        assert relative_error(model_outputs(full, tokens(seed)), model_outputs(compressed, tokens(seed))) < 1e-4
    for layer in compressed.layers:
        experts = layer.mlp.experts
        assert isinstance(experts, RaggedExperts) and experts.num_experts == EXPERTS
        assert sum(experts.hidden_sizes) == EXPERTS * HIDDEN // 2  # half of the layer's units, real rows removed
        assert len(set(experts.hidden_sizes)) > 1  # experts kept different numbers of units
        assert experts.gate_up_proj.shape == (EXPERTS * HIDDEN, WIDTH)
        assert experts.down_proj.shape == (EXPERTS * HIDDEN // 2, WIDTH)
        assert layer.mlp.gate.weight.shape == (EXPERTS, WIDTH)
    assert sum(p.numel() for p in compressed.parameters()) < sum(p.numel() for p in full.parameters())


def test_zeroing_one_experts_unit_shrinks_only_that_expert(transformers, tmp_path):
    model = mixtral(transformers)
    oto = OTO(model, tokens(0))
    expert, unit = 2, 5
    experts = model.layers[0].mlp.experts
    with torch.no_grad():
        experts.gate_up_proj[expert, [unit, HIDDEN + unit]] = 0  # its gate row and its up row
        experts.gate_up_proj[expert + 1, unit] = 0  # a gate row alone: that unit stays nonzero, so it stays
    down_proj = experts.down_proj.detach().clone()
    reference = copy.deepcopy(model)
    oto.construct_subnet(out_dir=str(tmp_path), ckpt_format="safetensors")
    fresh = copy.deepcopy(mixtral(transformers))
    compressed = load_compressed_weights(fresh, oto.compressed_model_path)
    sizes = [HIDDEN] * EXPERTS
    sizes[expert] -= 1
    assert compressed.layers[0].mlp.experts.hidden_sizes == sizes
    assert type(compressed.layers[1].mlp.experts).__name__ == "MixtralExperts"  # nothing zeroed there
    kept = [j for j in range(HIDDEN) if j != unit]
    packed = compressed.layers[0].mlp.experts.down_proj.split(sizes)[expert]
    assert torch.equal(packed, down_proj[expert][:, kept].t())  # its down_proj columns
    for seed in (0, 1):
        assert relative_error(model_outputs(reference, tokens(seed)), model_outputs(compressed, tokens(seed))) < 1e-4


OPTIMIZERS = {
    "hesso": lambda oto: oto.hesso(lr=0.05, target_group_sparsity=0.5, start_pruning_step=0, pruning_steps=2,
                                   pruning_periods=1),
    "geta": lambda oto: oto.geta(variant="adam", lr=1e-3, lr_quant=1e-3, target_group_sparsity=0.5,
                                 start_projection_step=0, projection_steps=1, start_pruning_step=1, pruning_steps=2,
                                 pruning_periods=1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_the_optimizers_prune_expert_units_through_the_flattened_axis(transformers, tmp_path, name):
    model = mixtral(transformers)
    ids = tokens(0)["input_ids"]
    oto = OTO(model, {"input_ids": ids})
    optimizer = OPTIMIZERS[name](oto)
    model.train()
    for _ in range(4):
        optimizer.zero_grad()
        model(input_ids=ids).last_hidden_state.pow(2).mean().backward()
        optimizer.step()
    model.eval()
    gate_up = model.layers[0].mlp.experts.gate_up_proj.detach()
    zero_units = (gate_up.view(EXPERTS, 2, HIDDEN, WIDTH).abs().sum(dim=(1, 3)) == 0)
    assert zero_units.sum() > 0
    oto.construct_subnet(out_dir=str(tmp_path))
    compressed = load_model(oto.compressed_model_path)
    assert compressed.layers[0].mlp.experts.hidden_sizes == (HIDDEN - zero_units.sum(dim=1)).tolist()
    assert relative_error(model_outputs(model, tokens(3)), model_outputs(compressed, tokens(3))) < 1e-4


def test_ragged_experts_are_refused_as_a_hugging_face_directory_before_the_model_changes(transformers, tmp_path):
    from only_train_once.subnet_construction.huggingface import HuggingFaceExportError

    model = mixtral(transformers)
    oto = OTO(model, tokens(0))
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    with pytest.raises(HuggingFaceExportError, match="different numbers of hidden units"):
        oto.construct_subnet(out_dir=str(tmp_path), export_huggingface_format=True)
    assert model.layers[0].mlp.experts.gate_up_proj.shape == (EXPERTS, 2 * HIDDEN, WIDTH)


def test_weight_and_activation_conversion_says_the_experts_stay_float(transformers, caplog):
    from only_train_once.quantization.quant_model import model_to_quantize_model

    model = mixtral(transformers)
    with caplog.at_level(logging.WARNING, logger="only_train_once"):
        model_to_quantize_model(model, quant_mode="weight_and_activation")
    (message,) = [r.getMessage() for r in caplog.records if "mixture-of-experts" in r.getMessage()]
    assert "2 mixture-of-experts modules keep their expert weights and inputs in float" in message
    assert model.layers[0].mlp.experts.gate_up_proj.dtype == torch.float32
    assert not any("quant" in name for name, _ in model.layers[0].mlp.experts.named_parameters())


def test_a_compressed_model_is_read_again_and_its_ragged_experts_prune_further(transformers, tmp_path, caplog):
    model = mixtral(transformers)
    oto = OTO(model, tokens(0))
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    oto.construct_subnet(out_dir=str(tmp_path / "first"))
    first = list(model.layers[0].mlp.experts.hidden_sizes)
    with caplog.at_level(logging.WARNING, logger="only_train_once"):
        again = OTO(model, tokens(0))
    assert not [r for r in caplog.records if "not understood" in r.getMessage()]
    (group,) = [g for g in experts_groups(again) if "layers.0." in g.members[0].name]
    assert group.is_prunable and group.num_groups == sum(first)
    np.random.seed(1)
    again.random_set_zero_groups(0.5)
    reference = copy.deepcopy(model)  # the group-sparse model
    again.construct_subnet(out_dir=str(tmp_path / "second"))
    second = model.layers[0].mlp.experts.hidden_sizes
    assert all(b <= a for a, b in zip(first, second)) and sum(second) == sum(first) - sum(first) // 2
    for seed in (0, 1):
        assert relative_error(model_outputs(reference, tokens(seed)), model_outputs(model, tokens(seed))) < 1e-4


def test_a_restructuring_rule_needs_its_restore():
    from only_train_once import register_module

    with pytest.raises(ValueError, match="restructure and restore come together"):
        register_module("somewhere.Experts", lambda ctx, node: None, restructure=lambda module, kept: (module, {}))


def test_the_model_width_the_experts_read_and_write_is_pruned_with_its_layers(transformers, tmp_path):
    """Outside a residual stream (linear -> mixture of experts -> linear), the width is prunable: the producing
    layer's rows, the experts' input columns and output rows, and the router's columns go together."""
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    config = transformers.MixtralConfig(hidden_size=WIDTH, intermediate_size=16, num_local_experts=EXPERTS,
                                        num_experts_per_tok=2)
    config._experts_implementation = "grouped_mm"

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.moe = torch.nn.Linear(16, WIDTH), MixtralSparseMoeBlock(config)
            self.out = torch.nn.Linear(WIDTH, 8)

        def forward(self, x):
            return self.out(self.moe(self.inp(x)))

    torch.manual_seed(0)
    net = Net().eval()
    for parameter in net.moe.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    oto = OTO(net, torch.randn(1, 12, 16))
    (width,) = [g for g in oto.groups if "inp.weight" in g.param_names]
    assert width.is_prunable and width.num_groups == WIDTH and "moe.experts.down_proj" in width.param_names
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    reference = copy.deepcopy(net)
    oto.construct_subnet(out_dir=str(tmp_path))
    assert net.moe.experts.gate_up_proj.shape[-1] == net.moe.experts.down_proj.shape[-1] == WIDTH // 2
    assert net.moe.gate.weight.shape == (EXPERTS, WIDTH // 2) and net.out.weight.shape == (8, WIDTH // 2)
    fresh = torch.randn(1, 12, 16)
    with torch.no_grad():
        assert relative_error([reference(fresh)], [net(fresh)]) < 1e-4


class TinyExperts(torch.nn.Module):
    """A user's own experts module with the Hugging Face layout (no transformers needed)."""

    def __init__(self, experts: int, hidden: int, width: int):
        super().__init__()
        self.num_experts, self.intermediate_dim = experts, hidden
        self.gate_up_proj = torch.nn.Parameter(torch.randn(experts, 2 * hidden, width) * 0.3)
        self.down_proj = torch.nn.Parameter(torch.randn(experts, width, hidden) * 0.3)
        self.act_fn = torch.nn.SiLU()

    def forward(self, hidden_states, top_k_index, top_k_weights):
        output = torch.zeros_like(hidden_states)
        for expert in range(self.num_experts):
            tokens, slot = torch.where(top_k_index == expert)
            gate, up = torch.nn.functional.linear(hidden_states[tokens], self.gate_up_proj[expert]).chunk(2, dim=-1)
            routed = torch.nn.functional.linear(self.act_fn(gate) * up, self.down_proj[expert])
            output.index_add_(0, tokens, routed * top_k_weights[tokens, slot, None])
        return output


class TinyMoE(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.router = torch.nn.Linear(8, WIDTH), torch.nn.Linear(WIDTH, EXPERTS, bias=False)
        self.experts, self.out = TinyExperts(EXPERTS, 16, WIDTH), torch.nn.Linear(WIDTH, 4)

    def forward(self, x):
        hidden = self.inp(x)
        weights, index = torch.topk(self.router(hidden).softmax(dim=-1), 2, dim=-1)
        return self.out(hidden + self.experts(hidden, index, weights))


def test_a_users_experts_class_is_registered_by_its_path_and_compresses(tmp_path):
    from only_train_once.operation.experts import register_experts

    torch.manual_seed(0)
    before = OTO(TinyMoE().eval(), torch.randn(10, 8))
    # read op by op, a unit is at best hidden unit j of all experts at once
    assert not [g for g in before.groups if g.is_prunable and g.num_groups > 16]
    register_experts(f"{TinyExperts.__module__}.{TinyExperts.__qualname__}")
    model = TinyMoE().eval()
    oto = OTO(model, torch.randn(10, 8))
    (group,) = [g for g in oto.groups if "experts.gate_up_proj" in g.param_names]
    assert group.is_prunable and group.num_groups == EXPERTS * 16
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    reference = copy.deepcopy(model)
    oto.construct_subnet(out_dir=str(tmp_path))
    assert isinstance(model.experts, RaggedExperts) and sum(model.experts.hidden_sizes) == EXPERTS * 8
    fresh = torch.randn(10, 8)
    with torch.no_grad():
        assert relative_error([reference(fresh)], [model(fresh)]) < 1e-4
