"""GetaConfig / HessoConfig: validated once, the primary form of oto.geta / oto.hesso; the keyword form builds them."""

import dataclasses
import warnings

import pytest

from only_train_once import BitRange, GetaConfig, Graph, HessoConfig, OTO, Schedule
from only_train_once.utils import IgnoredArgumentWarning, ignored
from tests.optimizer.common import DIGITS_INPUT, DigitsNet, TinyMLP, build

GETA_ATTRIBUTES = ("target_group_sparsity", "min_bit_wt", "max_bit_wt", "min_bit_act", "max_bit_act",
                   "bit_reduction", "start_projection_step", "projection_steps", "projection_periods",
                   "projection_period_duration", "start_pruning_step", "pruning_steps", "pruning_periods",
                   "pruning_period_duration", "lr_quant", "verbose", "log_dir", "grad_clip_min", "grad_clip_max",
                   "fixed_zero_groups", "enable_grad_clipping", "forget_rate_guard", "group_divisible")


@pytest.fixture(autouse=True)
def fresh_ignored_warnings(monkeypatch):
    """Each test sees the once-per-process warnings afresh."""
    monkeypatch.setattr(ignored, "_WARNED", set())


def test_config_and_keyword_forms_build_the_same_geta():
    _, oto = build(DigitsNet)
    by_keywords = oto.geta(variant="adam", lr=1e-3, first_momentum=0.9, weight_decay=1e-4, target_group_sparsity=0.4,
                           start_projection_step=2, projection_steps=6, projection_periods=3, start_pruning_step=8,
                           pruning_steps=4, pruning_periods=2, min_bit_wt=4, max_bit_wt=12, min_bit_act=6,
                           max_bit_act=10, bit_reduction=1, grad_clip_min=-0.5, grad_clip_max=0.5)
    config = GetaConfig(variant="adam", lr=1e-3, first_momentum=0.9, weight_decay=1e-4, target_group_sparsity=0.4,
                        projection=Schedule(start=2, steps=6, periods=3), pruning=Schedule(start=8, steps=4, periods=2),
                        weight_bits=BitRange(4, 12), activation_bits=BitRange(6, 10), bit_reduction=1,
                        grad_clip_min=-0.5, grad_clip_max=0.5)
    by_config = oto.geta(config=config)
    assert {k: getattr(by_config, k) for k in GETA_ATTRIBUTES} == {k: getattr(by_keywords, k) for k in GETA_ATTRIBUTES}
    assert by_config.param_groups[0]["lr"] == 1e-3 and by_config.param_groups[0]["weight_decay"] == 1e-4
    assert (by_config.min_bit_wt, by_config.pruning_period_duration, by_config.projection_period_duration) == (4, 2, 2)


def test_config_form_builds_hesso():
    _, oto = build(DigitsNet, quantized=False)
    optimizer = oto.hesso(config=HessoConfig(lr=0.05, target_group_sparsity=0.7,
                                             pruning=Schedule(start=3, steps=30, periods=3)))
    assert optimizer.param_groups[0]["lr"] == 0.05
    assert (optimizer.start_pruning_step, optimizer.pruning_steps, optimizer.pruning_periods) == (3, 30, 3)
    assert optimizer.active_num_redundant_groups == [14, 14, 16]  # 0.7 of 64 units, as the keyword form gives


def test_unset_pruning_steps_give_one_step_per_period_in_both_optimizers():
    """The facade used to default pruning_steps to 1 while HESSO defaulted to None: periods > 1 then failed."""
    _, oto = build(TinyMLP)
    assert oto.hesso(pruning_periods=3).pruning_steps == 3
    geta = oto.geta(pruning_periods=3, projection_periods=2)
    assert (geta.pruning_steps, geta.projection_steps) == (3, 2)
    assert (geta.start_projection_step, geta.start_pruning_step) == (0, 1)  # the reference's GETA defaults


def test_a_part_given_by_one_keyword_keeps_its_other_defaults():
    config = GetaConfig.from_keywords(start_pruning_step=7, max_bit_act=8)
    assert config.pruning == Schedule(start=7, steps=None, periods=1)
    assert config.activation_bits == BitRange(min_bits=2, max_bits=8)
    assert config.projection == Schedule(start=0) and config.weight_bits == BitRange()


@pytest.mark.parametrize("flag, enabled", [("False", False), ("false", False), ("True", True), ("TRUE", True),
                                           (False, False), (True, True)])
def test_verbose_strings_are_read_as_flags(flag, enabled):
    assert GetaConfig(verbose=flag).verbose is enabled


def test_verbose_false_string_writes_no_diagnostics(tmp_path):
    """``bool("False")`` is True: the string must not switch the diagnostics on."""
    model, oto = build(TinyMLP)
    optimizer = oto.geta(verbose="False", log_dir=str(tmp_path / "logs"))
    assert optimizer.verbose == "False"  # the reference's string form, which scripts compare with
    model(DIGITS_INPUT).sum().backward()
    optimizer.step()
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("build_config, named", [
    (lambda: GetaConfig(lr=-1.0), "GetaConfig.lr"),
    (lambda: GetaConfig(lr=float("nan")), "GetaConfig.lr"),
    (lambda: HessoConfig(variant="rmsprop"), "HessoConfig.variant"),
    (lambda: HessoConfig(weight_decay=-1e-4), "HessoConfig.weight_decay"),
    (lambda: GetaConfig(target_group_sparsity=1.0), "GetaConfig.target_group_sparsity"),
    (lambda: GetaConfig(max_group_sparsity=0.0), "GetaConfig.max_group_sparsity"),
    (lambda: GetaConfig(group_divisible=0), "GetaConfig.group_divisible"),
    (lambda: GetaConfig(lr_quant=-1e-3), "GetaConfig.lr_quant"),
    (lambda: GetaConfig(bit_reduction=-1), "GetaConfig.bit_reduction"),
    (lambda: GetaConfig(grad_clip_min=1.0, grad_clip_max=1.0), "GetaConfig.grad_clip_min"),
    (lambda: GetaConfig(forget_rate_guard="maybe"), "GetaConfig.forget_rate_guard"),
    (lambda: GetaConfig(verbose="yes"), "GetaConfig.verbose"),
    (lambda: HessoConfig(non_finite="ignore"), "HessoConfig.non_finite"),
    (lambda: GetaConfig(pruning=(0, 1, 1)), "GetaConfig.pruning"),
    (lambda: GetaConfig(weight_bits=(2, 8)), "GetaConfig.weight_bits"),
    (lambda: Schedule(start=-1), "Schedule.start"),
    (lambda: Schedule(periods=0), "Schedule.periods"),
    (lambda: Schedule(steps=2, periods=3), "Schedule.steps"),
    (lambda: Schedule(steps=2.5), "Schedule.steps"),
    (lambda: BitRange(min_bits=1), "BitRange.min_bits"),
    (lambda: BitRange(min_bits=8, max_bits=4), "BitRange.min_bits"),
])
def test_invalid_settings_raise_naming_the_field(build_config, named):
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        build_config()


def test_keyword_errors_name_the_reference_keywords_and_the_field():
    with pytest.raises(ValueError, match=r"pruning_steps.*Schedule\.steps"):
        HessoConfig.from_keywords(pruning_steps=2, pruning_periods=3)
    with pytest.raises(ValueError, match=r"min_bit_act.*BitRange\.min_bits"):
        GetaConfig.from_keywords(min_bit_act=9, max_bit_act=8)


def test_configs_are_frozen_values():
    config = GetaConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0
    assert GetaConfig.from_keywords(lr=0.1) == GetaConfig() and dataclasses.replace(config, lr=0.5).lr == 0.5


def test_config_and_keywords_together_or_a_wrong_config_raise():
    _, oto = build(TinyMLP)
    with pytest.raises(TypeError, match="either config= or keywords"):
        oto.geta(config=GetaConfig(), lr=0.5)
    with pytest.raises(TypeError, match="takes a HessoConfig"):
        oto.hesso(config=GetaConfig())


def test_unknown_keywords_still_reach_the_optimizer():
    _, oto = build(TinyMLP)
    with pytest.raises(TypeError, match="no_such_option"):
        oto.geta(no_such_option=1)


def test_ignored_device_warns_once_and_is_recorded():
    _, oto = build(TinyMLP)
    with pytest.warns(IgnoredArgumentWarning, match="device") as caught:
        first = oto.geta(device="cpu")
        oto.geta(device="cpu")
    assert len([w for w in caught if issubclass(w.category, IgnoredArgumentWarning)]) == 1
    assert first.device == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredArgumentWarning)
        assert oto.hesso().device == "cuda"  # not given: no warning, the reference's recorded default


def test_ignored_graph_options_warn():
    with pytest.warns(IgnoredArgumentWarning, match="strict_out_nodes"):
        OTO(TinyMLP(), DIGITS_INPUT, strict_out_nodes=True)
    with pytest.warns(IgnoredArgumentWarning, match="trace_onnx"):
        Graph(TinyMLP(), DIGITS_INPUT, trace_onnx=False)
