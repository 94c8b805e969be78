"""The README documents every manifest key, SQL function kind and command-line option."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from sql_dl.manifest import CacheSpec, ImageViewSpec, ModelSpec, PreprocessorSpec

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def manifest_keys() -> list[str]:
    return sorted({f.name for spec in (PreprocessorSpec, ModelSpec, ImageViewSpec, CacheSpec)
                   for f in dataclasses.fields(spec) if f.name != "name"})


@pytest.mark.parametrize("key", manifest_keys())
def test_manifest_key_is_in_the_reference(key):
    reference = README.split("## Manifest reference", 1)[1].split("\n## ", 1)[0]
    assert re.search(rf"^\s+{key}:", reference, re.M), f"manifest key {key!r} is not in the README"


@pytest.mark.parametrize("kind", ["model", "features", "top_k", "preprocessor",
                                  "image_error", "thumbnail", "image_info"])
def test_function_kind_is_in_the_sql_reference(kind):
    reference = README.split("## SQL reference", 1)[1].split("\n## ", 1)[0]
    assert kind in reference.split("`sql_dl_models` lists", 1)[1].split("\n\n", 1)[0]


def cli_options() -> list[tuple[str, tuple[str, ...]]]:
    """(command, the option's names) for every option of every sql-dl command."""
    from sql_dl.cli.main import _parser

    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted((name, tuple(action.option_strings)) for name, parser in commands.choices.items()
                  for action in parser._actions
                  if action.option_strings and "--help" not in action.option_strings)


@pytest.mark.parametrize("command, names", cli_options(),
                         ids=lambda v: v if isinstance(v, str) else "/".join(v))
def test_cli_option_is_in_the_readme(command, names):
    assert any(re.search(rf"sql-dl {command}\b[^`]*?(?<![\w-]){re.escape(name)}(?![\w-])",
                         README, re.S) for name in names), \
        f"sql-dl {command} {'/'.join(names)} is not in the README's usage of it"


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ml_workflows.py"


def test_the_ml_table_quotes_the_example_that_runs():
    """Every Python cell of the sparkdl table is in examples/ml_workflows.py, which runs
    offline and prints what each workflow gave."""
    import subprocess
    import sys

    table = README.split("| sparkdl workflow (the seed article) |", 1)[1].split("\n\n", 1)[0]
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
