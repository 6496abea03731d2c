"""The client's errors: what the service said, and nothing the user would have to decode."""

from __future__ import annotations

from typing import Any


class HttpError(Exception):
    """The service refused or failed a request. ``str()`` is the service's own message, with the status and the
    request id an operator needs to find the call in the service's log (OpenStack clients print them alike)."""

    def __init__(self, code: int, message: str, title: str | None = None, kind: str | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.title = title
        self.kind = kind
        self.request_id = request_id

    def __str__(self) -> str:
        text = f"{self.message} (HTTP {self.code})"
        return f"{text} (Request-ID: {self.request_id})" if self.request_id else text


def from_response(resp: Any) -> HttpError:
    """The error of an answer of 400 or more: the service's JSON ``{"error": {"code", "title", "message",
    "kind"}}``, else (a proxy, a crash before the service answered) the start of the body as it came."""
    request_id = resp.headers.get("x-openstack-request-id")
    try:
        body = resp.json()
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return HttpError(resp.status_code, err["message"], err.get("title"), err.get("kind"), request_id)
    text = (resp.text or "").strip()[:300] or getattr(resp, "reason", None) or "no message"
    return HttpError(resp.status_code, text, request_id=request_id)


class JobFailed(Exception):
    """A snapshot job waited for ended failed or cancelled; ``job`` is its last state."""

    def __init__(self, job: dict[str, Any]) -> None:
        message = (job.get("error") or {}).get("message") or "no error recorded"
        super().__init__(f"snapshot job {job.get('id')} {job.get('state')}: {message}")
        self.job = job

