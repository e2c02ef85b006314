"""Model cards: render keeps the card and replaces only our section; push is one PR commit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hub_server import (
    HubHandle,
    front_matter,
    open_clip_repo_files,
    start_hub,
    use_hub,
    validate_card_metadata,
)
from typer.testing import CliRunner

from mll_registry.cli.card import card_app
from mll_registry.hub import cards
from mll_registry.hub.cards import (
    END_MARKER,
    META_PATH,
    START_MARKER,
    SUMMARY_PATH,
    CardError,
    label_files,
    push_card,
    render_card,
    split_card,
)
from mll_registry.labels.format import ModelLabel

runner = CliRunner()
TOKEN = "hf_mll_dummy_token_0123456789"
EXISTING = """---
language: en
license: apache-2.0
library_name: open_clip
tags: [clip, open_clip, zero-shot-image-classification]
# keep this comment
datasets:
- laion/laion2B-en
model-index:
- name: m
  results:
  - task: {type: zero-shot-image-classification}
    dataset: {name: ImageNet-1k, type: imagenet-1k}
    metrics:
    - {type: accuracy, value: 0.712}
widget:
- src: https://example.com/cat.png
  candidate_labels: cat, dog
---
# Model card for m

Some text with a | pipe and <b>html</b>.

## Usage

```python
import open_clip
```
"""
KEPT_YAML = EXISTING.split("---\n")[1].split("model-index:")[0].splitlines() + [
    "widget:", "- src: https://example.com/cat.png", "  candidate_labels: cat, dog"]
BODY = EXISTING.split("---\n", 2)[2]


def make_label(model_ref: str = "hf-hub:org/m@" + "a" * 40, shift: float = 0.0,
               graph: str = "g-test-1") -> ModelLabel:
    """A small synthetic label (real format, made-up numbers)."""
    rng = np.random.default_rng(0)
    nodes = ["dog.n.01", "cat.n.01", "car.n.01", "tree.n.01", "pipe|odd.n.01", "entity.n.01"]
    summary = pd.DataFrame({
        "node_id": nodes, "n_images": [3, 2, 4, 1, 2, 0],
        "acc1": [0.9 - shift, 0.5, 0.75, 0.25, 0.6, np.nan],
        "acc5": [1.0, 1.0, 1.0, 0.5, 0.5, np.nan],
        "mean_own": [0.3, 0.2, 0.25, 0.1, 0.2, np.nan]})
    return ModelLabel(
        topk_idx=rng.integers(0, 5, (12, 4)).astype(np.int32),
        topk_score=rng.random((12, 4)).astype(np.float16),
        member_score=rng.random(20).astype(np.float16), summary=summary,
        meta={"model_ref": model_ref, "revision": model_ref.split("@")[-1],
              "graph_version": graph, "code_version": "0.1.0", "top_k": 4,
              "label_config": {"templates": ["a photo of a {}.", "a drawing of a {}."],
                               "top_k": 4, "text_source": "lemma"},
              "created_at": "2025-01-01T00:00:00Z", "timings": {"images_per_s": 100.0}})


def _section(text: str) -> str:
    return text[text.index(START_MARKER):text.index(END_MARKER) + len(END_MARKER)]


# -- render ---------------------------------------------------------------------------------------
def test_render_keeps_existing_text_and_metadata() -> None:
    label = make_label()
    out = render_card(EXISTING, label, top_k=3)
    yaml_text, body = split_card(out)
    assert yaml_text is not None
    for line in KEPT_YAML:  # other keys are kept byte for byte (flow style, comment, order)
        assert line in yaml_text.splitlines(), line
    assert body.startswith(BODY)  # the text is kept; the section is appended after it
    old, new = yaml.safe_load(EXISTING.split("---\n")[1]), yaml.safe_load(yaml_text)
    for key in ("language", "license", "library_name", "tags", "datasets", "widget"):
        assert new[key] == old[key]
    results = new["model-index"][0]["results"]
    assert new["model-index"][0]["name"] == "m" and len(new["model-index"]) == 1
    assert results[0] == old["model-index"][0]["results"][0]  # the other result is kept
    ours = results[1]
    assert ours["task"]["type"] == "zero-shot-image-classification"
    assert ours["dataset"] == {"name": "MLL semantic graph g-test-1",
                               "type": "mll-semantic-graph", "config": "g-test-1"}
    h = label.headline()
    assert ours["metrics"][0] == {"type": "accuracy", "name": "accuracy@1",
                                  "value": h["mean_acc1"]}
    mll = new["mll"]
    assert (mll["graph_version"], mll["nodes"], mll["images"]) == ("g-test-1", 6, 12)
    assert mll["mean_acc1"] == h["mean_acc1"] and mll["label_file"] == SUMMARY_PATH
    assert mll["top_concepts"] == [{"concept": "dog.n.01", "word": "dog", "acc1": 0.9},
                                   {"concept": "car.n.01", "word": "car", "acc1": 0.75},
                                   {"concept": "pipe|odd.n.01", "word": "", "acc1": 0.6}]
    assert validate_card_metadata(out) == []  # what the Hub's validate-yaml accepts


def test_section_content() -> None:
    sec = _section(render_card(None, make_label(), top_k=3))
    assert "## Model label (MLL Registry)" in sec
    assert ("| dog.n.01 | dog | a member of the genus Canis (probably descended from the common "
            "wolf) that has been dom... | 0.900 | 1.000 | 3 |") in sec  # word + WordNet gloss
    assert "accuracy@1 **" in sec and f"(chance: {1 / 6:.4f})" in sec  # 6 concepts
    assert "| pipe\\|odd.n.01 |  |  | 0.600 | 0.500 | 2 |" in sec  # table cells are escaped
    assert "cat.n.01" not in sec  # only the top 3
    assert "`g-test-1`, 6 concepts, 12 images" in sec
    assert "`a photo of a {}.`, `a drawing of a {}.`" in sec and "K = 4" in sec
    assert "mll-registry 0.1.0" in sec and f"[`{SUMMARY_PATH}`]({SUMMARY_PATH})" in sec


def test_the_section_lists_the_ensembles_using_the_model_only_when_given() -> None:
    assert "Used in MLL ensembles" not in render_card(None, make_label(), top_k=3)
    ensembles = [{"name": "pets-mll-ensemble", "version": "2", "aliases": ["champion"],
                  "task": "pets", "stale": []},
                 {"name": "odd|name", "version": "1", "aliases": [], "task": None,
                  "stale": ["hf-hub:org/m: new revision b", "x: new label version"]}]
    sec = _section(render_card(None, make_label(), top_k=3, ensembles=ensembles))
    rows = sec[sec.index("### Used in MLL ensembles"):].splitlines()
    assert "| pets-mll-ensemble | 2 | champion | pets | no |" in rows
    assert ("| odd\\|name | 1 |  |  | yes: hf-hub:org/m: new revision b; x: new label "
            "version |") in rows
    assert sec.endswith(END_MARKER)


def test_rerender_is_idempotent_and_replaces_only_the_section() -> None:
    once = render_card(EXISTING, make_label(), top_k=3)
    assert render_card(once, make_label(), top_k=3) == once
    edited = once.replace("## Usage", "## Usage (edited by a person)") + "\nA footer.\n"
    newer = render_card(edited, make_label(shift=0.5, graph="g-test-2"), top_k=3)
    assert "## Usage (edited by a person)" in newer and newer.endswith("\nA footer.\n")
    assert newer.count(START_MARKER) == 1 and "g-test-1" not in newer

    def outside(t: str) -> str:
        return t.replace(_section(t), "<S>")

    y_old, b_old = split_card(edited)
    y_new, b_new = split_card(newer)
    assert outside(b_new) == outside(b_old)
    meta = yaml.safe_load(y_new or "")
    assert [r["dataset"]["name"] for r in meta["model-index"][0]["results"]] == [
        "ImageNet-1k", "MLL semantic graph g-test-2"]  # ours replaced, not duplicated
    assert meta["mll"]["graph_version"] == "g-test-2"
    strip = {k: v for k, v in yaml.safe_load(y_old or "").items() if k not in ("mll",
                                                                              "model-index")}
    assert {k: v for k, v in meta.items() if k not in ("mll", "model-index")} == strip


def test_new_card_and_unusual_cards() -> None:
    new = render_card(None, make_label("local-dir:/x/my-model"), top_k=2)
    meta = front_matter(new)
    assert meta["library_name"] == "open_clip" and meta["model-index"][0]["name"] == "my-model"
    assert "# my-model" in new and validate_card_metadata(new) == []
    assert meta["pipeline_tag"] == "zero-shot-image-classification"
    assert "/x/" not in new and "local-dir:my-model" in new  # no local path in a public card
    kept = render_card("---\npipeline_tag: image-classification\n---\n# m\n", make_label())
    assert front_matter(kept)["pipeline_tag"] == "image-classification"  # the owner's stays
    plain = render_card("# Just text\n", make_label(), top_k=2)  # no front matter yet
    assert plain.split("---\n", 2)[2].startswith("# Just text\n\n" + START_MARKER)
    crlf = render_card(EXISTING.replace("\n", "\r\n"), make_label())
    assert "\r\n" in crlf and "\n" not in crlf.replace("\r\n", "")


@pytest.mark.parametrize(("card", "match"), [
    ("---\ntags: [a\n---\n# x\n", "YAML front matter is invalid"),
    ("---\n- a\n- b\n---\n# x\n", "not a mapping"),
    ("---\nmodel-index: {a: 1}\n---\n# x\n", "model-index is not a list"),
    (f"---\nlicense: mit\n---\n# x\n{START_MARKER}\nhalf\n", "no " + END_MARKER),
])
def test_render_errors_are_clear(card: str, match: str) -> None:
    with pytest.raises(CardError, match=match):
        render_card(card, make_label())


def test_label_files() -> None:
    files = label_files(make_label())
    csv = files[SUMMARY_PATH].decode().splitlines()
    assert csv[0] == "node_id,n_images,acc1,acc5,mean_own" and len(csv) == 7
    assert json.loads(files[META_PATH])["graph_version"] == "g-test-1"


# -- push -----------------------------------------------------------------------------------------
@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubHandle]:
    h = start_hub({"org/m": open_clip_repo_files("m", readme=EXISTING)},
                  tokens={TOKEN, "hf_other_valid_token"})
    use_hub(monkeypatch, h, cache_dir=tmp_path / "hf-cache", token=TOKEN)
    yield h
    h.stop()


def _label_for(hub: HubHandle, repo: str = "org/m") -> ModelLabel:
    return make_label(f"hf-hub:{repo}@{hub.head(repo)}")


def test_push_opens_a_pr_with_card_and_label_in_one_commit(hub: HubHandle) -> None:
    main_before, files_before = hub.head("org/m"), hub.files("org/m")
    label = _label_for(hub)
    out = push_card("org/m", label)
    assert out["status"] == "pr-opened" and out["pr_url"] == f"{hub.url}/org/m/discussions/1"
    assert out["target"] == "refs/pr/1" and out["parent_commit"] == main_before
    assert hub.head("org/m") == main_before and hub.files("org/m") == files_before
    pr = hub.prs("org/m")[0]
    assert pr.title.startswith("Add MLL Registry label") and pr.base_commit == main_before
    commit = hub.commit("org/m", "refs/pr/1")
    assert commit.parents == [main_before] and commit.oid == out["commit_oid"]
    changed = {p for p in commit.files if files_before.get(p) != commit.files[p]}
    assert changed == {"README.md", SUMMARY_PATH, META_PATH}  # all in ONE commit
    assert commit.files[SUMMARY_PATH] == label_files(label)[SUMMARY_PATH]
    readme = commit.files["README.md"].decode()
    assert readme.startswith("---\n") and BODY in readme
    for line in KEPT_YAML:
        assert line in readme.splitlines()
    assert f"({hub.url}/org/m/blob/main/{SUMMARY_PATH})" in readme
    assert TOKEN not in json.dumps(out) and TOKEN not in hub.log_text()


def test_push_direct_changes_main_and_second_push_is_a_no_op(hub: HubHandle) -> None:
    before = hub.head("org/m")
    out = push_card("org/m", _label_for(hub), create_pr=False)
    assert out["status"] == "committed" and out["pr_url"] is None and out["target"] == "main"
    assert hub.head("org/m") == out["commit_oid"] != before and not hub.prs("org/m")
    assert START_MARKER in hub.files("org/m")["README.md"].decode()
    again = push_card("org/m", make_label(f"hf-hub:org/m@{before}"), create_pr=False)
    assert again["status"] == "unchanged" and hub.head("org/m") == out["commit_oid"]


def test_push_redoes_the_commit_when_main_moved(hub: HubHandle,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real = cards.fetch_readme
    calls: list[str | None] = []

    def racing_fetch(repo_id: str, revision: str | None = None, *a: object) -> str | None:
        text = real(repo_id, revision, *a)  # type: ignore[arg-type]
        if not calls:  # someone edits the card between our read and our commit
            files = hub.files("org/m")
            files["README.md"] = files["README.md"] + b"\nEdited concurrently.\n"
            hub.add_repo("org/m", files, message="concurrent edit")
        calls.append(revision)
        return text

    monkeypatch.setattr(cards, "fetch_readme", racing_fetch)
    out = push_card("org/m", _label_for(hub), create_pr=False)
    assert len(calls) == 2 and calls[0] != calls[1]
    readme = hub.files("org/m")["README.md"].decode()
    assert "Edited concurrently." in readme and START_MARKER in readme
    assert out["status"] == "committed"
    assert any(r.status == 412 for r in hub.requests)


def test_dry_run_makes_no_request(hub: HubHandle) -> None:
    hub.clear_log()
    out = push_card("org/m", _label_for(hub), dry_run=True, existing_card=EXISTING)
    assert hub.requests == []
    assert out["dry_run"] and set(out["files"]) == {"README.md", SUMMARY_PATH, META_PATH}
    assert BODY in out["readme"] and out["pr_url"] is None


def test_bad_or_missing_token_is_clear_and_never_shown(hub: HubHandle,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "hf_secret_bad_token_42"
    with pytest.raises(CardError) as err:
        push_card("org/m", _label_for(hub), token=secret)
    assert "access denied" in str(err.value) and secret not in str(err.value)
    assert secret not in hub.log_text()
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(CardError, match="no Hub token: set HF_TOKEN"):
        push_card("org/m", _label_for(hub))
    with pytest.raises(CardError, match="not hf-hub:org/m"):
        push_card("org/m", make_label("hf-hub:org/other@" + "b" * 40), token=TOKEN)
    with pytest.raises(CardError, match="is for local-dir:/x/m, not hf-hub:org/m"):
        push_card("org/m", make_label("local-dir:/x/m"), dry_run=True)


# -- CLI ------------------------------------------------------------------------------------------
def test_cli_render_local_dir(tmp_path: Path) -> None:
    model = tmp_path / "my-model"
    model.mkdir()
    for name, data in open_clip_repo_files("my-model", readme=EXISTING).items():
        (model / name).write_bytes(data)
    label_dir = make_label(f"local-dir:{model}").save(tmp_path / "label")
    res = runner.invoke(card_app, ["render", f"local-dir:{model}", "--label", str(label_dir),
                                   "--top", "2"])
    assert res.exit_code == 0, res.output
    assert BODY in res.stdout and "| 0.900 | 1.000 | 3 |" in res.stdout
    assert f"[`{SUMMARY_PATH}`]({SUMMARY_PATH})" in res.stdout
    res = runner.invoke(card_app, ["render", f"local-dir:{model}", "--label", str(label_dir),
                                   "--json"])
    out = json.loads(res.stdout)
    assert out["existing_card"] is True and out["label"]["graph_version"] == "g-test-1"
    other = make_label("local-dir:/elsewhere").save(tmp_path / "other")
    for args, msg in [
        (["render", f"local-dir:{model}", "--label", str(other)], "is for local-dir:/elsewhere"),
        (["render", f"local-dir:{model}"], "pass --label PATH"),
        (["render", "open_clip:ViT-B-32/openai", "--label", str(label_dir)], "is for"),
        (["render", "nonsense", "--label", str(label_dir)], "neither a MODEL_REF"),
        (["push", f"local-dir:{model}", "--label", str(label_dir)], "only Hub models"),
        (["render", f"local-dir:{model}", "--label", str(tmp_path)], "not a model label"),
    ]:
        res = runner.invoke(card_app, args)
        assert res.exit_code == 2 and msg in " ".join(res.output.split()), (args, res.output)


def test_cli_render_and_push_hub_model(hub: HubHandle, tmp_path: Path) -> None:
    label_dir = _label_for(hub).save(tmp_path / "label")
    res = runner.invoke(card_app, ["render", "hf-hub:org/m", "--label", str(label_dir)])
    assert res.exit_code == 0, res.output
    assert BODY in res.stdout and f"{hub.url}/org/m/blob/main/{SUMMARY_PATH}" in res.stdout

    hub.clear_log()
    res = runner.invoke(card_app, ["push", "hf-hub:org/m", "--label", str(label_dir),
                                   "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    assert hub.requests == [] and json.loads(res.stdout)["dry_run"] is True

    main = hub.head("org/m")
    res = runner.invoke(card_app, ["push", "hf-hub:org/m", "--label", str(label_dir)])
    assert res.exit_code == 0, res.output
    assert "opened pull request" in res.output and hub.head("org/m") == main
    assert len(hub.prs("org/m")) == 1

    res = runner.invoke(card_app, ["push", "hf-hub:org/m", "--label", str(label_dir),
                                   "--direct", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["status"] == "committed" and hub.head("org/m") == out["commit_oid"] != main
    assert TOKEN not in res.output and TOKEN not in hub.log_text()


def test_cli_push_bad_token_exit_2(hub: HubHandle, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "hf_secret_bad_token_43"
    monkeypatch.setenv("HF_TOKEN", secret)
    label_dir = _label_for(hub).save(tmp_path / "label")
    res = runner.invoke(card_app, ["push", "hf-hub:org/m", "--label", str(label_dir)])
    assert res.exit_code == 2 and "access denied" in res.output
    assert secret not in res.output and secret not in hub.log_text()


# -- end to end with a real model -----------------------------------------------------------------
@pytest.mark.slow
def test_discover_label_and_push_a_real_model(tree: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A real tiny open_clip model on the loopback Hub: list -> fetch -> label -> card PR."""
    from mll_registry.demo.archs import build_tiny
    from mll_registry.graph.bundle import SampleDataset, build_graph
    from mll_registry.hub.discovery import HfHubSource
    from mll_registry.labels.labeller import LabelConfig, label_model
    from mll_registry.models.loading import load, save_open_clip_dir

    model, cfg = build_tiny("tiny-vit", seed=1)
    d = save_open_clip_dir(model, cfg, tmp_path / "tiny", readme=EXISTING)
    with start_hub({"org/tiny": d}) as hub:
        use_hub(monkeypatch, hub, cache_dir=tmp_path / "hf-cache", token=TOKEN)
        src = HfHubSource()
        [found] = src.list_new(None, limit=5)
        assert found.ref == f"hf-hub:org/tiny@{hub.head('org/tiny')}"
        assert sorted(p.name for p in src.fetch(found.repo_id, found.sha).iterdir()) == [
            "open_clip_config.json", "open_clip_model.safetensors"]
        graph, _ = build_graph([SampleDataset("A", tree / "A")])
        lm = load(found.ref, device="cpu", cache_dir=tmp_path / "hf-cache")
        label = label_model(lm, graph, LabelConfig(top_k=4, device="cpu")).label
        assert label.meta["model_ref"] == found.ref and label.meta["revision"] == found.sha
        out = push_card(found.repo_id, label, top_k=5)
        assert src.list_new(found.created_at, limit=5) == []
        pr_files = hub.files("org/tiny", out["target"])
        readme = pr_files["README.md"].decode()
        assert BODY in readme and _section(readme).count("\n| ") >= 5
        table = pd.read_csv(__import__("io").BytesIO(pr_files[SUMMARY_PATH]))
        assert list(table["node_id"]) == graph.node_ids
        assert front_matter(readme)["mll"]["graph_version"] == graph.version
        assert hub.files("org/tiny")["README.md"].decode() == EXISTING  # main unchanged


def test_push_rides_out_a_5xx_and_a_429(hub: HubHandle) -> None:
    """The Hub answers the repo-info read with 503 and the commit with 429 once each: the push
    retries both and commits once."""
    hub.clear_log()
    hub.fail_next("GET", r"^/api/models/org/m", 503)
    hub.fail_next("POST", r"/commit/", 429, retry_after=1)
    out = push_card("org/m", _label_for(hub), create_pr=False)
    assert out["status"] == "committed"
    codes = [(r.method, r.status) for r in hub.requests]
    assert ("GET", 503) in codes and ("POST", 429) in codes
    assert ("POST", 200) in codes
    assert START_MARKER in hub.files("org/m")["README.md"].decode()


def test_push_gives_up_clearly_when_main_keeps_moving(hub: HubHandle,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Main moves between every read and commit: after the one re-render, a second 412 is a
    one-line CardError (no traceback, no token), and nothing was committed by us."""
    real = cards.fetch_readme
    n = [0]

    def always_racing(repo_id: str, revision: str | None = None, *a: object) -> str | None:
        text = real(repo_id, revision, *a)  # type: ignore[arg-type]
        n[0] += 1
        files = hub.files("org/m")
        files["README.md"] = files["README.md"] + f"\nEdit {n[0]}.\n".encode()
        hub.add_repo("org/m", files, message=f"concurrent edit {n[0]}")
        return text

    monkeypatch.setattr(cards, "fetch_readme", always_racing)
    with pytest.raises(CardError, match="keeps changing while the card is pushed") as info:
        push_card("org/m", _label_for(hub), create_pr=False)
    assert TOKEN not in str(info.value)
    assert sum(1 for r in hub.requests if r.status == 412) == 2
    assert START_MARKER not in hub.files("org/m")["README.md"].decode()
