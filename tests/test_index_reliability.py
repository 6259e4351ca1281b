"""index/ under bad input and abuse: a fuzz corpus of >= 500 malformed files, unreadable files and folders,
files vanishing mid-run, very long and odd names, kill -9 at random moments, 8 searchers while indexing."""
import io
import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcclip_core.config import REPO_DIR
from dcclip_core.preprocess import ImageLoadError, load_image
from index import PhotoDB, Searcher, build_index
from index import __main__ as cli
from conftest import COLOURS, FakeModel, make_image, run_cli

FORMATS = {"jpg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP", "tif": "TIFF"}


def _valid(fmt: str, seed: int, size=(96, 72)) -> bytes:
    rng = np.random.default_rng(seed)
    a = np.clip(np.linspace(0, 255, size[0])[None, :, None] + rng.normal(0, 30, (size[1], size[0], 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8)).save(buf, format=FORMATS[fmt])
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bombs() -> dict[str, bytes]:
    """Headers claiming enormous images with (almost) no data behind them."""
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
    png_idat = png + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + _png_chunk(b"IEND", b"")
    gif = b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\xf7\x00\x00" + b"\x00" * 768 + \
        b"\x2c" + struct.pack("<HHHH", 0, 0, 65535, 65535) + b"\x00\x08\x02\x4c\x01\x00\x3b"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, 65000, 65000, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    jpeg = b"\xff\xd8" + sof + b"\xff\xd9"
    bmp = b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 60_000, 60_000, 1, 24,
                                                                      0, 0, 2835, 2835, 0, 0) + b"\x00" * 16
    real_jpeg = bytearray(_valid("jpg", 0))                             # a real JPEG, SOF patched to 65000^2
    i = real_jpeg.index(b"\xff\xc0")
    real_jpeg[i + 5:i + 9] = struct.pack(">HH", 65000, 65000)
    real_png = bytearray(_valid("png", 0))                              # a real PNG, IHDR patched to 90000^2
    ihdr = bytes(real_png[16:20 + 13 - 4]).replace(real_png[16:24], struct.pack(">II", 90_000, 90_000))
    real_png[16:29] = ihdr
    real_png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (16383).to_bytes(3, "little") * 2
    webp = b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x
    return {"png": png, "png_idat": png_idat, "png_real": bytes(real_png), "gif": gif, "jpg": jpeg,
            "jpg_real": bytes(real_jpeg), "bmp": bmp, "webp": webp}


def make_fuzz_corpus(root: Path, seed: int = 0) -> dict[str, str]:
    """>= 500 malformed files (+ a few good ones): path -> category."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}
    valid = {fmt: [_valid(fmt, s) for s in range(3)] for fmt in FORMATS}

    def put(name: str, data: bytes, cat: str):
        p = root / cat / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        out[str(p)] = cat

    exts = list(FORMATS) + ["jpeg", "heic", "tiff"]
    for i in range(120):                                           # random bytes with image extensions
        n = rng.choice([1, 7, 64, 1000, 20_000])
        put(f"rand{i:03d}.{exts[i % len(exts)]}", rng.randbytes(n), "random")
    for i in range(30):                                            # a real magic number, then garbage
        fmt = ["jpg", "png", "gif", "webp", "bmp", "tif"][i % 6]
        head = valid[fmt][0][:16]
        put(f"magic{i:03d}.{fmt}", head + rng.randbytes(rng.choice([10, 500, 5000])), "random")
    for fmt in ("jpg", "png", "gif", "webp"):                      # truncated at random offsets
        for i in range(55):
            data = valid[fmt][i % 3]
            cut = rng.randint(1, int(len(data) * 0.9))
            put(f"trunc{i:03d}.{fmt}", data[:cut], "truncated")
    for name, data in _bombs().items():                            # header-only decompression bombs
        ext = name.split("_")[0]
        for i in range(4):
            put(f"bomb_{name}{i}.{ext}", data + rng.randbytes(i * 7), "bomb")
    for i in range(25):                                            # zero bytes
        put(f"zero{i:02d}.{exts[i % len(exts)]}", b"", "zero")
    for i in range(110):                                           # bit flips: may or may not still decode
        fmt = list(FORMATS)[i % len(FORMATS)]
        data = bytearray(valid[fmt][i % 3])
        for _ in range(rng.choice([1, 3, 20])):
            pos = rng.randrange(len(data))
            data[pos] ^= 1 << rng.randrange(8)
        put(f"flip{i:03d}.{fmt}", bytes(data), "flipped")
    for i, fmt in enumerate(FORMATS):                              # a few good files among them
        put(f"good{i}.{fmt}", valid[fmt][0], "good")
    return out


def decodes(path: str, model) -> bool:
    """The oracle: does the image load and preprocess on its own?"""
    try:
        model.preprocess(load_image(path, target_size=model.size))
        return True
    except ImageLoadError:
        return False


def test_fuzz_corpus_every_bad_file_recorded(tmp_path, monkeypatch, capsys):
    corpus = make_fuzz_corpus(tmp_path / "fuzz")
    bad_cats = {c for c in corpus.values() if c not in ("good", "flipped")}
    assert sum(c != "good" for c in corpus.values()) >= 500
    model = FakeModel()
    dbp = tmp_path / "f.db"
    t0 = time.perf_counter()
    code, out, err = run_cli(["build", tmp_path / "fuzz", "--db", dbp, "--json", "--quiet"], model, monkeypatch,
                             capsys)
    elapsed = time.perf_counter() - t0
    assert code == 0, err
    st = json.loads(out)
    db = PhotoDB(dbp)
    indexed = {r["path"] for r in db.query("SELECT path FROM images")}
    errors = {e["path"]: e["reason"] for e in db.list_errors()}
    expect_ok = {p for p, c in corpus.items() if decodes(p, model)}
    assert indexed == expect_ok and st["images"] == len(expect_ok)
    assert set(errors) == set(corpus) - expect_ok and st["errors"] == len(errors)
    assert {p for p, c in corpus.items() if c == "good"} <= indexed
    assert not [p for p, c in corpus.items() if c in bad_cats and p in indexed]       # truly bad: never indexed
    assert all(r and not r.startswith("unexpected error") for r in errors.values()), \
        sorted({r for r in errors.values() if r.startswith("unexpected")})[:5]
    for p, c in corpus.items():                     # bombs that open are refused by their pixel count
        if c == "bomb" and any(k in p for k in ("_png_idat", "_png_real", "_jpg_real", "_gif", "_bmp")):
            assert errors[p].startswith("too large:") and "pixel" in errors[p], (p, errors[p])
    assert all("0 bytes" in errors[p] for p, c in corpus.items() if c == "zero")
    assert db.vector_stats("fake-v1")[0] == len(expect_ok) and db.integrity_check() == "ok"
    assert elapsed < 40, elapsed
    # second run: nothing retried, nothing lost
    st2 = build_index(tmp_path / "fuzz", dbp, model=model)
    assert (st2["indexed"], st2["errors"], st2["images"], st2["skipped"]) == (0, 0, len(expect_ok), len(corpus))
    code, out, _ = run_cli(["stats", "--db", dbp, "--json", "--all-errors"], None, monkeypatch, capsys)
    st3 = json.loads(out)
    assert len(st3["error_list"]) == len(errors) and sum(st3["errors_by_reason"].values()) == len(errors)


# ---- unreadable, vanishing, long and odd names --------------------------------------------------------
def test_permission_denied_simulated_and_unlistable_folder(tmp_path, monkeypatch):
    """As root chmod does not stop reads, so the OS errors are injected; test_index.py covers real chmod."""
    from index import scan
    root = tmp_path / "p"
    make_image(root / "ok.jpg", COLOURS["red"], 1)
    make_image(root / "secret.jpg", COLOURS["green"], 2)
    make_image(root / "locked" / "inside.jpg", COLOURS["blue"], 3)
    real_open, real_scandir = open, os.scandir

    def fake_open(path, *a, **k):
        if str(path).endswith("secret.jpg"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    def fake_scandir(path="."):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(scan, "open", fake_open, raising=False)
    monkeypatch.setattr(os, "scandir", fake_scandir)
    st = build_index(root, tmp_path / "p.db", model=FakeModel())
    monkeypatch.undo()
    errs = {Path(e["path"]).name: e["reason"] for e in PhotoDB(tmp_path / "p.db").list_errors()}
    assert st["images"] == 1 and errs["secret.jpg"] == "permission denied"
    assert errs["locked"].startswith("cannot list folder") and "permission denied" in errs["locked"]
    st = build_index(root, tmp_path / "p.db", model=FakeModel())          # access back: both indexed
    assert st["images"] == 3 and PhotoDB(tmp_path / "p.db").count_errors() == 0


def test_folder_vanishing_mid_run(tmp_path):
    import shutil
    root = tmp_path / "v"
    for i in range(6):
        make_image(root / "keep" / f"{i}.png", COLOURS["red"], i, size=(32, 32))
        make_image(root / "gone" / f"{i}.png", COLOURS["blue"], 10 + i, size=(32, 32))

    def progress(done, total, path):
        if (root / "gone").exists() and "keep" in path:
            shutil.rmtree(root / "gone")

    st = build_index(root, tmp_path / "v.db", model=FakeModel(), progress=progress, workers=1, batch_size=2)
    db = PhotoDB(tmp_path / "v.db")
    paths = {Path(r["path"]).parent.name for r in db.query("SELECT path FROM images")}
    assert "keep" in paths and st["images"] == db.count_images() and db.integrity_check() == "ok"
    assert all("vanished" in e["reason"] for e in db.list_errors())
    assert st["images"] + db.count_errors() <= 12
    st = build_index(root, tmp_path / "v.db", model=FakeModel())           # next run: the vanished are pruned
    assert st["images"] == 6 and db.count_errors() == 0


def test_long_paths_and_odd_names(tmp_path, monkeypatch, capsys):
    root = tmp_path / "names"
    names = ["猫 照片 🐱.jpg", "emoji 🎉🎂🌸.png", "  leading and trailing spaces  .jpg", "semi;colon,comma.jpg",
             "quote'double\"q.jpg", "new\nline.jpg", "tab\there.png", "#hash%percent&amp.jpg", "日本語のファイル名.webp",
             "x" * 200 + ".jpg", ("长" * 80) + ".png", "Ω≈ç√∫.JPG", "UPPER.JPEG", "-dash-first.jpg"]
    for i, n in enumerate(names):
        make_image(root / n, COLOURS["red"], i, size=(40, 30))
    # very long path: nested 200-character folder names, ~3000 characters in all (PATH_MAX is 4096)
    deep = root
    for i in range(14):
        deep = deep / (f"{i:02d}" + "d" * 198)
    deep.mkdir(parents=True)
    make_image(deep / "deep.jpg", COLOURS["green"], 99)
    assert len(str(deep / "deep.jpg")) > 2800
    # deeper than PATH_MAX: created relative to an open directory, listed as unreadable
    fd = os.open(deep, os.O_RDONLY)
    try:
        cur = fd
        for i in range(8):
            os.mkdir("e" * 200, dir_fd=cur)
            nxt = os.open("e" * 200, os.O_RDONLY, dir_fd=cur)
            if cur != fd:
                os.close(cur)
            cur = nxt
        with open(os.open("toodeep.jpg", os.O_WRONLY | os.O_CREAT, dir_fd=cur), "wb") as f:
            f.write(_valid("jpg", 5))
        os.close(cur)
    finally:
        os.close(fd)
    bad_name = os.fsencode(str(root)) + b"/bad \xff\xfe name.jpg"                   # not valid UTF-8
    with open(bad_name, "wb") as f:
        f.write(_valid("jpg", 6))

    model = FakeModel()
    dbp = tmp_path / "n.db"
    code, out, err = run_cli(["build", root, "--db", dbp, "--json", "--quiet"], model, monkeypatch, capsys)
    assert code == 0, err
    db = PhotoDB(dbp)
    indexed = {Path(r["path"]).name for r in db.query("SELECT path FROM images")}
    assert set(names) | {"deep.jpg"} <= indexed
    errs = {e["path"]: e["reason"] for e in db.list_errors()}
    assert any("not valid UTF-8" in r for r in errs.values())
    assert any("cannot list folder" in r or "too long" in r.lower() for r in errs.values()), errs
    assert all(len(p) < 5000 for p in errs)
    # search, stats, export and remove all cope with these names
    s = Searcher(dbp, model=model)
    found = {Path(r["path"]).name for r in s.search("red", k=50)}
    assert "new\nline.jpg" in found and "猫 照片 🐱.jpg" in found
    code, out, _ = run_cli(["search", "--db", dbp, "--json", "--k", 50, "red"], model, monkeypatch, capsys)
    assert code == 0 and any(r["path"].endswith("new\nline.jpg") for r in json.loads(out)["results"])
    code, out, _ = run_cli(["stats", "--db", dbp], None, monkeypatch, capsys)
    assert code == 0 and "UTF-8" in out
    from index.labels import export_labels, label_index, remove_paths
    label_index(dbp, "red,green", model=model)
    import csv
    export_labels(dbp, "default", "csv", tmp_path / "n.csv")
    rows = list(csv.DictReader((tmp_path / "n.csv").open(encoding="utf-8-sig", newline="")))
    assert {Path(r["path"]).name for r in rows} == indexed
    assert remove_paths(dbp, [deep / "deep.jpg", root / "new\nline.jpg"])["removed"] == 2


# ---- kill -9 at random moments, repeated --------------------------------------------------------------
KILL_SCRIPT = """
import sys, time
sys.path[:0] = [{repo!r}, {tests!r}]
from conftest import FakeModel
from index import build_index

class Slow(FakeModel):
    def encode_pixels(self, px):
        time.sleep(0.03)
        return super().encode_pixels(px)

print("start", flush=True)
build_index({root!r}, {db!r}, model=Slow(), batch_size=4, workers=2)
print("done", flush=True)
"""


def _check_db(dbp, model_hash="fake-v1"):
    db = PhotoDB(dbp)
    try:
        assert db.integrity_check() == "ok"
        one = lambda sql: db.execute(sql).fetchone()[0]
        assert one("SELECT COUNT(*) FROM images") == one("SELECT COUNT(DISTINCT path) FROM images")
        assert one("SELECT COUNT(*) FROM vectors WHERE image_id NOT IN (SELECT id FROM images)") == 0
        assert one("SELECT COUNT(*) FROM labels WHERE image_id NOT IN (SELECT id FROM images)") == 0
        n, nv = db.count_images(), db.vector_stats(model_hash)[0]
        assert n == nv                                   # a row and its vector are committed together
        return n
    finally:
        db.close()


def test_kill_9_repeatedly_then_complete(tmp_path):
    rng = random.Random(4)
    root = tmp_path / "many"
    files = []
    for i in range(150):
        files.append(make_image(root / f"d{i % 4}" / f"{i:03d}.png", (i * 7 % 255, 90, 200 - i), i, size=(32, 32)))
    dbp = tmp_path / "k.db"
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(repo=str(REPO_DIR), tests=str(REPO_DIR / "tests"), root=str(root),
                                         db=str(dbp)))
    counts, finished = [], 0
    for run in range(7):
        if run in (3, 5):                                # the collection changes between kills
            for p in rng.sample(files, 3):
                if p.exists():
                    p.unlink()
            for j in range(3):
                files.append(make_image(root / "new" / f"{run}_{j}.png", (10, 200, 30 * j), 1000 + run * 10 + j,
                                        size=(32, 32)))
        p = subprocess.Popen([sys.executable, str(script)], cwd=REPO_DIR, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        assert p.stdout.readline().strip() == b"start", p.stderr.read().decode()
        time.sleep(rng.choice([0.0, 0.05, 0.2, 0.5, 0.9, 1.5]))
        p.send_signal(signal.SIGKILL)
        rc = p.wait()
        finished += rc == 0
        if dbp.exists():
            counts.append(_check_db(dbp))
            if Path(str(dbp) + ".faiss").exists():           # whatever state the index file is in, search works
                s = Searcher(dbp, model=FakeModel())
                assert len(s.search("red", k=1000)) == counts[-1]
                s.close()
    assert any(0 < n for n in counts), counts
    model = FakeModel()
    st = build_index(root, dbp, model=model)
    n_files = sum(1 for f in files if f.exists())
    assert st["images"] == n_files and st["errors"] == 0 and _check_db(dbp) == n_files
    assert len(Searcher(dbp, model=model).search("red", k=1000)) == n_files
    assert build_index(root, dbp, model=model)["indexed"] == 0


# ---- 8 searchers while indexing -----------------------------------------------------------------------
def test_eight_concurrent_searchers_while_indexing(tmp_path):
    from index.labels import label_index
    root = tmp_path / "c"
    model = FakeModel()
    for i in range(8):
        make_image(root / "seed" / f"{i}.jpg", COLOURS["red"], i, size=(32, 32))
    dbp = tmp_path / "c.db"
    build_index(root, dbp, model=model)
    for i in range(120):
        make_image(root / "more" / f"{i:03d}.png", list(COLOURS.values())[i % 8], 100 + i, size=(32, 32))
    query_img = make_image(tmp_path / "q.png", COLOURS["green"], 7)
    errors, calls, stop = [], [0] * 8, threading.Event()
    shared = Searcher(dbp, model=model)

    def worker(n):
        s = shared if n >= 4 else Searcher(dbp, model=model)
        rng = random.Random(n)
        while not stop.is_set():
            try:
                op = rng.randrange(6)
                if op == 0:
                    res = s.search(rng.choice(["red", "green", "猫", "blue"]), k=rng.randrange(1, 30),
                                   offset=rng.randrange(3))
                elif op == 1:
                    res = s.search_image(query_img, k=5, folder=root / "more" if rng.random() < .5 else None)
                elif op == 2:
                    res = s.similar(root / "seed" / "0.jpg", k=5)
                elif op == 3:
                    st = s.stats(error_limit=5)
                    assert st["images"] >= 8
                    res = []
                elif op == 4:
                    res = s.duplicates(threshold=0.999)
                else:
                    res = s.search("red", k=10, threshold=0.0, date_from="2000-01-01")
                if op not in (3, 4):
                    assert res == sorted(res, key=lambda r: -r["score"])
                calls[n] += 1
            except Exception as e:                                   # pragma: no cover - reported below
                errors.append(f"{n}: {e!r}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    try:
        st = build_index(root, dbp, model=model, batch_size=4)
        label_index(dbp, "red,green,blue", model=model)
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:5]
    assert all(c > 0 for c in calls), calls
    assert st["indexed"] == 120 and st["images"] == 128
    assert len(shared.search("red", k=500)) == 128
