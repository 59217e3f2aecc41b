"""ONNX export of quantized layers: standard operators only, onnxruntime output equal to torch."""
import pytest
import torch
from torch import nn

from only_train_once.quantization.quant_model import model_to_quantize_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def quantized_model(quant_type):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 10))
    model_to_quantize_model(model, num_bits=4, quant_type=quant_type, quant_mode="weight_and_activation")
    x = torch.randn(2, 3, 6, 6)
    model.train()(x)  # calibrate the activation ranges
    if quant_type == "symmetric+nonlinear":
        with torch.no_grad():  # exercise the power, not the t = 1 shortcut
            model[0].t_quant_wt.fill_(1.3)
            model[3].t_quant_act.fill_(0.8)
    return model.eval(), x


def run_onnxruntime(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("quant_type", ["symmetric+linear", "symmetric+nonlinear", "dge"])
def test_torchscript_export_emits_standard_ops_and_matches_torch(tmp_path, quant_type):
    model, x = quantized_model(quant_type)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False)
    graph = onnx.load(str(path)).graph
    assert all(node.domain in ("", "ai.onnx") for node in graph.node)
    assert {"Round", "Div", "Mul", "Abs", "Min"} <= {node.op_type for node in graph.node}
    with torch.no_grad():
        torch.testing.assert_close(run_onnxruntime(path, x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_default_dynamo_export_runs_in_onnxruntime_and_matches_torch(tmp_path):
    model, x = quantized_model("symmetric+nonlinear")
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x,), str(path))
    with torch.no_grad():
        torch.testing.assert_close(run_onnxruntime(path, x), model(x), rtol=1e-5, atol=1e-5)
