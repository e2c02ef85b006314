"""Train the demo hub (committed under demo_hub/mll-demo/), reproducibly.

    uv run python scripts/train_demo_hub.py                # all models in DEMO_SPECS
    uv run python scripts/train_demo_hub.py --only vit-food
    uv run python scripts/train_demo_hub.py --steps 20 --out /tmp/hub   # a quick smoke run

Writes demo_hub/mll-demo/<name>/ (open_clip_config.json, open_clip_model.safetensors fp16,
README.md) and demo_hub/training.json (per model: size, training time, final loss).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    from mll_registry.demo.data import load_concepts
    from mll_registry.demo.train import DEMO_SPECS, train
    from mll_registry.fsutil import write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="train only these spec names")
    ap.add_argument("--steps", type=int, help="override steps (smoke runs)")
    ap.add_argument("--out", type=Path, default=ROOT / "demo_hub" / "mll-demo")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    specs = [s for s in DEMO_SPECS if not args.only or s.name in args.only]
    if args.only and len(specs) != len(args.only):
        print(f"unknown spec in {args.only}; known: {[s.name for s in DEMO_SPECS]}", file=sys.stderr)
        return 2
    concepts = load_concepts()
    record_path = args.out.parent / "training.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    cache: dict = {}
    for spec in specs:
        if args.steps:
            spec = dataclasses.replace(spec, steps=args.steps)
        stats = train(spec, concepts, args.out, pixel_cache=cache)
        print(json.dumps({k: v for k, v in stats.items() if k != "spec"}), flush=True)
        record[spec.name] = stats
        write_json(record_path, dict(sorted(record.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
