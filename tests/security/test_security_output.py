"""Untrusted text at the output boundary: the terminal shows it and never obeys it, a card quotes it
and never runs it.

Folder names, class names and paths are data. Reproduced here through the real CLI (in-process
with CliRunner, and as a process with colours forced, as on a terminal): Rich markup in them
(``[/x]`` used to crash with a MarkupError, ``[link=...]`` to become a hidden hyperlink, ``[x]``
to vanish from an error line), raw ESC/OSC sequences (clear screen, window title, OSC 8 links).
And in model cards: HTML and marker copies in concept ids, an alias bomb and a long line of spaces
in an existing README's front matter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import write_png
from typer.testing import CliRunner

from mll_registry.cli.main import app
from mll_registry.hub.cards import (
    END_MARKER,
    MAX_FRONT_MATTER_BYTES,
    START_MARKER,
    CardError,
    render_card,
    split_card,
)
from mll_registry.labels.format import ModelLabel
from mll_registry.terminal import controls, safe

REPO = Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO / "demo_hub" / "mll-demo" / "vit-animals"
runner = CliRunner()

CLEAR, TITLE = "\x1b[2J", "\x1b]0;title\x07"
OSC8 = "\x1b]8;;http://e.invalid\x1b\\x\x1b]8;;\x1b\\"
#: what each sequence looks like once shown as text (computed by hand, not by the code under test)
SHOWN = {CLEAR: "\\x1b[2J", TITLE: "\\x1b]0;title\\x07",
         OSC8: "\\x1b]8;;http://e.invalid\\x1b\\x\\x1b]8;;\\x1b\\"}
SGR = re.compile(rb"\x1b\[[0-9;]*m")  # colours and styles
#: what Rich itself writes on a terminal: SGR, and a live display's cursor moves, line erase and
#: cursor hide/show (never a screen clear, a title, a link)
OWN = re.compile(rb"\x1b\[[0-9;?]*[mAGKlh]")


def _flat(text: str) -> str:
    """Output without the line breaks and padding Rich adds when it wraps a long line."""
    return "".join(text.split())


def _assert_no_raw_escape(res: object) -> str:
    out: bytes = res.stdout_bytes + res.stderr_bytes  # type: ignore[attr-defined]
    assert b"\x1b" not in out and b"\x07" not in out, out[-500:]
    exc = res.exception  # type: ignore[attr-defined]
    assert exc is None or isinstance(exc, SystemExit), repr(exc)  # no MarkupError
    output: str = res.output  # type: ignore[attr-defined]
    assert "Traceback" not in output
    return output


# -- the world: a small graph, a real model in a hostile folder ---------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    assert (DEMO_MODEL / "open_clip_config.json").is_file(), (
        f"the demo hub model {DEMO_MODEL} is missing: it is committed in the repository "
        "(demo_hub/); restore it with git")
    tmp = tmp_path_factory.mktemp("hostile")
    for i in range(3):
        write_png(tmp / "src" / "dog.n.01" / f"{i}.png", 10 + 30 * i)
        write_png(tmp / "src" / "n02121808" / f"{i}.png", 140 + 30 * i)
    data = tmp / "data"
    res = runner.invoke(app, ["graph", "build", "-s", f"A={tmp / 'src'}", "--out",
                              str(tmp / "graph"), "--data-dir", str(data), "--json"])
    assert res.exit_code == 0, res.output
    # a model folder whose path holds markup and escape sequences ('/' splits it into folders)
    model = Path(f"{tmp}/m[/x][link=e.invalid]x[/link]{CLEAR}{TITLE}")
    shutil.copytree(DEMO_MODEL, model)
    ref = f"local-dir:{model}"
    labelled = runner.invoke(app, ["label", ref, "--graph", str(tmp / "graph"), "--device", "cpu",
                                   "--no-register", "--data-dir", str(data)])
    return {"tmp": tmp, "data": data, "graph": tmp / "graph", "ref": ref, "labelled": labelled}


def test_error_lines_keep_brackets(world: dict[str, object]) -> None:
    res = runner.invoke(app, ["query", "best", "--concept", "[x]", "--graph", str(world["graph"]),
                              "--data-dir", str(world["data"])])
    assert res.exit_code == 2
    assert "error: '[x]' is not a WordNet noun" in res.output, res.output
    res = runner.invoke(app, ["label", "hf-hub:no/such/[x]", "--graph", str(world["graph"]),
                              "--data-dir", str(world["data"])])
    assert res.exit_code == 2 and "hf-hub:ORG/NAME[@REVISION]" in _flat(res.output), res.output
    assert "'hf-hub:no/such/[x]'" in res.output


def test_hostile_model_folder_prints_as_text(world: dict[str, object]) -> None:
    res = world["labelled"]
    assert res.exit_code == 0, res.output  # type: ignore[attr-defined]
    out = _flat(_assert_no_raw_escape(res))
    assert "m[/x][link=e.invalid]x[/link]" in out  # the brackets, literally
    assert SHOWN[CLEAR] + SHOWN[TITLE] in out  # the sequences, as visible text
    again = runner.invoke(app, ["label", str(world["ref"]), "--graph", str(world["graph"]),
                                "--device", "cpu", "--no-register", "--data-dir",
                                str(world["data"])])
    assert again.exit_code == 0 and "is already labelled" in again.output, again.output
    assert "[/x][link=e.invalid]x[/link]" in _flat(_assert_no_raw_escape(again))
    as_json = runner.invoke(app, ["label", str(world["ref"]), "--graph", str(world["graph"]),
                                  "--device", "cpu", "--no-register", "--data-dir",
                                  str(world["data"]), "--json"])
    assert as_json.exit_code == 0 and b"\x1b" not in as_json.stdout_bytes
    assert world["ref"] in json.loads(as_json.stdout).values()  # JSON keeps the exact name


def test_hostile_class_names_print_as_text(world: dict[str, object],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # table rows on one line each
    classes = ["dog", "[/x]", "[link=http://e.invalid]x[/link]", "[bold red]no[/]"]
    task = Path(str(world["tmp"])) / "task.yaml"
    task.write_text(yaml.safe_dump({"name": "hostile", "classes": classes}))
    res = runner.invoke(app, ["select", "--task", str(task), "--graph", str(world["graph"]),
                              "--labels", "local", "--no-log", "--data-dir", str(world["data"])])
    assert res.exit_code == 0, res.output
    out = _flat(_assert_no_raw_escape(res))
    for c in classes[1:]:
        assert f"│{_flat(c)}" in out, (c, res.output)  # the table shows each, literally
    assert "class'[/x]'hasnogoodmatch" in out, res.output  # and so does the warning


def _run_coloured(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """``mll ARGS`` as its own process with colours forced, as on a terminal."""
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "400", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    return subprocess.run([sys.executable, "-m", "mll_registry.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, timeout=300, check=False)


def test_escape_sequences_never_reach_a_terminal(world: dict[str, object]) -> None:
    tmp = Path(str(world["tmp"]))
    osc8 = OSC8.replace("//", "/")  # in a path, '//' is '/'
    hostile = Path(f"{tmp}/out[/x]{CLEAR}{TITLE}{osc8}")
    shown = f"out[/x]{SHOWN[CLEAR]}{SHOWN[TITLE]}{SHOWN[OSC8].replace('//', '/')}"
    built = _run_coloured(["graph", "build", "-s", f"A={tmp / 'src'}", "--out", str(hostile),
                           "--data-dir", str(world["data"])], tmp)
    missing = _run_coloured(["graph", "info", f"{hostile}-missing"], tmp)
    assert built.returncode == 0, built.stderr[-2000:]
    assert missing.returncode == 2, missing.stderr[-2000:]
    for proc in (built, missing):
        raw = proc.stdout + proc.stderr
        assert SGR.search(raw), raw[-500:]  # colours were on: this is what a terminal gets
        assert b"\x1b" not in OWN.sub(b"", raw) and b"\x07" not in raw, raw[-1000:]
        assert b"\x1b]" not in raw and b"\x1b[2J" not in raw
        assert shown in _flat(SGR.sub(b"", raw).decode()), raw[-1000:]  # shown as text
        assert b"Traceback" not in raw
    assert b"error:" in missing.stderr and b"[/x]" in missing.stderr


def test_safe_and_controls_by_hand() -> None:
    assert controls("a\x1b[2Jb\tc\nd\x7f\x9b\u202ee") == "a\\x1b[2Jb\tc\nd\\x7f\\x9b\\u202ee"
    assert safe("[link=http://e.invalid]x[/link]") == "\\[link=http://e.invalid]x\\[/link]"


# -- cards ----------------------------------------------------------------------------------------
HOSTILE_ID = f'x<img src=x onerror="alert(1)">{END_MARKER}\n## injected {START_MARKER}|[l](http://e.invalid)'


def _label(nodes: list[str], model_ref: str = "hf-hub:org/m@" + "a" * 40) -> ModelLabel:
    n = len(nodes)
    summary = pd.DataFrame({"node_id": nodes, "n_images": [2] * n,
                            "acc1": np.linspace(0.9, 0.5, n), "acc5": [1.0] * n,
                            "mean_own": [0.2] * n})
    rng = np.random.default_rng(0)
    return ModelLabel(
        topk_idx=rng.integers(0, n, (2 * n, 2)).astype(np.int32),
        topk_score=rng.random((2 * n, 2)).astype(np.float16),
        member_score=rng.random(2 * n).astype(np.float16), summary=summary,
        meta={"model_ref": model_ref, "revision": model_ref.split("@")[-1],
              "graph_version": "g-hostile", "code_version": "0.1.0", "top_k": 2,
              "label_config": {"templates": ["a photo of a {}."], "top_k": 2,
                               "text_source": "lemma"}, "created_at": "2025-01-01T00:00:00Z"})


EXISTING = "---\nlicense: mit\nlibrary_name: open_clip\n---\n# m\n\nThe owner's text.\n"


@pytest.mark.parametrize("existing", [None, EXISTING])
def test_hostile_concept_id_cannot_break_or_grow_the_card(existing: str | None) -> None:
    label = _label(["dog.n.01", HOSTILE_ID, "cat.n.01"])
    once = render_card(existing, label, top_k=3, model_name='<img src=y onerror="alert(2)">')
    twice = render_card(once, label, top_k=3)
    thrice = render_card(twice, label, top_k=3)
    assert once == twice == thrice, (len(once), len(twice), len(thrice))
    yaml_text, body = split_card(once)
    assert "<img" not in body.lower() and "onerror=\"" not in body
    assert body.count(START_MARKER) == 1 and body.count(END_MARKER) == 1
    assert "\n## injected" not in body  # the id stays on its table row
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in body  # shown, escaped
    assert "\\[l\\](http://e.invalid)" in body  # no link from a concept id
    meta = yaml.safe_load(yaml_text or "")
    assert [c["concept"] for c in meta["mll"]["top_concepts"]][1] == HOSTILE_ID  # YAML is exact
    if existing:
        assert body.startswith("# m\n\nThe owner's text.\n")


def _timed_render(readme: str, tmp_path: Path, timeout: float = 12.0) -> dict[str, object]:
    """render_card(readme) in a child process, timed there (after a warm-up render); a child that
    runs past ``timeout`` fails the test instead of hanging it."""
    label_dir = _label(["dog.n.01", "cat.n.01"]).save(tmp_path / "label")
    (tmp_path / "README.md").write_text(readme, encoding="utf-8")
    code = textwrap.dedent("""
        import json, sys, time
        from pathlib import Path
        from mll_registry.hub.cards import CardError, render_card
        from mll_registry.labels.format import ModelLabel
        label = ModelLabel.load(sys.argv[1])
        render_card(None, label)  # warm-up: templates, WordNet
        text = Path(sys.argv[2]).read_text(encoding="utf-8")
        t0 = time.perf_counter()
        try:
            card, error = render_card(text, label), None
        except CardError as exc:
            card, error = "", str(exc)
        print(json.dumps({"seconds": time.perf_counter() - t0, "error": error,
                          "chars": len(card)}))
    """)
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(label_dir),
                               str(tmp_path / "README.md")], cwd=tmp_path, capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"rendering the card took more than {timeout:.0f} s", pytrace=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def test_yaml_alias_bomb_is_refused_within_a_second(tmp_path: Path) -> None:
    levels = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    readme = "---\n" + "\n".join(levels) + "\n---\n# m\n"
    assert len(readme) < 500  # 490 bytes that expand to 9**10 strings
    out = _timed_render(readme, tmp_path)
    assert float(out["seconds"]) < 1.0, out  # type: ignore[arg-type]
    err = str(out["error"])
    assert "alias (*a0, line 2)" in err and "\n" not in err, out


def test_long_line_of_spaces_is_linear(tmp_path: Path) -> None:
    spaces = " " * 100_000
    readme = f'---\nlicense: mit\nnote: "first\nx{spaces}y"\n---\n# m\n{spaces}\n'
    assert len(readme.split("\n")[0 + 3]) > 100_000  # the front-matter line, 100 KB of spaces
    out = _timed_render(readme, tmp_path)
    assert out["error"] is None and float(out["seconds"]) < 0.5, out  # type: ignore[arg-type]
    assert int(out["chars"]) > 200_000  # type: ignore[call-overload]  # both lines kept


def test_oversized_front_matter_is_refused_in_one_line() -> None:
    big = "---\n" + "".join(f"k{i}: {'v' * 90}\n" for i in range(MAX_FRONT_MATTER_BYTES // 90))
    with pytest.raises(CardError, match=r"front matter is [\d,]+ bytes, more than the") as err:
        render_card(big + "---\n# m\n", _label(["dog.n.01"]))
    assert "\n" not in str(err.value)
