"""Group ids, parameter order and unit maps are identical across processes and hash seeds."""

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, torch
from only_train_once import OTO
from only_train_once.quantization.quant_model import model_to_quantize_model
from sanity_check.registry import BACKBONES
result = {}
for name in ("densenet121", "carn", "llama", "demonet_weightshare_case2"):
    backbone = BACKBONES[name]
    torch.manual_seed(0)
    model = model_to_quantize_model(backbone.factory().eval(), quant_mode="weight_and_activation")
    oto = OTO(model, backbone.example_input(0))
    result[name] = [(g["id"], g["p_names"], g["num_groups"], g.get("global_start_idx"),
                     [i.tolist() if i is not None else None for i in g["p_unit_index"]])
                    for g in oto.get_param_groups()]
print(json.dumps(result))
"""


def run_with_hash_seed(seed: str) -> dict:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=root, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def test_groups_are_identical_across_processes_and_hash_seeds():
    first, second = run_with_hash_seed("1"), run_with_hash_seed("4242")
    assert first == second
    assert all(first[name] for name in first)
