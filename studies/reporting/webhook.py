"""The webhook: a JSON summary POSTed to STAGETUNE_WEBHOOK_URL when a study ends.

Each attempt has a bounded timeout (STAGETUNE_WEBHOOK_TIMEOUT_S); a refused connection, a
timeout, a 429 or a 5xx answer is retried with backoff (tenacity), a few times. Nothing
here ever fails a study: a webhook that cannot be delivered is one warning in the log. The
log names the receiver by scheme and host only: a webhook URL often carries its secret in
its path (Slack's do), and the token is never written anywhere.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

log = logging.getLogger(__name__)

ATTEMPTS = 4
RETRIED_STATUSES = frozenset({408, 425, 429})  # and every 5xx
EVENT = "study.ended"


class _Retryable(Exception):
    """An attempt that may succeed later; its text is safe to log."""


class _Refused(Exception):
    """The receiver answered with a status that retrying will not change."""


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The body: the study's outcome, its best value and parameters, and each stage's
    verdict, from the report `studies.run.runner.report_of` builds."""
    return {"event": EVENT, "study": report["study"], "status": report["status"],
            "message": report["message"], "objective": report.get("objective"),
            "best": report.get("best"), "baseline": report.get("baseline"),
            "stages": [{"name": s["name"], "verdict": s["verdict"], "message": s["message"]}
                       for s in report.get("stages", [])],
            "compute": report.get("compute", {})}


def send(url: str, body: dict[str, Any], token: str = "", timeout_s: float = 10.0,
         wait_s: float = 1.0) -> bool:
    """POST `body` to `url`; True once the receiver answered 2xx. Never raises."""
    headers = {"User-Agent": "stagetune-webhook"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    where = receiver(url)
    retrying = Retrying(stop=stop_after_attempt(ATTEMPTS),
                        wait=wait_exponential(multiplier=wait_s, max=8 * wait_s),
                        retry=retry_if_exception_type(_Retryable),
                        before_sleep=lambda state: _retrying(where, state), reraise=True)
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
            for attempt in retrying:
                with attempt:
                    _post(client, url, body, headers)
    except _Retryable as exc:
        log.warning("webhook to %s for study %s not delivered after %d attempts: %s",
                    where, body.get("study"), ATTEMPTS, exc)
        return False
    except Exception as exc:  # a 4xx answer, a URL httpx cannot use: trying again won't help
        log.warning("webhook to %s for study %s not delivered: %s", where, body.get("study"),
                    exc if isinstance(exc, _Refused) else exc.__class__.__name__)
        return False
    return True


def _post(client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
    try:
        answer = client.post(url, json=body, headers=headers)
    except httpx.TransportError as exc:  # refused, unreachable, timed out
        raise _Retryable(exc.__class__.__name__) from None
    if answer.status_code in RETRIED_STATUSES or answer.status_code >= 500:
        raise _Retryable(f"it answered {answer.status_code}")
    if not answer.is_success:
        raise _Refused(f"it answered {answer.status_code}")


def _retrying(where: str, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    log.info("webhook to %s: attempt %d failed (%s); retrying in %.1f s",
             where, state.attempt_number, error, wait)


def receiver(url: str) -> str:
    """The URL as the log may show it: scheme and host, no path, query or credentials."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "an unparsable URL"
    return f"{parts.scheme}://{host}{port}"
