"""Model cards: put a model's label into its Hub README without touching anything else.

The project owns two things in a card, and re-rendering replaces exactly those:

* the body section between ``<!-- mll-label:start -->`` and ``<!-- mll-label:end -->``
  (rendered from ``model_cards/label_section.md.j2``): top concepts, how they were measured,
  a link to the full table;
* in the YAML front matter, the ``mll:`` key and, inside ``model-index``, the one result whose
  dataset type is ``mll-semantic-graph`` (other entries and results are kept).

Other front-matter lines are kept byte for byte (the YAML is edited per top-level key, then
checked by parsing it back). :func:`push_card` uploads the full label table and the updated README
in one commit, as a pull request by default.

The existing README and the label's concept ids are data, maybe a stranger's: what goes into the
card body is HTML-escaped (so no tag, and no copy of a marker, can come from the data), the front
matter is written by ``yaml.safe_dump``, and the existing front matter is read within bounds (at
most :data:`MAX_FRONT_MATTER_BYTES`, no YAML aliases, line by line, in linear time).
"""

from __future__ import annotations

import copy
import functools
import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mll_registry import __version__
from mll_registry.errors import MLLError
from mll_registry.labels.format import ModelLabel

START_MARKER = "<!-- mll-label:start -->"
END_MARKER = "<!-- mll-label:end -->"
SUMMARY_PATH = "mll/label_summary.csv"
META_PATH = "mll/label_meta.json"
DATASET_TYPE = "mll-semantic-graph"
TASK_TYPE = "zero-shot-image-classification"
TEMPLATE_NAME = "label_section.md.j2"
#: a card's YAML front matter is a few KB (large model-index blocks reach a few hundred); more is
#: refused before it is parsed
MAX_FRONT_MATTER_BYTES = 512 * 1024
# Same pattern as huggingface_hub.repocard: front matter between '---' lines at the top.
_YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
# Characters that are markup in a Markdown table cell (HTML is escaped separately).
_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*[]|~"})


class CardError(MLLError, ValueError):
    """A card cannot be rendered or pushed (bad existing metadata, wrong label, no token...)."""


# -- templates ------------------------------------------------------------------------------------
def template_dir() -> Path:
    """Where the card templates are: ``MLL_CARD_TEMPLATES``, packaged, or the repo's model_cards/."""
    package = Path(__file__).resolve().parents[1]  # mll_registry/
    candidates = [Path(os.environ["MLL_CARD_TEMPLATES"])] if os.environ.get(
        "MLL_CARD_TEMPLATES") else []
    candidates += [package / "model_cards", package.parent / "model_cards"]
    for d in candidates:
        if (d / TEMPLATE_NAME).is_file():
            return d
    raise CardError(f"card template {TEMPLATE_NAME} not found in {', '.join(map(str, candidates))}; "
                    "set MLL_CARD_TEMPLATES to the model_cards/ folder of the repository")


def md_text(value: Any) -> str:
    """``value`` as inert Markdown text: one line, HTML escaped (no tag, no comment, so no copy
    of the section markers), link/code/table punctuation backslash-escaped, control characters
    written as visible escapes."""
    from mll_registry.terminal import controls

    one_line = controls(value).replace("\n", " ")
    return html.escape(one_line, quote=True).translate(_MD_SPECIAL)


def _md_cell(value: Any) -> Any:
    from markupsafe import Markup

    return Markup(md_text(value))  # already escaped: the template's autoescape leaves it


def _finalize(value: Any) -> Any:
    """Every other ``{{ value }}`` of the template: one line, no control character (autoescape
    then escapes its HTML)."""
    from markupsafe import Markup

    from mll_registry.terminal import controls

    if isinstance(value, Markup) or not isinstance(value, str):
        return value
    return controls(value).replace("\n", " ").replace("`", "'")  # a backtick ends a code span


# -- what the card says ---------------------------------------------------------------------------
def concept_words(node_id: str) -> tuple[str, str]:
    """(word, gloss) of a graph node (a WordNet synset id); ("", "") when WordNet lacks it."""
    try:
        from mll_registry.graph import wordnet as W
        syn = W.synset(node_id)
        return syn.lemmas()[0].name().replace("_", " "), str(syn.definition())
    except Exception:  # noqa: BLE001 - a card without glosses beats no card
        return "", ""


def top_concepts(label: ModelLabel, top_k: int = 10) -> list[dict[str, Any]]:
    """The ``top_k`` concepts by accuracy@1 (then @5, images, id: deterministic), with images,
    the concept's word and its WordNet gloss."""
    s = label.summary
    s = s[s["n_images"] > 0].dropna(subset=["acc1"])
    s = s.assign(_neg1=-s["acc1"], _neg5=-s["acc5"].fillna(0), _negn=-s["n_images"])
    s = s.sort_values(["_neg1", "_neg5", "_negn", "node_id"], kind="mergesort").head(top_k)
    out = []
    for r in s.itertuples():
        word, gloss = concept_words(str(r.node_id))
        out.append({"concept": str(r.node_id), "word": word, "gloss": gloss,
                    "acc1": round(float(r.acc1), 4),
                    "acc5": round(float(r.acc5), 4) if not math.isnan(float(r.acc5)) else 0.0,
                    "images": int(r.n_images)})
    return out


def public_ref(ref: str) -> str:
    """A MODEL_REF fit for a public card: a local folder is named, never its path."""
    if ref.startswith("local-dir:"):
        return "local-dir:" + Path(ref.split(":", 1)[1]).name
    return ref


def _facts(label: ModelLabel, top_k: int) -> dict[str, Any]:
    h = label.headline()
    cfg = label.meta.get("label_config") or {}
    return {
        "graph_version": h["graph_version"], "nodes": h["nodes"], "images": h["images"],
        "mean_acc1": float(h["mean_acc1"]), "mean_acc5": float(h["mean_acc5"]),
        "chance1": 1.0 / max(int(h["nodes"]), 1),
        "chance5": min(5, int(h["nodes"])) / max(int(h["nodes"]), 1),
        "model_ref": public_ref(str(label.meta.get("model_ref") or "?")),
        "revision": public_ref(str(label.meta["revision"])) if label.meta.get("revision")
        else None,
        "templates": list(cfg.get("templates") or []),
        "text_source": cfg.get("text_source", "lemma"),
        "k": int(label.meta.get("top_k") or cfg.get("top_k") or label.k),
        "code_version": str(label.meta.get("code_version") or __version__),
        "labelled_at": label.meta.get("created_at"),
        "top": top_concepts(label, top_k),
        "cost": label.meta.get("cost") if isinstance(label.meta.get("cost"), dict) else None,
    }


def render_section(label: ModelLabel, top_k: int = 10, label_file_url: str = SUMMARY_PATH,
                   ensembles: Sequence[Mapping[str, Any]] = ()) -> str:
    """The card's MLL section, markers included (no trailing newline); ``ensembles``: the
    registered ensemble versions that use the model (:func:`~mll_registry.app.selection.
    ensemble_versions` rows), listed in the section when given.

    The template autoescapes: every value is HTML-escaped unless it is ``Markup`` (the markers,
    ``md_cell`` output), so data can neither add a tag nor a second marker.
    """
    from jinja2 import Environment, FileSystemLoader, StrictUndefined
    from markupsafe import Markup

    env = Environment(loader=FileSystemLoader(str(template_dir())), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=False, finalize=_finalize)
    env.filters["md_cell"] = _md_cell
    text = env.get_template(TEMPLATE_NAME).render(
        **_facts(label, top_k), label_file=SUMMARY_PATH, label_file_url=label_file_url,
        ensembles=list(ensembles), start_marker=Markup(START_MARKER), end_marker=Markup(END_MARKER))
    text = re.sub(r"\n{3,}", "\n\n", text.strip())
    if (text.count(START_MARKER), text.count(END_MARKER)) != (1, 1) or not (
            text.startswith(START_MARKER) and text.endswith(END_MARKER)):
        raise CardError(f"the card template {TEMPLATE_NAME} must hold {START_MARKER} first and "
                        f"{END_MARKER} last, once each; fix the template in {template_dir()}")
    return text


def mll_metadata(label: ModelLabel, top_k: int = 10) -> dict[str, Any]:
    """The card's ``mll:`` YAML block."""
    f = _facts(label, top_k)
    return {
        "graph_version": f["graph_version"], "mean_acc1": f["mean_acc1"],
        "mean_acc5": f["mean_acc5"], "chance_acc1": round(f["chance1"], 6),
        "nodes": f["nodes"], "images": f["images"],
        "model_revision": f["revision"], "label_file": SUMMARY_PATH,
        "code_version": f["code_version"],
        **({"inference_cost": {k: f["cost"][k] for k in ("params", "image_params", "gflops",
                                                        "ms_per_image", "device")
                               if k in f["cost"]}} if f["cost"] else {}),
        "top_concepts": [{"concept": c["concept"], "word": c["word"], "acc1": c["acc1"]}
                         for c in f["top"]],
    }


def model_index_result(label: ModelLabel, label_file_url: str | None = None) -> dict[str, Any]:
    """The ``model-index`` result for the label: zero-shot classification on the graph."""
    h = label.headline()
    result: dict[str, Any] = {
        "task": {"type": TASK_TYPE, "name": "Zero-shot image classification"},
        "dataset": {"name": f"MLL semantic graph {h['graph_version']}", "type": DATASET_TYPE,
                    "config": str(h["graph_version"])},
        "metrics": [
            {"type": "accuracy", "name": "accuracy@1", "value": float(h["mean_acc1"])},
            {"type": "top-5-accuracy", "name": "accuracy@5", "value": float(h["mean_acc5"])},
        ],
    }
    if label_file_url and label_file_url.startswith(("http://", "https://")):
        result["source"] = {"name": "MLL Registry label", "url": label_file_url}
    return result


def merge_model_index(existing: Any, result: dict[str, Any], model_name: str) -> list[Any]:
    """``existing`` model-index with our result replaced or added; other entries are kept."""
    if existing is None:
        existing = []
    if not isinstance(existing, list):
        raise CardError("the card's model-index is not a list; fix the card's metadata first "
                        "(see https://huggingface.co/docs/hub/model-cards#evaluation-results)")
    entries = copy.deepcopy(existing)
    for e in entries:
        if isinstance(e, dict) and isinstance(e.get("results"), list):
            e["results"] = [r for r in e["results"] if not (
                isinstance(r, dict) and isinstance(r.get("dataset"), dict)
                and r["dataset"].get("type") == DATASET_TYPE)]
    target = next((e for e in entries if isinstance(e, dict) and e.get("name") == model_name),
                  None) or next((e for e in entries if isinstance(e, dict)), None)
    if target is None:
        target = {"name": model_name, "results": []}
        entries.append(target)
    if not isinstance(target.get("results"), list):
        target["results"] = []
    target["results"].append(result)
    return entries


# -- card text surgery ----------------------------------------------------------------------------
def split_card(text: str) -> tuple[str | None, str]:
    """``(front-matter YAML or None, body)`` of a README."""
    m = _YAML_BLOCK.search(text)
    if not m:
        return None, text
    return m.group(2), text[m.end():]


def load_front_matter(yaml_text: str) -> Any:
    """The data of a card's YAML front matter, read within bounds: at most
    :data:`MAX_FRONT_MATTER_BYTES` and no aliases (``*x`` lets a few hundred bytes expand
    exponentially: "billion laughs"); safe YAML only.

    Raises:
        CardError: too large, uses aliases, or invalid YAML (one line saying what to fix).
    """
    size = len(yaml_text.encode("utf-8"))
    if size > MAX_FRONT_MATTER_BYTES:
        raise CardError(f"the card's YAML front matter is {size:,} bytes, more than the "
                        f"{MAX_FRONT_MATTER_BYTES:,} a card may hold; shorten it before adding "
                        "the label")
    if not yaml_text.strip():
        return {}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        for event in yaml.parse(yaml_text, Loader=loader):  # events only: nothing is expanded
            if isinstance(event, yaml.AliasEvent):
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise CardError(f"the card's YAML front matter uses an alias (*{event.anchor}, "
                                f"line {line}); write the value out before adding the label")
        return yaml.load(yaml_text, Loader=loader)  # noqa: S506 - a safe loader, checked above
    except yaml.YAMLError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CardError(f"the card's YAML front matter is invalid ({first}); fix it before "
                        "adding the label") from exc


def _is_top_key(line: str) -> bool:
    """Whether ``line`` starts a top-level mapping key (``key:``, ``"key":``, ``-x:``), read
    left to right once (a backtracking pattern is quadratic in a long line of spaces)."""
    if not line or line[0].isspace() or line[0] in "#?:":
        return False
    if line[0] in "\"'":
        end = line.find(line[0], 1)
        if end < 0:
            return False
        rest = line[end + 1:].lstrip()
        return rest.startswith(":") and (len(rest) == 1 or rest[1].isspace())
    start = 1
    if line[0] == "-":  # "-x:" is a key, "- x" a list item
        if len(line) < 2 or line[1].isspace() or line[1] == ":":
            return False
        start = 2
    for i in range(start, len(line)):
        if line[i] == "#":
            return False
        if line[i] == ":":
            return i + 1 == len(line) or line[i + 1].isspace()
    return False


def _dump(key: str, value: Any) -> list[str]:
    return yaml.safe_dump({key: value}, sort_keys=False, allow_unicode=True, width=100,
                          default_flow_style=False).rstrip("\n").split("\n")


def set_yaml_keys(yaml_text: str, updates: dict[str, Any]) -> str:
    """Set top-level ``updates`` in ``yaml_text``, keeping every other line as it is.

    Each updated key's block (its line and the indented/continuation lines below it) is replaced
    in place, or appended. The result is parsed back and compared with the intended data; if the
    line edit cannot be trusted (unusual YAML), the whole metadata is re-dumped instead.
    """
    old = load_front_matter(yaml_text)
    if old is None:
        old = {}
    if not isinstance(old, dict):
        raise CardError("the card's YAML front matter is not a mapping; fix it before adding the "
                        "label")
    want = {**old, **updates}
    lines = yaml_text.split("\n") if yaml_text.strip() else []
    starts = [i for i, line in enumerate(lines) if _is_top_key(line)]
    for key, value in updates.items():
        span = None
        for n, i in enumerate(starts):
            k = lines[i].split(":", 1)[0].strip().strip("'\"")
            if k == key:
                end = starts[n + 1] if n + 1 < len(starts) else len(lines)
                while end > i + 1 and (not lines[end - 1].strip()
                                       or lines[end - 1].startswith("#")):
                    end -= 1  # blank lines and comments before the next key stay
                span = (i, end)
                break
        new = _dump(key, value)
        if span is None:
            while lines and not lines[-1].strip():
                lines.pop()
            lines += new
        else:
            lines[span[0]:span[1]] = new
        starts = [i for i, line in enumerate(lines) if _is_top_key(line)]
    text = "\n".join(lines)
    try:
        if load_front_matter(text) == want:
            return text
    except CardError:
        pass
    return yaml.safe_dump(want, sort_keys=False, allow_unicode=True, width=100).rstrip("\n")


def replace_section(body: str, section: str) -> str:
    """``body`` with the marked section replaced (or appended when absent)."""
    i = body.find(START_MARKER)
    if i < 0:
        return (body.rstrip("\n") + "\n\n" if body.strip() else "") + section + "\n"
    j = body.find(END_MARKER, i)
    if j < 0:
        raise CardError(f"the card has {START_MARKER} but no {END_MARKER}; restore the end marker "
                        "or delete the partial section")
    return body[:i] + section + body[j + len(END_MARKER):]


def _model_name(label: ModelLabel) -> str:
    ref = str(label.meta.get("model_ref") or "model")
    name = ref.split(":", 1)[-1].split("@")[0].rstrip("/")
    return name.rsplit("/", 1)[-1] or "model"


def render_card(existing: str | None, label: ModelLabel, top_k: int = 10,
                label_file_url: str = SUMMARY_PATH, model_name: str | None = None,
                ensembles: Sequence[Mapping[str, Any]] = ()) -> str:
    """The card ``existing`` (a README, or None for a new one) with the label added or refreshed.

    Only the marked body section, the ``mll:`` key and our ``model-index`` result change; the
    rest of the text and metadata is kept. Rendering twice gives the same text.
    """
    name = model_name or _model_name(label)
    crlf = existing is not None and "\r\n" in existing
    text = existing.replace("\r\n", "\n") if existing is not None else (
        f"---\nlibrary_name: open_clip\n---\n# {md_text(name)}\n")
    yaml_text, body = split_card(text)
    current = load_front_matter(yaml_text or "")
    current = current if isinstance(current, dict) else {}
    updates = {
        **({} if current.get("pipeline_tag") else {"pipeline_tag": TASK_TYPE}),
        "mll": mll_metadata(label, top_k),
        "model-index": merge_model_index(current.get("model-index"),
                                         model_index_result(label, label_file_url), name),
    }
    new_yaml = set_yaml_keys(yaml_text or "", updates)
    body = replace_section(body, render_section(label, top_k, label_file_url, ensembles))
    out = f"---\n{new_yaml}\n---\n{body}"
    return out.replace("\n", "\r\n") if crlf else out


# -- files committed with the card ----------------------------------------------------------------
def label_files(label: ModelLabel) -> dict[str, bytes]:
    """The full label table and its metadata, as committed next to the card."""
    cols = [c for c in ("node_id", "n_images", "acc1", "acc5", "mean_own")
            if c in label.summary.columns]
    csv = label.summary[cols].to_csv(index=False, float_format="%.6f", lineterminator="\n")
    public: dict[str, Any] = dict(label.meta)
    for k in ("model_ref", "source", "revision"):
        if k in public:
            public[k] = public_ref(str(public[k]))
    meta = json.dumps(public, indent=2, sort_keys=True, default=str) + "\n"
    return {SUMMARY_PATH: csv.encode("utf-8"), META_PATH: meta.encode("utf-8")}


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def fetch_readme(repo_id: str, revision: str | None = None, endpoint: str | None = None,
                 token: str | None = None) -> str | None:
    """The README.md of a Hub repo at ``revision`` (None when the repo has none)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        path = hf_hub_download(repo_id, "README.md", revision=revision, endpoint=endpoint,
                               token=token)
    except RemoteEntryNotFoundError:
        return None
    return Path(path).read_text(encoding="utf-8")


def hub_label_file_url(repo_id: str, endpoint: str | None = None) -> str:
    """Where the full label table of a Hub repo is browsed once the card is merged."""
    from huggingface_hub import constants

    return f"{(endpoint or constants.ENDPOINT).rstrip('/')}/{repo_id}/blob/main/{SUMMARY_PATH}"


def push_card(repo_id: str, label: ModelLabel, token: str | None = None, create_pr: bool = True,
              dry_run: bool = False, endpoint: str | None = None, *, top_k: int = 10,
              existing_card: str | None = None, revision: str = "main",
              ensembles: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Commit README.md + ``mll/label_summary.csv`` + ``mll/label_meta.json`` in one commit.

    A pull request by default (``create_pr=False`` commits to ``revision``). The card is rendered
    from the README at the branch head, and that head is the commit's ``parent_commit``: if the
    branch moves meanwhile, the Hub refuses the commit and it is redone once on the new head.
    The token comes from ``token`` or ``HF_TOKEN`` / the stored login; it is never printed, and
    error messages are scrubbed of it. ``dry_run`` makes no request and renders against
    ``existing_card`` (or a new card).
    """
    label_url = hub_label_file_url(repo_id, endpoint)
    name = repo_id.rsplit("/", 1)[-1]
    ref = str(label.meta.get("model_ref") or "")
    if not ref.startswith("hf-hub:") or ref[len("hf-hub:"):].split("@")[0] != repo_id:
        raise CardError(f"this label is for {ref or 'an unknown model'}, not hf-hub:{repo_id}; "
                        f"push a label of the Hub model itself (`mll label hf-hub:{repo_id}`), "
                        "so the card names the revision that was measured")
    files = label_files(label)
    h = label.headline()
    message = f"Add MLL Registry label (graph {h['graph_version']})"
    description = (f"Label of `{ref or repo_id}` measured on the MLL semantic graph "
                   f"`{h['graph_version']}` ({h['nodes']} concepts, {h['images']} images): mean "
                   f"accuracy@1 {h['mean_acc1']:.4f}, accuracy@5 {h['mean_acc5']:.4f}.\n\n"
                   f"Files: README.md (label section and metadata), {SUMMARY_PATH}, {META_PATH}.")
    if dry_run:
        card = render_card(existing_card, label, top_k, label_url, name, ensembles)
        return {"dry_run": True, "repo_id": repo_id, "create_pr": create_pr,
                "target": "new pull request" if create_pr else revision,
                "existing_card": "given" if existing_card is not None else "not fetched (dry run)",
                "commit_message": message, "pr_url": None, "commit_url": None,
                "files": {"README.md": len(card.encode()), **{p: len(b) for p, b in files.items()}},
                "readme": card}
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    tok = token or get_token()
    if not tok:
        raise CardError("no Hub token: set HF_TOKEN to a token with write access to "
                        f"{repo_id} (or log in with `hf auth login`)")
    api = HfApi(endpoint=endpoint, token=tok)
    from mll_registry.hub.discovery import (
        HubSourceError,
        describe_error,
        is_transient,
        with_retries,
    )
    from mll_registry.retries import call_with_retries

    for attempt in (1, 2):
        try:
            info = with_retries(lambda: api.model_info(repo_id, revision=revision),
                                f"hf-hub:{repo_id}", api.endpoint)
            parent = str(info.sha)
            existing = existing_card if existing_card is not None else with_retries(
                functools.partial(fetch_readme, repo_id, parent, api.endpoint, tok),
                f"hf-hub:{repo_id}/README.md", api.endpoint)
            card = render_card(existing, label, top_k, label_url, name, ensembles)
            ops = [CommitOperationAdd("README.md", card.encode("utf-8")),
                   *[CommitOperationAdd(p, b) for p, b in files.items()]]
            # 429 and 5xx are retried (the parent-commit precondition makes a repeated commit
            # safe: at worst it answers 412 and the card is rendered again); the rest raise as is
            ci = call_with_retries(
                functools.partial(api.create_commit, repo_id, ops, commit_message=message,
                                  commit_description=description, create_pr=create_pr,
                                  parent_commit=parent, revision=revision),
                f"commit to hf-hub:{repo_id}", transient=is_transient, give_up=lambda e: e)
        except CardError:
            raise
        except HubSourceError as exc:
            raise CardError(_redact(str(exc), tok)) from exc
        except ValueError as exc:  # e.g. the Hub rejected the README metadata
            raise CardError(_redact(f"hf-hub:{repo_id}: {exc}", tok)) from exc
        except Exception as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status == 412 and attempt == 1:
                continue  # the branch moved after we read it: render against the new head
            msg = str(describe_error(exc, f"pushing the card to hf-hub:{repo_id}", api.endpoint))
            if status == 412:
                msg = f"hf-hub:{repo_id} keeps changing while the card is pushed; retry later"
            raise CardError(_redact(msg, tok)) from exc
        unchanged = ci.oid == parent
        return {
            "dry_run": False, "repo_id": repo_id, "create_pr": create_pr,
            "status": "unchanged" if unchanged else "pr-opened" if create_pr else "committed",
            "pr_url": ci.pr_url, "pr_num": ci.pr_num,
            "target": ci.pr_revision if ci.pr_url else revision,
            "commit_url": ci.commit_url, "commit_oid": ci.oid, "parent_commit": parent,
            "files": ["README.md", *files],
        }
    raise AssertionError("unreachable")  # pragma: no cover
