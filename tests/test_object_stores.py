"""Object stores: a view on a scheme whose Hadoop FileSystem Spark lacks is refused by
sql-dl validate and by bootstrap, naming the connector to add."""

from __future__ import annotations

import re

import pytest
from helpers.processes import run_cli

import sql_dl
from sql_dl import ManifestError
from sql_dl.object_stores import hadoop_version, missing_connector, spark_jars

S3A = ("images.lake.path: Spark has no FileSystem for s3a: URIs (Amazon S3 or an S3-compatible "
       "store): add org.apache.hadoop:hadoop-aws:{v} with its AWS SDK v2 bundle "
       "software.amazon.awssdk:bundle:2.35.4 (spark.jars.packages fetches it), matching Spark's "
       "Hadoop {v}, with --conf spark.jars.packages=org.apache.hadoop:hadoop-aws:{v} (fetched "
       "from Maven Central at start) or its jars in spark.jars; credentials and endpoints are "
       "spark.hadoop.fs.* settings (see the Object stores page). "
       "Received: path='s3a://photos-bucket/2024'")


def test_the_pyspark_wheel_has_hdfs_but_no_object_store():
    import pyspark

    jars = spark_jars({})
    version = hadoop_version(jars)
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    # the same Hadoop as the JVM's (checked against the jar's own version record)
    assert any(j.name == f"hadoop-client-api-{version}.jar" for j in jars)
    assert pyspark.__version__.startswith("4.")
    for scheme in ("s3a", "gs", "abfss", "wasb", "s3"):
        assert missing_connector(scheme, jars, {}), scheme
    assert not missing_connector("s3a", jars, {
        "spark.jars.packages": "org.apache.hadoop:hadoop-aws:3.5.0"})


def test_validate_names_the_connector_each_view_needs(tmp_path):
    version = hadoop_version(spark_jars({}))
    manifest = tmp_path / "models.yaml"
    manifest.write_text("images:\n  lake: {path: 's3a://photos-bucket/2024'}\n"
                        "  old: {path: 's3://photos-bucket/2024'}\n"
                        f"  here: {{path: '{tmp_path}'}}\n")
    result = run_cli("validate", manifest)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{manifest}: " + S3A.format(v=version),
        f"{manifest}: images.old.path: Hadoop 3 has no FileSystem for s3: URIs; write "
        "s3a://photos-bucket/2024 (the S3A connector). Received: path='s3://photos-bucket/2024'"]
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "spark-defaults.conf").write_text(
        f"spark.jars.packages  org.apache.hadoop:hadoop-aws:{version}\n")
    manifest.write_text("images:\n  lake: {path: 's3a://photos-bucket/2024'}\n")
    result = run_cli("validate", manifest, env={"SPARK_CONF_DIR": str(conf)})
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


def test_bootstrap_refuses_a_view_without_its_file_system_and_changes_nothing(spark):
    version = spark.sparkContext._jvm.org.apache.hadoop.util.VersionInfo.getVersion()
    views = {t.name for t in spark.catalog.listTables()}
    with pytest.raises(ManifestError) as raised:
        sql_dl.bootstrap(spark, {"images": {"lake": {"path": "s3a://photos-bucket/2024"}}})
    assert str(raised.value) == "<manifest dict>: " + S3A.format(v=version)
    assert {t.name for t in spark.catalog.listTables()} == views
