"""End-to-end tests of the Gradio app (app.py): gradio_client against a real server in a subprocess, and a
headless-Chromium check of the page in Chinese and English (screenshots: $DCCLIP_SCREENSHOTS, default a temp folder)."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL_CONFIG = ROOT / "assets" / "models" / "default" / "config.json"
DEMO = ROOT / "assets" / "demo"
N_DEMO = len(list(DEMO.glob("*.jpg")))         # the bundled photos (19: 16 + three with text)
CAT = DEMO / "cat_chelsea.jpg"
# screenshots go to a temp folder (running the tests leaves the tree clean); refresh the README's with
# DCCLIP_SCREENSHOTS=docs/screenshots python -m pytest -q tests/test_app.py -k browser
SHOTS = Path(os.environ.get("DCCLIP_SCREENSHOTS") or Path(tempfile.gettempdir()) / "dcclip-screenshots")
CHROMIUM = "/usr/bin/chromium"

gr = pytest.importorskip("gradio", reason="gradio not installed")
gradio_client = pytest.importorskip("gradio_client", reason="gradio_client not installed")
sys.path.insert(0, str(ROOT))
import app as A  # noqa: E402

if not CAT.exists() or not list(DEMO.glob("*.jpg")):
    pytest.skip("demo photos missing (assets/demo/*.jpg)", allow_module_level=True)



# The end-to-end tests need the real model; the stub-backed UI tests below run without it.
from conftest import browser, needs_model  # noqa: E402


START_TIMEOUT = 120      # s until the page answers
READY_TIMEOUT = 600      # s until the demo photos are indexed (model load + warm-up + the demo photos)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


class Server:
    def __init__(self, proc, url, log, started, up_after):
        self.proc, self.url, self.log, self.started, self.up_after = proc, url, log, started, up_after

    def log_tail(self, n=4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python app.py` (the default: demo photos indexed into $DCCLIP_CACHE/demo.db) on a free port."""
    tmp = tmp_path_factory.mktemp("app")
    port = _free_port()
    env = dict(os.environ, DCCLIP_CACHE=str(tmp / "cache"), GRADIO_ANALYTICS_ENABLED="False",
               PYTHONUNBUFFERED="1")
    log = tmp / "server.log"
    started = time.time()
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=str(ROOT),
                                env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    srv = Server(proc, url, log, started, None)
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{srv.log_tail()}")
            try:
                if _get(url + "/", timeout=2)[0] == 200:
                    break
            except (urllib.error.URLError, OSError):
                pass
            if time.time() - started > START_TIMEOUT:
                pytest.fail(f"app.py did not answer within {START_TIMEOUT}s:\n{srv.log_tail()}")
            time.sleep(0.2)
        srv.up_after = time.time() - started
        print(f"\ncold start to a served page: {srv.up_after:.2f}s")
        client = gradio_client.Client(url, verbose=False, download_files=False)
        while True:
            st = client.predict(api_name="/status")
            if st["state"] == "ready":
                break
            if st["state"] == "error":
                pytest.fail(f"app start-up failed: {st}\n{srv.log_tail()}")
            if time.time() - started > READY_TIMEOUT:
                pytest.fail(f"demo photos not indexed within {READY_TIMEOUT}s: {st}\n{srv.log_tail()}")
            time.sleep(0.5)
        print(f"ready (model loaded, demo indexed) after {time.time() - started:.2f}s: {st}")
        srv.client = client
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _first_caption(gallery) -> str:
    assert gallery, "empty gallery"
    return gallery[0]["caption"]


# ------------------------------------------------------------------------------ gradio_client end-to-end
@needs_model
def test_ui_strings_complete_in_both_languages():
    """assets/data/ui_strings.json: every key in English and Chinese, with the same {placeholders}."""
    d = json.loads((ROOT / "assets" / "data" / "ui_strings.json").read_text(encoding="utf-8"))
    assert set(d) == {"en", "zh", "zh_hant"} and d["en"].keys() == d["zh"].keys() and len(d["en"]) > 100
    ph = re.compile(r"{(\w*)}")
    for k, en in d["en"].items():
        assert en.strip() and d["zh"][k].strip(), k
        assert sorted(ph.findall(en)) == sorted(ph.findall(d["zh"][k])), k
    # traditional Chinese is the simplified text through OpenCC (Taiwan phrasing): regenerate it when zh changes
    import opencc
    cc = opencc.OpenCC("s2twp")
    assert d["zh_hant"] == {k: cc.convert(v) for k, v in d["zh"].items()}, \
        "zh_hant is stale: regenerate it from zh with opencc s2twp"


def test_lang_of_follows_the_browser():
    import app

    class Req:
        def __init__(self, al):
            self.headers = {"accept-language": al}
    assert app.lang_of(Req("zh-CN,zh;q=0.9,en;q=0.8")) == "zh"
    assert app.lang_of(Req("zh-TW,zh;q=0.9")) == "zh_hant" and app.lang_of(Req("zh-Hant-HK")) == "zh_hant"
    assert app.lang_of(Req("en-US,en;q=0.9,zh;q=0.5")) == "en" and app.lang_of(None) == "en"
    assert app.tr("zh_hant", "tab_search") == "搜尋" and app.tr("zh", "tab_search") == "搜索"


def test_status_ready(server):
    st = server.client.predict(api_name="/status")
    assert st["state"] == "ready"
    assert st["images"] == len(list(DEMO.glob("*.jpg")))
    assert st["model_id"]
    assert st["torch_loaded"] is False, "the app's search path imported torch"


@needs_model
@pytest.mark.parametrize("query", ["猫", "a cat"])
def test_text_search_cat_first(server, query):
    gallery, message, _ = server.client.predict(query, 20, "any", api_name="/search")
    first = _first_caption(gallery)
    dots, _, rest = first.partition(" ")
    assert dots == "●●●" and rest.split(" · ")[0] == "cat_chelsea.jpg", (query, [g["caption"] for g in gallery[:5]])
    assert "/" not in first  # captions show the file name only (one folder: no need to tell names apart)
    levels = [g["caption"].split(" ")[0].count("●") for g in gallery]
    assert levels == sorted(levels, reverse=True) and min(levels) >= 1  # "every match": weak ones too, no "none"
    # "every photo, ranked" shows them all (k=20 > the demo photos)
    gallery, _, _ = server.client.predict(query, 20, "all", api_name="/search")
    assert len(gallery) == len(list(DEMO.glob("*.jpg"))) and "cat_chelsea.jpg" in gallery[0]["caption"]


@needs_model
def test_search_json_and_k(server):
    res = server.client.predict("a cat", 3, "all", api_name="/search_json")
    assert len(res) == 3 and res[0]["name"] == "cat_chelsea.jpg"
    res = server.client.predict("a cat", 3, api_name="/search_json")          # "any": the one cat photo matches
    assert [r["name"] for r in res] == ["cat_chelsea.jpg"] and res[0]["level"] == 3
    gallery, _, _ = server.client.predict("猫", 5, "all", api_name="/search")
    assert len(gallery) == 5


@needs_model
def test_image_search_finds_itself(server):
    gallery, message = server.client.predict(gradio_client.handle_file(str(CAT)), 20, "any",
                                             api_name="/search_image")
    first = _first_caption(gallery)
    assert first.split(" · ")[0] == "cat_chelsea.jpg", [g["caption"] for g in gallery[:5]]   # no text-scale dots


@needs_model
def test_empty_query_and_threshold_give_messages(server):
    gallery, message, _ = server.client.predict("   ", 20, "any", api_name="/search")
    assert gallery == [] and message and "error" not in message.lower()
    gallery, message, _ = server.client.predict("qwxzv", 20, "good", api_name="/search")
    assert gallery == [] and message


@needs_model
def test_files_outside_indexed_roots_not_served(server):
    for target in ["/etc/passwd", str(ROOT / "app.py"), str(MODEL_CONFIG),
                   str(DEMO) + "/../../app.py", "../../../../etc/passwd"]:
        for prefix in ("/gradio_api/file=", "/file="):
            code, body = _get(server.url + prefix + target)
            assert code != 200 or b"root:" not in body and b"import gradio" not in body, (prefix, target, code)
            assert code in (403, 404, 400, 405), (prefix, target, code)


@pytest.mark.slow
@needs_model
def test_no_torch_in_process_after_search():
    """Build the UI in a fresh interpreter, run a search through it, then check torch never loaded."""
    code = r"""
import sys, tempfile, json
sys.path.insert(0, %r)
import app, gradio as gr
from index import build_index
tmp = tempfile.mkdtemp()
be = app.Backend(tmp + "/demo.db", root=app.DEMO_ROOT, thumb_dir=tmp + "/thumbs")
ui = app.build_app(tmp + "/demo.db", backend=be)
assert be.wait(600), be.error
res = be.run_search(query="猫", k=3)
print(json.dumps({"torch": "torch" in sys.modules, "first": res[0]["path"]}))
""" % str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=str(ROOT))
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["torch"] is False
    assert res["first"].endswith("cat_chelsea.jpg")


# ------------------------------------------------------------------------------ headless browser
def _browser():
    return browser()[0]


def _search_in_page(page, url, query):
    page.goto(url, wait_until="domcontentloaded")
    box = page.locator("#query textarea, #query input").first
    box.wait_for(state="visible", timeout=60_000)
    box.fill(query)
    box.press("Enter")
    page.locator("#gallery .caption-label").first.wait_for(state="visible", timeout=60_000)
    page.wait_for_timeout(800)  # let thumbnails paint before the screenshot
    return [c.strip() for c in page.locator("#gallery .caption-label").all_inner_texts()]


@needs_model
@pytest.mark.parametrize("locale,query,expect_first,ui_text,shot", [
    ("zh-CN", "猫", "cat_chelsea.jpg", "以图搜图", "search_zh.png"),
    ("en-US", "a cup of coffee", "coffee.jpg", "Search by image", "search_en.png"),
])
def test_browser_search(server, locale, query, expect_first, ui_text, shot):
    sync_playwright = _browser()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(locale=locale, viewport={"width": 1366, "height": 1000})
            captions = _search_in_page(page, server.url, query)
            page.screenshot(path=str(SHOTS / shot), full_page=True)
            assert captions, "no results shown"
            if locale.startswith("zh"):
                assert expect_first in captions[0], captions[:5]
            else:
                assert any(expect_first in c for c in captions[:3]), captions[:5]
            assert page.get_by_text(ui_text, exact=True).first.is_visible(), f"{ui_text!r} not on the {locale} page"
            other = "Search by image" if locale.startswith("zh") else "以图搜图"
            assert page.get_by_text(other, exact=True).count() == 0, f"{other!r} shown on the {locale} page"
        finally:
            browser.close()


# ------------------------------------------------------------------------------ stub-backed UI tests
# These run without the model: a keyword stub stands in for index.Searcher, so the page, its API, the
# translations, demo mode and the file-serving rules are checked on any machine.
STUB_KEYWORDS = {"cat_chelsea.jpg": ["猫", "cat"], "coffee.jpg": ["咖啡", "coffee"]}


class StubModel:
    info = {"id": "dcclip-stub", "hash": "0123456789abcdef", "dims": 8, "languages": ["en", "zh"]}


class StubSearcher:
    def __init__(self):
        self.files = sorted(DEMO.glob("*.jpg"))
        self.model = StubModel()

    def _rank(self, score, k, threshold):
        res = [{"path": str(f), "score": score(f), "width": 1, "height": 1, "size": 1, "mtime": 0,
                "taken_at": None} for f in self.files]
        res.sort(key=lambda r: -r["score"])
        return [r for r in res if threshold is None or r["score"] >= threshold][:k]

    def search(self, query, k=20, threshold=None, offset=0):
        hit = lambda f: any(w in query.lower() for w in STUB_KEYWORDS.get(f.name, []))  # noqa: E731
        return self._rank(lambda f: 0.4 if hit(f) else 0.1 + len(f.name) / 1000, k, threshold)

    def search_image(self, image, k=20, threshold=None, offset=0):
        name = Path(str(image)).name
        return self._rank(lambda f: 1.0 if f.name == name else 0.2, k, threshold)

    def stats(self):
        return {"images": len(self.files), "errors": 0, "error_list": [], "model_id": "dcclip-stub",
                "model_hash": "0123", "db": "/secret/place/photos.db", "dim": 8}


class BlockedBackend(A.Backend):
    """Never gets ready (its start-up thread waits for an event the test never sets)."""

    def _run(self):
        import threading
        self.state = "loading"
        threading.Event().wait(60)


def _launch(app, demo=False):
    port = _free_port()
    app.queue().launch(server_port=port, prevent_thread_lock=True, quiet=True, **A.launch_kwargs(app, demo=demo))
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def stub_app(tmp_path, request):
    demo = getattr(request, "param", False)
    be = A.Backend(tmp_path / "x.db", searcher=StubSearcher(), root=DEMO, demo=demo, thumb_dir=tmp_path / "thumbs")
    app = A.build_app(be.db_path, backend=be, demo=demo)
    url = _launch(app, demo=demo)
    try:
        yield app, url
    finally:
        app.close()


def test_translations_complete():
    assert set(A.EN) == set(A.ZH)
    page = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "ui").rglob("*.py"))
    used = set(re.findall(r'\bT\("(\w+)"\)', page)) | set(re.findall(r'\btr\(\w+, "(\w+)"', page))
    assert used and used <= set(A.EN), used - set(A.EN)
    cjk = lambda t: any("\u4e00" <= ch <= "\u9fff" for ch in t)  # noqa: E731
    # every Chinese string has Chinese in it, except the example queries (shown as typed: 猫, a cat, ...)
    assert all(cjk(v) for k, v in A.ZH.items() if not v.startswith("{") and not k.startswith("ex_")), \
        [k for k, v in A.ZH.items() if not cjk(v)]
    for locale in ("en", "zh", "zh-CN"):
        assert locale in A.I18N.translations_dict


def test_lang_of_and_args(monkeypatch):
    class R:
        def __init__(self, al):
            self.headers = {"accept-language": al}
    assert A.lang_of(R("zh-CN,zh;q=0.9,en;q=0.8")) == "zh"
    assert A.lang_of(R("en-US,en;q=0.9,zh;q=0.5")) == "en"
    assert A.lang_of(None) == "en"
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    a = A.parse_args([])
    assert (a.host, a.port, a.db, a.demo, a.auth) == ("127.0.0.1", 7860, None, False, None)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "9123")
    assert A.parse_args([]).port == 9123
    assert A.parse_args(["--port", "8000", "--demo", "--auth", "u:p"]).port == 8000


def test_stub_search_api(stub_app):
    app, url = stub_app
    c = gradio_client.Client(url, verbose=False, download_files=False)
    assert c.predict(api_name="/status")["state"] == "ready"
    gallery, msg, _ = c.predict("猫", 20, "all", api_name="/search")
    assert gallery[0]["caption"] == "cat_chelsea.jpg" and "“猫”" in msg      # a stub model has no calibrated levels
    assert len(gallery) == len(list(DEMO.glob("*.jpg")))
    assert [r["name"] for r in c.predict("a cup of coffee", 2, api_name="/search_json")][0] == "coffee.jpg"
    gallery, _ = c.predict(gradio_client.handle_file(str(CAT)), 3, "any", api_name="/search_image")
    assert [g["caption"] for g in gallery][0] == "cat_chelsea.jpg" and len(gallery) == 3
    gallery, msg, _ = c.predict("", 20, "any", api_name="/search")
    assert gallery == [] and msg == A.EN["msg_empty"]
    zh = gradio_client.Client(url, verbose=False, download_files=False, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert zh.predict("", 20, "any", api_name="/search")[1] == A.ZH["msg_empty"]


def test_stub_not_ready_is_friendly(tmp_path):
    be = BlockedBackend(tmp_path / "x.db", root=DEMO, thumb_dir=tmp_path / "thumbs")
    app = A.build_app(be.db_path, backend=be)
    url = _launch(app)
    try:
        c = gradio_client.Client(url, verbose=False, download_files=False)
        assert c.predict(api_name="/status")["state"] == "loading"
        gallery, msg, _ = c.predict("猫", 20, "any", api_name="/search")
        assert gallery == [] and "try again" in msg
    finally:
        app.close()


@pytest.mark.parametrize("stub_app", [True], indirect=True)
def test_stub_demo_mode_serves_no_paths(stub_app):
    app, url = stub_app
    assert "/secret/place" not in A.about_md(app.backend, "en") and "dcclip-stub" in A.about_md(app.backend, "zh")
    c = gradio_client.Client(url, verbose=False, download_files=False)
    gallery, _ = c.predict("猫", 3, "any", api_name="/search")[:2]
    assert all("/" not in g["caption"] for g in gallery)
    # originals are not served by path (only thumbnails and /photo/<id>)
    assert _get(url + "/gradio_api/file=" + str(CAT))[0] in (403, 404)


def test_stub_files_are_not_served_by_path(stub_app):
    app, url = stub_app
    for target in ["/etc/passwd", str(ROOT / "app.py"), str(DEMO / ".." / ".." / "app.py"),
                   "../../../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", str(CAT)]:
        code, body = _get(url + "/gradio_api/file=" + target)
        assert code in (400, 403, 404) and b"root:" not in body, (target, code)


def test_stub_thumbnails_route(stub_app):
    """Results are thumbnail URLs on /thumb/<sha1>.jpg: served as JPEG; nothing else can be named there."""
    app, url = stub_app
    c = gradio_client.Client(url, verbose=False, download_files=False)
    gallery, _ = c.predict("猫", 3, "any", api_name="/search")[:2]
    u = gallery[0]["image"]["url"]
    from ui.files import THUMB_ROUTE, THUMB_SIZE
    assert u.startswith(url + THUMB_ROUTE + "/") and u.endswith(".jpg"), u
    code, body = _get(u)
    assert code == 200 and body[:3] == b"\xff\xd8\xff"
    from PIL import Image
    import io
    assert max(Image.open(io.BytesIO(body)).size) <= THUMB_SIZE
    for bad in ["/thumb/../../etc/passwd.jpg", "/thumb/..%2f..%2fetc%2fpasswd.jpg", "/thumb/" + "0" * 40 + ".jpg",
                "/thumb/" + "a" * 39 + ".jpg", "/thumb/%2e%2e/app.py", "/thumb/" + str(CAT)]:
        code, body = _get(url + bad)
        assert code in (400, 404) and b"root:" not in body, (bad, code)


def _stub_with_login(tmp_path):
    """A stub-backed page that asks for the login u:p; (app, url)."""
    be = A.Backend(tmp_path / "x.db", searcher=StubSearcher(), root=DEMO, thumb_dir=tmp_path / "thumbs")
    app = A.build_app(be.db_path, backend=be)
    port = _free_port()
    app.queue().launch(server_port=port, prevent_thread_lock=True, quiet=True, auth=("u", "p"),
                       **A.launch_kwargs(app))
    return app, f"http://127.0.0.1:{port}"


def test_stub_thumbnails_need_login_with_auth(tmp_path):
    """With --auth, thumbnails are served to a logged-in page only."""
    app, url = _stub_with_login(tmp_path)
    try:
        c = gradio_client.Client(url, verbose=False, download_files=False, auth=("u", "p"))
        gallery, _ = c.predict("猫", 3, "any", api_name="/search")[:2]
        u = gallery[0]["image"]["url"]
        assert _get(u)[0] == 401                                   # no login cookie
        import httpx
        assert httpx.get(u, cookies=c.cookies).status_code == 200   # the logged-in client's cookie
    finally:
        app.close()


@pytest.mark.parametrize("stub_app", [True], indirect=True)
def test_stub_demo_mode_is_read_only(stub_app, tmp_path):
    app, url = stub_app
    c = gradio_client.Client(url, verbose=False, download_files=False)
    ro = A.EN["demo_readonly"]
    assert c.predict(str(tmp_path / "out"), api_name="/label_copy") == ro and not (tmp_path / "out").exists()
    assert c.predict("x", api_name="/fewshot_save")[0] == ro
    f = tmp_path / "p.safetensors"
    f.write_bytes(b"not really")
    assert c.predict(gradio_client.handle_file(str(f)), "x", api_name="/prompt_import")[0] == ro
    assert c.predict("colours-coop", api_name="/prompt_delete_ask") == ro
    assert c.predict("colours-coop", api_name="/prompt_delete")[0] == ro
    assert c.predict(str(DEMO), api_name="/remove_folder_ask") == A.EN["index_readonly"]
    assert c.predict(str(DEMO), api_name="/remove_folder")[2] == ro
    assert c.predict("default", api_name="/model_use")[0] == ro
    assert c.predict("cat_chelsea.jpg", "狗", 50, "", api_name="/label_correct")[1] == ro
    assert c.predict("cat_chelsea.jpg", 50, "", api_name="/label_undo")[1] == ro


# ------------------------------------------------------------------------------ Index tab (runs last: it adds a folder)
def _rows(df) -> list:
    df = df.get("value", df) if isinstance(df, dict) and "__type__" in df else df   # an update carries its value
    return df["data"] if isinstance(df, dict) else list(df)


def test_stub_index_tab(stub_app):
    app, url = stub_app
    c = gradio_client.Client(url, verbose=False, download_files=False)
    md, df = c.predict(api_name="/index_info")
    assert str(DEMO.resolve()) in md and "16 photos" in md.replace(str(len(list(DEMO.glob('*.jpg')))), "16")
    md, df, msg, _ = c.predict("", api_name="/add_folder")
    assert msg == A.EN["msg_no_folder"]
    md, df, msg, _ = c.predict("/no/such/folder", api_name="/add_folder")
    assert "/no/such/folder" in msg


@pytest.mark.parametrize("stub_app", [True], indirect=True)
def test_stub_index_tab_demo_readonly(stub_app):
    app, url = stub_app
    c = gradio_client.Client(url, verbose=False, download_files=False)
    md, df = c.predict(api_name="/index_info")
    assert str(DEMO) not in md and A.EN["index_readonly"] in md
    md, df, msg, _ = c.predict("/tmp", api_name="/add_folder")
    assert msg == A.EN["index_readonly"]


@needs_model
def test_index_tab_add_folder_and_rescan(server, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "broken.jpg").write_bytes(b"not a jpeg at all")
    import shutil
    shutil.copy(DEMO / "coffee.jpg", extra / "my_coffee.jpg")
    c = server.client
    md, df, msg, status = c.predict(str(extra), api_name="/add_folder")
    assert "1 new" in msg and "1 unreadable" in msg, msg
    assert str(extra.resolve()) in md
    n = len(list(DEMO.glob("*.jpg")))
    assert f"{n + 1} photos · 1 unreadable" in md, md
    bad = _rows(df)
    assert any(r[0].endswith("broken.jpg") and r[1] for r in bad), bad
    assert c.predict(api_name="/status")["images"] == n + 1
    res = c.predict("a cup of coffee", 3, api_name="/search_json")
    assert {"coffee.jpg", "my_coffee.jpg"} <= {r["name"] for r in res[:3]}, res
    md2, df2, msg2, _ = c.predict(api_name="/rescan")
    assert "2 folder" in msg2 and "0 new" in msg2, msg2
    assert md2 == md
    # remove the folder again: out of the index and the searches, still on disk
    md, df, msg, *_ = c.predict("/not/indexed", api_name="/remove_folder")
    assert msg == A.EN["msg_pick_folder"]
    md, df, msg, status, folder_dd, remove_dd = c.predict(str(extra.resolve()), api_name="/remove_folder")
    assert "1 photos, 1 unreadable" in msg, msg
    assert str(extra.resolve()) not in md and f"{n} photos · 0 unreadable" in md, md
    assert str(extra.resolve()) not in [x[1] for x in remove_dd["choices"]]
    assert c.predict(api_name="/status")["images"] == n
    res = c.predict("a cup of coffee", 5, api_name="/search_json")
    assert "my_coffee.jpg" not in {r["name"] for r in res} and (extra / "my_coffee.jpg").is_file()


def test_model_tab_metrics(stub_app):
    md = A.metrics_md("default", "en")
    m = json.loads((ROOT / "assets" / "models" / "default" / "metrics.json").read_text(encoding="utf-8"))
    r1 = 100 * m["heldout"]["retrieval"]["current"]["languages"]["en"]["recall@5"]     # held-out recall@5
    assert f"{r1:.1f}%" in md and "English" in md and "中文" in md and "Held-out photos" in md
    assert "default" in A.installed_models()
    app, url = stub_app
    c = gradio_client.Client(url, verbose=False, download_files=False)
    md, about = c.predict("default", api_name="/model_card")
    assert f"{r1:.1f}%" in md and "dcclip-stub" in about
    zh = gradio_client.Client(url, verbose=False, download_files=False, headers={"Accept-Language": "zh-CN"})
    assert "留出照片" in zh.predict("default", api_name="/model_card")[0]


@needs_model
def test_search_filters_and_detail(server):
    c = server.client
    gallery, msg, _ = c.predict("猫", 20, "all", "", "", "", api_name="/search")
    assert "cat_chelsea.jpg" in gallery[0]["caption"]
    gallery, msg, _ = c.predict("猫", 20, "all", str(DEMO.resolve()), "1970-01-01", "2999-12-31",
                                api_name="/search")
    assert gallery and "cat_chelsea.jpg" in gallery[0]["caption"]
    gallery, msg, _ = c.predict("猫", 20, "all", "", "2999-01-01", "", api_name="/search")
    assert gallery == []
    gallery, msg, _ = c.predict("猫", 20, "all", "", "yesterday", "", api_name="/search")
    assert gallery == [] and "2024-05-31" in msg
    d = c.predict("cat_chelsea.jpg", api_name="/detail")
    assert d["neighbours"] and all(n["name"] != "cat_chelsea.jpg" for n in d["neighbours"])
    scores = [n["score"] for n in d["neighbours"]]
    assert scores == sorted(scores, reverse=True)


def _value(out):
    """An output's value (an update that also sets other properties carries it under "value")."""
    return out["value"] if isinstance(out, dict) and out.get("__type__") == "update" else out


def _caps(gallery) -> list[str]:
    return [g["caption"] for g in _value(gallery) or []]


def _file(f) -> Path:
    """A file output of the API (the client does not download: the server runs on this machine)."""
    f = _value(f)
    return Path(f["path"] if isinstance(f, dict) else f)


@needs_model
def test_label_tab_and_export(server):
    c = server.client
    review, msg, *_ = c.predict("", "", 50, api_name="/label")
    assert msg == A.EN["msg_no_labels"]
    review, msg, dd, info, page, filt = c.predict("猫, 咖啡, rocket, 花", "", 50, api_name="/label")
    caps = set(_caps(review))
    assert "猫" in caps and not any(any(ch.isdigit() for ch in cap) for cap in caps), caps   # labels, no scores
    assert set(x[0] for x in dd["choices"]) <= {"猫", "咖啡", "rocket", "花"}
    f, msg = c.predict(api_name="/export_csv")
    text = _file(f).read_text(encoding="utf-8-sig")
    assert text.startswith("path,label,score") and "cat_chelsea.jpg,猫," in text, text[:500]
    f, msg = c.predict(api_name="/export_json")
    rows = json.loads(_file(f).read_text(encoding="utf-8"))
    cat = [r for r in rows if r["path"].endswith("cat_chelsea.jpg")]
    assert cat and cat[0]["label"] == "猫"


@needs_model
def test_label_correct_and_copy_to_folders(server, tmp_path):
    c = server.client
    c.predict("猫, 咖啡, rocket, 花", "", 50, api_name="/label")
    review, msg, *_ = c.predict("", "狗", 50, "", api_name="/label_correct")
    assert msg == A.EN["msg_pick_photo"]
    review, msg, dd, *_ = c.predict("cat_chelsea.jpg", "狗", 50, "", api_name="/label_correct")
    assert "狗" in msg and "cat_chelsea.jpg" in msg
    assert "狗" in [x[0] for x in dd["choices"]]
    rows = json.loads(_file(c.predict(api_name="/export_json")[0]).read_text(encoding="utf-8"))
    cat = [r for r in rows if r["path"].endswith("cat_chelsea.jpg")]
    assert [r["label"] for r in cat] == ["狗"]
    out = tmp_path / "分类结果"
    assert c.predict("relative/dir", 50, api_name="/label_copy") == A.EN["msg_copy_where"]
    msg = c.predict(str(out), 0, api_name="/label_copy")
    n = len(list(DEMO.glob("*.jpg")))
    assert f"Copied {n} photos" in msg, msg
    assert (out / "狗" / "cat_chelsea.jpg").read_bytes() == CAT.read_bytes()
    assert len(list(out.rglob("*.jpg"))) == n
    msg = c.predict(str(out), 0, api_name="/label_copy")     # again: nothing overwritten, nothing copied twice
    assert not (out / "狗" / "cat_chelsea (2).jpg").exists() and len(list(out.rglob("*.jpg"))) == n, msg
    # labelling again with the same labels keeps the correction
    c.predict("猫, 咖啡, rocket, 花", "", 50, api_name="/label")
    rows = json.loads(_file(c.predict(api_name="/export_json")[0]).read_text(encoding="utf-8"))
    assert [r["label"] for r in rows if r["path"].endswith("cat_chelsea.jpg")] == ["狗"]


FS_CLASSES = {"动物": ["cat_chelsea.jpg", "dog_chicky.jpg", "squirrel.jpg", "baboon.jpg"],
              "食物": ["coffee.jpg", "apple.jpg", "orange.jpg", "fruits.jpg"]}
FS_FIFTH = {"动物": "butterfly.jpg", "食物": "rocket.jpg"}       # 5 per class: one in five is kept for validation


@needs_model
def test_fewshot_learn_save_apply_delete(server):
    c = gradio_client.Client(server.url, verbose=False, download_files=False)   # its own session (state)
    plot, msg, _ = c.predict("tip-adapter", 10, api_name="/fewshot_learn")
    assert msg == A.EN["fs_need_two"]
    tbl, msg, _ = c.predict("动物", [], api_name="/fewshot_add")
    assert msg == A.EN["fs_nothing_picked"]
    for cls, names in FS_CLASSES.items():
        tbl, msg, _ = c.predict(cls, [gradio_client.handle_file(str(DEMO / n)) for n in names],
                                api_name="/fewshot_add")
        assert f"Added {len(names)} examples" in msg
    assert [r[:2] for r in _rows(tbl)] == [["动物", 4], ["食物", 4]]
    gallery, msg = c.predict("猫", api_name="/fewshot_find")           # results to pick from
    assert gallery and "cat_chelsea.jpg" in gallery[0]["caption"]
    plot, msg, save_msg = c.predict("tip-adapter", 10, api_name="/fewshot_learn")
    assert "Tip-Adapter (instant)" in msg and "Accuracy on the examples" in msg and save_msg == "", msg
    for cls, name in FS_FIFTH.items():
        c.predict(cls, [gradio_client.handle_file(str(DEMO / name))], api_name="/fewshot_add")
    plot, msg, _ = c.predict("coop", 10, api_name="/fewshot_learn")
    assert "CoOp (learned words)" in msg and "Validation accuracy" in msg, msg
    acc = [p[1] for p in plot["data"]]
    assert len(acc) == 11 and all(0 <= a <= 100 for a in acc), plot["data"]   # validation accuracy, steps 0..10
    msg, _, _ = c.predict("bad/../name", api_name="/fewshot_save")
    assert "bad-name" in msg                                           # sanitised to a file name
    assert "bad-name" in c.predict("bad-name", api_name="/prompt_delete_ask")   # asks first
    c.predict("bad-name", api_name="/prompt_delete")
    msg, dd, _ = c.predict("我的-pets", api_name="/fewshot_save")
    assert "我的-pets" in msg and dd["value"] == "我的-pets"
    msg, _, _ = c.predict("我的-pets", api_name="/fewshot_save")
    assert msg == A.EN["fs_name_taken"].format(name="我的-pets")
    tbl, dd, _ = c.predict(api_name="/prompts_list")
    row = next(r for r in _rows(tbl) if r[0] == "我的-pets")
    assert row[1] == "CoOp (learned words)" and row[2] == 2 and row[6] == "yes" and row[7] == "yours"
    assert any(r[7] == "shipped" for r in _rows(tbl))
    info = c.predict("我的-pets", api_name="/prompt_detail")
    assert "CoOp" in info and "动物" in info and "fits the loaded model" in info
    msg, review, label_msg, *_ = c.predict("我的-pets", 0, api_name="/prompt_apply")
    assert f"Labelled {N_DEMO} photos" in msg, msg
    caps = set(_caps(review))
    assert caps and all(x in {"动物", "食物"} or x.startswith("✎") for x in caps), caps   # ✎: an earlier correction
    files, msg = c.predict("我的-pets", api_name="/prompt_export")
    st, js = (_file(f) for f in _value(files))
    assert st.suffix == ".safetensors" and st.stat().st_size > 1000
    assert json.loads(js.read_text(encoding="utf-8"))["method"] == "coop"
    review, msg, *_ = c.predict("", "我的-pets", 50, api_name="/label")   # the Label tab takes a prompt too
    assert f"Labelled {N_DEMO} photos" in msg
    msg, tbl, *_ = c.predict("我的-pets", api_name="/prompt_delete")
    assert "Deleted" in msg and all(r[0] != "我的-pets" for r in _rows(tbl))
    msg, *_ = c.predict("colours-coop", api_name="/prompt_delete")
    assert "cannot be deleted" in msg
    tbl, msg, *_ = c.predict(api_name="/fewshot_clear")
    assert _rows(tbl) == [] or _rows(tbl) == [[]] or not _rows(tbl)


@needs_model
def test_prompt_import_only_valid_safetensors(server, tmp_path):
    import pickle
    c = server.client
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(Exception, match="Invalid file type"):     # the upload itself is refused by type
        c.predict(gradio_client.handle_file(str(pkl)), "", api_name="/prompt_import")
    fake = tmp_path / "fake.safetensors"                    # a pickle under a .safetensors name
    fake.write_bytes(pickle.dumps({"x": 1}))
    msg, *_ = c.predict(gradio_client.handle_file(str(fake)), "", api_name="/prompt_import")
    assert msg.startswith("Refused: not a valid prompt file"), msg
    from safetensors.numpy import save_file
    import numpy as np
    plain = tmp_path / "plain.safetensors"                  # safetensors, but no prompt metadata
    save_file({"w": np.zeros(3, np.float32)}, str(plain))
    msg, *_ = c.predict(gradio_client.handle_file(str(plain)), "", api_name="/prompt_import")
    assert msg.startswith("Refused: not a valid prompt file"), msg
    from dcclip_core.prompts import load_prompt
    p = load_prompt("colours-coop")
    p.meta["model"] = dict(p.meta["model"], hash="0000deadbeef", id="another-model")
    other = p.save(tmp_path / "other-model.safetensors")
    msg, *_ = c.predict(gradio_client.handle_file(str(other)), "", api_name="/prompt_import")
    assert msg.startswith("Refused:") and "another-model" in msg, msg
    good = load_prompt("colours-coop").save(tmp_path / "colours-copy.safetensors")
    msg, tbl, dd, _ = c.predict(gradio_client.handle_file(str(good)), "我的颜色", api_name="/prompt_import")
    assert "我的颜色" in msg and any(r[0] == "我的颜色" for r in _rows(tbl)), msg
    c.predict("我的颜色", api_name="/prompt_delete")


@needs_model
def test_model_use(server):
    msg, about, status = server.client.predict("default", api_name="/model_use")
    assert "all 16 photos" in msg.replace(str(len(list(DEMO.glob("*.jpg")))), "16"), msg
    assert "猫" in server.client.predict("猫", 3, "any", api_name="/search")[1]


@needs_model
def test_browser_tabs(server):
    """What a user sees in Chinese (and screenshots of it): clicking a result names the photo in the detail panel,
    says whether it has duplicates and shows its neighbours; labelling captions every reviewed photo with one of
    the typed labels; the Index tab counts the demo photos; the Model tab shows its recall and its file size."""
    sync_playwright = _browser()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(locale="zh-CN", viewport={"width": 1366, "height": 1000})
            captions = _search_in_page(page, server.url, "猫")
            clicked = re.search(r"[^\s·]+\.jpg", captions[0]).group(0)            # "●●● cat_chelsea.jpg · 2024-…"
            page.locator("#gallery .caption-label").first.click()
            detail = page.locator("#detail-info")
            detail.get_by_text(clicked).first.wait_for(state="visible", timeout=30_000)
            page.locator("#neighbours .caption-label").first.wait_for(state="visible", timeout=30_000)
            page.wait_for_timeout(3000)                                             # thumbnails paint
            page.screenshot(path=str(SHOTS / "detail_zh.png"), full_page=True)
            shown = detail.inner_text()
            assert clicked in shown and re.search("这张照片没有重复。|重复照片（", shown), shown

            page.get_by_role("tab", name="标注").click()
            typed = page.locator("#labels textarea, #labels input").first.input_value()
            labels = {x.strip() for x in re.split("[,，]", typed) if x.strip()}
            page.locator("#label-btn").click()
            page.locator("#review .caption-label").first.wait_for(state="visible", timeout=60_000)
            page.wait_for_timeout(800)
            page.screenshot(path=str(SHOTS / "label_zh.png"), full_page=True)
            review = [c.strip() for c in page.locator("#review .caption-label").all_inner_texts()]
            labelled = [c for c in review if not c.startswith("✎")]          # "✎ 狗": an earlier test's correction
            unsure = re.compile(r"^(.+)？（不确定）$")                                 # below the certainty slider
            assert len(labels) >= 2 and labelled, (typed, review)
            assert all((unsure.match(c).group(1) if unsure.match(c) else c) in labels for c in labelled), \
                (review, labels)

            page.get_by_role("tab", name="索引").click()
            page.locator("#bad-files").wait_for(state="visible", timeout=30_000)
            page.locator("#index-info").get_by_text(re.compile(rf"(^|\D){N_DEMO} 张照片")).first.wait_for(
                state="visible", timeout=30_000)
            page.screenshot(path=str(SHOTS / "index_zh.png"), full_page=True)

            page.get_by_role("tab", name="模型").click()
            page.locator("#metrics").get_by_text("留出照片 recall@5").first.wait_for(state="visible", timeout=30_000)
            about = page.locator("#model-about")
            about.get_by_text("模型文件：").first.wait_for(state="visible", timeout=30_000)
            page.screenshot(path=str(SHOTS / "model_zh.png"), full_page=True)
            files = json.loads(MODEL_CONFIG.read_text(encoding="utf-8"))["files"]
            on_disk = sum((MODEL_CONFIG.parent / f).stat().st_size for k, f in files.items() if k != "weights")
            mb = re.search(r"模型文件：([\d.]+) MB", about.inner_text())                # ONNX files + tokenizer
            assert mb and abs(float(mb.group(1)) - on_disk / 2 ** 20) < 0.1, (about.inner_text(), on_disk)
        finally:
            browser.close()


@needs_model
@pytest.mark.parametrize("locale,tabs,suffix", [
    ("zh-CN", ("小样本学习", "提示库", "标注"), "zh"),
    ("en-US", ("Few-shot", "Prompts", "Label"), "en"),
])
def test_browser_fewshot_prompts_label(server, locale, tabs, suffix):
    """Pick examples from search results, learn a CoOp prompt (loss plot), see it in the library, label with
    it and correct one photo's label; screenshots of each tab in both languages."""
    sync_playwright = _browser()
    SHOTS.mkdir(parents=True, exist_ok=True)
    fewshot, prompts, label = tabs
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(locale=locale, viewport={"width": 1366, "height": 1000})
            page.goto(server.url, wait_until="domcontentloaded")
            page.get_by_role("tab", name=fewshot).click()
            for query, cls, picks in (("猫", "猫咪" if suffix == "zh" else "cat", 1),
                                      ("coffee", "咖啡" if suffix == "zh" else "coffee", 1)):
                box = page.locator("#fs-query textarea, #fs-query input").first
                box.fill(query)
                page.locator("#fs-find").click()
                page.locator("#fs-results .caption-label").first.wait_for(state="visible", timeout=60_000)
                page.wait_for_timeout(500)
                for i in range(picks):
                    page.locator("#fs-results .thumbnail-item").nth(i).click()
                    page.wait_for_timeout(400)
                page.locator("#fs-class textarea, #fs-class input").first.fill(cls)
                page.locator("#fs-add").click()
                page.locator("#fs-msg").get_by_text(cls).first.wait_for(state="visible", timeout=30_000)
            page.get_by_label("CoOp").check()
            page.locator("#fs-learn").click()
            page.locator("#fs-result").get_by_text("%").first.wait_for(state="visible", timeout=120_000)
            page.wait_for_timeout(1500)                 # the plot's last redraw
            assert page.locator("#fs-curve canvas, #fs-curve svg").count() > 0, "no accuracy plot drawn"
            page.locator("#fs-name textarea, #fs-name input").first.fill(f"browser-{suffix}")
            page.locator("#fs-save").click()
            page.locator("#fs-save-msg").get_by_text(f"browser-{suffix}").first.wait_for(state="visible",
                                                                                    timeout=30_000)
            page.screenshot(path=str(SHOTS / f"fewshot_{suffix}.png"), full_page=True)
            page.get_by_role("tab", name=prompts).click()
            page.locator("#pr-table").get_by_text(f"browser-{suffix}").first.wait_for(state="visible",
                                                                                    timeout=30_000)
            page.locator("#pr-pick input").first.click()
            page.get_by_role("option", name=f"browser-{suffix}").first.click()
            page.locator("#pr-info").get_by_text("coop").first.wait_for(state="visible", timeout=30_000)
            page.locator("#pr-apply").click()
            page.locator("#pr-msg").get_by_text(str(N_DEMO)).first.wait_for(state="visible", timeout=60_000)
            page.screenshot(path=str(SHOTS / f"prompts_{suffix}.png"), full_page=True)
            page.get_by_role("tab", name=label).click()
            page.locator("#review .thumbnail-item").first.wait_for(state="visible", timeout=30_000)
            # back to typed labels (an empty prompt choice), label the index, review, correct one photo
            pick = page.locator("#label-prompt input").first
            pick.click()
            pick.fill("")
            page.keyboard.press("Escape")
            page.locator("#labels textarea, #labels input").first.fill(
                "猫, 狗, 花, 咖啡, 火箭, 寺庙, 蝴蝶, 摩托车" if suffix == "zh"
                else "cat, dog, flower, coffee, rocket, temple, butterfly, motorcycle")
            page.locator("#label-btn").click()
            page.locator("#label-msg").get_by_text("8 个标签" if suffix == "zh" else "8 labels").first.wait_for(state="visible", timeout=60_000)
            page.wait_for_timeout(800)
            page.screenshot(path=str(SHOTS / f"label_{suffix}.png"), full_page=True)
            page.locator("#review .thumbnail-item").first.click()
            page.wait_for_timeout(500)
            assert page.locator("#corr-photo textarea, #corr-photo input").first.input_value().endswith(".jpg")
            page.locator("#corr-label input").first.fill("狗" if suffix == "zh" else "dog")
            page.keyboard.press("Enter")
            page.locator("#corr-btn").click()
            page.locator("#label-msg").get_by_text("狗" if suffix == "zh" else "dog").first.wait_for(
                state="visible", timeout=30_000)
        finally:
            browser.close()


def test_login_backoff_doubles_per_address():
    from ui.files import LoginBackoff
    now = [1000.0]
    b = LoginBackoff(None, free=3, base=2.0, cap=60.0, clock=lambda: now[0])
    for _ in range(3):
        assert b.wait_for("10.0.0.1") == 0
        b.record("10.0.0.1", ok=False)
    assert b.wait_for("10.0.0.1") == 2.0 and b.wait_for("10.0.0.2") == 0      # per address
    now[0] += 2.5
    assert b.wait_for("10.0.0.1") == 0
    b.record("10.0.0.1", ok=False)
    assert b.wait_for("10.0.0.1") == 4.0                                       # doubles with each failure
    b.record("10.0.0.1", ok=False)
    b.record("10.0.0.1", ok=False)
    b.record("10.0.0.1", ok=False)
    b.record("10.0.0.1", ok=False)
    assert b.wait_for("10.0.0.1") == 60.0                                      # capped
    b.record("10.0.0.1", ok=True)
    assert b.wait_for("10.0.0.1") == 0                                         # a good login clears it


def test_stub_wrong_logins_are_slowed_down(tmp_path):
    """With --auth, a fourth wrong password from one address in a row is answered 429 without being checked."""
    app, url = _stub_with_login(tmp_path)
    try:
        import httpx
        codes = [httpx.post(url + "/login", data={"username": "u", "password": "wrong"}).status_code
                 for _ in range(4)]
        assert codes == [400, 400, 400, 429], codes
        r = httpx.post(url + "/login", data={"username": "u", "password": "p"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1     # even the right password waits
    finally:
        app.close()


def test_stub_launch_serves_no_folder_and_loads_no_web_font(stub_app):
    app, url = stub_app
    kw = A.launch_kwargs(app)
    assert kw["allowed_paths"] == []                              # photos only via /thumb and /photo/<id>
    fonts = kw["theme"]._font + kw["theme"]._font_mono
    assert fonts and not any(isinstance(f, gr.themes.GoogleFont) for f in fonts)   # a booth has no network
    code, body = _get(url + "/")
    assert code == 200 and b"fonts.googleapis" not in body
