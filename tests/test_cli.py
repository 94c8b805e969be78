"""The sql-dl command, run as users run it: in a subprocess, output on stdout."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from helpers.processes import run_cli, TIMEOUT
from helpers.reference import expected_best, local


@pytest.fixture(scope="module")
def manifest_file(tmp_path_factory, photos_dir, cnn_file, labels_file):
    directory = tmp_path_factory.mktemp("cli")
    (directory / "models").mkdir()
    (directory / "models" / "cnn.keras").write_bytes(cnn_file.read_bytes())
    path = directory / "models.yaml"
    path.write_text(yaml.safe_dump({
        "preprocessors": {"p32": {"size": [32, 32], "mode": "caffe"}},
        "models": {"cnn": {"path": "models/cnn.keras", "preprocessor": "p32",
                           "labels": str(labels_file)}},
        "images": {"photos": {"path": str(photos_dir)}},
    }))
    return path


QUERY = "SELECT path, label, cnn_top_k(image, 1)[0].description FROM photos ORDER BY path"


def check_query_output(stdout: str, cnn_file, photos):
    rows = [line.split("\t") for line in stdout.splitlines()]
    files = [local(path) for path, _, _ in rows]
    assert files == photos
    assert [label for _, label, _ in rows] == [f.parent.name for f in photos]
    assert [best for _, _, best in rows] == expected_best(cnn_file, files)


@pytest.mark.slow
def test_sql_execute_matches_keras(manifest_file, cnn_file, photos, tmp_path):
    """On a cluster of two executors (the other tests of the shell run on local[2])."""
    result = run_cli("sql", "--home", tmp_path, "--manifest", str(manifest_file),
                    "--master", "local-cluster[2,1,2048]", "-S",
                    "-e", f"SET spark.sql.shuffle.partitions=2; {QUERY};")
    assert result.returncode == 0, result.stderr
    settings, *rows = result.stdout.splitlines()
    assert settings == "spark.sql.shuffle.partitions\t2"
    check_query_output("\n".join(rows), cnn_file, photos)


def test_sql_file_init_and_header(manifest_file, cnn_file, photos, tmp_path):
    init = tmp_path / "init.sql"
    init.write_text("-- an init script\nCREATE TEMPORARY VIEW small AS\n  SELECT * FROM photos;\n")
    script = tmp_path / "query.sql"
    script.write_text(f"-- the query; with a semicolon in a comment\n{QUERY.replace('photos', 'small')};\n"
                      "SELECT 'a;b' AS text, CAST(NULL AS STRING) AS nothing;\n")
    result = run_cli("sql", "--home", tmp_path, "--manifest", str(manifest_file), "--master", "local[2]", "--header",
                    "-i", str(init), "-f", str(script), "--conf", "spark.sql.shuffle.partitions=3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "path\tlabel\tcnn_top_k(image, 1)[0].description"
    check_query_output("\n".join(lines[1:-2]), cnn_file, photos)
    assert lines[-2:] == ["text\tnothing", "a;b\tNULL"]
    assert "Fetched 9 row(s)" in result.stderr
    assert f"Bootstrapped {manifest_file}" in result.stderr  # progress on stderr, results on stdout


def test_sql_interactive_prompt_and_errors(manifest_file, tmp_path):
    stdin = "SELECT 1 +\n  1 AS two;\nSELECT nope(1);\nSELECT size(cnn(image)) FROM photos LIMIT 1;\nquit;\n"
    result = run_cli("sql", "--home", tmp_path, "--manifest", str(manifest_file), "--master", "local[1]",
                    "--warm-up", stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert "Warmed up 1 model(s) in 1 Python worker(s)" in result.stderr
    prompts = "sql-dl> " + "      > " + "2\n" + "sql-dl> " + "sql-dl> " + "5\n" + "sql-dl> "
    assert result.stdout == prompts
    assert "Error: [UNRESOLVED_ROUTINE] Cannot resolve routine `nope`" in result.stderr


def test_history_is_kept_after_quit(tmp_path):
    """At a terminal (a pseudo-terminal here), statements reach ~/.sql_dl_history on quit;."""
    import pty

    main, terminal = pty.openpty()
    env = {**os.environ, "HOME": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-m", "sql_dl.cli", "sql", "--home", tmp_path / "h",
                                "--master", "local[1]"], stdin=terminal, stdout=terminal,
                               stderr=subprocess.DEVNULL, env=env)
    os.close(terminal)
    os.write(main, b"SELECT 40 + 2 AS answer;\nquit;\n")
    output = b""
    while True:  # read the terminal until the shell exits (EIO once it is closed)
        try:
            chunk = os.read(main, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=TIMEOUT) == 0
    assert b"42" in output
    history = (tmp_path / ".sql_dl_history").read_text().splitlines()
    assert history[-2:] == ["SELECT 40 + 2 AS answer;", "quit;"]


def test_sql_error_exit_code_and_analysis_error_message(manifest_file, tmp_path):
    result = run_cli("sql", "--home", tmp_path, "--master", "local[1]", "-e",
                    "SELECT path FROM no_such_table")
    assert result.returncode == 1
    log = tmp_path / "logs" / "spark.log"
    assert result.stderr.splitlines() == [
        "Error: [TABLE_OR_VIEW_NOT_FOUND] The table or view `no_such_table` cannot be found. "
        "Verify the spelling and correctness of the schema and catalog.",
        "== SQL (line 1, position 18) ==",
        "SELECT path FROM no_such_table",
        "                 ^^^^^^^^^^^^^",
        f"(Spark's log, with the details of errors: {log})"]
    assert "TABLE_OR_VIEW_NOT_FOUND" in log.read_text()  # PySpark's JSON error line


def test_a_model_query_prints_nothing_but_results(manifest_file, tmp_path):
    """No TensorFlow/absl, JVM or Spark start-up lines: -S leaves stderr empty."""
    result = run_cli("sql", "--home", tmp_path, "--manifest", str(manifest_file), "--master",
                    "local[2]", "-S", "-e", "SELECT size(cnn(image)) FROM photos LIMIT 2")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "5\n5\n"
    assert result.stderr == ""
    log = (tmp_path / "logs" / "spark.log").read_text()
    assert "oneDNN custom operations" not in log  # filtered in the workers too


def test_a_worker_error_reaches_the_shell_as_one_line(manifest_file, photos_dir, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"not an image")
    manifest = yaml.safe_load(manifest_file.read_text())
    manifest["models"]["cnn"].update(path=str(manifest_file.parent / "models" / "cnn.keras"),
                                     on_error="fail")
    manifest["images"]["photos"]["path"] = str(folder)
    strict = tmp_path / "strict.yaml"
    strict.write_text(yaml.safe_dump(manifest))
    result = run_cli("sql", "--home", tmp_path, "--manifest", strict, "--master", "local[2]", "-S",
                    "-e", "SELECT cnn(image) FROM photos")
    assert result.returncode == 1
    log = tmp_path / "logs" / "spark.log"
    error, where = result.stderr.splitlines()
    sha = hashlib.sha256(b"not an image").hexdigest()[:16]
    assert error == ("Error: ImageDecodeError: cannot decode the image: UnidentifiedImageError: "
                     "cannot identify image file. Fix or remove the file, or set on_error: null to "
                     f"get NULL for it. Received: image of 12 bytes with SHA-256 {sha}..., found "
                     f"by sha2(image, 256) LIKE '{sha}%'")
    assert where == f"(Spark's log, with the details of errors: {log})"
    assert "Traceback" in log.read_text()  # the executor's stack trace went to the log


def test_validate_ok_and_problems(manifest_file, tmp_path):
    result = run_cli("validate", str(manifest_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{manifest_file}: OK (1 preprocessor, 1 model, 1 image view)\n"

    bad = tmp_path / "bad.yaml"
    bad.write_text(manifest_file.read_text().replace("mode: caffe", "mode: sepia")
                   .replace("models/cnn.keras", str(manifest_file.parent / "models" / "cnn.keras"))
                   .replace("labels:", "batch_size: -1\n    labels:"))
    result = run_cli("validate", str(bad))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{bad}: preprocessors.p32.mode: must be one of caffe, tf, torch, scale, none. Received: mode='sepia'",
        f"{bad}: models.cnn.batch_size: must be a positive integer. Received: batch_size=-1",
    ]


def test_validate_lists_every_problem_of_one_model(manifest_file, tmp_path):
    """A model whose preprocessor, features layer and labels are all wrong gets three lines,
    not the first alone."""
    model = manifest_file.parent / "models" / "cnn.keras"
    labels = tmp_path / "three.txt"
    labels.write_text("a\nb\nc\n")
    manifest = tmp_path / "one.yaml"
    manifest.write_text(yaml.safe_dump({
        "preprocessors": {"p64": {"size": [64, 64], "mode": "caffe"}},
        "models": {"wrong": {"path": str(model), "preprocessor": "p64", "features_layer": "nope",
                             "labels": str(labels)}}}))
    result = run_cli("validate", str(manifest))
    assert result.returncode == 1
    problems = result.stderr.splitlines()
    assert [p.split(": ")[1] for p in problems] == [
        "models.wrong.features_layer", "models.wrong.preprocessor", "models.wrong.labels"]
    assert all(p.startswith(f"{manifest}: models.wrong.") for p in problems)


def test_validate_reports_every_problem_in_one_round(manifest_file, tmp_path):
    """A missing image folder does not hide the models' problems, nor one model another's."""
    model = manifest_file.parent / "models" / "cnn.keras"
    manifest = tmp_path / "many.yaml"
    manifest.write_text(yaml.safe_dump({
        "preprocessors": {"p64": {"size": [64, 64], "mode": "caffe"}},
        "models": {"sized": {"path": str(model), "preprocessor": "p64"},
                   "layered": {"path": str(model), "features_layer": "nope"}},
        "images": {"gone": {"path": str(tmp_path / "no_such_folder")}}}))
    result = run_cli("validate", str(manifest))
    assert result.returncode == 1
    assert result.stdout == ""
    problems = [line for line in result.stderr.splitlines() if line.startswith(f"{manifest}: ")]
    assert len(problems) == 3, result.stderr
    assert problems[0].startswith(f"{manifest}: images.gone.path: no such file or directory")
    assert problems[1].startswith(f"{manifest}: models.layered.features_layer: the model has no such layer")
    assert problems[2].startswith(f"{manifest}: models.sized.preprocessor: preprocessor 'p64' resizes to [64, 64]")


@pytest.mark.parametrize("args, message", [
    (("sql", "-f", "nosuch.sql"), "Error: sql-dl sql: argument -f: cannot read the script: No such "
                                  "file or directory. Received: 'nosuch.sql' (see sql-dl sql --help)"),
    (("publish", "--manifest", "m.yaml", "--model", "nosuch.keras", "--name", "n"),
     "Error: sql-dl publish: argument --model: no such file or directory. Received: 'nosuch.keras' "
     "(see sql-dl publish --help)"),
    (("train", "--manifest", "m.yaml", "--base", "b", "--view", "v", "--out", "o.keras",
      "--register", "r", "--held-out", "1.5"),
     "Error: sql-dl train: argument --held-out: must be a number in (0, 1). Received: '1.5' "
     "(see sql-dl train --help)"),
])
def test_command_line_mistakes_are_one_line_before_spark_starts(tmp_path, args, message):
    result = run_cli(*args)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", message + "\n")


def _size(n: int) -> str:
    return f"{n:,} bytes" if n < 1000 else f"{n / 1000:.1f} kB" if n < 1000 ** 2 else \
        f"{n / 1000 ** 2:.1f} MB"


def test_the_shell_shows_binary_values_as_placeholders(spark, photos, photos_dir):
    """An image is its format, size and bytes (from its header); other bytes their count;
    --raw-binary (raw_binary) prints them as spark-sql does."""
    import sql_dl
    from PIL import Image
    from sql_dl.cli.shell import SqlShell

    sql_dl.bootstrap(spark, {"images": {"photos": {"path": str(photos_dir)}}})
    query = ("SELECT path, image, CAST('abc' AS BINARY) AS b, CAST(NULL AS BINARY) AS n, "
             "image AS again FROM photos ORDER BY path")
    out = io.StringIO()
    assert SqlShell(spark, out=out, err=io.StringIO(), silent=True).run(query)
    rows = [line.split("\t") for line in out.getvalue().splitlines()]
    assert [local(r[0]) for r in rows] == photos
    for (_, image, other, null, again), photo in zip(rows, photos):
        with Image.open(photo) as opened:
            assert image == again == (f"<{opened.format} {opened.width}×{opened.height}, "
                                      f"{_size(photo.stat().st_size)}>")
        assert (other, null) == ("<binary 3 bytes>", "NULL")
    raw = io.BytesIO()
    shell = SqlShell(spark, out=io.TextIOWrapper(raw, errors="surrogateescape"), err=io.StringIO(),
                     silent=True, raw_binary=True)
    assert shell.run("SELECT image FROM photos WHERE path LIKE '%.png' LIMIT 1")
    shell.out.flush()
    assert b"PNG" in raw.getvalue()[:8] and len(raw.getvalue()) > 1000


@pytest.mark.slow
def test_ctrl_c_cancels_the_statement_and_the_prompt_stays(manifest_file, tmp_path):
    """At a real prompt (a pseudo-terminal): Ctrl-C during a statement cancels its jobs and
    says so in one line; the session goes on. After an executor-side error the prompt is the
    last thing on the screen: no progress bar (keep-warm's jobs run after each statement)
    is drawn over it."""
    import pexpect

    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    shown = io.StringIO()
    child = pexpect.spawn(sys.executable, ["-m", "sql_dl.cli", "sql", "--home", str(tmp_path),
                                           "--manifest", str(manifest_file), "--master",
                                           "local[2]", "--no-warm-up"],
                          env=env, encoding="utf-8", timeout=TIMEOUT, dimensions=(24, 120))
    child.logfile_read = shown
    child.expect_exact("sql-dl> ")
    child.sendline("SELECT count(*) FROM range(0, 1000000000000, 1, 4) WHERE id % 7 = 3;")
    child.expect(r"\[Stage")  # a job of many minutes is running
    child.sendintr()
    child.expect_exact("Query cancelled", timeout=60)
    child.expect_exact("sql-dl> ")
    child.sendline("SELECT 6 * 7;")
    child.expect_exact("42\r\n")
    child.expect_exact("sql-dl> ")
    child.sendline("SELECT assert_true(id < 0) FROM range(0, 4, 1, 2);")
    child.expect_exact("Error: [USER_RAISED_EXCEPTION] '(id < 0)' is not true!")
    child.expect_exact("sql-dl> ")
    with pytest.raises(pexpect.TIMEOUT):  # nothing is drawn over the prompt
        child.read_nonblocking(1000, timeout=3)
    child.sendline("quit;")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, shown.getvalue()
    assert "Traceback" not in shown.getvalue() and "py4j" not in shown.getvalue().lower()


def test_the_demo_keeps_the_entries_it_did_not_write(tmp_path, cnn_file):
    """Running the demo again restores its own entries and keeps those sql-dl train added
    (as the training page has users do); a file that is no manifest is refused, unchanged."""
    from sql_dl.cli.demo import demo_manifest, prepare_demo
    from sql_dl.errors import SqlDlError

    demo = tmp_path / "demo"
    (demo / "models").mkdir(parents=True)
    shutil.copy(cnn_file, demo / "models" / "digits_cnn.keras")  # trained already
    (demo / "digits").mkdir()
    (demo / "digits" / ".complete").touch()  # rendered already
    manifest = demo / "models.yaml"
    mine = {"path": "models/digits_head.keras", "preprocessor": "digits_32"}
    written = demo_manifest()
    written["models"]["digits_cnn"]["batch_size"] = 8  # a demo entry changed by hand
    written["models"]["digits_head"] = mine
    manifest.write_text(yaml.safe_dump({**written, "cache": False}))
    assert prepare_demo(demo) == manifest
    again = yaml.safe_load(manifest.read_text())
    assert again["models"] == {**demo_manifest()["models"], "digits_head": mine}
    assert again["cache"] is False
    assert {k: v for k, v in again.items() if k not in ("models", "cache")} == {
        k: v for k, v in demo_manifest().items() if k != "models"}
    manifest.write_text("- not\n- a manifest\n")
    with pytest.raises(SqlDlError, match=r"models.yaml is not a manifest the demo can keep your "
                                         r"entries of .*move it away to start the demo over. "
                                         r"Received: list"):
        prepare_demo(demo)
    assert manifest.read_text() == "- not\n- a manifest\n"
