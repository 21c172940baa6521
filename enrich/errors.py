"""Error hierarchy: the class tells the caller what to do.

- ``InvalidItem``: the input is bad; send it to the dead-letter topic, move on.
- ``BackendUnavailable``: the model server is down or timing out; retry later.
- ``ModelConfigError``: the deployment is wrong (missing files, bad shapes); stop.
- ``ModelRejected``: the model server refused or failed one request; the items of the
  batch are retried one by one and those that still fail go to the dead-letter topic.
"""

from __future__ import annotations


class EnrichError(Exception):
    """Root of every error this package raises on purpose."""


class InvalidItem(EnrichError):
    """An input event that can never be enriched as sent.

    ``reason`` is a short machine-readable code (stable, used in metrics and the
    DLQ record); ``detail`` is for humans.
    """

    def __init__(self, reason: str, detail: str, stage: str = "decode") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.stage = stage


class BackendUnavailable(EnrichError):
    """The inference backend could not answer now; the same call may succeed later."""


class ModelConfigError(EnrichError):
    """Model files, metadata or server configuration are inconsistent; retrying will not help."""


class ModelRejected(ModelConfigError):
    """The model server refused or failed a request that reached it (bad input tensor, a runtime error
    inside the model). Unlike a missing model, it may depend on the items in the request."""
