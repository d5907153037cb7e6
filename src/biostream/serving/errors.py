"""Bad input answered as every other 4xx of the service, and logged as what it is. BentoML answers a request its
endpoint's input model refuses with `{"error", "detail": [...]}` (pydantic's list) or `[{"error"}]` (a list), and
logs each at ERROR with a traceback: a log flood on bad input. `message` reads such an answer's error, which the
router sends as `{"error": "<what is wrong, where>"}` (`biostream.serving.asgi.one_error`); `quiet_bad_input` logs
it at WARNING, one line, no traceback."""

from __future__ import annotations

import logging
from typing import Any

BENTOML_LOGGER = "bentoml._internal.server.http_app"  # where BentoML logs "Exception on <path> [<method>]"
MAX_ERROR = 2000  # characters of an error message answered


def message(payload: Any) -> str | None:
    """The error message of a BentoML error answer (None: not one)."""
    if isinstance(payload, list) and len(payload) == 1:
        payload = payload[0]
    if not isinstance(payload, dict) or not isinstance(payload.get("error"), str):
        return None
    said = payload["error"]
    detail = payload.get("detail")
    if isinstance(detail, list):
        parts = []
        for d in detail[:10]:
            if isinstance(d, dict):
                where = ".".join(str(x) for x in d.get("loc", ()))
                parts.append(f"{where}: {d.get('msg', '')}" if where else str(d.get("msg", "")))
        said += ": " + "; ".join(parts) + (f"; and {len(detail) - 10} more" if len(detail) > 10 else "")
    return said[:MAX_ERROR]


class _BadInput(logging.Filter):
    """BentoML's log line of a request its input model refused: WARNING, the reason, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None or record.levelno < logging.ERROR:
            return True
        from bentoml.exceptions import BentoMLException
        from pydantic import ValidationError

        code = getattr(getattr(error, "error_code", None), "value", 500)
        if isinstance(error, ValidationError):  # where and what, never the values sent (patient data)
            said = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in error.errors(include_input=False, include_url=False)[:5])
        elif isinstance(error, BentoMLException) and 400 <= code < 500:
            said = str(error)
        else:
            return True
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg = f"{record.getMessage()}: bad input ({type(error).__name__}: {said[:300]})"
        record.args, record.exc_info, record.exc_text = (), None, None
        return True


def quiet_bad_input() -> None:
    """Install the filter (once per process)."""
    logger = logging.getLogger(BENTOML_LOGGER)
    if not any(isinstance(f, _BadInput) for f in logger.filters):
        logger.addFilter(_BadInput())
