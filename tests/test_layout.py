"""The package's layout: which side each folder runs on, and an import graph without loops.

Counted from the source (every ``import`` and ``from ... import``, inside functions too):

- the shared ground (``sql_dl/*.py`` but the package face and the notebook front end)
  imports only the shared ground;
- ``sql_dl/executor/`` (Python workers) and ``sql_dl/spark/`` (how sql_dl reaches Spark)
  import only their own folder and the shared ground;
- ``sql_dl/driver/`` imports anything but a front end;
- nothing imports a front end (``cli/``, ``ml/``, ``notebook``, the package face) but that
  front end itself;
- there is no import cycle, and an import of a sql_dl module inside a function says why in
  a comment (``# lazy: ...``).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sql_dl"
SHARED = "shared"
FRONT_ENDS = ("cli", "ml", "notebook", "face")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def side(module: str) -> str:
    """Which part of the layout ``module`` belongs to."""
    parts = module.split(".")
    if len(parts) == 1:
        return "face"
    if parts[1] in ("executor", "spark", "driver", "cli", "ml"):
        return parts[1]
    return "notebook" if parts[1] == "notebook" else SHARED


def imports(module: str) -> list[tuple[str, int, bool, str]]:
    """``(imported sql_dl module, line, inside a function, the line's text)`` for every
    import of a sql_dl module in ``module``'s source."""
    path = MODULES[module]
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    found = []

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                       ast.Lambda))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                base = child.module
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                         for alias in child.names]
            for name in names:
                if name == "sql_dl" or name.startswith("sql_dl."):
                    target = name
                    if target not in MODULES and isinstance(child, ast.Import):
                        target = name.rsplit(".", 1)[0]
                    found.append((target, child.lineno, in_function, lines[child.lineno - 1]))
            visit(child, nested)

    visit(tree, False)
    return found


GRAPH = {module: sorted({target for target, *_ in imports(module)} - {module})
         for module in MODULES}


def allowed(importer: str, imported: str) -> bool:
    """Whether the layout lets ``importer`` import ``imported``."""
    mine, theirs = side(importer), side(imported)
    if theirs in FRONT_ENDS:
        return mine == theirs
    if mine == SHARED:
        return theirs == SHARED
    if mine in ("executor", "spark"):
        return theirs in (SHARED, mine)
    return True  # the driver and the front ends build on everything else


def test_every_import_names_a_module_of_the_package():
    unknown = [f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}: {text.strip()}"
               for module in MODULES for target, line, _, text in imports(module)
               if target not in MODULES]
    assert not unknown, "\n".join(unknown)


def test_every_import_follows_the_layout():
    broken = [f"{importer} imports {imported} ({side(importer)} -> {side(imported)})"
              for importer, targets in GRAPH.items() for imported in targets
              if not allowed(importer, imported)]
    assert not broken, "\n".join(broken)


def test_the_import_graph_has_no_cycle():
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def walk(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in GRAPH[module]:
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                walk(target, path + [target])
        state[module] = "done"

    for module in GRAPH:
        if module not in state:
            walk(module, [module])
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_a_function_level_import_says_why():
    silent = [f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}: {text.strip()}"
              for module in MODULES for target, line, in_function, text in imports(module)
              if in_function and "#" not in text]
    assert not silent, "\n".join(silent)


def test_the_layout_check_sees_a_violation():
    """The rules above are not vacuous: the graph has edges of every allowed kind, and a
    made-up edge of each forbidden kind is refused."""
    edges = {(side(a), side(b)) for a, targets in GRAPH.items() for b in targets}
    assert {("executor", SHARED), ("spark", SHARED), ("driver", "executor"),
            ("driver", "spark"), ("cli", "driver"), ("face", SHARED)} <= edges
    assert not allowed("sql_dl.executor.udfs", "sql_dl.driver.models")
    assert not allowed("sql_dl.spark.backends", "sql_dl.executor.udfs")
    assert not allowed("sql_dl.manifest", "sql_dl.spark.internals")
    assert not allowed("sql_dl.driver.registration", "sql_dl.cli.server")
    assert not allowed("sql_dl.driver.session", "sql_dl")


def test_the_executor_package_is_empty():
    """A worker unpickling a UDF imports its module's package first: nothing else."""
    assert (PACKAGE / "executor" / "__init__.py").read_text() == ""


def test_importing_the_package_loads_no_driver_code_nor_tensorflow():
    """What a Python worker pays to import a UDF module: the shared ground and executor/."""
    import subprocess
    import sys

    code = ("import sys, sql_dl.executor.udfs; "
            "print(sorted(m for m in sys.modules if m.startswith(('sql_dl', 'tensorflow', "
            "'keras'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    modules = eval(loaded)  # noqa: S307 - our own subprocess's repr of a list of names
    assert "sql_dl.executor.udfs" in modules
    assert [m for m in modules if side(m) not in (SHARED, "executor", "face")] == []
    assert not [m for m in modules if m.startswith(("tensorflow", "keras"))]


def test_paths_point_where_they_should():
    from sql_dl import paths

    assert paths.JAR.is_file(), "the extension jar: run .ci/setup (pip install -e .)"
    assert paths.JAR.parent.parent == PACKAGE
    assert (paths.SOURCE_CONF_DIR / "spark-defaults.conf").is_file()
    assert paths.DEMO_SQL.is_file()


def test_describe_function_names_an_importable_factory():
    """``DESCRIBE FUNCTION EXTENDED`` shows each UDF's factory by its dotted name."""
    from sql_dl.driver.function_docs import function_docs
    from sql_dl.manifest import load_manifest

    docs = function_docs(load_manifest({"preprocessors": {"p": {"size": [2, 2],
                                                                "mode": "none"}}}), [])
    for doc in docs.values():
        module, _, name = doc.source.rpartition(".")
        assert module.startswith("sql_dl.executor.")
        assert callable(getattr(importlib.import_module(module), name))


@pytest.mark.parametrize("name", ["ConfigurationError", "FunctionArgumentError",
                                  "SparkInternalsError", "SqlDlWarning", "bootstrap", "session",
                                  "load_manifest", "show", "publish", "__version__"])
def test_the_package_face_exports(name):
    import sql_dl

    assert name in sql_dl.__all__
    assert getattr(sql_dl, name) is not None


def test_no_test_module_imports_another():
    """Shared helpers live in tests/helpers/ (and fixtures in conftest.py), so that a test
    module can be read, run and changed on its own."""
    tests = Path(__file__).resolve().parent
    offending = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offending += [f"{path.relative_to(tests)}:{node.lineno}: {name}" for name in names
                          if name.split(".")[0].startswith("test_") or name == "conftest"]
    assert not offending, "\n".join(offending)
