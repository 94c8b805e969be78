"""Which Hadoop FileSystem each URI scheme needs, whether Spark has it, and what to add when
it does not: an object store's connector is not in the pyspark wheel.

Pure Python: `missing_connector` answers from the jars Spark would load (for ``sql-dl
validate``, which starts no JVM); the driver asks the JVM itself (`sql_dl.driver.views`).
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import urlparse

from sql_dl.manifest import Manifest
from sql_dl.paths import SOURCE_CONF_DIR

__all__ = ["CONNECTORS", "Connector", "connector_problem", "file_system_problems",
           "hadoop_version", "is_built_in", "missing_connector", "scheme_of", "spark_defaults",
           "spark_jars"]

# The AWS SDK v2 bundle each Hadoop release's hadoop-aws is built against (hadoop-project's
# aws-java-sdk-v2.version); another version fails at the first request.
_AWS_SDK = {"3.4.1": "2.24.6", "3.5.0": "2.35.4"}
_BUILT_IN = {"file", "hdfs", "viewfs", "har", "http", "https", "webhdfs", "swebhdfs", "ftp",
             "sftp"}


@dataclass(frozen=True)
class Connector:
    """The Hadoop module that gives a scheme its FileSystem."""

    store: str
    file_system: str  # the FileSystem class
    package: str  # Maven coordinates; {hadoop} stands for Spark's Hadoop version
    needs: str = ""  # what else it needs, and where credentials go

    def packages(self, hadoop: str) -> str:
        return self.package.format(hadoop=hadoop)


_HADOOP_AWS = Connector(
    "Amazon S3 or an S3-compatible store", "org.apache.hadoop.fs.s3a.S3AFileSystem",
    "org.apache.hadoop:hadoop-aws:{hadoop}",
    "with its AWS SDK v2 bundle software.amazon.awssdk:bundle:{aws} (spark.jars.packages "
    "fetches it)")
_ABFS = Connector(
    "Azure Data Lake Storage Gen2", "org.apache.hadoop.fs.azurebfs.AzureBlobFileSystem",
    "org.apache.hadoop:hadoop-azure:{hadoop}")
_WASB = Connector(
    "Azure Blob Storage (legacy wasb)", "org.apache.hadoop.fs.azure.NativeAzureFileSystem",
    "org.apache.hadoop:hadoop-azure:{hadoop}")
CONNECTORS: dict[str, Connector] = {
    "s3a": _HADOOP_AWS,
    "gs": Connector("Google Cloud Storage",
                    "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFileSystem",
                    "com.google.cloud.bigdataoss:gcs-connector:3.0.0",
                    "(as jars: its shaded jar, which carries its dependencies)"),
    "abfs": _ABFS, "abfss": _ABFS, "wasb": _WASB, "wasbs": _WASB,
    "oss": Connector("Alibaba Cloud OSS", "org.apache.hadoop.fs.aliyun.oss.AliyunOSSFileSystem",
                     "org.apache.hadoop:hadoop-aliyun:{hadoop}"),
}
_RENAMED = {"s3": "s3a", "s3n": "s3a"}  # Hadoop 3 has S3A only


def scheme_of(uri: str) -> str:
    """The URI's scheme in lower case; ``file`` for a local path."""
    scheme = urlparse(uri).scheme.lower()
    return "file" if len(scheme) <= 1 else scheme  # '' or a Windows drive letter


def hadoop_version(jars: Iterable[Path]) -> str | None:
    """Spark's Hadoop version, from the name of its ``hadoop-client-api`` jar."""
    for jar in jars:
        match = re.fullmatch(r"hadoop-client-api-(\d+\.\d+\.\d+)\.jar", jar.name)
        if match:
            return match.group(1)
    return None


def spark_jars(conf: Mapping[str, str]) -> list[Path]:
    """The jars a Spark session of ``conf`` loads: the pyspark wheel's (or ``SPARK_HOME``'s)
    and ``spark.jars``."""
    import pyspark  # lazy: light, but only sql-dl validate needs it here

    home = os.environ.get("SPARK_HOME") or str(Path(pyspark.__file__).parent)
    jars = sorted((Path(home) / "jars").glob("*.jar"))
    for item in conf.get("spark.jars", "").split(","):
        path = Path(urlparse(item.strip()).path) if item.strip() else None
        if path is not None and path.suffix == ".jar":
            jars.append(path)
    return jars


def missing_connector(scheme: str, jars: Iterable[Path], conf: Mapping[str, str]) -> bool:
    """Whether Spark, with ``jars`` and ``conf``, lacks the FileSystem of ``scheme``
    (False for a scheme this module does not know: the JVM check at bootstrap decides)."""
    connector = CONNECTORS.get(scheme)
    if connector is None:
        return scheme in _RENAMED
    artifact = connector.package.split(":")[1]
    if artifact in conf.get("spark.jars.packages", ""):
        return False  # fetched as the session starts
    entry = connector.file_system.replace(".", "/") + ".class"
    for jar in jars:
        try:
            with zipfile.ZipFile(jar) as archive:
                archive.getinfo(entry)
                return False
        except (KeyError, OSError, zipfile.BadZipFile):
            continue
    return True


def connector_problem(where: str, uri: str, hadoop: str | None) -> str:
    """What to add so that Spark reads ``uri``, for a manifest problem at ``where``."""
    scheme = scheme_of(uri)
    if scheme in _RENAMED:
        return (f"{where}: Hadoop 3 has no FileSystem for {scheme}: URIs; write s3a://"
                f"{uri.split('://', 1)[-1]} (the S3A connector). Received: path={uri!r}")
    connector = CONNECTORS.get(scheme)
    version = hadoop or "<Spark's Hadoop version>"
    if connector is None:
        return (f"{where}: Spark has no Hadoop FileSystem for {scheme}: URIs; add the jar of "
                f"one and set spark.hadoop.fs.{scheme}.impl to its class (see the Object "
                f"stores page). Received: path={uri!r}")
    needs = connector.needs.format(aws=_AWS_SDK.get(version, "<the version hadoop-project-"
                                                    f"{version}.pom names>"))
    matching = f", matching Spark's Hadoop {version}," if "{hadoop}" in connector.package else ""
    return (f"{where}: Spark has no FileSystem for {scheme}: URIs ({connector.store}): add "
            f"{connector.packages(version)}{' ' + needs if needs else ''}{matching} with "
            "--conf spark.jars.packages="
            f"{connector.packages(version)} (fetched from Maven Central at start) or its jars "
            "in spark.jars; credentials and endpoints are spark.hadoop.fs.* settings (see the "
            f"Object stores page). Received: path={uri!r}")


def is_built_in(scheme: str) -> bool:
    return scheme in _BUILT_IN


def spark_defaults() -> dict[str, str]:
    """The settings of the ``spark-defaults.conf`` a session would read (``SPARK_CONF_DIR``'s,
    else a source checkout's ``conf/``)."""
    folder = Path(os.environ.get("SPARK_CONF_DIR") or SOURCE_CONF_DIR)
    settings = {}
    try:
        lines = (folder / "spark-defaults.conf").read_text().splitlines()
    except OSError:
        return settings
    for line in lines:
        parts = line.strip().split(None, 1)
        if parts and not parts[0].startswith("#"):
            settings[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return settings


def file_system_problems(manifest: Manifest, conf: Mapping[str, str]) -> list[str]:
    """A problem for each image view whose path's scheme has no FileSystem in the jars a
    session of ``conf`` loads (views on the same scheme: each named)."""
    problems = []
    jars: list[Path] | None = None
    for name, spec in manifest.images.items():
        scheme = scheme_of(spec.path)
        if is_built_in(scheme):
            continue
        jars = spark_jars(conf) if jars is None else jars
        if missing_connector(scheme, jars, conf):
            problems.append(connector_problem(f"{manifest.source}: images.{name}.path",
                                              spec.path, hadoop_version(jars)))
    return problems
