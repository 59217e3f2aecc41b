"""ONNX files the library writes carry checksums of their tensors; damaged files give one clear error."""

import json
import os

import numpy as np
import onnx
import pytest
import torch

from only_train_once import OTO
from only_train_once.export import export_qdq_onnx
from only_train_once.export.onnx_io import run_onnx, session
from only_train_once.quantization.quant_model import model_to_quantize_model
from only_train_once.subnet_construction import CorruptFileError, verify_onnx_file
from only_train_once.subnet_construction.integrity import CHECKSUM_KEY
from only_train_once.subnet_construction.onnx_integrity import write_onnx_atomically
from tests.helpers import outputs
from tests.subnet_construction.test_file_integrity import ConvNet

pytest.importorskip("onnxruntime")

IMAGES = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))


def compressed_onnx(tmp_path, ckpt_format="onnx", quantized=False):
    torch.manual_seed(0)
    model = ConvNet()
    if quantized:
        model_to_quantize_model(model)
    oto = OTO(model, IMAGES)
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    oto.construct_subnet(out_dir=str(tmp_path), ckpt_format=ckpt_format)
    return oto, model


def flip_a_byte_of_the_largest_tensor(path):
    """Change one byte inside the raw data of the file's largest initializer."""
    largest = max(onnx.load(path).graph.initializer, key=lambda tensor: len(tensor.raw_data))
    data = bytearray(open(path, "rb").read())
    position = bytes(data).find(largest.raw_data[:16])
    assert position > 0
    data[position + 3] ^= 0x10
    open(path, "wb").write(bytes(data))
    return largest.name


def recorded_checksums(path):
    return {entry.key: entry.value for entry in onnx.load(path).metadata_props}.get(CHECKSUM_KEY)


@pytest.mark.parametrize("ckpt_format", ["onnx", "onnx_qdq"])
def test_construct_subnet_onnx_files_carry_checksums_and_a_flipped_bit_names_the_file(tmp_path, ckpt_format):
    oto, model = compressed_onnx(tmp_path, ckpt_format, quantized=ckpt_format == "onnx_qdq")
    path = oto.compressed_model_path
    assert recorded_checksums(path) is not None
    assert verify_onnx_file(path) == len(onnx.load(path).graph.initializer) + sum(
        node.op_type == "Constant" for node in onnx.load(path).graph.node)
    sess = session(path)  # onnxruntime still loads and runs it
    result = sess.run(None, {sess.get_inputs()[0].name: IMAGES.numpy()})[0]
    assert result.shape == tuple(outputs(model, IMAGES)[0].shape)
    tensor = flip_a_byte_of_the_largest_tensor(path)
    with pytest.raises(CorruptFileError, match=f"{os.path.basename(path)}.*{tensor}.*checksum"):
        verify_onnx_file(path)
    with pytest.raises(CorruptFileError, match="checksum"):
        session(path)


def test_export_qdq_onnx_file_is_verified(tmp_path):
    torch.manual_seed(0)
    model = model_to_quantize_model(ConvNet(), quant_mode="weight_and_activation")
    path = export_qdq_onnx(model, IMAGES, str(tmp_path / "qdq.onnx"))
    assert verify_onnx_file(path) > 0
    flip_a_byte_of_the_largest_tensor(path)
    with pytest.raises(CorruptFileError, match="qdq.onnx"):
        verify_onnx_file(path)


def test_deployable_onnx_targets_carry_checksums(tmp_path):
    oto, _ = compressed_onnx(tmp_path, "torch")
    paths = oto.export(str(tmp_path / "deploy"), targets=("onnx",))
    assert recorded_checksums(paths["onnx"]) is not None and verify_onnx_file(paths["onnx"]) > 0
    flip_a_byte_of_the_largest_tensor(paths["onnx"])
    with pytest.raises(CorruptFileError, match="_deploy.onnx"):
        run_onnx(paths["onnx"], IMAGES)
    assert not [name for name in os.listdir(tmp_path / "deploy") if name.startswith(".tmp-")]


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_truncated_empty_and_garbage_onnx_files_give_one_clear_error(tmp_path, damage):
    oto, _ = compressed_onnx(tmp_path)
    path = oto.compressed_model_path
    data = open(path, "rb").read()
    damaged = {"empty": b"", "truncated": data[:len(data) // 2],
               "garbage": np.random.default_rng(0).bytes(len(data))}[damage]
    open(path, "wb").write(damaged)
    with pytest.raises(CorruptFileError, match=f"{os.path.basename(path)}.*(empty|cannot be read).*expected an ONNX"):
        verify_onnx_file(path)


def test_a_failed_onnx_write_leaves_no_file(tmp_path):
    path = str(tmp_path / "model.onnx")

    def write_half_then_fail(temporary):
        open(temporary, "wb").write(b"\x08\x07")
        raise RuntimeError("exporter failed")

    with pytest.raises(RuntimeError, match="exporter failed"):
        write_onnx_atomically(path, write_half_then_fail)
    assert os.listdir(tmp_path) == []


def test_deployable_torch_target_files_carry_checksums(tmp_path):
    """The other files oto.export writes: whole module, weights-only form and its description."""
    from only_train_once.export import load_deployed
    from only_train_once.subnet_construction import load_model

    oto, model = compressed_onnx(tmp_path, "torch")
    paths = oto.export(str(tmp_path / "deploy"), targets=("torch",))
    weights = paths["torch"].replace(".pt", ".safetensors")
    assert outputs(load_model(paths["torch"]), IMAGES)[0].shape == outputs(model, IMAGES)[0].shape
    load_deployed(ConvNet(), weights)
    data = bytearray(open(weights, "rb").read())
    data[-20] ^= 0x10
    open(weights, "wb").write(bytes(data))
    with pytest.raises(CorruptFileError, match="_deploy.safetensors.*checksum"):
        load_deployed(ConvNet(), weights)
    description = weights.replace(".safetensors", ".json")
    edited = json.load(open(description))
    edited["added_bias"].append("fc")
    json.dump(edited, open(description, "w"))
    with pytest.raises(CorruptFileError, match="_deploy.json.*checksum"):
        load_deployed(ConvNet(), weights, description)
