"""training/datasets.py + training/evaluate.py: dataset layouts (ImageFolder, ELEVATER iris/coco, zips), ELEVATER
metrics, the report, and the `python -m training eval ... --json` contract on small real sets (sklearn digits,
package photos)."""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training import datasets
from training import evaluate as ev

REPO = Path(__file__).resolve().parent.parent
OPENCV = Path("/usr/share/doc/opencv-doc/examples/data")


def _default_model_available() -> bool:
    cfg = REPO / "assets" / "models" / "default" / "config.json"
    if not cfg.is_file():
        return False
    files = json.loads(cfg.read_text()).get("files", {})
    return all((cfg.parent / files.get(r, "-")).is_file() for r in ("text_onnx", "image_onnx", "tokenizer"))


needs_model = pytest.mark.skipif(not _default_model_available(), reason="default model not built")

DIGIT_NAMES = {"en": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
               "zh": ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九"]}


def make_digits(root: Path, per_class_test=3, per_class_train=2, size=96) -> Path:
    """sklearn digits (8x8, real handwriting) upscaled to size x size, dark ink on white, ImageFolder layout."""
    from sklearn.datasets import load_digits
    d = load_digits()
    count: dict[int, int] = {}
    for img, y in zip(d.images, d.target):
        k = count.get(int(y), 0)
        count[int(y)] = k + 1
        if k >= per_class_test + per_class_train:
            continue
        split = "test" if k < per_class_test else "train"
        out = root / split / str(y)
        out.mkdir(parents=True, exist_ok=True)
        a = (255 - img * 255 / 16).astype(np.uint8)
        Image.fromarray(a).resize((size, size), Image.BICUBIC).convert("RGB").save(out / f"{k}.png")
    names = {str(i): {"en": f"the number {DIGIT_NAMES['en'][i]}", "zh": f"数字{DIGIT_NAMES['zh'][i]}"}
             for i in range(10)}
    (root / "classnames.json").write_text(json.dumps(names, ensure_ascii=False), encoding="utf-8")
    return root


def photo_sources() -> dict[str, tuple[list[Path], str, str]]:
    """Real photos that packages ship: class -> (files, English name, Chinese name)."""
    import skimage
    sk = Path(skimage.__file__).parent / "data"
    out = {"cat": ([sk / "chelsea.png"], "cat", "猫"), "coffee": ([sk / "coffee.png"], "cup of coffee", "咖啡"),
           "astronaut": ([sk / "astronaut.png"], "astronaut", "宇航员"),
           "motorcycle": ([sk / "motorcycle_left.png", sk / "motorcycle_right.png"], "motorcycle", "摩托车")}
    for c, en, zh in (("apple", "apple", "苹果"), ("butterfly", "butterfly", "蝴蝶")):
        if (OPENCV / f"{c}.jpg").is_file():
            out[c] = ([OPENCV / f"{c}.jpg"], en, zh)
    return out


def make_photos(root: Path) -> Path:
    """ImageFolder of package photos: each photo + a centre crop of it (a second view)."""
    src = photo_sources()
    for c, (files, _, _) in src.items():
        d = root / "test" / c
        d.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(files):
            im = Image.open(p).convert("RGB")
            im.save(d / f"{i}.jpg")
            w, h = im.size
            im.crop((w // 8, h // 8, w - w // 8, h - h // 8)).save(d / f"{i}_crop.jpg")
    names = {c: {"en": en, "zh": zh} for c, (_, en, zh) in src.items()}
    (root / "classnames.json").write_text(json.dumps(names, ensure_ascii=False), encoding="utf-8")
    return root


def make_elevater_iris(root: Path, photos: Path, multilabel: bool = False) -> Path:
    """ELEVATER/iris layout: test.zip (stored) + test.txt index + labels.txt + a dataset-info JSON."""
    root.mkdir(parents=True, exist_ok=True)
    classes = sorted(p.name for p in (photos / "test").iterdir())
    lines = []
    with zipfile.ZipFile(root / "test.zip", "w", compression=zipfile.ZIP_STORED) as z:
        for k, c in enumerate(classes):
            for p in sorted((photos / "test" / c).iterdir()):
                member = f"test/{c}_{p.name}"
                z.write(p, member)
                lab = f"{k}" if not multilabel else f"{k},{(k + 1) % len(classes)}"
                lines.append(f"test.zip@{member} {lab}")
    (root / "test.txt").write_text("\n".join(lines) + "\n")
    (root / "labels.txt").write_text("\n".join(classes) + "\n")
    info = {"name": "voc-2007-classification" if multilabel else "toy-photos", "version": 1,
            "type": "classification_multilabel" if multilabel else "classification_multiclass",
            "root_folder": "classification/toy", "test": {"index_path": "test.txt", "files_for_local_usage": ["test.zip"]},
            "labelmap": "labels.txt", "num_classes": len(classes)}
    (root / "dataset_info.json").write_text(json.dumps(info))
    names = json.loads((photos / "classnames.json").read_text(encoding="utf-8"))
    (root / "classnames.json").write_text(json.dumps(names, ensure_ascii=False), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("evalsets")
    photos = make_photos(base / "photos")
    return {"digits": make_digits(base / "digits"), "photos": photos,
            "iris": make_elevater_iris(base / "elevater", photos),
            "voc": make_elevater_iris(base / "voc", photos, multilabel=True)}


# ---- metrics ------------------------------------------------------------------------------------------------
def test_eval_ap_11point_by_hand():
    # ranked: +, -, +, -  -> recall .5 at precision 1, recall 1 at precision 2/3
    ap = ev.ap_11point(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1]))
    assert ap == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)
    assert ev.ap_11point(np.array([1, 1, 0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(1.0)


def test_eval_metrics_single_and_multilabel():
    S = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.1, 0.2, 0.9]])
    y = np.array([0, 1, 1, 2, 2])
    m = ev.compute_metrics(S, y, metric="mean-per-class")
    assert m["accuracy"] == pytest.approx(4 / 5)
    assert m["mean-per-class"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert m["score"] == m["mean-per-class"] and m["metric"] == "mean-per-class"
    assert m["confusion"][1] == [1, 1, 0] and m["support"] == [1, 2, 2]
    Y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 1]])
    mm = ev.compute_metrics(S, Y, multilabel=True, metric="11point_mAP")
    assert mm["accuracy"] == pytest.approx(1.0)          # every top-1 is one of the image's labels
    assert 0 < mm["11point_mAP"] <= 1 and mm["score"] == mm["11point_mAP"]
    b = ev.compute_metrics(np.array([[0.9, 0.1], [0.3, 0.6], [0.6, 0.5]]), np.array([0, 1, 1]), metric="roc_auc")
    assert b["roc_auc"] == pytest.approx(1.0)


# ---- layouts ------------------------------------------------------------------------------------------------
def test_eval_imagefolder_layout(data, tmp_path):
    ds = datasets.load_dataset(data["digits"])
    assert ds.layout == "imagefolder" and ds.classes == [str(i) for i in range(10)]
    assert len(ds.splits["test"]) == 30 and len(ds.splits["train"]) == 20
    assert ds.class_names("zh")[3] == "数字三" and ds.class_names("en")[3] == "the number three"
    assert ds.metric == "accuracy" and not ds.multilabel
    # missing Chinese names fall back to English and are counted; no classnames.json = folder names
    (tmp_path / "test" / "red_fox").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 80, 0)).save(tmp_path / "test" / "red_fox" / "a.png")
    (tmp_path / "test" / "owl").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "test" / "owl" / "b.png")
    bare = datasets.load_dataset(tmp_path)
    assert bare.class_names("zh") == ["owl", "red fox"] and bare.missing_names("zh") == 2
    (tmp_path / "classnames.json").write_text(json.dumps({"owl": {"en": "owl", "zh": "猫头鹰"}, "red_fox": "red fox"}))
    (tmp_path / "templates.json").write_text(json.dumps({"en": ["a {} here."], "zh": ["这里有{}。"]}))
    named = datasets.load_dataset(tmp_path)
    assert named.class_names("zh") == ["猫头鹰", "red fox"] and named.missing_names("zh") == 1
    assert datasets.dataset_templates(named, "zh") == ["这里有{}。"]
    assert len(datasets.dataset_templates(bare, "zh")) == 8                  # bundled zh_short


def test_eval_elevater_iris_zip_and_multilabel(data):
    ds = datasets.load_dataset(data["iris"])
    assert ds.layout == "elevater-iris" and ds.name == "toy-photos" and not ds.multilabel
    sp = ds.splits["test"]
    assert isinstance(sp.images[0], tuple) and sp.images[0][0].name == "test.zip"
    im = datasets.read_image_source(sp.images[0])
    assert isinstance(im, bytes) and len(im) > 1000
    assert ds.class_names("zh")[ds.classes.index("cat")] == "猫"
    voc = datasets.load_dataset(data["voc"])
    assert voc.multilabel and voc.metric == "11point_mAP"
    assert voc.splits["test"].labels.shape == (len(voc.splits["test"]), len(voc.classes))
    assert (voc.splits["test"].labels.sum(1) == 2).all()


def test_eval_elevater_coco_and_extracted_fallback(data, tmp_path):
    photos = data["photos"]
    classes = sorted(p.name for p in (photos / "test").iterdir())
    images, anns = [], []
    (tmp_path / "test_images").mkdir()
    for k, c in enumerate(classes):
        p = sorted((photos / "test" / c).iterdir())[0]
        name = f"{c}.jpg"
        (tmp_path / "test_images" / name).write_bytes(p.read_bytes())      # extracted; the zip is absent
        images.append({"id": k + 1, "file_name": name, "zip_file": "test_images.zip"})
        anns.append({"id": k + 1, "image_id": k + 1, "category_id": k + 1})
    coco = {"images": images, "annotations": anns, "categories": [{"id": k + 1, "name": c} for k, c in enumerate(classes)]}
    (tmp_path / "test.json").write_text(json.dumps(coco))
    ds = datasets.load_dataset(tmp_path)
    assert ds.layout == "elevater-coco" and ds.classes == classes
    assert list(ds.splits["test"].labels) == list(range(len(classes)))
    assert Path(ds.splits["test"].images[0]).is_file()


def test_eval_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(datasets.DatasetError, match="no ELEVATER index"):
        datasets.load_dataset(tmp_path)
    r = subprocess.run([sys.executable, "-m", "training", "eval", "--dataset", str(tmp_path / "nope"), "--json"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not found" in r.stderr
    from dcclip_core.config import architecture
    (tmp_path / "model").mkdir()
    architecture("tiny-test").save(tmp_path / "model" / "config.json")         # trained, not exported yet
    (tmp_path / "ds" / "test" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "ds" / "test" / "a" / "x.png")
    r = subprocess.run([sys.executable, "-m", "training", "eval", "--dataset", str(tmp_path / "ds"), "--model",
                        str(tmp_path / "model"), "--json"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "python -m training export" in r.stderr


# ---- end to end with the shipped ONNX model ----------------------------------------------------------------
@needs_model
def test_eval_cli_contract_on_photos_en_zh(data, tmp_path):
    for lang in ("en", "zh"):
        r = subprocess.run([sys.executable, "-m", "training", "eval", "--dataset", str(data["photos"]), "--lang", lang,
                            "--json", "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout.strip().splitlines()[-1])
        # 2 views per photo: 10 from scikit-image alone, 14 where Debian's opencv-doc adds apple and butterfly
        n_photos = 2 * sum(len(files) for files, _, _ in photo_sources().values())
        assert isinstance(res["accuracy"], float) and res["lang"] == lang and res["n"] == n_photos >= 10
        assert res["accuracy"] >= 0.5, res                  # well above chance (1/6) on real photos
        assert (tmp_path / f"eval_{lang}.png").stat().st_size > 5000
        full = json.loads((tmp_path / f"eval_{lang}.json").read_text(encoding="utf-8"))
        assert len(full["confusion"]) == res["num_classes"]
        assert "| accuracy (primary) |" in (tmp_path / f"report_{lang}.md").read_text(encoding="utf-8")


@needs_model
def test_eval_digits_and_elevater_with_model(data):
    import dcclip_core
    m = dcclip_core.load("default")
    dig = ev.evaluate_zeroshot(m, datasets.load_dataset(data["digits"]), "zh")
    assert dig["n"] == 30 and 0 <= dig["accuracy"] <= 1 and dig["top5"] >= dig["accuracy"]
    assert sum(dig["support"]) == 30
    iris = ev.evaluate_zeroshot(m, datasets.load_dataset(data["iris"]), "en")
    folder = ev.evaluate_zeroshot(m, datasets.load_dataset(data["photos"]), "en")
    assert iris["accuracy"] == pytest.approx(folder["accuracy"])       # same images via a zip
    voc = ev.evaluate_zeroshot(m, datasets.load_dataset(data["voc"]), "en")
    assert voc["metric"] == "11point_mAP" and 0 < voc["score"] <= 1
    table = ev.report_table(voc)
    assert "11point_mAP (primary)" in table
