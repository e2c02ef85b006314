"""A loopback Hugging Face Hub for tests: the subset of the HTTP API that huggingface_hub 2.4 uses.

The real client (``HfApi``, ``snapshot_download``, ``hf_hub_download``, ``create_commit``) talks to
it over real HTTP, so tests exercise the same requests, headers and error mapping as production:

* ``GET  /api/models`` (filter, search, author, sort (descending), limit, expand, ``Link`` paging)
* ``GET  /api/models/{repo}[/revision/{rev}]`` (siblings, sha, createdAt, lastModified, tags,
  library_name, cardData; ``blobs=1`` for sizes/LFS; ``expand``)
* ``GET  /api/models/{repo}/tree/{rev}[/{path}]`` (``recursive``; what ``snapshot_download`` lists)
* ``HEAD|GET /{repo}/resolve/{rev}/{path}``: regular files are served with ``ETag`` (git blob
  oid), ``X-Repo-Commit`` and ``Content-Length``; LFS files answer 302 to a "CDN" on another host
  name (``localhost`` instead of ``127.0.0.1``) with ``X-Linked-Etag``/``X-Linked-Size``, so the
  client drops the ``Authorization`` header there, as it does for the real CDN
* ``POST /api/validate-yaml`` (YAML syntax, mapping at top level, ``model-index`` shape)
* ``POST /api/models/{repo}/preupload/{rev}`` (upload mode + remote oid: unchanged files are skipped)
* ``POST /{repo}.git/info/lfs/objects/batch``, ``PUT`` to the upload URL it hands out, verify
* ``POST /api/models/{repo}/commit/{rev}[?create_pr=1]`` (ndjson: header, file, lfsFile,
  deletedFile, deletedFolder; ``parentCommit`` -> 412 when main moved; PRs are ``refs/pr/N``)
* ``GET  /api/whoami-v2``

Repo ids are matched ignoring case, as on the Hub; answers carry the repo's own spelling (``id``).
Errors carry ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound) like the Hub.
Writes need ``Authorization: Bearer hf_...``; reads are public. The request log keeps the method,
path, status and whether an Authorization header was present; never a header value or a body.

Repos live in memory: commits ``{oid -> {path -> bytes}}`` plus refs (``main``, ``refs/pr/N``).

Usage::

    hub = start_hub({"org/model": Path("demo_hub/mll-demo/vit-all-colour")})
    use_hub(monkeypatch, hub, cache_dir=tmp_path / "hf-cache")   # point huggingface_hub at it
    ...
    hub.stop()
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".msgpack", ".h5",
                ".parquet", ".arrow", ".gz", ".zip", ".npy", ".npz", ".pkl")
LFS_MIN_SIZE = 10 * 1024 * 1024
_YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
_CDN_HOST = "localhost"  # another host name for the same server: the client treats it as a CDN


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str, size: int, sample: bytes = b"") -> bool:
    """Whether the Hub would store this file with LFS (binary extension, large, or binary bytes)."""
    return path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE or b"\0" in sample[:512]


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def front_matter(text: str) -> dict[str, Any]:
    """The YAML metadata of a README (empty when absent or not a mapping)."""
    m = _YAML_BLOCK.search(text)
    if not m:
        return {}
    data = yaml.safe_load(m.group(2))
    return data if isinstance(data, dict) else {}


@dataclass
class HubCommit:
    """One commit: the full file map (content-addressed snapshots are enough for tests)."""

    oid: str
    files: dict[str, bytes]
    parents: list[str]
    title: str
    description: str
    date: datetime
    author: str


@dataclass
class PullRequest:
    """A pull request opened by ``create_commit(create_pr=True)``."""

    num: int
    ref: str  # refs/pr/N
    title: str
    description: str
    base_commit: str
    author: str
    status: str = "open"


@dataclass
class HubRepo:
    """A model repo: commits, refs and PRs."""

    repo_id: str
    created_at: datetime
    commits: dict[str, HubCommit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # "main" | "refs/pr/N" -> commit oid
    prs: list[PullRequest] = field(default_factory=list)
    downloads: int = 0

    def resolve(self, revision: str) -> HubCommit | None:
        """A branch, ``refs/pr/N``, full oid or unambiguous oid prefix (>= 7 chars) -> commit."""
        if revision in self.refs:
            return self.commits[self.refs[revision]]
        if revision in self.commits:
            return self.commits[revision]
        if len(revision) >= 7:
            hits = [c for oid, c in self.commits.items() if oid.startswith(revision)]
            if len(hits) == 1:
                return hits[0]
        return None


@dataclass(frozen=True)
class RequestRecord:
    """A request as received: every header and the body (for "where did the token go" checks).

    :meth:`line` (what ``log_text`` shows) holds no header value and no body.
    """

    method: str
    path: str  # path + query string, as sent
    status: int
    host: str
    had_auth: bool
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def line(self) -> str:
        return f"{self.method} {self.host} {self.path} -> {self.status} auth={self.had_auth}"


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    times: int
    retry_after: int | None


class _State:
    def __init__(self, tokens: Iterable[str], page_size: int) -> None:
        self.lock = threading.RLock()
        self.repos: dict[str, HubRepo] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> content (uploaded or seeded)
        self.tokens = set(tokens)
        self.page_size = page_size
        self.requests: list[RequestRecord] = []
        self.faults: list[_Fault] = []
        self.clock_offset = 0


def _commit_oid(parents: list[str], files: Mapping[str, bytes], title: str, salt: str) -> str:
    h = hashlib.sha1()
    for p in parents:
        h.update(p.encode())
    for path in sorted(files):
        h.update(path.encode() + b"\0" + git_blob_oid(files[path]).encode())
    h.update(title.encode() + b"\0" + salt.encode())
    return h.hexdigest()


def _read_files(source: Path | Mapping[str, bytes]) -> dict[str, bytes]:
    if isinstance(source, Mapping):
        return {str(k): bytes(v) for k, v in source.items()}
    root = Path(source)
    if not root.is_dir():
        raise FileNotFoundError(f"cannot seed a hub repo from {root}: not a directory")
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mll-test-hub/1"
    state: _State  # set on the subclass made per server
    base_url: str
    cdn_url: str

    # -- plumbing -------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the stdlib access log (it would go to stderr); requests are recorded instead."""

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    self._received = getattr(self, "_received", b"") + bytes(out)
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n else b""
        self._received = getattr(self, "_received", b"") + data
        return data

    def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None,
              content_type: str = "application/json") -> None:
        host = (self.headers.get("Host") or "").split(":")[0]
        with self.state.lock:
            self.state.requests.append(RequestRecord(
                self.command, self.path, status, host, "authorization" in {
                    k.lower() for k in self.headers}, dict(self.headers.items()),
                getattr(self, "_received", b"")))
        self._received = b""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, message: str, code: str | None = None,
               headers: Mapping[str, str] | None = None) -> None:
        h = {"X-Error-Message": message, **(headers or {})}
        if code:
            h["X-Error-Code"] = code
        self._json(status, {"error": message}, h)

    def _user(self) -> str | None:
        """The user a valid bearer token stands for (the token itself is never stored)."""
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("Bearer "):
            return None
        token = auth[len("Bearer "):].strip()
        ok = token in self.state.tokens if self.state.tokens else token.startswith("hf_")
        return "mll-tester" if ok else None

    def _require_user(self) -> str | None:
        user = self._user()
        if user is None:
            self._error(401, "Invalid credentials in Authorization header"
                        if self.headers.get("Authorization") else "You must be authenticated")
        return user

    def _fault(self, path: str) -> bool:
        with self.state.lock:
            for f in self.state.faults:
                if f.times > 0 and f.method in (self.command, "*") and f.pattern.search(path):
                    f.times -= 1
                    h = {"Retry-After": str(f.retry_after)} if f.retry_after is not None else {}
                    self._body()
                    self._error(f.status, f"injected failure {f.status}", headers=h)
                    return True
        return False

    def _repo(self, org: str, name: str) -> HubRepo | None:
        repo = self.state.repos.get(f"{org}/{name}")
        if repo is None:  # like the Hub, ids are matched ignoring case (answers keep its spelling)
            want = f"{org}/{name}".casefold()
            repo = next((r for k, r in self.state.repos.items() if k.casefold() == want), None)
        if repo is None:
            self._error(404, "Repository not found", "RepoNotFound")
        return repo

    def _commit(self, repo: HubRepo, revision: str) -> HubCommit | None:
        c = repo.resolve(revision)
        if c is None:
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return c

    # -- dispatch -------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        if self._fault(url.path):
            return
        q = parse_qs(url.query, keep_blank_values=True)
        seg = [unquote(s) for s in url.path.split("/")[1:]]
        m = self.command
        if self.headers.get("Authorization") and self._user() is None:
            self._body()  # like the Hub: a bad token is refused even where none is needed
            return self._error(401, "Invalid credentials in Authorization header")
        try:
            with self.state.lock:
                if m == "GET" and seg == ["api", "models"]:
                    return self._list_models(q)
                if m == "GET" and seg == ["api", "whoami-v2"]:
                    return self._whoami()
                if m == "POST" and seg == ["api", "validate-yaml"]:
                    return self._validate_yaml()
                if len(seg) >= 4 and seg[:2] == ["api", "models"]:
                    org, name, rest = seg[2], seg[3], seg[4:]
                    if m == "GET" and not rest:
                        return self._model_info(org, name, "main", q)
                    if m == "GET" and rest[:1] == ["revision"] and len(rest) >= 2:
                        return self._model_info(org, name, "/".join(rest[1:]), q)
                    if m == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
                        return self._tree(org, name, rest[1], "/".join(rest[2:]), q)
                    if m == "POST" and rest[:1] == ["preupload"] and len(rest) >= 2:
                        return self._preupload(org, name, "/".join(rest[1:]))
                    if m == "POST" and rest[:1] == ["commit"] and len(rest) >= 2:
                        return self._commit_api(org, name, "/".join(rest[1:]), q)
                if (m == "POST" and len(seg) == 6 and seg[1].endswith(".git")
                        and seg[2:] == ["info", "lfs", "objects", "batch"]):
                    return self._lfs_batch(seg[0], seg[1][:-4])
                if m in ("GET", "HEAD") and len(seg) >= 5 and seg[2] == "resolve":
                    return self._resolve(seg[0], seg[1], seg[3], "/".join(seg[4:]))
                if m in ("GET", "HEAD") and len(seg) == 2 and seg[0] == "cdn":
                    return self._cdn(seg[1])
                if m == "PUT" and len(seg) == 2 and seg[0] == "lfs-upload":
                    return self._lfs_put(seg[1])
                if m == "POST" and len(seg) == 2 and seg[0] == "lfs-verify":
                    return self._lfs_verify(seg[1])
            self._body()
            self._error(404, f"no such endpoint: {m} {url.path}")
        except Exception as exc:  # a server bug must show up as a 500, not a hung client
            self.close_connection = True  # the request body may be unread
            self._error(500, f"test hub error: {type(exc).__name__}: {exc}")

    # -- read API -------------------------------------------------------------------------------
    def _info(self, repo: HubRepo, commit: HubCommit, blobs: bool = False) -> dict[str, Any]:
        readme = commit.files.get("README.md", b"").decode("utf-8", "replace")
        try:
            card = front_matter(readme)
        except yaml.YAMLError:
            card = {}
        library = card.get("library_name")
        tags = [str(t) for t in (card.get("tags") or []) if isinstance(t, str | int | float)]
        if library and library not in tags:
            tags.insert(0, str(library))
        if isinstance(card.get("license"), str):
            tags.append(f"license:{card['license']}")
        tags.append("region:us")
        siblings = []
        for path in sorted(commit.files):
            sib: dict[str, Any] = {"rfilename": path}
            if blobs:
                data = commit.files[path]
                sib.update(size=len(data), blobId=git_blob_oid(data))
                if is_lfs(path, len(data), data):
                    sib["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                  "pointerSize": 134}
            siblings.append(sib)
        return {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0],
            "sha": commit.oid, "lastModified": _iso(commit.date),
            "createdAt": _iso(repo.created_at), "private": False, "disabled": False,
            "gated": False, "downloads": repo.downloads, "likes": 0, "trendingScore": 0,
            "tags": tags, "library_name": library, "pipeline_tag": card.get("pipeline_tag"),
            "cardData": card or None, "siblings": siblings, "spaces": [],
            "usedStorage": sum(len(v) for v in commit.files.values()),
        }

    @staticmethod
    def _expand(full: dict[str, Any], expand: list[str]) -> dict[str, Any]:
        return {"_id": full["_id"], "id": full["id"], **{k: full.get(k) for k in expand}}

    def _list_models(self, q: dict[str, list[str]]) -> None:
        items = []
        for repo in self.state.repos.values():
            info = self._info(repo, repo.commits[repo.refs["main"]])
            if not all(f in info["tags"] or f in (info["library_name"], info["pipeline_tag"])
                       for f in q.get("filter", [])):
                continue
            if q.get("search") and q["search"][0].lower() not in repo.repo_id.lower():
                continue
            if q.get("author") and info["author"] != q["author"][0]:
                continue
            items.append(info)
        sort = (q.get("sort") or [""])[0]
        if sort:
            if sort not in ("createdAt", "lastModified", "downloads", "likes", "trendingScore"):
                return self._error(400, f"invalid sort {sort!r}")
            items.sort(key=lambda i: (i[sort], i["id"]), reverse=True)
        limit = int(q["limit"][0]) if q.get("limit") else self.state.page_size
        start = int(base64.urlsafe_b64decode(q["cursor"][0]).decode()) if q.get("cursor") else 0
        page = items[start:start + limit]
        expand = q.get("expand", [])
        default = ("_id", "id", "likes", "trendingScore", "private", "downloads", "tags",
                   "pipeline_tag", "library_name", "createdAt", "modelId")
        out = [self._expand(i, expand) if expand else {k: i[k] for k in default} for i in page]
        headers = {}
        if start + limit < len(items):
            nq = {k: v for k, v in q.items() if k != "cursor"}
            nq["cursor"] = [base64.urlsafe_b64encode(str(start + limit).encode()).decode()]
            headers["Link"] = f'<{self.base_url}/api/models?{urlencode(nq, doseq=True)}>; rel="next"'
        self._json(200, out, headers)

    def _model_info(self, org: str, name: str, revision: str, q: dict[str, list[str]]) -> None:
        repo = self._repo(org, name)
        commit = repo and self._commit(repo, revision)
        if repo is None or commit is None:
            return
        full = self._info(repo, commit, blobs=bool(q.get("blobs")))
        self._json(200, self._expand(full, q["expand"]) if q.get("expand") else full)

    def _tree(self, org: str, name: str, revision: str, sub: str, q: dict[str, list[str]]) -> None:
        repo = self._repo(org, name)
        commit = repo and self._commit(repo, revision)
        if repo is None or commit is None:
            return
        recursive = (q.get("recursive") or ["false"])[0].lower() in ("1", "true")
        prefix = f"{sub.rstrip('/')}/" if sub else ""
        entries: dict[str, dict[str, Any]] = {}
        for path, data in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            rel = path[len(prefix):].split("/")
            dirs = rel[:-1] if recursive else rel[:1] if len(rel) > 1 else []
            for i in range(len(dirs)):
                d = prefix + "/".join(rel[:i + 1])
                entries.setdefault(d, {"type": "directory", "oid": hashlib.sha1(
                    d.encode()).hexdigest(), "size": 0, "path": d})
            if len(rel) == 1 or recursive:
                e: dict[str, Any] = {"type": "file", "oid": git_blob_oid(data),
                                     "size": len(data), "path": path}
                if is_lfs(path, len(data), data):
                    e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "pointerSize": 134}
                entries[path] = e
        if sub and not entries:
            return self._error(404, f"{sub} does not exist", "EntryNotFound")
        self._json(200, list(entries.values()))

    def _resolve(self, org: str, name: str, revision: str, path: str) -> None:
        repo = self._repo(org, name)
        commit = repo and self._commit(repo, revision)
        if repo is None or commit is None:
            return
        data = commit.files.get(path)
        if data is None:
            return self._error(404, "Entry not found", "EntryNotFound",
                               {"X-Repo-Commit": commit.oid})
        if self.command == "GET":
            repo.downloads += 1
        base = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if is_lfs(path, len(data), data):
            sha = hashlib.sha256(data).hexdigest()
            self.state.lfs.setdefault(sha, data)
            return self._send(302, b"", {
                **base, "Location": f"{self.cdn_url}/cdn/{sha}?sig=test",
                "ETag": f'"{git_blob_oid(data)}"', "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(data))}, "text/plain")
        self._send(200, data, {**base, "ETag": f'"{git_blob_oid(data)}"'},
                   "application/octet-stream")

    def _cdn(self, sha: str) -> None:
        data = self.state.lfs.get(sha)
        if data is None:
            return self._error(404, "no such object")
        start = 0
        rng = self.headers.get("Range") or ""
        if rng.startswith("bytes=") and rng[6:].split("-")[0].isdigit():
            start = int(rng[6:].split("-")[0])
        status = 206 if start else 200
        extra = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"} if start else {}
        self._send(status, data[start:], {"ETag": f'"{sha}"', **extra},
                   "application/octet-stream")

    def _whoami(self) -> None:
        user = self._require_user()
        if user:
            self._json(200, {"type": "user", "name": user, "auth": {"type": "access_token"}})

    # -- write API ------------------------------------------------------------------------------
    def _validate_yaml(self) -> None:
        body = json.loads(self._body() or b"{}")
        errors = validate_card_metadata(str(body.get("content", "")))
        if errors:
            return self._json(400, {"errors": [{"message": e} for e in errors]})
        warnings = [] if front_matter(str(body.get("content", ""))) else [
            {"message": "Empty or missing yaml metadata in repo card"}]
        self._json(200, {"errors": [], "warnings": warnings})

    def _preupload(self, org: str, name: str, revision: str) -> None:
        body = json.loads(self._body() or b"{}")
        if self._require_user() is None:
            return
        repo = self._repo(org, name)
        commit = repo and self._commit(repo, revision)
        if repo is None or commit is None:
            return
        files = []
        for f in body.get("files", []):
            sample = base64.b64decode(f.get("sample", ""))
            mode = "lfs" if is_lfs(f["path"], int(f.get("size", 0)), sample) else "regular"
            old = commit.files.get(f["path"])
            oid = None if old is None else (
                hashlib.sha256(old).hexdigest() if mode == "lfs" else git_blob_oid(old))
            files.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False,
                          "oid": oid})
        self._json(200, {"files": files, "commitOid": commit.oid})

    def _lfs_batch(self, org: str, name: str) -> None:
        body = json.loads(self._body() or b"{}")
        if self._require_user() is None or self._repo(org, name) is None:
            return
        if body.get("operation") != "upload":
            return self._error(400, "only the upload operation is supported")
        objects = []
        for o in body.get("objects", []):
            obj: dict[str, Any] = {"oid": o["oid"], "size": int(o["size"]), "authenticated": True}
            if o["oid"] not in self.state.lfs:
                sig = hashlib.sha256(f"{o['oid']}:{o['size']}".encode()).hexdigest()[:16]
                obj["actions"] = {
                    "upload": {"href": f"{self.cdn_url}/lfs-upload/{o['oid']}?sig={sig}",
                               "expires_at": _iso(datetime.now(UTC) + timedelta(hours=1))},
                    "verify": {"href": f"{self.base_url}/lfs-verify/{o['oid']}", "header": {}},
                }
            objects.append(obj)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, sha: str) -> None:
        data = self._body()
        if hashlib.sha256(data).hexdigest() != sha:
            return self._error(400, "uploaded content does not match the announced sha256")
        self.state.lfs[sha] = data
        self._send(200, b"")

    def _lfs_verify(self, sha: str) -> None:
        body = json.loads(self._body() or b"{}")
        if self._require_user() is None:
            return
        data = self.state.lfs.get(sha)
        if data is None or len(data) != int(body.get("size", -1)):
            return self._error(404, "object not uploaded")
        self._json(200, {"success": True})

    def _commit_api(self, org: str, name: str, revision: str, q: dict[str, list[str]]) -> None:
        raw = self._body()
        user = self._require_user()
        if user is None:
            return
        repo = self._repo(org, name)
        head = repo and self._commit(repo, revision)
        if repo is None or head is None:
            return
        lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return self._error(400, "the commit payload must start with a header line")
        header = lines[0]["value"]
        create_pr = (q.get("create_pr") or ["0"])[0] in ("1", "true")
        parent = header.get("parentCommit")
        base = head
        if parent:
            if create_pr:
                found = repo.resolve(parent)
                if found is None:
                    return self._error(412, f"parent commit {parent} not found in the repo")
                base = found
            elif parent != head.oid:
                return self._error(412, "A commit has happened since. Please refresh and try again.")
        files = dict(base.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = value.get("path", "")
            if key == "file":
                files[path] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                data = self.state.lfs.get(value["oid"])
                if data is None:
                    return self._error(422, f"LFS object {value['oid']} was not uploaded")
                files[path] = data
            elif key == "deletedFile":
                if path not in files:
                    return self._error(404, f"A file with this name doesn't exist: {path}",
                                       "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                files = {p: d for p, d in files.items() if not p.startswith(path.rstrip("/") + "/")}
            else:
                return self._error(400, f"unknown commit operation {key!r}")
        title = str(header.get("summary") or "").strip()
        if not title:
            return self._error(400, "commit summary is required")
        now = datetime.now(UTC) + timedelta(seconds=self.state.clock_offset)
        oid = _commit_oid([base.oid], files, title, f"{now.timestamp()}:{len(repo.commits)}")
        repo.commits[oid] = HubCommit(oid, files, [base.oid], title,
                                      str(header.get("description") or ""), now, user)
        out: dict[str, Any] = {"success": True, "commitOid": oid,
                               "commitUrl": f"{self.base_url}/{repo.repo_id}/commit/{oid}"}
        if create_pr:
            num = len(repo.prs) + 1
            pr = PullRequest(num, f"refs/pr/{num}", title, str(header.get("description") or ""),
                             base.oid, user)
            repo.prs.append(pr)
            repo.refs[pr.ref] = oid
            out["pullRequestUrl"] = f"{self.base_url}/{repo.repo_id}/discussions/{num}"
        else:
            ref = revision if revision in repo.refs else "main"
            repo.refs[ref] = oid
        self._json(200, out)


def validate_card_metadata(content: str) -> list[str]:
    """What the Hub's validate-yaml would reject: bad YAML, non-mapping, malformed model-index."""
    m = _YAML_BLOCK.search(content)
    if not m:
        return []
    try:
        data = yaml.safe_load(m.group(2))
    except yaml.YAMLError as exc:
        return [f"Invalid YAML: {exc}"]
    if data is None:
        return []
    if not isinstance(data, dict):
        return ["The YAML metadata must be a mapping"]
    errors: list[str] = []
    mi = data.get("model-index")
    if mi is None:
        return errors
    if not isinstance(mi, list):
        return ['"model-index" must be an array']
    for i, model in enumerate(mi):
        where = f"model-index[{i}]"
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            errors.append(f'"{where}.name" is required')
            continue
        results = model.get("results")
        if not isinstance(results, list):
            errors.append(f'"{where}.results" must be an array')
            continue
        for j, r in enumerate(results):
            w = f"{where}.results[{j}]"
            if not isinstance(r, dict):
                errors.append(f'"{w}" must be an object')
                continue
            if not isinstance(r.get("task"), dict) or not r["task"].get("type"):
                errors.append(f'"{w}.task.type" is required')
            ds = r.get("dataset")
            if not isinstance(ds, dict) or not ds.get("name") or not ds.get("type"):
                errors.append(f'"{w}.dataset.name" and "{w}.dataset.type" are required')
            metrics = r.get("metrics")
            if not isinstance(metrics, list) or not metrics:
                errors.append(f'"{w}.metrics" must be a non-empty array')
                continue
            for k, met in enumerate(metrics):
                if not isinstance(met, dict) or not met.get("type") or "value" not in met:
                    errors.append(f'"{w}.metrics[{k}]" needs "type" and "value"')
    return errors


class HubHandle:
    """A running loopback Hub: its URL, its state, fault injection, and ``stop()``."""

    def __init__(self, servers: list[tuple[ThreadingHTTPServer, threading.Thread]],
                 state: _State, url: str, cdn_url: str) -> None:
        self._servers, self._state = servers, state
        self.url, self.cdn_url = url, cdn_url

    # -- lifecycle ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Shut the server(s) down and wait for their threads."""
        for server, thread in self._servers:
            server.shutdown()
            server.server_close()
            thread.join(5)

    def __enter__(self) -> HubHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state ----------------------------------------------------------------------------------
    @property
    def repos(self) -> dict[str, HubRepo]:
        return self._state.repos

    @property
    def requests(self) -> list[RequestRecord]:
        with self._state.lock:
            return list(self._state.requests)

    def log_text(self) -> str:
        """Every recorded request as one line (for 'the token never appears' checks)."""
        return "\n".join(r.line() for r in self.requests)

    def received_except_auth(self) -> str:
        """Everything clients sent (paths, header values other than Authorization, bodies)."""
        parts = []
        for r in self.requests:
            parts.append(r.path)
            parts += [f"{k}: {v}" for k, v in r.headers.items() if k.lower() != "authorization"]
            parts.append(r.body.decode("utf-8", "replace"))
        return "\n".join(parts)

    def clear_log(self) -> None:
        with self._state.lock:
            self._state.requests.clear()

    def add_repo(self, repo_id: str, source: Path | Mapping[str, bytes],
                 created_at: datetime | None = None, message: str = "initial commit") -> str:
        """Create (or add a commit to) a repo from a directory or ``{path: bytes}``; returns the sha."""
        files = _read_files(source)
        with self._state.lock:
            now = datetime.now(UTC) + timedelta(seconds=self._state.clock_offset)
            self._state.clock_offset += 1  # distinct, increasing times for repos seeded together
            repo = self._state.repos.get(repo_id)
            if repo is None:
                repo = self._state.repos[repo_id] = HubRepo(repo_id, created_at or now)
            parents = [repo.refs["main"]] if "main" in repo.refs else []
            oid = _commit_oid(parents, files, message, repo_id)
            repo.commits[oid] = HubCommit(oid, files, parents, message, "", now, "seed")
            repo.refs["main"] = oid
            for path, data in files.items():
                if is_lfs(path, len(data), data):
                    self._state.lfs.setdefault(hashlib.sha256(data).hexdigest(), data)
            return oid

    def head(self, repo_id: str, revision: str = "main") -> str:
        """The commit oid a branch or ``refs/pr/N`` points at."""
        with self._state.lock:
            return self._state.repos[repo_id].refs[revision]

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a repo at a revision (a copy)."""
        with self._state.lock:
            commit = self._state.repos[repo_id].resolve(revision)
            if commit is None:
                raise KeyError(f"{repo_id} has no revision {revision!r}")
            return dict(commit.files)

    def commit(self, repo_id: str, revision: str = "main") -> HubCommit:
        with self._state.lock:
            commit = self._state.repos[repo_id].resolve(revision)
            if commit is None:
                raise KeyError(f"{repo_id} has no revision {revision!r}")
            return commit

    def prs(self, repo_id: str) -> list[PullRequest]:
        with self._state.lock:
            return list(self._state.repos[repo_id].prs)

    def fail_next(self, method: str, path_pattern: str, status: int = 503, times: int = 1,
                  retry_after: int | None = None) -> None:
        """Answer the next ``times`` matching requests with ``status`` (``method`` may be ``*``)."""
        with self._state.lock:
            self._state.faults.append(
                _Fault(method, re.compile(path_pattern), status, times, retry_after))


def start_hub(repos: Mapping[str, Path | Mapping[str, bytes]] | None = None, *,
              created_at: Mapping[str, datetime] | None = None, tokens: Iterable[str] = (),
              page_size: int = 1000, host: str = "127.0.0.1",
              cdn_host: str | None = None) -> HubHandle:
    """Start a loopback Hub on a free port, seeded with ``{repo_id: directory or {path: bytes}}``.

    ``created_at`` sets repo creation times (default: seeding order, one second apart).
    ``tokens``: the accepted write tokens (default: any ``hf_...`` token).
    ``page_size``: ``/api/models`` page size when the client sends no ``limit``.
    ``host``: the address it listens on. ``cdn_host``: the other host name downloads are
    redirected to (default ``localhost``, another name of 127.0.0.1); an address other than
    ``host`` gets a second listening socket on the same port.
    """
    state = _State(tokens, page_size)
    handler = type("BoundHandler", (_Handler,), {"state": state})
    servers = [ThreadingHTTPServer((host, 0), handler)]
    port = servers[0].server_address[1]
    cdn_host = cdn_host or _CDN_HOST
    if cdn_host not in (host, _CDN_HOST):
        servers.append(ThreadingHTTPServer((cdn_host, port), handler))
    handler.base_url = f"http://{host}:{port}"
    handler.cdn_url = f"http://{cdn_host}:{port}"
    running = []
    for server in servers:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="test-hub",
                                  daemon=True)
        thread.start()
        running.append((server, thread))
    hub = HubHandle(running, state, handler.base_url, handler.cdn_url)
    for repo_id, source in (repos or {}).items():
        hub.add_repo(repo_id, source, (created_at or {}).get(repo_id))
    return hub


def use_hub(monkeypatch: Any, hub: HubHandle, cache_dir: Path | None = None,
            token: str | None = "hf_mll_dummy_token_0123456789") -> None:
    """Point huggingface_hub (env and its import-time constants) at ``hub`` for one test.

    huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_HUB_DISABLE_XET`` when it is
    imported, so the constants are patched as well as the environment. ``cache_dir`` keeps
    downloads out of the user's cache; ``token`` becomes ``HF_TOKEN`` (None: unset).
    """
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    if cache_dir is not None:
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
        monkeypatch.setenv("HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", "/nonexistent/mll-test/hf-token")
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    if token is None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", token)


def open_clip_repo_files(name: str = "tiny", readme: str | None = None, *,
                         weights: bool = True, pickled: bool = False, config: bool = True,
                         extra: Mapping[str, bytes] | None = None) -> dict[str, bytes]:
    """Files of a small open_clip-layout repo (the weights are a valid but tiny safetensors).

    Enough for discovery and download tests (nothing here is loaded as a model).
    """
    import numpy as np
    from safetensors.numpy import save

    files: dict[str, bytes] = {}
    if config:
        files["open_clip_config.json"] = json.dumps({"model_cfg": {
            "embed_dim": 8, "vision_cfg": {"image_size": 32, "layers": 1, "width": 8,
                                           "patch_size": 8},
            "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 8, "heads": 1,
                         "layers": 1}}, "preprocess_cfg": {}}).encode()
    if weights:
        files["open_clip_model.safetensors"] = save(
            {"w": np.arange(64, dtype=np.float32) + len(name)}, metadata={"format": "pt"})
    if pickled:
        files["open_clip_pytorch_model.bin"] = b"PK\x03\x04 pretend pickle " + name.encode()
    files["README.md"] = (readme if readme is not None else
                          f"---\nlibrary_name: open_clip\nlicense: mit\ntags: [clip, open_clip]\n"
                          f"---\n# {name}\n\nA tiny test model.\n").encode()
    files.update(extra or {})
    return files


__all__ = ["HubCommit", "HubHandle", "HubRepo", "PullRequest", "RequestRecord", "front_matter",
           "git_blob_oid", "is_lfs", "open_clip_repo_files", "start_hub", "use_hub",
           "validate_card_metadata"]
