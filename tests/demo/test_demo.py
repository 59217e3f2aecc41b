"""The demo pipeline runs end to end (a short schedule) and reports what it measured."""

import os

import pytest

pytest.importorskip("sklearn")


def test_short_demo_run_builds_an_equivalent_compressed_model(tmp_path):
    from only_train_once.demo import report, run

    result = run("mlp", epochs=3, out_dir=str(tmp_path), quiet=True)
    assert result.compressed_accuracy == result.full_accuracy
    assert result.group_sparsity == pytest.approx(0.5, abs=0.01)
    assert result.after["bops"] < result.before["bops"] and result.after["params"] < result.before["params"]
    assert all(2 <= bits["weight"] <= 16 for bits in result.layer_bits.values())
    for path in result.files.values():
        assert os.path.exists(path)
    text = report(result)
    assert "top-1 accuracy" in text and "BOPs (M)" in text and "per-layer bit widths" in text
    sizes = result.file_sizes  # real files of the compressed model, the packed one the smallest
    assert set(sizes) == {"pickled .pt", "float safetensors", "packed low-bit", "QDQ ONNX"}
    assert min(sizes, key=sizes.get) == "packed low-bit" and "packed low-bit file (Mbit)" in text
    assert set(result.latency) == {"eager PyTorch", "onnxruntime", "onnxruntime int8"}
    assert all(dense > 0 and deployed > 0 for dense, deployed in result.latency.values())
    assert "latency, eager PyTorch (ms)" in text and "deployed torch" in result.files
