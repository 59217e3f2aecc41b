"""A real training run: GETA on scikit-learn's digits reaches the targets and compresses losslessly."""

from only_train_once.quantization import QuantizeMixin
from tests.optimizer.common import DIGITS_RECIPE, accuracy, digits_data, train_digits, zero_unit_fraction


def test_geta_on_digits_reaches_sparsity_and_bits_and_compresses_without_loss(tmp_path):
    model, oto, optimizer, full_accuracy = train_digits(seed=0)
    assert full_accuracy >= 0.9
    assert zero_unit_fraction(oto) == (32, 64)
    assert optimizer.max_bit_wt == 10
    for module in model.modules():
        if isinstance(module, QuantizeMixin):
            assert DIGITS_RECIPE["min_bit_wt"] <= module.weight_bit <= 10
            assert DIGITS_RECIPE["min_bit_act"] <= module.activation_bit <= DIGITS_RECIPE["max_bit_act"]
    parameters_before = sum(p.numel() for p in model.parameters())
    oto.construct_subnet(out_dir=str(tmp_path))
    assert sum(p.numel() for p in model.parameters()) < parameters_before
    _, _, test_x, test_y = digits_data(0)
    assert accuracy(model, test_x, test_y) == full_accuracy
