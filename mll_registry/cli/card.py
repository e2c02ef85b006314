"""``mll card``: render the model card a model would get from its label, or push it to the Hub.

Mounted by ``mll_registry.cli.main`` as ``app.add_typer(card_app, name="card")``. The label comes from
``--label PATH`` (a label directory written by ``mll label``); :data:`LATEST_LABEL` is the hook
for "the latest registered label of this model" when ``--label`` is not given.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from mll_registry.cli.common import JsonOpt, boundary, console, emit
from mll_registry.labels.format import ModelLabel
from mll_registry.terminal import controls

card_app = typer.Typer(help="Model cards: render a model's label section, or push it to the Hub.",
                       no_args_is_help=True)

#: ``LATEST_LABEL(model_ref) -> label directory or None``, used when ``--label`` is not given.
LATEST_LABEL: Callable[[str], Path | None] | None = None
#: ``ENSEMBLES(model_ref) -> the registered ensemble versions using it`` (``--ensembles``)
ENSEMBLES: Callable[[str], list[dict[str, Any]]] | None = None
#: ``REGISTERED(name) -> MODEL_REF or None``: a registered model name to its model reference,
#: so every command accepts the same ways of naming a model.
REGISTERED: Callable[[str], str | None] | None = None


def model_ref_of(model: str) -> str:
    """A MODEL_REF, or the MODEL_REF of a registered model name (``hf--org--name``)."""
    from mll_registry.hub.cards import CardError

    if ":" in model:
        return model
    ref = REGISTERED(model) if REGISTERED is not None else None
    if ref is None:
        raise CardError(f"{model} is neither a MODEL_REF (hf-hub:ORG/NAME, local-dir:PATH) nor a "
                        "registered model with a label; see `mll query label` for names")
    return ref

LabelOpt = Annotated[Path | None, typer.Option(
    "--label", help="Label directory (from `mll label`); default: the model's latest label.")]
TopKOpt = Annotated[int, typer.Option("--top", min=1, help="Concepts shown in the card's table.")]
EnsemblesOpt = Annotated[bool, typer.Option(
    "--ensembles", help="List the registered ensembles (this registry's MLflow models) that use "
    "the model in its card; off by default, as their names are your registry's.")]


def ensembles_of(model_ref: str, wanted: bool) -> list[dict[str, Any]]:
    """The ensemble versions to list in ``model_ref``'s card (none unless ``wanted``)."""
    return ENSEMBLES(model_ref) if wanted and ENSEMBLES is not None else []


def _write_card(text: str) -> None:
    """A card on stdout: the README's own control characters (a stranger's) shown as escapes,
    its line ends (LF or CRLF) kept."""
    sys.stdout.write("\r\n".join(controls(part) for part in text.split("\r\n")))


def load_label_for(model_ref: str, label: Path | None,
                   latest: Callable[[str], Path | None] | None = None) -> ModelLabel:
    """The label to put in ``model_ref``'s card: ``label``, else ``latest(model_ref)``.

    Raises:
        CardError: no label given or found, or the label is of another model or revision.
    """
    from mll_registry.hub.cards import CardError
    from mll_registry.models.refs import ModelRef

    if label is None and latest is not None:
        label = latest(model_ref)
    if label is None:
        raise CardError(f"no label for {model_ref}: pass --label PATH (a label directory written "
                        f"by `mll label {model_ref}`)")
    lab = ModelLabel.load(label)
    want = ModelRef.parse(model_ref)
    have_ref = str(lab.meta.get("model_ref") or "")
    have = ModelRef.parse(have_ref) if have_ref else None
    if have is None or (have.scheme, have.name) != (want.scheme, want.name):
        raise CardError(f"the label at {label} is for {have_ref or 'an unknown model'}, not "
                        f"{model_ref}; pass that model's label")
    if want.revision and str(lab.meta.get("revision")) != want.revision:
        raise CardError(f"the label at {label} measured revision {lab.meta.get('revision')}, not "
                        f"{want.revision}; label that revision or drop @REVISION")
    return lab


def existing_card(model_ref: str) -> str | None:
    """The model's current README.md (None when it has none)."""
    from mll_registry.hub.cards import CardError, fetch_readme
    from mll_registry.models.refs import ModelRef

    ref = ModelRef.parse(model_ref)
    if ref.scheme == "local-dir":
        readme = Path(ref.name) / "README.md"
        return readme.read_text(encoding="utf-8") if readme.is_file() else None
    if ref.scheme == "hf-hub":
        from huggingface_hub import constants

        from mll_registry.hub.discovery import with_retries

        return with_retries(lambda: fetch_readme(ref.name, ref.revision), f"hf-hub:{ref.name}",
                            constants.ENDPOINT)
    raise CardError(f"{model_ref}: cards exist for hf-hub: and local-dir: models only")


def render_for(model_ref: str, label: Path | None = None, top_k: int = 10,
               latest: Callable[[str], Path | None] | None = None,
               ensembles: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """What ``mll card render`` prints: the card ``model_ref`` would get, and where it came from."""
    from mll_registry.hub.cards import SUMMARY_PATH, hub_label_file_url, render_card
    from mll_registry.models.refs import ModelRef

    lab = load_label_for(model_ref, label, latest)
    current = existing_card(model_ref)
    ref = ModelRef.parse(model_ref)
    url = hub_label_file_url(ref.name) if ref.scheme == "hf-hub" else SUMMARY_PATH
    card = render_card(current, lab, top_k, url, model_name=Path(ref.name).name,
                       ensembles=ensembles)
    return {"model_ref": model_ref, "existing_card": current is not None,
            "label": lab.headline(), "card": card}


def push_for(model_ref: str, label: Path | None = None, direct: bool = False,
             dry_run: bool = False, top_k: int = 10,
             latest: Callable[[str], Path | None] | None = None,
             ensembles: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """What ``mll card push`` does: one commit (a PR unless ``direct``) with card + label table."""
    from mll_registry.hub.cards import CardError, push_card
    from mll_registry.models.refs import ModelRef

    ref = ModelRef.parse(model_ref)
    if ref.scheme != "hf-hub":
        raise CardError(f"{model_ref}: only Hub models can be pushed; use hf-hub:ORG/NAME "
                        "(`mll card render` shows the card of a local model)")
    lab = load_label_for(model_ref, label, latest)
    return push_card(ref.name, lab, create_pr=not direct, dry_run=dry_run, top_k=top_k,
                     ensembles=ensembles)


@card_app.command("render")
def render_cmd(
    model_ref: Annotated[str, typer.Argument(
        help="hf-hub:ORG/NAME[@REV], local-dir:PATH or a registered model name")],
    label: LabelOpt = None,
    top: TopKOpt = 10,
    ensembles: EnsemblesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Print the model card MODEL_REF would get: its README with the label section and metadata."""
    with boundary():
        ref = model_ref_of(model_ref)
        out = render_for(ref, label, top, latest=LATEST_LABEL,
                         ensembles=ensembles_of(ref, ensembles))
    if as_json:
        emit(out)
    else:
        if not out["existing_card"]:
            console.print(f"{model_ref} has no README.md: this is a new card")
        _write_card(out["card"])


@card_app.command("push")
def push_cmd(
    model_ref: Annotated[str, typer.Argument(help="hf-hub:ORG/NAME or its registered name")],
    label: LabelOpt = None,
    direct: Annotated[bool, typer.Option(
        "--direct", help="Commit to main instead of opening a pull request.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show what would be committed; make no request.")] = False,
    top: TopKOpt = 10,
    ensembles: EnsemblesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Commit the card and the full label table to the model's Hub repo (a pull request by default).

    The token comes from HF_TOKEN (or `hf auth login`); it needs write access to the repo.
    """
    with boundary():
        ref = model_ref_of(model_ref)
        out = push_for(ref, label, direct, dry_run, top, latest=LATEST_LABEL,
                       ensembles=ensembles_of(ref, ensembles))
    if as_json:
        emit(out)
        return
    if dry_run:
        console.print(f"dry run: would commit to {out['repo_id']} ({out['target']}), no "
                      "request made:")
        for path, size in out["files"].items():
            console.print(f"  {path}  {size} bytes")
        _write_card(out["readme"])
    elif out["status"] == "unchanged":
        console.print(f"{out['repo_id']} already has this card and label: nothing to commit")
    elif out["pr_url"]:
        console.print(f"opened pull request {out['pr_url']}")
    else:
        console.print(f"committed to {out['target']}: {out['commit_url']}")
