"""Request ids in every log line of a request, through a contextvar and a logging filter."""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

# A caller-sent id is kept only if it is short and plain, so it cannot forge log lines.
ACCEPTED_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
correlation_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)


def choose_request_id(sent: str | None) -> str:
    """Return the caller's X-Request-ID when acceptable, else a new random id."""
    if sent and ACCEPTED_ID.match(sent):
        return sent
    return uuid.uuid4().hex


def accepted_correlation_id(sent: str | None) -> str | None:
    return sent if sent and ACCEPTED_ID.match(sent) else None


def correlation_headers() -> dict[str, str]:
    """Return the X-Correlation-ID of the current request, to pass on to PowerAuth Server."""
    correlation_id = correlation_id_var.get()
    return {} if correlation_id is None else {"X-Correlation-ID": correlation_id}


class RequestIdFilter(logging.Filter):
    """Append request_id (and correlation_id when sent) to records logged during a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = request_id_var.get()
        suffix = ""
        if request_id is not None:
            suffix = f" request_id={request_id}"
            correlation_id = correlation_id_var.get()
            if correlation_id is not None:
                suffix += f" correlation_id={correlation_id}"
        record.request_ids = suffix
        return True


def install_log_filter() -> None:
    """Add the request ids to the format of every root handler."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
        formatter = handler.formatter
        log_format = formatter._fmt if formatter is not None and formatter._fmt else "%(message)s"
        if "%(request_ids)s" not in log_format:
            handler.setFormatter(logging.Formatter(log_format + "%(request_ids)s"))
