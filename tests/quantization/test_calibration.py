"""Issue 11 item 9: an uncalibrated weight+activation model is flagged where it is saved, and calibrates on demand."""

import copy
import logging

import numpy as np
import torch
from torch import nn

from only_train_once import OTO
from only_train_once.quantization import calibrate_activations, uncalibrated_layers
from only_train_once.quantization.quant_model import model_to_quantize_model

IMAGES = torch.randn(4, 3, 6, 6)


def quantized():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(288, 5))
    return model_to_quantize_model(model, quant_mode="weight_and_activation").eval()


def test_construct_subnet_warns_about_uncalibrated_ranges(tmp_path, caplog):
    model = quantized()
    oto = OTO(model, IMAGES)
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    with caplog.at_level(logging.WARNING, logger="only_train_once"):
        oto.construct_subnet(out_dir=str(tmp_path))
    (record,) = [r for r in caplog.records if "never calibrated" in r.getMessage()]
    assert "0" in record.getMessage() and "calibrate_activations" in record.getMessage()


def test_calibration_on_the_dummy_input_matches_one_training_forward():
    model = quantized()
    trained = copy.deepcopy(model)
    assert uncalibrated_layers(model) == ["0", "4"]
    running_mean = model[1].running_mean.clone()
    assert OTO(model, IMAGES).calibrate_activations() == ["0", "4"]
    assert uncalibrated_layers(model) == [] and torch.equal(model[1].running_mean, running_mean)
    trained.train()(IMAGES)  # what the first training step would do (it also updates BatchNorm statistics)
    assert torch.equal(model[0].q_m_act, trained[0].q_m_act)
    assert calibrate_activations(model, IMAGES) == []  # calibrated layers are left alone
