"""Image catalogs: an image view's listing kept as data, brought up to date by listing only
the folders that changed, and image bytes read only for the rows a query needs. Every
property is shown by counting work (files read, folders listed), not by timing."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.reference import TOLERANCE, keras_outputs, local

import sql_dl
from sql_dl.driver.views import CATALOG_SOURCE, catalog_options
from sql_dl.manifest import load_manifest


def tree(photos: list[Path], root: Path, folders: int) -> list[Path]:
    """``folders`` sub-folders of ``root`` holding copies of ``photos`` round-robin."""
    made = []
    for i, photo in enumerate(photos * max(1, -(-folders // len(photos)))):
        folder = root / f"f{i % folders:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        made.append(Path(shutil.copy(photo, folder / f"{i:04d}_{photo.name}")))
    return sorted(made)


def settled(*folders: Path) -> None:
    """Makes the folders' modification times older than the catalog's racy window, as a
    folder nobody wrote to for a while is (a folder changed in the same instant as its
    listing is listed again at the next query, whatever its time says)."""
    past = time.time() - 10
    for folder in folders:
        for directory in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
            os.utime(directory, (past, past))


def manifest(folder: Path, cnn_file: Path | None = None, **view) -> dict:
    data = {"images": {"lake": {"path": str(folder), **view}}}
    if cnn_file is not None:
        data["preprocessors"] = {"p": {"size": [32, 32], "mode": "tf"}}
        data["models"] = {"cnn": {"path": str(cnn_file), "preprocessor": "p"}}
    return data


def reads(spark) -> int:
    return int(spark.sparkContext._jvm.sql_dl.spark.catalog.ImageBytes.total())


def catalog(spark, folder: Path) -> dict:
    """The figures of the catalog of ``folder`` (sql_dl_views' source)."""
    for described in spark.sparkContext._jvm.sql_dl.spark.catalog.ImageCatalog.describeAll():
        if described["path"] == f"file:{folder}":
            return dict(described)
    raise AssertionError(f"no catalog of {folder}")


def copied_catalog(spark, lake: Path, copies: Path) -> Path:
    """A copy of ``lake``'s catalog, in a catalog folder of its own under ``copies``, where a
    new driver would find it (here: a new catalog object of this driver)."""
    home = Path(catalog(spark, lake)["catalog"].removeprefix("file:"))
    shutil.copytree(home, copies / home.name)
    return copies / home.name


def read_copy(spark, lake: Path, copy: Path) -> tuple[int, dict]:
    """The row count of ``lake``'s view over the catalog ``copy``, and that catalog's figures."""
    spec = load_manifest(manifest(lake)).images["lake"]
    rows = (spark.read.format(CATALOG_SOURCE)
            .options(**catalog_options(spec), **{"sql_dl.catalog_dir": str(copy.parent)})
            .load().count())
    return rows, [dict(d) for d in spark.sparkContext._jvm.sql_dl.spark.catalog.ImageCatalog
                  .describeAll() if dict(d)["catalog"] == f"file:{copy}"][0]


def names(rows) -> list[str]:
    return [local(r.path).name for r in rows]


def test_metadata_queries_read_no_image_and_top_n_reads_n(spark, photos, cnn_file, tmp_path):
    files = tree(photos, tmp_path / "lake", folders=3)
    sql_dl.bootstrap(spark, manifest(tmp_path / "lake", cnn_file))
    before = reads(spark)
    assert spark.sql("SELECT count(*) AS n FROM lake").first().n == len(files)
    assert spark.sql("SELECT count(*) AS n FROM lake WHERE label = 'f001'").first().n == 3
    rows = spark.sql("SELECT path, label, length, modification_time FROM lake "
                     "ORDER BY length DESC, path LIMIT 4").collect()
    assert [r.length for r in rows] == sorted((f.stat().st_size for f in files), reverse=True)[:4]
    assert spark.sql("SELECT path FROM lake LIMIT 20").count() == len(files)
    assert reads(spark) == before  # not one image file was read

    query = ("SELECT path, cnn(image) AS out FROM lake ORDER BY path DESC LIMIT 3")
    plan = spark.sql(query)._jdf.queryExecution().executedPlan().toString()
    assert plan.index("sql_dl_image_bytes") < plan.index("TakeOrderedAndProject"), plan
    rows = spark.sql(query).collect()
    assert reads(spark) - before == 3
    expected = sorted(files, key=lambda f: f"file:{f}", reverse=True)[:3]
    assert names(rows) == [f.name for f in expected]
    np.testing.assert_allclose(np.array([r.out for r in rows]),
                               keras_outputs(cnn_file, expected, "tf"), **TOLERANCE)

    before = reads(spark)  # the image column alone, sorted by path: 2 read
    rows = spark.sql("SELECT path, image FROM lake ORDER BY path LIMIT 2").collect()
    assert [bytes(r.image) for r in rows] == [local(r.path).read_bytes() for r in rows]
    assert reads(spark) - before == 2


def test_a_full_scan_equals_keras_in_tasks_for_its_size(spark, photos, cnn_file, tmp_path):
    files = tree(photos, tmp_path / "lake", folders=2)
    sql_dl.bootstrap(spark, manifest(tmp_path / "lake", cnn_file, images_per_task=4))
    frame = spark.sql("SELECT path, cnn(image) AS out FROM lake")
    assert frame.rdd.getNumPartitions() == 4  # 9 images, at most 4 per task, 2 per core
    before = reads(spark)
    rows = sorted(frame.collect(), key=lambda r: r.path)
    assert reads(spark) - before == len(files)
    assert names(rows) == [f.name for f in files]
    np.testing.assert_allclose(np.array([r.out for r in rows]),
                               keras_outputs(cnn_file, files, "tf"), **TOLERANCE)


def test_file_names_that_are_not_uri_safe_are_read_as_they_are(spark, photos, cnn_file,
                                                                tmp_path):
    """Local images are read directly (not through Hadoop's local file system): names with
    spaces, '#', '%', ';' and non-ASCII letters, in a folder with a space, still give their
    own bytes and Keras's answers."""
    folder = tmp_path / "odd lake" / "sub dir"
    folder.mkdir(parents=True)
    files = [folder / name for name in ("a b.png", "hash#1.png", "pct%20.png", "semi;colon.png",
                                        "\u00fcn\u00ef.png")]
    for photo, file in zip(photos, files):
        shutil.copy(photo, file)
    files.sort()
    sql_dl.bootstrap(spark, manifest(tmp_path / "odd lake", cnn_file))
    before = reads(spark)
    rows = sorted(spark.sql("SELECT path, length(image) AS n, cnn(image) AS out FROM lake")
                  .collect(), key=lambda r: r.path)
    assert reads(spark) - before == 2 * len(files)  # once per use of the column
    assert [local(r.path) for r in rows] == files
    assert [r.n for r in rows] == [f.stat().st_size for f in files]
    np.testing.assert_allclose(np.array([r.out for r in rows]),
                               keras_outputs(cnn_file, files, "tf"), **TOLERANCE)


def test_a_query_lists_only_the_folders_that_changed(spark, photos, tmp_path):
    lake = tmp_path / "lake"
    tree(photos, lake, folders=9)
    settled(lake)
    sql_dl.bootstrap(spark, manifest(lake))
    assert spark.sql("SELECT count(*) AS n FROM lake").first().n == 9
    before = catalog(spark, lake)
    assert spark.sql("SELECT count(*) AS n FROM lake").first().n == 9
    after = catalog(spark, lake)
    assert after["folders_listed"] == before["folders_listed"]  # nothing changed: no listing
    assert after["folders_checked"] - before["folders_checked"] == 10  # the root and 9 folders

    shutil.copy(photos[0], lake / "f004" / "added.png")
    (lake / "f007" / next(p.name for p in (lake / "f007").iterdir())).unlink()
    before = after
    assert spark.sql("SELECT count(*) AS n FROM lake").first().n == 9
    after = catalog(spark, lake)
    assert after["folders_listed"] - before["folders_listed"] == 2  # f004 and f007 only


def test_freshness_after_add_delete_rename_rewrite_and_new_folder(spark, photos, cnn_file,
                                                                  tmp_path):
    lake = tmp_path / "lake"
    tree(photos[:4], lake, folders=2)
    settled(lake)
    sql_dl.bootstrap(spark, manifest(lake, cnn_file))

    def view() -> dict[str, tuple]:
        rows = spark.sql("SELECT path, label, length, cnn(image) AS out FROM lake").collect()
        return {str(local(r.path).relative_to(lake)): (r.label, r.length, r.out) for r in rows}

    def on_disk() -> list[str]:
        return sorted(str(p.relative_to(lake)) for p in lake.rglob("*") if p.is_file())

    assert sorted(view()) == on_disk()
    first = sorted(lake.rglob("*.*"))[0]
    shutil.copy(photos[5], lake / "f000" / "added.jpg")  # add
    sorted((lake / "f001").iterdir())[0].unlink()  # delete
    first.rename(first.with_name("renamed" + first.suffix))  # rename
    (lake / "new" / "deeper").mkdir(parents=True)  # a new sub-folder, two levels
    shutil.copy(photos[6], lake / "new" / "deeper" / "x.png")
    seen = view()
    assert sorted(seen) == on_disk()
    assert seen["new/deeper/x.png"][0] == "deeper"
    np.testing.assert_allclose(seen["new/deeper/x.png"][2],
                               keras_outputs(cnn_file, [photos[6]], "tf")[0], **TOLERANCE)

    # rewritten in place: the image's bytes (so the answers) are the new ones at once; its
    # length and time stay those of the listing until its folder changes
    target = lake / "new" / "deeper" / "x.png"
    old_length = target.stat().st_size
    settled(lake)
    view()  # listed again once (it was new within the racy window), now settled
    target.write_bytes(photos[7].read_bytes())
    seen = view()
    np.testing.assert_allclose(seen["new/deeper/x.png"][2],
                               keras_outputs(cnn_file, [photos[7]], "tf")[0], **TOLERANCE)
    assert seen["new/deeper/x.png"][1] == old_length
    shutil.copy(photos[8], target.with_name("y.png"))  # the folder changes: listed again
    assert view()["new/deeper/x.png"][1] == photos[7].stat().st_size

    shutil.rmtree(lake / "new")  # a folder deleted with its sub-folder
    assert sorted(view()) == on_disk()


def test_a_query_planned_before_a_refresh_reads_its_own_snapshot(spark, photos, tmp_path):
    lake = tmp_path / "lake"
    tree(photos[:4], lake, folders=1)
    sql_dl.bootstrap(spark, manifest(lake))
    planned = spark.sql("SELECT path FROM lake")
    planned.explain()  # optimized now: the snapshot of this instant
    shutil.copy(photos[4], lake / "f000" / "added.png")
    assert spark.sql("SELECT count(*) AS n FROM lake").first().n == 5  # a refresh meanwhile
    assert len(planned.collect()) == 4  # its segments are still there
    assert spark.sql("SELECT count(*) AS n FROM lake").first().n == 5


@pytest.mark.parametrize("damage", ["truncated segment", "garbage state", "older version",
                                    "missing segment"])
def test_a_damaged_catalog_is_built_again(spark, photos, tmp_path, damage):
    lake = tmp_path / "lake"
    tree(photos, lake, folders=3)
    sql_dl.bootstrap(spark, manifest(lake))
    assert spark.sql("SELECT count(*) AS n FROM lake").first().n == 9
    copy = copied_catalog(spark, lake, tmp_path / "catalogs")
    state_file = copy / "state.json"
    state = json.loads(state_file.read_text())
    segment = copy / state["segments"][0]["file"]
    if damage == "truncated segment":
        segment.write_bytes(segment.read_bytes()[:100])
    elif damage == "garbage state":
        state_file.write_text("{not json")
    elif damage == "older version":
        state_file.write_text(json.dumps({**state, "version": 0}))
    else:
        segment.unlink()
    rows, rebuilt = read_copy(spark, lake, copy)
    assert rows == 9
    assert rebuilt["rebuilds"] == 1


def test_an_intact_catalog_is_loaded_not_listed(spark, photos, tmp_path):
    lake = tmp_path / "lake"
    tree(photos, lake, folders=3)
    settled(lake)
    sql_dl.bootstrap(spark, manifest(lake))
    assert spark.sql("SELECT count(*) AS n FROM lake").first().n == 9
    rows, loaded = read_copy(spark, lake, copied_catalog(spark, lake, tmp_path / "catalogs"))
    assert rows == 9
    assert (loaded["rebuilds"], loaded["folders_listed"], loaded["folders_checked"]) == (0, 0, 4)


def test_a_big_tree_is_listed_in_the_executors(spark, photos, tmp_path):
    lake = tmp_path / "lake"
    files = tree(photos, lake, folders=40)  # past 32 folders: a Spark job lists them
    sql_dl.bootstrap(spark, manifest(lake))
    assert spark.sql("SELECT count(*) AS n FROM lake").first().n == len(files)
    assert catalog(spark, lake)["folders_listed_in_executors"] == 40
    assert sorted(r.path for r in spark.sql("SELECT path FROM lake").collect()) == sorted(
        f"file:{f}" for f in files)


def test_sql_dl_views_shows_each_views_catalog(spark, photos, tmp_path):
    lake = tmp_path / "lake"
    tree(photos, lake, folders=3)
    sql_dl.bootstrap(spark, manifest(lake))
    spark.sql("SELECT count(*) FROM lake").collect()
    row = spark.sql("SELECT * FROM sql_dl_views WHERE view = 'lake'").first()
    assert (row.path, row.state, row.files, row.folders, row.listing) == (
        f"file:{lake}", "ready", 9, 4, "changed folders")
    assert row.last_refresh is not None and row.problem is None


def test_glob_recursive_false_and_hidden_files(spark, photos, tmp_path):
    lake = tmp_path / "lake"
    tree(photos[:4], lake, folders=2)
    shutil.copy(photos[4], lake / "top.png")
    shutil.copy(photos[5], lake / ".hidden.png")
    shutil.copy(photos[6], lake / "f000" / "_temporary.png")
    for view, expected in [({"recursive": False}, ["top.png"]),
                           ({"glob": "*.png"}, sorted(p.name for p in lake.rglob("*.png")
                                                      if not p.name[0] in "._")),
                           ({"path": str(lake / "f00*")},
                            sorted(p.name for p in lake.glob("f00*/*") if p.name[0] != "_"))]:
        sql_dl.bootstrap(spark, {"images": {"lake": {"path": str(lake), **view}}})
        assert sorted(names(spark.sql("SELECT path FROM lake").collect())) == expected, view


def test_root_files_have_no_label_and_views_list_image_extensions_by_default(spark, photos,
                                                                           tmp_path):
    lake = tmp_path / "mixed"
    (lake / "cats" / "young").mkdir(parents=True)
    shutil.copy(photos[0], lake / "top.PNG")  # extensions in any case
    shutil.copy(photos[1], lake / "cats" / "tom.jpeg")
    shutil.copy(photos[2], lake / "cats" / "young" / "kit.Jpg")
    (lake / "README.txt").write_text("not an image")
    (lake / "cats" / "notes").write_text("no extension")
    (lake / "cats" / "scan.tiff.bak").write_bytes(photos[3].read_bytes())
    images = {"top.PNG": None, "tom.jpeg": "cats", "kit.Jpg": "young"}
    others = {"README.txt": None, "notes": "cats", "scan.tiff.bak": "cats"}
    sql_dl.bootstrap(spark, {"images": {"lake": {"path": str(lake)}}})
    before = reads(spark)
    rows = spark.sql("SELECT path, label FROM lake").collect()
    assert {local(r.path).name: r.label for r in rows} == images
    assert spark.sql("SELECT count(*) FROM lake WHERE label IS NULL").first()[0] == 1
    assert reads(spark) == before  # labels come from paths: no image is read
    sql_dl.bootstrap(spark, {"images": {"lake": {"path": str(lake), "extensions": "all"}}})
    rows = spark.sql("SELECT path, label FROM lake").collect()
    assert {local(r.path).name: r.label for r in rows} == {**images, **others}
    sql_dl.bootstrap(spark, {"images": {"lake": {"path": str(lake), "extensions": ["txt"]}}})
    assert [tuple(r) for r in spark.sql("SELECT label, length FROM lake").collect()] == [
        (None, len("not an image"))]
    # a glob path: its files directly in the folder where the glob starts have no label
    sql_dl.bootstrap(spark, {"images": {"lake": {"path": str(lake / "*")}}})
    rows = spark.sql("SELECT path, label FROM lake").collect()
    assert {local(r.path).name: r.label for r in rows} == images
    # sql_dl.ml.read_images (Spark's binaryFile source) follows the same rules
    from sql_dl.ml import read_images

    rows = read_images(spark, str(lake)).select("path", "label").collect()
    assert {local(r.path).name: r.label for r in rows} == images


def test_an_object_store_catalog_is_refreshed_in_the_background(spark, photos, tmp_path):
    """Folders without modification times (object stores; here a local folder listed as one)
    are listed whole at each refresh; with max_staleness a query uses the catalog while it
    is young enough, and past half that age one is refreshed in the background."""
    lake = tmp_path / "lake"
    tree(photos[:4], lake, folders=2)
    spec = load_manifest(manifest(lake, max_staleness="2s")).images["lake"]
    spark.read.format(CATALOG_SOURCE).options(**catalog_options(spec),
                                              **{"sql_dl.listing": "full"}).load() \
        .createOrReplaceTempView("store")
    assert spark.sql("SELECT count(*) AS n FROM store").first().n == 4
    built = catalog(spark, lake)
    assert built["full_listing"] and built["folders_listed"] == 3
    shutil.copy(photos[4], lake / "f000" / "added.png")
    time.sleep(1.2)  # past half of max_staleness
    assert spark.sql("SELECT count(*) AS n FROM store").first().n == 4  # young enough: as is
    deadline = time.monotonic() + 30
    while catalog(spark, lake)["refreshed"] == built["refreshed"] and time.monotonic() < deadline:
        time.sleep(0.2)
    refreshed = catalog(spark, lake)
    assert refreshed["folders_listed"] == 6  # everything listed again, by the background
    assert spark.sql("SELECT count(*) AS n FROM store").first().n == 5
    assert catalog(spark, lake)["folders_listed"] == 6  # that query listed nothing


LOCAL_CLUSTER_SCRIPT = r"""
import json, sys
import sql_dl
lake, cnn, home = sys.argv[1:4]
spark = sql_dl.session(master="local-cluster[1,2,1024]", home=home,
                       conf={"spark.ui.enabled": "false"})
sql_dl.bootstrap(spark, {"preprocessors": {"p": {"size": [32, 32], "mode": "tf"}},
                         "models": {"cnn": {"path": cnn, "preprocessor": "p"}},
                         "images": {"lake": {"path": lake}}})
reads = spark.sparkContext._jvm.sql_dl.spark.catalog.ImageBytes.total
out = {"count": spark.sql("SELECT count(*) AS n FROM lake").first().n, "reads_0": reads()}
top = spark.sql("SELECT path, cnn(image) AS out FROM lake ORDER BY path DESC LIMIT 2").collect()
out["reads_top"] = reads() - out["reads_0"]
out["top"] = [[r.path, list(r.out)] for r in top]
every = spark.sql("SELECT path, cnn(image) AS out FROM lake").collect()
out["every"] = {r.path: list(r.out) for r in every}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_the_same_on_a_local_cluster(photos, cnn_file, tmp_path):
    """Executors in a JVM of their own (as sql-dl serve runs them): the counts of files read
    reach the driver, and the answers are Keras's."""
    import subprocess
    import sys

    files = tree(photos, tmp_path / "lake", folders=3)
    script = tmp_path / "cluster.py"
    script.write_text(LOCAL_CLUSTER_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "lake"), str(cnn_file),
                           str(tmp_path / "home")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert (out["count"], out["reads_0"], out["reads_top"]) == (len(files), 0, 2)
    expected = sorted(files, key=lambda f: f"file:{f}", reverse=True)[:2]
    assert [local(p).name for p, _ in out["top"]] == [f.name for f in expected]
    np.testing.assert_allclose(np.array([o for _, o in out["top"]]),
                               keras_outputs(cnn_file, expected, "tf"), **TOLERANCE)
    every = sorted(out["every"].items())
    assert [local(p).name for p, _ in every] == [f.name for f in files]
    np.testing.assert_allclose(np.array([o for _, o in every]),
                               keras_outputs(cnn_file, files, "tf"), **TOLERANCE)


def test_a_failed_refresh_changes_nothing_and_the_next_one_recovers(spark, photos, tmp_path):
    lake = tmp_path / "lake"
    tree(photos[:4], lake, folders=2)
    sql_dl.bootstrap(spark, manifest(lake))
    assert spark.sql("SELECT count(*) AS n FROM lake").first().n == 4
    home = Path(catalog(spark, lake)["catalog"].removeprefix("file:"))
    aside = tmp_path / "aside"
    home.rename(aside)
    home.write_text("not a folder")  # no segment can be written there, even by root
    shutil.copy(photos[4], lake / "f000" / "added.png")
    with pytest.raises(Exception, match="sql_dl cannot list the image folder"):
        spark.sql("SELECT count(*) AS n FROM lake").collect()
    assert catalog(spark, lake)["state"] == "stale"
    home.unlink()
    aside.rename(home)
    assert spark.sql("SELECT count(*) AS n FROM lake").first().n == 5
    assert sorted(r.path for r in spark.sql("SELECT path FROM lake").collect()) == sorted(
        f"file:{p}" for p in lake.rglob("*") if p.is_file())
    assert spark.sql("SELECT count(*) AS n FROM lake WHERE path LIKE '%added.png'").first().n == 1
