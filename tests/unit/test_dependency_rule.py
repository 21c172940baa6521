"""The dependency rule (docs/architecture.md), checked in fresh interpreters (what a module imports at load
time: no third-party stack it must not load) and on the source (no first-party package it must not import,
anywhere in its code, functions included):

- ``enrich`` (the serving pipeline) imports no torch, transformers, Faust, Kafka client, and none of
  ``triton_models``, ``streams``, ``training``, ``corpora`` or ``ops``: plain code over numpy and the
  inference clients, testable without a broker;
- ``streams`` (the worker) imports ``enrich``, Faust and the Kafka client, and no torch, transformers,
  ``triton_models``, ``training``, ``corpora`` or ``ops``;
- ``triton_models`` (export, graphs, repository) imports no ``streams``, ``training``, ``corpora`` or ``ops``;
- ``training`` and ``corpora`` are offline: nothing in ``enrich``, ``streams`` or ``triton_models`` imports
  them; ``corpora`` imports no ``training``;
- ``ops`` (the CLI and the tools) may import anything, and nothing imports ``ops``;
- ``benchmarks`` (measurement scripts) may import anything, and nothing imports them.

And each topic is named in one place: no module but ``streams/topology.py`` spells a topic's name.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("enrich", "streams", "triton_models", "training", "corpora", "ops")
# package -> the first-party packages and third-party stacks it must not import
FORBIDDEN = {
    "enrich": ("streams", "triton_models", "training", "corpora", "ops", "torch", "transformers", "faust",
               "confluent_kafka"),
    "streams": ("triton_models", "training", "corpora", "ops", "torch", "transformers"),
    "triton_models": ("streams", "training", "corpora", "ops"),
    "training": ("ops",),
    "corpora": ("training", "ops", "streams"),
}


def modules_of(package: str) -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for p in (ROOT / package).rglob("*.py") if "python_backend" not in p.parts)


def imported_names(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code (absolute imports; the project uses no others)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def offenders(loaded: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden))


def loaded_by(modules: list[str]) -> set[str]:
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(out.stdout))


def test_the_layout_is_the_architecture():
    top = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert top == set(PACKAGES)
    assert {"media", "models", "tagging", "vectors"} <= {p.parent.name for p in (ROOT / "enrich").glob("*/__init__.py")}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_across_the_rule_anywhere_in_its_code(package):
    first_party = tuple(f for f in FORBIDDEN[package] if f in PACKAGES)  # a third-party stack may load lazily
    bad = {m: offenders(imported_names(_path(m)), first_party) for m in modules_of(package)}
    assert {m: o for m, o in bad.items() if o} == {}


def test_nothing_but_the_tools_imports_the_tools():
    users = {m for pkg in PACKAGES if pkg != "ops" for m in modules_of(pkg)
             if offenders(imported_names(_path(m)), ("ops",))}
    assert users == set()


def test_nothing_imports_the_benchmarks():
    users = {m for pkg in PACKAGES for m in modules_of(pkg) if offenders(imported_names(_path(m)), ("benchmarks",))}
    assert users == set()
    scripts = {p.stem: imported_names(p) for p in (ROOT / "benchmarks").glob("*.py")}
    assert "ops.measure.evaluate" in scripts["tagger_packed_vs_pairwise"]  # the check reads the scripts' imports


def test_each_topic_is_named_in_one_place():
    from streams.topology import TOPIC_NAMES

    spelled = {}
    for pkg in PACKAGES:
        for m in modules_of(pkg):
            if m == "streams.topology":
                continue
            tree = ast.parse(_path(m).read_text())
            found = sorted({n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in TOPIC_NAMES})
            if found:
                spelled[m] = found
    assert spelled == {}


def test_the_serving_pipeline_loads_no_training_stack_no_broker_client_and_no_worker():
    serving = modules_of("enrich")
    assert "enrich.pipeline" in serving and "enrich.media.sandbox" in serving
    assert offenders(loaded_by(serving), FORBIDDEN["enrich"]) == []


def test_the_worker_loads_no_training_stack_and_no_offline_module():
    loaded = loaded_by(modules_of("streams"))
    assert "faust" in loaded and "enrich.pipeline" in loaded  # it is the worker
    assert offenders(loaded, FORBIDDEN["streams"]) == []


def test_the_check_sees_an_offender(tmp_path):
    """Codebook training is offline: it loads torch, which the serving check would refuse; and a source
    import inside a function is found too."""
    assert "torch" in offenders(loaded_by(["training.rqvae"]), FORBIDDEN["enrich"])
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from training.rqvae import train\n")
    assert offenders(imported_names(src), FORBIDDEN["enrich"]) == ["training.rqvae", "training.rqvae.train"]
    assert _path("enrich.models") == ROOT / "enrich" / "models" / "__init__.py"


def _path(module: str) -> Path:
    base = ROOT / Path(*module.split("."))
    return base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"


def test_the_tools_have_no_import_circle():
    """ops modules import each other along one direction only (the demo once reached evaluate through
    evaluate_kinds, which imported the demo back)."""
    ops = set(modules_of("ops"))
    graph = {m: {o for o in ops if o != m and o in imported_names(_path(m))} for m in ops}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str]:
        seen[m] = 1
        for n in sorted(graph[m]):
            if seen.get(n) == 1:
                return path + [m, n]
            if n not in seen and (cycle := visit(n, path + [m])):
                return cycle
        seen[m] = 2
        return []

    cycles = [c for m in sorted(ops) if m not in seen and (c := visit(m, []))]
    assert cycles == []


def test_the_unit_tests_mirror_the_packages():
    for d in (ROOT / "tests" / "unit").rglob("*"):
        if d.is_dir() and d.name != "__pycache__":
            assert (ROOT / d.relative_to(ROOT / "tests" / "unit") / "__init__.py").exists(), d


# unit tests of pure logic: what they load must not pull torch in (conftest builds models lazily)
PURE_LOGIC_TESTS = ("enrich/test_schemas.py", "enrich/tagging/test_tags.py", "ops/recall/test_recall_index.py",
                    "ops/kafka/test_audit.py", "ops/measure/test_evaluate_intervals.py",
                    "ops/measure/test_capacity.py", "ops/local/test_stack_down.py",
                    "streams/test_collision_digits.py", "streams/test_coded_contract.py")


def test_unit_tests_of_pure_logic_load_no_torch():
    code = ("import importlib.util, json, sys\n"
            f"sys.path[:0] = [{str(ROOT / 'tests')!r}, {str(ROOT)!r}]\n"
            "import conftest\n"
            f"for n, f in enumerate({PURE_LOGIC_TESTS!r}):\n"
            f"    path = {str(ROOT / 'tests' / 'unit')!r} + '/' + f\n"
            "    spec = importlib.util.spec_from_file_location(f't{n}', path)\n"
            "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = set(json.loads(out.stdout))
    assert "enrich.schemas" in loaded and "ops.recall.index" in loaded  # the check imported them
    assert offenders(loaded, ("torch", "transformers")) == []
