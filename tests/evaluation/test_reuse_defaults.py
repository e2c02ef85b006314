"""The reuse defaults are the ones the recorded decision chose (benchmarks/results/
reuse_settings.json, written by benchmarks/bench_reuse_settings.py on the graph's own sources):
a default changed without rerunning the decision, or a decision not carried into the code,
fails here."""

from __future__ import annotations

import json
from pathlib import Path

from mll_registry.settings import DEFAULTS

RESULT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "reuse_settings.json"


def test_the_defaults_are_the_recorded_decision() -> None:
    best = json.loads(RESULT.read_text())["best"]
    assert DEFAULTS.reuse_mode == best["reuse_mode"]
    assert DEFAULTS.fallback_z_or_none() == best["fallback_z"]
    assert DEFAULTS.calibration == best["calibration"]
    table = json.loads(RESULT.read_text())["table"]
    top = max(table, key=lambda row: row["mean_top1"])
    assert (top["reuse_mode"], top["fallback_z"], top["calibration"]) == (
        best["reuse_mode"], best["fallback_z"], best["calibration"])
