"""Slow: HESSO and GETA on FSDP2-sharded Hugging Face decoders (2 gloo processes, every decoder layer sharded):
Llama with grouped-query heads (``o_proj`` pruned along its columns) and GPT-2 (``Conv1D``: transposed weights,
every unit along axis 1). The ranks select the same units and end with the same weights as one process."""

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from only_train_once import OTO
from only_train_once.quantization import calibrate_activations, model_to_quantize_model
from tests.llm.decoders import VOCAB, build_decoder

WORLD_SIZE, BATCH, LENGTH, STEPS = 2, 4, 12, 8
SCHEDULES = {
    "hesso": dict(variant="adam", lr=3e-3, target_group_sparsity=0.3, start_pruning_step=2, pruning_steps=4,
                  pruning_periods=2),
    "geta": dict(variant="adam", lr=3e-3, lr_quant=1e-3, target_group_sparsity=0.3, start_projection_step=1,
                 projection_steps=2, start_pruning_step=2, pruning_steps=4, pruning_periods=2, min_bit_wt=4,
                 max_bit_wt=8, min_bit_act=4, max_bit_act=8),
}
RUNS = (("llama_gqa_eager", "hesso"), ("gpt2", "hesso"), ("llama_gqa_eager", "geta"))

pytestmark = pytest.mark.slow


def model_for(name: str, kind: str) -> torch.nn.Module:
    model = build_decoder(name).double()  # float64 (see test_fsdp.py); eval mode: no dropout draws
    if kind == "geta":
        model_to_quantize_model(model, quant_mode="weight_and_activation")
    return model


def build(name: str, kind: str, rank=None):
    """The decoder and its OTO; GETA's is quantized and calibrated on token batch 0 (``rank``'s half of it)."""
    model = model_for(name, kind)
    if kind == "geta":
        calibrate_activations(model, {"input_ids": tokens(0, rank)})
    return model, OTO(model, {"input_ids": tokens(0)}, verify_groups=False)


def tokens(step: int, rank=None):
    """Token batch ``step`` (its ``rank``-th half with ``rank``)."""
    ids = torch.randint(0, VOCAB, (BATCH, LENGTH), generator=torch.Generator().manual_seed(step))
    share = BATCH // WORLD_SIZE
    return ids if rank is None else ids[rank * share:(rank + 1) * share]


def train(model, optimizer, rank=None):
    selections = {}
    for step in range(1, STEPS + 1):
        ids = tokens(step, rank)
        optimizer.zero_grad()
        logits = model(input_ids=ids).logits
        F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1)).backward()
        optimizer.step()
        selections[step] = list(optimizer.pruned_group_idxes)
    return selections


def layers_of(model):
    return model.model.layers if hasattr(model, "model") else model.transformer.h


def _worker(rank: int, port: int, out_dir: str) -> None:
    from torch.distributed.fsdp import fully_shard

    from only_train_once.optimizer.fsdp import gather_full_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        reports = {}
        for name, kind in RUNS:
            model, oto = build(name, kind, rank)
            for layer in layers_of(model):
                fully_shard(layer)
            fully_shard(model)
            reports[f"{name}-{kind}"] = train(model, getattr(oto, kind)(**SCHEDULES[kind]), rank)
            full = gather_full_model(model, model_for(name, kind))
            if rank == 0:
                torch.save(full.state_dict(), os.path.join(out_dir, f"{name}-{kind}.pt"))
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
            json.dump(reports, handle)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("fsdp_decoders")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_worker, args=(port, str(out_dir)), nprocs=WORLD_SIZE, join=True)
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)], out_dir


@pytest.mark.parametrize("name, kind", RUNS)
def test_a_sharded_decoder_prunes_and_trains_as_one_process(name, kind, sharded):
    reports, out_dir = sharded
    model, oto = build(name, kind)
    selections = train(model, getattr(oto, kind)(**SCHEDULES[kind]))
    assert selections[STEPS], "nothing pruned: the comparison would be vacuous"
    for report in reports:
        assert report[f"{name}-{kind}"] == {str(step): units for step, units in selections.items()}
    gathered = torch.load(out_dir / f"{name}-{kind}.pt")
    for key, expected in model.state_dict().items():
        torch.testing.assert_close(gathered[key], expected, rtol=1e-6, atol=1e-8, msg=key)
