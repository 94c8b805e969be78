"""The ``sql-dl`` command: ``sql`` (a spark-sql work-alike), ``validate``, ``serve``,
``spark-conf``, ``pack``, ``train``, ``publish`` and ``demo``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

from sql_dl._version import __version__
from sql_dl.cli.access import access_problems
from sql_dl.cli.audit import parse_size
from sql_dl.cli.demo import run_demo
from sql_dl.cli.pack import pack
from sql_dl.cli.server import serve
from sql_dl.cli.shell import SqlShell
from sql_dl.cli.spark_conf import check_python, plugin_conf, render
from sql_dl.cli.train import train_head
from sql_dl.driver.keep_warm import keep_warm
from sql_dl.driver.models import check_offline, import_keras_in_background
from sql_dl.driver.publish import publish
from sql_dl.driver.registration import bootstrap
from sql_dl.driver.session import check_home_free, session
from sql_dl.errors import ManifestError, SqlDlError
from sql_dl.manifest import check_manifest
from sql_dl.object_stores import file_system_problems, spark_defaults
from sql_dl.paths import home_dir

__all__ = ["main"]

logger = logging.getLogger("sql_dl")

# Spark's stage progress bar, on a terminal only.
CLI_CONF = {"spark.ui.showConsoleProgress": str(sys.stderr.isatty()).lower()}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sql-dl``; returns the exit code.

    A failure is reported as one line on stderr (one per problem of a manifest) with exit
    code 1; ``SQL_DL_DEBUG=1`` adds the traceback.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("sql-dl: %(message)s"))
    logger.addHandler(handler)
    # printed once, by this handler: a library that configures the root logger (logging.info
    # at module level, basicConfig) would print each line again as INFO:sql_dl....
    logger.propagate = False
    logger.setLevel(logging.WARNING if getattr(args, "silent", False) else logging.INFO)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("Interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # every failure ends as one line, never a traceback
        if os.environ.get("SQL_DL_DEBUG") == "1":
            traceback.print_exc()
        print(f"Error: {failure_message(e)}", file=sys.stderr)
        return 1


def failure_message(error: BaseException) -> str:
    """What a user reads about a failure: sql_dl's own message whole (a manifest's problems
    one per line), anything else as its type and first line."""
    if isinstance(error, SqlDlError):
        return str(error)
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(error, OSError) and error.filename is not None:
        first = f"{error.strerror}: {error.filename}"
    hint = "" if os.environ.get("SQL_DL_DEBUG") == "1" else " (SQL_DL_DEBUG=1 shows the traceback)"
    return f"{type(error).__name__}: {first}{hint}"


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line as one line on stderr with exit code 1, like any failure."""

    def error(self, message: str):
        self.exit(1, f"Error: {self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sql-dl", description="Deep-learning models over images as Spark SQL functions.")
    parser.add_argument("--version", action="version", version=f"sql-dl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (_add_sql, _add_validate, _add_serve, _add_spark_conf, _add_pack,
                        _add_train, _add_publish, _add_demo):
        add_command(commands)
    return parser


def _add_sql(commands) -> None:
    sql = commands.add_parser("sql", help="run SQL (a spark-sql work-alike)",
                              description="Runs SQL given with -e or -f, or at a prompt.")
    source = sql.add_mutually_exclusive_group()
    source.add_argument("-e", dest="execute", metavar="SQL", help="SQL statements to run")
    source.add_argument("-f", dest="file", metavar="FILE", type=_script,
                        help="a SQL script to run")
    sql.add_argument("-i", dest="init", metavar="FILE", action="append", default=[], type=_script,
                     help="a SQL script to run first, without printing results (repeatable)")
    sql.add_argument("--header", action="store_true", help="print column names first")
    sql.add_argument("-S", "--silent", action="store_true",
                     help="print results only: no timings or progress messages")
    sql.add_argument("--raw-binary", action="store_true",
                     help="print BINARY values (images) as spark-sql does, byte for byte, "
                          "instead of a placeholder such as <PNG 32×32, 1.2 kB>")
    sql.add_argument("--warm-up", action=argparse.BooleanOptionalAction, default=None,
                     help="load the manifest's models in a Python worker per core before the "
                          "first statement (default: at the prompt, while you type; with -e "
                          "or -f, not at all: the statements load the models they use)")
    _add_session_arguments(sql)
    sql.set_defaults(run=_run_sql)


def _add_validate(commands) -> None:
    validate = commands.add_parser(
        "validate", help="check a manifest without running a job",
        description="Reports every problem of a manifest: keys, values, files, and whether "
                    "each model loads and fits its entry. Runs no Spark job.")
    validate.add_argument("manifest", metavar="MANIFEST")
    validate.add_argument("--hiveconf", metavar="K=V", action="append", default=[],
                          type=_key_value, help="the HiveServer2 settings sql-dl serve will "
                          "get, to check the access section against (group grants need LDAP)")
    validate.set_defaults(run=_run_validate)


def _add_spark_conf(commands) -> None:
    spark_conf = commands.add_parser(
        "spark-conf", help="print the Spark settings of plugin mode (stock spark-sql, Thrift "
        "Server, Spark Connect, Kyuubi)",
        description="Prints the spark-submit options that give every session of any Spark SQL "
                    "entry point the manifest's functions and views: sql_dl's jar and "
                    "extension, the manifest (spark.sql_dl.manifest) and the Python the "
                    "workers run. Use: spark-sql $(sql-dl spark-conf --manifest M).")
    spark_conf.add_argument("--manifest", metavar="M", required=True,
                            help="the manifest: a path (checked now) or a Hadoop URI")
    spark_conf.add_argument("--python", metavar="PATH",
                            help="the Python that has sql_dl (default: this one)")
    spark_conf.add_argument("--archive", metavar="A",
                            help="the environment sql-dl pack built (a path or URI): the "
                                 "executors unpack it and run its Python")
    spark_conf.add_argument("--format", choices=("submit", "defaults"), default="submit",
                            help="submit: spark-submit options (default); defaults: 'key value' "
                                 "lines for spark-defaults.conf or kyuubi-defaults.conf")
    spark_conf.set_defaults(run=_run_spark_conf)


def _run_spark_conf(args) -> int:
    if args.python:
        check_python(args.python)
    print(render(plugin_conf(args.manifest, args.python, args.archive), args.format), end="")
    return 0


def _add_pack(commands) -> None:
    packing = commands.add_parser(
        "pack", help="pack the executors' Python environment into one archive",
        description="Builds a relocatable archive of the Python environment the executors "
                    "need (sql_dl, TensorFlow/Keras, PySpark's Python side), with this "
                    "environment's versions, for spark.archives: then sql-dl spark-conf "
                    "--archive ARCHIVE. Needs venv-pack (pip install 'sql_dl[pack]').")
    packing.add_argument("--output", metavar="ARCHIVE", required=True, type=Path,
                         help="the archive to write: .tar.gz, .tgz, .tar or .zip")
    packing.add_argument("--extras", metavar="E", action="append", default=[],
                         help="sql_dl extras to include, e.g. openvino (repeatable)")
    packing.add_argument("--no-trim", dest="trim", action="store_false",
                         help="keep PySpark's jars and TensorFlow's headers (no executor reads "
                              "them)")
    packing.add_argument("--compress-level", type=int, default=4, choices=range(0, 10),
                         metavar="0-9", help="gzip level of a .tar.gz (default 4)")
    packing.set_defaults(run=_run_pack)


def _run_pack(args) -> int:
    packed = pack(args.output.resolve(), tuple(args.extras), args.trim, args.compress_level)
    megabytes = [f"{n / 1e6:,.0f} MB" for n in (packed.bytes, packed.unpacked_bytes,
                                                 packed.trimmed_bytes)]
    print(f"packed: {packed.archive} ({megabytes[0]}; {megabytes[1]} unpacked, {megabytes[2]} "
          f"trimmed) in {packed.seconds:.0f} s")
    print(f"Its Python is {packed.base_python}: each executor machine needs that interpreter at "
          "that path. Next: sql-dl spark-conf --manifest M --archive ARCHIVE (a path, or the "
          "archive's hdfs:// or s3a:// URI once copied there)")
    return 0


def _add_serve(commands) -> None:
    serve = commands.add_parser(
        "serve", help="serve the manifest over JDBC/ODBC (Spark Thrift Server)",
        description="Starts the Spark Thrift Server with the manifest's functions and views "
                    "in every connection; prints 'ready: <JDBC URL>' when it accepts "
                    "connections. SIGTERM/SIGINT stop it, SIGHUP re-reads the manifest.")
    serve.add_argument("--manifest", metavar="M", required=True, help="the manifest to serve")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, loopback only)")
    serve.add_argument("--port", type=int, default=10000, help="port (default: 10000)")
    serve.add_argument("--hiveconf", metavar="K=V", action="append", default=[], type=_key_value,
                       help="a HiveServer2 setting, e.g. hive.server2.transport.mode=http "
                            "(repeatable)")
    serve.add_argument("--insecure", action="store_true",
                       help="allow a non-loopback --host without authentication")
    serve.add_argument("--audit-log", metavar="FILE",
                       help="append one JSON line per statement to FILE: time, user, client, "
                            "statement, duration, rows, images scored and from cache, outcome")
    serve.add_argument("--audit-log-max-size", metavar="SIZE", type=_size, default="100MB",
                       help="rotate the audit log at this size (default: 100MB)")
    serve.add_argument("--audit-log-backups", metavar="N", type=int, default=10,
                       help="rotated audit logs kept: FILE.1 (newest) to FILE.N (default: 10)")
    _add_session_arguments(serve, manifest=False)
    serve.set_defaults(run=_run_serve)


def _add_train(commands) -> None:
    train = commands.add_parser(
        "train", help="fit a classifier on a model's features for a view's labels, publish it",
        description="Transfer learning from SQL data: trains a softmax head on <base>_features "
                    "for the view's labels (parent folder names) in a Spark task, saves base + "
                    "head to --out, adds it to the manifest as --register, and reports its "
                    "accuracy on held-out images through SQL.")
    train.add_argument("--base", required=True, help="the manifest's model whose features to use")
    train.add_argument("--view", required=True, help="the manifest's image view to learn from")
    train.add_argument("--out", required=True, type=Path, help="the model file to write")
    train.add_argument("--register", required=True, metavar="NAME",
                       help="the new model's name in the manifest (its SQL functions' prefix)")
    train.add_argument("--epochs", type=int, default=20, help="passes over the data (default 20)")
    train.add_argument("--batch-size", type=int, default=32, help="rows per step (default 32)")
    train.add_argument("--learning-rate", type=float, default=0.001,
                       help="Adam's learning rate (default 0.001)")
    train.add_argument("--held-out", type=_fraction, default=0.2,
                       help="share of images kept out of training to score it, in (0, 1) "
                            "(default 0.2)")
    train.add_argument("--seed", type=int, default=0, help="split and training seed (default 0)")
    train.add_argument("--replace", action="store_true", help="replace an entry of that name")
    _add_session_arguments(train, manifest_required=True)
    train.set_defaults(run=_run_train)


def _add_publish(commands) -> None:
    publish = commands.add_parser(
        "publish", help="add a model file to a manifest",
        description="Copies a model file (or SavedModel directory) to models/ beside the "
                    "manifest and adds its entry; the next bootstrap or SIGHUP serves it.")
    publish.add_argument("--manifest", metavar="M", required=True, help="the manifest to add to")
    publish.add_argument("--model", required=True, type=_existing_path,
                         help="the model file (or SavedModel directory) to publish")
    publish.add_argument("--name", required=True,
                         help="the entry's name (its SQL functions' prefix)")
    publish.add_argument("--preprocessor", help="a preprocessor of the manifest to use")
    publish.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                         help="instead of --preprocessor: resize to H x W ...")
    publish.add_argument("--mode", default="none", help="... and preprocess with this mode")
    publish.add_argument("--labels", help="a labels file, one per line, or imagenet")
    publish.add_argument("--input", choices=("image", "tensor"), default="image")
    publish.add_argument("--replace", action="store_true", help="replace an entry of that name")
    publish.set_defaults(run=_run_publish)


def _add_demo(commands) -> None:
    demo = commands.add_parser(
        "demo", help="train a digits CNN and query it with SQL, offline",
        description="Renders scikit-learn's digits as PNG folders, trains a small CNN "
                    "(once), writes a manifest and runs sql/demo.sql.")
    demo.add_argument("--dir", default="demo", type=Path,
                      help="where the images, model and manifest go (default: ./demo)")
    demo.add_argument("--sql", type=Path, default=None,
                      help="the script to run (default: sql/demo.sql of this checkout)")
    _add_session_arguments(demo, manifest=False)
    demo.set_defaults(run=_run_demo)


def _add_session_arguments(parser: argparse.ArgumentParser, manifest: bool = True,
                           manifest_required: bool = False) -> None:
    if manifest:
        parser.add_argument("--manifest", metavar="M", required=manifest_required,
                            help="the manifest to bootstrap")
    parser.add_argument("--master", help="Spark master (default: local[*])")
    parser.add_argument("--conf", metavar="K=V", action="append", default=[], type=_key_value,
                        help="a Spark setting (repeatable)")
    parser.add_argument("--home", help="metastore and warehouse directory "
                                       "(default: $SQL_DL_HOME or ~/.sql_dl)")


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE. Received: {text!r}")
    return key.strip(), value.strip()


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _script(path: str) -> str:
    """A SQL script's text, read before Spark starts."""
    try:
        return Path(path).read_text()
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot read the script: {e.strerror}. "
                                         f"Received: {path!r}") from e


def _existing_path(path: str) -> Path:
    if not Path(path).exists():
        raise argparse.ArgumentTypeError(f"no such file or directory. Received: {path!r}")
    return Path(path)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1). Received: {text!r}")
    return value


def _quiet_libraries() -> None:
    """Keeps TensorFlow's C++ start-up messages out of the terminal (workers inherit it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _session(args, manifest=None):
    return session(manifest=manifest, master=args.master, conf={**CLI_CONF, **dict(args.conf)},
                   home=args.home, jvm_log=_jvm_log(args))


def _jvm_log(args) -> Path:
    """Where Spark's log and the workers' stderr go: ``<home>/logs/spark.log``."""
    return home_dir(args.home) / "logs" / "spark.log"


def _run_sql(args) -> int:
    spark = _session(args)
    shell = SqlShell(spark, header=args.header, silent=args.silent, details=_jvm_log(args),
                     raw_binary=args.raw_binary)
    try:
        if args.manifest:
            bootstrap(spark, args.manifest, warm_up=bool(args.warm_up))
        for init in args.init:
            if not shell.run_script(init, print_results=False):
                return 1
        script = args.execute if args.execute is not None else args.file
        if script is not None:
            return 0 if shell.run_script(script) else 1
        # through idle minutes, and after previews (see keep_warm); loading the models now,
        # while the user types, unless --warm-up did before or --no-warm-up says not to
        keeping = keep_warm(spark, warm_now=args.warm_up is None)
        shell.after_statement = keeping.poke
        try:
            shell.interact()
        finally:
            keeping.stop()
        return 0
    finally:
        spark.stop()


def _run_validate(args) -> int:
    manifest, problems = check_manifest(args.manifest)
    if manifest is not None:
        problems += check_offline(manifest)
        problems += file_system_problems(manifest, spark_defaults())
        problems += access_problems(manifest, dict(args.hiveconf))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"{manifest.source}: OK ({manifest.summary()})")
    return 0


def _run_serve(args) -> int:
    return serve(args.manifest, host=args.host, port=args.port, master=args.master,
                 conf={**CLI_CONF, **dict(args.conf)}, hive_conf=dict(args.hiveconf),
                 insecure=args.insecure, home=args.home, audit_log=args.audit_log,
                 audit_max_bytes=args.audit_log_max_size, audit_backups=args.audit_log_backups)


def _run_train(args) -> int:
    import_keras_in_background()  # training needs it: overlap the JVM's start
    spark = _session(args)
    try:
        report = train_head(spark, args.manifest, args.base, args.view, args.out, args.register,
                            epochs=args.epochs, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, held_out=args.held_out,
                            seed=args.seed, replace=args.replace)
    finally:
        spark.stop()
    accuracy = ("n/a" if report.held_out_accuracy is None
                else f"{report.held_out_accuracy:.3f}")
    print(f"trained {args.register}: {len(report.labels)} classes, {report.train_rows} training "
          f"images; held-out accuracy {accuracy} on {report.held_out_rows} images")
    print(f"wrote {report.model_file}; added models.{args.register} to {args.manifest}")
    return 0


def _run_publish(args) -> int:
    if args.size and args.preprocessor:
        raise ManifestError("give either --preprocessor or --size/--mode, not both")
    preprocessor = ({"size": args.size, "mode": args.mode} if args.size else args.preprocessor)
    path = publish(args.model, args.manifest, args.name, preprocessor=preprocessor,
                   labels=args.labels, input=args.input, replace=args.replace)
    print(f"wrote {path}; added models.{args.name} to {args.manifest}")
    return 0


def _run_demo(args) -> int:
    check_home_free(home_dir(args.home))  # before a minute of rendering and training
    return run_demo(args.dir, args.sql, lambda manifest: _session(args, manifest))

