"""Adam's moments and bias-corrected direction in one fused pass per tensor, written into the gradients.

The seven ``torch._foreach_*`` kernels that compute ``m``, ``v`` and ``m̂ / (sqrt(v̂) + eps)`` read and write
each parameter-sized tensor about 17 times, and the element-wise ``sqrt`` alone cost a third of GETA's step on
CPU (issue 15: 5-7x ``AdamW(fused=True)``). ``torch._fused_adam_`` (the kernel behind ``torch.optim.Adam(
fused=True)``) does the same in one pass, but it writes the step into a parameter, not the direction into the
gradient. It is run here on a zeroed scratch chunk in place of the parameter with ``lr = -1``, so that the
chunk receives exactly ``+m̂ / (sqrt(v̂) + eps)``, then copied into the gradient; the chunk (128 K elements)
stays in cache, so the scratch costs no memory pass and no parameter-sized buffer (the optimizer's state stays
its two moments, as AdamW's).

The first moment is bit-identical to the foreach kernels, the second one too except where the kernel's scalar
tail (the last elements of a chunk that fill no vector) rounds it once differently, and the direction differs
by float rounding only (the kernel divides by the bias corrections in another order): at most a few units in
the last place (measured 5). Bit-identical resume holds (the same kernels run on both sides).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import Tensor

#: Elements per scratch chunk: 512 KB of float32, small enough to stay in a core's cache (measured best of
#: 16 K - 1 M on the 2-core CPU machine).
CHUNK = 1 << 17

#: Dtypes the fused path takes: the kernel computes half precisions in float32, which would differ from the
#: foreach kernels' rounding by more than a few units in the last place.
FUSED_DTYPES = (torch.float32, torch.float64)


def fused_applicable(tensors: Sequence[Tensor]) -> bool:
    """True when :func:`fused_adam_directions` can take these gradients and moments: this torch has the kernel,
    and every tensor is a dense, contiguous CPU tensor of float32/float64."""
    if not hasattr(torch, "_fused_adam_"):
        return False
    return all(t.device.type == "cpu" and t.layout == torch.strided and t.dtype in FUSED_DTYPES
               and t.is_contiguous() for t in tensors)


@torch.no_grad()
def fused_adam_directions(grads: Sequence[Tensor], first: Sequence[Tensor], second: Sequence[Tensor],
                          beta1: float, beta2: float, eps: float, step: int) -> Tuple[List[Tensor], Tensor]:
    """Update the moments ``first``/``second`` with ``grads`` (Adam, no weight decay) and overwrite each gradient
    with the bias-corrected direction ``m̂ / (sqrt(v̂) + eps)`` of step ``step``.

    Returns ``grads`` and their new 2-norms (float32, one per tensor; inf/NaN where a direction is), measured on
    the chunks while they are in cache, so that the finiteness check needs no pass of its own."""
    scratch = {}
    steps = torch.tensor(float(step))
    norms = []
    for grad, moment1, moment2 in zip(grads, first, second):
        chunk_norms = []
        buffer = scratch.get(grad.dtype)
        if buffer is None:
            buffer = scratch[grad.dtype] = torch.empty(CHUNK, dtype=grad.dtype)
        flat_grad, flat1, flat2 = grad.view(-1), moment1.view(-1), moment2.view(-1)
        for begin in range(0, flat_grad.numel(), CHUNK):
            end = min(begin + CHUNK, flat_grad.numel())
            chunk, part = buffer[:end - begin].zero_(), flat_grad[begin:end]
            torch._fused_adam_([chunk], [part], [flat1[begin:end]], [flat2[begin:end]], [], [steps], lr=-1.0,
                               beta1=beta1, beta2=beta2, weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)
            chunk_norms.append(torch.linalg.vector_norm(chunk).to(torch.float32))
            part.copy_(chunk)
        norms.append(torch.linalg.vector_norm(torch.stack(chunk_norms)) if chunk_norms
                     else grad.new_zeros((), dtype=torch.float32))
    return list(grads), torch.stack(norms) if norms else torch.zeros(0)
