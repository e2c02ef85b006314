"""What a person sees in the MLflow and Prefect UIs, rendered by headless Chromium (slow).

Runs scripts/ui_screenshots.py: real `mlflow server` and `prefect server`, one labelling flow,
then the model-version page (label run and label model linked, aliases shown) and the flow-run
page (named from its parameters, with its INFO progress logs). Needs Debian's chromium, which
scripts/bootstrap.sh installs; without it this fails (it does not skip).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_ui_pages_show_the_links_and_logs(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "ui_screenshots.py"), "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout[r.stdout.index("{"):])
    for name, page in out["pages"].items():
        assert all(page["found"].values()), (name, page["found"])
        png = Path(page["png"])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
