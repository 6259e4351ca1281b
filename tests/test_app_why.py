"""Why a result matches, in the app: chips naming the concepts that make most of its score (in the page's
language), a heatmap of where they are in the photo (computed on demand, in memory), demo mode, and the library
re-embedded in the background when the model changes (search working meanwhile).

Through ``ui.backend.Backend`` and the Search tab's handlers on the shipped model and the bundled demo photos; one
end-to-end test (slow) drives ``python app.py --demo`` with gradio_client and headless Chromium."""
from __future__ import annotations

import asyncio
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DEMO, FakeModel, browser, needs_model

pytestmark = needs_model

CAT = DEMO / "cat_chelsea.jpg"


class Req:
    """What the handlers read of a gr.Request: the headers."""

    def __init__(self, lang: str = "en"):
        al = {"zh": "zh-CN,zh;q=0.9", "zh_hant": "zh-TW,zh;q=0.9"}.get(lang, "en-US,en;q=0.9")
        self.headers = {"accept-language": al, "host": "127.0.0.1:7860"}


@pytest.fixture(scope="module")
def demo_backend(tmp_path_factory, shipped_model):
    """The demo photos indexed with the shipped model (about a second)."""
    from ui.backend import Backend
    tmp = tmp_path_factory.mktemp("why")
    be = Backend(tmp / "library.db", model=shipped_model, root=DEMO, thumb_dir=tmp / "thumbs").start()
    assert be.wait(120), be.error
    return be


def _names(items):
    return [n for n, _ in items]


@pytest.mark.parametrize("query", ["cat", "猫", "貓"])
def test_cat_first_with_chips_naming_a_cat_in_each_language(demo_backend, query):
    from ui.common import why_items, why_text
    res = demo_backend.run_search(query, k=5)
    top = res[0]
    assert Path(top["path"]).name == "cat_chelsea.jpg", [Path(r["path"]).name for r in res]
    assert top["why"] and all({"concept", "en", "zh", "share"} <= set(w) for w in top["why"])
    zh, en, hant = why_items(top, "zh"), why_items(top, "en"), why_items(top, "zh_hant")
    assert any("猫" in n for n in _names(zh)), zh
    assert any("貓" in n for n in _names(hant)) and not any("猫" in n for n in _names(hant)), hant
    assert any(re.search(r"\bcat\b|\bMau\b", n, re.I) for n in _names(en)), en
    assert not any(re.search(r"[\u4e00-\u9fff]", n) for n in _names(en)), en       # English names on en pages
    pcts = [p for _, p in zh]
    assert pcts == sorted(pcts, reverse=True) and 0 < pcts[0] <= 100, zh
    line = why_text(top, "zh")                                                       # "埃及猫 28% · 山猫 26%"
    assert re.fullmatch(r"[^\d·]+ \d+%( · [^\d·]+ \d+%)*", line), line


def test_search_handler_captions_and_detail_panel(demo_backend):
    """The page's handlers: a second caption line with the chips, the results remembered for the detail panel,
    whose why block has the chips and the heatmap as an in-memory image (no file path, no file URL)."""
    from ui.tabs import search as S
    for lang, want in (("zh", "猫"), ("en", "cat"), ("zh_hant", "貓")):
        gallery, msg, kept, _ = asyncio.run(S.do_search(demo_backend, "猫", 20, "any", request=Req(lang)))
        first = gallery[0]["caption"]
        line1, _, line2 = first.partition("\n")
        assert line1.startswith("●●● cat_chelsea.jpg") and want in line2.lower() and "%" in line2, first
        assert kept[0]["why"] and kept[0]["id"] is not None
        info, why, near = S.photo_detail(demo_backend, kept[0], lang, "http://127.0.0.1:7860")
        assert 'class="why-chip"' in why and want in why.lower(), why[:300]
        assert "data:image/jpeg;base64," in why and "<figcaption>" in why
        assert str(DEMO) not in why and "/photo/" not in why and "file=" not in why
        assert near and "cat_chelsea.jpg" in info


def test_search_json_carries_why(demo_backend):
    from ui.tabs import search as S
    res = asyncio.run(S.api_search(demo_backend, "猫", 3))
    assert res[0]["name"] == "cat_chelsea.jpg"
    why = res[0]["why"]
    assert why and any("猫" in w["zh"] for w in why) and all(0 < w["percent"] <= 100 for w in why[:1]), why


def test_heatmap_is_the_photo_with_warm_places_and_a_caption(demo_backend):
    r = demo_backend.run_search("猫", k=1)[0]
    img, caption = demo_backend.why_heatmap(r["id"], "zh", concepts=r["why"])
    with Image.open(CAT) as im:
        w, h = im.size
    assert isinstance(img, Image.Image) and img.mode == "RGB"
    assert max(img.size) <= 640 and abs(img.width / img.height - w / h) < 0.02, (img.size, (w, h))
    assert "猫" in caption and "暖色" in caption, caption
    plain = np.asarray(Image.open(CAT).convert("RGB").resize(img.size), np.float32)
    assert np.abs(np.asarray(img, np.float32) - plain).mean() > 5          # something is drawn over the photo
    img_en, cap_en = demo_backend.why_heatmap(r["id"], "en")                # the photo's own strongest concepts
    assert img_en.size == img.size and cap_en.startswith("Warm colours") and re.search("cat|Mau", cap_en), cap_en
    with pytest.raises(FileNotFoundError):
        demo_backend.why_heatmap(987654, "en")


def test_overlay_warms_the_hot_place_and_dims_the_rest():
    from ui.why import overlay
    photo = Image.new("RGB", (300, 200), (120, 120, 120))
    cam = np.zeros((7, 7), np.float32)
    cam[1:3, 1:3] = 1.0                                                    # top-left of the central square
    out = np.asarray(overlay(photo, cam), np.float32)
    x0 = (300 - 200) // 2
    hot = out[200 * 2 // 7 - 5:200 * 2 // 7 + 5, x0 + 200 * 2 // 7 - 5:x0 + 200 * 2 // 7 + 5].mean((0, 1))
    cold = out[170:190, x0 + 170:x0 + 190].mean((0, 1))
    assert hot[0] > hot[2] + 40 and hot[0] > 140, hot                     # warm (red > blue) and lit
    assert cold.max() < 80 and abs(cold[0] - cold[2]) < 5, cold            # dimmed, not tinted
    assert out.shape == (200, 300, 3)


def test_demo_mode_shows_why_and_writes_nothing(tmp_path, shipped_model, demo_backend):
    from ui.backend import Backend
    from ui.tabs import search as S
    db = tmp_path / "booth" / "demo.db"
    be = Backend(db, model=shipped_model, root=DEMO, demo=True, thumb_dir=tmp_path / "booth" / "thumbs").start()
    assert be.wait(120), be.error
    files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    gallery, msg, kept, _ = asyncio.run(S.do_search(be, "cat", 20, "any", request=Req("en")))
    line1, _, line2 = gallery[0]["caption"].partition("\n")
    assert "cat_chelsea.jpg" in line1 and "%" in line2, gallery[0]["caption"]
    info, why, near = S.photo_detail(be, kept[0], "en", "http://127.0.0.1:7860")
    assert "why-chip" in why and "data:image/jpeg;base64," in why
    assert str(DEMO) not in info + why and "**cat_chelsea.jpg**" in info                   # file names only
    img, caption = be.why_heatmap(kept[0]["id"], "en", concepts=kept[0]["why"])
    assert img.size[0] > 100 and caption
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    written = {p for p in after if p not in files or after[p] != files[p]}
    assert not {p for p in written if not p.name.endswith(("-wal", "-shm"))}, written     # SQLite's own journal


def test_new_model_reembeds_every_folder_in_the_background_and_search_works_meanwhile(tmp_path, shipped_model,
                                                                                       monkeypatch):
    """A library built with another model (a start-up root and a folder added in the Index tab): at start-up
    both are re-embedded with the loaded model, the status line says so with progress, and searches run
    meanwhile over the photos done so far."""
    import index
    from index import PhotoDB, build_index
    from index.indexer import model_identity
    from ui.backend import ROOTS_META, Backend
    from ui.common import status_text
    added = tmp_path / "added"
    added.mkdir()
    shutil.copy(CAT, added / "my_cat.jpg")
    shutil.copy(DEMO / "coffee.jpg", added / "my_coffee.jpg")
    db = tmp_path / "library.db"
    old = FakeModel(hash="old-model")
    build_index(str(DEMO), db, model=old, save_faiss=False)
    build_index(str(added), db, model=old, save_faiss=False)
    with PhotoDB(db) as d:
        d.set_meta(ROOTS_META, f'["{added}"]')
    n_demo = len(list(DEMO.glob("*.jpg")))

    gate, waiting = threading.Event(), threading.Event()
    real = index.build_index

    def slow_second_root(root, *a, **kw):                 # hold the added folder until the test has searched
        if Path(root) == added:
            waiting.set()
            assert gate.wait(60)
        return real(root, *a, **kw)
    monkeypatch.setattr(index, "build_index", slow_second_root)
    be = Backend(db, model=shipped_model, root=DEMO, thumb_dir=tmp_path / "thumbs").start()
    try:
        assert waiting.wait(120), (be.state, be.error)
        assert be.state == "indexing" and be.searchable and be.reembedding == n_demo + 2
        assert be.status()["searchable"] is True
        assert "re-embedding" in status_text(be, "en") and "重新计算" in status_text(be, "zh")
        assert be.total >= n_demo + 2 and be.done >= n_demo
        res = be.run_search("cat", k=30)                   # the demo folder is done, the added one not yet
        names = [Path(r["path"]).name for r in res]
        assert names[0] == "cat_chelsea.jpg" and "my_cat.jpg" not in names, names
        from ui.tabs import search as S
        gallery, msg, _, _ = asyncio.run(S.do_search(be, "cat", 20, "any", request=Req("en")))
        assert gallery and "still indexing" in msg, msg
    finally:
        gate.set()
    assert be.wait(120) and be.state == "ready", be.error
    mhash = model_identity(shipped_model)[1]
    with PhotoDB(db, create=False) as d:
        assert d.count_images(mhash) == d.count_images() == n_demo + 2
    names = [Path(r["path"]).name for r in be.run_search("cat", k=5)]
    assert {"cat_chelsea.jpg", "my_cat.jpg"} <= set(names[:3]), names
    assert be.index_stats["more"][0]["indexed"] == 2
    assert "re-embedding" not in status_text(be, "en")


# ------------------------------------------------------------------------------ end to end (slow)
@pytest.mark.slow
def test_booth_app_why_api_and_browser(tmp_path):
    """``python app.py --demo``: /search_json carries the why; in Chromium (zh-CN) clicking the first result of
    猫 shows chips naming a cat and the heatmap (a data: image), without a file path."""
    from conftest import AppProcess
    app = AppProcess(tmp_path / "cache", "--demo", log=tmp_path / "app.log")
    try:
        res = app.client.predict("猫", 3, "any", api_name="/search_json")
        assert res[0]["name"] == "cat_chelsea.jpg" and any("猫" in w["zh"] for w in res[0]["why"]), res[0]
        sync_playwright, chromium = browser()
        with sync_playwright() as p:
            chrome = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = chrome.new_page(locale="zh-CN", viewport={"width": 1366, "height": 1000})
                page.goto(app.url, wait_until="domcontentloaded")
                box = page.locator("#query textarea, #query input").first
                box.wait_for(state="visible", timeout=60_000)
                box.fill("猫")
                box.press("Enter")
                page.locator("#gallery .caption-label").first.wait_for(state="visible", timeout=60_000)
                assert "%" in page.locator("#gallery .caption-label").first.inner_text()
                page.locator("#gallery .thumbnail-item").first.click()
                page.locator("#why .why-chip").first.wait_for(state="visible", timeout=30_000)
                chips = page.locator("#why .why-chip").all_inner_texts()
                assert any("猫" in c for c in chips), chips
                src = page.locator("#why img").first.get_attribute("src")
                assert src.startswith("data:image/jpeg;base64,")
                assert page.locator("#why img").first.evaluate("i => i.naturalWidth") > 100
                assert str(DEMO) not in page.locator("#detail").inner_text()
            finally:
                chrome.close()
        assert app.client.predict(api_name="/status")["torch_loaded"] is False     # heatmaps are ONNX + numpy
    finally:
        app.stop()
