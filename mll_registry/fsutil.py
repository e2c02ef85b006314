"""Crash-safe file output: write to a temporary name in the same directory, then rename.

A reader never sees a half-written file or bundle: either the old complete one or the new one.
The new content is fsynced before the rename and the directory after it, so a crash or power
loss cannot leave a renamed but empty file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    On an exception the temporary file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp" + suffix,
                               dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        fsync_path(tmp_path)
        os.replace(tmp_path, target)
        fsync_path(target.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temps(target: Path) -> None:
    """Remove what a killed writer of ``target`` left: temporaries named for ``target`` whose
    process (the pid in the name) is gone. A live writer's temporary is left alone."""
    import re

    pat = re.compile(rf"^\.{re.escape(target.name)}\.(\d+)\..*\.tmp")
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return
    for e in entries:
        m = pat.match(e.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            if e.is_dir() and not e.is_symlink():
                shutil.rmtree(e, ignore_errors=True)
            else:
                e.unlink(missing_ok=True)


def fsync_path(path: Path) -> None:
    """Flush a file, or a directory's entries, to disk (no-op where the OS cannot)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, hex (read in blocks: any size)."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_text(target: str | os.PathLike[str], text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON file holding an object.

    Raises:
        ValueError: not UTF-8, not JSON, or not an object (the message says which).
    """
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason})") from exc
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def write_json(target: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented, key-sorted JSON."""
    return write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``target``; swap it in on success.

    An existing ``target`` is replaced only after the new content is complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp",
                                dir=target.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                fsync_path(f)
        fsync_path(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        fsync_path(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
