"""index/: results a user can trust — corrections no labelling run erases, copying into class folders that never
duplicates, one definition of a duplicate (photo detail and report agree), CLI search and label-table polish.
Real SQLite files; the FakeModel of test_index for speed, the shipped model where the embedding matters."""
import csv
import json
import shutil
import sqlite3
import unicodedata
from pathlib import Path

import pytest
from PIL import Image

from index import PhotoDB, Searcher, build_index, export_labels, label_index, labels_of
from index.labels import copy_to_folders, label_sets, remove_paths, set_label
from conftest import COLOURS, HAVE_MODEL, FakeModel, make_image, run_cli, scene
from dcclip_core.config import REPO_DIR

DEMO = REPO_DIR / "assets" / "demo"


@pytest.fixture
def labelled(photos, tmp_path):
    model = FakeModel()
    dbp = tmp_path / "t.db"
    build_index(photos, dbp, model=model)
    label_index(dbp, "red, green, blue, 猫", label_set="s", model=model)
    return photos, dbp, model


def shown(dbp, label_set="s", **kw):
    """{file name: (label, rank, score, source)} of the rank-1 rows a reader of the set sees."""
    return {Path(r["path"]).name: (r["label"], r["rank"], r["score"], r.get("source"))
            for r in labels_of(dbp, label_set, top_only=True, **kw)}


# ---- 1. corrections are facts -----------------------------------------------------------------------------
def test_correction_survives_every_labelling_run(labelled):
    photos, dbp, model = labelled
    red = str(photos.resolve() / "red.jpg")
    assert shown(dbp)["red.jpg"][0] == "red"
    assert set_label(dbp, "s", [red], "番茄") == 1
    runs = [dict(labels="red, green, blue, 猫, dog"),                         # the same labels plus one
            dict(labels="红, 绿, 蓝, cat"),                                     # typed in the other language
            dict(labels="red, green, blue, 猫", relabel=True),
            dict(labels="red, green, blue, 猫", top=2)]
    for kw in runs:
        res = label_index(dbp, label_set="s", model=model, **kw)
        assert res["images"] == 6 and res["counts"]["番茄"] == 1, kw          # the summary counts it
        assert shown(dbp)["red.jpg"] == ("番茄", 1, 1.0, "manual"), kw
        rows = [r for r in labels_of(dbp, "s") if r["path"] == red]           # machine rows of it: hidden
        assert [(r["label"], r["source"], r["cosine"]) for r in rows] == [("番茄", "manual", None)], kw
        others = {v[3] for k, v in shown(dbp).items() if k != "red.jpg"}
        assert others == {"zero-shot:fake-v1"}, kw
    from index.labels import corrections_of, remove_correction
    assert corrections_of(dbp, "s") == {red: "番茄"} and corrections_of(dbp, "nope") == {}
    assert label_sets(dbp)[0]["images"] == 6

    # undo: the machine label of the last run shows again (it was written for the corrected photo too)
    assert remove_correction(dbp, "s", [red, "/not/indexed.jpg"]) == 1
    assert shown(dbp)["red.jpg"][0] == "red" and shown(dbp)["red.jpg"][3] == "zero-shot:fake-v1"
    assert [r["rank"] for r in labels_of(dbp, "s") if r["path"] == red] == [1, 2]      # top=2 run
    assert corrections_of(dbp, "s") == {} and remove_correction(dbp, "s", [red]) == 0


def test_corrected_label_in_counts_export_and_removal(labelled, tmp_path):
    photos, dbp, model = labelled
    red, green = (str(photos.resolve() / n) for n in ("red.jpg", "green.png"))
    before = {n: v[0] for n, v in shown(dbp).items()}
    assert before["red.jpg"] == "red" and before["green.png"] == "green" and before["blue.webp"] == "blue"
    blue = {n for n, lb in before.items() if lb == "blue"} | {"red.jpg", "green.png"}
    set_label(dbp, "s", [red, green], "blue")
    db = PhotoDB(dbp)
    counts = db.label_counts("s")
    assert counts["blue"] == len(blue) and "red" not in counts and "green" not in counts
    assert sum(counts.values()) == db.labelled_image_count("s") == 6
    assert {Path(r["path"]).name for r in db.label_rows("s", label="blue")} == blue
    assert db.label_rows("s", label="red") == [] and db.label_rows("s", label="green") == []   # machine rows hidden
    db.close()
    assert label_index(dbp, "red, green, blue, 猫", label_set="s", model=model)["counts"]["blue"] == len(blue)

    n = export_labels(dbp, "s", "csv", tmp_path / "e.csv")
    rows = list(csv.DictReader((tmp_path / "e.csv").open(encoding="utf-8-sig")))
    assert n == 6 and list(rows[0]) == ["path", "label", "score", "cosine", "rank", "source"]
    by = {Path(r["path"]).name: r for r in rows}
    assert (by["red.jpg"]["label"], by["red.jpg"]["score"], by["red.jpg"]["rank"], by["red.jpg"]["source"]) == \
        ("blue", "1.0", "1", "manual")
    assert by["blue.webp"]["source"] == "zero-shot:fake-v1"
    export_labels(dbp, "s", "json", tmp_path / "e.json")
    data = {Path(d["path"]).name: d for d in json.loads((tmp_path / "e.json").read_text("utf-8"))}
    assert (data["green.png"]["label"], data["green.png"]["source"], data["green.png"]["score"]) == \
        ("blue", "manual", 1.0)

    from index.labels import write_label_rows                                # the same writer for rows in hand
    assert write_label_rows([{**rows[0], "certainty": 0.5}], "csv", tmp_path / "w.csv") == 1
    assert (tmp_path / "w.csv").read_text("utf-8-sig").splitlines()[0] == "path,label,score,cosine,rank,source"

    res = copy_to_folders(dbp, "s", tmp_path / "sorted")
    assert res["folders"]["blue"] == len(blue) and (tmp_path / "sorted" / "blue" / "red.jpg").is_file()

    from index.labels import corrections_of
    remove_paths(dbp, [red])                                                  # the photo goes, its correction too
    assert corrections_of(dbp, "s") == {green: "blue"}


def test_v2_database_moves_manual_labels_to_corrections(tmp_path):
    from index import db as dbm
    path = tmp_path / "v2.db"
    con = sqlite3.connect(path)
    for stmt in dbm._SCHEMA_V1 + dbm._MIGRATIONS[2]:
        con.execute(stmt)
    con.execute("INSERT INTO meta VALUES ('schema_version', '2'), ('generation', '5'), "
                "('label_set:s', '{\"labels\": [\"cat\", \"dog\"], \"model_hash\": \"h\", \"top\": 1}')")
    con.executemany("INSERT INTO images(id, path) VALUES (?, ?)", [(1, "/p/a.jpg"), (2, "/p/b.jpg"), (3, "/p/c.jpg")])
    con.executemany("INSERT INTO labels(image_id, label_set, label, score, source, cosine, rank, time) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(1, "s", "dog", 1.0, "manual", None, 1, "2025-01-02T00:00:00+00:00"),
                     (2, "s", "cat", 0.8, "zero-shot:h", 0.3, 1, "2025-01-01T00:00:00+00:00"),
                     (3, "s", "cat", 0.9, "zero-shot:h", 0.31, 1, "2025-01-01T00:00:00+00:00"),
                     (3, "t", "猫", 1.0, "manual", None, 1, "2025-01-03T00:00:00+00:00")])
    con.commit()
    con.close()
    db = PhotoDB(path)
    assert db.get_meta("schema_version") == str(dbm.SCHEMA_VERSION) == "6" and db.generation() == 5
    assert "concepts" in {r[1] for r in db.execute("PRAGMA table_info(vectors)")}      # v4: concept weights
    assert db.query("SELECT image_id, label_set, label, time FROM corrections ORDER BY image_id") == [
        {"image_id": 1, "label_set": "s", "label": "dog", "time": "2025-01-02T00:00:00+00:00"},
        {"image_id": 3, "label_set": "t", "label": "猫", "time": "2025-01-03T00:00:00+00:00"}]
    assert db.query("SELECT COUNT(*) AS n FROM labels WHERE source='manual'") == [{"n": 0}]
    assert [(r["path"], r["label"], r["source"]) for r in db.label_rows("s")] == [
        ("/p/a.jpg", "dog", "manual"), ("/p/b.jpg", "cat", "zero-shot:h"), ("/p/c.jpg", "cat", "zero-shot:h")]
    assert db.corrections("t") == {"/p/c.jpg": "猫"} and db.labelled_image_ids("s") == {2, 3}
    db.execute("DELETE FROM images WHERE id=1")                              # ON DELETE CASCADE
    assert db.corrections("s") == {}
    db.close()
    assert PhotoDB(path).get_meta("schema_version") == "6"                     # idempotent


# ---- 2. copying into class folders is idempotent ---------------------------------------------------------
def test_copy_to_folders_is_idempotent(labelled, tmp_path):
    photos, dbp, model = labelled
    out = tmp_path / "分类"
    (out / "red").mkdir(parents=True)
    (out / "red" / "red.jpg").write_bytes(b"another file, same name")
    first = copy_to_folders(dbp, "s", out)
    assert (first["copied"], first["already"], sum(first["folders"].values())) == (6, 0, 6)
    assert (out / "red" / "red (2).jpg").read_bytes() == (photos / "red.jpg").read_bytes()
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for _ in range(2):
        again = copy_to_folders(dbp, "s", out)
        assert (again["copied"], again["already"], again["folders"]) == (0, 6, first["folders"])
        assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == files
    assert (out / "red" / "red.jpg").read_bytes() == b"another file, same name"   # never overwritten

    # a photo changed since it was copied (and since it was indexed): its new content is copied beside
    make_image(photos / "green.png", COLOURS["green"], 77, size=(70, 50))
    res = copy_to_folders(dbp, "s", out)
    assert (res["copied"], res["already"]) == (1, 5)
    assert (out / "green" / "green (2).png").read_bytes() == (photos / "green.png").read_bytes()
    assert copy_to_folders(dbp, "s", out)["copied"] == 0
    blue = str(photos.resolve() / "blue.webp")                               # another folder for some photos
    res = copy_to_folders(dbp, "s", out, relabel={blue: "not sure"})
    assert (res["copied"], res["already"], res["folders"]["not sure"]) == (1, 5, 1)
    assert (out / "not sure" / "blue.webp").read_bytes() == (photos / "blue.webp").read_bytes()


# ---- 3. one definition of a duplicate --------------------------------------------------------------------
needs_model = pytest.mark.skipif(not HAVE_MODEL, reason="default model not built")


@pytest.fixture(scope="module")
def real_model():
    import dcclip_core
    return dcclip_core.load()


@pytest.fixture(scope="module")
def dup_set(tmp_path_factory, real_model):
    """The cat, a byte-identical and a resized + recompressed copy, two other framings of the same cat (the
    embedding puts them >= 0.99 from it: same class, different photos), and two unrelated photos."""
    root = tmp_path_factory.mktemp("dups") / "照片"
    (root / "copies").mkdir(parents=True)
    cat = root / "cat.jpg"
    shutil.copy(DEMO / "cat_chelsea.jpg", cat)
    shutil.copy(cat, root / "copies" / "cat identical.jpg")
    im = Image.open(cat).convert("RGB")
    w, h = im.size
    im.resize((w // 2, h // 2)).save(root / "copies" / "cat small.jpg", quality=70)
    im.crop((0, 0, int(w * .7), h)).save(root / "cat left.jpg", quality=90)
    im.crop((int(w * .3), 0, w, h)).save(root / "cat right.jpg", quality=90)
    for name in ("coffee.jpg", "rocket.jpg"):
        shutil.copy(DEMO / name, root / name)
    dbp = root.parent / "d.db"
    build_index(root, dbp, model=real_model)
    return root, dbp


def _pairs_by_photo(pairs):
    by: dict[str, dict[str, tuple]] = {}
    for p in pairs:
        by.setdefault(p["a"], {})[p["b"]] = (p["score"], p["match"])
        by.setdefault(p["b"], {})[p["a"]] = (p["score"], p["match"])
    return by


@needs_model
def test_duplicates_are_identical_or_near_only(dup_set, real_model, monkeypatch, capsys):
    root, dbp = dup_set
    name = lambda p: Path(p).name  # noqa: E731
    with Searcher(dbp, model=real_model) as s:
        pairs = s.duplicates()
        assert {frozenset((name(p["a"]), name(p["b"]))): p["match"] for p in pairs} == {
            frozenset({"cat.jpg", "cat identical.jpg"}): "identical",
            frozenset({"cat.jpg", "cat small.jpg"}): "near",
            frozenset({"cat identical.jpg", "cat small.jpg"}): "near"}
        assert [g["size"] for g in s.duplicate_groups()] == [3]
        # other framings of the cat are this close by the embedding alone: "similar", only when asked for
        sim = {frozenset((name(p["a"]), name(p["b"]))): p for p in s.duplicates(similar=True)}
        assert sim[frozenset({"cat left.jpg", "cat right.jpg"})]["match"] == "similar"
        assert sim[frozenset({"cat left.jpg", "cat right.jpg"})]["score"] >= 0.95
        assert sim[frozenset({"cat.jpg", "cat left.jpg"})]["match"] == "similar"
        assert not any("coffee.jpg" in k or "rocket.jpg" in k for k in sim)

    code, out, _ = run_cli(["duplicates", "--db", dbp, "--json", "--details"], real_model, monkeypatch, capsys)
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and len(lines) == 3 and {x["match"] for x in lines} == {"identical", "near"}
    code, out, _ = run_cli(["duplicates", "--db", dbp, "--json", "--details", "--similar"], real_model, monkeypatch,
                           capsys)
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and len(lines) == len(sim) and "similar" in {x["match"] for x in lines}
    code, out, _ = run_cli(["duplicates", "--db", dbp, "--json"], real_model, monkeypatch, capsys)
    assert all(set(json.loads(x)) == {"a", "b", "score"} for x in out.splitlines())      # the contract


@needs_model
def test_duplicates_of_agrees_with_the_pairs(dup_set, real_model):
    root, dbp = dup_set
    with Searcher(dbp, model=real_model) as s:
        paths = [r["path"] for r in s.db.embedded_images(real_model.info["hash"])]
        assert len(paths) == 7
        for similar in (False, True):
            want = _pairs_by_photo(s.duplicates(similar=similar))
            for p in paths:
                got = s.duplicates_of(p, similar=similar)
                assert all(set(d) >= {"path", "score", "match"} for d in got)
                assert [d["score"] for d in got] == sorted((d["score"] for d in got), reverse=True)
                assert {d["path"]: d["match"] for d in got} == {q: m for q, (_, m) in want.get(p, {}).items()}, p
                for d in got:
                    assert d["score"] == pytest.approx(want[p][d["path"]][0], abs=1e-5)
        cat = str(root.resolve() / "cat.jpg")
        assert [(Path(d["path"]).name, d["match"]) for d in s.duplicates_of(cat)] == \
            [("cat identical.jpg", "identical"), ("cat small.jpg", "near")]
        assert s.duplicates_of(root / "cat left.jpg") == [] and s.duplicates_of(root / "coffee.jpg") == []
        from index import NotIndexedError
        with pytest.raises(NotIndexedError):
            s.duplicates_of(root / "nope.jpg")


def test_duplicates_of_hashes_rows_of_an_older_version(tmp_path):
    model = FakeModel()
    root = (tmp_path / "p").resolve()
    a = scene(root / "a.jpg", 1, size=(640, 480))
    Image.open(a).resize((320, 240)).save(root / "a small.jpg", quality=70)
    scene(root / "b.jpg", 2)
    dbp = tmp_path / "o.db"
    build_index(root, dbp, model=model)
    PhotoDB(dbp).execute("UPDATE images SET phash=NULL")                     # as an older version left them
    with Searcher(dbp, model=model) as s:
        got = s.duplicates_of(a)
        assert [(Path(d["path"]).name, d["match"]) for d in got] == [("a small.jpg", "near")]
        assert len(s.db.images_without_phash()) <= 1                          # only the photo and its neighbours
        assert _pairs_by_photo(s.duplicates())[str(a)] == {d["path"]: (d["score"], d["match"]) for d in got}


# ---- 4. CLI ----------------------------------------------------------------------------------------------
def test_cli_refuses_an_empty_query(labelled, monkeypatch, capsys):
    photos, dbp, model = labelled
    for q in ["", "   ", "\t"]:
        code, out, err = run_cli(["search", "--db", dbp, "--json", q], model, monkeypatch, capsys)
        assert code == 2 and out == "" and "empty" in err, (q, out[:200])
    code, out, err = run_cli(["search", "--db", dbp, "--json", "red", " "], model, monkeypatch, capsys)
    assert code == 2 and out == "" and "empty" in err


def test_cli_threshold_defaults_to_zero(labelled, monkeypatch, capsys):
    photos, dbp, model = labelled
    code, out, _ = run_cli(["search", "--db", dbp, "--json", "--k", 50, "blue"], model, monkeypatch, capsys)
    res = json.loads(out)["results"]
    assert code == 0 and res and all(r["score"] >= 0 for r in res)
    code, out, _ = run_cli(["search", "--db", dbp, "--json", "--k", 50, "--threshold", "-1", "blue"], model,
                           monkeypatch, capsys)
    everything = json.loads(out)["results"]
    assert code == 0 and len(everything) == 6 and min(r["score"] for r in everything) < 0     # red, green: unrelated
    assert [r["path"] for r in everything[:len(res)]] == [r["path"] for r in res]
    code, out, _ = run_cli(["search", "--db", dbp, "blue", "--k", 50], model, monkeypatch, capsys)
    assert code == 0 and "red.jpg" not in out
    with pytest.raises(SystemExit):
        run_cli(["search", "--help"], model, monkeypatch, capsys)
    help_text = " ".join(capsys.readouterr().out.split())
    assert "default: 0.0" in help_text and "-1 shows everything" in help_text


def _columns(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def test_cli_label_table_aligns_chinese(labelled, monkeypatch, capsys):
    photos, dbp, model = labelled
    code, out, _ = run_cli(["label", "--db", dbp, "--labels", "猫,red,长颈鹿,blue sky", "--label-set", "zh",
                            "--quiet"], model, monkeypatch, capsys)
    rows = [line for line in out.splitlines() if line.startswith("  ")]
    assert code == 0 and len(rows) == 4
    starts = {_columns(line.rstrip("0123456789")) for line in rows}          # where each count begins
    assert len(starts) == 1, rows
    assert all(line.rstrip("0123456789").endswith("  ") for line in rows)
