"""A decoder on the meta device (no weights in memory) is analysed into the same groups as the materialised one."""

import pytest
import torch

from only_train_once import OTO
from only_train_once.meta_device import MetaDeviceError
from only_train_once.quantization.quant_model import model_to_quantize_model
from tests.helpers import group_summary
from tests.llm.decoders import build_decoder, token_ids


def decoder(layout: str, quantized: bool, meta: bool):
    if meta:
        with torch.device("meta"):
            model = build_decoder(layout)
    else:
        model = build_decoder(layout)
    if quantized:
        model_to_quantize_model(model, quant_mode="weight_and_activation")
    return model


@pytest.mark.parametrize("quantized", [False, True], ids=["float", "weight+activation"])
@pytest.mark.parametrize("layout", ["llama_gqa", "phi3"])
def test_meta_device_model_gives_the_groups_of_the_materialised_model(layout, quantized):
    ids = token_ids()
    materialised = OTO(decoder(layout, quantized, meta=False), {"input_ids": ids})
    on_meta = OTO(decoder(layout, quantized, meta=True), {"input_ids": ids.to("meta")})
    assert next(on_meta.model.parameters()).is_meta
    assert any(prunable for _, prunable, _, _ in group_summary(materialised))
    assert group_summary(on_meta) == group_summary(materialised)


def test_what_needs_values_names_the_meta_device(tmp_path):
    oto = OTO(decoder("llama_gqa", True, meta=True), {"input_ids": token_ids().to("meta")})
    with pytest.raises(MetaDeviceError, match="meta device"):
        oto.geta(lr=0.1)
    with pytest.raises(MetaDeviceError, match="meta device"):
        oto.construct_subnet(out_dir=str(tmp_path))


class ReadsAValue(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.linear(x) * float(x.max())  # a host read, as transformers' mask code does without a mask


def test_a_forward_reading_values_on_meta_is_blamed_on_the_meta_device_not_on_dummy_input():
    from only_train_once.graph.trace import GraphCaptureError

    with torch.device("meta"):
        model = ReadsAValue()
    with pytest.raises(GraphCaptureError, match="meta device does not have.*attention_mask"):
        OTO(model, torch.zeros(2, 4, device="meta"))
