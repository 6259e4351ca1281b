"""What a person trusting the app with their photos and their labelling work relies on (issue: the booth leaks and
writes, any file under an indexed folder is served, corrections get lost, rough edges). Real `python app.py`
processes on the shipped model, a private folder beside the demo photos, gradio_client as the page's API."""
from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import DEMO, ROOT, AppProcess, browser, http, needs_model

gradio_client = pytest.importorskip("gradio_client", reason="gradio_client not installed")
pytestmark = needs_model

SECRET = b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot-for-your-eyes\n"
N_DEMO = len(list(DEMO.glob("*.jpg")))


def _private_folder(root: Path) -> Path:
    """A user's folder: photos, a broken file, a key and notes that must never be served."""
    from PIL import Image
    p = root / "私人照片"
    (p / ".ssh").mkdir(parents=True)
    (p / ".ssh" / "id_rsa").write_bytes(SECRET)
    (p / "notes.txt").write_text("my secret notes\n", encoding="utf-8")
    shutil.copy(ROOT / "tests" / "data" / "rocket.jpg", p / "my_rocket.jpg")
    (p / "copies").mkdir()
    shutil.copy(DEMO / "butterfly.jpg", p / "copies" / "butterfly.jpg")            # the same bytes: stacked
    (p / "other").mkdir()
    shutil.copy(ROOT / "tests" / "data" / "coffee.jpg", p / "other" / "coffee.jpg")  # same name, other photo
    im = Image.open(DEMO / "cat_chelsea.jpg").convert("RGB")
    im.resize((im.width // 2, im.height // 2)).save(p / "chelsea_small.jpg", quality=70)  # resized + recompressed
    (p / "broken.jpg").write_bytes(b"this is a text file, not a photo")
    return p


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """Plain `python app.py` (the user's library, seeded with the demo photos) with a private folder added."""
    tmp = tmp_path_factory.mktemp("trust")
    app = AppProcess(tmp / "cache", log=tmp / "library.log")
    app.tmp = tmp
    app.private = _private_folder(tmp)
    try:
        yield app
    finally:
        app.stop()


def _caps(gallery) -> list[str]:
    return [g["caption"] for g in _value(gallery) or []]


def _value(out):
    return out["value"] if isinstance(out, dict) and "value" in out else out


def _file(f) -> Path:
    f = _value(f)
    return Path(f["path"] if isinstance(f, dict) else f)


def _rows(df) -> list:
    df = _value(df)
    return df["data"] if isinstance(df, dict) else list(df)


def _search(c, q, k=20, show="any", folder="", date_from="", date_to=""):
    out = c.predict(q, k, show, folder, date_from, date_to, api_name="/search")
    return out[0], out[1]


# ------------------------------------------------------------------------------------------- the library
def test_add_folder_updates_status_and_counts_every_unreadable_file(lib):
    c = lib.client
    md, bad, msg, status = c.predict(str(lib.private), api_name="/add_folder")
    assert "4 new" in msg and "1 unreadable" in msg, msg
    assert f"{N_DEMO + 4} photos" in status, status                  # the status line, not a stale count
    md, bad, msg, status = c.predict(api_name="/rescan")
    assert "1 unreadable files in all" in msg, msg                    # the same count the Index tab lists
    assert len(_rows(bad)) == 1 and _rows(bad)[0][0].endswith("broken.jpg")
    zh = lib.client_for("zh")
    md, bad = zh.predict(api_name="/index_info")
    assert _rows(bad)[0][1] == "不是图片", _rows(bad)                   # the reason in the page's language


def test_only_thumbnails_and_indexed_photos_are_served_by_id(lib):
    root = str(lib.private.resolve())
    for target in (f"{root}/.ssh/id_rsa", f"{root}/notes.txt", f"{root}/my_rocket.jpg", f"{root}/../私人照片/notes.txt"):
        for prefix in ("/gradio_api/file=", "/file=", "/gradio_api/file/"):
            code, body = http(lib.url + prefix + target)
            assert code != 200 and b"not-for-your-eyes" not in body and b"secret notes" not in body, (prefix, target)
    d = lib.client.predict("my_rocket.jpg", api_name="/detail")
    assert d["full"].startswith("/photo/"), d
    code, body = http(lib.url + d["full"])
    assert code == 200 and body == (lib.private / "my_rocket.jpg").read_bytes()
    for bad in ("/photo/0", "/photo/999999", "/photo/abc", "/photo/..%2f..%2fetc%2fpasswd", "/photo/-1"):
        code, body = http(lib.url + bad)
        assert code == 404 and not body.startswith(b"\xff\xd8"), bad


def test_results_stack_exact_copies_and_tell_same_names_apart(lib):
    gallery, msg = _search(lib.client, "蝴蝶")
    caps = _caps(gallery)
    assert "butterfly.jpg" in caps[0] and "×2" in caps[0], caps     # the demo photo and its copy: one tile
    assert sum("butterfly.jpg" in x for x in caps) == 1, caps
    gallery, _ = _search(lib.client, "一杯咖啡", show="all", k=40)
    coffee = [x for x in _caps(gallery) if "coffee.jpg" in x]
    assert len(coffee) == 2 and any("other/" in x for x in coffee) and any("demo/" in x for x in coffee), coffee
    assert all(re.search(r"\b\d{4}-\d{2}-\d{2}\b", x) for x in coffee), coffee   # when it was taken / changed


def test_duplicates_are_the_same_picture_not_the_same_kind(lib):
    d = lib.client.predict("cat_chelsea.jpg", api_name="/detail")
    assert d["duplicates"] == ["chelsea_small.jpg"], d
    d = lib.client.predict("dog_chicky.jpg", api_name="/detail")
    assert d["duplicates"] == [] and d["neighbours"], d


def test_nonsense_gets_no_good_match_and_tiles_show_no_raw_scores(lib):
    c = lib.client
    for q in ("qwxzv", "🐱🐱🐱🐶", "zq" * 1000):
        gallery, msg = _search(c, q)
        assert gallery == [] and "No good match" in msg, (q[:20], msg, _caps(gallery)[:3])
    gallery, msg = _search(c, "猫")
    caps = _caps(gallery)
    assert caps[0].startswith("●●● cat_chelsea.jpg"), caps
    assert not any(re.search(r"\d\.\d{2}", x) for x in caps), caps
    gallery, msg = _search(c, "猫", k=1)
    assert msg.startswith("1 result for"), msg                         # not "1 results"
    gallery, msg = _search(c, "猫", date_from="2030-01-01", date_to="2020-01-01")
    assert gallery == [] and "after the end date" in msg, msg
    assert c.predict("qwxzv", 5, api_name="/search_json") == []
    assert len(c.predict("qwxzv", 5, "all", api_name="/search_json")) == 5          # "all": the top k, ranked


def test_text_search_clears_the_image_query(lib):
    out = lib.client.predict("猫", 5, "any", "", "", "", api_name="/search")
    assert len(out) == 3 and out[2] is None, out                         # the "search by image" photo is cleared


def test_image_search_with_bad_files_says_why_in_the_users_language(lib, tmp_path):
    from PIL import Image
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is not a photo", encoding="utf-8")
    huge = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(huge)                           # 400 M pixels, a few kB on disk
    for client, lang in ((lib.client, "en"), (lib.client_for("zh"), "zh")):
        for f in (fake, huge):
            gallery, msg = client.predict(gradio_client.handle_file(str(f)), 5, "any", "", "", "",
                                          api_name="/search_image")
            assert gallery == [] and msg, msg
            assert "Error" not in msg and "DCCLIP_" not in msg and str(tmp_path) not in msg and "/tmp" not in msg, msg
            why = {("en", fake): "not an image", ("en", huge): "too large: 20000x20000",
                   ("zh", fake): "不是图片", ("zh", huge): "像素太多"}[(lang, f)]
            assert why in msg and (("不是本应用能读取的照片" in msg) if lang == "zh" else
                                   ("it is not a photo this app can read" in msg)), msg
    assert "Traceback" not in lib.log_tail(100_000)


def test_corrections_survive_any_relabelling_and_can_be_undone(lib):
    c = lib.client

    def label_of(name):
        rows = json.loads(_file(c.predict(api_name="/export_json")[0]).read_text(encoding="utf-8"))
        hit = [r for r in rows if Path(r["path"]).name == name and r["rank"] == 1]
        return hit[0]["label"], hit[0]["source"]

    c.predict("猫, 咖啡, rocket, 花", "", 50, api_name="/label")
    out = c.predict("coffee.jpg", "猫", 50, "", api_name="/label_correct")
    assert "coffee.jpg" in out[1], out[1]
    for labels in ("猫, 咖啡, rocket, 花, dog", "cat, coffee, rocket, flower", "狗"):
        review, msg, *_ = c.predict(labels, "", 50, api_name="/label")
        assert label_of("coffee.jpg") == ("猫", "manual"), labels
        assert any(x.startswith("✎ 猫") for x in _caps(review)), _caps(review)
    out = c.predict("coffee.jpg", 50, "", api_name="/label_undo")
    assert "Removed your correction" in out[1], out[1]
    assert label_of("coffee.jpg")[1] != "manual"


def test_not_sure_and_review_paging(lib):
    c = lib.client
    review, msg, choices, info, page, filt = c.predict("猫, 狗", "", 50, api_name="/label")
    caps = _caps(review)
    assert any(x.endswith("(not sure)") for x in caps), caps           # a rocket is neither a cat nor a dog
    assert "Page 1 of 1" in info, info
    out = c.predict("cat_chelsea.jpg", "猫", 50, "", api_name="/label_correct")
    assert any(x.startswith("✎ 猫") for x in _caps(out[0])), _caps(out[0])


def test_copy_into_class_folders_twice_copies_nothing_new(lib, tmp_path):
    c = lib.client
    c.predict("猫, 咖啡, rocket, 花", "", 50, api_name="/label")
    out = tmp_path / "分类"
    msg = c.predict(str(out), 50, api_name="/label_copy")
    n = len(list(out.rglob("*.jpg")))
    assert n >= N_DEMO and "Copied" in msg, msg
    msg = c.predict(str(out), 50, api_name="/label_copy")
    assert len(list(out.rglob("*.jpg"))) == n and "already there" in msg, msg
    assert not list(out.rglob("* (3).jpg"))          # the two different coffee.jpg: " (2)" once, never again


def test_removing_a_folder_asks_first(lib):
    c = lib.client
    root = str(lib.private.resolve())
    msg = c.predict(root, api_name="/remove_folder_ask")
    assert "Remove" in msg and root in msg, msg
    assert c.predict(api_name="/status")["images"] == N_DEMO + 4            # nothing removed yet
    out = c.predict(root, api_name="/remove_folder")
    assert f"{N_DEMO} photos" in out[3], out[3]                              # status line
    assert c.predict(api_name="/status")["images"] == N_DEMO
    assert (lib.private / "my_rocket.jpg").is_file()
    c.predict(str(lib.private), api_name="/add_folder")                      # back, for the booth test below


# ------------------------------------------------------------------------------------------- the booth
def test_demo_booth_shows_only_the_bundled_photos_and_writes_nothing(lib):
    booth = AppProcess(lib.tmp / "cache", "--demo", log=lib.tmp / "booth.log")
    try:
        c = booth.client
        assert c.predict(api_name="/status")["images"] == N_DEMO
        gallery, _ = _search(c, "猫", show="all", k=100)
        names = {x.split(" · ")[0].split(" ")[-1] for x in _caps(gallery)}
        assert names <= {p.name for p in DEMO.glob("*.jpg")}, names
        md, bad = c.predict(api_name="/index_info")
        assert "私人" not in md and str(lib.private) not in md and _rows(bad) == []
        tbl, *_ = c.predict(api_name="/prompts_list")
        assert all(r[7] == "shipped" for r in _rows(tbl)), _rows(tbl)
        review, msg, *_ = c.predict("猫, 咖啡", "", 50, api_name="/label")      # in memory, for this visitor
        assert review and "Labelled" in msg, msg
        assert c.predict("coffee.jpg", "猫", 50, "", api_name="/label_correct")[1] == "Demo mode: read-only."
        assert c.predict("", "colours-coop", 50, api_name="/label")[1].endswith("Demo mode: read-only.")
        f, msg = c.predict(api_name="/export_csv")
        text = _file(f).read_text(encoding="utf-8-sig")
        assert "/" not in text.split("\n", 1)[1] and "coffee.jpg" in text
        with sqlite3.connect(lib.tmp / "cache" / "booth" / "demo.db") as db:
            assert db.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 0
            assert db.execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'label_set:%'").fetchone()[0] == 0
    finally:
        booth.stop()


def test_booth_database_holding_anything_else_is_rebuilt(tmp_path):
    from index import PhotoDB, build_index
    from ui.backend import prepare_booth
    db = tmp_path / "booth" / "demo.db"
    db.parent.mkdir()
    build_index(str(DEMO), str(db))
    assert prepare_booth(db, DEMO) is False and db.exists()             # only the bundled photos: kept
    with PhotoDB(db) as pdb:
        pdb.set_meta("app_roots", json.dumps(["/home/someone/Pictures"]))
    assert prepare_booth(db, DEMO) is True and not db.exists()


# ------------------------------------------------------------------------------------------- in a browser
@pytest.mark.parametrize("locale,too_big,corrected", [("zh-CN", "文件太大", "✎ 猫"), ("en-US", "exceed", "✎ cat")])
def test_browser_phone_width_upload_limit_and_correction_highlight(lib, tmp_path, locale, too_big, corrected):
    """At 390 px: search works and reads; a 21 MB upload is refused in the page's language; after a correction
    the highlighted tile is the corrected photo (the grid re-sorts)."""
    import os
    import tempfile
    sync_playwright, chromium = browser()
    shots = Path(os.environ.get("DCCLIP_SCREENSHOTS") or Path(tempfile.gettempdir()) / "dcclip-screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    suffix = locale[:2]
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8\xff" + os.urandom(21 * 2 ** 20))
    with sync_playwright() as p:
        chrome = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = chrome.new_page(locale=locale, viewport={"width": 390, "height": 844})
            page.goto(lib.url, wait_until="domcontentloaded")
            box = page.locator("#query textarea, #query input").first
            box.wait_for(state="visible", timeout=60_000)
            box.fill("猫")
            box.press("Enter")
            first = page.locator("#gallery .caption-label").first
            first.wait_for(state="visible", timeout=60_000)
            assert "cat_chelsea.jpg" in first.inner_text()
            page.wait_for_timeout(600)
            page.screenshot(path=str(shots / f"phone_search_{suffix}.png"), full_page=True)
            page.locator("#image-query input[type=file]").set_input_files(str(big))
            page.get_by_text(too_big).first.wait_for(state="visible", timeout=30_000)
            page.screenshot(path=str(shots / f"phone_too_big_{suffix}.png"))
            page.goto(lib.url, wait_until="domcontentloaded")
            page.get_by_role("tab", name="标注" if suffix == "zh" else "Label").click()
            page.locator("#labels textarea, #labels input").first.fill(
                "猫, 咖啡, 火箭, 花" if suffix == "zh" else "cat, coffee, rocket, flower")
            page.locator("#label-btn").click()
            page.locator("#review .caption-label").first.wait_for(state="visible", timeout=60_000)
            tiles = page.locator("#review .thumbnail-item")
            target = next(i for i in range(tiles.count()) if "咖啡" in tiles.nth(i).inner_text()
                          or "coffee" in tiles.nth(i).inner_text())
            tiles.nth(target).click()
            page.wait_for_timeout(400)
            page.locator("#corr-label input").first.fill("猫" if suffix == "zh" else "cat")
            page.keyboard.press("Enter")
            page.locator("#corr-btn").click()
            page.locator("#label-msg").get_by_text("coffee.jpg").first.wait_for(state="visible", timeout=30_000)
            page.wait_for_timeout(800)
            selected = page.locator("#review .thumbnail-item.selected")
            assert selected.count() == 1 and selected.first.inner_text().strip().startswith(corrected), \
                selected.first.inner_text() if selected.count() else "nothing selected"
            page.screenshot(path=str(shots / f"phone_label_{suffix}.png"), full_page=True)
            page.locator("#undo-btn").click()
            page.locator("#label-msg").get_by_text("coffee.jpg").first.wait_for(state="visible", timeout=30_000)
        finally:
            chrome.close()


def test_the_page_speaks_one_language_at_a_time(lib):
    zh, en = lib.client_for("zh"), lib.client
    tbl, *_ = zh.predict(api_name="/prompts_list")
    tbl = _value(tbl)
    assert tbl["headers"][:2] == ["名称", "方法"], tbl["headers"]                  # not "名称 Name"
    rows = _rows(tbl)
    assert any(r[1] == "CoOp（学习提示词）" for r in rows), [r[1] for r in rows]      # method names in Chinese
    assert any(r[3].endswith("…") for r in rows), [r[3] for r in rows]             # cut labels say so
    assert _value(en.predict(api_name="/prompts_list")[0])["headers"][:2] == ["Name", "Method"]
    md, about = zh.predict("default", api_name="/model_card")
    assert "维度" not in about and "dimensions" not in about and "模型文件" in about, about
    from ui.i18n import TABLES, tr
    assert [TABLES["zh_hant"][f"ex_{i}"] for i in (1, 5, 6)] == ["貓", "紅色的花", "寺廟"]   # zh-TW examples
    assert tr("en", "msg_results", n=1, q="猫", ms=3).startswith("1 result for")

