"""sql_dl.session's configuration, and bootstrap on a session the user built (as in notebooks)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def test_session_configuration(spark, tmp_path_factory):
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.python.worker.reuse") == "true"
    assert conf.get("spark.sql.catalogImplementation") == "hive"
    assert conf.get("spark.pyspark.python") == sys.executable
    assert spark.sparkContext.pythonExec == sys.executable
    assert conf.get("spark.ui.enabled") == "false"  # the caller's conf wins over the defaults
    warehouse = conf.get("spark.sql.warehouse.dir").removeprefix("file:")
    assert warehouse.endswith("warehouse") and "sql_dl_home" in warehouse
    spark.sql("CREATE TABLE IF NOT EXISTS kept AS SELECT 1 AS one")
    try:
        assert spark.table("kept").first().one == 1
        assert os.path.isdir(os.path.join(warehouse, "kept"))
        assert "kept" in [t.name for t in spark.catalog.listTables()]
    finally:
        spark.sql("DROP TABLE kept")


NOTEBOOK = textwrap.dedent("""
    import sys
    import warnings
    from pyspark.sql import SparkSession
    import sql_dl

    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.python.worker.reuse", "false").getOrCreate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sql_dl.bootstrap(spark, {"preprocessors": {"p": {"size": [32, 32], "mode": "tf"}},
                                 "models": {"cnn": {"path": sys.argv[1], "preprocessor": "p"}},
                                 "images": {"photos": {"path": sys.argv[2]}}})
    for warning in caught:
        if issubclass(warning.category, sql_dl.errors.SqlDlWarning):
            print("warning:", warning.message, file=sys.stderr)
    rows = spark.sql("SELECT path, cnn(image) AS out FROM photos ORDER BY path").collect()
    for row in rows:
        print(row.path, *row.out)
    spark.stop()
""")


def run_notebook(script_text: str, tmp_path, cnn_file, photos_dir, photos, env, *more_args):
    """Runs a script that bootstraps its own session and prints ``path out...`` rows; checks
    the rows against Keras and returns the finished process."""
    import keras
    import numpy as np
    from helpers.reference import keras_tensor, local, TOLERANCE

    script = tmp_path / "notebook.py"
    script.write_text(script_text)
    result = subprocess.run([sys.executable, str(script), str(cnn_file), str(photos_dir),
                             *map(str, more_args)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, "\n".join(
        line for line in result.stderr.splitlines() if not line.startswith("\tat "))[-3000:]
    rows = [line.split() for line in result.stdout.splitlines()]
    files = [local(path) for path, *_ in rows]
    assert files == photos
    model = keras.saving.load_model(cnn_file)
    x = np.concatenate([keras_tensor(f, (32, 32), mode="tf") for f in files])
    np.testing.assert_allclose([[float(v) for v in out] for _, *out in rows],
                               model.predict(x, verbose=0), **TOLERANCE)
    return result


@pytest.mark.slow  # end to end: a session of its own, in a process of its own (20 s)
def test_bootstrap_on_a_session_the_user_built_without_worker_reuse(tmp_path, cnn_file, photos_dir, photos):
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "SPARK_CONF_DIR")}
    result = run_notebook(NOTEBOOK, tmp_path, cnn_file, photos_dir, photos, env)
    assert ("warning: spark.python.worker.reuse is false: every task loads its models again; "
            "set it to true (sql_dl.session does)") in result.stderr


CONNECT = textwrap.dedent("""
    import sys
    from pyspark.sql import SparkSession
    import sql_dl

    spark = SparkSession.builder.remote("local[2]").getOrCreate()
    manifest = {"preprocessors": {"p": {"size": [32, 32], "mode": "tf"}},
                "models": {"cnn": {"path": sys.argv[1], "preprocessor": "p"}},
                "images": {"photos": {"path": sys.argv[2]}}}
    sql_dl.bootstrap(spark, manifest)
    manifest["images"]["many"] = {"path": sys.argv[3]}
    sql_dl.bootstrap(spark, manifest)  # again: the same model file is shipped once
    tasks = spark.sql("SELECT count(DISTINCT p) AS n FROM (SELECT spark_partition_id() AS p "
                      "FROM many)").first().n
    print("tasks:", tasks, file=sys.stderr)
    rows = spark.sql("SELECT path, cnn(image) AS out FROM photos ORDER BY path").collect()
    for row in rows:
        print(row.path, *row.out)
    spark.stop()
""")


@pytest.mark.slow
def test_bootstrap_on_a_spark_connect_session(tmp_path, cnn_file, photos_dir, photos):
    """Works as on a classic session, views read in one task per core of the server (300
    small files would be about 10 tasks by Spark's own file splitting)."""
    from PIL import Image

    many = tmp_path / "many"
    many.mkdir()
    for i in range(300):
        Image.new("L", (8, 8), i % 256).save(many / f"{i:03d}.png")
    result = run_notebook(CONNECT, tmp_path, cnn_file, photos_dir, photos,
                          {**os.environ, "PYSPARK_PYTHON": sys.executable}, many)
    assert "tasks: 2" in result.stderr.splitlines()


@pytest.mark.slow
def test_keep_warm_keeps_workers_and_models_through_previews_and_idle_time(keep_warm_run):
    """Python workers, each with its model loaded once, survive what would take them away:

    - a preview (LIMIT): Spark pushes the limit below the model, and sql_dl's extension reads
      the worker's output to the end, so Spark reuses the worker instead of killing it;
    - a worker that ends (killed): keep-warm starts its replacement and loads the model there
      before the next query;
    - 72 s without queries (Spark stops workers idle for 60 s): keep-warm's job is activity.
    """
    process, directory = keep_warm_run
    assert process.wait(timeout=400) == 0, (directory / "err").read_text()[-3000:]
    before, after_preview, runs, after_kill, after_idle = map(
        eval, (directory / "out").read_text().splitlines()[-5:])
    assert len(before) == 2 and all(w.endswith(": 1 load(s)") for w in before), before
    assert after_preview == before
    assert runs >= 1
    assert len(after_kill) == 2 and all(w.endswith(": 1 load(s)") for w in after_kill), after_kill
    assert len(set(after_kill) & set(before)) == 1, (before, after_kill)  # one was replaced
    assert after_idle == after_kill


HOLDER = textwrap.dedent("""
    import sys
    import sql_dl

    spark = sql_dl.session(master="local[1]", home=sys.argv[1], warm_up=False,
                           conf={"spark.ui.enabled": "false"})
    spark.sql("SHOW DATABASES").collect()  # opens the metastore
    print("holding", flush=True)
    sys.stdin.read()  # until the test closes stdin
    spark.stop()
""")


@pytest.mark.slow
def test_a_home_another_session_holds_is_named_in_one_line(tmp_path):
    """A notebook's session holds its home's metastore (embedded Derby); sql-dl sql on the
    same home says so in one line, naming the lock file and the process, instead of Derby's
    thousands of lines; once the notebook stops, the home is free."""
    from helpers.processes import run_cli

    from sql_dl import ConfigurationError
    from sql_dl.driver.session import check_home_free

    home = tmp_path / "home"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(home)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        lock = home / "metastore_db" / "dbex.lck"
        with pytest.raises(ConfigurationError) as raised:
            check_home_free(home, wait=0)
        message = str(raised.value)
        assert message.startswith(f"the sql_dl home {home} is in use: another Spark session has "
                                  f"its metastore open ({lock} is locked by process ")
        assert f"a JVM of process {holder.pid} ({sys.executable} -c " in message
        assert message.endswith("Give this one a home of its own (--home DIR, SQL_DL_HOME, or "
                                "home= in sql_dl.session), or stop the other session. "
                                f"Received: home={home}")
        result = run_cli("sql", "--home", home, "--master", "local[1]", "-e", "SELECT 1")
        assert result.returncode == 1
        lines = result.stderr.splitlines()
        assert lines[0].startswith("sql-dl: Waiting up to 15 s for process ")
        assert lines[1:] == [f"Error: {message}"]
        assert not (home / "logs" / "spark.log").exists()  # Spark never started
    finally:
        holder.stdin.close()
        holder.wait(timeout=120)
    check_home_free(home, wait=30)  # free again: no error
