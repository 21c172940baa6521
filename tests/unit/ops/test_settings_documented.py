"""Every setting is documented (the worker's and the tools'): operators configure the service from the table in
docs/configuration.md."""

from __future__ import annotations

import re
from pathlib import Path

from ops.settings import ToolSettings

CONFIGURATION = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def _documented_variables(text: str) -> set[str]:
    names = set(re.findall(r"ENRICH_[A-Z0-9_]+", text))
    for m in re.finditer(r"ENRICH_([A-Z0-9_]*)\{([A-Z0-9_,]+)\}([A-Z0-9_]*)", text):  # ENRICH_X_{A,B}_Y
        names |= {f"ENRICH_{m.group(1)}{part}{m.group(3)}" for part in m.group(2).split(",")}
    return names


def test_every_setting_has_a_row_in_the_readme():
    documented = _documented_variables(CONFIGURATION.read_text())
    missing = [f"ENRICH_{name.upper()}" for name in ToolSettings.model_fields
               if f"ENRICH_{name.upper()}" not in documented]
    assert not missing, f"add these to the table in docs/configuration.md: {missing}"


def test_brace_groups_expand():
    assert _documented_variables("`ENRICH_TRITON_{HTTP,GRPC}_PORT`") >= {"ENRICH_TRITON_HTTP_PORT",
                                                                       "ENRICH_TRITON_GRPC_PORT"}
