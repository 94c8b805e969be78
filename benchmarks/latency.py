"""BI latency over JDBC: p50 and p95 of the query shapes BI tools send to `sql-dl serve`.

Starts `sql-dl serve` on a view of JPEGs (crops of the photos scikit-image and scikit-learn
ship, in two label folders) with a MobileNetV2 of random weights at 224x224, connects with
PyHive and times, interleaved, ``--reps`` rounds of:

- preview: ``SELECT path, m_top_k(image, 1) ... LIMIT 20``;
- top-N: ``... ORDER BY path DESC LIMIT 20`` (what Tableau, Superset and DBeaver send);
- filter + count by label (no model);
- GROUP BY over the top-1 class (the model on every image);
- full scan: every image's top-1 class, fetched;
- a 64-image query, warm; and the same query after ``--idle`` seconds without queries.

The prediction cache is off (``cache: {predictions: false}``): every query pays for its
model work, as a query over new images does (benchmarks/cache.py measures the cache). With
``--before REV`` it measures the server of that git revision too (checked out in a
temporary worktree, same interpreter and packages), for before/after figures.

    python benchmarks/latency.py --images 1000 --reps 5 --idle 90 --before 345cfd3
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import make_images  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = "m"
SHAPES = {
    "preview LIMIT 20": f"SELECT path, {MODEL}_top_k(image, 1)[0].description FROM photos "
                        "LIMIT 20",
    "ORDER BY path DESC LIMIT 20": f"SELECT path, {MODEL}_top_k(image, 1)[0].description "
                                   "FROM photos ORDER BY path DESC LIMIT 20",
    "filter + count by label": "SELECT label, count(*) FROM photos WHERE label = 'a' "
                               "GROUP BY label",
    "GROUP BY top-1 class": f"SELECT {MODEL}_top_k(image, 1)[0].description AS class, count(*) "
                            "FROM photos GROUP BY 1",
    "full scan": f"SELECT path, {MODEL}_top_k(image, 1)[0].description FROM photos",
    "64 images, warm": f"SELECT count({MODEL}(image)) FROM (SELECT image FROM photos LIMIT 64)",
}
IDLE_QUERY = SHAPES["64 images, warm"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`sql-dl serve` of the code under ``source`` (a checkout), until `stop`."""

    def __init__(self, source: Path, manifest: Path, home: Path, master: str):
        self.port = free_port()
        self.log = open(home.parent / f"server-{self.port}.log", "w")
        env = {**os.environ, "PYTHONPATH": str(source)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sql_dl.cli", "serve", "--manifest", str(manifest), "--port",
             str(self.port), "--master", master, "--home", str(home)],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=env, cwd=source)
        for line in self.process.stdout:
            if line.startswith("ready: "):
                return
        raise RuntimeError(f"the server did not start; see {self.log.name}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def timed(cursor, query: str) -> float:
    started = time.perf_counter()
    cursor.execute(query)
    cursor.fetchall()
    return time.perf_counter() - started


def measure(server: Server, reps: int, idle: float) -> dict[str, dict[str, float]]:
    from pyhive import hive

    cursor = hive.connect(host="127.0.0.1", port=server.port, username="bench").cursor()
    timed(cursor, IDLE_QUERY)  # the connection's first query
    after_idle = f"64 images after {idle:.0f} s idle"
    times: dict[str, list[float]] = {name: [] for name in [*SHAPES, after_idle]}
    for rep in range(reps):
        for name, query in SHAPES.items():
            times[name].append(timed(cursor, query))
        print(f"  round {rep + 1}/{reps} done", file=sys.stderr, flush=True)
    for rep in range(max(1, reps // 2)):  # idle rounds are long: half as many
        time.sleep(idle)
        times[after_idle].append(timed(cursor, IDLE_QUERY))
        print(f"  idle round {rep + 1} done", file=sys.stderr, flush=True)
    return {name: {"p50": float(np.percentile(t, 50)), "p95": float(np.percentile(t, 95)),
                   "runs": len(t)} for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--idle", type=float, default=90.0, help="seconds without queries")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--before", metavar="REV", help="also measure this git revision")
    parser.add_argument("--out", type=Path, default=None,
                        help="where results.json goes (default: the temporary work folder)")
    args = parser.parse_args(argv)
    import keras

    work = Path(tempfile.mkdtemp(prefix="sql_dl-latency-"))
    print(f"Making {args.images} JPEGs in two labels and a MobileNetV2 in {work}", file=sys.stderr)
    half = args.images // 2
    make_images(work / "images" / "a", half)
    make_images(work / "images" / "b", args.images - half, seed=1)
    keras.applications.MobileNetV2(weights=None).save(work / "m.keras")
    manifest = {
        "preprocessors": {"p": {"size": [224, 224], "mode": "tf"}},
        "models": {MODEL: {"path": str(work / "m.keras"), "preprocessor": "p"}},
        "images": {"photos": {"path": str(work / "images")}}}
    manifests = {work / "before.yaml": manifest,  # revisions without the cache section
                 work / "models.yaml": {**manifest, "cache": {"predictions": False}}}
    for path, data in manifests.items():
        path.write_text(yaml.safe_dump(data))

    sources = {"after": ROOT}
    if args.before:
        before = work / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before),
                        args.before], check=True, capture_output=True)
        sources = {f"before ({args.before})": before, **sources}
    results = {}
    try:
        for label, source in sources.items():
            print(f"Measuring {label}", file=sys.stderr, flush=True)
            home = work / f"home-{len(results)}"
            home.mkdir()
            server = Server(source, work / ("models.yaml" if source == ROOT else "before.yaml"),
                            home, args.master)
            try:
                results[label] = measure(server, args.reps, args.idle)
            finally:
                server.stop()
    finally:
        if args.before:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(work / "before")], capture_output=True)
    out = args.out or work
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(
        {"images": args.images, "reps": args.reps, "idle": args.idle, "results": results},
        indent=2))
    labels = list(results)
    print("| query | " + " | ".join(f"{label} p50 / p95 (s)" for label in labels) + " |")
    print("|---|" + "---|" * len(labels))
    for name in results[labels[0]]:
        cells = [f"{results[label][name]['p50']:.2f} / {results[label][name]['p95']:.2f}"
                 for label in labels]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"results: {out / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
