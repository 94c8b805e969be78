"""``sql-dl serve``'s access policy: the manifest's ``access:`` section, made the policy of
sql_dl's Spark extension (``jvm/src/sql_dl/spark/access``), and the Spark settings that
keep a logged-in user an analyst.

Admins (``access.admins``) may do everything Spark allows. Everyone else who can log in is
an analyst: queries over the manifest's views with Spark's built-in functions and the
sql_dl functions granted to them, metadata, temporary views, and ``SET`` of `SETTABLE`.
The extension refuses anything else as Spark analyses the statement; see the manual's
"Security model" page.
"""

from __future__ import annotations

import json
from typing import Mapping

from sql_dl.driver.policy import (LOCKED_CONF, SETTABLE, access_problems, path_policy,
                                  policy_spec)
from sql_dl.manifest import Manifest
from sql_dl.rules import PATH_POLICY_ENV

__all__ = ["LOCKED_CONF", "SETTABLE", "access_problems", "install_path_policy",
           "install_policy", "path_policy", "policy_spec"]

def install_policy(spark, manifest: Manifest, hive_conf: Mapping[str, str]) -> None:
    """Makes ``manifest``'s policy that of every statement from now on (open sessions
    included)."""
    spec = json.dumps(policy_spec(manifest, hive_conf))
    spark.sparkContext._jvm.sql_dl.spark.access.AccessPolicy.install(spec)


def install_path_policy(spark, manifest: Manifest) -> None:
    """Makes `path_policy` that of the Python workers of the functions registered from now
    on: PySpark gives each function's workers the SparkContext's ``environment`` as it is
    when the function is registered (so bootstrap must come after)."""
    spark.sparkContext.environment[PATH_POLICY_ENV] = path_policy(manifest).to_json()
