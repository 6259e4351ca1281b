"""Text in photos: the OCR reader, the text pass (resumable, kill-safe, re-read on change), schema v5, the
fused search and bad input, on real rendered photos and the shipped model."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from index import PhotoDB, build_index
from index import db as dbm
from index.search import Searcher
from index.textpass import read_texts
from conftest import kill_pass_after, make_v4_db

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"
FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
pytestmark = pytest.mark.skipif(not FONT.is_file(), reason="needs a CJK font: apt-get install fonts-noto-cjk")


def render(path: Path, lines: list[str], base: str = "coffee.jpg", size=(1200, 900), px: int = 64,
           mirror: bool = False, exif_orientation: int | None = None) -> Path:
    """A demo photo with ``lines`` written on a white plate, saved as JPEG at ``path``."""
    im = Image.open(DEMO / base).convert("RGB").resize(size)
    d = ImageDraw.Draw(im)
    font = ImageFont.truetype(str(FONT), px)
    y = size[1] // 8
    for text in lines:
        x0, y0, x1, y1 = d.textbbox((size[0] // 12, y), text, font=font)
        d.rectangle((x0 - 12, y0 - 12, x1 + 12, y1 + 12), fill="white")
        d.text((size[0] // 12, y), text, font=font, fill="black")
        y += int(px * 1.8)
    if mirror:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    kw = {}
    if exif_orientation:                       # stored turned, with the EXIF tag that turns it upright
        im = im.transpose(Image.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kw["exif"] = exif.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, quality=92, **kw)
    return path


@pytest.fixture(scope="module")
def model():
    import dcclip_core
    return dcclip_core.load()


@pytest.fixture(scope="module")
def library(tmp_path_factory, model):
    """Six demo photos + three with text, indexed and read: (folder, db path, first text-pass stats)."""
    root = tmp_path_factory.mktemp("lib") / "照片"
    root.mkdir()
    for name in ("cat_chelsea.jpg", "dog_chicky.jpg", "flower.jpg", "rocket.jpg", "motorcycle.jpg", "fruits.jpg"):
        shutil.copy(DEMO / name, root / name)
    render(root / "毕业.jpg", ["北京大学 2024年毕业典礼"], base="astronaut.jpg")
    render(root / "ticket.jpg", ["火車票 Train Ticket"], base="temple_china.jpg")
    render(root / "exit.jpg", ["EXIT", "Sunset Beach Road"], base="orange.jpg")
    dbp = root.parent / "lib.db"
    build_index(root, dbp, model=model)
    stats = read_texts(dbp, model=model)
    return root, dbp, stats


def test_reader_reads_chinese_and_english_with_boxes_and_scripts(tmp_path):
    from dcclip_core.ocr import TextReader, normalise
    p = render(tmp_path / "sign.jpg", ["欢迎光临 Welcome", "繁體中文 臺灣"])
    r = TextReader(threads=2).read(p)
    assert r.state == "text" and r.gate_regions >= 2
    got = {normalise(ln.text): ln for ln in r.lines}
    assert "欢迎光临welcome" in {k.replace(" ", "") for k in got}
    trad = [ln for ln in r.lines if "臺灣" in ln.text]
    assert trad and trad[0].script == "zh-Hant"
    assert normalise("繁體中文 臺灣") == "繁体中文台湾"
    for ln in r.lines:                                    # boxes are fractions of the photo, top lines first
        x0, y0, x1, y1 = ln.box
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert r.lines[0].box[1] < r.lines[-1].box[1]


def test_text_pass_reads_every_photo_once_and_records_state(library):
    root, dbp, stats = library
    assert stats["read"] == 9 and stats["with_text"] == 3 and stats["errors"] == 0 and stats["pending"] == 0
    db = PhotoDB(dbp)
    counts = db.text_read_counts()
    assert counts.get("text") == 3 and counts.get("none") == 6
    assert db.get_meta("schema_version") == str(dbm.SCHEMA_VERSION)
    again = read_texts(dbp)                               # nothing left to read
    assert again["read"] == 0 and again["pending"] == 0
    db.close()


def test_search_finds_photos_by_their_words_in_both_scripts_and_languages(library, model):
    root, dbp, _ = library
    s = Searcher(dbp, model=model)
    for q, want in [("毕业典礼", "毕业.jpg"), ("畢業典禮", "毕业.jpg"), ("火车票", "ticket.jpg"),
                    ("train ticket", "ticket.jpg"), ("EXIT", "exit.jpg"), ("sunset beach", "exit.jpg"),
                    ("graduation ceremony", "毕业.jpg"), ("exit 出口", "exit.jpg")]:
        res = s.search(q, k=3)
        assert Path(res[0]["path"]).name == want, (q, [Path(r["path"]).name for r in res])
        why = res[0]["why"][0]
        assert set(why) == {"text", "box", "match"} and len(why["box"]) == 4, (q, why)
        x0, y0, x1, y1 = why["box"]
        assert 0 <= x0 < x1 <= res[0]["width"] and 0 <= y0 < y1 <= res[0]["height"]
    res = s.search("毕业典礼", k=1)[0]
    assert res["text_match"] == "exact" and res["why"][0]["text"].replace(" ", "") == "北京大学2024年毕业典礼"
    cat = s.search("a cat", k=1)[0]                        # a picture query stays a picture query
    assert Path(cat["path"]).name == "cat_chelsea.jpg" and "text_match" not in cat
    many = s.search_many(["毕业典礼", "a cat"], k=3)        # the app's batched path fuses the same way
    assert [r["path"] for r in many[0]] == [r["path"] for r in s.search("毕业典礼", k=3)]
    s.close()


def test_text_filter_and_text_of(library, model):
    root, dbp, _ = library
    s = Searcher(dbp, model=model)
    with_text = {Path(r["path"]).name for r in s.search("photo", k=20, text=True)}
    assert with_text == {"毕业.jpg", "ticket.jpg", "exit.jpg"}
    assert [Path(r["path"]).name for r in s.search("photo", k=20, text="車票")] == ["ticket.jpg"]
    assert s.search("photo", k=20, text="no such words") == []
    r = s.search("a temple", k=1, text="車票")[0]                  # the line holding the filter string is named
    assert r["why"][0]["match"] == "filter" and "票" in r["why"][0]["text"]
    by_photo = s.search_image(root / "cat_chelsea.jpg", k=20, text=True)
    assert {Path(x["path"]).name for x in by_photo} == {"毕业.jpg", "ticket.jpg", "exit.jpg"}
    t = s.text_of(root / "exit.jpg")
    assert t["state"] == "text" and [ln["text"] for ln in t["lines"]][0] == "EXIT"
    assert s.text_of(root / "cat_chelsea.jpg") == {"state": "none", "note": None, "lines": []}
    st = s.stats()["text"]
    assert st["with_text"] == 3 and st["pending"] == 0 and st["errors"] == []
    s.close()


def test_cli_build_reads_text_by_default_and_search_json_names_the_line(tmp_path):
    root = tmp_path / "photos"
    render(root / "menu.jpg", ["咖啡菜单 Coffee Menu"])
    shutil.copy(DEMO / "cat_chelsea.jpg", root / "cat.jpg")
    env = {**os.environ, "HOME": str(tmp_path)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "index", *a], cwd=ROOT, env=env, capture_output=True,
                                    text=True, timeout=300)
    out = run("build", str(root), "--db", str(tmp_path / "a.db"), "--no-text", "--json", "--quiet")
    assert out.returncode == 0 and "text" not in json.loads(out.stdout.strip().splitlines()[-1])
    out = run("build", str(root), "--db", str(tmp_path / "a.db"), "--json", "--quiet")
    st = json.loads(out.stdout.strip().splitlines()[-1])
    assert st["text"]["read"] == 2 and st["text"]["with_text"] == 1
    out = run("search", "--db", str(tmp_path / "a.db"), "--json", "-k", "1", "菜单")
    res = json.loads(out.stdout)["results"][0]
    assert res["path"].endswith("menu.jpg") and res["why"][0]["text"].replace(" ", "").startswith("咖啡菜单")
    out = run("search", "--db", str(tmp_path / "a.db"), "--json", "--with-text", "a cat")
    assert [r["path"][-8:] for r in json.loads(out.stdout)["results"]] == ["menu.jpg"]
    out = run("search", "--db", str(tmp_path / "a.db"), "--json", "--text-contains", "咖啡", "a cat")
    assert [r["path"][-8:] for r in json.loads(out.stdout)["results"]] == ["menu.jpg"]


def test_text_follows_the_file_removed_and_reread_on_change(tmp_path, model):
    root = tmp_path / "p"
    render(root / "a.jpg", ["图书馆 Library"])
    render(root / "b.jpg", ["医院 Hospital"], base="rocket.jpg")
    dbp = tmp_path / "x.db"
    build_index(root, dbp, model=model)
    read_texts(dbp, model=model)
    render(root / "a.jpg", ["机场 Airport"])              # same path, new content: read again
    (root / "b.jpg").unlink()                             # gone: its text goes with it
    build_index(root, dbp, model=model)
    assert read_texts(dbp, model=model)["read"] == 1
    db = PhotoDB(dbp)
    assert db.lines_matching("图书馆") == [] and db.lines_matching("医院") == []
    assert [r["image_id"] for r in db.lines_matching("机场")] == [db.image_by_path(str(root / "a.jpg"))["id"]]
    assert db.query("SELECT COUNT(*) AS n FROM text_lines_fts WHERE text_lines_fts MATCH '\"hospital\"'") == [{"n": 0}]
    assert db.integrity_check() == "ok"
    db.close()


def test_v4_database_migrates_to_the_text_tables_like_a_fresh_one(tmp_path):
    old = tmp_path / "v4.db"
    make_v4_db(old)
    db = PhotoDB(old)
    assert db.get_meta("schema_version") == str(dbm.SCHEMA_VERSION) and db.generation() == 3   # v4 -> latest
    assert [r["id"] for r in db.text_todo("r")] == [1]                 # old photos are waiting to be read
    db.put_text(1, "x", "r", "text", [{"text": "出口 EXIT", "norm": "出口 exit", "box": (0.1, 0.1, 0.5, 0.2),
                                       "conf": 0.99, "script": "zh-Hans"}])
    assert [r["text"] for r in db.lines_matching("exit")] == ["出口 EXIT"] and db.text_todo("r") == []
    fresh = PhotoDB(tmp_path / "fresh.db")
    schema = lambda d: sorted(r[0] for r in d.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"))
    assert schema(db) == schema(fresh)
    db.close()
    fresh.close()


def test_bad_input_is_recorded_and_the_photo_stays_searchable(tmp_path, model, monkeypatch):
    root = tmp_path / "bad"
    root.mkdir()
    Image.new("RGB", (12, 9), "white").save(root / "tiny.png")
    render(root / "mirror.jpg", ["EXIT 出口 Welcome"], mirror=True)
    render(root / "turned.jpg", ["停车场 Parking"], exif_orientation=8)
    shutil.copy(DEMO / "cat_chelsea.jpg", root / "cat.jpg")
    shutil.copy(DEMO / "dog_chicky.jpg", root / "dog.jpg")
    dbp = tmp_path / "b.db"
    build_index(root, dbp, model=model)
    (root / "dog.jpg").write_bytes((DEMO / "dog_chicky.jpg").read_bytes()[:300])   # broken after the image pass

    import dcclip_core.ocr as ocr
    real = ocr.TextReader.recognise

    def fails_on_cat(self, im):                        # the OCR models failing on one photo
        if im.size == Image.open(root / "cat.jpg").size:
            raise RuntimeError("onnxruntime: bad allocation")
        return real(self, im)

    monkeypatch.setattr(ocr.TextReader, "recognise", fails_on_cat)
    whole = lambda self, im: np.asarray([[[0, 0], [im.size[0], 0], [im.size[0], im.size[1]], [0, im.size[1]]]],
                                        np.float32)
    monkeypatch.setattr(ocr.TextReader, "gate_boxes", whole)              # every photo past the gate
    monkeypatch.setattr(ocr.TextReader, "confirm", lambda self, im, boxes: True)
    st = read_texts(dbp, model=model, workers=1)
    assert st["read"] == 5 and st["errors"] == 2
    s = Searcher(dbp, model=model)
    errors = {Path(e["path"]).name: e["reason"] for e in s.text_stats()["errors"]}
    assert "RuntimeError" in errors["cat.jpg"] and "bad allocation" in errors["cat.jpg"]
    assert "dog.jpg" in errors and errors["dog.jpg"]
    assert s.text_of(root / "tiny.png")["state"] == "none"
    turned = s.text_of(root / "turned.jpg")                # EXIF-turned: read upright, box in upright pixels
    assert any("停车场" in ln["text"] for ln in turned["lines"])
    w, h = Image.open(root / "turned.jpg").size
    assert all(b[2] <= h and b[3] <= w for b in (ln["box"] for ln in turned["lines"]))
    mirrored = s.text_of(root / "mirror.jpg")["lines"]     # mirrored writing: no confident nonsense
    assert not any("exit" in ln["text"].lower() for ln in mirrored) and len(mirrored) <= 1
    assert Path(s.search("a cat", k=1)[0]["path"]).name == "cat.jpg"     # still found by its picture
    s.close()
    assert read_texts(dbp, model=model)["read"] == 0      # not retried until the file changes


def test_a_dense_page_is_capped_and_says_so(tmp_path):
    from dcclip_core.ocr import TextReader
    p = render(tmp_path / "page.jpg", [f"Line {i} of the page 第{i}行" for i in range(8)], px=40,
               size=(1200, 900))
    r = TextReader(threads=2, max_lines=3).read(p)
    assert r.state == "capped" and len(r.lines) == 3 and r.dropped >= 3 and "3 lines" in r.note


@pytest.mark.slow
def test_a_killed_text_pass_resumes_where_it_stopped(tmp_path, model):
    root = tmp_path / "k"
    for i, word in enumerate(["图书馆", "医院", "机场", "超市", "药店", "车站"]):
        render(root / f"{i}.jpg", [f"{word} {i}"])
    dbp = tmp_path / "k.db"
    build_index(root, dbp, model=model)
    kill_pass_after("import functools; from index.textpass import read_texts; "
                    "run = functools.partial(read_texts, workers=1)", dbp, tmp_path)     # kill -9 after 2 photos
    db = PhotoDB(dbp)
    done_before = sum(db.text_read_counts().values())
    assert 2 <= done_before < 6 and db.integrity_check() == "ok"
    db.close()
    st = read_texts(dbp, model=model)
    assert st["read"] == 6 - done_before and st["pending"] == 0
    db = PhotoDB(dbp)
    assert sum(db.text_read_counts().values()) == 6 and db.count_text_lines() >= 6
    db.close()


def test_literal_match_kinds(tmp_path):
    """Each literal match says its kind; a translation found only inside a longer word counts for nothing."""
    from index.textsearch import literal
    db = PhotoDB(tmp_path / "l.db")
    lines = {1: "EXIT 出口", 2: "Sunset Beach Road", 3: "Exits 4-6", 4: "花园路"}
    for i, text in lines.items():
        db.execute("INSERT INTO images(id, path, sha256) VALUES (?, ?, 'x')", (i, f"/p/{i}.jpg"))
        db.put_text(i, "x", "r", "text", [{"text": text, "norm": text.lower(), "box": (0, 0, 1, 1), "conf": 1.0,
                                            "script": "latin"}])
    kinds = lambda q: {i: m[2] for i, m in literal(db, q).items()}
    assert kinds("exit") == {1: "exact", 3: "part"}
    assert kinds("sunset beach") == {2: "exact"}
    assert kinds("beach sunset") == {2: "words"}
    assert kinds("出口") == {1: "exact", 3: "part"}                  # "exit" inside "Exits": a part
    assert kinds("日落海滩")[2] == "translation"                   # sunset + beach, word by word
    assert kinds("出口 海滩") == {1: "some words", 2: "some words"}
    assert kinds("花") == {4: "part"}                               # one Chinese character is a part only
    db.close()
