"""Heads, fused qkv, GroupNorm groups, transposed convolutions, concat BatchNorms: pruned through the index maps.

Each backbone trains a few GETA steps to 30% group sparsity; the subnet constructor then removes exactly the
units the optimizer zeroed, and its own check (compressed output == full group-sparse output) must pass.
"""

import pytest

from only_train_once import OTO
from only_train_once.quantization import model_to_quantize_model
from sanity_check.registry import BACKBONES, run_model
from tests.optimizer.common import zero_unit_fraction


def _loss(output):
    if isinstance(output, dict):
        output = next(iter(output.values()))
    if isinstance(output, (tuple, list)):
        output = output[0]
    return output.float().pow(2).mean()


@pytest.mark.parametrize("name, quantized", [
    ("llama", True),                            # attention heads, SwiGLU, RMSNorm; quantized linears
    ("simple_vit", False),                      # fused qkv split into heads
    ("demonet_groupnorm_case1", False),         # GroupNorm groups as units
    ("demonet_convtranspose_in_case1", False),  # transposed conv weights (pruned along dim 1)
    ("demonet_concat_case1", True),             # concat-dependent BatchNorm (auxiliary group)
])
def test_geta_prunes_exactly_the_target_through_the_index_maps(tmp_path, name, quantized):
    backbone = BACKBONES[name]
    model = backbone.build(0)
    if quantized:
        model_to_quantize_model(model, quant_mode="weight_only")
    example = backbone.example_input(0)
    oto = OTO(model, example)
    unprunable = backbone.unprunable_names(model)
    if unprunable:
        oto.mark_unprunable_by_param_names(unprunable)
    optimizer = oto.geta(variant="adam", lr=1e-3, lr_quant=1e-3, target_group_sparsity=0.3, start_projection_step=0,
                         projection_steps=1, start_pruning_step=1, pruning_steps=4, pruning_periods=2)
    model.train()
    for _ in range(6):
        optimizer.zero_grad()
        _loss(run_model(model, example)).backward()
        optimizer.step()
    zero, _ = zero_unit_fraction(oto)
    assert zero == optimizer.target_num_redundant_groups > 0
    oto.construct_subnet(out_dir=str(tmp_path), tolerance=backbone.tolerance)
