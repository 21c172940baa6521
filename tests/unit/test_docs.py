"""The docs say what the code does: every name they use exists, every setting and metric the code defines is
named, every link lands, and the command lines show the CLI's own defaults.

Numbers are not parsed here; the figures' sources are named beside them (see docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "helm" / "mm-enrich" / "README.md"]
PRODUCT = ["enrich", "streams", "ops", "triton_models", "training", "corpora"]
TOP = ("enrich/", "streams/", "ops/", "triton_models/", "training/", "corpora/", "benchmarks/", "tests/", "helm/",
       "docs/", ".ci/")


def _rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _text(page: Path) -> str:
    return page.read_text()


def _current(text: str) -> str:
    """The page without its "History" section, whose earlier paths and names no longer exist by design."""
    return re.sub(r"^## History\n.*?(?=^## |\Z)", "", text, flags=re.M | re.S)


def _ticked(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def _expand(text: str) -> set[str]:
    names = set(re.findall(r"ENRICH_[A-Z0-9_]*[A-Z0-9]", text))
    for m in re.finditer(r"ENRICH_([A-Z0-9_]*)\{([A-Z0-9_,]+)\}([A-Z0-9_]*)", text):  # ENRICH_X_{A,B}_Y
        names -= {f"ENRICH_{m.group(1)}".rstrip("_")}
        names |= {f"ENRICH_{m.group(1)}{part}{m.group(3)}" for part in m.group(2).split(",")}
    return names


def _settings() -> set[str]:
    from ops.settings import ToolSettings

    return {f"ENRICH_{n.upper()}" for n in ToolSettings.model_fields}


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_setting_named_exists(page):
    from streams.settings import RENAMED

    text = _text(page)
    unknown = sorted(n for n in _expand(text) - _settings()
                     if not (n in RENAMED and "renamed" in text))  # an old name only where its rename is told
    assert not unknown, f"{_rel(page)} names settings the code does not have: {unknown}"


def _metrics() -> set[str]:
    from prometheus_client.metrics import MetricWrapperBase

    import enrich.metrics as metrics

    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            base = value._name  # noqa: SLF001 - the family name, without the exposition suffixes
            names |= {base, f"{base}_total"} if value._type == "counter" else {base}  # noqa: SLF001
    return names


def _metric_names(text: str) -> set[str]:
    from streams.topology import STAGES

    agents = {s.agent for s in STAGES}
    found = set()
    for tok in _ticked(text):
        m = re.fullmatch(r"(enrich_[a-z_]+)(\{.*\}|\[.*\])?( > .*| >= .*)?", tok.strip())
        if m and m.group(1) not in agents:
            found.add(re.sub(r"_(bucket|sum|count)$", "", m.group(1)))
    return found


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_metric_named_exists(page):
    unknown = sorted(_metric_names(_text(page)) - _metrics())
    assert not unknown, f"{_rel(page)} names metrics the worker does not export: {unknown}"


def test_every_metric_is_in_the_metrics_table():
    table = _metric_names(_text(ROOT / "docs" / "operations.md"))
    counters_as_exposed = {m for m in _metrics() if m + "_total" not in _metrics()}
    missing = sorted(m for m in counters_as_exposed if m not in table)
    assert not missing, f"add these metrics to the table in docs/operations.md: {missing}"


def _topics() -> set[str]:
    import streams.topology as topology

    return {v for k, v in vars(topology).items() if k.isupper() and isinstance(v, str) and "." in v}


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_topic_named_exists(page):
    named = {t for t in _ticked(_text(page)) if re.fullmatch(r"(items|recall|tags|sid)\.[a-z_]+", t)}
    assert not named - _topics(), f"{_rel(page)} names topics that do not exist: {sorted(named - _topics())}"


def _reasons_in_code() -> tuple[set[str], set[str]]:
    """The reasons ``InvalidItem`` is raised with by name (literal or constant), and every snake_case string
    literal of the product code (reasons chosen at run time are among those)."""
    reasons, literals = set(), set()
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            reasons |= set(re.findall(r"InvalidItem\(\s*\"([a-z_]+)\"", text))
            constants = dict(re.findall(r"^([A-Z_]+) = \"([a-z_]+)\"", text, re.M))
            reasons |= {constants[c] for c in re.findall(r"InvalidItem\(\s*([A-Z_]+)\b", text) if c in constants}
            literals |= set(re.findall(r"\"([a-z]+_[a-z_]+)\"", text))
    return reasons, literals


def test_dead_letter_reasons_match_the_code_both_ways():
    text = _text(ROOT / "docs" / "reliability.md")
    table = text.split("**Dead-letter reasons**", 1)[1].split("\n\n", 2)[1]
    first_cells = re.findall(r"^\| ([^|]+) \|", table, re.M)
    documented = {r for cell in first_cells for r in re.findall(r"`([a-z_]+)`", cell)}
    code, literals = _reasons_in_code()
    assert documented, "the dead-letter reasons table in docs/reliability.md was not found"
    assert not documented - literals, f"documented reasons the code never gives: {sorted(documented - literals)}"
    assert not code - documented, f"reasons missing from docs/reliability.md: {sorted(code - documented)}"


def _parser() -> argparse.ArgumentParser:
    from ops.cli import build_parser

    return build_parser()


def _subparser(parser: argparse.ArgumentParser, words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The deepest subparser the leading words name, and the words it did not consume."""
    while words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
        head = words[0].split("|")[0]
        if not subs or head not in subs[0].choices:
            break
        parser, words = subs[0].choices[head], words[1:]
    return parser, words


def _command_lines(text: str) -> list[str]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("enrich ")]
    lines += [t for t in _ticked(text) if t.startswith("enrich ")]
    return lines


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {opt: a for a in parser._actions for opt in a.option_strings}  # noqa: SLF001


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_command_lines_use_real_flags_and_show_the_cli_defaults(page):
    parser = _parser()
    wrong = []
    for line in _command_lines(_text(page)):
        command = re.split(r"\s{3,}|  #|\s\|\s(?=[a-z])", line)[0]  # the command, not its explanation
        sub, rest = _subparser(parser, command.split()[1:])
        options = _options(sub)
        if sub is parser:
            continue  # a prose mention of `enrich` itself
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", command):
            if flag not in options:
                wrong.append(f"{command!r}: no {flag}")
        for flag, value in re.findall(r"\[(--[a-z][a-z0-9-]*) (\d+(?:\.\d+)?)\]", command):
            action = options.get(flag)
            if action is not None and action.default is not None and float(value) != float(action.default):
                wrong.append(f"{command!r}: {flag} defaults to {action.default}, not {value}")
    assert not wrong, f"{_rel(page)}:\n" + "\n".join(wrong)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        slug = _slug(line.lstrip("#"))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_links_land_on_files_and_sections_that_exist(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _text(page)):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no section #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{_rel(page)}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_repository_paths_exist(page):
    missing = []
    for tok in _ticked(_current(_text(page))):
        tok = tok.strip().split()[0] if tok.strip() else tok
        if not tok.startswith(TOP) or any(c in tok for c in "*<>{}$"):
            continue
        path = re.split(r"[:#]", tok)[0].rstrip(".,")
        if not (ROOT / path).exists():
            missing.append(path)
    assert not missing, f"{_rel(page)} names paths the repository does not have: {sorted(set(missing))}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_the_repository_stands_on_its_own(page):
    text = _text(page)
    outside = [m for m in ("../shared", "Seed 00", "seed 00", "this project's sessions") if m in text]
    assert not outside, f"{_rel(page)} points outside the repository ({outside}): state the fact or cite a source"


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()  # type: ignore[union-attr]
    return str(value)


def test_the_configuration_table_shows_the_code_defaults():
    """Where a row gives one default per variable, each is the setting's default (a float may drop its
    ``.0``; ``empty`` is the empty string)."""
    from ops.settings import ToolSettings

    fields = ToolSettings.model_fields
    wrong = []
    for row in re.findall(r"^\| (`ENRICH_[^|]+) \| ([^|]+) \|", _text(ROOT / "docs" / "configuration.md"), re.M):
        names = re.findall(r"`(ENRICH_[A-Z0-9_]+)`", row[0])
        shown = [v.strip() for v in row[1].split(",")]
        if len(names) != len(shown) or "{" in row[0]:
            continue
        for name, text in zip(names, shown, strict=True):
            m = re.fullmatch(r"`([^`]*)`.*|(empty)|(unset).*", text)
            if not m or "<" in text:  # a default resolved at run time, described
                continue
            field = fields[name.removeprefix("ENRICH_").lower()]
            default = field.default
            expected = "" if m.group(2) else None if m.group(3) else m.group(1)
            if expected is None:
                ok = default is None
            else:
                got = _shown(default)
                ok = got == expected or (isinstance(default, float) and float(expected) == default)
            if not ok:
                wrong.append(f"{name}: the table says {text}, the code {default!r}")
    assert not wrong, "docs/configuration.md:\n" + "\n".join(wrong)


def test_every_cli_flag_is_named_in_the_docs():
    text = "".join(_text(p) for p in PAGES)
    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:  # noqa: SLF001
            missing.extend(f"{path} {o}" for o in action.option_strings if o.startswith("--") and o != "--help"
                           and o not in text)
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")

    walk(_parser(), "enrich")
    assert not missing, "name these flags in docs/configuration.md's command line: " + ", ".join(missing)
