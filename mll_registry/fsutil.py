"""Crash-safe file output: write to a temporary name in the same directory, then rename.

A reader never sees a half-written file or bundle: either the old complete one or the new one.
The new content is fsynced before the rename and the directory after it, so a crash or power
loss cannot leave a renamed but empty file behind. A directory that exists already is replaced
by one atomic exchange (:func:`exchange`); where the OS cannot exchange, by two renames, and
what a kill between them leaves is put back by the next writer or reader (:func:`recover_swap`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mll_registry.errors import MLLError


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


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: the name :func:`atomic_dir`'s two-rename swap gives the old ``NAME`` while it swaps
#: (``.NAME.old-PID``): group 1 the name, group 2 the writer's pid
OLD_NAME = re.compile(r"^\.(.+)\.old-(\d+)$")


def is_leftover(name: str) -> bool:
    """Whether a directory entry is a writer's hidden temporary or swap leftover (a dot name:
    ``.NAME.PID.*.tmp``, ``.NAME.old-PID``), never content a listing should take for its own."""
    return name.startswith(".")


def _remove(path: Path) -> None:
    """Remove a file, link or directory tree (what is already gone is no error)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def recover_swap(leftover: Path) -> None:
    """Finish a two-rename swap whose writer was killed between the renames: ``leftover`` is
    ``.NAME.old-PID`` (:data:`OLD_NAME`); when its pid is gone it goes back to ``NAME`` if
    ``NAME`` is missing (the old content, whole: the swap never happened), else it is removed.
    A live writer's leftover, or any other name, is left alone."""
    m = OLD_NAME.match(leftover.name)
    if not m or int(m.group(2)) == os.getpid() or pid_alive(int(m.group(2))):
        return
    target = leftover.with_name(m.group(1))
    if target.exists() or target.is_symlink():
        _remove(leftover)
        return
    with contextlib.suppress(OSError):  # another process restored it first
        os.rename(leftover, target)
        fsync_path(target.parent)


def sweep_stale_temps(target: Path) -> None:
    """Remove what a killed writer of ``target`` left: temporaries named for ``target`` whose
    process (the pid in the name) is gone; the old ``target`` of a swap it was killed in goes
    back first when ``target`` is missing (:func:`recover_swap`). A live writer's are left
    alone."""
    pat = re.compile(rf"^\.{re.escape(target.name)}\.(\d+)\..*\.tmp")
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return
    for e in entries:  # the old content back first, then the temporaries go
        m = OLD_NAME.match(e.name)
        if m and m.group(1) == target.name:
            recover_swap(e)
    for e in entries:
        m = pat.match(e.name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            _remove(e)


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


#: renameat2(2): ``flags`` value that swaps two existing paths in one step (Linux 3.15 on)
RENAME_EXCHANGE = 2
_AT_FDCWD = -100
#: renameat2's system call number, for a C library without its wrapper (glibc before 2.28)
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276}
#: what renameat2 answers where the kernel or the file system cannot exchange (EXDEV: an
#: overlayfs lower-layer directory, which the two renames then meet as they always did)
_NO_EXCHANGE = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}


@functools.cache
def _renameat2() -> Callable[[int, bytes, int, bytes, int], int] | None:
    """renameat2 from the C library (its wrapper, else the raw system call), or None where
    there is none (not Linux)."""
    if platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except (OSError, TypeError):
        return None
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        fn.restype = ctypes.c_int
        return fn  # type: ignore[no-any-return]
    nr = _SYS_RENAMEAT2.get(platform.machine())
    syscall = getattr(libc, "syscall", None)
    if nr is None or syscall is None:
        return None
    syscall.restype = ctypes.c_long
    return lambda a, p, b, q, flags: int(syscall(
        ctypes.c_long(nr), ctypes.c_int(a), ctypes.c_char_p(p), ctypes.c_int(b),
        ctypes.c_char_p(q), ctypes.c_uint(flags)))


def exchange(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Swap two existing paths in one atomic step (``renameat2(RENAME_EXCHANGE)``): a crash
    at any moment leaves one or the other at each name, never neither.

    Returns False, with nothing changed, where the OS or the file system cannot exchange.

    Raises:
        OSError: the exchange itself failed (a path missing, no permission, ...).
    """
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _NO_EXCHANGE:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``target``; swap it in on success.

    An existing ``target`` is replaced only after the new content is complete, by one atomic
    exchange (:func:`exchange`): a kill at any point leaves the old or the new ``target``
    (the old then lies under the temporary's name, which the next writer sweeps). Where the
    OS cannot exchange, by two renames (``target`` -> ``.NAME.old-PID``, the temporary ->
    ``target``); a kill between them is undone by the next writer or listing
    (:func:`recover_swap`).
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
        if not (target.exists() or target.is_symlink()):
            os.replace(tmp, target)
        elif exchange(tmp, target):  # tmp now holds the old content
            fsync_path(target.parent)
            _remove(tmp)
        else:
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            _remove(old)
        fsync_path(target.parent)
    except BaseException:
        _remove(tmp)
        raise


def path_under(root: str | os.PathLike[str], *parts: str) -> Path:
    """``root / parts``, refused unless it stays under ``root`` (after resolving ``..`` and links).

    Names read from elsewhere (registry tags, artifact names, table rows) become paths only
    through here, so an absolute name or a ``..`` cannot reach outside the directory meant.

    Raises:
        ValueError: a part is empty or holds a NUL, or the path leaves ``root``.
    """
    base = Path(root)
    for p in parts:
        if not isinstance(p, str) or not p or "\x00" in p:
            raise ValueError(f"{p!r:.80} is not a usable file name")
    target = base.joinpath(*parts)
    real_base = base.resolve()
    real = target.resolve()
    if real == real_base or not real.is_relative_to(real_base):
        raise ValueError(f"{'/'.join(parts)!r:.120} leaves {base}")
    return target


class NotRegularFile(MLLError, ValueError):
    """A path that should be a regular file is a FIFO, a device, a socket or a directory."""


class FileTooLarge(MLLError, ValueError):
    """A file is larger than the bound its reader allows."""


def read_regular(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of ``path`` if it is (or links to) a regular file of at most ``max_bytes``.

    Opened without blocking and checked on the open descriptor, so a FIFO cannot hang the
    caller and a device (``/dev/zero``) or an oversized file is refused before it is read.

    Raises:
        NotRegularFile: not a regular file (the message says what it is).
        FileTooLarge: larger than ``max_bytes``.
        OSError: it cannot be opened or read.
    """
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else
                    "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                    "a socket" if stat.S_ISSOCK(st.st_mode) else
                    "a directory" if stat.S_ISDIR(st.st_mode) else "not a file")
            raise NotRegularFile(f"{path} is {kind}, not a regular file")
        if st.st_size > max_bytes:
            raise FileTooLarge(f"{path} is larger than {max_bytes:,} bytes")
        data = f.read(st.st_size + 1)
        if len(data) > st.st_size:  # it grew since fstat: read on, to the bound
            data += f.read(max_bytes + 1 - len(data))
        if len(data) > max_bytes:
            raise FileTooLarge(f"{path} is larger than {max_bytes:,} bytes")
        return data
