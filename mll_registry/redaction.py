"""One redaction for every credential shape an error line, log or tag may show, and the rule for
sending a secret over a connection.

:func:`redact` hides, anywhere in a text: the user info of a URI (``scheme://user:pass@host``,
also when the password holds ``/``, ``:``, ``@`` or ``?``), secret query parameters
(``?token=``, ``access_token=``, ``X-Amz-Signature=``, ``sig=``, ``api_key=``, ...), bearer and
basic credentials, Hugging Face / OpenAI style tokens, and the values of the secret environment
variables in :data:`SECRET_ENV`. It only ever removes text, so applying it twice is harmless.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from mll_registry.errors import exception_chain

MASK = "***"
#: environment variables whose values are secrets wherever they appear
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "MLFLOW_TRACKING_PASSWORD",
              "MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
              "PREFECT_API_KEY")
#: schemes whose paths use ``@`` for a revision (``hf://org/name@sha``): there an ``@`` after a
#: ``/`` is not user info
_REVISION_SCHEMES = ("hf", "hf-hub", "models", "runs", "file", "s3", "gs", "mlflow-artifacts")
_URI = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*)://(\S*)")
_QUERY = re.compile(r"(?i)((?<![\w-])[\w.-]*(?:token|signature|sig|credential|secret|password"
                    r"|passwd|pwd|key|auth|jwt)=)[^&#\s'\"]+")
_AUTH = re.compile(r"(?i)\b((?:proxy-)?authorization\s*[:=]\s*(?:(?:bearer|basic|token|digest)\s+)?"
                   r"|bearer\s+)[^\s'\",;]+")
_TOKENS = re.compile(r"\b(hf_|sk-|ghp_|github_pat_)[A-Za-z0-9_-]{16,}")


def _userinfo_end(scheme: str, rest: str) -> int:
    """Index of the ``@`` that ends the user info in ``rest`` (the URI after ``://``), or -1."""
    at = rest.rfind("@")
    if at < 0:
        return -1
    head = rest[:at]
    slash = head.find("/")
    if slash == 0:
        return -1  # no authority ("sqlite:////path", "file:///path"): nothing to hide
    if slash < 0 or ":" in head[:slash]:
        return at  # "user@host", "user:pa/ss@host"
    return -1 if scheme.lower() in _REVISION_SCHEMES else at


def _uri(m: re.Match[str]) -> str:
    scheme, rest = m.group(1), m.group(2)
    end = _userinfo_end(scheme, rest)
    return f"{scheme}://{MASK}{rest[end:]}" if end >= 0 else m.group(0)


def redact(text: object, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every credential replaced by ``***`` (see the module docstring); the
    ``secrets`` given and those of :data:`SECRET_ENV` are hidden wherever they occur."""
    out = str(text)
    values = [*secrets, *(os.environ.get(k) for k in SECRET_ENV)]
    for s in sorted({v for v in values if v and len(v) >= 6}, key=len, reverse=True):
        out = out.replace(s, MASK)
    out = _URI.sub(_uri, out)
    out = _QUERY.sub(lambda m: m.group(1) + MASK, out)
    out = _AUTH.sub(lambda m: m.group(1) + MASK, out)
    return _TOKENS.sub(lambda m: m.group(1) + MASK, out)


def scrub(exc: BaseException) -> BaseException:
    """``exc`` with the messages of it and its causes redacted in place (same types, so callers
    that catch them by kind still do): a traceback a worker logs shows no credential."""
    for e in exception_chain(exc):
        text = str(e)
        clean = redact(text)
        if clean == text:
            continue
        if isinstance(getattr(e, "message", None), str):  # MlflowException keeps its own
            e.message = redact(e.message)  # type: ignore[attr-defined]
        with contextlib.suppress(TypeError, AttributeError):  # an exotic exception type
            e.args = (clean,)
    return exc


def is_loopback(url: str) -> bool:
    """Whether ``url``'s host is this machine (``localhost``, 127.0.0.0/8, ``::1``); no lookup."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_refusal(url: str, secret: str) -> str | None:
    """Why ``secret`` may not be sent to ``url`` (plain http to another host), or None.

    A key sent over http can be read by anyone on the path; only the loopback host is exempt
    (a local test server or proxy).
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "https" or (scheme == "http" and is_loopback(url)):
        return None
    return (f"{redact(url)} would receive {secret} over {scheme or 'a non-https URL'}: use an "
            "https:// URL (plain http is allowed only to localhost)")
