"""NaN and inf: GETA and HESSO name the parameter and write nothing; quantizer parameters stay with their layer."""

import pytest
import torch
from torch import nn

from only_train_once import OTO
from only_train_once.optimizer import HESSOCRIC, NonFiniteError
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


def bits(model):
    """Every parameter's exact bit pattern (so -0.0 and 0.0, or two NaN payloads, differ)."""
    return {name: p.detach().clone().view(torch.int32) for name, p in model.named_parameters()}


def assert_bitwise_unchanged(model, before):
    changed = [name for name, value in bits(model).items() if not torch.equal(value, before[name])]
    assert changed == []


OVERFLOWING = {"hesso": lambda oto, **kw: oto.hesso(lr=1e39, target_group_sparsity=0.5, **kw),
               "geta": lambda oto, **kw: oto.geta(lr=1e39, target_group_sparsity=0.5, **kw),
               "hessocric": lambda oto, **kw: HESSOCRIC(oto.get_param_groups(), lr=1e39, target_group_sparsity=0.5,
                                                        **kw)}


@pytest.mark.parametrize("name", sorted(OVERFLOWING))
def test_a_step_that_would_overflow_from_finite_gradients_raises_before_writing(name):
    model = small_net()
    optimizer = OVERFLOWING[name](OTO(model, IMAGES))
    model(IMAGES).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    before = bits(model)
    with pytest.raises(NonFiniteError, match=r"would write NaN or inf .*into 0\.weight"):
        optimizer.step()
    assert_bitwise_unchanged(model, before)


def test_geta_quantizer_ranges_that_overflow_the_step_size_raise_naming_it_and_write_nothing():
    """q_m^t overflows float32 (1e60): projecting the step size into the bit range would make it inf."""
    torch.manual_seed(0)
    model = model_to_quantize_model(small_net())
    optimizer = OTO(model, IMAGES).geta(lr=0.1, target_group_sparsity=0.5, start_projection_step=0,
                                        projection_steps=4, start_pruning_step=4, pruning_steps=4)
    with torch.no_grad():
        model[0].q_m_wt.fill_(1e30)
        model[0].t_quant_wt.fill_(2.0)
    model(IMAGES).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    before = bits(model)
    with pytest.raises(NonFiniteError, match=r"would write NaN or inf .*into 0\.d_quant_wt"):
        optimizer.step()
    assert_bitwise_unchanged(model, before)


def test_skip_policy_leaves_the_parameters_of_an_overflowing_step_and_training_goes_on():
    model = small_net()
    optimizer = OTO(model, IMAGES).geta(lr=1e39, target_group_sparsity=0.5, non_finite="skip")
    model(IMAGES).sum().backward()
    before = bits(model)
    optimizer.step()
    assert_bitwise_unchanged(model, before)
    optimizer.set_learning_rate(0.1)
    optimizer.step()
    assert model[0].weight.view(torch.int32).ne(before["0.weight"]).any()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_parameter_changed_in_place_between_steps_is_measured_again():
    """The norm bound carried from the last step must not hide a value written since (here: near float32's max,
    where the next small step overflows)."""
    model = small_net()
    optimizer = OTO(model, IMAGES).hesso(lr=1e-3, target_group_sparsity=0.5)
    model(IMAGES).sum().backward()
    optimizer.step()
    with torch.no_grad():
        model[0].weight.copy_(-model[0].weight.grad.sign() * 3.4e38)
    optimizer.set_learning_rate(1e35)
    before = bits(model)
    with pytest.raises(NonFiniteError, match=r"into 0\.weight"):
        optimizer.step()
    assert_bitwise_unchanged(model, before)
