"""The one way an artifact is written and read: a NumPy ``.npz`` of named arrays plus a JSON ``info``
string, and (for the shipped ones) a JSON record beside it.

A worker must refuse an artifact it cannot read with the command that builds one, never a traceback:
``reading`` turns a missing file into "not found: <how to build it>" and a file without the expected
arrays into "is not a <what> artifact", both ``ModelConfigError``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from enrich.errors import ModelConfigError


def write(path: Path, info: dict[str, Any], **arrays: Any) -> None:
    """``arrays`` and ``info`` (as the ``info`` entry) to ``path``, its directory made if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # a file object: np.savez would add ".npz" to a path without it
        np.savez_compressed(fh, info=json.dumps(info, sort_keys=True), **arrays)


@contextmanager
def reading(path: Path, what: str, build: str) -> Iterator[Any]:
    """The opened ``.npz``; ``what`` names the artifact and ``build`` the command that makes one."""
    try:
        with np.load(path) as z:
            yield z
    except FileNotFoundError:
        raise ModelConfigError(f"{what} {path} not found: build it with `{build}`") from None
    except (KeyError, ValueError, OSError, json.JSONDecodeError) as exc:
        raise ModelConfigError(f"{path} is not a {what} artifact ({type(exc).__name__}: {exc}); rebuild it with "
                               f"`{build}`") from None


def info_of(z: Any) -> dict[str, Any]:
    return json.loads(str(z["info"]))


def write_record(artifact: Path, record: dict[str, Any]) -> Path:
    """The training record beside a shipped artifact (``name.json`` for ``name.npz`` / ``name.pt``)."""
    out = artifact.with_suffix(".json")
    out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return out
