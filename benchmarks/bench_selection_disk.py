"""Benchmark: selection at hub scale with labels read from disk, end to end from the shell.

1,000 models x 10,000 nodes x 100 classes at the paper's 75 images per node (750,000 images),
in each label format (``--layouts``): ``mll-label/1`` (one ``label.safetensors``: ``topk_idx``
uint16 96 MB, ``topk_score`` fp16 96 MB, ``member_score``) and ``mll-label/2`` (``ranks.safetensors``:
``topk_idx`` alone, the scores apart, the general score in meta.json), with
``summary.parquet`` and ``meta.json``, in the local label store. The graph's nodes are 10,000
real WordNet noun synsets (captions from WordNet); each node owns 75 synthetic image rows. The
task has 100 classes named by node lemmas.

Disk: 1,000 full labels are 194 GB, more than this machine has, so the array files are *sparse*:
full logical size and layout, with real (synthetic, seeded) rows written for the task's
candidate nodes' images and for every ``member_score``; other rows are holes. Selection reads only
candidate rows, so what it reads is real data; the file layout it seeks in is full size (format 2
labels carry no checksums here: hashing 194 GB of holes is not what a selection does). Files
are flushed and dropped from the page cache (``posix_fadvise(DONTNEED)``) before the cold run;
the disk bytes of a run are its ``ru_inblock``.

Measured as a user runs it: ``mll select --task T --graph G --labels local --no-log --json`` in a
fresh process (imports, graph load and verification, matching with the node-embedding cache warm,
opening 1,000 labels, candidate rows, counts, choice), cold page cache then warm; peak RSS of
that process.

    uv run python benchmarks/bench_selection_disk.py [--models 1000] [--nodes 10000]
        [--classes 100] [--layouts 1,2] [--work /tmp/mll-bench-select]

Appends to benchmarks/results/selection_disk.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _results import append_rows, stamp

K = 64
PER_NODE = 75


def graph_bundle(out: Path, n_nodes: int) -> Path:
    from mll_registry.graph import wordnet as W
    from mll_registry.graph.bundle import FORMAT, SemanticGraph, content_version

    if (out / "manifest.json").is_file():
        return out
    wn = W.wn()
    syn = [s for s in wn.all_synsets("n")][:n_nodes]
    n_img = n_nodes * PER_NODE
    nodes = pd.DataFrame({
        "node_id": [s.name() for s in syn], "wnid": [W.wnid(s) for s in syn],
        "lemma": [W.lemma(s) for s in syn], "definition": [s.definition() for s in syn],
        "caption": [f"{W.lemma(s)} which is {s.definition()}" for s in syn],
        "lexname": [s.lexname() for s in syn], "depth": [s.min_depth() for s in syn],
        "n_own": PER_NODE, "n_images": PER_NODE})
    owner = np.repeat(np.arange(n_nodes), PER_NODE)
    ids = nodes["node_id"].to_numpy()
    images = pd.DataFrame({"image_id": np.arange(n_img, dtype=np.int64), "source": "synthetic",
                           "relpath": [f"{ids[o]}/{i % PER_NODE}.jpg" for i, o in
                                       enumerate(owner)],
                           "node_id": ids[owner], "digest": [f"{i:032x}" for i in range(n_img)]})
    members = pd.DataFrame({"node_id": ids[owner], "image_id": np.arange(n_img, dtype=np.int64),
                            "own": True})
    edges = pd.DataFrame({"parent": pd.Series(dtype=str), "child": pd.Series(dtype=str)})
    version = content_version(nodes, edges, images, members)
    manifest = {"format": FORMAT, "version": version, "config": {"cap": PER_NODE},
                "sources": {"synthetic": "/nonexistent"}, "counts": {}, "report": [],
                "wordnet": "3.0"}
    SemanticGraph(nodes, edges, images, members, manifest).save(out)
    return out


def write_sparse_label(d: Path, graph_version: str, label_hash: str, ref: str, n_img: int,
                       n_nodes: int, cand_imgs: np.ndarray, owner: np.ndarray,
                       summary: bytes, rng: np.random.Generator) -> None:
    d.mkdir(parents=True, exist_ok=True)
    spec = {"topk_idx": ("U16", n_img * K * 2), "topk_score": ("F16", n_img * K * 2),
            "member_score": ("F16", n_img * 2)}
    header: dict = {"__metadata__": {"format": "mll-label/1", "graph_version": graph_version}}
    off = 0
    for name, (dt, size) in spec.items():
        shape = [n_img, K] if name != "member_score" else [n_img]
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + size]}
        off += size
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    base = 8 + len(hb)
    idx = rng.integers(0, n_nodes, size=(len(cand_imgs), K), dtype=np.uint16)
    hit = rng.random(len(cand_imgs)) < rng.uniform(0.2, 0.8)
    idx[hit, 0] = owner[cand_imgs[hit]]
    with (d / "label.safetensors").open("wb") as f:
        f.write(len(hb).to_bytes(8, "little") + hb)
        f.truncate(base + off)  # sparse: holes where nothing is written
        # candidate images are whole nodes: contiguous runs of PER_NODE rows
        for j in range(0, len(cand_imgs), PER_NODE):
            f.seek(base + int(cand_imgs[j]) * K * 2)
            f.write(idx[j:j + PER_NODE].tobytes())
        f.seek(base + 2 * n_img * K * 2)
        f.write(rng.random(n_img).astype(np.float16).tobytes())
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    (d / "summary.parquet").write_bytes(summary)
    meta = {"format": "mll-label/1", "graph_version": graph_version, "label_hash": label_hash,
            "model_ref": ref, "revision": "sha256:" + hashlib.sha256(ref.encode()).hexdigest(),
            "source": ref, "top_k": K}
    (d / "meta.json").write_text(json.dumps(meta))


def _sparse_safetensors(f: Path, arrays: dict, metadata: dict) -> int:
    """A safetensors file of ``arrays`` (name -> (dtype code, shape)) with holes for data;
    returns the data section's offset."""
    header: dict = {"__metadata__": metadata}
    off = 0
    for name, (dt, shape) in arrays.items():
        size = int(np.prod(shape)) * 2
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + size]}
        off += size
    hb = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with f.open("wb") as fh:
        fh.write(len(hb).to_bytes(8, "little") + hb)
        fh.truncate(8 + len(hb) + off)
    return 8 + len(hb)


def write_sparse_label_v2(d: Path, graph_version: str, label_hash: str, ref: str, n_img: int,
                          n_nodes: int, cand_imgs: np.ndarray, owner: np.ndarray,
                          summary: bytes, mean_acc1: float, rng: np.random.Generator) -> None:
    """The same synthetic label as :func:`write_sparse_label`, in ``mll-label/2``."""
    from mll_registry.labels.format import CHUNK_ROWS, FORMAT

    d.mkdir(parents=True, exist_ok=True)
    head = {"format": FORMAT, "graph_version": graph_version}
    idx = rng.integers(0, n_nodes, size=(len(cand_imgs), K), dtype=np.uint16)
    hit = rng.random(len(cand_imgs)) < rng.uniform(0.2, 0.8)
    idx[hit, 0] = owner[cand_imgs[hit]]
    chunks = -(-n_img // CHUNK_ROWS)
    base = _sparse_safetensors(d / "ranks.safetensors", {"topk_idx": ("U16", (n_img, K))}, head)
    with (d / "ranks.safetensors").open("r+b") as f:
        # candidate images are whole nodes: contiguous runs of PER_NODE rows
        for j in range(0, len(cand_imgs), PER_NODE):
            f.seek(base + int(cand_imgs[j]) * K * 2)
            f.write(idx[j:j + PER_NODE].tobytes())
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    sb = _sparse_safetensors(d / "scores.safetensors", {"topk_score": ("F16", (n_img, K)),
                                                         "member_score": ("F16", (n_img,))}, head)
    with (d / "scores.safetensors").open("r+b") as f:
        f.seek(sb + n_img * K * 2)
        f.write(rng.random(n_img).astype(np.float16).tobytes())
    (d / "summary.parquet").write_bytes(summary)
    meta = {"format": FORMAT, "graph_version": graph_version, "label_hash": label_hash,
            "model_ref": ref, "revision": "sha256:" + hashlib.sha256(ref.encode()).hexdigest(),
            "source": ref, "top_k": K, "mean_acc1": mean_acc1,
            "layout": {"images": n_img, "top_k": K, "chunk_rows": CHUNK_ROWS, "chunks": chunks,
                       "index_dtype": "uint16", "memberships": n_img}}
    (d / "meta.json").write_text(json.dumps(meta))


def _array_files(d: Path) -> list[Path]:
    return [p for p in d.rglob("*.safetensors")]


def run_select(task: Path, graph: Path, data: Path) -> dict:
    cmd = [str(Path(sys.executable).parent / "mll"), "select", "--task", str(task), "--graph",
           str(graph), "--labels", "local", "--no-log", "--json", "--data-dir", str(data)]
    blocks = resource.getrusage(resource.RUSAGE_CHILDREN).ru_inblock
    rss_file = data / "rss.txt"
    t = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *cmd],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(p.stderr[-2000:])
    out = json.loads(p.stdout)
    disk = (resource.getrusage(resource.RUSAGE_CHILDREN).ru_inblock - blocks) * 512
    return {"wall_s": round(wall, 2), "models": out["models_considered"],
            "selected": out["selected_models"], "disk_mb": round(disk / 1e6),
            "rss_gb": int(rss_file.read_text().split()[-1]) / 1e6,
            "chosen": [[m["model"] for m in c["models"]] for c in out["classes"]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=10000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--layouts", default="1,2", help="label formats to measure, in one run")
    ap.add_argument("--work", default="/tmp/mll-bench-select")
    args = ap.parse_args()
    work = Path(args.work)
    os.environ["MLL_DATA_DIR"] = str(work / "data")

    from mll_registry.app.root import App
    from mll_registry.graph.bundle import SemanticGraph
    from mll_registry.models.refs import ModelRef
    from mll_registry.selection.matching import match
    from mll_registry.settings import DEFAULTS
    from mll_registry.task import Task

    gpath = graph_bundle(work / f"graph-{args.nodes}", args.nodes)
    g = SemanticGraph.load(gpath)
    rng = np.random.default_rng(0)
    lemmas = g.nodes["lemma"].drop_duplicates(keep=False)
    names = sorted(rng.choice(lemmas.to_numpy(), args.classes, replace=False).tolist())
    task = work / "task.yaml"
    task.write_text(json.dumps({"name": "hub-scale", "classes": names}))  # JSON is YAML
    a = App.configured(data_dir=str(work / "data"), label_store="local")
    m = match(Task.from_yaml(task), g, embedder=a.embedder, provider=a.caption_provider,
              top_n=DEFAULTS.top_n, root=str(work / "data"))  # warms the node-embedding cache
    n_img, n_nodes = len(g.images), len(g.nodes)
    owner = g.member_arrays()[0]
    cand = np.sort(np.asarray(m.cand_nodes))
    cand_imgs = (cand[:, None] * PER_NODE + np.arange(PER_NODE)[None, :]).ravel()
    h = DEFAULTS.label_hash()
    summary_path = work / "summary.parquet"
    acc1 = rng.random(n_nodes)
    pd.DataFrame({"node_id": g.nodes["node_id"], "n_images": PER_NODE,
                  "acc1": acc1, "acc5": rng.random(n_nodes),
                  "mean_own": rng.random(n_nodes)}).to_parquet(summary_path, index=False)
    summary = summary_path.read_bytes()
    rows, results = [], {}
    for layout in [int(x) for x in args.layouts.split(",")]:
        data = work / f"data-v{layout}"
        (data / "cache").mkdir(parents=True, exist_ok=True)  # the node-embedding cache: warm
        for f in (work / "data" / "cache").glob("*"):
            if not (data / "cache" / f.name).exists():
                os.symlink(f, data / "cache" / f.name)
        stamp_file = data / "labels" / f".complete-{g.version}-{args.models}-{len(cand)}"
        if not stamp_file.is_file():
            for i in range(args.models):
                ref = f"local-dir:/models/synthetic-{i:04d}"
                d = data / "labels" / ModelRef.parse(ref).key / f"{g.version}-{h}"
                if layout == 1:
                    write_sparse_label(d, g.version, h, ref, n_img, n_nodes, cand_imgs, owner,
                                       summary, np.random.default_rng(i + 1))
                else:
                    write_sparse_label_v2(d, g.version, h, ref, n_img, n_nodes, cand_imgs,
                                          owner, summary, float(acc1.mean()),
                                          np.random.default_rng(i + 1))
                if i % 100 == 99:
                    print(f"layout {layout}: {i + 1} labels written", flush=True)
            stamp_file.write_text("ok")
        files = [f for d in (data / "labels").glob(f"*/{g.version}-{h}")
                 for f in _array_files(d)]
        for f in files:  # drop the label files from the page cache for the cold run
            fd = os.open(f, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        for f in (data / "labels").glob(f"*/{g.version}-{h}/summary.parquet"):
            fd = os.open(f, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        logical = sum(f.stat().st_size for f in files)
        cold = run_select(task, gpath, data)
        warm = run_select(task, gpath, data)
        rss = max(cold["rss_gb"], warm["rss_gb"])
        read_mb = args.models * len(cand_imgs) * K * 2 / 1e6
        results[layout] = {"cold": cold, "warm": warm}
        print(json.dumps({"layout": layout, "models": args.models, "images": n_img,
                          "candidate_nodes": int(len(cand)), "rows_mb": round(read_mb),
                          "labels_logical_gb": round(logical / 1e9, 1),
                          "cold_s": cold["wall_s"], "cold_disk_mb": cold["disk_mb"],
                          "warm_s": warm["wall_s"], "peak_rss_gb": round(rss, 2)}), flush=True)
        rows.append(f"{stamp()} | mll-label/{layout} | {args.models} | {n_nodes} | {n_img} | "
                    f"{args.classes} | {len(cand)} | {read_mb:.0f} | {cold['disk_mb']} | "
                    f"{logical / 1e9:.0f} | {cold['wall_s']} | {warm['wall_s']} | {rss:.2f}")
    if len(results) > 1:  # the same task on the same rows: the same choice in every layout
        picks = {k: v["warm"]["chosen"] for k, v in results.items()}
        assert len({json.dumps(p) for p in picks.values()}) == 1, "layouts chose differently"
    append_rows(
        "selection_disk.md",
        "# Selection at hub scale, labels on disk\n\nCommand: `uv run python "
        "benchmarks/bench_selection_disk.py`. Real label files (K=64) in the local label "
        "store, sparse (full layout; real rows where selection reads: see the script), "
        "75 images per node; `mll select --labels local --no-log --json` timed from the "
        "shell in a fresh process (imports included), page cache dropped for the cold run; "
        "node-embedding cache warm. Peak RSS of the `mll select` processes; disk MB: "
        "what the cold run read from the disk (`ru_inblock`).\n\n"
        "| date | machine | layout | models | nodes | images | classes | candidate nodes | "
        "rows read MB | disk read MB (cold) | labels GB (logical) | cold s | warm s | "
        "peak RSS GB |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n", rows)


if __name__ == "__main__":
    main()
