"""One error hierarchy: the class says what the caller does with the failure.

- ``SkipItem`` (``InvalidItem``): this input can never be enriched as sent; dead-letter it with its
  reason, go on with the others.
- ``Retry`` (``BackendUnavailable``): the model server is down or timing out; hold the batch and call
  again later.
- ``RetryAlone`` (``ModelRejected``): the model server refused or failed a request that reached it;
  the batch's items are retried one by one, and those it keeps refusing are dead-lettered.
- ``Stop`` (``ModelConfigError``, ``KafkaToolError``, ``LaunchError``, ``ParityError``): the deployment
  or the configuration is wrong (a missing model, unreachable broker, bad settings); retrying will not
  help, so the worker or the command stops and says how to fix it.

Anything that is none of these is a bug: the worker dead-letters the one item it hit
(``internal_error``), and the CLI prints its traceback.
"""

from __future__ import annotations


class EnrichError(Exception):
    """Root of every error this package raises on purpose."""


class SkipItem(EnrichError):
    """The input is bad: dead-letter it."""


class Retry(EnrichError):
    """A transient failure: the same call may succeed later."""


class RetryAlone(EnrichError):
    """A request failed for what may be one of its items: retry them one by one."""


class Stop(EnrichError):
    """The deployment or configuration is wrong: stop and say how to fix it."""


class InvalidItem(SkipItem):
    """An input event that can never be enriched as sent.

    ``reason`` is a short machine-readable code (stable, used in metrics and the
    DLQ record); ``detail`` is for humans.
    """

    def __init__(self, reason: str, detail: str, stage: str = "decode") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.stage = stage


class BackendUnavailable(Retry):
    """The inference backend could not answer now; the same call may succeed later."""


class ModelRejected(RetryAlone):
    """The model server refused or failed a request that reached it (bad input tensor, a runtime error
    inside the model). Unlike a missing model, it may depend on the items in the request."""


class ModelConfigError(Stop):
    """Model files, metadata or server configuration are inconsistent; retrying will not help."""
