"""People, in the app: the face pass runs in the background after the text pass (same worker, its own progress),
the People tab lists people with face thumbnails, naming a person (妈妈) makes the name a query, merging, "Not this
person", the privacy switch and deleting all face data (faces, people, names, face thumbnails), the booth is
read-only; search results name the person under the tile and box their face in the detail view; the Index tab
counts faces and lists the photos the face pass could not look at.

Through ``ui.backend.Backend`` and the tabs' handlers, on the shipped model and real photos of people: the bundled
astronaut.jpg and grace_hopper.jpg, and KPhotoAlbum's demo photos of Jesper (Debian package kphotoalbum) when
they are there."""
from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import DEMO, needs_model

pytestmark = needs_model
KPA = Path("/usr/share/kphotoalbum/demo")
JESPER = ("jesper.jpg", "jesper_2.jpg", "bar55_2.jpg")
needs_kpa = pytest.mark.skipif(not all((KPA / n).is_file() for n in JESPER),
                               reason=f"KPhotoAlbum's demo photos are not in {KPA} (Debian package kphotoalbum)")

try:
    from dcclip_core import faces as _faces
    if not _faces.available():
        raise ImportError("dlib or the face models are missing")
except Exception as e:                                      # pragma: no cover - an install problem
    pytest.skip(f"faces cannot be found here: {e}", allow_module_level=True)


class Req:
    """What the handlers read of a gr.Request: the headers."""

    def __init__(self, lang: str = "en"):
        al = {"zh": "zh-CN,zh;q=0.9", "zh_hant": "zh-TW,zh;q=0.9"}.get(lang, "en-US,en;q=0.9")
        self.headers = {"accept-language": al, "host": "127.0.0.1:7860"}


def _value(update):
    """The value of a component update (a component or its dict)."""
    return update["value"] if isinstance(update, dict) else getattr(update, "value", update)


def _items(update) -> list:
    """The [(URL, caption)] of a gallery update."""
    return update["value"] if isinstance(update, dict) else update


def _names(paths) -> list[str]:
    return [Path(p if isinstance(p, str) else p["path"]).name for p in paths]


@pytest.fixture(scope="module")
def backend(tmp_path_factory, shipped_model):
    """A library of photos of people (and a coffee cup), indexed, its text read and its faces found by the
    backend's background worker; records which pass ran when, and on which thread."""
    import index.facepass as facepass
    import index.textpass as textpass
    from ui.backend import Backend
    tmp = tmp_path_factory.mktemp("people")
    root = tmp / "photos"
    root.mkdir()
    for name in ("astronaut.jpg", "grace_hopper.jpg", "coffee.jpg"):
        shutil.copy(DEMO / name, root / name)
    for name in JESPER:
        if (KPA / name).is_file():
            shutil.copy(KPA / name, root / name)
    runs = []
    real_text, real_faces = textpass.read_texts, facepass.find_faces

    def recorded(name, fn):
        def run(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                runs.append((name, threading.current_thread().name, t0, time.perf_counter()))
        return run
    mp = pytest.MonkeyPatch()
    mp.setattr(textpass, "read_texts", recorded("text", real_text))
    mp.setattr(facepass, "find_faces", recorded("faces", real_faces))
    try:
        be = Backend(tmp / "library.db", model=shipped_model, root=root, thumb_dir=tmp / "thumbs").start()
        assert be.wait(120) and be.state == "ready", be.error
        assert be.wait_background(300) and not be.text_error and not be.faces_error, (be.text_error,
                                                                                    be.faces_error)
    finally:
        mp.undo()
    be.runs = runs
    return be


def _person_of(be, photo: str) -> int:
    """The person whose face is in ``photo`` (its only / first face)."""
    faces = be.faces_of(str(be.root / photo))["faces"]
    assert faces and faces[0]["person"] is not None, faces
    return int(faces[0]["person"])


# ------------------------------------------------------------------------------ the background face pass
def test_face_pass_runs_after_the_text_pass_in_the_same_worker(backend):
    from ui.common import status_text
    (t_name, t_thread, _, t_end), (f_name, f_thread, f_start, _) = backend.runs
    assert (t_name, f_name) == ("text", "faces") and t_thread == f_thread == "dcclip-text", backend.runs
    assert f_start >= t_end
    n = len(list(backend.root.glob("*.jpg")))
    st = backend.status()["faces"]
    assert st == {"running": False, "done": n, "total": n, "error": "", "enabled": True}, st
    assert "Finding faces" not in status_text(backend, "en")
    stats = backend.face_stats()
    assert stats["photos"].get("none") == 1 and stats["with_faces"] == n - 1 and stats["pending"] == 0, stats


def test_people_are_listed_with_face_thumbnails(backend):
    from PIL import Image
    from ui.tabs import folders as F
    from ui.tabs import people as P
    rows = backend.people()
    assert len(rows) >= 2 and all(r["cover"] and r["photos"] >= 1 for r in rows), rows
    for r in rows:
        f = backend.face_thumb(r["cover"])
        assert f is not None and f.is_file() and f.parent.parent == backend.thumb_dir, f
        with Image.open(f) as im:
            assert im.format == "JPEG" and im.size == (backend.FACE_THUMB, backend.FACE_THUMB)
        assert backend.face_thumb(r["cover"]) == f                                   # made once
    head, grid, shown, *_ = P.show_people(backend, None, Req("zh"))
    assert shown == rows and len(_items(grid)) == len(rows) and grid["visible"] is True
    url, cap = _items(grid)[-1]
    assert url.startswith("http://127.0.0.1:7860/thumb/face") and url.endswith(".jpg")
    assert cap in ("未命名 · 1 张照片", f"未命名 · {rows[-1]['photos']} 张照片"), cap
    assert head.startswith(f"{len(rows)} 个人物"), head
    _, grid_en, *_ = P.show_people(backend, None, Req("en"))
    assert any(c == "Unnamed · 1 photo" for _, c in _items(grid_en)), grid_en
    n = len(list(backend.root.glob("*.jpg")))
    assert F.faces_md(backend, "en").startswith(f"Faces: {n - 1} photos with faces · ")
    assert F.faces_md(backend, "zh").startswith(f"人脸：{n - 1} 张照片有人脸 · ")


def test_a_person_panel(backend):
    from ui.tabs import people as P
    rows = backend.people()
    i = next(i for i, r in enumerate(rows) if r["id"] == _person_of(backend, "astronaut.jpg"))
    panel, head, name, photos, faces, face_ids, picked, merge, chosen, msg = P.pick_person(
        backend, rows, SimpleNamespace(index=i), Req("en"))
    assert panel.visible and chosen == rows[i]["id"] and picked is None and msg == ""
    assert "Give this person a name" in head and name == ""
    assert [c for _, c in photos] == _names(backend.person_photos(chosen))
    assert len(faces) == len(face_ids) == rows[i]["faces"]
    assert {v for _, v in merge.choices} == {r["id"] for r in rows} - {chosen}


# ------------------------------------------------------------------------------ naming and search
def test_named_person_is_found_by_name(backend):
    """妈妈 names the astronaut: the search "妈妈" returns her photo first, says so under the tile, and the detail
    view boxes her face in magenta with the name."""
    from ui.tabs import people as P
    from ui.tabs import search as S
    from ui.why import FACE
    if not hasattr(backend.searcher, "faces_of"):
        pytest.skip("index.Searcher does not match people's names yet")
    pid = _person_of(backend, "astronaut.jpg")
    out = P.do_rename(backend, pid, "  妈妈 ", Req("zh"))
    assert out[-1] == "已命名为“妈妈”：搜索这个名字就能找到他们的照片。", out[-1]
    assert backend.person(pid)["name"] == "妈妈" and any(c.startswith("妈妈 · ") for _, c in _items(out[1]))
    # the name with more words: her photos, ranked by the rest, and not hidden as "no good match" by the gate
    more, _, more_kept, _ = asyncio.run(S.do_search(backend, "妈妈 在海边", 20, "good", request=Req("zh")))
    assert more and more_kept[0]["why"][0]["name"] == "妈妈" and "astronaut" in more_kept[0]["path"]
    gallery, msg, kept, _ = asyncio.run(S.do_search(backend, "妈妈", 20, "any", request=Req("zh")))
    assert kept and Path(kept[0]["path"]).name == "astronaut.jpg", (msg, _names(kept))
    assert "\n人物：妈妈" in gallery[0]["caption"], gallery[0]["caption"]
    assert kept[0]["why"][0]["person"] == pid and kept[0]["why"][0]["name"] == "妈妈"
    info, why, near, _ = S.on_select(backend, kept, SimpleNamespace(index=0), Req("zh"))
    html = _value(why)
    assert f'<span class="why-person">{S.PERSON_ICON}妈妈</span>' in html, html[:600]
    assert "紫红色方框：妈妈" in html
    assert "人物：妈妈" in info, info
    img, caption = backend.why_picture(kept[0]["id"], "en", why=kept[0]["why"])
    assert "Magenta box: 妈妈" in caption, caption
    x0, y0, x1, y1 = (v * img.width / 512 for v in kept[0]["why"][0]["box"])            # a 512 px photo
    a = np.asarray(img, np.int32)
    edge = [a[int((y0 + y1) / 2), min(img.width - 1, int(x0) + d)] for d in range(0, 6)]
    assert any(abs(p - FACE).max() < 40 for p in edge), edge
    res = asyncio.run(S.api_search(backend, "妈妈", 3))
    assert res[0]["name"] == "astronaut.jpg" and res[0]["why"][0] == {
        "person": pid, "name": "妈妈", "box": kept[0]["why"][0]["box"]}, res[0]


@needs_kpa
def test_an_english_name_finds_all_of_that_persons_photos(backend):
    if not hasattr(backend.searcher, "faces_of"):
        pytest.skip("index.Searcher does not match people's names yet")
    pid = _person_of(backend, "jesper.jpg")
    backend.rename_person(pid, "Jesper")
    mine = set(_names(backend.person_photos(pid)))
    res = backend.run_search("Jesper", k=10)
    assert _names(res)[:len(mine)] and set(_names(res)[:len(mine)]) == mine, (_names(res), mine)
    assert all(r["why"][0].get("name") == "Jesper" for r in res[:len(mine)])


# ------------------------------------------------------------------------------ merge, not this person
def test_merge_then_take_a_face_out(backend):
    """Grace Hopper's group merged into the astronaut's (one person, two photos, the name kept), then her face
    taken out again ("Not this person"): a person of her own, who does not join back on re-grouping."""
    from ui.tabs import people as P
    keep, other = _person_of(backend, "astronaut.jpg"), _person_of(backend, "grace_hopper.jpg")
    assert keep != other
    out = P.do_merge(backend, keep, other, Req("en"))
    assert out[-1].startswith("Merged: "), out[-1]
    assert set(_names(backend.person_photos(keep))) == {"astronaut.jpg", "grace_hopper.jpg"}
    assert backend.person(other) is None and other not in [r["id"] for r in backend.people()]
    panel = out[3:12]                        # the person panel's outputs (after the grid's three)
    assert panel[0].visible and panel[8] == keep and len(panel[3]) == 2
    grace = next(f["id"] for f in backend.person_faces(keep) if Path(f["path"]).name == "grace_hopper.jpg")
    face_ids = panel[5]
    picked, note = P.pick_face(face_ids, SimpleNamespace(index=face_ids.index(grace)), Req("en"))
    assert picked == grace and "Not this person" in note
    out = P.do_not_this(backend, keep, picked, Req("zh"))
    assert out[-1] == "已移出：这张脸现在单独成为一个人物。", out[-1]
    assert _names(backend.person_photos(keep)) == ["astronaut.jpg"]
    alone = _person_of(backend, "grace_hopper.jpg")
    assert alone != keep and backend.person_photos(alone) == [str(backend.root / "grace_hopper.jpg")]
    backend.regroup_faces()
    assert _person_of(backend, "grace_hopper.jpg") != _person_of(backend, "astronaut.jpg")
    assert backend.person(_person_of(backend, "astronaut.jpg"))["name"] in ("妈妈", None)


def test_handlers_say_what_is_missing(backend):
    from ui.tabs import people as P
    assert P.do_rename(backend, None, "x", Req("en"))[-1] == "Click a person first."
    assert P.do_merge(backend, 1, None, Req("zh"))[-1] == "请先选择要合并进来的人物。"
    assert P.do_not_this(backend, 1, None, Req("en"))[-1] == "Click the face that is not this person first."
    assert "no person with id 99999" in P.do_rename(backend, 99999, "x", Req("en"))[-1]


# ------------------------------------------------------------------------------ the booth
def test_demo_mode_is_read_only(backend):
    import gradio as gr
    from ui.backend import Backend, ReadOnlyError
    from ui.tabs import people as P
    booth = Backend(backend.db_path, searcher=backend.searcher, demo=True, thumb_dir=backend.thumb_dir)
    rows = booth.people()
    assert rows == backend.people() and booth.face_thumb(rows[0]["cover"]) is not None       # reading works
    pid = rows[0]["id"]
    face = booth.person_faces(pid)[0]["id"]
    for call in (lambda: booth.set_faces_enabled(False), booth.delete_face_data, booth.regroup_faces,
                 lambda: booth.rename_person(pid, "x"), lambda: booth.merge_people(pid, rows[-1]["id"]),
                 lambda: booth.remove_face(face)):
        with pytest.raises(ReadOnlyError):
            call()
    assert booth.faces_enabled() and backend.face_stats()["faces"] > 0
    assert P.do_rename(booth, pid, "x", Req("en"))[-1] == "Demo mode: read-only."
    with gr.Blocks():
        ui = P.build(booth)
    assert ui.switch.interactive is False and ui.delete_btn.interactive is False
    assert ui.regroup_btn.visible is False
    assert "faces_demo_note" in str(ui.settings_msg.value)                   # the note, in the browser's language


# ------------------------------------------------------------------------------ privacy: the switch and delete
def test_privacy_switch_and_delete_all_face_data(tmp_path, shipped_model, monkeypatch):
    """A library whose switch is off: the face pass looks at nothing. Turned on in the People tab: the pass runs
    in the background (its progress in the status line, the People tab and the Index tab), finds the people and
    lists the damaged photo it could not look at. Deleted: no face, person, name, face record or face thumbnail
    is left, the switch is off and the next pass does nothing."""
    import index.facepass as facepass
    from index import PhotoDB, build_index
    from ui.backend import Backend
    from ui.common import status_text
    from ui.tabs import folders as F
    from ui.tabs import people as P
    from ui.tabs import search as S
    root = tmp_path / "photos"
    root.mkdir()
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        shutil.copy(DEMO / name, root / name)
    shutil.copy(DEMO / "squirrel.jpg", root / "damaged.jpg")
    db_path = tmp_path / "library.db"
    build_index(str(root), db_path, model=shipped_model, save_faiss=False)
    data = (root / "damaged.jpg").read_bytes()
    (root / "damaged.jpg").write_bytes(data[:len(data) // 3])                # damaged since it was indexed
    with PhotoDB(db_path) as db:
        db.set_faces_enabled(False)
    be = Backend(db_path, model=shipped_model, thumb_dir=tmp_path / "thumbs").start()
    assert be.wait(120) and be.wait_background(300) and not be.faces_error, be.faces_error
    with PhotoDB(db_path, create=False) as db:
        assert db.count_faces() == 0 and db.face_read_counts() == {}
    assert be.people() == [] and not be.faces_enabled()
    head, grid, shown, *_, switch, settings = P.show_people(be, None, Req("en"))
    assert head.startswith("**Finding faces is switched off.**") and shown == []
    assert _items(grid) == [] and grid["visible"] is False                       # the head line says why
    assert switch.value is False and settings.open is True
    assert F.faces_md(be, "zh") == "人脸识别已关闭（见“人物”标签页）"

    gate, held = threading.Event(), threading.Event()
    real = facepass.find_one

    def held_find(finder, path):                    # the first photo waits until the test has looked
        held.set()
        assert gate.wait(120)
        return real(finder, path)
    monkeypatch.setattr(facepass, "find_one", held_find)
    try:
        *_, note, switch, timer = P.set_switch(be, True, Req("en"))
        assert switch.value is True and timer.active and note.startswith("Finding faces is on"), note
        assert held.wait(120) and be.faces_running and not be.text_running
        assert "Finding faces: 0 / 3" in status_text(be, "en"), status_text(be, "en")
        assert "正在识别人脸：0 / 3" in status_text(be, "zh")
        assert P.head_md(be, "en", []) == "Finding faces: 0 / 3 · people appear here as they are found."
        assert S.poll(be, True, Req("en"))[1].active                          # the status timer keeps going
    finally:
        gate.set()
    assert be.wait_background(300) and not be.faces_error, be.faces_error
    assert not S.poll(be, True, Req("en"))[1].active
    assert len(be.people()) == 2
    head, grid, *_ = P.show_people(be, None, Req("en"))                      # face thumbnails made
    assert len(_items(grid)) == 2 and len(list((tmp_path / "thumbs").glob("fa/face*.jpg"))) == 2
    rows = F.faces_table(be, "zh").value["data"]
    assert [(Path(f).name, why) for f, why in rows] == [("damaged.jpg", "图片数据损坏或不完整")], rows
    info, *_ = S.photo_detail(be, str(root / "damaged.jpg"), "zh", "http://127.0.0.1:7860")
    assert "无法在这张照片中识别人脸：图片数据损坏或不完整。" in info, info
    assert F.faces_md(be, "en") == "Faces: 2 photos with faces · 2 faces · 2 people"
    be.rename_person(be.people()[0]["id"], "Grace")
    photo_thumbs = {p for p in (tmp_path / "thumbs").rglob("*.jpg") if not p.name.startswith("face")}

    msg, ask = P.ask_delete(be, Req("en"))
    assert ask.visible and msg.startswith("Delete all 2 faces and 2 people"), msg
    out = P.do_delete(be, Req("en"))
    assert out[-3] == "Deleted 2 faces with every person and name. Finding faces is off.", out[-3]
    assert _items(out[1]) == [] and out[-2].value is False and out[-1].visible is False
    with PhotoDB(db_path, create=False) as db:
        assert db.count_faces() == 0 and db.people_rows() == [] and db.face_read_counts() == {}
        assert db.query("SELECT COUNT(*) AS n FROM people")[0]["n"] == 0
        assert not db.faces_enabled()
    assert list((tmp_path / "thumbs").rglob("face*.jpg")) == []
    assert {p for p in (tmp_path / "thumbs").rglob("*.jpg")} == photo_thumbs      # photo thumbnails stay
    assert be.wait_background(300)                # the worker ran again after the delete: it found nothing
    with PhotoDB(db_path, create=False) as db:
        assert db.count_faces() == 0
    assert be.run_search("Grace", k=3) and all("person" not in w for r in be.run_search("Grace", k=3)
                                                 for w in r.get("why") or [])


# ------------------------------------------------------------------------------ pieces
def test_person_line_under_a_tile():
    from ui.common import why_items, why_text
    r = {"score": 0.5, "why": [{"person": 3, "name": "妈妈", "box": [0, 0, 9, 9]},
                               {"text": "生日快乐", "box": [0, 0, 9, 9], "match": "exact"},
                               {"concept": "x", "en": "cake", "zh": "蛋糕", "share": 0.2}]}
    assert why_text(r, "zh") == "人物：妈妈 · “生日快乐” · 蛋糕 40%"
    assert why_items(r, "en") == [("cake", 40)]
    two = {"score": 0.5, "why": [{"person": 3, "name": "妈妈", "box": [0, 0, 9, 9]},
                                 {"person": 4, "name": "Grace", "box": [0, 0, 9, 9]}]}
    assert why_text(two, "en") == "Person: 妈妈, Grace" and why_text(two, "zh") == "人物：妈妈、Grace"
    from ui.tabs.search import _why_json
    assert _why_json(r)[0] == {"person": 3, "name": "妈妈", "box": [0, 0, 9, 9]}


def test_faces_notes():
    from ui.tabs.search import faces_note
    assert faces_note({}, "en") == "" and faces_note({"state": "none", "faces": []}, "en") == ""
    f = lambda name: {"id": 1, "box": [0, 0, 1, 1], "person": 1, "name": name}     # noqa: E731
    assert faces_note({"state": "faces", "faces": [f("妈妈"), f("Grace")]}, "en") == "People: 妈妈, Grace"
    mixed = {"state": "faces", "faces": [f("妈妈"), f(None), f(None)]}
    assert faces_note(mixed, "zh") == "人物：妈妈，另有 2 个未命名"
    assert faces_note({"state": "faces", "faces": [f(None)]}, "en") == "1 unnamed person (name them in the People tab)"
    assert faces_note({"state": "error", "note": "faces could not be found (RuntimeError: x)", "faces": []},
                      "zh_hant") == "無法在這張照片中識別人臉：人臉識別在這張照片上出錯。"


def test_face_box_and_name_tag():
    from PIL import Image
    from ui.why import FACE, draw_face, label_font
    img = Image.new("RGB", (400, 300), (20, 20, 20))
    out = draw_face(img, [200, 200, 300, 300], 0.5, "妈妈")          # the box of a 800x600 photo, shrunk to half
    a = np.asarray(out, np.int32)
    assert abs(a[125, 101] - FACE).max() < 40                          # the left edge, half-way down
    assert abs(a[125, 125] - (20, 20, 20)).max() == 0                   # inside untouched
    if label_font(12)[1]:                                               # the name tag, above the box
        above = np.abs(a[:99, 95:200] - FACE).max(-1) < 40
        ys, xs = np.nonzero(above)
        assert len(ys) > 200 and ys.max() == 98 and ys.min() > 60, (ys.min(), ys.max())
        tag = a[ys.min():99, 95 + xs.min():95 + xs.max() + 1]
        assert (tag.max(-1) < 60).mean() > 0.05                            # dark ink on it: the name
    assert np.array_equal(np.asarray(img), np.full((300, 400, 3), 20))  # a copy
