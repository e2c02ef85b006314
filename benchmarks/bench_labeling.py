"""Benchmark: labelling throughput and its overhead over bare forward passes.

Several models are labelled on one graph (the demo graph): images are streamed by DataLoader
workers; with the raw-pixel cache (``--pixel-cache-gb``, default 1 as ``mll demo`` does) the first
model fills it and the others read it, so per model the work is text encoding + image forward
passes + the compact label. The overhead is
(labelling time - bare forward time) / bare forward time, where "bare" is ``encode_image`` over the
same images already decoded, preprocessed and normalised as float tensors in memory.

    uv run python benchmarks/bench_labeling.py [--models N] [--device cpu|cuda] [--scaled]
        [--pixel-cache-gb G]

Each model's bare pass and labelling run twice, alternating, and the faster of each counts (a busy
2-core machine is noisy). ``--scaled`` adds a built (untrained) ViT of width 384, 6 layers, 96 px
to show how the overhead shrinks as the forward pass grows (throughput only: its label is not used).

Appends to benchmarks/results/labeling.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _results import append_rows, stamp


def main() -> None:
    import torch

    from mll_registry.demo.graph import build_demo_graph, demo_graph_path
    from mll_registry.demo.hub import demo_refs
    from mll_registry.graph.bundle import SemanticGraph
    from mll_registry.labels.labeller import LabelConfig, _autocast, clear_checkpoints, label_model
    from mll_registry.models.image_stream import PixelPipeline, decode_all, pixel_cache_path
    from mll_registry.models.loading import load

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--scaled", action="store_true")
    ap.add_argument("--pixel-cache-gb", type=float, default=1.0,
                    help="raw-pixel cache budget (0: every model streams and decodes)")
    args = ap.parse_args()
    path = demo_graph_path()
    g = SemanticGraph.load(path) if (path / "manifest.json").is_file() else build_demo_graph()[0]
    refs = demo_refs()[: args.models]
    if args.scaled:
        import tempfile

        import open_clip  # noqa: F401

        from mll_registry.demo.archs import TINY_ARCHS
        from mll_registry.models.loading import save_open_clip_dir

        cfg_big = {**TINY_ARCHS["tiny-vit"], "embed_dim": 256,
                   "vision_cfg": {"image_size": 96, "layers": 6, "width": 384, "patch_size": 8,
                                  "head_width": 64}}
        big = open_clip.model.CLIP(**cfg_big)
        d = save_open_clip_dir(big, cfg_big, Path(tempfile.mkdtemp()) / "scaled-vit-w384-l6-96px")
        refs.append(f"local-dir:{d}")
    cfg = LabelConfig(device=args.device, batch_size=args.batch_size,
                      pixel_cache_gb=args.pixel_cache_gb)
    lm0 = load(refs[0], device=args.device)
    pipe = PixelPipeline.from_preprocess(lm0.preprocess)
    pixel_cache_path(g.version, pipe).unlink(missing_ok=True)
    t0 = time.perf_counter()
    pixels = decode_all(g.image_paths(), pipe)  # for the bare passes (decode timed for reference)
    pixel_s = time.perf_counter() - t0
    n = len(pixels)
    rows = []
    first_extra = 0.0
    for ref in refs:
        lm = load(ref, device=args.device)
        p = PixelPipeline.from_preprocess(lm.preprocess)
        pix = pixels if p.key == pipe.key else decode_all(g.image_paths(), p)
        m_, s_ = torch.tensor(p.mean).view(1, 3, 1, 1), torch.tensor(p.std).view(1, 3, 1, 1)
        x = (((torch.from_numpy(np.array(pix)).permute(0, 3, 1, 2).float() / 255) - m_) / s_)
        x = x.to(args.device)
        bares, labs = [], []
        for _ in range(2):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.inference_mode(), _autocast(args.device):
                for i in range(0, n, args.batch_size):
                    lm.model.encode_image(x[i:i + args.batch_size], normalize=True)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            bares.append(time.perf_counter() - t0)
            clear_checkpoints(lm, g)
            t0 = time.perf_counter()
            run = label_model(lm, g, cfg)
            labs.append(time.perf_counter() - t0)
            clear_checkpoints(lm, g)
        bare, lab_s = min(bares), min(labs)
        if run.pixels_built or (ref == refs[0] and args.pixel_cache_gb > 0):
            first_extra = max(labs) - lab_s  # the run that built the raw-pixel cache
        rows.append({"model": ref.rsplit("/", 1)[-1], "images": n, "bare_s": round(bare, 2),
                     "label_s": round(lab_s, 2), "overhead": round(lab_s / bare - 1, 3),
                     "images_per_s": round(n / lab_s, 1), "parts": run.seconds})
        print(json.dumps(rows[-1]), flush=True)
    scaled = rows.pop() if args.scaled else None
    bare_t = sum(r["bare_s"] for r in rows)
    lab_t = sum(r["label_s"] for r in rows)
    summary = {"models": len(rows), "images": n, "decode_all_s": round(pixel_s, 2),
               "pixel_cache_gb": args.pixel_cache_gb,
               "overhead": round(lab_t / bare_t - 1, 3),
               "overhead_incl_cache_build": round((lab_t + first_extra) / bare_t - 1, 3),
               "images_per_s": round(n * len(rows) / lab_t, 1), "device": args.device,
               "threads": torch.get_num_threads(), "scaled_model": scaled}
    print(json.dumps(summary, indent=2))
    append_rows("labeling.md", HEADER, [
        f"{stamp()} | {args.device} | {len(rows)} | {n} | {args.pixel_cache_gb} | "
        f"{summary['images_per_s']} | {summary['overhead']:.1%} | "
        f"{summary['overhead_incl_cache_build']:.1%} | " +
        (f"{scaled['images_per_s']}, {scaled['overhead']:.1%}" if scaled else "-")])


HEADER = (
    "# Labelling benchmark\n\nCommand: `uv run python benchmarks/bench_labeling.py --models N "
    "--device cpu [--pixel-cache-gb G]`\n\nDemo graph, demo hub models; overhead = labelling "
    "time / bare `encode_image` time on in-memory normalised tensors - 1, summed over models; "
    "each model's bare pass and labelling run twice, alternating, the faster counts. Images are "
    "streamed by DataLoader workers; with a raw-pixel cache budget the first model's stream also "
    "fills the cache and later models read it (the last overhead column charges that first, "
    "cache-building run).\n\n"
    "| date | machine | device | models | images | pixel cache GB | images/s (labelling) | "
    "overhead | overhead incl. cache build | scaled ViT (w384 l6 96px): images/s, overhead |\n"
    "|---|---|---|---|---|---|---|---|---|---|\n")


if __name__ == "__main__":
    main()
