"""Benchmark: streaming labelling of a real-size architecture vs its bare forward pass.

open_clip ``ViT-B-32`` at 224 px with **random-init weights** (throughput only: the label is not
used for anything) on a synthetic graph of >= 20,000 JPEG images (256 px, coloured shapes, one
folder per WordNet noun synset, 75 per node). In the same process:

* bare forward: ``encode_image`` over ``--bare`` images already decoded, preprocessed and
  normalised as float tensors in memory (measured before and after labelling; the mean counts);
* labelling: ``mll_registry.labels.labeller.label_model`` with the default settings (images streamed by
  DataLoader workers, no raw-pixel cache), text tower, compact label, checkpoints included;
* peak RSS of the labelling process and of its decode workers, and the disk used by caches
  (checkpoints at their largest, pixel cache) against the images' encoded size.

    uv run python benchmarks/bench_labeling_scale.py [--images 20000] [--device cpu|cuda]
        [--arch ViT-B-32] [--bare 512] [--work /tmp/mll-bench-scale]

Appends to benchmarks/results/labeling_scale.md. ``benchmarks/gpu_check.sh`` runs it on CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import append_rows, stamp


def synthetic_images(root: Path, n_images: int, per_node: int = 75, side: int = 256,
                     node_offset: int = 0) -> Path:
    """``root/<wnid>/<i>.jpg``: coloured shapes on a coloured ground, seeded per image; nodes are
    deep WordNet leaves from the ``node_offset``-th on (an offset gives other nodes)."""
    from PIL import Image, ImageDraw

    from mll_registry.graph import wordnet as W
    done = root / ".complete"
    if done.is_file() and int(done.read_text()) == n_images:
        return root
    wn = W.wn()
    leaves = [s for s in wn.all_synsets("n") if not s.hyponyms() and s.min_depth() >= 6]
    n_nodes = -(-n_images // per_node)
    for k, s in enumerate(leaves[node_offset:node_offset + n_nodes]):
        d = root / W.wnid(s)
        d.mkdir(parents=True, exist_ok=True)
        for i in range(min(per_node, n_images - k * per_node)):
            rng = np.random.default_rng([k + node_offset, i])
            im = Image.new("RGB", (side, side), tuple(int(v) for v in rng.integers(0, 256, 3)))
            dr = ImageDraw.Draw(im)
            for _ in range(6):
                x0, y0 = rng.integers(0, side - 40, 2)
                w, h = rng.integers(20, side // 2, 2)
                box = (int(x0), int(y0), int(x0 + w), int(y0 + h))
                fill = tuple(int(v) for v in rng.integers(0, 256, 3))
                (dr.ellipse if rng.random() < 0.5 else dr.rectangle)(box, fill=fill)
            im.save(d / f"{i}.jpg", quality=90)
    done.write_text(str(n_images))
    return root


def synthetic_graph(work: Path, n_images: int) -> tuple[Path, Any]:
    """The synthetic images under ``work`` and their graph (built once, then loaded)."""
    from mll_registry.graph.bundle import GraphConfig, SampleDataset, SemanticGraph, build_and_save

    images = synthetic_images(work / "images" / str(n_images), n_images)
    gpath = work / "graphs" / str(n_images)
    if (gpath / "manifest.json").is_file():
        return images, SemanticGraph.load(gpath)
    return images, build_and_save([SampleDataset("synthetic", images)], gpath,
                                  GraphConfig(expand_hypernyms=False))[0]


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bare", type=int, default=512, help="images in the bare-forward pass")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None, help="decode workers (default: setting)")
    ap.add_argument("--work", default="/tmp/mll-bench-scale")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    os.environ["MLL_DATA_DIR"] = str(work / "data")

    import open_clip

    from mll_registry.labels.labeller import LabelConfig, _autocast, _work_dir, label_model
    from mll_registry.models.image_stream import PixelPipeline, decode_all
    from mll_registry.models.loading import load, save_open_clip_dir
    from mll_registry.settings import DEFAULTS

    t0 = time.perf_counter()
    images, g = synthetic_graph(work, args.images)
    print(f"data ready in {time.perf_counter() - t0:.0f} s: {g}", flush=True)

    mdir = work / "models" / f"{args.arch}-random"
    if not (mdir / "open_clip_config.json").is_file():
        model = open_clip.create_model(args.arch, pretrained=None)  # random init: throughput only
        cfg = open_clip.get_model_config(args.arch)
        save_open_clip_dir(model, cfg, mdir)
        del model
    lm = load(f"local-dir:{mdir}", device=args.device)
    bs = args.batch_size or (DEFAULTS.batch_size if args.device.startswith("cuda") else 64)
    cfg = LabelConfig(device=args.device, batch_size=bs,
                      decode_workers=DEFAULTS.decode_workers if args.workers is None
                      else args.workers)
    pipe = PixelPipeline.from_preprocess(lm.preprocess)
    sample = decode_all(g.image_paths()[: args.bare], pipe)
    scale, bias = pipe.normaliser(args.device)
    x = torch.addcmul(bias, torch.from_numpy(sample).to(args.device).permute(0, 3, 1, 2).float(),
                      scale)

    def bare() -> float:
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        with torch.inference_mode(), _autocast(args.device):
            lm.model.encode_image(x[:bs], normalize=True)  # warm-up
            sync()
            t = time.perf_counter()
            for i in range(0, len(x), bs):
                lm.model.encode_image(x[i:i + bs], normalize=True)
            sync()
        return len(x) / (time.perf_counter() - t)

    bare_before = bare()
    print(f"bare forward: {bare_before:.1f} images/s", flush=True)
    peak_ckpt = [0]
    ckdir = _work_dir(lm, g, None)

    def on_chunk(c: int) -> None:
        peak_ckpt[0] = max(peak_ckpt[0], dir_bytes(ckdir))

    import shutil

    shutil.rmtree(ckdir, ignore_errors=True)
    t = time.perf_counter()
    run = label_model(lm, g, cfg, on_chunk=on_chunk)
    label_s = time.perf_counter() - t
    shutil.rmtree(ckdir, ignore_errors=True)
    bare_after = bare()
    bare_ips = (bare_before + bare_after) / 2
    label_ips = len(g.images) / label_s
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB -> GB
    rss_workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
    out = {
        "arch": args.arch, "device": args.device, "images": len(g.images), "nodes": len(g.nodes),
        "batch_size": bs, "decode_workers": cfg.decode_workers,
        "bare_images_per_s": [round(bare_before, 2), round(bare_after, 2)],
        "label_images_per_s": round(label_ips, 2), "ratio": round(label_ips / bare_ips, 3),
        "label_s": round(label_s, 1), "parts": run.seconds, "pixel_source": run.pixel_source,
        "peak_rss_gb": round(rss, 2), "peak_rss_worker_gb": round(rss_workers, 2),
        "encoded_images_mb": round(dir_bytes(images) / 1e6, 1),
        "checkpoints_peak_mb": round(peak_ckpt[0] / 1e6, 1),
        "pixel_cache_mb": round(dir_bytes(work / "data" / "cache" / "pixels") / 1e6, 1),
        "label_mb": round(run.label.bytes_per_image() * len(g.images) / 1e6, 1),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(out, indent=2))
    if args.no_record:
        return
    append_rows(
        "labeling_scale.md",
        "# Labelling at scale: streaming vs bare forward\n\nCommand: `uv run python "
        "benchmarks/bench_labeling_scale.py --images N --device D` (GPU: `bash "
        "benchmarks/gpu_check.sh`). open_clip architecture with random-init weights (throughput "
        "only), synthetic graph of 256 px JPEGs, 75 per node. Ratio = labelling images/s "
        "(whole `label_model`: streamed decode, text tower, forward, compact label, "
        "checkpoints) / bare `encode_image` images/s on in-memory normalised tensors, same "
        "process (bare measured before and after; mean). Peak RSS: labelling process / "
        "largest decode worker. Caches: chunk checkpoints at their largest, raw-pixel cache "
        "(off by default), against the encoded images.\n\n"
        "| date | machine | device | arch | images | batch | bare img/s | labelling img/s | "
        "ratio | peak RSS GB (main / worker) | encoded images MB | checkpoints MB | "
        "pixel cache MB | label MB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        [f"{stamp()} | {args.device} | {args.arch} | {out['images']} | {bs} | "
         f"{bare_ips:.1f} | {label_ips:.1f} | {out['ratio']:.1%} | {rss:.2f} / "
         f"{rss_workers:.2f} | {out['encoded_images_mb']} | {out['checkpoints_peak_mb']} | "
         f"{out['pixel_cache_mb']} | {out['label_mb']}"])


if __name__ == "__main__":
    main()
