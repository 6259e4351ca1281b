"""index/: near-duplicates (embedding + perceptual hash, groups), zero-shot labels, export, remove, CLI polish."""
import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from index import PhotoDB, Searcher, build_index
from index import __main__ as cli
from index.duplicates import group_duplicates, hamming
from index.scan import dhash
from conftest import COLOURS, FakeModel, make_image, run_cli, scene


@pytest.fixture
def dup_photos(tmp_path):
    root = tmp_path / "dups"
    a = scene(root / "a.jpg", 1, size=(640, 480))
    (root / "copies").mkdir()
    shutil.copy(a, root / "copies" / "a identical.jpg")
    Image.open(a).resize((320, 240)).save(root / "copies" / "a small.jpg", quality=70)     # resized, recompressed
    b = scene(root / "b.jpg", 2)
    Image.open(b).save(root / "b.png")                                                    # same picture, PNG
    for i in range(3, 8):
        scene(root / f"other{i}.jpg", i)
    return root


def test_dhash_and_hamming(dup_photos):
    a = dhash(Image.open(dup_photos / "a.jpg"))
    assert len(a) == 16 and int(a, 16) >= 0
    assert hamming(a, dhash(Image.open(dup_photos / "copies" / "a small.jpg"))) <= 4
    assert hamming(a, dhash(Image.open(dup_photos / "other3.jpg"))) > 12
    assert hamming(a, None) is None and hamming("zz", a) is None


def test_duplicates_pairs_groups_and_cli(dup_photos, tmp_path, monkeypatch, capsys):
    model = FakeModel()
    dbp = tmp_path / "d.db"
    build_index(dup_photos, dbp, model=model)
    s = Searcher(dbp, model=model)
    names = lambda p: frozenset((Path(p["a"]).name, Path(p["b"]).name))
    pairs = s.duplicates(threshold=0.95)
    byname = {names(p): p for p in pairs}
    assert byname[frozenset({"a.jpg", "a identical.jpg"})]["match"] == "identical"
    assert byname[frozenset({"a.jpg", "a identical.jpg"})]["score"] == 1.0
    assert frozenset({"a.jpg", "a small.jpg"}) in byname and frozenset({"b.jpg", "b.png"}) in byname
    assert not any("other" in n for k in byname for n in k)
    assert [p["score"] for p in pairs] == sorted((p["score"] for p in pairs), reverse=True)
    # the hash alone finds the resized copy when the embedding threshold is out of reach
    strict = {names(p): p for p in s.duplicates(threshold=0.99999, max_hamming=6)}
    assert strict[frozenset({"a.jpg", "a small.jpg"})]["match"] in ("near", "similar")
    assert frozenset({"a.jpg", "a small.jpg"}) not in {names(p) for p in s.duplicates(threshold=1.01, max_hamming=None)}

    groups = s.duplicate_groups(threshold=0.95)
    assert [g["size"] for g in groups] == [3, 2]
    assert Path(groups[0]["keep"]).name in ("a.jpg", "a identical.jpg")           # the 640x480 ones
    assert {Path(p).name for p in groups[1]["paths"]} == {"b.jpg", "b.png"}
    assert all(0 < g["score"] <= g["max_score"] <= 1.0 for g in groups) and groups[0]["group"] == 1
    assert group_duplicates([]) == []

    code, out, _ = run_cli(["duplicates", "--db", dbp, "--json"], model, monkeypatch, capsys)
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and len(lines) == len(pairs) and all(set(x) == {"a", "b", "score"} for x in lines)
    code, out, _ = run_cli(["duplicates", "--db", dbp, "--json", "--details"], model, monkeypatch, capsys)
    assert code == 0 and all({"hamming", "match"} <= set(json.loads(x)) for x in out.splitlines())
    code, out, _ = run_cli(["duplicates", "--db", dbp, "--json", "--groups"], model, monkeypatch, capsys)
    gl = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and [g["size"] for g in gl] == [3, 2] and set(gl[0]) >= {"group", "size", "score", "paths", "keep"}
    code, out, _ = run_cli(["duplicates", "--db", dbp, "--groups"], model, monkeypatch, capsys)
    assert code == 0 and "group 1: 3 photos" in out
    code, out, _ = run_cli(["duplicates", "--db", dbp, "--threshold", "1.5", "--no-hash"], model, monkeypatch, capsys)
    assert code == 0 and len(out.splitlines()) == 1 and "identical" in out        # the same bytes: always


# ---- schema migration ----------------------------------------------------------------------------------
def test_v1_database_is_migrated(tmp_path):
    import sqlite3
    from index import db as dbm
    path = tmp_path / "v1.db"
    con = sqlite3.connect(path)
    for stmt in dbm._SCHEMA_V1:
        con.execute(stmt)
    con.execute("INSERT INTO meta VALUES ('schema_version', '1'), ('generation', '3')")
    con.execute("INSERT INTO images(id, path) VALUES (1, '/x.jpg')")
    con.execute("INSERT INTO labels(image_id, label_set, label, score) VALUES (1, 's', 'cat', 0.9)")
    con.commit()
    con.close()
    db = PhotoDB(path)
    assert db.get_meta("schema_version") == str(dbm.SCHEMA_VERSION) and db.generation() == 3
    cols = {c.name for c in db.db["labels"].columns}
    assert {"cosine", "rank", "time"} <= cols
    assert db.query("SELECT label, score FROM labels") == [{"label": "cat", "score": 0.9}]
    db.close()
    assert PhotoDB(path).get_meta("schema_version") == str(dbm.SCHEMA_VERSION)     # idempotent


def _schema(path) -> dict:
    """Everything SQLite knows of a database's schema: sqlite_master, and per table its columns, indexes and
    foreign keys (with their ON DELETE actions)."""
    import sqlite3
    con = sqlite3.connect(path)
    try:
        out = {"master": sorted(con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall(),
                                key=str)}
        for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
            out[t] = {p: con.execute(f"PRAGMA {p}({t})").fetchall()
                      for p in ("table_info", "index_list", "foreign_key_list")}
        return out
    finally:
        con.close()


@pytest.mark.parametrize("start", [1, 2])
def test_fresh_and_migrated_databases_have_one_schema(tmp_path, start):
    """A fresh database and one migrated from an older version end with the same schema; the keys PhotoDB's
    sqlite-utils upserts go by are the tables' primary keys."""
    import sqlite3
    from index import db as dbm
    PhotoDB(tmp_path / "fresh.db").close()
    old = tmp_path / f"v{start}.db"
    con = sqlite3.connect(old)
    for stmt in dbm._SCHEMA_V1 + [s for v in range(2, start + 1) for s in dbm._MIGRATIONS[v]]:
        con.execute(stmt)
    con.execute(f"INSERT INTO meta VALUES ('schema_version', '{start}'), ('generation', '0')")
    con.commit()
    con.close()
    PhotoDB(old).close()
    fresh = _schema(tmp_path / "fresh.db")
    assert _schema(old) == fresh
    assert {"images", "vectors", "errors", "labels", "corrections", "meta"} <= set(fresh)
    db = PhotoDB(tmp_path / "fresh.db")
    assert db.db["labels"].pks == ["image_id", "label_set", "label"] and list(dbm.LABEL_COLUMNS) == \
        [c.name for c in db.db["labels"].columns]
    assert db.db["corrections"].pks == ["image_id", "label_set"] and list(dbm.CORRECTION_COLUMNS) == \
        [c.name for c in db.db["corrections"].columns]
    assert db.db["meta"].pks == ["key"]
    assert [(fk.column, fk.other_table, fk.on_delete) for t in ("labels", "corrections")
            for fk in db.db[t].foreign_keys] == [("image_id", "images", "CASCADE")] * 2
    db.close()


# ---- zero-shot labels, export, remove --------------------------------------------------------------------
from dcclip_core.zeroshot import fill, has_cjk, language_of, templates
from index.labels import LabelError, export_labels, label_index, label_sets, labels_of, parse_labels, remove_paths


class SpyModel(FakeModel):
    def __init__(self):
        super().__init__()
        self.texts = []

    def encode_text(self, texts):
        self.texts += list(texts)
        return super().encode_text(texts)


def test_label_helpers():
    assert parse_labels("猫, 狗，cat、dog;  sea  lion ,猫,") == ["猫", "狗", "cat", "dog", "sea lion"]
    assert parse_labels(["a,b", "c"]) == ["a", "b", "c"] and parse_labels(" , ") == []
    assert has_cjk("生日蛋糕") and has_cjk("a 猫") and not has_cjk("café")
    assert len(templates("en")) >= 4 and len(templates("zh")) >= 4 and len(templates("en", "full")) == 80
    assert language_of("猫") == "zh" and language_of("cat") == "en"
    zh = [fill(x, "猫") for x in templates("zh")]
    assert all("猫" in p for p in zh) and zh[0] != "a photo of a 猫." and fill("a photo of", "cat") == "a photo of cat"


def test_label_export_remove(photos, tmp_path, monkeypatch, capsys):
    model = SpyModel()
    dbp = tmp_path / "l.db"
    build_index(photos, dbp, model=model)
    res = label_index(dbp, "red, green，blue、猫", label_set="colours", model=model)
    assert res["labels"] == ["red", "green", "blue", "猫"] and res["labeled"] == res["images"] == 6
    assert len(model.texts) == 3 * len(templates("en")) + len(templates("zh"))           # ensembled per language
    assert sum(1 for x in model.texts if "猫" in x) == len(templates("zh"))
    top = {Path(r["path"]).name: r for r in labels_of(dbp, "colours", top_only=True)}
    assert top["red.jpg"]["label"] == "red" and top["green.png"]["label"] == "green"
    assert top["blue.webp"]["label"] == "blue" and top["cat.jpg"]["label"] == "猫"
    assert all(0 < r["score"] <= 1 and r["rank"] == 1 and -1 <= r["cosine"] <= 1 for r in top.values())
    assert sum(res["counts"].values()) == 6
    assert label_sets(dbp)[0]["label_set"] == "colours" and label_sets(dbp)[0]["images"] == 6

    # same set again: only new photos get labelled; --relabel / other labels redo all
    make_image(photos / "new red.jpg", COLOURS["red"], 40)
    build_index(photos, dbp, model=model)
    assert label_index(dbp, "red,green,blue,猫", label_set="colours", model=model)["labeled"] == 1
    assert label_index(dbp, "red,green,blue,猫", label_set="colours", model=model)["labeled"] == 0
    r2 = label_index(dbp, ["red", "blue"], label_set="colours", model=model, top=2)
    assert r2["labeled"] == 7 and len(labels_of(dbp, "colours")) == 14
    with pytest.raises(LabelError):
        label_index(dbp, " ,", model=model)
    with pytest.raises(LabelError):
        labels_of(dbp, "nope")
    with pytest.raises(LabelError):
        label_index(dbp, "red", model=FakeModel(hash="other"))                 # nothing embedded by that model

    # export: CSV (BOM, Chinese intact) and JSON
    label_index(dbp, "red,green,blue,猫", label_set="colours", model=model)
    n = export_labels(dbp, "colours", "csv", tmp_path / "out" / "c.csv")
    rows = list(csv.DictReader((tmp_path / "out" / "c.csv").open(encoding="utf-8-sig")))
    assert n == len(rows) == 7 and list(rows[0]) == ["path", "label", "score", "cosine", "rank", "source"]
    assert {r["source"] for r in rows} == {"zero-shot:fake-v1"}
    assert any(r["label"] == "猫" for r in rows)
    export_labels(dbp, "colours", "json", tmp_path / "c.json")
    data = json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))
    assert len(data) == 7 and {d["label"] for d in data} <= {"red", "green", "blue", "猫"}
    assert all(d["source"] == "zero-shot:fake-v1" for d in data)

    # CLI: label / export / remove / stats
    code, out, _ = run_cli(["label", "--db", dbp, "--labels", "猫,red", "--label-set", "two", "--json"], model,
                           monkeypatch, capsys)
    assert code == 0 and json.loads(out)["label_set"] == "two" and json.loads(out)["images"] == 7
    code, out, _ = run_cli(["label", "--db", dbp, "--labels", "猫,red", "--label-set", "two", "--quiet"], model,
                           monkeypatch, capsys)
    assert code == 0 and "0 photos labelled now, 7 in the set" in out
    code, out, err = run_cli(["export", "--db", dbp, "--label-set", "two", "--out", tmp_path / "t.json", "--json"],
                             model, monkeypatch, capsys)
    assert code == 0 and json.loads(out)["rows"] == 7 and json.loads(out)["format"] == "json"
    code, out, err = run_cli(["export", "--db", dbp, "--label-set", "two", "--format", "csv"], model, monkeypatch,
                             capsys)
    assert code == 0 and out.splitlines()[0] == "path,label,score,cosine,rank,source" and len(out.splitlines()) == 8
    code, out, err = run_cli(["export", "--db", dbp], model, monkeypatch, capsys)          # two sets: which?
    assert code == 2 and "colours" in err and "two" in err
    code, out, err = run_cli(["export", "--db", dbp, "--label-set", "nope"], model, monkeypatch, capsys)
    assert code == 2 and "no label set" in err
    code, out, err = run_cli(["label", "--db", dbp, "--labels", ","], model, monkeypatch, capsys)
    assert code == 2 and "no labels" in err

    code, out, err = run_cli(["remove", "--db", dbp, photos / "sub", "--json"], model, monkeypatch, capsys)
    res = json.loads(out)
    assert code == 0 and res["removed"] == 3 and res["not_found"] == []
    code, out, err = run_cli(["remove", "--db", dbp, photos / "red.jpg", photos / "nothing.jpg"], model,
                             monkeypatch, capsys)
    assert code == 2 and "removed 1 photos" in out and "nothing.jpg" in err
    assert remove_paths(dbp, [photos / "empty.jpg"]) == {"removed": 0, "errors_removed": 1, "not_found": []}
    s = Searcher(dbp, model=model)
    st = s.stats()
    assert st["images"] == 3 and st["errors"] == 2
    assert {Path(r["path"]).name for r in s.search("red", k=10)} == {"new red.jpg", "green.png", "blue.webp"}
    assert len(labels_of(dbp, "two")) == 3                                  # labels went with the rows
    st = build_index(photos, dbp, model=model)                              # a later build brings them back
    assert st["images"] == 7


# ---- CLI polish ------------------------------------------------------------------------------------------
def test_cli_help_json_and_exit_codes(photos, tmp_path, monkeypatch, capsys):
    for cmd in ["build", "search", "stats", "duplicates", "label", "export", "remove"]:
        with pytest.raises(SystemExit) as e:
            cli.main([cmd, "--help"])
        out = capsys.readouterr().out
        assert e.value.code == 0 and "--json" in out and "usage: python -m index " + cmd in out
    with pytest.raises(SystemExit) as e:
        cli.main(["frobnicate"])
    assert e.value.code == 2
    capsys.readouterr()
    model = FakeModel()
    dbp = tmp_path / "c.db"
    code, out, _ = run_cli(["build", photos, "--db", dbp, "--json", "--quiet", "--index-kind", "flat"], model,
                           monkeypatch, capsys)
    st = json.loads(out)
    assert code == 0 and st["images"] == 6 and st["errors"] == 3
    code, out, err = run_cli(["search", "--db", dbp], model, monkeypatch, capsys)
    assert code == 2 and "QUERY" in err
    code, out, _ = run_cli(["stats", "--db", dbp, "--json"], None, monkeypatch, capsys)
    st = json.loads(out)
    assert st["errors_by_reason"] == {"empty file": 1, "not an image": 1, "truncated or corrupt image data": 1}
    assert st["index"]["kind"] == "flat" and st["index"]["file"] and st["label_sets"] == []
    code, out, _ = run_cli(["stats", "--db", dbp], None, monkeypatch, capsys)
    assert code == 0 and "empty file (0 bytes)" in out and "errors     3  (" in out and "index      flat" in out
    with pytest.raises(SystemExit) as e:
        cli.main(["build", str(photos), "--db", str(dbp), "--index-kind", "annoy"])
    assert e.value.code == 2


def test_missing_phash_is_filled_for_duplicates(dup_photos, tmp_path):
    model = FakeModel()
    dbp = tmp_path / "h.db"
    build_index(dup_photos, dbp, model=model)
    db = PhotoDB(dbp)
    want = {r["path"]: r["phash"] for r in db.query("SELECT path, phash FROM images")}
    db.execute("UPDATE images SET phash=NULL")                     # as an older version left them
    pairs = Searcher(dbp, model=model).duplicates(threshold=0.99999, max_hamming=6)
    assert any(p["match"] == "near" or p["match"] == "identical" for p in pairs)
    got = {r["path"]: r["phash"] for r in db.query("SELECT path, phash FROM images")}
    assert all(got[p] is not None and hamming(got[p], want[p]) <= 6 for p in want)


# ---- PhotoDB owns the SQL of labels.py / search.py / app.py ----------------------------------------------
def test_photodb_label_and_removal_methods(photos, tmp_path):
    import sqlite3
    model = FakeModel()
    dbp = tmp_path / "m.db"
    build_index(photos, dbp, model=model)
    db = PhotoDB(dbp)
    root = str(photos.resolve())
    sub = str((photos / "sub").resolve())
    by_name = {Path(r["path"]).name: r["id"] for r in db.query("SELECT id, path FROM images")}
    # ids at / below a path: the folder itself, a file, a sibling with the same prefix is not below
    assert sorted(db.image_ids_under(sub)) == sorted(by_name[n] for n in ["cat.jpg", "yellow.gif", "猫 😺 photo.jpg"])
    assert db.image_ids_under(str(photos.resolve() / "red.jpg")) == [by_name["red.jpg"]]
    assert db.image_ids_under(sub[:-1]) == []                                  # ".../su" is no folder of theirs
    assert db.paths_ending_with("red.jpg") == [str(photos.resolve() / "red.jpg")]
    assert db.paths_ending_with(".jpg", limit=2) == sorted(p for p in db.images_under(root) if p.endswith(".jpg"))[:2]
    assert sorted(n for _, n in db.error_reason_counts()) == [1, 1, 1] and db.count_errors() == 3
    assert {r["id"] for r in db.embedded_images("fake-v1")} == set(by_name.values()) and not db.embedded_images("x")
    ids = list(by_name.values())
    assert {r["id"]: r["path"] for r in db.hash_rows_by_ids(ids + [10**9]).values()} == \
        {i: r["path"] for i, r in db.rows_by_ids(ids).items()}
    red = str(photos.resolve() / "red.jpg")
    assert set(db.size_rows_by_paths([red, "/nope.jpg"])) == {red} and db.images_without_phash() == []

    # labels: upsert, counts, corrections (kept apart, shown instead of the machine rows), clearing
    t = "2026-01-01T00:00:00+00:00"
    db.put_labels([(by_name["red.jpg"], "s", "red", 0.9, "zero-shot:x", 0.3, 1, t),
                   (by_name["red.jpg"], "s", "blue", 0.1, "zero-shot:x", 0.1, 2, t),
                   (by_name["green.png"], "s", "red", 0.6, "zero-shot:x", 0.2, 1, t)])
    db.put_labels([(by_name["green.png"], "s", "red", 0.7, "zero-shot:x", 0.25, 1, t)])   # same key: updated
    assert db.label_counts("s") == {"red": 2} and db.labelled_image_count("s") == 2
    assert db.labelled_image_ids("s") == {by_name["red.jpg"], by_name["green.png"]}
    assert [(Path(r["path"]).name, r["label"], r["score"], r["source"]) for r in db.label_rows("s")] == \
        [("green.png", "red", 0.7, "zero-shot:x"), ("red.jpg", "red", 0.9, "zero-shot:x"),
         ("red.jpg", "blue", 0.1, "zero-shot:x")]
    assert len(db.label_rows("s", top_only=True)) == 2 and len(db.label_rows("s", label="blue")) == 1
    assert len(db.label_rows("s", limit=1)) == 1
    assert db.set_correction("s", [red, "/not/indexed.jpg"], "green") == 1
    assert db.corrected_image_ids("s") == {by_name["red.jpg"]} and db.corrections("s") == {red: "green"}
    assert [(r["label"], r["rank"], r["score"], r["source"]) for r in db.label_rows("s") if r["path"] == red] == \
        [("green", 1, 1.0, "manual")]
    assert db.label_counts("s") == {"green": 1, "red": 1} and db.labelled_image_count("s") == 2
    assert len(db.label_rows("s", label="blue")) == 0 and len(db.label_rows("s", label="green")) == 1
    assert db.clear_labels("s") == 3 and db.label_counts("s") == {"green": 1} and db.labelled_image_count("s") == 1
    assert db.labelled_image_ids("s") == set()                       # machine rows only: a run labels it again
    assert db.remove_correction("s", [red, red, "/not/indexed.jpg"]) == 1 and db.labelled_image_count("s") == 0
    assert db.remove_correction("s", [red]) == 0 and db.corrections("s") == {}

    # label set definitions: exact prefix (LIKE's "_" wildcard would have matched "labelXset:")
    db.set_label_set_meta("b", '{"labels": ["x"]}')
    db.set_label_set_meta("a", "{}")
    db.set_meta("labelXset:c", "{}")
    assert db.label_set_meta("b") == '{"labels": ["x"]}' and db.label_set_meta("zz") is None
    assert db.label_set_metas() == [("a", "{}"), ("b", '{"labels": ["x"]}')]

    # atomic: a batch with a bad row writes nothing; a failing outer transaction takes the correction back
    with pytest.raises(sqlite3.IntegrityError):
        db.put_labels([(by_name["red.jpg"], "s", "red", 0.9, "z", 0.3, 1, t),
                       (by_name["green.png"], "s", None, 0.1, "z", 0.1, 1, t)])          # label NOT NULL
    assert db.labelled_image_count("s") == 0
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.set_correction("s", [red], "green")
            raise RuntimeError("killed mid-way")
    assert db.labelled_image_count("s") == 0

    # errors below a path
    assert db.delete_errors_under(str(photos.resolve() / "empty.jpg")) == 1
    assert db.delete_errors_under(sub) == 0 and db.delete_errors_under(root) == 2 and db.count_errors() == 0
    db.close()


def test_no_sql_outside_photodb():
    """labels.py, search.py, the text pass and text search, the app (app.py, ui/) and the benchmarks reach the
    database only through PhotoDB."""
    import re
    root = Path(__file__).resolve().parent.parent
    sql = re.compile(r"""["'](SELECT|INSERT|DELETE|UPDATE|CREATE|ALTER|PRAGMA|REPLACE)\s|\.conn\b|\.execute\(|"""
                     r"""\.executemany\(|\.query\(|\._set_meta\(|\._delete_ids\(|\b_prefix_range\b""")
    files = ["index/labels.py", "index/search.py", "index/textpass.py", "index/textsearch.py", "app.py"] + sorted(
        str(p.relative_to(root)) for d in ("ui", "benchmarks") for p in (root / d).rglob("*.py"))
    for f in files:
        hits = [f"{f}:{n}: {line.strip()}" for n, line in enumerate((root / f).read_text("utf-8").splitlines(), 1)
                if sql.search(line)]
        assert hits == []
