"""The processes some tests start: the ``sql-dl`` command, ``sql-dl serve`` and its JDBC
clients, and the two long scripts the suite starts with its first test (GPU placement and
keep-warm), so that their idle time overlaps the other tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import yaml

from sql_dl.executor.devices import PLACEMENT_ENV

ROOT = Path(__file__).resolve().parents[2]  # the checkout


TIMEOUT = 300


def run_cli(*args, stdin: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``sql-dl ARGS`` in a process of its own (TensorFlow's log level as a user has it), with
    ``env`` added to the environment."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}, **(env or {})}
    return subprocess.run([sys.executable, "-m", "sql_dl.cli", *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=TIMEOUT, env=env)


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def doc_blocks(heading: str, count: int) -> list[str]:
    """The first ``count`` fenced code blocks after ``heading`` in the README or the page of
    the manual (docs/) that has it: tests run the documented commands as written."""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        if heading in text:
            after = text[text.index(heading):]
            return re.findall(r"^```\w*\n(.*?)^```", after, re.S | re.M)[:count]
    raise AssertionError(f"no page of the docs has {heading!r}")


def jdbc_functions(port: int, pattern: str, schema: str = "%") -> list[tuple[str, str, str]]:
    """(schema, name, remarks) of what the Thrift GetFunctions call (JDBC
    DatabaseMetaData.getFunctions) lists for the name and schema patterns."""
    from pyhive import hive
    from TCLIService import ttypes

    connection = hive.connect(host="127.0.0.1", port=port)
    try:
        response = connection.client.GetFunctions(ttypes.TGetFunctionsReq(
            sessionHandle=connection._sessionHandle, schemaName=schema, functionName=pattern))
        assert response.status.statusCode == ttypes.TStatusCode.SUCCESS_STATUS, response.status
        fetched = connection.client.FetchResults(ttypes.TFetchResultsReq(
            operationHandle=response.operationHandle,
            orientation=ttypes.TFetchOrientation.FETCH_NEXT, maxRows=10_000))
        columns = fetched.results.columns  # FUNCTION_CAT, _SCHEM, _NAME, REMARKS, ...
        return list(zip(*(columns[i].stringVal.values for i in (1, 2, 3))))
    finally:
        connection.close()


START_TIMEOUT = 240


class Server:
    """A `sql-dl serve` subprocess (after ``prefix``, e.g. ``ip netns exec NS``); ``url`` is
    set once it printed its ready line."""

    def __init__(self, manifest: Path, home: Path, *args: str, cwd: Path | None = None,
                 prefix: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 master: str | None = "local[2]"):
        self.port = free_port()
        self.home = home
        self.log = open(home.parent / f"server-{self.port}.log", "w")
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "sql_dl.cli", "serve", "--manifest", str(manifest),
             "--port", str(self.port), *(("--master", master) if master else ()),
             "--home", str(home), *args],
            stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=cwd, env=env)
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("ready: "):
                self.ready.set()

    def wait_ready(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready.wait(1) and self.process.poll() is None and time.monotonic() < deadline:
            pass
        if not self.ready.is_set():
            self.process.kill()
            raise AssertionError(f"server not ready; log: {Path(self.log.name).read_text()[-3000:]}")
        return self.lines[-1].removeprefix("ready: ")

    def jvm_pid(self) -> int:
        """The process id of the server's driver JVM, a child of its process."""
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if (int(fields[1]) == self.process.pid
                        and b"java" in (stat.parent / "cmdline").read_bytes()):
                    return int(stat.parent.name)
            except OSError:  # the process ended
                continue
        raise AssertionError("the server's JVM was not found")

    def stop(self) -> tuple[int, float]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.log.close()
        return code, time.monotonic() - started


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket that process ``pid`` listens on."""
    import ipaddress

    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    listening = set()
    for table, size in (("tcp", 4), ("tcp6", 16)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            # /proc shows each 32-bit word in the host's (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))
            address = ipaddress.ip_address(raw)
            address = getattr(address, "ipv4_mapped", None) or address  # ::ffff:127.0.0.1
            listening.add((str(address), int(port, 16)))
    return listening


def answer(connection, sql: str) -> list[tuple]:
    """The rows of ``sql`` (none for a statement without a result) in ``connection`` (PyHive),
    which is closed after."""
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def beeline(url: str, sql: str, *login: str) -> subprocess.CompletedProcess:
    """beeline's answer to ``sql``, its rows in ``.rows``; ``login`` is e.g. ``-n``, ``alice``,
    ``-p``, ``password``."""
    import pyspark

    command = [str(Path(pyspark.__file__).parent / "bin" / "beeline"), "-u", url, *login,
               "--outputformat=tsv2", "--showHeader=false", "--silent=true", "-e", sql]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    result.rows = [re.sub(r"^\d+: jdbc:hive2://\S+> ", "", line).split("\t")
                   for line in result.stdout.splitlines() if line.strip()]
    return result


def write_manifest(path: Path, photos_dir, cnn_file, labels_file, access: dict | None = None,
                   indexes: dict | None = None, **views) -> Path:
    path.write_text(yaml.safe_dump({
        "preprocessors": {"p32": {"size": [32, 32], "mode": "caffe"}},
        "models": {"cnn": {"path": str(cnn_file), "preprocessor": "p32",
                           "labels": str(labels_file)}},
        "images": {"photos": {"path": str(photos_dir)}, **views},
        **({"indexes": indexes} if indexes else {}),
        **({"access": access} if access is not None else {}),
    }))
    return path


# Runs in its own driver: a GPU-scheduled local-cluster session. Each phase is a job group,
# which the placement records name.
GPU_SCRIPT = r"""
import json, sys, warnings
import sql_dl
from sql_dl.ml import DeepImageFeaturizer, read_images

manifest, photos, out, discovery, cnn = sys.argv[1:6]
spark = sql_dl.session(master="local-cluster[1,2,1024]", conf={
    "spark.worker.resource.gpu.amount": "2",
    "spark.worker.resource.gpu.discoveryScript": discovery,
    "spark.executor.resource.gpu.amount": "2",
    "spark.task.resource.gpu.amount": "1",
    "spark.sql.shuffle.partitions": "2"})
context = spark.sparkContext
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    context.setJobGroup("bootstrap", "bootstrap")
    sql_dl.bootstrap(spark, manifest, warm_up=True)
result = {"warnings": [str(w.message) for w in caught
                       if w.category.__name__ == "SqlDlWarning"]}
context.setJobGroup("sql", "sql")
rows = spark.sql("SELECT path, cnn(image) AS p, cnn_features(image) AS f, "
                 "cnn_top_k(image, 2)[0].class AS best FROM photos").collect()
result["sql"] = {r.path: r.p for r in rows}
context.setJobGroup("ml", "ml")
images = read_images(spark, photos, num_partitions=4)
featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features", modelFile=cnn,
                                 preprocessMode="caffe")
result["ml"] = sum(r.features is not None
                   for r in featurizer.transform(images).select("features").collect())
context.setJobGroup("train", "train")
from sql_dl.cli.train import train_head
report = train_head(spark, manifest, "cnn", "photos", out, "cnn_head", epochs=1, held_out=0.3)
context.setJobGroup("devices", "devices")
result["devices"] = [r.asDict() for r in spark.table("sql_dl_devices").collect()]
print(json.dumps(result))
spark.stop()
"""


def start_gpu_run(work: Path, photos_dir: Path, cnn_file: Path,
                  labels_file: Path) -> subprocess.Popen:
    """Starts `GPU_SCRIPT` in ``work``: its placement records go to ``work/placements``, its
    output to ``out`` and ``err`` there. The suite starts it with its first test (conftest's
    ``gpu_run_started``), at a low CPU priority (its executors too), so that it takes the
    cores the other tests leave idle rather than slowing them."""
    discovery = work / "discover_gpus.sh"
    discovery.write_text('#!/bin/bash\necho \'{"name": "gpu", "addresses": ["0", "1"]}\'\n')
    discovery.chmod(0o755)
    manifest = work / "models.yaml"
    manifest.write_text(yaml.safe_dump({
        "preprocessors": {"p32": {"size": [32, 32], "mode": "caffe"}},
        "models": {"cnn": {"path": str(cnn_file), "preprocessor": "p32",
                           "labels": str(labels_file), "batch_size": 2}},
        # 9 photos in 4 tasks of at most 4 (2 per core): both GPUs in use at once
        "images": {"photos": {"path": str(photos_dir), "images_per_task": 4}},
        "cache": {"predictions": False}}))  # every call runs the model
    (work / "placements").mkdir()
    tests = str(ROOT / "tests")
    env = {**os.environ, PLACEMENT_ENV: "gpu_placement:record",
           "SQL_DL_TEST_PLACEMENTS": str(work / "placements"), "SQL_DL_CACHE": str(work / "cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}
    with open(work / "out", "w") as out, open(work / "err", "w") as err:
        return subprocess.Popen([sys.executable, "-c", GPU_SCRIPT, str(manifest), str(photos_dir),
                                 str(work / "head.keras"), str(discovery), str(cnn_file)],
                                stdout=out, stderr=err, env=env, cwd=work,
                                preexec_fn=lambda: os.nice(15))


KEEP_WARM = textwrap.dedent("""
    import os
    import signal
    import sys
    import time
    import sql_dl
    from pyspark.sql.functions import udf
    from sql_dl.driver.keep_warm import keep_warm

    spark = sql_dl.session({"preprocessors": {"p": {"size": [32, 32], "mode": "tf"}},
                            "models": {"cnn": {"path": sys.argv[1], "preprocessor": "p",
                                               "batch_size": 1}},
                            "images": {"photos": {"path": sys.argv[2]}}},
                           master="local[2]", home=sys.argv[3], keep_warm=True,
                           conf={"spark.ui.enabled": "false"})
    keeping = keep_warm(spark)

    @udf("string")
    def worker(_):
        from sql_dl.executor import model_cache
        return f"{os.getpid()}: {sum(model_cache.stats()['loads'].values())} load(s)"

    def workers():
        return sorted({r.w for r in spark.range(0, 2, 1, 2).select(worker("id").alias("w"))
                       .collect()})

    spark.sql("SELECT cnn(image) FROM photos").collect()
    print(workers())
    spark.sql("SELECT path, cnn(image) FROM photos LIMIT 1").collect()  # a BI preview
    print(workers())
    runs = keeping.runs
    # a worker ends (as Spark ends one whose output a task stopped reading, or as the OS ends
    # one out of memory)
    os.kill(int(workers()[0].split(":")[0]), signal.SIGKILL)
    keeping.poke()  # what sql-dl serve and sql-dl sql do after each statement
    deadline = time.monotonic() + 20  # well before keep-warm's 25 s interval
    while keeping.runs == runs and time.monotonic() < deadline:
        time.sleep(0.1)
    print(keeping.runs - runs)
    print(workers())
    time.sleep(float(sys.argv[4]))
    print(workers())
    spark.stop()
""")


def start_keep_warm(directory: Path, cnn_file: Path, photos_dir: Path) -> subprocess.Popen:
    """Starts the keep-warm test's script; its output goes to ``out`` and ``err`` files in
    ``directory``. The suite starts it with its first test (conftest's ``keep_warm_run``)."""
    script = directory / "keep_warm.py"
    script.write_text(KEEP_WARM)
    with open(directory / "out", "w") as out, open(directory / "err", "w") as err:
        return subprocess.Popen([sys.executable, str(script), str(cnn_file), str(photos_dir),
                                 str(directory / "home"), "72"], stdout=out, stderr=err)
