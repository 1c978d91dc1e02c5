"""MkDocs hooks: generate the pages that must not drift from the code.

* ``index.md`` from the repository README, ``packages/<dist>.md`` from each package README (links
  into the repository rewritten to site pages) followed by that package's measured figures, the
  ``## <dist>`` section of ``docs/benchmarks.md``;
* ``configuration.md`` from the run-config JSON schema (``fedmm config-schema``), with every
  installed technique's arguments;
* every ``<!-- arguments: NAME -->`` marker (in ``docs/methods/*.md``) replaced by the argument
  table of technique ``NAME``, from the arguments it declares (package READMEs, read on GitHub
  too, hold the same tables committed: ``tools/argument_tables.py``);
* in every page, links to a package README by its repository path (``../../packages/<dist>/README.md``,
  as in ``docs/methods/*.md``, which works on GitHub) rewritten to that package's page;
* every ``{{ NAME-<mode>.KEY }}`` in prose replaced by that figure (mean ± 95 % CI) of that file
  (``{{ NAME-<mode>.protocol<N>.KEY }}``: of a superseded protocol's file);
* every ``<!-- results: NAME -->`` marker (in ``docs/benchmarks.md``, and so in the package pages)
  replaced by the tables of the committed result files ``docs/results/NAME-<mode>.json``
  (:func:`fedmm.core.experiment.results_table`), superseded protocols' files
  (``NAME-<mode>.protocol<N>.json``, with their ``superseded`` reason) shown after them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]


def _rewrite(text: str, depth: int) -> str:
    """Repository-relative links → site links, for a page ``depth`` folders below the site root."""
    up = "../" * depth
    text = re.sub(r"\]\((?:\.\./)*docs/([^)]+)\)", rf"]({up}\1)", text)
    text = re.sub(r"\]\((?:\.\./)+README\.md\)", rf"]({up}index.md)", text)
    text = re.sub(r"\]\((?:\.\./)*packages/(fedmm-[a-z]+)/README\.md\)", rf"]({up}packages/\1.md)", text)
    return text


def _schema_page() -> str:
    from fedmm.core.config import json_schema

    schema = json_schema()
    defs = schema.get("$defs", {})
    lines = [
        "# Configuration reference",
        "",
        "Generated from the run-config schema (`fedmm config-schema` prints it as JSON). A config is a",
        "TOML file with the sections below; `[[techniques]]` entries take `name` plus the technique's",
        "own arguments (see each package's page).",
        "",
    ]
    for section, ref in schema.get("properties", {}).items():
        if section == "techniques":
            lines += _techniques_section()
            continue
        target = ref.get("$ref", "").split("/")[-1] or (ref.get("items", {}).get("$ref", "").split("/")[-1])
        body = defs.get(target, {})
        lines += [f"## `[{section}]`", "", body.get("description", "").strip(), ""]
        props = body.get("properties", {})
        if props:
            lines += ["| field | type | default | meaning |", "|---|---|---|---|"]
            for name, spec in props.items():
                kind = spec.get("type") or " or ".join(
                    str(a.get("type", a.get("$ref", "?").split("/")[-1])) for a in spec.get("anyOf", [])
                )
                default = spec.get("default", "required" if name in body.get("required", []) else "")
                desc = (spec.get("description") or "").replace("|", "\\|").replace("\n", " ")
                lines.append(f"| `{name}` | {kind} | `{default}` | {desc} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def _techniques_section() -> list[str]:
    from fedmm.core.arguments import argument_table
    from fedmm.core.config import technique_arguments

    lines = [
        "## `[[techniques]]`",
        "",
        "A list of tables, applied in order: `name` (the technique, as registered) plus that technique's",
        "arguments. The installed ones:",
        "",
    ]
    for name, model in technique_arguments().items():
        lines += [f'### `name = "{name}"`', "", argument_table(model)]
    return lines


ARGUMENTS = re.compile(r"<!-- arguments: ([a-z0-9_]+) -->")


def render_arguments(text: str) -> str:
    """Replace each arguments marker by that technique's argument table."""
    from fedmm.core.arguments import argument_table
    from fedmm.core.config import technique_arguments

    declared = technique_arguments()

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in declared:
            raise ValueError(
                f"docs marker {match.group(0)}: no installed technique {name!r} declares arguments"
            )
        return argument_table(declared[name])

    return ARGUMENTS.sub(one, text)


RESULTS = ROOT / "docs" / "results"
MARKER = re.compile(r"<!-- results: ([a-z0-9-]+) -->")
# An inline figure in prose: {{ fedmfs-quick.accuracy_drop_pp }} → "−1.67 ± 6.93" (mean ± CI);
# {{ layerwise-quick.protocol2.memory_reduction_max }} cites a superseded protocol's file.
VALUE = re.compile(
    r"\{\{ *([a-z0-9-]+-(?:smoke|quick|full)(?:\.heldout)?(?:\.protocol[0-9]+)?)\.([A-Za-z0-9_./+-]+) *\}\}"
)
# Anything still shaped like a figure after rendering is a typo the build must not publish.
LEFT_OVER = re.compile(r"\{\{ *[a-z0-9-]+-(?:smoke|quick|full)[^}]*\}\}")
MODE_ORDER = {"smoke": 0, "quick": 1, "full": 2}


def result_files(name: str) -> list[Path]:
    """The result files of benchmark ``name``: current ones (quick, full), then superseded."""
    found = [p for p in RESULTS.glob(f"{name}-*.json") if _parse_name(p)[0] == name]

    def order(path: Path) -> tuple[int, int, int, str]:
        _, mode, protocol = _parse_name(path)
        return (1 if protocol else 0, MODE_ORDER.get(mode, 9), 1 if _is_heldout(path) else 0, protocol)

    return sorted(found, key=order)


def _parse_name(path: Path) -> tuple[str, str, str]:
    """``bmsfed-quick.json`` → (bmsfed, quick, ""); ``bmsfed-quick.protocol1.json`` → (…, "1");
    ``bmsfed-quick.heldout.json`` (a run on seeds no setting was chosen on) → (bmsfed, quick, "")."""
    stem, _, protocol = path.name.removesuffix(".json").partition(".protocol")
    name, _, mode = stem.removesuffix(HELDOUT).rpartition("-")
    return name, mode, protocol


# A result file named NAME-MODE.heldout.json is the verdict run, on seeds outside the tuning seeds.
HELDOUT = ".heldout"


def _is_heldout(path: Path) -> bool:
    return path.name.removesuffix(".json").partition(".protocol")[0].endswith(HELDOUT)


def render_results(text: str) -> str:
    """Replace each results marker by the tables of its result files."""
    from fedmm.core.experiment import results_table

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        files = result_files(name)
        if not files:
            raise ValueError(f"docs marker {match.group(0)}: no result file docs/results/{name}-*.json")
        parts: list[str] = []
        for path in files:
            record = json.loads(path.read_text())
            meta = record.get("meta", {})
            machine = meta.get("machine", {})
            _, mode, protocol = _parse_name(path)
            flag = "`--quick`" if mode == "quick" else ("full run" if mode == "full" else mode)
            if _is_heldout(path):
                flag += ", held-out seeds (the verdict)"
            head = (
                f"**{flag}**, seeds {', '.join(str(s) for s in record.get('seeds', []))}; protocol "
                f"{record.get('protocol', '?')}; `{meta.get('command', '?')}`; commit "
                f"`{str(meta.get('git_commit', '?'))[:10]}`, {str(meta.get('date', '?'))[:10]}, "
                f"{machine.get('cores', '?')} cores (load {machine.get('load_average_1m', 'not recorded')}), "
                f"torch {machine.get('torch', '?')}, "
                f"{machine.get('device', '?')}; {record.get('seconds', 0):.0f} s "
                f"(`docs/results/{path.name}`)"
            )
            if protocol:
                reason = record.get("superseded", "a later protocol replaced it")
                head = f"*Superseded protocol {protocol}* ({reason}). " + head
            parts.append(head + "\n\n" + results_table(record))
        return "\n\n".join(parts)

    def value(match: re.Match[str]) -> str:
        from fedmm.core.experiment import format_figure

        path = RESULTS / f"{match.group(1)}.json"
        if not path.exists():
            raise ValueError(f"docs figure {match.group(0)}: no result file docs/results/{path.name}")
        record = json.loads(path.read_text())
        key = match.group(2)
        if key not in record:
            raise ValueError(f"docs figure {match.group(0)}: docs/results/{path.name} has no key {key!r}")
        return format_figure(record, key)

    rendered = VALUE.sub(value, MARKER.sub(one, text))
    left = LEFT_OVER.search(rendered)
    if left:
        raise ValueError(
            f"docs figure {left.group(0)}: not of the form {{{{ NAME-MODE.KEY }}}} "
            "(a key holds letters, digits and _ . / + -)"
        )
    return rendered


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    # A page in docs/ links a package README by its repository path (which works on GitHub);
    # on the site that README is the generated package page.
    depth = page.file.src_uri.count("/")
    return render_arguments(render_results(_rewrite(markdown, depth)))


def _benchmark_sections() -> dict[str, str]:
    """``## <dist>`` sections of docs/benchmarks.md, headings demoted one level, links made
    relative to a page one folder down."""
    text = render_results((ROOT / "docs" / "benchmarks.md").read_text())
    sections: dict[str, str] = {}
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        title, _, body = part.partition("\n")
        dist = title.split()[0]
        body = re.sub(r"^(#+) ", r"#\1 ", body, flags=re.M)
        body = re.sub(r"\]\((?!https?:|#|\.\./)([^)]+\.md(?:#[^)]*)?)\)", r"](../\1)", body)
        sections[dist] = body.strip()
    return sections


def on_files(files: Files, config: Any) -> Files:
    pages = {"index.md": _rewrite((ROOT / "README.md").read_text(), 0)}
    figures = _benchmark_sections()
    for readme in sorted(ROOT.glob("packages/*/README.md")):
        dist = readme.parent.name
        page = _rewrite(readme.read_text(), 1)
        if dist in figures:
            page += (
                "\n\n## Measured figures\n\nFrom [Benchmarks](../benchmarks.md) (the project's 2-core "
                "CPU machine).\n\n" + figures[dist] + "\n"
            )
        pages[f"packages/{dist}.md"] = page
    pages["configuration.md"] = _schema_page()
    for uri, content in pages.items():
        files.append(File.generated(config, uri, content=content))
    return files
