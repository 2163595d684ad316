"""Remote paths (`gs://...`): how long a first access may take, and what to say when it does
not answer. Offline or without credentials, tensorstore and TensorFlow's GCS file system retry
silently for many minutes; every remote read ptune starts (a t5x checkpoint, a SentencePiece
model) is bounded by `remote_timeout()` and ends in one line naming the path, the credentials
in use (or that none were found) and `PTUNE_REMOTE_TIMEOUT`.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, TypeVar

from ptune.errors import UserError

TIMEOUT_ENV = "PTUNE_REMOTE_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0
CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
T = TypeVar("T")


def remote_timeout() -> float:
    """Seconds a first remote access may take: `$PTUNE_REMOTE_TIMEOUT`, else 60."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise UserError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return value


def credentials_hint() -> str:
    """Where Google Cloud credentials would come from, or that none were found."""
    if os.environ.get(CREDENTIALS_ENV):
        return f"{CREDENTIALS_ENV} is {os.environ[CREDENTIALS_ENV]}"
    gcloud = os.environ.get("CLOUDSDK_CONFIG") or os.path.expanduser("~/.config/gcloud")
    if os.path.isfile(os.path.join(gcloud, "application_default_credentials.json")):
        return "credentials from `gcloud auth application-default login`"
    return (
        f"no credentials found: set {CREDENTIALS_ENV} to a service-account key file or run "
        "`gcloud auth application-default login`"
    )


def no_answer(where: str) -> UserError:
    """The one line for a remote path that did not answer within `remote_timeout()`."""
    return UserError(
        f"{where}: no answer within {remote_timeout():g} s (no network, or no usable Google "
        f"Cloud credentials: {credentials_hint()}; {TIMEOUT_ENV} sets the wait)"
    )


def bounded(fn: Callable[[], T], where: str) -> T:
    """`fn()` (a blocking remote call), or `no_answer(where)` after `remote_timeout()`
    seconds. The call runs in a daemon thread, so one that never returns does not hold the
    process at exit; its exception, if it raises in time, is raised here."""
    timeout = remote_timeout()
    outcome: dict = {}

    def call():
        try:
            outcome["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            outcome["error"] = e

    thread = threading.Thread(target=call, name=f"remote {where}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise no_answer(where)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
