"""Shared test helpers: the shipped model's presence, free ports, plain HTTP, and `python app.py` in a subprocess."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL_CONFIG = ROOT / "assets" / "models" / "default" / "config.json"
DEMO = ROOT / "assets" / "demo"
CHROMIUM = "/usr/bin/chromium"


def model_missing() -> str | None:
    """Why the shipped model cannot run (None when it can)."""
    if not MODEL_CONFIG.exists():
        return (f"default model not built ({MODEL_CONFIG.relative_to(ROOT)} missing: "
                f"run `python -m training build-default`)")
    files = json.loads(MODEL_CONFIG.read_text(encoding="utf-8")).get("files", {})
    if not {"text_onnx", "image_onnx"} <= set(files):
        return "default model not exported to ONNX yet (config.json lists no text_onnx/image_onnx)"
    return None


needs_model = pytest.mark.skipif(model_missing() is not None, reason=str(model_missing()))

# Tiers (pytest.ini registers the markers): `python -m pytest -q -m "not slow and not browser"` is the fast tier.
#   browser: drives headless Chromium;  e2e: talks to a real `python app.py` process;
#   slow: trains, exports or runs processes (whole modules listed here, plus every e2e test).
SLOW_MODULES = {"test_prompts_vit", "test_fewshot", "test_ddp", "test_training_tiny", "test_distill_stage1",
                "test_align_stage2", "test_export", "test_teachers", "test_index_reliability", "test_eval_harness",
                "test_index_ray", "test_corpus", "test_prompts"}
E2E_FIXTURES = {"server", "lib"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        e2e = bool(E2E_FIXTURES & set(getattr(item, "fixturenames", ())))
        if "browser" in item.name:
            item.add_marker(pytest.mark.browser)
        if e2e:
            item.add_marker(pytest.mark.e2e)
        if e2e or item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    """(status, body) of a GET (or a POST with ``data``); HTTP errors are returned, not raised."""
    import urllib.parse
    req = urllib.request.Request(urllib.parse.quote(url, safe=":/?=&%#"), data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read() if e.fp else b""


class AppProcess:
    """``python app.py ARGS`` on a free port with its own $DCCLIP_CACHE, until it reports "ready"."""

    def __init__(self, cache: Path, *args: str, log: Path, start_timeout: float = 120, ready_timeout: float = 600):
        import gradio_client
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = dict(os.environ, DCCLIP_CACHE=str(cache), GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1",
                   DCCLIP_PROMPTS=str(cache / "prompts"))
        t0 = time.time()
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(self.port), *args],
                                         cwd=str(ROOT), env=env, stdout=fh, stderr=subprocess.STDOUT)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"app.py exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    if http(self.url + "/", timeout=2)[0] in (200, 401):
                        break
                except (urllib.error.URLError, OSError):
                    pass
                if time.time() - t0 > start_timeout:
                    raise RuntimeError(f"app.py did not answer within {start_timeout}s:\n{self.log_tail()}")
                time.sleep(0.2)
            self.up_after = time.time() - t0
            auth = None
            if "--auth" in args:
                auth = tuple(args[args.index("--auth") + 1].split(":", 1))
            self.client = gradio_client.Client(self.url, verbose=False, download_files=False, auth=auth)
            while True:
                st = self.client.predict(api_name="/status")
                if st["state"] == "ready":
                    break
                if st["state"] == "error" or time.time() - t0 > ready_timeout:
                    raise RuntimeError(f"app start-up failed: {st}\n{self.log_tail()}")
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise

    def client_for(self, lang: str = "en"):
        import gradio_client
        return gradio_client.Client(self.url, verbose=False, download_files=False,
                                    headers={"Accept-Language": "zh-CN,zh;q=0.9" if lang == "zh" else "en-US"})

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)


def browser():
    """(playwright's sync_playwright, the Chromium path), or skip with the reason."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package `chromium`)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed")
    return sync_playwright, CHROMIUM
