"""Benchmark: a multi-model labelling pass at real size, against the same models one by one.

``--models`` open_clip models of ``--arch`` (default 4 x ViT-B-32, 224 px) with **random-init
weights** (one seed each; throughput only) on the synthetic JPEG graph of
``bench_labeling_scale.py`` (256 px, 75 per node), no raw-pixel cache: each model labelled alone
(``label_refs([ref])``), then all in one pass (``label_refs(refs)``: each image decoded once). On
CUDA the forward passes run under fp16 autocast. Every label of the pass must be byte-identical to
its alone run.

    uv run python benchmarks/bench_multi_model_scale.py [--models 4] [--arch ViT-B-32]
        [--images 20000] [--device cpu|cuda] [--workers N] [--work /tmp/mll-bench-scale]

Appends to benchmarks/results/multi_model_scale.md; ``benchmarks/gpu_check.sh`` runs it on CUDA.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from _results import append_rows, stamp

HEADER = """# Multi-model labelling passes at real size

Command: `uv run python benchmarks/bench_multi_model_scale.py --models N --arch A --images I
--device D` (GPU: `bash benchmarks/gpu_check.sh`). Random-init weights (throughput only),
synthetic 256 px JPEGs, 75 per node, no raw-pixel cache. Sequential = the sum of each model's
`label_refs([ref])`; pass = one `label_refs(refs)`; identical = every label file byte-equal.

| date | machine | device | arch | models | images | batch | decode workers | sequential s | one pass s | ratio | pass images/s per model | identical |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None, help="decode workers (default: setting)")
    ap.add_argument("--work", default="/tmp/mll-bench-scale")
    args = ap.parse_args()
    work = Path(args.work)
    os.environ["MLL_DATA_DIR"] = str(work / "data")

    import open_clip
    import torch
    from bench_labeling_scale import synthetic_graph

    from mll_registry.fsutil import read_json_object
    from mll_registry.labels.format import label_files
    from mll_registry.labels.labeller import LabelConfig, label_refs
    from mll_registry.models.loading import save_open_clip_dir
    from mll_registry.settings import DEFAULTS

    _, g = synthetic_graph(work, args.images)
    refs = []
    for seed in range(args.models):
        mdir = work / "models" / f"{args.arch}-random-{seed}"
        if not (mdir / "open_clip_config.json").is_file():
            torch.manual_seed(seed)  # random init: throughput only
            model = open_clip.create_model(args.arch, pretrained=None)
            save_open_clip_dir(model, open_clip.get_model_config(args.arch), mdir)
            del model
        refs.append(f"local-dir:{mdir}")
    bs = args.batch_size or (DEFAULTS.batch_size if args.device.startswith("cuda") else 64)
    cfg = LabelConfig(device=args.device, batch_size=bs, pixel_cache_gb=0.0,
                      decode_workers=DEFAULTS.decode_workers if args.workers is None
                      else args.workers)
    out = work / "multi-labels"
    shutil.rmtree(out, ignore_errors=True)
    seq = 0.0
    for i, ref in enumerate(refs):
        t = time.perf_counter()
        label_refs([ref], g, cfg, [out / "alone" / str(i)])
        seq += time.perf_counter() - t
        print(f"alone {i}: {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    label_refs(refs, g, cfg, [out / "pass" / str(i) for i in range(len(refs))])
    took = time.perf_counter() - t
    same = all((out / "pass" / str(i) / f).read_bytes() == (out / "alone" / str(i) / f).read_bytes()
               for i in range(len(refs))
               for f in label_files(read_json_object(out / "alone" / str(i) / "meta.json")))
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else args.device
    print(f"{len(refs)} x {args.arch}: sequential {seq:.1f} s, one pass {took:.1f} s, "
          f"ratio {took / seq:.2f}, identical {same}", flush=True)
    append_rows("multi_model_scale.md", HEADER, [
        f"{stamp()} | {device} | {args.arch} | {len(refs)} | {len(g.images)} | {bs} | "
        f"{cfg.decode_workers} | {seq:.1f} | {took:.1f} | {took / seq:.2f} | "
        f"{len(g.images) / took:.1f} | {'yes' if same else 'NO'}"])
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
