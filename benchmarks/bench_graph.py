"""Benchmark: build a semantic graph over a synthetic 1,000-class x 50-image ImageFolder.

Classes are 1,000 real WordNet noun synsets (leaves under ``animal.n.01`` and ``artifact.n.01``,
by offset), folders named by wnid like ImageNet; images are distinct 48x48 JPEGs of noise.
The build runs in a child process so that its peak RSS is its own.

    uv run python benchmarks/bench_graph.py [--classes 1000] [--images 50] [--dir /tmp/...]

Results are appended to benchmarks/results/graph.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _results import append_rows, stamp


def pick_synsets(n: int) -> list[str]:
    from mll_registry.graph import wordnet as W
    wn = W.wn()
    roots = [wn.synset("animal.n.01"), wn.synset("artifact.n.01")]
    leaves = sorted({s for r in roots for s in r.closure(lambda s: s.hyponyms())
                     if not s.hyponyms()}, key=lambda s: s.offset())
    step = max(1, len(leaves) // n)
    return [W.wnid(s) for s in leaves[::step][:n]]


def generate(root: Path, classes: int, images: int) -> float:
    from PIL import Image

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    for wnid in pick_synsets(classes):
        d = root / wnid
        d.mkdir(parents=True, exist_ok=True)
        for i in range(images):
            arr = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"{wnid}_{i:04d}.JPEG", quality=85)
    (root / ".complete").write_text(f"{classes}x{images}")
    return time.perf_counter() - t0


def child(root: str, out: str) -> None:
    from mll_registry.graph.bundle import GraphConfig, SampleDataset, build_and_save

    t0 = time.perf_counter()
    g, rep = build_and_save([SampleDataset("synthetic", Path(root))], out, GraphConfig())
    total = time.perf_counter() - t0
    print(json.dumps({"seconds_total": round(total, 2), "seconds_build": rep.seconds,
                      **g.summary(), "peak_rss_mb": round(
                          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/mll-bench-graph"))
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    data = args.dir / f"data-{args.classes}x{args.images}"
    gen_s = None
    if not (data / ".complete").exists():
        gen_s = generate(data, args.classes, args.images)
    proc = subprocess.run([sys.executable, __file__, "--child", str(data),
                           str(args.dir / "bundle")], capture_output=True, text=True, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update(classes=args.classes, images_per_class=args.images,
               generate_seconds=None if gen_s is None else round(gen_s, 1))
    print(json.dumps(res, indent=2))
    append_rows(
        "graph.md",
        "# Graph build benchmark\n\nCommand: `uv run python benchmarks/bench_graph.py`\n\n"
        "build = `build_graph` (WordNet load, listing, checking + hashing drawn images);\n"
        "total = build + writing the parquet bundle, process start excluded.\n\n"
        "| date | machine | classes x images | nodes | images | build s | total s | "
        "peak RSS MB |\n|---|---|---|---|---|---|---|---|\n",
        [f"{stamp()} | {args.classes}x{args.images} | {res['nodes']} | {res['images']} | "
         f"{res['seconds_build']:.1f} | {res['seconds_total']:.1f} | {res['peak_rss_mb']:.0f}"])

if __name__ == "__main__":
    main()
