"""Property test over random architectures: OTO -> random zero groups -> construct_subnet -> compare.

For every generated model (:mod:`tests.trust.generator`): the compressed model matches its full group-sparse
twin on fresh inputs within 1e-4 of each output's own scale, and nothing but the library's own exceptions is
raised. The build-time group check is on, so an analyzer mistake costs compression, not an exception.
"""

import copy

import numpy as np
import pytest
import torch

from only_train_once import OTO
from only_train_once.graph.trace import GraphCaptureError
from only_train_once.meta_device import MetaDeviceError
from only_train_once.optimizer import NonFiniteError
from only_train_once.quantization.quant_model import model_to_quantize_model
from only_train_once.quantization.rounding import ActivationRoundingBypassed
from only_train_once.subnet_construction import CorruptFileError, SubnetConstructionError
from tests.trust.generator import random_architecture

LIBRARY_ERRORS = (SubnetConstructionError, GraphCaptureError, MetaDeviceError, NonFiniteError, CorruptFileError)
TOLERANCE = 1e-4
QUANT_MODES = (None, None, "weight_only", "weight_and_activation")


def relative_difference(full: torch.Tensor, compressed: torch.Tensor) -> float:
    scale = float(full.double().abs().max())
    return float((full.double() - compressed.double()).abs().max()) / max(scale, 1e-30)


def run_case(seed: int, out_dir) -> str:
    """One generated model through the pipeline; returns what happened (raises on a property violation)."""
    model, dummy_input, description = random_architecture(seed)
    quant_mode = QUANT_MODES[seed // 2 % len(QUANT_MODES)]
    if quant_mode is not None:
        model = model_to_quantize_model(model, quant_mode=quant_mode)
        with torch.no_grad():
            model.train()(dummy_input)  # calibrates the activation ranges (issue 11 item 9)
        model.eval()
    try:
        oto = OTO(model, dummy_input, verify_groups=True)
        np.random.seed(seed)
        oto.random_set_zero_groups()
        full = copy.deepcopy(model)
        oto.construct_subnet(out_dir=str(out_dir), save_full_group_sparse_model=False)
    except LIBRARY_ERRORS as error:
        return f"{type(error).__name__}"
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad(), ActivationRoundingBypassed():
        for _ in range(2):
            fresh = torch.randn(dummy_input.shape, generator=generator)
            difference = relative_difference(full(fresh), model(fresh))
            assert difference <= TOLERANCE, f"{description} ({quant_mode}): compressed differs by {difference:.3g}"
    return "ok"


@pytest.mark.parametrize("seed", range(36))
def test_random_architectures_compress_exactly(seed, tmp_path):
    assert run_case(seed, tmp_path) == "ok"


@pytest.mark.slow
def test_hundreds_of_random_architectures(tmp_path):
    outcomes = {}
    for seed in range(36, 336):
        outcome = run_case(seed, tmp_path / str(seed))
        outcomes.setdefault(outcome, []).append(seed)
    assert set(outcomes) == {"ok"}, {k: v[:10] for k, v in outcomes.items()}
