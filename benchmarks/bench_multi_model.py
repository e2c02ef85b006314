"""Benchmark: a multi-model labelling pass against the same models labelled one after another.

On the demo graph with the demo hub's models, no raw-pixel cache (every run decodes what it
encodes): each model is labelled alone (``label_refs([ref])``: load, text tower, streamed decode
+ forward, compact label, files written), then the first 2, 5 and 10 models in one pass
(``label_refs(refs)``: each graph image decoded once for all of them). The sequential time of N
models is the sum of their alone runs; ratio = pass / sequential. Every label of a pass must be
byte-identical to its alone run (every label file but meta.json, the embeddings file).

    uv run python benchmarks/bench_multi_model.py [--sizes 2,5,10] [--device cpu]

Appends to benchmarks/results/multi_model.md.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from _results import append_rows, stamp

HEADER = """# Multi-model labelling passes

Command: `uv run python benchmarks/bench_multi_model.py --sizes 2,5,10 --device cpu`

Demo graph, demo hub models, no raw-pixel cache. Sequential = the sum of each model's run of its
own (`label_refs([ref])`: load, text tower, streamed decode + forward, compact label, files
written); pass = the same models in one `label_refs(refs)` call (each graph image decoded once).
Identical: every label file and embeddings file of the pass equals its alone run's, byte for byte.

| date | machine | device | images | models | sequential s | one pass s | ratio | identical |
|---|---|---|---|---|---|---|---|---|
"""



def label_file_names(path: Path) -> list[str]:
    """The files of the label at ``path`` besides meta.json (which holds timings)."""
    from mll_registry.fsutil import read_json_object
    from mll_registry.labels.format import label_files

    return label_files(read_json_object(path / "meta.json"))


def main() -> None:
    from mll_registry.demo.graph import build_demo_graph, demo_graph_path
    from mll_registry.demo.hub import demo_refs
    from mll_registry.graph.bundle import SemanticGraph
    from mll_registry.labels.embeddings import embeddings_path
    from mll_registry.labels.labeller import LabelConfig, label_refs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2,5,10")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    path = demo_graph_path()
    g = SemanticGraph.load(path) if (path / "manifest.json").is_file() else build_demo_graph()[0]
    refs = demo_refs()[: max(sizes)]
    cfg = LabelConfig(device=args.device, pixel_cache_gb=0.0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-multi-"))
    try:
        alone: dict[str, float] = {}
        for i, ref in enumerate(refs):
            t = time.perf_counter()
            label_refs([ref], g, cfg, [tmp / "alone" / str(i)], root=tmp / "data")
            alone[ref] = time.perf_counter() - t
            print(f"alone {ref.rsplit('/', 1)[-1]}: {alone[ref]:.1f} s", flush=True)
        rows = []
        for n in sizes:
            out = tmp / f"pass{n}"
            t = time.perf_counter()
            label_refs(refs[:n], g, cfg, [out / str(i) for i in range(n)], root=tmp / "data")
            took = time.perf_counter() - t
            seq = sum(alone[r] for r in refs[:n])
            same = all(
                (out / str(i) / f).read_bytes() == (tmp / "alone" / str(i) / f).read_bytes()
                for i in range(n) for f in label_file_names(tmp / "alone" / str(i))) and all(
                embeddings_path(out / str(i)).read_bytes()
                == embeddings_path(tmp / "alone" / str(i)).read_bytes() for i in range(n))
            print(f"{n} models: sequential {seq:.1f} s, one pass {took:.1f} s, "
                  f"ratio {took / seq:.2f}, identical {same}", flush=True)
            rows.append(f"{stamp()} | {args.device} | {len(g.images)} | {n} | {seq:.1f} | "
                        f"{took:.1f} | {took / seq:.2f} | {'yes' if same else 'NO'}")
            shutil.rmtree(out)
        print(append_rows("multi_model.md", HEADER, rows))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
