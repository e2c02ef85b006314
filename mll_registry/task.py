"""Task files: what a user asks selection for (README "CLI", task file).

YAML with ``name``, ``domain``, ``task``, ``classes`` (a list of names, or a mapping of name ->
description), optional ``data`` (an image folder with one sub-folder per class, for measured
accuracy) and optional ``reference`` (the same classes from *another* image distribution, e.g.
another art set: the benchmark's attainable references choose models on it and are scored on
``data``); relative paths are relative to the task file::

    name: pets
    domain: pet photograph
    task: image classification
    classes: [dog, cat, hamster]
    data: ./pets-images
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mll_registry.errors import MLLError


class TaskError(MLLError, ValueError):
    """A task file or task data folder is unusable; the message says what to fix."""


MAX_TASK_BYTES = 1 << 20  # a task file is a few lines; anything larger is a mistake or an attack
MAX_CLASSES = 10_000


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors/aliases: a task file needs none, and aliases allow "billion laughs"
    files that expand to gigabytes in memory."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise TaskError(f"YAML aliases (*{event.anchor}) are not allowed in task files "
                            f"(line {event.start_mark.line + 1}); write the values out")
        return super().compose_node(parent, index)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TaskError(f"{what} must be a non-empty string, got {value!r}; quote it in the "
                        "task file")
    return value


@dataclass(frozen=True)
class TaskClass:
    """A class as the user wrote it, with an optional description of their own."""

    name: str
    description: str | None = None


@dataclass
class Task:
    """A zero-shot task: class names plus domain and task type; no images needed to select."""

    name: str
    classes: list[TaskClass]
    domain: str = "photo"
    task: str = "image classification"
    data: Path | None = None
    #: labelled images of the same classes from another distribution (the bench's attainable
    #: references choose on them, never on ``data``)
    reference: Path | None = None
    source: Path | None = field(default=None, compare=False)
    #: False when a task file named no domain ("photo" is then assumed for descriptions, and
    #: domain-aware selection weighs every sample source alike)
    domain_given: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        if not self.classes:
            raise TaskError(f"task {self.name!r} has no classes; list at least one under `classes:`")
        seen: dict[str, str] = {}
        for c in self.classes:
            if not c.name or not c.name.strip():
                raise TaskError(f"task {self.name!r} has an empty class name")
            key = normalise(c.name)
            if key in seen:
                raise TaskError(f"task {self.name!r} names the class {c.name!r} twice "
                                f"(also as {seen[key]!r}); class names must be unique")
            seen[key] = c.name

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Path | None = None) -> Task:
        if not isinstance(d, dict):
            raise TaskError("a task file must be a YAML mapping with name, domain, task, classes")
        raw = d.get("classes")
        if isinstance(raw, dict | list) and len(raw) > MAX_CLASSES:
            raise TaskError(f"the task has {len(raw)} classes; at most {MAX_CLASSES} are supported")
        if isinstance(raw, dict):
            classes = [TaskClass(_text(k, "a class name"),
                                 None if v is None else _text(v, f"the description of {k!r}"))
                       for k, v in raw.items()]
        elif isinstance(raw, list):
            classes = [TaskClass(_text(x, f"class #{i + 1}")) for i, x in enumerate(raw)]
        elif raw is None:
            classes = []
        else:
            raise TaskError("`classes` must be a list of names or a mapping name -> description")
        for key in ("name", "domain", "task"):
            if d.get(key) is not None:
                _text(d[key], f"`{key}`")
        data_path, reference = (_folder(d.get(k), base) for k in ("data", "reference"))
        return cls(name=str(d.get("name") or (base.name if base else "task")), classes=classes,
                   domain=str(d.get("domain") or "photo"),
                   task=str(d.get("task") or "image classification"), data=data_path,
                   reference=reference, domain_given=bool(d.get("domain")))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Task:
        path = Path(path)
        if not path.is_file():
            raise TaskError(f"task file {path} not found")
        if path.stat().st_size > MAX_TASK_BYTES:
            raise TaskError(f"task file {path} is larger than {MAX_TASK_BYTES} bytes; a task "
                            "file lists classes, it holds no data")
        try:
            d = yaml.load(path.read_text(encoding="utf-8"), Loader=_NoAliasLoader)  # noqa: S506
        except TaskError as exc:
            raise TaskError(f"task file {path}: {exc}") from None
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TaskError(f"task file {path} is not valid YAML ({first}); it must be a "
                            "mapping with name, domain, task, classes") from exc
        t = cls.from_dict(d, base=path.parent)
        t.source = path
        return t

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **({"domain": self.domain} if self.domain_given else {}),
                "task": self.task,
                "classes": {c.name: c.description for c in self.classes}
                if any(c.description for c in self.classes) else self.class_names,
                **({"data": str(self.data)} if self.data else {}),
                **({"reference": str(self.reference)} if self.reference else {})}


def _folder(value: Any, base: Path | None) -> Path | None:
    """A folder named in a task file (relative: to the task file's folder)."""
    if not value:
        return None
    path = Path(str(value)).expanduser()
    return (base / path).resolve() if not path.is_absolute() and base is not None else path


def normalise(name: str) -> str:
    """Case-, space- and underscore-insensitive key: ``Hot_Dog`` == ``hot dog``."""
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def data_folders(task: Task, data: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Map each task class to its image sub-folder in the data folder.

    Raises:
        TaskError: missing folder, sub-folders the task does not name, or classes with no folder.
    """
    root = Path(data) if data else task.data
    if root is None:
        raise TaskError(f"task {task.name!r} has no data folder: give --data DIR or `data:` in "
                        "the task file (one sub-folder per class)")
    if not root.is_dir():
        raise TaskError(f"data folder {root} does not exist")
    by_key = {normalise(c): c for c in task.class_names}
    found: dict[str, Path] = {}
    extra = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        cls = by_key.get(normalise(sub.name))
        if cls is None:
            extra.append(sub.name)
        else:
            found[cls] = sub
    if extra:
        raise TaskError(f"data folder {root} has sub-folders the task does not name: "
                        f"{extra[:10]}; add them to `classes:` or remove them")
    missing = [c for c in task.class_names if c not in found]
    if missing:
        raise TaskError(f"data folder {root} has no sub-folder for classes {missing[:10]}")
    return {c: found[c] for c in task.class_names}
