"""DistributedDataParallel (2 CPU processes, gloo): ranks select the same units and hold the same parameters."""

import json
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from tests.optimizer.common import DigitsNet, batch, build

WORLD_SIZE = 2
SCHEDULE = dict(variant="adam", lr=3e-3, lr_quant=1e-3, target_group_sparsity=0.5, start_projection_step=2,
                projection_steps=4, projection_periods=2, start_pruning_step=6, pruning_steps=6, pruning_periods=2,
                min_bit_wt=4, max_bit_wt=12)
# the end of warm-up, of projection, inside the first period, after each period, in the fixed-bit phase
CHECK_STEPS = (2, 6, 7, 9, 12, 15)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        model, oto = build(DigitsNet, quantized=True, seed=0)  # OTO on the unwrapped model
        optimizer = oto.geta(**SCHEDULE)
        wrapped = DistributedDataParallel(model)
        report = {"same_parameters": {}, "same_selection": {}, "selected": {}}
        for step in range(1, CHECK_STEPS[-1] + 1):
            inputs, targets = batch(2 * step + rank)  # each rank its own shard
            optimizer.zero_grad()
            F.cross_entropy(wrapped(inputs), targets).backward()
            optimizer.step()
            if step in CHECK_STEPS:
                # BatchNorm running statistics are rank-local until DDP broadcasts them at the next forward
                flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
                gathered = [torch.empty_like(flat) for _ in range(WORLD_SIZE)]
                dist.all_gather(gathered, flat)
                selections = [None] * WORLD_SIZE
                dist.all_gather_object(selections, list(optimizer.pruned_group_idxes))
                report["same_parameters"][step] = all(torch.equal(gathered[0], g) for g in gathered)
                report["same_selection"][step] = all(s == selections[0] for s in selections)
                report["selected"][step] = len(selections[0])
        dist.barrier()
        if rank == 0:
            inputs, _ = batch(12345, size=64)
            model.eval()
            with torch.no_grad():
                full = model(inputs)
            oto.construct_subnet(out_dir=os.path.join(out_dir, "subnet"))
            with torch.no_grad():
                compressed = model(inputs)
            report["subnet_max_difference"] = float((full - compressed).abs().max())
            report["same_predictions"] = bool(torch.equal(full.argmax(1), compressed.argmax(1)))
            report["zero_units"] = optimizer.compute_metrics().num_zero_groups
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
            json.dump(report, handle)
        dist.barrier()  # rank 1 must not tear its process group down while rank 0 is still building the subnet
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_agree_and_the_subnet_is_lossless(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]
    for report in reports:
        assert all(report["same_parameters"].values()), report["same_parameters"]
        assert all(report["same_selection"].values()), report["same_selection"]
    assert reports[0]["selected"] == {"2": 0, "6": 0, "7": 16, "9": 16, "12": 32, "15": 32}
    assert reports[0]["zero_units"] == 32
    assert reports[0]["same_predictions"]
    assert reports[0]["subnet_max_difference"] < 1e-3
