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


@pytest.fixture(scope="session")
def shipped_model():
    """The shipped default model (dcclip_core.load()), loaded once per test run."""
    import dcclip_core
    return dcclip_core.load()

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


# ---- shared fakes for the index tests: a deterministic model and a folder of odd photos -------------------------
import threading  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from dcclip_core.config import MODELS_DIR  # noqa: E402
from dcclip_core.numeric import l2_normalize  # noqa: E402
from dcclip_core.preprocess import load_image, to_pixels  # noqa: E402
from index import __main__ as cli  # noqa: E402

HAVE_MODEL = (MODELS_DIR / "default" / "config.json").is_file()


# colours in the normalised pixel space of to_pixels (mean = std = 0.5): c/255*2-1
COLOURS = {"red": (255, 0, 0), "green": (0, 200, 0), "blue": (0, 0, 255), "cat": (255, 140, 0),
           "猫": (255, 140, 0), "orange": (255, 140, 0), "yellow": (250, 240, 20), "purple": (128, 0, 128)}


class FakeModel:
    """Deterministic stand-in for dcclip_core.Model: mean colour + a fixed projection of an 8x8 thumbnail."""

    def __init__(self, hash="fake-v1", dim=16, size=32):
        self.dim = dim
        self.size = size
        self.proj = np.random.default_rng(0).standard_normal((3 * 8 * 8, dim - 3)).astype(np.float32) * 0.01
        self.info = {"id": f"fake-{hash}", "hash": hash, "dims": dim, "image_size": size,
                     "languages": ["zh", "en"]}
        self.encoded = 0                     # images through encode_pixels (to check "not re-embedded")
        self.lock = threading.Lock()

    def preprocess(self, image):
        return to_pixels(load_image(image, target_size=self.size), self.size)

    def encode_pixels(self, px):
        px = np.asarray(px, np.float32)
        n = len(px)
        with self.lock:
            self.encoded += n
        mean = px.mean(axis=(2, 3))
        thumb = px.reshape(n, 3, 8, self.size // 8, 8, self.size // 8).mean(axis=(3, 5)).reshape(n, -1)
        return l2_normalize(np.concatenate([mean, thumb @ self.proj], axis=1))

    def encode_image(self, images):
        return self.encode_pixels(np.stack([self.preprocess(im) for im in images]))

    def encode_text(self, texts):
        out = []
        for t in texts:
            v = np.zeros(self.dim, np.float32)
            words = [w for w in COLOURS if w in t.lower()]
            if words:
                v[:3] = np.asarray(COLOURS[words[0]], np.float32) / 255 * 2 - 1
            else:
                v = np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(self.dim).astype(np.float32)
            out.append(v)
        return l2_normalize(np.stack(out)) if out else np.zeros((0, self.dim), np.float32)


def make_image(path: Path, colour, seed=0, size=(64, 48), fmt=None):
    rng = np.random.default_rng(seed)
    a = np.clip(np.asarray(colour, np.float32)[None, None] + rng.normal(0, 6, (size[1], size[0], 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.astype(np.uint8)).save(path, format=fmt)
    return path


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    make_image(root / "red.jpg", COLOURS["red"], 1)
    make_image(root / "green.png", COLOURS["green"], 2)
    make_image(root / "blue.webp", COLOURS["blue"], 3)
    make_image(root / "sub" / "cat.jpg", COLOURS["cat"], 4)
    make_image(root / "sub" / "deeper" / "yellow.gif", COLOURS["yellow"], 5)
    make_image(root / "sub" / "猫 😺 photo.jpg", COLOURS["purple"], 6)
    (root / "empty.jpg").write_bytes(b"")
    (root / "notimage.png").write_text("this is not a png\n")
    full = make_image(tmp_path / "full.jpg", (10, 120, 200), 7, size=(256, 256)).read_bytes()
    (root / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (root / "readme.txt").write_text("ignored")
    os.symlink(root, root / "sub" / "loop")                     # a symlink loop: must not be followed
    return root


# ---- CLI with the fake model (in-process) and without any model (stats, error exits) ---------------------
def run_cli(args, model=None, monkeypatch=None, capsys=None):
    if model is not None:
        monkeypatch.setattr(cli, "_load_model", lambda name: model)
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# ---- shared makers for the training and index tests: real photos, a tiny tokenizer, tiny HF teachers, scenes ------
from PIL import ImageDraw  # noqa: E402


def photo_folder(root: Path, names=("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png")) -> Path:
    """A folder of real photos (scikit-image's sample data) saved as JPEG."""
    import skimage
    src = Path(skimage.__file__).parent / "data"
    root.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.open(src / n).convert("RGB").save(root / (Path(n).stem + ".jpg"))
    return root


def tiny_tokenizer(path: Path) -> Path:
    """A char-level HF tokenizer.json with <s> <pad> </s> <unk> = 0..3 (the student's special ids)."""
    from tokenizers import Tokenizer, pre_tokenizers, processors
    from tokenizers.models import Unigram
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789 .,猫狗一只的照片张火箭咖啡"))
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(c, -1.0) for c in chars if c != " "]
    pieces.append(("\u2581", -1.0))
    tok = Tokenizer(Unigram(pieces, unk_id=3, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.save(str(path))
    return path


_HF_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=32,
                  patch_size=8)
_HF_CHARS = list("abcdefghijklmnopqrstuvwxyz")
_HF_ZH = list("猫狗一只的照片张")


def _clip_tokenizer():
    """A tiny CLIP byte-level-free BPE: characters, word-final characters and a few merges."""
    import transformers
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in _HF_CHARS:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    merges = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("p", "h"), ("o", "t"), ("ot", "o</w>")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges)


def _bert_tokenizer():
    import transformers
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + _HF_ZH + _HF_CHARS + ["cat", "dog", "photo", "of"]
    return transformers.BertTokenizer(vocab={w: i for i, w in enumerate(words)})


def _xlmr_tokenizer():
    import transformers
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + w, -1.0) for w in ("a", "cat", "dog", "photo", "of")]
    pieces += [(c, -2.0) for c in _HF_CHARS + _HF_ZH] + [("\u2581", -3.0), ("<mask>", 0.0)]
    return transformers.XLMRobertaTokenizer(vocab=pieces)


def make_tiny_hf(kind: str, root: Path) -> Path:
    """Save a tiny random ``kind`` (clip | chinese_clip | altclip) model + tokenizer to root/kind."""
    import torch
    import transformers
    torch.manual_seed(0)
    out = root / kind
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    if kind == "clip":
        tok = _clip_tokenizer()
        cfg = transformers.CLIPConfig(text_config=dict(text, vocab_size=len(tok), max_position_embeddings=16,
                                                       bos_token_id=0, eos_token_id=1, pad_token_id=1),
                                      vision_config=_HF_VISION, projection_dim=24)
        model = transformers.CLIPModel(cfg)
    elif kind == "chinese_clip":
        tok = _bert_tokenizer()
        cfg = transformers.ChineseCLIPConfig(text_config=dict(text, vocab_size=len(tok), max_position_embeddings=32),
                                             vision_config=_HF_VISION, projection_dim=24)
        model = transformers.ChineseCLIPModel(cfg)
    else:
        tok = _xlmr_tokenizer()
        cfg = transformers.AltCLIPConfig(text_config=dict(text, vocab_size=len(tok), max_position_embeddings=40,
                                                          project_dim=24, pad_token_id=1),
                                         vision_config=_HF_VISION, projection_dim=24)
        model = transformers.AltCLIPModel(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    if kind == "chinese_clip":                      # a processor config: its mean/std/crop must be picked up
        (out / "preprocessor_config.json").write_text(json.dumps(
            {"crop_size": {"height": 32, "width": 32}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))
    return out


def scene(path: Path, seed: int, size=(320, 240), quality=92):
    """A photo-like picture with structure (gradient, shapes), so perceptual hashes mean something."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.linspace(0, 1, w)[None, :, None] * rng.uniform(60, 200, 3) + \
        np.linspace(0, 1, h)[:, None, None] * rng.uniform(20, 120, 3)
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
        d.ellipse([x0, y0, x0 + rng.integers(20, 120), y0 + rng.integers(20, 100)],
                  fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, quality=quality)
    return path


def kill_pass_after(pass_call: str, db_path, home, after: int = 2) -> None:
    """Run a photo pass (``pass_call``: e.g. "from index.textpass import read_texts as run", called as
    run(db, progress=...)) in a child process and kill -9 it once it has written ``after`` photos."""
    import signal
    code = (f"import sys; {pass_call}\n"
            "run(sys.argv[1], progress=lambda d, t, p: print('done', d, flush=True))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(db_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "HOME": str(home)})
    for line in proc.stdout:
        if line.startswith(f"done {after}"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)


def make_v4_db(path) -> None:
    """A schema-v4 index (before the text and face tables) holding one photo with a vector (migration tests)."""
    import sqlite3
    from index import db as dbm
    con = sqlite3.connect(path)
    for stmt in dbm._SCHEMA_V1 + dbm._MIGRATIONS[2] + dbm._MIGRATIONS[3] + dbm._MIGRATIONS[4]:
        con.execute(stmt)
    con.execute("INSERT INTO meta VALUES ('schema_version', '4'), ('generation', '3')")
    con.execute("INSERT INTO images(id, path, sha256) VALUES (1, '/p/a.jpg', 'x')")
    con.execute("INSERT INTO vectors(image_id, vec, gen) VALUES (1, x'00000000', 3)")
    con.commit()
    con.close()
