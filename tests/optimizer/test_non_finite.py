"""NaN and inf: GETA and HESSO name the parameter and write nothing; quantizer parameters stay with their layer."""

import pytest
import torch
from torch import nn

from only_train_once import OTO
from only_train_once.optimizer import NonFiniteError
from only_train_once.quantization.quant_model import model_to_quantize_model


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 4))


IMAGES = torch.randn(4, 3, 4, 4)


def poisoned_backward(model, value=float("nan")):
    model(IMAGES).sum().backward()
    model[0].weight.grad[2, 0, 0, 0] = value


@pytest.mark.parametrize("make", [lambda oto: oto.hesso(lr=0.1, target_group_sparsity=0.5),
                                  lambda oto: oto.geta(lr=0.1, target_group_sparsity=0.5)],
                         ids=["hesso", "geta"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_gradient_raises_naming_the_parameter_and_writes_nothing(make, value):
    model = small_net()
    optimizer = make(OTO(model, IMAGES))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    poisoned_backward(model, value)
    with pytest.raises(NonFiniteError, match=r"0\.weight"):
        optimizer.step()
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())
    assert optimizer.num_steps == 0


def test_skip_policy_skips_the_step_and_training_goes_on():
    model = small_net()
    optimizer = OTO(model, IMAGES).geta(lr=0.1, target_group_sparsity=0.5, non_finite="skip")
    before = model[0].weight.detach().clone()
    poisoned_backward(model)
    optimizer.step()
    assert torch.equal(model[0].weight, before) and optimizer.num_steps == 0
    optimizer.zero_grad()
    model(IMAGES).sum().backward()
    optimizer.step()
    assert optimizer.num_steps == 1 and not torch.equal(model[0].weight, before)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_policy_is_validated():
    with pytest.raises(ValueError, match="non_finite"):
        OTO(small_net(), IMAGES).hesso(lr=0.1, non_finite="ignore")


def test_a_parameter_free_model_gets_a_clear_error():
    oto = OTO(nn.Sequential(nn.ReLU(), nn.Flatten()), IMAGES)
    for make in (oto.hesso, oto.geta):
        with pytest.raises(ValueError, match="no parameters"):
            make(lr=0.1)


@pytest.mark.parametrize("padding_mode", ["reflect", "circular"])
def test_geta_trains_weight_and_activation_convs_with_non_zero_padding(padding_mode):
    """Issue 11 item 3: the activation quantizer of such a conv got a param group of its own (its F.pad node) and
    its step size became NaN at the first fixed-bits step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, padding_mode=padding_mode), nn.ReLU(), nn.Flatten(),
                          nn.Linear(288, 5))
    model = model_to_quantize_model(model, quant_mode="weight_and_activation")
    images, labels = torch.randn(4, 3, 6, 6), torch.randint(0, 5, (4,))
    oto = OTO(model, images)
    owner = [g for g in oto.get_param_groups() if "2.weight" in g["p_names"]]
    assert len(owner) == 1 and "2.d_quant_act" in owner[0]["p_names"]
    optimizer = oto.geta(variant="adam", lr=1e-3, lr_quant=1e-3, target_group_sparsity=0.5,
                         start_projection_step=0, projection_steps=4, projection_periods=2, start_pruning_step=4,
                         pruning_steps=4, pruning_periods=2)
    for _ in range(12):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    assert optimizer.phase() == "fixed"
    assert all(torch.isfinite(p).all() for p in model.parameters())
