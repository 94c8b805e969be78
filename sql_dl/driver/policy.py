"""The access policy a manifest's ``access:`` section makes (enforced by sql_dl's Spark
extension, ``jvm/src/sql_dl/spark/access``), and the path policy of its functions' Python
workers: shared by ``sql-dl serve`` and the plugin (`sql_dl.driver.plugin`).
"""

from __future__ import annotations

from typing import Mapping

from sql_dl.executor.path_policy import PathPolicy, Root, root_of
from sql_dl.manifest import Manifest
from sql_dl.rules import (BUILT_IN_FUNCTIONS, CACHE_VIEW, DEVICES_VIEW, MODELS_VIEW,
                          SYSTEM_VIEWS, VIEWS_VIEW)

__all__ = ["LDAP", "SETTABLE", "path_policy", "policy_spec"]

LDAP = "hive.server2.authentication.ldap."

# What BI tools and analysts set in a session; nothing here reaches files, code, the other
# sessions or the server's limits.
SETTABLE = (
    "spark.sql.ansi.enabled",
    "spark.sql.caseSensitive",
    "spark.sql.crossJoin.enabled",
    "spark.sql.datetime.java8API.enabled",  # the Thrift Server sets it as a session opens
    "spark.sql.hive.version",  # likewise
    "spark.sql.parser.quotedRegexColumnNames",
    "spark.sql.session.timeZone",
    "spark.sql.timestampType",
)


def policy_spec(manifest: Manifest, hive_conf: Mapping[str, str]) -> dict:
    """The policy sql_dl's extension enforces (see ``AccessPolicy.install``)."""
    access = manifest.access
    functions: dict[str, str] = {name: "" for name in BUILT_IN_FUNCTIONS}
    functions.update({name: name for name in manifest.preprocessors})
    for model in manifest.models.values():
        functions.update({name: model.name for name in model.function_names})
    views = {name: "" for name in SYSTEM_VIEWS}
    views.update({name: name for name in manifest.images})
    ldap = ({k: v for k, v in hive_conf.items() if k.startswith(LDAP)}
            if access is not None and access.groups else {})
    return {
        "admins": list(access.admins) if access else [],
        "grants": {entry: list(to) for entry, to in (access.grants if access else {}).items()},
        "functions": functions,
        "views": views,
        "settable": list(SETTABLE),
        "ldap": ldap,
        # system views an analyst sees only the granted rows of: the column and what it names
        "rows": {MODELS_VIEW: ["function", "function"], CACHE_VIEW: ["model", "function"],
                 DEVICES_VIEW: ["model", "model"], VIEWS_VIEW: ["view", "view"]},
    }


def path_policy(manifest: Manifest) -> PathPolicy:
    """What sql_dl's functions may read when given a path: files under the manifest's image
    folders, each up to its view's ``max_file_size``."""
    return PathPolicy([Root(root_of(spec.path), spec.max_file_size)
                       for spec in manifest.images.values()])
