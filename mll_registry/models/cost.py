"""What running a model on one image costs (issue #41 item 2): parameters, GFLOPs and time.

A selection that can run a few models instead of the whole hub needs to know what each costs.
Measured once, when a model is labelled, and recorded in its label (``meta.json``'s ``cost``) and
registry version (tags ``mll.params``, ``mll.gflops``, ``mll.ms_per_image``):

* ``params``: the whole model's parameters; ``image_params``: the image tower's, the part that
  runs per image (class texts are encoded once per task);
* ``gflops``: floating-point operations of one image's forward pass through the image tower at
  the model's input size, counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode``
  (a multiply-add counts two);
* ``ms_per_image``: the median wall time per image of :data:`TIMED_BATCH` images through the
  image tower on the labelling device, after one warm-up pass (fp32 on CPU; CUDA synchronised).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

TIMED_BATCH = 8  # images per timed forward pass
TIMED_REPEATS = 3  # timed passes; the median is kept


@dataclass(frozen=True)
class InferenceCost:
    """One model's cost of one image (see the module docstring)."""

    params: int
    image_params: int
    gflops: float
    ms_per_image: float
    device: str
    input_size: tuple[int, int]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d


def input_size(model: Any) -> tuple[int, int]:
    """(height, width) the image tower takes."""
    size = getattr(getattr(model, "visual", None), "image_size", 224)
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def image_gflops(model: Any, device: str = "cpu") -> float:
    """GFLOPs of one image through ``model.encode_image`` at its input size (PyTorch's
    FlopCounterMode; multiply-adds count two)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    h, w = input_size(model)
    x = torch.zeros(1, 3, h, w, device=device)
    counter = FlopCounterMode(display=False)
    # nn.MultiheadAttention's inference fast path is one fused op the counter has no formula
    # for (it would count the attention blocks as 0 FLOPs): count the same maths unfused
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), counter:
            model.encode_image(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return counter.get_total_flops() / 1e9


def measure_cost(model: Any, device: str = "cpu") -> InferenceCost:
    """The :class:`InferenceCost` of an open_clip ``model`` (in eval mode) on ``device``."""
    import torch

    h, w = input_size(model)
    x = torch.rand(TIMED_BATCH, 3, h, w, device=device)
    times = []
    with torch.no_grad():
        model.encode_image(x)  # warm-up: allocations, kernels, caches
        for _ in range(TIMED_REPEATS):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.encode_image(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    ms = sorted(times)[len(times) // 2] / TIMED_BATCH * 1e3
    visual = getattr(model, "visual", model)
    return InferenceCost(
        params=int(sum(p.numel() for p in model.parameters())),
        image_params=int(sum(p.numel() for p in visual.parameters())),
        gflops=round(image_gflops(model, device), 6), ms_per_image=round(ms, 4),
        device=device, input_size=(h, w))
