"""sql-dl demo end to end, offline: its per-label accuracy, computed in SQL, checked with Keras."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from helpers.data import decoded
from helpers.processes import doc_blocks
from helpers.reference import keras_tensor


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A checkout's layout after `sql-dl demo`: conf/models.yaml (the repository's) and the
    demo/ it points at; (that folder, the demo's run)."""
    root = tmp_path_factory.mktemp("checkout")
    (root / "conf").mkdir()
    shutil.copy(ROOT / "conf" / "models.yaml", root / "conf" / "models.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "sql_dl.cli", "demo", "--dir", str(root / "demo"),
         "--master", "local[2]", "--home", str(root / "home")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "SQL_DL_CACHE": str(root / "cache")})
    return root, result


@pytest.mark.slow
def test_demo_runs_offline_and_its_sql_accuracy_matches_keras(demo):
    import keras

    root, result = demo
    directory = root / "demo"
    assert result.returncode == 0, result.stderr
    assert "held-out accuracy" in result.stderr

    lines = result.stdout.splitlines()
    start = lines.index("label\timages\taccuracy") + 1
    table = {label: (int(n), float(acc)) for label, n, acc in
             (line.split("\t") for line in lines[start:start + 10])}

    model = keras.saving.load_model(directory / "models" / "digits_cnn.keras")
    for label in map(str, range(10)):
        files = sorted((directory / "digits" / label).glob("*.png"))
        x = np.concatenate([keras_tensor(f, (32, 32), mode="scale") for f in files])
        accuracy = np.mean(model.predict(x, verbose=0).argmax(axis=1) == int(label))
        assert table[label] == (len(files), round(float(accuracy), 3))
    assert np.mean([acc for _, acc in table.values()]) > 0.9


@pytest.mark.slow
def test_readme_session_and_notebook_snippets_run_as_written(demo):
    """`sql_dl.session(...)`, then the notebook snippet on that session, in a checkout's
    directory after `sql-dl demo`."""
    root, made = demo
    assert made.returncode == 0, made.stderr
    session, = doc_blocks("To build a session configured for sql_dl:", 1)
    notebook, = doc_blocks("On a session you already have", 1)
    shown, = doc_blocks("**`sql_dl.show(df_or_sql, n=20)`**", 1)
    superset, = doc_blocks("In **Apache Superset**", 1)
    assert 'sql_dl.session("conf/models.yaml"' in session
    assert 'sql_dl.bootstrap(spark, "conf/models.yaml")' in notebook
    script = root / "snippets.py"
    script.write_text("import sql_dl\n" + session + notebook
                      + f"table = {shown.strip()}\nprint('shown', len(table.rows), "
                      "table._repr_html_().count('<img src=\"data:image/'))\n"
                      f"for row in spark.sql({superset!r}).collect():\n"
                      "    print('superset', row.picture[:33], row.top3, sep='\\t')\n"
                      "spark.stop()\n")
    result = subprocess.run([sys.executable, str(script)], cwd=root, capture_output=True,
                            text=True, timeout=600,
                            env={**os.environ, "SQL_DL_HOME": str(root / "home")})
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("|file:")]
    assert len(rows) == 20 and all("[{" in row for row in rows), rows  # show()'s default
    assert "shown 10 10" in result.stdout.splitlines()  # sql_dl.show: 10 rows, 10 thumbnails
    superset = [line.split("\t")[1:] for line in result.stdout.splitlines()
                if line.startswith("superset\t")]
    assert len(superset) == 100 and all(  # an <img> of a JPEG, and 'label (p), ...' x 3
        picture == '<img src="data:image/jpeg;base64,' and re.fullmatch(
            r"\d \(\d\.\d\d\)(, \d \(\d\.\d\d\)){2}", top3) for picture, top3 in superset), superset[:3]


@pytest.mark.slow
def test_readme_bi_client_and_spark_connect_snippets_run_as_written(demo):
    """beeline and PyHive against `sql-dl serve` on the demo's manifest (on a free port
    instead of 10000), and the Spark Connect snippet, from a checkout's directory."""
    from helpers.processes import Server

    root, made = demo
    assert made.returncode == 0, made.stderr
    beeline, pyhive = doc_blocks("Clients: any HiveServer2 client", 2)
    connect, = doc_blocks("Model files must be local to the client:", 1)
    if not (root / ".venv").exists():
        (root / ".venv").symlink_to(sys.prefix)  # the snippets' .venv/bin/python
    server = Server(root / "conf" / "models.yaml", root / "serve_home", cwd=root)
    try:
        server.wait_ready()
        port = str(server.port)
        # PyHive first: its session ends before the preview (a class loader Hive closes)
        script = root / "pyhive_snippet.py"
        script.write_text(pyhive.replace("10000", port) + "print(sorted(cursor.fetchall()))\n")
        counted = subprocess.run([sys.executable, str(script)], cwd=root, capture_output=True,
                                 text=True, timeout=300)
        assert counted.returncode == 0, counted.stderr[-3000:]
        counts = dict(eval(counted.stdout.splitlines()[-1]))
        assert sorted(counts) == [str(d) for d in range(10)]
        assert sum(counts.values()) == len(list((root / "demo" / "digits").rglob("*.png")))
        shown = subprocess.run(["bash", "-c", beeline.replace("10000", port)], cwd=root,
                               capture_output=True, text=True, timeout=300)
        assert shown.returncode == 0, shown.stderr[-3000:]
        rows = [line for line in shown.stdout.splitlines() if "/digits/" in line]
        assert len(rows) == 5 and all('"probability":' in row for row in rows), shown.stdout
    finally:
        server.stop()

    result = subprocess.run(["bash", "-c", connect], cwd=root, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("|file:")]
    assert len(rows) == 3 and all("[{" in row for row in rows), result.stdout


def chromium_screenshot(page: Path, out: Path, profile: Path,
                        height: int = 3000) -> Image.Image:
    """A headless Chromium screenshot of a local page, 1000 px wide at a device scale of 1.
    Every host name resolves to nothing and background networking is off: the page can
    only load what it carries."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("Chromium is needed for the browser check: apt-get install chromium "
                    "(bash .ci/setup-tests installs it)")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--force-device-scale-factor=1", f"--window-size=1000,{height}",
                    "--host-resolver-rules=MAP * ~NOTFOUND", "--disable-background-networking",
                    "--disable-component-update", "--no-first-run", "--no-pings",
                    f"--user-data-dir={profile}", f"--screenshot={out}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return Image.open(out).convert("RGB")


@pytest.mark.slow
def test_the_quickstart_notebook_shows_its_thumbnails_in_a_browser(demo, tmp_path, monkeypatch):
    """examples/quickstart.ipynb executed by nbconvert on the demo's data, exported to HTML
    and rendered by headless Chromium: every thumbnail the notebook's outputs carry is found,
    pixel for pixel, in the screenshot."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ExecutePreprocessor
    from skimage.feature import match_template

    root, made = demo
    assert made.returncode == 0, made.stderr
    kernels = tmp_path / "jupyter" / "kernels" / "sql_dl_test"  # this interpreter, whatever
    kernels.mkdir(parents=True)                                    # kernels the machine has
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "sql_dl tests", "language": "python"}))
    for name, value in (("JUPYTER_PATH", tmp_path / "jupyter"),
                        ("JUPYTER_RUNTIME_DIR", tmp_path / "runtime"),
                        ("IPYTHONDIR", tmp_path / "ipython"),
                        ("SQL_DL_DEMO_DIR", root / "demo"), ("SQL_DL_HOME", tmp_path / "home")):
        monkeypatch.setenv(name, str(value))
    notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    started = time.monotonic()
    ExecutePreprocessor(timeout=300, kernel_name="sql_dl_test").preprocess(
        notebook, {"metadata": {"path": str(tmp_path)}})
    print(f"quickstart.ipynb ran in {time.monotonic() - started:.1f} s")

    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    html_outputs = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    urls = re.findall(r'<img src="(data:image/[^"]+)"', html_outputs)
    # sql_dl.show's 5 rows, %%sql -n 12, then digits like a 3: its picture and 6 neighbours'
    assert len(urls) == 5 + 12 + 1 + 6
    nearest, = [o["data"]["text/html"] for o in outputs
                if "Nearest to" in o.get("data", {}).get("text/html", "")]
    labels = re.findall(r"</td><td>file:[^<]+</td><td>(\d)</td>", nearest)
    assert len(labels) == 6 and labels[0] == "3" and labels.count("3") >= 4, labels
    text = "".join(o.get("text", "") for o in outputs)
    misread = int(re.search(r"(\d+) of 1797 digits are misread", text).group(1))
    assert 12 <= misread < 180  # the demo CNN reads over 90% right
    assert "<td>PNG</td><td>L</td><td>32</td><td>32</td><td>1797</td>" in html_outputs

    urls_off = dict.fromkeys(("jquery_url", "jupyter_widgets_base_url", "mathjax_url",
                              "mermaid_js_url", "mermaid_layout_elk_js_url", "require_js_url",
                              "widget_renderer_url"), "")  # nothing to fetch from a CDN
    page = tmp_path / "quickstart.html"
    page.write_text(HTMLExporter(**urls_off).from_notebook_node(notebook)[0])
    shot = chromium_screenshot(page, tmp_path / "quickstart.png", tmp_path / "chromium",
                               height=4500)  # the whole page
    grey = np.asarray(shot.convert("L"), dtype=np.float64)  # float32 sums lose flat areas
    for url in urls:
        thumbnail = decoded(url).convert("L")
        assert thumbnail.size == (32, 32)  # the digits are never enlarged in the data...
        shown = np.kron(np.asarray(thumbnail, np.float64), np.ones((2, 2)))  # ...but on screen
        match = match_template(grey, shown)
        y, x = np.unravel_index(match.argmax(), match.shape)
        assert match[y, x] > 0.95, f"thumbnail {urls.index(url)} not found on the page (best match {match[y, x]})"
        region = grey[y:y + 64, x:x + 64]
        assert region.std() > 40 and region.min() < 40 < 215 < region.max()  # not blank
    if os.environ.get("SQL_DL_SCREENSHOT"):  # where to keep it: docs/quickstart.png
        shot.crop(Image.eval(shot.convert("L"), lambda v: 255 - v).getbbox()).quantize(
            256).save(os.environ["SQL_DL_SCREENSHOT"], optimize=True)


@pytest.mark.slow
def test_the_deploy_page_s_plugin_mode_runs_as_written(demo, tmp_path):
    """The Deploy page's commands for the stock spark-sql shell and a Spark Connect server
    (on a free port instead of 15002), and its Connect client, from a checkout's directory
    after `sql-dl demo`."""
    from helpers.processes import free_port

    root, made = demo
    assert made.returncode == 0, made.stderr
    commands, client = doc_blocks("With those words, each entry point serves the manifest:", 2)
    lines = commands.splitlines()
    shell = [line for line in lines if not line.startswith("#") and "HiveThriftServer2" not in line
             and "start-connect-server" not in line]
    connect = next(line for line in lines if "start-connect-server" in line)
    if not (root / ".venv").exists():
        (root / ".venv").symlink_to(sys.prefix)  # the commands' .venv/bin/sql-dl
    env = {**os.environ, "SQL_DL_CACHE": str(root / "cache")}
    shown = subprocess.run(["bash", "-c", "\n".join(shell)], cwd=root, capture_output=True,
                           text=True, timeout=300, env=env)
    assert shown.returncode == 0, shown.stderr[-3000:]
    rows = [line.split("\t") for line in shown.stdout.splitlines() if "/digits/" in line]
    assert len(rows) == 3 and all('"probability":' in row[1] for row in rows), shown.stdout

    port = free_port()
    daemon = {**env, "SPARK_PID_DIR": str(tmp_path), "SPARK_LOG_DIR": str(tmp_path),
              "SPARK_IDENT_STRING": f"deploy-page-{port}"}
    started = subprocess.run(
        ["bash", "-c", "\n".join(shell[:2] + [
            f"{connect} --conf spark.connect.grpc.binding.port={port}"])],
        cwd=root, capture_output=True, text=True, timeout=120, env=daemon)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        from helpers.plugin import wait_for_port

        wait_for_port(port, None, next(tmp_path.glob("*.out"), tmp_path))
        answered = subprocess.run(
            [sys.executable, "-c", client.replace("15002", str(port))
             .replace(".show()", ".show(truncate=False)")],
            cwd=root, capture_output=True, text=True, timeout=300)
        assert answered.returncode == 0, answered.stderr[-3000:]
        assert answered.stdout.count("/digits/") == 20, answered.stdout  # show()'s 20 rows
    finally:
        subprocess.run(["bash", "-c", shell[0] + "\n$SPARK_HOME/sbin/stop-connect-server.sh"],
                       cwd=root, env=daemon, capture_output=True, timeout=120)
