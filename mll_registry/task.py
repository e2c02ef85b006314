"""Task files: what a user asks selection for (README "CLI", task file).

YAML with ``name``, ``domain``, ``task``, ``classes`` (a list of names, or a mapping of name ->
description) and optional ``data`` (an image folder with one sub-folder per class, for measured
accuracy; relative paths are relative to the task file)::

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


class TaskError(ValueError):
    """A task file or task data folder is unusable; the message says what to fix."""


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
    source: Path | None = field(default=None, compare=False)

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
        if isinstance(raw, dict):
            classes = [TaskClass(str(k), None if v is None else str(v)) for k, v in raw.items()]
        elif isinstance(raw, list):
            classes = [TaskClass(str(x)) for x in raw]
        elif raw is None:
            classes = []
        else:
            raise TaskError("`classes` must be a list of names or a mapping name -> description")
        data = d.get("data")
        data_path = None
        if data:
            data_path = Path(str(data)).expanduser()
            if not data_path.is_absolute() and base is not None:
                data_path = (base / data_path).resolve()
        return cls(name=str(d.get("name") or (base.name if base else "task")), classes=classes,
                   domain=str(d.get("domain") or "photo"),
                   task=str(d.get("task") or "image classification"), data=data_path)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Task:
        path = Path(path)
        if not path.is_file():
            raise TaskError(f"task file {path} not found")
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise TaskError(f"task file {path} is not valid YAML: {exc}") from exc
        t = cls.from_dict(d, base=path.parent)
        t.source = path
        return t

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "domain": self.domain, "task": self.task,
                "classes": {c.name: c.description for c in self.classes}
                if any(c.description for c in self.classes) else self.class_names,
                **({"data": str(self.data)} if self.data else {})}


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
