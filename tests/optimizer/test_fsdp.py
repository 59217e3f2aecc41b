"""GETA and HESSO on an FSDP2-sharded model (``fully_shard``, 2 CPU processes, gloo) select the same redundant
units and end with the same weights as one process on the whole batch; the gathered model compresses losslessly."""

import json
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from only_train_once import OTO
from only_train_once.optimizer.fsdp import ShardedGETA, ShardedHESSO, ShardedModelError, gather_full_model
from only_train_once.quantization import calibrate_activations, model_to_quantize_model

WORLD_SIZE = 2
BATCH, CHANNELS, LENGTH, CLASSES = 8, 6, 10, 5
SCHEDULES = {
    "geta": dict(variant="adam", lr=3e-3, lr_quant=1e-3, target_group_sparsity=0.4, start_projection_step=2,
                 projection_steps=4, projection_periods=2, start_pruning_step=4, pruning_steps=6, pruning_periods=2,
                 min_bit_wt=4, max_bit_wt=8, min_bit_act=4, max_bit_act=8),
    "hesso": dict(variant="adam", lr=3e-3, target_group_sparsity=0.4, start_pruning_step=2, pruning_steps=4,
                  pruning_periods=2),
}
STEPS = {"geta": 14, "hesso": 8}


class Block(nn.Module):
    """Pre-norm transformer block: 3 attention heads, a GELU MLP, residual connections."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.norm1 = nn.LayerNorm(dim)
        # no key bias: softmax cancels it, so its gradient is rounding noise (Adam would amplify it to full steps)
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        batch, length, dim = x.shape
        y = self.norm1(x)
        q, k, v = (layer(y).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
                   for layer in (self.q, self.k, self.v))
        attention = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        x = x + self.proj((attention @ v).transpose(1, 2).reshape(batch, length, dim))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TokenNet(nn.Module):
    """Convolutional token embedding, one transformer block, a linear head.

    The transposed convolution's channels are its weight's axis 1 (FSDP2 shards axis 0): a rank sees every unit
    of it over its rows. The widths are odd, so the two ranks hold unequal rows, and a quantizer parameter (one
    element) lives on rank 0 only.
    """

    def __init__(self, dim: int = 15, heads: int = 3, hidden: int = 21, stem: int = 9):
        super().__init__()
        self.stem = nn.ConvTranspose1d(CHANNELS, stem, 3, padding=1)
        self.embed = nn.Conv1d(stem, dim, 1)
        self.block = Block(dim, heads, hidden)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x):
        tokens = self.embed(F.gelu(self.stem(x))).transpose(1, 2)
        return self.head(self.block(tokens).mean(dim=1))


def model_for(kind: str) -> nn.Module:
    """The model, in float64; GETA's is quantized (weights and activations)."""
    torch.manual_seed(0)
    model = TokenNet()
    if kind == "geta":
        model_to_quantize_model(model, quant_mode="weight_and_activation")
    # float64: in float32 the ranks' rounding (half batches, reduced gradients) flips some roundings of the
    # quantizers, each flip moves a step size d's gradient by a step, and the runs drift apart by ~1e-3 within 14
    # steps (measured); in float64 they stay within ~1e-9
    return model.double()


def build(kind: str, rank=None):
    """The model and its OTO; GETA's activation ranges calibrated on batch 0 (``rank``'s half of it)."""
    model = model_for(kind)
    if kind == "geta":
        calibrate_activations(model, batch(0, rank)[0])
    return model, OTO(model, torch.zeros(2, CHANNELS, LENGTH, dtype=torch.float64), verify_groups=False)


def batch(step: int, rank=None):
    """Batch ``step``; with ``rank``, that rank's half of it."""
    generator = torch.Generator().manual_seed(100 + step)
    inputs = torch.randn(BATCH, CHANNELS, LENGTH, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, CLASSES, (BATCH,), generator=generator)
    if rank is None:
        return inputs, targets
    share = BATCH // WORLD_SIZE
    return inputs[rank * share:(rank + 1) * share], targets[rank * share:(rank + 1) * share]


def train(kind: str, model, optimizer, rank=None, on_step=None):
    """Train ``STEPS[kind]`` steps; returns the optimizer's pruned units after every step."""
    selections = {}
    for step in range(1, STEPS[kind] + 1):
        inputs, targets = batch(step, rank)
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
        selections[step] = list(optimizer.pruned_group_idxes)
        if on_step is not None:
            on_step(step)
    return selections


def count_reductions(optimizer) -> list:
    """Make ``optimizer`` count its all-reduces; returns the list of counts (``counts[0]``: the running one)."""
    counts = [0]
    reduce = optimizer.shards.all_reduce

    def counted(tensor):
        counts[0] += 1
        return reduce(tensor)

    optimizer.shards.all_reduce = counted
    return counts


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sharded_run(kind: str, rank: int, out_dir: str) -> dict:
    from torch.distributed.fsdp import fully_shard

    model, oto = build(kind, rank)
    fully_shard(model.block)
    fully_shard(model)
    optimizer = getattr(oto, kind)(**SCHEDULES[kind])
    counts, per_step = count_reductions(optimizer), {}

    def record(step):
        per_step[step], counts[0] = counts[0], 0

    report = {"class": type(optimizer).__name__, "selections": train(kind, model, optimizer, rank, record),
              "reductions": per_step}
    metrics = optimizer.compute_metrics()  # a collective: every rank
    report["zero_groups"] = metrics.num_zero_groups
    report["weight_bits"] = dict(getattr(metrics, "weight_bits", {}))
    try:
        oto.construct_subnet(out_dir=os.path.join(out_dir, f"refused{rank}"))
    except ShardedModelError as error:
        report["construct_subnet_refused"] = "gather_full_model" in str(error)
    try:
        getattr(oto, kind)(**SCHEDULES[kind], non_finite="skip")
    except NotImplementedError as error:
        report["skip_refused"] = "non_finite='raise'" in str(error)
    full = gather_full_model(model, model_for(kind))
    if rank == 0:
        torch.save(full.state_dict(), os.path.join(out_dir, f"{kind}.pt"))
    return report


def _uncalibrated_is_refused() -> bool:
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    model_to_quantize_model(model, quant_mode="weight_and_activation")
    oto = OTO(model, torch.zeros(2, 4), verify_groups=False)
    fully_shard(model)
    try:
        oto.geta(lr=0.1)
    except ShardedModelError as error:
        return "calibrate_activations" in str(error)
    return False


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        reports = {kind: _sharded_run(kind, rank, out_dir) for kind in SCHEDULES}
        reports["uncalibrated_refused"] = _uncalibrated_is_refused()
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
            json.dump(reports, handle)
        dist.barrier()  # no rank tears its process group down while another still gathers
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """Both optimizers trained on two gloo ranks: the per-rank reports and the directory of gathered models."""
    out_dir = tmp_path_factory.mktemp("fsdp")
    mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD_SIZE, join=True)
    reports = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]
    return reports, out_dir


def test_uncalibrated_activation_ranges_are_refused_on_a_sharded_model(sharded):
    reports, _ = sharded
    assert all(report["uncalibrated_refused"] for report in reports)


@pytest.mark.parametrize("kind", sorted(SCHEDULES))
def test_a_sharded_step_costs_a_fixed_handful_of_reductions_whatever_the_number_of_groups(kind, sharded):
    """GETA: one per step for the quantizer gradients, one more in joint steps, one more at a period's start (the
    scores); HESSO on a float model: none outside the period starts. Never one per group or parameter."""
    reports, _ = sharded
    counts = {int(step): count for step, count in reports[0][kind]["reductions"].items()}
    assert counts == {int(step): count for step, count in reports[1][kind]["reductions"].items()}
    schedule = SCHEDULES[kind]
    start, duration = schedule["start_pruning_step"], schedule["pruning_steps"] // schedule["pruning_periods"]
    period_starts = {start + 1 + k * duration for k in range(schedule["pruning_periods"])}
    pruning = set(range(start + 1, start + schedule["pruning_steps"] + 1))
    per_step = 1 if kind == "geta" else 0
    for step, count in counts.items():
        joint = kind == "geta" and step in pruning and (step - start) % duration != 0
        # the first period start also counts the units' element numbers once
        expected = per_step + joint + (step in period_starts) + (step == min(period_starts))
        assert count == expected, (step, count, expected)


@pytest.mark.parametrize("kind", sorted(SCHEDULES))
def test_sharded_training_matches_one_process_on_the_whole_batch(kind, sharded, tmp_path):
    reports, out_dir = sharded
    model, oto = build(kind)
    optimizer = getattr(oto, kind)(**SCHEDULES[kind])
    selections = train(kind, model, optimizer)
    expected_class = {"geta": ShardedGETA, "hesso": ShardedHESSO}[kind].__name__
    for report in reports:
        assert report[kind]["class"] == expected_class
        assert report[kind]["construct_subnet_refused"]
        assert report[kind]["skip_refused"]
        assert report[kind]["selections"] == {str(step): units for step, units in selections.items()}
        assert report[kind]["zero_groups"] == optimizer.compute_metrics().num_zero_groups
    assert selections[STEPS[kind]], "the schedule prunes nothing: the comparison would be vacuous"
    assert reports[0][kind]["weight_bits"] == reports[1][kind]["weight_bits"]
    assert reports[0][kind]["weight_bits"] == dict(getattr(optimizer.compute_metrics(), "weight_bits", {}))

    gathered = model_for(kind)
    gathered.load_state_dict(torch.load(out_dir / f"{kind}.pt"))
    oto_gathered = OTO(gathered, torch.zeros(2, CHANNELS, LENGTH, dtype=torch.float64))
    for (name, expected), actual in zip(model.state_dict().items(), gathered.state_dict().values()):
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-8, msg=f"{kind}: {name}")

    inputs, _ = batch(999)
    gathered.eval()
    with torch.no_grad():
        full = gathered(inputs)
    oto_gathered.construct_subnet(out_dir=str(tmp_path))
    with torch.no_grad():
        compressed = gathered(inputs)
    assert sum(p.numel() for p in gathered.parameters()) < sum(p.numel() for p in model.parameters())
    torch.testing.assert_close(compressed, full, rtol=1e-3, atol=1e-4)
