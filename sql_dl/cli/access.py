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

from sql_dl.driver.policy import LDAP, SETTABLE, path_policy, policy_spec
from sql_dl.manifest import Manifest
from sql_dl.rules import PATH_POLICY_ENV

__all__ = ["LOCKED_CONF", "SETTABLE", "access_problems", "install_path_policy",
           "install_policy", "path_policy", "policy_spec"]

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
    pattern = hive_conf.get(f"{LDAP}groupDNPattern", "")
    if "%s" not in pattern or "," not in pattern.split("%s", 1)[1]:
        return [f"{manifest.source}: access: {groups} are LDAP groups; tell the server where "
                f"they are with --hiveconf {LDAP}groupDNPattern=cn=%s,ou=groups,dc=example,"
                f"dc=com (your directory's). Received: {LDAP}groupDNPattern={pattern!r}"]
    return []


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
