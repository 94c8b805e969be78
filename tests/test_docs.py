"""The manual (docs/, built with MkDocs) and the README: every manifest key, SQL function kind
and command-line option is documented, the examples run, the site builds strictly, and the
README stays a short landing page."""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sql_dl.manifest import CacheSpec, ImageViewSpec, ModelSpec, PreprocessorSpec

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {page.name: page.read_text() for page in sorted((ROOT / "docs").glob("*.md"))}
README_LIMIT = 16 * 1024


def manifest_keys() -> list[str]:
    return sorted({f.name for spec in (PreprocessorSpec, ModelSpec, ImageViewSpec, CacheSpec)
                   for f in dataclasses.fields(spec) if f.name != "name"})


@pytest.mark.parametrize("key", manifest_keys())
def test_manifest_key_is_in_the_reference(key):
    assert re.search(rf"^\s+{key}:", DOCS["manifest.md"], re.M), \
        f"manifest key {key!r} is not in docs/manifest.md"


@pytest.mark.parametrize("kind", ["model", "features", "top_k", "preprocessor",
                                  "image_error", "thumbnail", "image_info"])
def test_function_kind_is_in_the_sql_reference(kind):
    assert kind in DOCS["sql.md"].split("`sql_dl_models` lists", 1)[1].split("\n\n", 1)[0]


def cli_options() -> list[tuple[str, tuple[str, ...]]]:
    """(command, the option's names) for every option of every sql-dl command."""
    from sql_dl.cli.main import _parser

    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted((name, tuple(action.option_strings)) for name, parser in commands.choices.items()
                  for action in parser._actions
                  if action.option_strings and "--help" not in action.option_strings)


@pytest.mark.parametrize("command, names", cli_options(),
                         ids=lambda v: v if isinstance(v, str) else "/".join(v))
def test_cli_option_is_in_the_manual(command, names):
    assert any(re.search(rf"sql-dl {command}\b[^`]*?(?<![\w-]){re.escape(name)}(?![\w-])",
                         text, re.S) for text in DOCS.values() for name in names), \
        f"sql-dl {command} {'/'.join(names)} is not in the manual's usage of it"


def test_the_readme_is_a_landing_page_that_links_every_page():
    assert len(README.encode()) <= README_LIMIT
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", README))
    assert linked == set(DOCS), f"pages the README does not link: {set(DOCS) - linked}"
    assert "bash .ci/setup && .venv/bin/sql-dl demo" in README
    assert "bash .ci/setup-tests && .venv/bin/python -m pytest" in README
    for script in (".ci/setup", ".ci/setup-tests"):  # each says what it installs, and why
        text = (ROOT / script).read_text()
        assert "apt-get" in text and "PyPI" in text and "#   - " in text, script
    assert "chromium" not in (ROOT / ".ci/setup").read_text()  # the demo needs no test tool
    assert ".[test]" not in (ROOT / ".ci/setup").read_text()


def test_the_readme_example_manifest_is_the_demo_s(tmp_path):
    """The README's manifest, placed where conf/models.yaml is, validates; its entries are
    those of conf/models.yaml (which the demo's test runs)."""
    import yaml

    from sql_dl.manifest import check_manifest

    example = yaml.safe_load(re.findall(r"^```yaml\n(.*?)^```", README, re.S | re.M)[0])
    conf = yaml.safe_load((ROOT / "conf" / "models.yaml").read_text())
    manifest, problems = check_manifest(example, as_file=ROOT / "conf" / "models.yaml")
    assert all("no such file or directory" in p for p in problems), problems
    for section in ("preprocessors", "models", "images"):
        for name, entry in example[section].items():
            assert {k: v for k, v in conf[section][name].items() if k in entry} == entry


def test_the_site_builds_strictly(tmp_path):
    """``mkdocs build --strict``: every page in the navigation, every link and anchor found."""
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                             str(tmp_path / "site"), "--config-file", str(ROOT / "mkdocs.yml")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "development" / "index.html").is_file()


EXAMPLE = ROOT / "examples" / "ml_workflows.py"


@pytest.mark.slow
def test_the_ml_table_quotes_the_example_that_runs():
    """Every Python cell of the sparkdl table is in examples/ml_workflows.py, which runs
    offline and prints what each workflow gave."""
    table = DOCS["notebooks.md"].split("| sparkdl workflow (the seed article) |", 1)[1]
    table = table.split("\n\n", 1)[0]
    cells = [re.match(r"`([^`]*)`", row.split(" | ")[1]).group(1)
             for row in table.splitlines()[2:]]
    assert len(cells) == 7
    example = EXAMPLE.read_text()
    for cell in cells:
        assert cell in example, cell
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert printed["top 10"] == "10 classes"
    assert int(printed["transfer learning"].split()[0]) > 0
    assert printed["SavedModel"] == "[10.0]"  # 1 + 2 + 3 + 4
    assert len(printed["image files"].strip("[]").split(",")) == 2
    assert printed["SQL"].split()[1] == str(32 * 32 * 3)
