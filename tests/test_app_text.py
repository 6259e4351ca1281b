"""Text in photos, in the app: the text pass runs in the background after the image pass (status and Index tab
progress, stopped by a new indexing request and resumed after it), search results quote the line they matched,
the detail view boxes it on the photo and shows all of the photo's text with a copy button, the "text in photo"
filter, the relevance gate for words only written in a photo, unreadable text listed with the reason, the booth.

Through ``ui.backend.Backend`` and the tabs' handlers, on the shipped model, a few bundled demo photos and two
photos with large rendered text (Noto Sans CJK); one end-to-end test (slow) drives ``python app.py`` with
gradio_client and headless Chromium in Chinese and English (screenshots in $DCCLIP_TEXT_SHOTS, default
/tmp/shots_text)."""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from conftest import DEMO, FakeModel, browser, needs_model

pytestmark = needs_model

FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
SHOTS = Path(os.environ.get("DCCLIP_TEXT_SHOTS") or "/tmp/shots_text")
DEMO_PHOTOS = ("cat_chelsea.jpg", "coffee.jpg", "rocket.jpg")
GRADUATION = ("北京大学", "2024年毕业典礼")
SIGN = ("EXIT 出口", "QWXZV")

if not FONT.is_file():
    pytest.skip(f"no CJK font at {FONT} (Debian package fonts-noto-cjk)", allow_module_level=True)


class Req:
    """What the handlers read of a gr.Request: the headers."""

    def __init__(self, lang: str = "en"):
        al = {"zh": "zh-CN,zh;q=0.9", "zh_hant": "zh-TW,zh;q=0.9"}.get(lang, "en-US,en;q=0.9")
        self.headers = {"accept-language": al, "host": "127.0.0.1:7860"}


def text_photo(path: Path, lines, fg, bg, base: Path | None = None) -> Path:
    """A 1200x900 photo with ``lines`` written large and centred: on a plain ``bg``, or on a photo (``base``) in
    ``bg`` boxes, as on a banner."""
    im = Image.open(base).convert("RGB").resize((1200, 900)) if base else Image.new("RGB", (1200, 900), bg)
    draw, font = ImageDraw.Draw(im), ImageFont.truetype(str(FONT), 110)
    for i, line in enumerate(lines):
        w, y = draw.textlength(line, font=font), 250 + 220 * i
        if base:
            draw.rectangle([600 - w / 2 - 30, y - 10, 600 + w / 2 + 30, y + 150], fill=bg)
        draw.text((600 - w / 2, y), line, font=font, fill=fg)
    im.save(path, quality=92)
    return path


def make_folder(root: Path) -> Path:
    """Three demo photos, a graduation banner over the temple photo and a green exit sign."""
    root.mkdir(parents=True, exist_ok=True)
    for name in DEMO_PHOTOS:
        shutil.copy(DEMO / name, root / name)
    text_photo(root / "graduation.jpg", GRADUATION, (150, 20, 20), (250, 245, 235), base=DEMO / "temple_china.jpg")
    text_photo(root / "exit_sign.jpg", SIGN, (255, 255, 255), (0, 120, 60))
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("text") / "photos")


@pytest.fixture(scope="module")
def backend(folder, tmp_path_factory, shipped_model):
    """The folder indexed with the shipped model, its text read."""
    from ui.backend import Backend
    tmp = tmp_path_factory.mktemp("text-lib")
    be = Backend(tmp / "library.db", model=shipped_model, root=folder, thumb_dir=tmp / "thumbs").start()
    assert be.wait(120), be.error
    assert be.wait_text(300) and not be.text_error, be.text_error
    return be


def _names(results) -> list[str]:
    return [Path(r["path"]).name for r in results]


# ------------------------------------------------------------------------------ the background text pass
def test_text_pass_runs_after_the_image_pass_and_yields_to_new_indexing(tmp_path, shipped_model, monkeypatch):
    """The page is ready (searchable) as soon as the image pass is done, while the text pass reads in the
    background with its progress in the status line; adding a folder stops the text pass before its image pass
    runs, and the text pass then resumes and reads both folders."""
    import index
    from index import textpass
    from ui.backend import Backend
    from ui.common import status_text
    from ui.tabs import folders as F
    first = make_folder(tmp_path / "first")
    more = tmp_path / "more"
    more.mkdir()
    text_photo(more / "sign_more.jpg", ("出口",), (255, 255, 255), (0, 120, 60))
    gate, held, read = threading.Event(), threading.Event(), []
    real_read, real_build = textpass.read_one, index.build_index

    def held_read(reader, path):                     # the first photo waits until the test has looked
        held.set()
        assert gate.wait(120)
        read.append(Path(path).name)
        return real_read(reader, path)

    text_running_at_build = []

    def build(root, *a, **kw):
        text_running_at_build.append(be.text_running)
        return real_build(root, *a, **kw)
    monkeypatch.setattr(textpass, "read_one", held_read)
    be = Backend(tmp_path / "library.db", model=shipped_model, root=first, thumb_dir=tmp_path / "thumbs").start()
    assert be.wait(120) and be.state == "ready", be.error
    try:
        assert held.wait(120) and be.text_running
        assert _names(be.run_search("猫", k=1)) == ["cat_chelsea.jpg"]          # searches meanwhile
        assert be.status()["text"]["running"] is True
        assert "Reading text in photos: 0 / 5" in status_text(be, "en"), status_text(be, "en")   # known from the start
        assert "正在读取照片中的文字" in status_text(be, "zh") and "正在讀取照片中的文字" in status_text(be, "zh_hant")
        monkeypatch.setattr(index, "build_index", build)
        adding = threading.Thread(target=be.index_folder, args=(str(more),))
        adding.start()                              # waits for the photo being read, then indexes
        time.sleep(0.5)
        assert not text_running_at_build           # the image pass has not started under the text pass
    finally:
        gate.set()
    adding.join(120)
    assert text_running_at_build == [False]
    assert be.wait_text(300) and not be.text_error, be.text_error
    st = be.stats()["text"]
    assert st["pending"] == 0 and st["photos"].get("error", 0) == 0, st
    assert st["with_text"] == 3 and set(read) >= set(DEMO_PHOTOS) | {"graduation.jpg", "exit_sign.jpg",
                                                                    "sign_more.jpg"}, (st, read)
    assert "Reading text" not in status_text(be, "en")
    info = F.text_md(be, "zh")
    assert info.startswith("照片中的文字：3 张照片有文字") and "正在读取" not in info, info
    assert set(_names(be.run_search("出口", k=2))) == {"exit_sign.jpg", "sign_more.jpg"}


def test_booth_reads_the_text_of_its_photos(tmp_path, folder, shipped_model):
    """--demo builds its own database: the text of its photos is read too, and visitors still cannot write."""
    from ui.backend import Backend, ReadOnlyError
    be = Backend(tmp_path / "booth" / "demo.db", model=shipped_model, root=folder, demo=True,
                 thumb_dir=tmp_path / "booth" / "thumbs").start()
    assert be.wait(120) and be.wait_text(300) and not be.text_error, (be.error, be.text_error)
    assert be.stats()["text"]["pending"] == 0 and be.stats()["text"]["with_text"] == 2
    top = be.run_search("出口", k=3)[0]
    assert Path(top["path"]).name == "exit_sign.jpg" and top["why"][0]["text"] == "EXIT 出口", top["why"]
    with pytest.raises(ReadOnlyError):
        be.index_folder(str(folder))


def test_new_model_embeds_the_lines_again(tmp_path, folder, shipped_model):
    """A library whose text was read (and embedded) under another model: at start-up the photos are
    re-embedded, then the text pass embeds every worded line for the loaded model without reading again."""
    from index import PhotoDB
    from index.indexer import model_identity
    from ui.backend import Backend
    old = Backend(tmp_path / "library.db", model=FakeModel(hash="old-model"), root=folder,
                  thumb_dir=tmp_path / "thumbs").start()
    assert old.wait(120) and old.wait_text(300) and not old.text_error, (old.error, old.text_error)
    be = Backend(tmp_path / "library.db", model=shipped_model, root=folder, thumb_dir=tmp_path / "thumbs").start()
    assert be.wait(120) and be.wait_text(300) and not be.text_error, (be.error, be.text_error)
    mhash, dims = model_identity(shipped_model)[1], int(shipped_model.info["dims"])
    with PhotoDB(tmp_path / "library.db", create=False) as db:
        ids, _, vecs = db.line_vectors(mhash, dims)
        assert len(ids) == 4 and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=0.01)   # 4 lines, all worded
    assert be.text_done == 0                                               # nothing read again: embedded only
    assert be.run_search("毕业典礼", k=1)[0]["text_match"] == "exact"


# ------------------------------------------------------------------------------ results
@pytest.mark.parametrize("lang, query", [("zh", "毕业典礼"), ("en", "毕业典礼"), ("zh_hant", "畢業典禮")])
def test_written_words_come_first_quoted_under_the_tile(backend, lang, query):
    from ui.tabs import search as S
    gallery, msg, kept, _ = asyncio.run(S.do_search(backend, query, 20, "any", request=Req(lang)))
    line1, _, line2 = gallery[0]["caption"].partition("\n")
    assert line1.startswith("●●● graduation.jpg"), gallery[0]["caption"]
    assert line2.startswith("“2024年毕业典礼”"), line2                       # the line as written, then concepts
    assert kept[0]["why"][0] == {"text": "2024年毕业典礼", "box": kept[0]["why"][0]["box"], "match": "exact"}


def test_text_entries_are_not_concepts(backend):
    """The text entry of ``why`` has no en / zh / share: the chips, the JSON API and the heatmap leave it out."""
    from ui.common import why_items, why_text
    from ui.tabs import search as S
    top = backend.run_search("北京大学", k=3)[0]
    assert Path(top["path"]).name == "graduation.jpg" and "text" in top["why"][0] and len(top["why"]) > 1
    for lang in ("en", "zh", "zh_hant"):
        names = [n for n, _ in why_items(top, lang)]
        assert names and "?" not in names and "北京大学" not in names, names
        assert why_text(top, lang).startswith("“北京大学” · ")
    res = asyncio.run(S.api_search(backend, "北京大学", 3))
    assert res[0]["name"] == "graduation.jpg" and res[0]["why"][0]["text"] == "北京大学", res[0]
    assert res[0]["why"][0]["match"] == "exact" and all("percent" in w for w in res[0]["why"][1:])
    img, caption = backend.why_heatmap(top["id"], "en", concepts=top["why"])
    assert img.width > 100 and caption


def test_a_meaning_match_is_marked_as_one():
    from ui.common import why_text
    r = {"score": 0.5, "why": [{"text": "车票 Ticket", "box": [0, 0, 9, 9], "match": "meaning"},
                               {"concept": "x", "en": "ticket", "zh": "票", "share": 0.2}]}
    assert why_text(r, "en") == "≈“车票 Ticket” · ticket 40%"
    long = {"score": 0.5, "why": [{"text": "北京大学" * 10, "box": [0, 0, 9, 9], "match": "exact"}]}
    assert why_text(long, "zh").endswith("…”") and len(why_text(long, "zh")) < 20


def test_query_has_match_for_a_word_only_written_in_a_photo(backend):
    """"qwxzv" means nothing to the image model, but it is written on the sign: a match, shown first."""
    from ui.tabs import search as S
    res = backend.run_search("qwxzv", k=5)
    assert _names(res)[0] == "exit_sign.jpg" and res[0]["text_match"] == "exact"
    assert backend.query_has_match("qwxzv", res)
    gallery, msg, _, _ = asyncio.run(S.do_search(backend, "qwxzv", 20, "good", request=Req("en")))
    assert gallery and gallery[0]["caption"].startswith("●●● exit_sign.jpg") and "“QWXZV”" in gallery[0]["caption"]
    assert not backend.query_has_match("zqjxkv", backend.run_search("zqjxkv", k=5))  # written nowhere


# ------------------------------------------------------------------------------ filter
def test_text_filter(backend):
    from ui.tabs import search as S

    def shown(lang="en", **kw):
        gallery, msg, kept, _ = asyncio.run(S.do_search(backend, "a photo", 20, "all", request=Req(lang), **kw))
        return sorted(_names(kept)), msg
    every, _ = shown()
    assert every == sorted(DEMO_PHOTOS + ("exit_sign.jpg", "graduation.jpg"))
    assert shown(text_mode="with")[0] == ["exit_sign.jpg", "graduation.jpg"]
    assert shown(text_mode="contains", text_value="出口")[0] == ["exit_sign.jpg"]
    assert shown(text_mode="contains", text_value="exit")[0] == ["exit_sign.jpg"]          # case does not matter
    assert shown(text_mode="contains", text_value="北京")[0] == ["graduation.jpg"]
    assert shown(text_mode="contains", text_value="no such words")[0] == []
    names, msg = shown("zh", text_mode="contains", text_value="  ")
    assert names == [] and "请输入照片中应包含的文字" in msg, msg
    assert _names(backend.run_search("a photo", k=20, text="毕业")) == ["graduation.jpg"]   # the filter path


# ------------------------------------------------------------------------------ detail view
def test_detail_boxes_the_line_and_shows_all_the_text(backend):
    from ui.tabs import search as S
    from ui.why import BOX
    _, _, kept, _ = asyncio.run(S.do_search(backend, "毕业典礼", 20, "any", request=Req("zh")))
    info, why, near, box = S.on_select(backend, kept, SimpleNamespace(index=0), Req("zh"))
    html = why["value"] if isinstance(why, dict) else why.value
    assert 'class="why-quote">“2024年毕业典礼”</span>' in html and "照片中写着这些字" in html, html[:500]
    assert "data:image/jpeg;base64," in html and "方框：照片中“2024年毕业典礼”的位置" in html
    assert str(backend.root) not in html and "/photo/" not in html
    assert box.value == "北京大学\n2024年毕业典礼" and box.visible and box.label == "这张照片中的文字（2 行）"
    assert "graduation.jpg" in info and near
    # the box is drawn where the line is: cyan on the outline, the photo inside untouched by it
    img, caption = backend.why_picture(kept[0]["id"], "en", why=kept[0]["why"])
    assert "Box: where “2024年毕业典礼” is written" in caption and caption.startswith("Warm colours"), caption
    x0, y0, x1, y1 = (v * img.width / 1200 for v in kept[0]["why"][0]["box"])
    a = np.asarray(img, np.int32)
    edge = [a[int(round((y0 + y1) / 2)), max(0, int(x0) - d)] for d in range(1, 8)]
    assert any(abs(p - BOX).max() < 40 for p in edge), edge
    plain = backend.why_heatmap(kept[0]["id"], "en", concepts=kept[0]["why"])[0]
    assert plain.size == img.size and not np.array_equal(np.asarray(plain), np.asarray(img))


def test_detail_of_a_photo_without_text(backend):
    from ui.tabs import search as S
    _, _, kept, _ = asyncio.run(S.do_search(backend, "猫", 20, "any", request=Req("en")))
    assert Path(kept[0]["path"]).name == "cat_chelsea.jpg"
    info, why, near, box = S.on_select(backend, kept, SimpleNamespace(index=0), Req("en"))
    assert box.visible is False and box.value == "" and "could not be read" not in info
    assert backend.text_of(kept[0]["path"])["state"] == "none"


def test_unreadable_text_is_listed_with_the_reason(tmp_path, shipped_model):
    """A photo damaged after the image pass: the text pass records why, the Index tab lists it (in the page's
    language), the detail view says so, and the photo stays searchable by its image."""
    from index import build_index
    from ui.backend import Backend
    from ui.tabs import folders as F
    from ui.tabs import search as S
    root = tmp_path / "photos"
    root.mkdir()
    shutil.copy(DEMO / "cat_chelsea.jpg", root / "cat.jpg")
    text_photo(root / "exit_sign.jpg", SIGN, (255, 255, 255), (0, 120, 60))
    build_index(str(root), tmp_path / "library.db", model=shipped_model, save_faiss=False)
    data = (root / "cat.jpg").read_bytes()
    (root / "cat.jpg").write_bytes(data[:len(data) // 3])                # damaged since it was indexed
    be = Backend(tmp_path / "library.db", model=shipped_model, thumb_dir=tmp_path / "thumbs").start()
    assert be.wait(120) and be.wait_text(300) and not be.text_error, (be.error, be.text_error)
    problems = be.text_problems()
    assert [(Path(p["path"]).name, p["state"]) for p in problems] == [("cat.jpg", "error")], problems
    assert problems[0]["reason"].startswith("truncated or corrupt")
    rows = F.text_table(be, "zh").value["data"]
    assert [(Path(f).name, why) for f, why in rows] == [("cat.jpg", "图片数据损坏或不完整")], rows
    assert F.text_table(be, "en").value["data"][0][1].startswith("truncated or corrupt")
    info, *_ = S.photo_detail(be, problems[0]["path"], "zh", "http://127.0.0.1:7860")
    assert "无法读取这张照片中的文字：图片数据损坏或不完整。" in info, info
    assert F.text_md(be, "zh") == "照片中的文字：1 张照片有文字 · 共 2 行"
    assert _names(be.run_search("猫", k=1)) == ["cat.jpg"]


def test_text_notes():
    from ui.i18n import reason_text
    from ui.tabs.search import text_note
    assert text_note({}, "en") == "" and text_note({"state": "none", "lines": []}, "en") == ""
    assert text_note({"state": None, "lines": []}, "zh") == "这张照片中的文字还没有读取。"
    capped = {"state": "capped", "note": "12 more lines than the 300 lines / 6000 characters kept",
              "lines": [{"text": "x"}] * 300}
    assert text_note(capped, "en") == "This photo holds more text than is kept: the first 300 lines are shown."
    assert text_note(capped, "zh_hant") == "這張照片中的文字太多：只顯示前 300 行。"
    failed = "text could not be read (RuntimeError: [ONNXRuntimeError] bad shape)"
    assert reason_text("en", failed) == "text could not be read"                    # no class names
    assert reason_text("zh", failed) == "文字识别在这张照片上出错"


# ------------------------------------------------------------------------------ end to end (slow)
@pytest.mark.slow
@pytest.mark.e2e
def test_app_text_end_to_end_and_browser(tmp_path, shipped_model):
    """``python app.py --db …`` on the text folder, indexed beforehand with a photo damaged since (a squirrel):
    /status reports the text pass until it ends; the /search API (its old parameters still work, the text filter
    comes last) quotes the line; /detail has the photo's text. In Chromium (zh-CN, en-US): the caption quotes the
    line; the detail view shows the box, the text with a copy button, and for the damaged photo why its text
    could not be read; the Index tab counts the text and lists the damaged photo. Screenshots in SHOTS."""
    import json
    from conftest import AppProcess
    from index import PhotoDB, build_index
    from ui.backend import ROOTS_META
    root = make_folder(tmp_path / "photos")
    shutil.copy(DEMO / "squirrel.jpg", root / "damaged.jpg")
    db = tmp_path / "library.db"
    build_index(str(root), db, model=shipped_model, save_faiss=False)
    data = (root / "damaged.jpg").read_bytes()
    (root / "damaged.jpg").write_bytes(data[:len(data) // 3])
    with PhotoDB(db) as d:                      # an added folder: listed, not re-scanned at start-up
        d.set_meta(ROOTS_META, json.dumps([str(root)]))
    app = AppProcess(tmp_path / "cache", "--db", str(db), log=tmp_path / "app.log")
    try:
        c = app.client
        t0 = time.time()
        while (st := c.predict(api_name="/status")["text"])["running"] or not st["total"]:
            assert time.time() - t0 < 300, (st, app.log_tail())
            time.sleep(0.5)
        assert st["error"] == "" and st["done"] == st["total"] == 6, st
        gallery, msg, _ = c.predict("毕业典礼", 20, "any", "", "", "", api_name="/search")
        assert gallery[0]["caption"].startswith("●●● graduation.jpg") and "“2024年毕业典礼”" in gallery[0]["caption"]
        gallery, msg, _ = c.predict("a photo", 20, "all", "", "", "", "contains", "出口", api_name="/search")
        assert [g["caption"].split(" · ")[0].split()[-1] for g in gallery] == ["exit_sign.jpg"], gallery
        gallery, msg, _ = c.predict("a photo", 20, "all", "", "", "", "with", "", api_name="/search")
        assert len(gallery) == 2
        res = c.predict("qwxzv", 3, "any", api_name="/search_json")
        assert res[0]["name"] == "exit_sign.jpg" and res[0]["why"][0]["text"] == "QWXZV", res
        assert c.predict("graduation.jpg", api_name="/detail")["text"] == {"state": "text", "lines": list(GRADUATION)}
        assert c.predict("damaged.jpg", api_name="/detail")["text"] == {"state": "error", "lines": []}
        _browse(app.url, root)
    finally:
        app.stop()


# (locale, text query, its quoted line, how it matched, the text box's label, squirrel query, the damaged photo's
# note, its reason in the Index tab, the Index tab's text line)
PAGES = [("zh-CN", "毕业典礼", "“2024年毕业典礼”", "照片中写着这些字", "这张照片中的文字（2 行）", "松鼠",
          "无法读取这张照片中的文字：图片数据损坏或不完整。", "图片数据损坏或不完整", "照片中的文字：2 张照片有文字"),
         ("en-US", "exit", "“EXIT 出口”", "written in the photo", "Text in this photo (2 lines)", "squirrel",
          "The text in this photo could not be read: truncated or corrupt image data", "truncated or corrupt",
          "Text in photos: 2 photos with text")]


def _browse(url: str, root: Path) -> None:
    sync_playwright, chromium = browser()
    from playwright.sync_api import expect
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chrome = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            for locale, query, quote, kind, label, squirrel, note, reason, index in PAGES:
                page = chrome.new_page(locale=locale, viewport={"width": 1366, "height": 1000})
                page.goto(url, wait_until="domcontentloaded")
                caption = _search(page, query)
                assert quote in caption, caption
                page.screenshot(path=str(SHOTS / f"results_{locale}.png"), full_page=True)
                _open_first(page)
                page.locator("#why .why-quote").first.wait_for(state="visible", timeout=30_000)
                assert page.locator("#why .why-quote").first.inner_text() == quote
                assert kind in page.locator("#why .why-kind").first.inner_text()
                text = page.locator("#photo-text textarea").first
                text.wait_for(state="visible", timeout=30_000)
                assert text.input_value() in ("\n".join(GRADUATION), "\n".join(SIGN)), text.input_value()
                assert not text.is_editable() and page.locator("#photo-text button").count() == 1      # copy
                assert label in page.locator("#photo-text").inner_text()
                assert page.locator("#why img").first.get_attribute("src").startswith("data:image/jpeg;base64,")
                assert str(root) not in page.locator("#why").inner_html()
                page.wait_for_timeout(500)
                page.locator("#detail").screenshot(path=str(SHOTS / f"detail_{locale}.png"))

                assert "damaged.jpg" in _search(page, squirrel)
                _open_first(page)
                info = page.locator("#detail-info")
                info.get_by_text(note).first.wait_for(state="visible", timeout=30_000)
                assert not page.locator("#photo-text textarea").first.is_visible()
                page.locator("#detail").screenshot(path=str(SHOTS / f"detail_damaged_{locale}.png"))

                page.get_by_text(re.compile("^(选项|Options)$")).first.click()
                filt = page.locator("#text-filter")
                filt.wait_for(state="visible", timeout=10_000)
                filt.get_by_text(re.compile("^(包含指定文字的照片|Photos whose text contains…)$")).click()
                contains = page.locator("#text-contains textarea, #text-contains input").first
                contains.wait_for(state="visible", timeout=10_000)
                contains.fill("出口")
                captions = _search(page, "a photo", all_captions=True)
                assert len(captions) == 1 and "exit_sign.jpg" in captions[0], captions
                page.screenshot(path=str(SHOTS / f"filter_{locale}.png"), full_page=True)

                page.get_by_role("tab", name=re.compile("^(索引|Index)$")).click()
                page.locator("#text-info").get_by_text(index).first.wait_for(state="visible", timeout=30_000)
                bad = page.locator("#text-bad")
                bad.wait_for(state="visible", timeout=30_000)
                expect(bad).to_contain_text("damaged.jpg", timeout=30_000)
                assert reason in bad.inner_text(), bad.inner_text()
                page.screenshot(path=str(SHOTS / f"index_{locale}.png"), full_page=True)
                page.close()
        finally:
            chrome.close()


def _search(page, query: str, all_captions: bool = False):
    """Type a query, press Enter, wait for its results message: the first result's caption (or all of them)."""
    box = page.locator("#query textarea, #query input").first
    box.wait_for(state="visible", timeout=60_000)
    box.fill(query)
    box.press("Enter")
    page.locator("#message").get_by_text(query).first.wait_for(state="visible", timeout=60_000)
    page.locator("#gallery .caption-label").first.wait_for(state="visible", timeout=60_000)
    page.wait_for_timeout(1000)                                                   # thumbnails paint
    captions = page.locator("#gallery .caption-label").all_inner_texts()
    return captions if all_captions else captions[0]


def _open_first(page) -> None:
    """Click the first result (closing the gallery's preview of an earlier click first)."""
    close = page.locator("#gallery button[aria-label='Close'], #gallery .preview button[title='Close']")
    if close.count() and close.first.is_visible():
        close.first.click()
    page.locator("#gallery .thumbnail-item").first.click()
