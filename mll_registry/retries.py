"""One retry policy for every remote call (MLflow, the Hub): tenacity, exponential backoff.

Callers say what is transient for their service; everything else fails at once. After the last
try the caller's ``give_up`` turns the error into a clear one-line message. Errors leave here with
their messages (and their causes') redacted (:func:`mll_registry.redaction.redact`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def budget_s() -> float:
    """The configured total retry time of one call (``retry_budget_s``: MLL_RETRY_BUDGET_S,
    mll.toml, default 60 s)."""
    from mll_registry.settings import load_settings

    try:
        return load_settings().retry_budget_s
    except ValueError:  # a bad config is reported by the command itself
        from mll_registry.settings import DEFAULTS

        return DEFAULTS.retry_budget_s


def call_with_retries(fn: Callable[[], T], what: str, *, transient: Callable[[BaseException], bool],
                      give_up: Callable[[BaseException], BaseException], tries: int = 4,
                      base_delay: float = 0.5, max_delay: float = 8.0,
                      sleep: Callable[[float], None] = time.sleep,
                      budget: float | None = None) -> T:
    """Call ``fn``; retry transient failures (``base_delay`` * 2^n, at most ``max_delay``), at
    most ``tries`` times and no longer than ``budget`` seconds in all (default :func:`budget_s`).

    Raises:
        ``give_up(exc)`` for the last transient failure, or for any other failure; a failure
        that ``give_up`` returns unchanged is re-raised as it was.
    """
    from tenacity import (
        RetryError,
        Retrying,
        retry_if_exception,
        stop_after_attempt,
        stop_after_delay,
        wait_exponential,
    )

    from mll_registry.redaction import redact, scrub

    limit = budget_s() if budget is None else budget
    shown = redact(what)  # `what` may quote an endpoint with credentials

    def before_sleep(state: object) -> None:
        outcome = getattr(state, "outcome", None)
        exc = outcome.exception() if outcome is not None else None
        log.warning("%s: transient failure (%s), retry %d/%d", shown, type(exc).__name__,
                    getattr(state, "attempt_number", 0), tries - 1)

    try:
        for attempt in Retrying(stop=stop_after_attempt(tries) | stop_after_delay(limit),
                                sleep=sleep,
                                wait=wait_exponential(multiplier=base_delay, max=max_delay),
                                retry=retry_if_exception(transient), before_sleep=before_sleep,
                                reraise=True):
            with attempt:
                return fn()
    except RetryError as exc:  # pragma: no cover - reraise=True re-raises the last error
        raise scrub(give_up(exc)) from scrub(exc)
    except Exception as exc:
        # the error and its causes are redacted in place: a logged traceback shows no credential
        err = scrub(give_up(exc))
        scrub(exc)
        if err is exc:
            raise
        raise err from exc
    raise AssertionError("unreachable")  # pragma: no cover
