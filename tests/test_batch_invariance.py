"""encode_text gives a text the same vector whatever else is in the batch (CONTRACTS.md), bit for bit, with the
shipped dynamic-int8 text tower; so one user's search results never depend on other users' queries."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import DEMO, model_missing

if model_missing():
    pytest.skip(model_missing(), allow_module_level=True)

SHORT = ["猫", "cat", "貓", "a dog", "咖啡", ""]
LONG = ["a red sports car parked in front of an old temple at sunset, photographed from across the street",
        "一只橘色的猫躺在窗台上晒太阳，旁边放着一杯咖啡和一本打开的书",
        "astronaut " * 200]                                              # truncated to max_len tokens
QUERIES = ["一只猫", "a cat", "rocket", "火箭", "一杯咖啡", "butterfly on a flower", "宇航员", "sunflowers"]


@pytest.fixture(scope="module")
def model():
    import dcclip_core
    return dcclip_core.load()


@pytest.fixture(scope="module")
def alone(model):
    """Each text of SHORT + LONG + QUERIES encoded by itself: text -> (d,)."""
    return {t: model.encode_text([t])[0] for t in dict.fromkeys(SHORT + LONG + QUERIES)}


def _same(got: np.ndarray, texts: list[str], alone: dict) -> None:
    assert got.dtype == np.float32 and got.shape == (len(texts), len(next(iter(alone.values()))))
    for row, t in zip(got, texts):
        assert np.array_equal(row, alone[t]), f"{t[:30]!r} changed with its batch"


def test_shared_onnx_run_would_depend_on_the_batch(model):
    """Why the runtime runs texts one at a time: in one shared run (padded to the longest) the int8 tower's
    per-tensor activation scale moves a short text's vector by far more than float noise."""
    from dcclip_core.runtime import make_session
    sess = make_session(model.path / model.config.files["text_onnx"])
    run = lambda texts: sess.run(["embedding"], dict(zip(("input_ids", "attention_mask"), model.tokenizer(texts))))[0]
    assert np.abs(run(["cat", LONG[0]])[0] - run(["cat"])[0]).max() > 1e-3


def test_same_vector_alone_in_mixed_batches_and_any_position(model, alone):
    texts = SHORT + LONG
    _same(model.encode_text(texts), texts, alone)
    _same(model.encode_text(texts[::-1]), texts[::-1], alone)                       # other positions
    mixed = [LONG[0], "猫", LONG[2], "cat", "", LONG[1], "a dog"]
    _same(model.encode_text(mixed), mixed, alone)
    rng = np.random.default_rng(0)
    for n in (2, 7, 33, 70):                                                        # more texts than workers
        pick = [texts[i] for i in rng.integers(0, len(texts), n)]                    # repeats included
        _same(model.encode_text(pick), pick, alone)


def test_rows_normalised_and_api_unchanged(model, alone):
    e = model.encode_text(SHORT + LONG, batch_size=2)                               # batch_size changes nothing
    _same(e, SHORT + LONG, alone)
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert model.encode_text([]).shape == (0, model.dim)
    with pytest.raises(TypeError):
        model.encode_text("a cat")
    assert np.array_equal(alone["猫"], alone["貓"])                                 # same tokens after t2s


def test_thread_count_does_not_change_vectors(model, alone):
    import dcclip_core
    for threads in (1, 3):
        m = dcclip_core.load(str(model.path), threads=threads)
        texts = QUERIES + SHORT
        _same(m.encode_text(texts), texts, alone)


def test_label_vector_does_not_depend_on_other_labels(model):
    from index.labels import label_embeddings
    one = label_embeddings(model, ["cat"])[0]
    assert np.array_equal(label_embeddings(model, ["猫", "cat", "rocket"])[1], one)


def test_search_many_equals_search_on_demo_photos(model, tmp_path):
    from index import Searcher, build_index
    photos = tmp_path / "photos"
    shutil.copytree(DEMO, photos, ignore=shutil.ignore_patterns("*.py", "*.md", "*.json"))
    build_index(str(photos), str(tmp_path / "demo.db"), model=model)
    with Searcher(tmp_path / "demo.db", model=model) as s:
        want = [s.search(q, k=5) for q in QUERIES]
        assert want[0][0]["path"].endswith("cat_chelsea.jpg")
        assert s.search_many(QUERIES, k=5) == want                                  # one encode_text(list)
        assert s.search_many(QUERIES[::-1] + LONG, k=5)[:len(QUERIES)] == want[::-1]
