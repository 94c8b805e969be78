"""The access policy a manifest's ``access:`` section makes (enforced by sql_dl's Spark
extension, ``jvm/src/sql_dl/spark/access``), and the path policy of its functions' Python
workers: shared by ``sql-dl serve`` and the plugin (`sql_dl.driver.plugin`).
"""

from __future__ import annotations

from typing import Mapping

from sql_dl.executor.path_policy import PathPolicy, Root, root_of
from sql_dl.manifest import Manifest
from sql_dl.rules import (BUILT_IN_FUNCTIONS, CACHE_VIEW, DEVICES_VIEW, INDEXES_VIEW,
                          MODELS_VIEW, SYSTEM_VIEWS, VIEWS_VIEW)

__all__ = ["LDAP", "LOCKED_CONF", "OPERATOR_CHOICES", "SETTABLE", "access_problems", "path_policy", "policy_spec"]

LDAP = "hive.server2.authentication.ldap."

# Spark settings of every governed session (sql-dl serve, and plugin mode with an access
# section), which analysts cannot change (the two static ones no session can): restricted mode refuses TRANSFORM, reflect, java_method and
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
# What an operator may set otherwise (the rest keeps analysts off files and secrets)
OPERATOR_CHOICES = ("spark.sql.restrictedMode.enabled", "spark.sql.reflect.allowList")


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
    pattern = hive_conf.get(f"{LDAP}groupDNPattern", "")
    if "%s" not in pattern or "," not in pattern.split("%s", 1)[1]:
        return [f"{manifest.source}: access: {groups} are LDAP groups; tell the server where "
                f"they are with --hiveconf {LDAP}groupDNPattern=cn=%s,ou=groups,dc=example,"
                f"dc=com (your directory's). Received: {LDAP}groupDNPattern={pattern!r}"]
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
                 DEVICES_VIEW: ["model", "model"], VIEWS_VIEW: ["view", "view"],
                 INDEXES_VIEW: ["index", "index"]},
        # what each index reads, which an analyst must be granted to search it
        "indexes": {name: {f"view {spec.view}": views[spec.view],
                           f"function {spec.function}": spec.model}
                    for name, spec in manifest.indexes.items()},
    }


def path_policy(manifest: Manifest) -> PathPolicy:
    """What sql_dl's functions may read when given a path: files under the manifest's image
    folders, each up to its view's ``max_file_size``."""
    return PathPolicy([Root(root_of(spec.path), spec.max_file_size)
                       for spec in manifest.images.values()])
