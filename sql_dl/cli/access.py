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

from sql_dl.executor.path_policy import PathPolicy, Root, root_of
from sql_dl.manifest import Manifest
from sql_dl.rules import (BUILT_IN_FUNCTIONS, CACHE_VIEW, DEVICES_VIEW, MODELS_VIEW,
                          PATH_POLICY_ENV, SYSTEM_VIEWS, VIEWS_VIEW)

__all__ = ["LOCKED_CONF", "SETTABLE", "access_problems", "install_path_policy",
           "install_policy", "path_policy", "policy_spec"]

_LDAP = "hive.server2.authentication.ldap."

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

# Spark settings of every sql-dl serve session, which analysts cannot change (the two static
# ones no session can): restricted mode refuses TRANSFORM, reflect, java_method and
# try_reflect to everyone, admins included, unless the operator passes
# --conf spark.sql.restrictedMode.enabled=false; the reflect allow list then still limits
# reflect to it. Path relations (text.`/etc/...`) are left unresolved, so no file is listed
# before the policy refuses them; ${...} in statements is left as it is, so a statement
# cannot read a setting's value (a password among them).
LOCKED_CONF = {
    "spark.sql.restrictedMode.enabled": "true",
    "spark.sql.reflect.allowList": r"java\.util\.UUID\.(randomUUID|fromString)",
    "spark.sql.runSQLOnFiles": "false",
    "spark.sql.variable.substitute": "false",
}


def access_problems(manifest: Manifest, hive_conf: Mapping[str, str]) -> list[str]:
    """What keeps ``manifest``'s ``access`` section from working with these HiveServer2
    settings: ``group:NAME`` needs LDAP authentication and where the groups are."""
    if manifest.access is None or not manifest.access.groups:
        return []
    groups = ", ".join(sorted(manifest.access.groups))
    authentication = hive_conf.get("hive.server2.authentication", "NONE").upper()
    if authentication != "LDAP":
        return [f"{manifest.source}: access: {groups} are LDAP groups, and the server does not "
                "authenticate against LDAP; pass --hiveconf hive.server2.authentication=LDAP "
                "with its settings, or grant to user names. "
                f"Received: hive.server2.authentication={authentication}"]
    pattern = hive_conf.get(f"{_LDAP}groupDNPattern", "")
    if "%s" not in pattern or "," not in pattern.split("%s", 1)[1]:
        return [f"{manifest.source}: access: {groups} are LDAP groups; tell the server where "
                f"they are with --hiveconf {_LDAP}groupDNPattern=cn=%s,ou=groups,dc=example,"
                f"dc=com (your directory's). Received: {_LDAP}groupDNPattern={pattern!r}"]
    return []


def policy_spec(manifest: Manifest, hive_conf: Mapping[str, str]) -> dict:
    """The policy sql_dl's extension enforces (see ``AccessPolicy.install``)."""
    access = manifest.access
    functions: dict[str, str] = {name: "" for name in BUILT_IN_FUNCTIONS}
    functions.update({name: name for name in manifest.preprocessors})
    for model in manifest.models.values():
        functions.update({name: model.name for name in model.function_names})
    views = {name: "" for name in SYSTEM_VIEWS}
    views.update({name: name for name in manifest.images})
    ldap = ({k: v for k, v in hive_conf.items() if k.startswith(_LDAP)}
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


def install_policy(spark, manifest: Manifest, hive_conf: Mapping[str, str]) -> None:
    """Makes ``manifest``'s policy that of every statement from now on (open sessions
    included)."""
    spec = json.dumps(policy_spec(manifest, hive_conf))
    spark.sparkContext._jvm.sql_dl.spark.access.AccessPolicy.install(spec)


def path_policy(manifest: Manifest) -> PathPolicy:
    """What sql_dl's functions may read when given a path: files under the manifest's image
    folders, each up to its view's ``max_file_size``."""
    return PathPolicy([Root(root_of(spec.path), spec.max_file_size)
                       for spec in manifest.images.values()])


def install_path_policy(spark, manifest: Manifest) -> None:
    """Makes `path_policy` that of the Python workers of the functions registered from now
    on: PySpark gives each function's workers the SparkContext's ``environment`` as it is
    when the function is registered (so bootstrap must come after)."""
    spark.sparkContext.environment[PATH_POLICY_ENV] = path_policy(manifest).to_json()
