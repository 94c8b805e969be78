"""The plugin's driver-side call: what a Spark session started by any Spark SQL entry point
(``spark-sql``, the Thrift Server, Spark Connect, Kyuubi) registers for a manifest.

sql_dl's Spark extension, given ``spark.sql_dl.manifest``, runs this module once per
manifest (and again when the manifest or a model file changes) with a Python that has
sql_dl, as the session's first statement starts::

    python -m sql_dl.driver.plugin --manifest URI --staging DIR

It validates the manifest, plans each model (``plan_model``: shapes, labels, weights) and
pickles each SQL function's Python command, ``(function, return type)``, as PySpark pickles
a UDF; the extension builds Spark's ``SimplePythonFunction`` of each and registers it in
each session (``jvm/src/sql_dl/spark/plugin``). Models are staged in ``DIR`` for the
extension to ship to the executors (``SparkContext.addFile``).

It talks to the extension in JSON lines: on its stdout, ``{"fetch": URI}`` asks the JVM to
copy a remote file (HDFS, S3, ...) into ``DIR``, answered on stdin with ``{"path": P}`` or
``{"error": E}``; the last line is ``{"registration": {...}}`` or ``{"problems": [...]}``,
the manifest's one-line problems. Everything else it prints (TensorFlow's log) goes to
stderr.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path
from typing import IO, Any, Callable

from sql_dl._version import __version__
from sql_dl.driver.function_docs import function_docs
from sql_dl.driver.indexes import index_specs
from sql_dl.driver.models import plan_model
from sql_dl.driver.policy import (LOCKED_CONF, OPERATOR_CHOICES, access_problems, path_policy,
                                  policy_spec)
from sql_dl.driver.registration import MODELS_COLUMNS, manifest_udfs
from sql_dl.driver.views import catalog_options, view_columns
from sql_dl.errors import SqlDlError
from sql_dl.executor.probes import cache_stats_udf, devices_udf
from sql_dl.executor.udfs import PREPROCESSOR_BATCH
from sql_dl.manifest import Manifest, check_manifest, is_local, local_path
from sql_dl.plans import ModelPlan
from sql_dl.rules import PATH_POLICY_ENV
from sql_dl.sql_text import values_query
from sql_dl.staging import stage

__all__ = ["MANIFEST_CONF", "PYTHON_CONF", "main", "registration"]

# The extension's settings (jvm/src/sql_dl/spark/plugin/ManifestPlugin.java names them the same)
MANIFEST_CONF = "spark.sql_dl.manifest"
PYTHON_CONF = "spark.sql_dl.python"


def registration(manifest: Manifest, plans: list[ModelPlan], staging: Path,
                 hive_conf: dict[str, str] | None = None) -> dict[str, Any]:
    """What the extension registers in each session for ``manifest`` (see the module)."""
    functions, rows = manifest_udfs(manifest, plans)
    docs = function_docs(manifest, plans)
    files = [str(stage(plan.file, plan.staged_name, staging)) for plan in plans]
    views = []
    for name, spec in manifest.images.items():
        columns, condition = view_columns(spec)
        views.append({"name": name, "options": catalog_options(spec), "columns": columns,
                      "where": condition})
    batch = max([plan.batch_size for plan in plans] + [PREPROCESSOR_BATCH])
    return {
        "version": __version__,
        "python": "%d.%d" % sys.version_info[:2],
        "source": manifest.source,
        "env": {PATH_POLICY_ENV: path_policy(manifest).to_json()},
        "files": files,
        "functions": [dict(_command(udf), name=name, doc=_doc(docs[name]))
                      for name, udf in functions.items()],
        "views": views,
        "indexes": index_specs(manifest, plans),
        "models_query": values_query(MODELS_COLUMNS, rows),
        "probes": {"cache": _command(cache_stats_udf()), "devices": _command(devices_udf())},
        "arrow_batch": str(batch),
        "policy": policy_spec(manifest, hive_conf or {}) if manifest.access else None,
        # the settings a governed server must start with (sql-dl spark-conf prints them)
        "locked_conf": LOCKED_CONF if manifest.access else {},
        "operator_choices": list(OPERATOR_CHOICES),
    }


def _command(udf) -> dict[str, Any]:
    """A UDF as Spark's SimplePythonFunction needs it: the command PySpark would pickle,
    ``(function, return type)``, its eval type, return type (JSON) and determinism."""
    from pyspark.serializers import CloudPickleSerializer

    command = CloudPickleSerializer().dumps((udf.func, udf.returnType))
    return {"command": base64.b64encode(command).decode("ascii"), "eval_type": udf.evalType,
            "return_type": udf.returnType.json(), "deterministic": udf.deterministic}


def _doc(doc) -> dict[str, str]:
    arguments, examples = doc.extended()
    return {"source": doc.source, "usage": doc.usage, "arguments": arguments,
            "examples": examples, "parameters": doc.parameters}


class _Channel:
    """The JSON lines to and from the extension."""

    def __init__(self, out: IO[str], into: IO[str]):
        self.out, self.into = out, into

    def send(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def fetcher(self, fetched: list[str]) -> Callable[[str], str]:
        """A ``fetch`` for `plan_model`: local paths as they are, remote files copied by the
        JVM (Hadoop's file systems, with the session's credentials)."""

        def fetch(uri: str) -> str:
            fetched.append(uri)
            if is_local(uri):
                return local_path(uri)
            self.send({"fetch": uri})
            answer = json.loads(self.into.readline() or "{}")
            if "path" not in answer:
                raise OSError(answer.get("error") or f"the extension did not copy {uri}")
            return answer["path"]

        return fetch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sql_dl.driver.plugin")
    parser.add_argument("--manifest", required=True, help="path or Hadoop URI")
    parser.add_argument("--staging", required=True, help="where models are staged")
    parser.add_argument("--hive-conf", default="{}", help="HiveServer2 settings, JSON")
    args = parser.parse_args(argv)
    # the protocol keeps this process's stdout; anything printed goes to stderr
    channel = _Channel(os.fdopen(os.dup(1), "w"), sys.stdin)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    fetched: list[str] = []
    fetch = channel.fetcher(fetched)
    try:
        manifest_file = fetch(args.manifest)
    except OSError as e:
        channel.send({"problems": [f"{args.manifest}: cannot read the manifest: {e}; check "
                                   f"{MANIFEST_CONF}. Received: {MANIFEST_CONF}={args.manifest}"]})
        return 0
    manifest, problems = check_manifest(manifest_file)
    hive_conf = json.loads(args.hive_conf)
    if not problems:
        problems = access_problems(manifest, hive_conf)
    if problems:
        channel.send({"problems": problems})
        return 0
    staging = Path(args.staging)
    staging.mkdir(parents=True, exist_ok=True)
    try:
        plans = [plan_model(spec, manifest, fetch) for spec in manifest.models.values()]
        result = registration(manifest, plans, staging, hive_conf)
    except SqlDlError as e:
        channel.send({"problems": str(e).splitlines()})
        return 0
    result["inputs"] = fetched
    channel.send({"registration": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
