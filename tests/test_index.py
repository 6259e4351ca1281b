"""index/: DB, incremental indexer, FAISS cache, Searcher and CLI.

Most tests use a small deterministic FakeModel (no ONNX files needed); the CLI contract over tests/data runs
with the shipped default model and is skipped until that model is built.
"""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import index
from index import IndexErrorBase, PhotoDB, Searcher, build_index
from index.vectors import faiss_path
from dcclip_core.config import REPO_DIR
from dcclip_core.encoder import Encoder, PixelEncoder

from conftest import COLOURS, HAVE_MODEL, FakeModel, make_image, run_cli  # noqa: E402,F401  (shared fakes)

DATA = REPO_DIR / "tests" / "data"


GOOD = ["red.jpg", "green.png", "blue.webp", "sub/cat.jpg", "sub/deeper/yellow.gif", "sub/猫 😺 photo.jpg"]
BAD = ["empty.jpg", "notimage.png", "truncated.jpg"]


@pytest.fixture
def model():
    return FakeModel()


def rel(root, path):
    return str(Path(path).relative_to(root.resolve()))


# ---- DB ---------------------------------------------------------------------------------------------------
def test_photodb_schema_wal_meta(tmp_path):
    db = PhotoDB(tmp_path / "a.db")
    tables = set(db.db.table_names())
    assert {"images", "vectors", "errors", "labels", "meta"} <= tables
    assert db.get_meta("schema_version") == str(index.db.SCHEMA_VERSION)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cols = {c.name for c in db.db["images"].columns}
    assert {"id", "path", "size", "mtime", "sha256", "width", "height", "taken_at", "model_hash",
            "indexed_at"} <= cols
    db.close()
    db = PhotoDB(tmp_path / "a.db")                            # reopen: no error, same version
    assert db.get_meta("schema_version") == str(index.db.SCHEMA_VERSION)
    db.set_meta("schema_version", "99")
    db.close()
    with pytest.raises(IndexErrorBase):
        PhotoDB(tmp_path / "a.db")
    with pytest.raises(IndexErrorBase):
        PhotoDB(tmp_path / "missing.db", create=False)


def test_import_has_no_torch():
    r = subprocess.run([sys.executable, "-c", "import index, index.__main__, sys; assert 'torch' not in sys.modules"],
                       cwd=REPO_DIR, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---- indexer ----------------------------------------------------------------------------------------------
def test_build_incremental_lifecycle(photos, tmp_path, model):
    dbp = tmp_path / "idx.db"
    seen = []
    st = build_index(photos, dbp, model=model, progress=lambda d, t, p: seen.append((d, t, p)), batch_size=4)
    assert (st["indexed"], st["errors"], st["images"], st["skipped"], st["moved"], st["removed"]) == (6, 3, 6, 0, 0, 0)
    assert isinstance(st["seconds"], float)
    assert seen and seen[-1][0] == seen[-1][1] == 9 and [d for d, _, _ in seen] == list(range(1, 10))
    assert model.encoded == 6

    db = PhotoDB(dbp)
    paths = {rel(photos, r["path"]) for r in db.query("SELECT path FROM images")}
    assert paths == set(GOOD)
    assert all(os.path.isabs(r["path"]) for r in db.query("SELECT path FROM images"))
    errs = {rel(photos, e["path"]): e["reason"] for e in db.list_errors()}
    assert set(errs) == set(BAD)
    assert "0 bytes" in errs["empty.jpg"]
    assert "not an image" in errs["notimage.png"]
    assert "truncated" in errs["truncated.jpg"] or "corrupt" in errs["truncated.jpg"]
    row = db.image_by_path(str(photos.resolve() / "red.jpg"))
    assert (row["width"], row["height"]) == (64, 48) and len(row["sha256"]) == 64 and row["model_hash"] == "fake-v1"
    assert db.model_meta() == {"model_id": "fake-fake-v1", "model_hash": "fake-v1", "dim": 16}
    assert db.vector_stats("fake-v1")[0] == 6
    db.close()
    assert faiss_path(dbp).is_file()

    # second run: nothing to do (bad files unchanged are not retried either)
    st = build_index(photos, dbp, model=model)
    assert (st["indexed"], st["skipped"], st["errors"], st["images"]) == (0, 9, 0, 6)
    assert model.encoded == 6

    # modified content -> re-embedded in place (same id)
    db = PhotoDB(dbp)
    red_id = db.image_by_path(str(photos.resolve() / "red.jpg"))["id"]
    make_image(photos / "red.jpg", (200, 10, 10), 11)
    os.utime(photos / "red.jpg", (time.time() + 5, time.time() + 5))
    st = build_index(photos, dbp, model=model)
    assert (st["indexed"], st["skipped"]) == (1, 8) and model.encoded == 7
    assert db.image_by_path(str(photos.resolve() / "red.jpg"))["id"] == red_id

    # touched but identical content -> stat refreshed, not re-embedded
    os.utime(photos / "green.png", (time.time() + 10, time.time() + 10))
    st = build_index(photos, dbp, model=model)
    assert (st["indexed"], st["updated"]) == (0, 1) and model.encoded == 7
    assert build_index(photos, dbp, model=model)["skipped"] == 9

    # renamed/moved -> same row, new path, no embedding
    green_id = db.image_by_path(str(photos.resolve() / "green.png"))["id"]
    os.rename(photos / "green.png", photos / "sub" / "green moved.png")
    st = build_index(photos, dbp, model=model)
    assert (st["moved"], st["indexed"], st["removed"], st["images"]) == (1, 0, 0, 6) and model.encoded == 7
    assert db.image_by_path(str(photos.resolve() / "sub" / "green moved.png"))["id"] == green_id
    assert db.image_by_path(str(photos.resolve() / "green.png")) is None

    # deleted -> removed (row, vector)
    os.remove(photos / "blue.webp")
    st = build_index(photos, dbp, model=model)
    assert (st["removed"], st["images"]) == (1, 5)
    assert db.vector_stats("fake-v1")[0] == 5
    assert db.execute("SELECT COUNT(*) FROM vectors WHERE image_id NOT IN (SELECT id FROM images)").fetchone()[0] == 0

    # a bad file fixed later -> indexed and its error row deleted
    make_image(photos / "notimage.png", COLOURS["blue"], 12, fmt="PNG")
    st = build_index(photos, dbp, model=model)
    assert st["indexed"] == 1
    assert {rel(photos, e["path"]) for e in db.list_errors()} == {"empty.jpg", "truncated.jpg"}
    # a bad file removed -> its error row goes too
    os.remove(photos / "empty.jpg")
    build_index(photos, dbp, model=model)
    assert {rel(photos, e["path"]) for e in db.list_errors()} == {"truncated.jpg"}
    assert db.integrity_check() == "ok"
    db.close()


def test_changed_model_reembeds_everything(photos, tmp_path, model):
    dbp = tmp_path / "idx.db"
    build_index(photos, dbp, model=model)
    db = PhotoDB(dbp)
    ids = {r["path"]: r["id"] for r in db.query("SELECT id, path FROM images")}
    m2 = FakeModel(hash="fake-v2")
    st = build_index(photos, dbp, model=m2)
    assert st["indexed"] == 6 and m2.encoded == 6 and st["images"] == 6
    assert {r["path"]: r["id"] for r in db.query("SELECT id, path FROM images")} == ids
    assert db.model_meta()["model_hash"] == "fake-v2"
    assert db.vector_stats("fake-v2")[0] == 6 and db.vector_stats("fake-v1")[0] == 0
    assert Searcher(dbp, model=m2).search("red", k=1)[0]["path"].endswith("red.jpg")
    db.close()


def test_missing_root_and_db(tmp_path, model):
    with pytest.raises(IndexErrorBase):
        build_index(tmp_path / "nope", tmp_path / "x.db", model=model)
    with pytest.raises(IndexErrorBase):
        Searcher(tmp_path / "nope.db", model=model)
    assert not (tmp_path / "nope.db").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads everything")
def test_permission_denied_recorded(photos, tmp_path, model):
    p = photos / "red.jpg"
    p.chmod(0)
    try:
        st = build_index(photos, tmp_path / "idx.db", model=model)
    finally:
        p.chmod(0o644)
    assert st["images"] == 5
    errs = {rel(photos, e["path"]): e["reason"] for e in PhotoDB(tmp_path / "idx.db").list_errors()}
    assert errs["red.jpg"] == "permission denied"
    assert build_index(photos, tmp_path / "idx.db", model=model)["indexed"] == 1   # chmod changes ctime: retried


def test_file_vanishing_mid_run_is_recorded(photos, tmp_path, model):
    victim = photos / "sub" / "cat.jpg"

    def progress(done, total, path):
        if victim.exists():
            victim.unlink()                                       # vanishes after the scan, before decoding

    st = build_index(photos, tmp_path / "idx.db", model=model, progress=progress, workers=1, batch_size=2)
    assert st["images"] == 5
    errs = {rel(photos, e["path"]): e["reason"] for e in PhotoDB(tmp_path / "idx.db").list_errors()}
    assert "vanished" in errs.get("sub/cat.jpg", "")


# ---- search -----------------------------------------------------------------------------------------------
@pytest.fixture
def built(photos, tmp_path, model):
    dbp = tmp_path / "idx.db"
    build_index(photos, dbp, model=model)
    return photos, dbp


def test_search_ranking_threshold_offset(built, model):
    photos, dbp = built
    s = Searcher(dbp, model=model)
    for q, name in [("red", "red.jpg"), ("a cat", "cat.jpg"), ("猫", "cat.jpg"), ("green", "green.png")]:
        res = s.search(q, k=6)
        assert Path(res[0]["path"]).name == name, (q, res)
        scores = [r["score"] for r in res]
        assert scores == sorted(scores, reverse=True) and all(isinstance(x, float) for x in scores)
    r = s.search("red", k=3)[0]
    assert set(r) >= {"path", "score", "width", "height", "size", "mtime", "taken_at"}
    assert (r["width"], r["height"]) == (64, 48) and r["size"] == (photos / "red.jpg").stat().st_size
    full = s.search("red", k=10)
    assert len(full) == 6
    assert [x["path"] for x in s.search("red", k=2, offset=2)] == [x["path"] for x in full[2:4]]
    assert s.search("red", k=5, offset=10) == []
    thr = (full[1]["score"] + full[2]["score"]) / 2
    assert [x["path"] for x in s.search("red", k=10, threshold=thr)] == [x["path"] for x in full[:2]]
    assert s.search("red", k=0) == []


def test_search_image_and_similar(built, model):
    photos, dbp = built
    s = Searcher(dbp, model=model)
    q = make_image(photos.parent / "query.png", COLOURS["yellow"], 99)
    for image in (str(q), q, q.read_bytes(), Image.open(q)):
        assert Path(s.search_image(image, k=1)[0]["path"]).name == "yellow.gif"
    sim = s.similar(photos / "sub" / "cat.jpg", k=3)
    assert len(sim) == 3 and all(Path(r["path"]).name != "cat.jpg" for r in sim)
    assert Path(sim[0]["path"]).name in ("yellow.gif", "red.jpg")
    with pytest.raises(IndexErrorBase):
        s.similar(photos / "empty.jpg")
    from dcclip_core import ImageLoadError
    with pytest.raises(ImageLoadError):
        s.search_image(photos / "notimage.png")


def test_searcher_follows_db_changes(built, model):
    photos, dbp = built
    s = Searcher(dbp, model=model)
    assert len(s.search("red", k=50)) == 6
    make_image(photos / "new" / "red2.jpg", (240, 20, 20), 21)
    build_index(photos, dbp, model=model)
    res = s.search("red", k=50)
    assert len(res) == 7 and {Path(r["path"]).name for r in res[:2]} == {"red.jpg", "red2.jpg"}
    os.remove(photos / "red.jpg")
    build_index(photos, dbp, model=model)
    res = s.search("red", k=50)
    assert len(res) == 6 and Path(res[0]["path"]).name == "red2.jpg"
    st = s.stats()
    assert (st["images"], st["errors"], st["dim"], st["model_hash"]) == (6, 3, 16, "fake-v1")
    assert {Path(e["path"]).name for e in st["error_list"]} == {"empty.jpg", "notimage.png", "truncated.jpg"}
    assert all(set(e) >= {"path", "reason", "time"} for e in st["error_list"])


def test_faiss_file_is_rebuilt_when_missing_corrupt_or_stale(built, model):
    photos, dbp = built
    fp = faiss_path(dbp)
    s = Searcher(dbp, model=model)
    s.search("red")
    assert s.loaded_from_file
    fp.unlink()
    s2 = Searcher(dbp, model=model)
    assert Path(s2.search("red", k=1)[0]["path"]).name == "red.jpg" and not s2.loaded_from_file
    assert fp.is_file()                                             # written again
    assert Searcher(dbp, model=model).search("red", k=1) and fp.is_file()
    fp.write_bytes(b"garbage" * 100)                                # corrupt
    s3 = Searcher(dbp, model=model)
    assert Path(s3.search("red", k=1)[0]["path"]).name == "red.jpg" and not s3.loaded_from_file
    # stale: an old file copied over a newer DB state
    old = fp.read_bytes()
    make_image(photos / "red3.jpg", (250, 5, 5), 31)
    build_index(photos, dbp, model=model)
    fp.write_bytes(old)
    s4 = Searcher(dbp, model=model)
    assert len(s4.search("red", k=50)) == 7 and not s4.loaded_from_file
    fp.write_bytes(old[: len(old) // 2])                            # truncated with a valid header
    s5 = Searcher(dbp, model=model)
    assert len(s5.search("red", k=50)) == 7


def test_duplicates(built, model):
    photos, dbp = built
    shutil.copy(photos / "red.jpg", photos / "sub" / "red copy.jpg")
    build_index(photos, dbp, model=model)
    pairs = Searcher(dbp, model=model).duplicates(threshold=0.99)
    names = [{Path(p["a"]).name, Path(p["b"]).name} for p in pairs]
    assert {"red.jpg", "red copy.jpg"} in names
    assert pairs[0]["score"] >= 0.99 and all(p["a"] != p["b"] for p in pairs)


def test_search_while_indexing(photos, tmp_path, model):
    dbp = tmp_path / "idx.db"
    build_index(photos, dbp, model=model)
    for i in range(40):
        make_image(photos / "more" / f"{i:03d}.png", COLOURS["green"], 100 + i, size=(32, 32))
    errors, stop = [], threading.Event()

    def searcher():
        s = Searcher(dbp, model=model)
        while not stop.is_set():
            try:
                res = s.search("green", k=5)
                assert res and res == sorted(res, key=lambda r: -r["score"])
            except Exception as e:                                 # pragma: no cover - reported below
                errors.append(repr(e))

    threads = [threading.Thread(target=searcher) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        st = build_index(photos, dbp, model=model, batch_size=4)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert st["indexed"] == 40 and st["images"] == 46


def test_cli_contract_with_fake_model(photos, tmp_path, model, monkeypatch, capsys):
    dbp = tmp_path / "cli.db"
    code, out, err = run_cli(["build", photos, "--db", dbp, "--json", "--quiet"], model, monkeypatch, capsys)
    assert code == 0 and json.loads(out)["images"] == 6
    code, out, _ = run_cli(["search", "--db", dbp, "--k", 3, "--json", "猫", "red"], model, monkeypatch, capsys)
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and [x["query"] for x in lines] == ["猫", "red"]
    assert Path(lines[0]["results"][0]["path"]).name == "cat.jpg" and len(lines[0]["results"]) == 3
    assert all(isinstance(r["score"], float) and isinstance(r["path"], str) for r in lines[1]["results"])
    q = make_image(tmp_path / "q.png", COLOURS["blue"], 50)
    code, out, _ = run_cli(["search", "--db", dbp, "--k", 2, "--json", "--image", q], model, monkeypatch, capsys)
    line = json.loads(out)
    assert code == 0 and line["query"] == str(q) and Path(line["results"][0]["path"]).name == "blue.webp"
    code, out, _ = run_cli(["search", "--db", dbp, "red"], model, monkeypatch, capsys)
    assert code == 0 and "red.jpg" in out
    shutil.copy(photos / "red.jpg", photos / "red2.jpg")
    code, out, err = run_cli(["build", photos, "--db", dbp], model, monkeypatch, capsys)
    assert code == 0 and "1 indexed" in out and "3 errors" not in out and "7 images" in out
    code, out, _ = run_cli(["duplicates", "--db", dbp, "--json"], model, monkeypatch, capsys)
    pairs = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and pairs and set(pairs[0]) == {"a", "b", "score"}
    assert {Path(pairs[0]["a"]).name, Path(pairs[0]["b"]).name} == {"red.jpg", "red2.jpg"}
    code, out, _ = run_cli(["search", "--db", dbp, "--json", "purple"], model, monkeypatch, capsys)
    assert "猫 😺 photo.jpg" in out
    code, out, err = run_cli(["search", "--db", dbp, "--json", "--image", photos / "empty.jpg"], model,
                             monkeypatch, capsys)
    assert code == 2 and "0 bytes" in err


@pytest.mark.slow
def test_cli_stats_and_errors_subprocess(built, tmp_path):
    photos, dbp = built

    def run(*args):
        return subprocess.run([sys.executable, "-m", "index", *map(str, args)], cwd=REPO_DIR, capture_output=True,
                              text=True, timeout=60)

    r = run("stats", "--db", dbp, "--json")                          # stats needs no model
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["images"] == 6 and st["errors"] == 3 and isinstance(st["error_list"], list)
    r = run("stats", "--db", dbp)
    assert r.returncode == 0 and "notimage.png" in r.stdout and "empty" in r.stdout
    r = run("stats", "--db", tmp_path / "missing.db", "--json")
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
    r = run("search", "--db", tmp_path / "missing.db", "--json", "cat")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run("build", tmp_path / "no such dir", "--db", tmp_path / "x.db")
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.db").exists()


# ---- the real model (skipped until assets/models/default is built) ---------------------------------------
needs_model = pytest.mark.skipif(not HAVE_MODEL, reason="default model not built")
needs_data = pytest.mark.skipif(not (DATA / "cat.jpg").is_file(), reason="tests/data not there yet")


@pytest.mark.slow
@needs_model
@needs_data
def test_real_model_cli_contract(tmp_path):
    dbp = tmp_path / "real.db"

    def run(*args):
        return subprocess.run([sys.executable, "-m", "index", *map(str, args)], cwd=REPO_DIR, capture_output=True,
                              text=True, timeout=600)

    photos = tmp_path / "照片 photos"                  # real photos + bad files, Chinese/space folder name
    photos.mkdir()
    for name in ("cat.jpg", "coffee.jpg", "rocket.jpg", "not_an_image.jpg", "truncated.jpg", "empty.jpg"):
        shutil.copy(DATA / name, photos / name)
    r = run("build", photos, "--db", dbp)
    assert r.returncode == 0, r.stderr
    r = run("search", "--db", dbp, "--k", 3, "--json", "猫", "a cat")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["query"] for x in lines] == ["猫", "a cat"]
    for line in lines:
        assert Path(line["results"][0]["path"]).name == "cat.jpg", line
        scores = [x["score"] for x in line["results"]]
        assert scores == sorted(scores, reverse=True)
    r = run("search", "--db", dbp, "--k", 2, "--json", "--image", DATA / "cat.jpg")
    assert r.returncode == 0 and Path(json.loads(r.stdout)["results"][0]["path"]).name == "cat.jpg"
    r = run("stats", "--db", dbp, "--json")
    st = json.loads(r.stdout)
    assert r.returncode == 0 and isinstance(st["images"], int) and isinstance(st["errors"], int)
    assert st["images"] == 3 and st["errors"] == 3
    r = run("duplicates", "--db", dbp, "--json")
    assert r.returncode == 0
    for x in r.stdout.splitlines():
        assert set(json.loads(x)) == {"a", "b", "score"}


@needs_model
@needs_data
def test_real_model_searcher(tmp_path):
    import dcclip_core
    m = dcclip_core.load()
    for name in ("cat.jpg", "coffee.jpg", "rocket.jpg"):
        shutil.copy(DATA / name, tmp_path / name)
    st = build_index(tmp_path, tmp_path / "r.db", model=m)
    assert st["images"] == 3
    s = Searcher(tmp_path / "r.db", model=m)
    for q, name in [("一只猫", "cat.jpg"), ("a cup of coffee", "coffee.jpg"), ("火箭", "rocket.jpg")]:
        res = s.search(q, k=3)
        assert Path(res[0]["path"]).name == name, (q, res)
    assert s.stats()["model_hash"] == m.info["hash"]


def test_exif_date_and_filters(built, model):
    photos, dbp = built
    for name, date in [("old red.jpg", "2019:06:01 10:00:00"), ("new red.jpg", "2023:12:31 23:59:59")]:
        im = Image.new("RGB", (40, 30), (230, 10, 10))
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9003] = date
        (photos / "dated").mkdir(exist_ok=True)
        im.save(photos / "dated" / name, exif=exif)
    build_index(photos, dbp, model=model)
    s = Searcher(dbp, model=model)
    res = s.search("red", k=50, folder=photos / "dated")
    assert {Path(r["path"]).name for r in res} == {"old red.jpg", "new red.jpg"}
    byname = {Path(r["path"]).name: r for r in res}
    assert byname["old red.jpg"]["taken_at"] == "2019-06-01T10:00:00"
    assert [Path(r["path"]).name for r in s.search("red", k=50, date_to="2019-06-01")] == ["old red.jpg"]
    assert [Path(r["path"]).name for r in s.search("red", k=50, date_from="2023-12-31", date_to="2023-12-31")] \
        == ["new red.jpg"]
    import datetime
    assert len(s.search("red", k=50, date_from=datetime.date(2000, 1, 1))) == 8       # mtime counts when no EXIF
    assert s.search("red", k=50, folder=photos / "nothing here") == []
    assert {rel(photos, r["path"]) for r in s.search("red", k=50, folder=photos / "sub")} == \
        {"sub/cat.jpg", "sub/deeper/yellow.gif", "sub/猫 😺 photo.jpg"}                 # (the loop is not followed)


KILL_SCRIPT = """
import sys, time
sys.path[:0] = [{repo!r}, {tests!r}]
from conftest import FakeModel
from index import build_index

class Slow(FakeModel):
    def encode_pixels(self, px):
        time.sleep(0.05)
        return super().encode_pixels(px)

print("start", flush=True)
build_index({root!r}, {db!r}, model=Slow(), batch_size=4, workers=2)
"""


@pytest.mark.slow
def test_kill_9_mid_run_loses_at_most_a_batch(tmp_path, model):
    import random
    import signal
    root = tmp_path / "many"
    for i in range(120):
        make_image(root / f"d{i % 3}" / f"{i:03d}.png", (i * 2 % 255, 100, 200 - i), i, size=(32, 32))
    dbp = tmp_path / "k.db"
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(repo=str(REPO_DIR), tests=str(REPO_DIR / "tests"), root=str(root), db=str(dbp)))
    rng = random.Random(0)
    partial = []
    for _ in range(3):
        p = subprocess.Popen([sys.executable, str(script)], cwd=REPO_DIR, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        assert p.stdout.readline().strip() == b"start", p.stderr.read().decode()   # imports done
        time.sleep(rng.uniform(0.2, 0.6))
        p.send_signal(signal.SIGKILL)
        assert p.wait() in (0, -signal.SIGKILL)
        if dbp.exists():
            db = PhotoDB(dbp)
            assert db.integrity_check() == "ok"
            n, nv = db.count_images(), db.vector_stats("fake-v1")[0]
            assert n == nv                                          # rows and vectors committed together
            partial.append(n)
            db.close()
    assert any(0 < n < 120 for n in partial), partial               # at least one kill landed mid-run
    st = build_index(root, dbp, model=model)
    assert st["images"] == 120 and st["errors"] == 0 and st["indexed"] == 120 - partial[-1]
    db = PhotoDB(dbp)
    assert db.integrity_check() == "ok" and db.vector_stats("fake-v1")[0] == 120
    assert db.execute("SELECT COUNT(DISTINCT path) FROM images").fetchone()[0] == 120
    assert len(Searcher(dbp, model=model).search("red", k=500)) == 120


# ---- pipeline profile and encoder threads -----------------------------------------------------------------
def test_profile_counts_every_stage_once_per_decoded_file(photos, tmp_path, model):
    from index.scan import STAGES
    prof = {}
    st = build_index(photos, tmp_path / "p.db", model=model, profile=prof)
    assert st["indexed"] == len(GOOD) and prof["decoded"] == len(GOOD)
    assert set(prof["cpu_s"]) == set(STAGES) and all(v >= 0 for v in prof["cpu_s"].values())
    assert prof["cpu_s"]["decode"] > 0 and prof["encode_batches"] >= 1 and prof["commit_s"] > 0
    prof2 = {}
    st2 = build_index(photos, tmp_path / "p.db", model=model, profile=prof2)      # nothing changed: no decode
    assert st2["skipped"] == len(GOOD) + len(BAD) and prof2["decoded"] == 0 and prof2["cpu_s"]["decode"] == 0


def test_fakes_are_encoders_and_identity_comes_from_info():
    """The index takes any dcclip_core.Encoder (building one: a PixelEncoder) and reads its identity from
    ``info`` (id, hash, dims, image_size) alone."""
    from index.indexer import model_identity
    m = FakeModel()
    assert isinstance(m, Encoder) and isinstance(m, PixelEncoder)
    assert model_identity(m) == ("fake-fake-v1", "fake-v1", 16, 32)
    no_dims = type("NoDims", (), {"info": {"id": "x", "hash": "h", "dim": 16}})()
    with pytest.raises(ValueError, match="dims"):
        model_identity(no_dims)


@pytest.mark.skipif(not HAVE_MODEL, reason="default model not built")
def test_encoder_threads_swap_keeps_the_model_identity(tmp_path):
    import dcclip_core
    from index.indexer import model_identity, with_threads
    m2 = dcclip_core.load(threads=2)
    m1 = with_threads(m2, 1)
    assert m1.threads == 1 and m1 is with_threads(m2, 1) and with_threads(m1, 1) is m1
    assert model_identity(m1) == model_identity(m2) and with_threads(m2, None) is m2
    fake = FakeModel()
    assert with_threads(fake, 1) is fake                                      # not a dcclip_core Model: as given
    px = np.stack([m1.preprocess(DATA / "cat.jpg")])
    assert np.allclose(m1.encode_pixels(px), m2.encode_pixels(px), atol=1e-5)
