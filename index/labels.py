"""Zero-shot labelling of the whole index with a user label set (Chinese and/or English), export, removal.

    from index.labels import label_index, labels_of, export_labels, label_sets, remove_paths
    label_index("photos.db", ["猫", "狗", "beach", "birthday cake"], label_set="pets")
    labels_of("photos.db", "pets")          # [{"path", "label", "score", "cosine", "rank", "source"}, ...]
    export_labels("photos.db", "pets", "csv", "pets.csv")
    remove_paths("photos.db", ["/photos/old"])   # un-index files or whole folders
    label_index_with_prompt("photos.db", prompt, "pets")    # a learned prompt (dcclip_core.prompts) instead
    classify_index("photos.db", ["猫", "狗"])                # the same, in memory: summary + "rows" (read-only demo)
    zero_shot_prompt(model, ["猫", "狗"])                     # typed labels as the Prompt label_index applies
    set_label("photos.db", "pets", ["/photos/a.jpg"], "狗")   # a correction (shown with source "manual")
    remove_correction("photos.db", "pets", ["/photos/a.jpg"]) # undo it: the machine label shows again
    corrections_of("photos.db", "pets")                      # {"/photos/a.jpg": "狗"}
    copy_to_folders("photos.db", "pets", "/sorted")         # /sorted/<label>/..., never overwriting or duplicating

Typed labels are a zero-shot prompt (``zero_shot_prompt``): each label becomes one text embedding, the mean of
its filled templates, those of its language (``dcclip_core.zeroshot``: ``zh_short`` templates when the label
contains CJK characters, else ``en_short``), L2-normalised; logits are 100 x cosine (CLIP's scale). Typed labels
and learned prompts (``label_index_with_prompt``) then take one path: ``dcclip_core.prompts.PromptClassifier``
scores every photo's stored vector (or its pixels, for prompts that act on the image: VPT, Tip-Adapter, linear
probe), ``score`` is the softmax over the set (scores of one image sum to 1), and the best ``top`` labels of every
image are stored in the ``labels`` table (source ``zero-shot:<model hash>``, with each label's ``cosine`` beside
its score, or ``prompt:<name>``). The set's definition is kept in meta ``label_set:NAME``, so the same typed
labels again label only the photos indexed since (same labels, model, ``top``, templates); a prompt
relabels every photo.
``classify_index`` runs the same path in memory (nothing written).

A correction (``set_label``) is a fact kept apart from the machine labels (table ``corrections``): no labelling
run, whatever its labels, language or prompt, deletes or overrides it. Every read that presents a set's labels
(``labels_of``, counts, export, ``copy_to_folders``) shows a corrected photo with its corrected label alone
(rank 1, score 1.0, source "manual"); its machine labels are still written and show again after
``remove_correction``.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from dcclip_core.numeric import softmax
from dcclip_core.prompts import Prompt, PromptClassifier
from dcclip_core.zeroshot import class_embeddings, language_of

from .db import PhotoDB, now_iso
from .errors import IndexErrorBase

LOGIT_SCALE = 100.0
DEFAULT_SET = "default"
EXPORT_FIELDS = ("path", "label", "score", "cosine", "rank", "source")
_SPLIT = re.compile(r"[,，、;；\n]+")


class LabelError(IndexErrorBase, ValueError):
    """A label set that cannot be used (empty, unknown set name, nothing indexed with this model)."""


def parse_labels(labels: str | Sequence[str]) -> list[str]:
    """"猫, 狗，cat、dog" or a list -> ["猫", "狗", "cat", "dog"] (trimmed, empty and repeated ones dropped)."""
    items = _SPLIT.split(labels) if isinstance(labels, str) else [x for s in labels for x in _SPLIT.split(str(s))]
    out: list[str] = []
    for x in items:
        x = " ".join(x.split())
        if x and x not in out:
            out.append(x)
    return out


def label_embeddings(model, labels: Sequence[str], templates: dict | None = None) -> np.ndarray:
    """(L, d) float32: each label's zero-shot embedding (``dcclip_core.zeroshot``: the mean over its language's
    templates); ``templates`` {"en": [...], "zh": [...]} replaces the bundled ones."""
    bank = getattr(model, "concept_bank", None)        # text-space models: labels in the bank's label space
    if not templates:
        return class_embeddings(model.encode_text, labels, bank=bank)
    return np.concatenate([class_embeddings(model.encode_text, [lb], templates[language_of(lb)], bank=bank)
                           for lb in labels])


def zero_shot_prompt(model, labels: Sequence[str], templates: dict | None = None) -> Prompt:
    """Typed labels as a zero-shot ``dcclip_core.prompts.Prompt`` for ``model``: class embeddings from
    ``label_embeddings`` (each label in its own language), logits 100 x cosine; no torch."""
    from .indexer import model_identity
    labels = list(labels)
    mid, mhash, dim, _ = model_identity(model)
    return Prompt({"name": "zero-shot", "method": "zeroshot", "model": {"id": mid, "hash": mhash, "dim": dim},
                   "classes": labels, "labels": {"en": labels, "zh": labels}, "logit_scale": LOGIT_SCALE,
                   "shots": 0}, {"class_embeds": label_embeddings(model, labels, templates)})


def _open(db) -> tuple[PhotoDB, bool]:
    return (db, False) if isinstance(db, PhotoDB) else (PhotoDB(db, create=False), True)


def _checked_labels(labels: str | Sequence[str]) -> list[str]:
    labels = parse_labels(labels)
    if not labels:
        raise LabelError("no labels given (e.g. --labels \"猫,狗,beach\")")
    return labels


def _model(model):
    from .indexer import default_model
    return model if model is not None else default_model()


def _require_vectors(db: PhotoDB, model_hash: str) -> None:
    if db.vector_stats(model_hash)[0] == 0:
        raise LabelError(f"no photos in {db.path} are indexed with this model ({model_hash}); run build first")


# ---------------------------------------------------------------------------------------------------------
# The one labelling path: a prompt's classifier over every photo's stored vector (or pixels), rows written
# ---------------------------------------------------------------------------------------------------------
def _needs_pixels(prompt: Prompt) -> bool:
    """True when a prompt acts on the image itself or on backbone features (VPT, Tip-Adapter, linear
    probe), so stored embeddings are not enough and every photo must be encoded again."""
    t = prompt.tensors
    return bool(prompt.visual) or "cache_keys" in t or "weight" in t


@dataclass(frozen=True)
class _Labeller:
    """A prompt applied to the photos of one model: its classifier, the label each class is stored as, the
    rows' source, and whether each label's cosine is kept beside its probability (zero-shot rows)."""
    clf: PromptClassifier
    labels: list[str]
    source: str
    model_hash: str
    dim: int
    cosine: bool = False

    @classmethod
    def typed(cls, model, labels: Sequence[str], templates: dict | None = None) -> "_Labeller":
        """Typed labels: their zero-shot prompt (``zero_shot_prompt``); rows "zero-shot:<model hash>"."""
        p = zero_shot_prompt(model, labels, templates)
        m = p.meta["model"]
        clf = PromptClassifier(model, p, check=False)                      # made for this model just now
        return cls(clf, p.labels(), f"zero-shot:{m['hash']}", m["hash"], m["dim"], cosine=True)

    @classmethod
    def learned(cls, model, prompt: Prompt, lang: str = "en") -> "_Labeller":
        """A learned prompt (raises PromptMismatchError unless learned for ``model``); rows "prompt:<name>"."""
        from .indexer import model_identity
        _, mhash, dim, _ = model_identity(model)
        clf = PromptClassifier(model, prompt)
        return cls(clf, prompt.labels("zh" if lang == "zh" else "en"), f"prompt:{prompt.name}", mhash, dim)

    @property
    def needs_pixels(self) -> bool:
        return _needs_pixels(self.clf.prompt)

    def score(self, emb: np.ndarray, feat: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(prob (b, L), cos (b, L) or None) of image embeddings (b, d) / backbone features (b, F). Typed labels
        of a text-space model compare decorrelated photos with their label-space rows (``ConceptBank``)."""
        prob = softmax(self.clf.logits(emb, feat))                                # (b, L)
        if not self.cosine:
            return prob, None
        bank = getattr(self.clf.model, "concept_bank", None)
        emb = bank.decorrelate(emb) if bank is not None else emb
        return prob, emb @ self.clf.prompt.tensors["class_embeds"].T


def _scored(db: PhotoDB, job: _Labeller, top: int = 1, skip: set[int] | frozenset = frozenset(),
            progress: Callable[[int, int], None] | None = None, batch: int = 8192,
            pixel_batch: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]]:
    """Yield (ids (b,), order (b, top) best first, prob (b, L), cos (b, L) or None) for every photo embedded with
    the labeller's model but those in ``skip``: from the stored vectors (``batch`` at a time), or, when the
    prompt needs pixels, by encoding the photos again (``pixel_batch`` at a time; unreadable ones are left
    out). ``progress(done, total)`` after each batch (skipped photos count as done)."""
    total = db.vector_stats(job.model_hash)[0]

    def ranked(ids, emb, feat):
        prob, cos = job.score(emb, feat)
        return ids, np.argsort(-prob, axis=1, kind="stable")[:, :top], prob, cos

    if not job.needs_pixels:
        done = 0
        for ids, vecs in db.iter_vectors(job.model_hash, job.dim, batch=batch):
            n = len(ids)
            if skip:
                keep = np.fromiter((int(i) not in skip for i in ids), bool, n)
                ids, vecs = ids[keep], vecs[keep]
            if len(ids):
                yield ranked(ids, vecs, None)
            done += n
            if progress is not None:
                progress(done, total)
        return
    rows = [r for r in db.embedded_images(job.model_hash) if r["id"] not in skip]
    done = total - len(rows)                                               # the skipped ones
    for s in range(0, len(rows), pixel_batch):
        chunk = rows[s:s + pixel_batch]
        ok_ids, embs, feats = [], [], []
        for r in chunk:                                                    # one by one: a bad file skips itself
            try:
                e, f = job.clf.encode([r["path"]])
            except Exception:
                continue
            ok_ids.append(r["id"])
            embs.append(e)
            feats.append(f)
        if ok_ids:
            yield ranked(np.asarray(ok_ids, np.int64), np.concatenate(embs), np.concatenate(feats))
        done += len(chunk)
        if progress is not None:
            progress(done, total)


def _label_run(db_path, job: _Labeller, label_set: str | None, definition: dict, top: int = 1,
               incremental: bool = False, progress: Callable[[int, int], None] | None = None,
               batch: int = 8192, pixel_batch: int = 32, t0: float | None = None, **extra) -> dict:
    """Label every photo with its best ``top`` labels of ``job`` into ``label_set`` and return the summary.
    The set's definition (meta) becomes ``definition``; its machine rows are replaced unless ``incremental``
    and the stored definition is the same, in which case only photos without a machine label are labelled.
    Corrections are never touched (a corrected photo's machine rows are written too, shown once undone)."""
    t0 = time.perf_counter() if t0 is None else t0
    label_set = (label_set or DEFAULT_SET).strip() or DEFAULT_SET
    db, own = _open(db_path)
    try:
        _require_vectors(db, job.model_hash)
        same = incremental and _same_definition(db.label_set_meta(label_set), definition)
        with db.transaction():
            if not same:
                db.clear_labels(label_set)                                 # machine rows only: corrections stay
            db.set_label_set_meta(label_set, json.dumps({**definition, "time": now_iso()}, ensure_ascii=False))
        skip = db.labelled_image_ids(label_set) if same else set()
        labeled = 0
        for ids, order, prob, cos in _scored(db, job, top, skip, progress, batch, pixel_batch):
            when = now_iso()
            db.put_labels([(i, label_set, job.labels[j], float(prob[r, j]), job.source,
                            None if cos is None else float(cos[r, j]), rank, when)
                           for r, i in enumerate(ids.tolist()) for rank, j in enumerate(order[r].tolist(), 1)])
            labeled += len(ids)
        return _summary(db, label_set, job.labels, labeled, job.model_hash, t0, **extra)
    finally:
        if own:
            db.close()


def _same_definition(stored: str | None, definition: dict) -> bool:
    """True when a set's stored definition (JSON text) has every key of ``definition`` with the same value."""
    if not stored:
        return False
    try:
        old = json.loads(stored)
    except ValueError:
        return False
    return isinstance(old, dict) and all(old.get(k) == v for k, v in definition.items())


def label_index(db_path, labels: str | Sequence[str], label_set: str | None = None, model=None, top: int = 1,
                relabel: bool = False, progress: Callable[[int, int], None] | None = None,
                batch: int = 8192, templates: dict | None = None) -> dict:
    """Label every indexed photo with its best ``top`` labels of ``labels``; returns a summary
    {"label_set", "labels", "labeled", "images", "counts": {label: photos whose top label it is}, "seconds"}.
    The same set again (same labels, model, ``top``, templates) labels only the photos indexed since, unless
    ``relabel``."""
    t0 = time.perf_counter()
    labels = _checked_labels(labels)
    job = _Labeller.typed(_model(model), labels, templates)
    top = max(1, min(int(top), len(labels)))
    definition = {"labels": labels, "model_hash": job.model_hash, "top": top,
                  "templates": templates or "en_short/zh_short"}
    return _label_run(db_path, job, label_set, definition, top=top, incremental=not relabel, progress=progress,
                      batch=batch, t0=t0)


def label_index_with_prompt(db_path, prompt, label_set: str | None = None, model=None, lang: str = "en",
                            progress: Callable[[int, int], None] | None = None, batch: int = 32) -> dict:
    """Label every indexed photo with the best class of a learned prompt (a ``dcclip_core.prompts.Prompt``
    learned for ``model``). Prompts that only replace the text side (zero-shot, CoOp, MVLPT) use the stored
    vectors (fast); VPT / Tip-Adapter / linear-probe prompts encode every photo again, ``batch`` at a time
    (unreadable photos are skipped). Labels are stored in ``lang`` (en | zh); the set's machine labels are
    replaced, its corrections kept. Same summary as ``label_index`` (+ "prompt")."""
    t0 = time.perf_counter()
    job = _Labeller.learned(_model(model), prompt, lang)                  # raises PromptMismatchError
    definition = {"labels": job.labels, "model_hash": job.model_hash, "top": 1, "prompt": prompt.name,
                  "method": prompt.method}
    return _label_run(db_path, job, label_set, definition, progress=progress, pixel_batch=batch, t0=t0,
                      prompt=prompt.name)


def classify_index(db_path, labels: str | Sequence[str], model=None,
                   progress: Callable[[int, int], None] | None = None, batch: int = 8192,
                   templates: dict | None = None) -> dict:
    """``label_index`` without writing anything: every photo's best label, in memory (the read-only demo labels
    this way, for one visitor). Returns the same summary plus "rows": [{"path", "label", "score", "cosine",
    "rank", "source"}], one per photo."""
    t0 = time.perf_counter()
    labels = _checked_labels(labels)
    job = _Labeller.typed(_model(model), labels, templates)
    db, own = _open(db_path)
    try:
        _require_vectors(db, job.model_hash)
        out: list[dict] = []
        for ids, order, prob, cos in _scored(db, job, progress=progress, batch=batch):
            paths = db.rows_by_ids(ids.tolist())
            for r, i in enumerate(ids.tolist()):
                if i in paths:
                    j = int(order[r, 0])
                    out.append({"path": paths[i]["path"], "label": labels[j], "score": float(prob[r, j]),
                                "cosine": float(cos[r, j]), "rank": 1, "source": job.source})
    finally:
        if own:
            db.close()
    counts = {lb: 0 for lb in labels}
    for row in out:
        counts[row["label"]] += 1
    return {"label_set": None, "labels": labels, "labeled": len(out), "images": len(out), "counts": counts,
            "model_hash": job.model_hash, "rows": out, "seconds": round(time.perf_counter() - t0, 3)}


def _summary(db: PhotoDB, label_set: str, labels: Sequence[str], labeled: int, model_hash: str, t0: float,
             **extra) -> dict:
    """What a labelling run returns: {"label_set", "labels", "labeled", "images", "counts", "model_hash", "seconds"}
    (+ ``extra``, e.g. the prompt's name)."""
    counts, n_images = _tally(db, label_set, labels)
    return {"label_set": label_set, "labels": list(labels), "labeled": labeled, "images": n_images, "counts": counts,
            "model_hash": model_hash, **extra, "seconds": round(time.perf_counter() - t0, 3)}


def _tally(db: PhotoDB, label_set: str, labels: Sequence[str]) -> tuple[dict, int]:
    """({label: photos with it as best label}, photos labelled) of a set as shown (corrections counted); every
    label of ``labels`` appears (0 when unused), and so does any other best label a photo has in the set (a
    correction)."""
    counts = {lb: 0 for lb in labels}
    for lb, n in db.label_counts(label_set).items():
        counts[lb] = counts.get(lb, 0) + n
    return counts, db.labelled_image_count(label_set)


def label_sets(db_path) -> list[dict]:
    """[{"label_set", "labels", "images", "model_hash", "time"}] for every stored set."""
    db, own = _open(db_path)
    try:
        out = []
        for name, value in db.label_set_metas():
            try:
                d = json.loads(value)
            except ValueError:
                d = {}
            out.append({"label_set": name, "labels": d.get("labels", []), "images": db.labelled_image_count(name),
                        "model_hash": d.get("model_hash"), "time": d.get("time")})
        return out
    finally:
        if own:
            db.close()


def labels_of(db_path, label_set: str = DEFAULT_SET, label: str | None = None, top_only: bool = False,
              limit: int | None = None) -> list[dict]:
    """Labels of a set as shown: [{"path", "label", "score", "cosine", "rank", "source"}], by path then rank.
    A corrected photo has one row, its corrected label (rank 1, score 1.0, cosine None, source "manual");
    other photos their machine rows (source "zero-shot:<model hash>" or "prompt:<name>")."""
    db, own = _open(db_path)
    try:
        if db.label_set_meta(label_set) is None:
            names = ", ".join(s["label_set"] for s in label_sets(db)) or "none yet"
            raise LabelError(f"no label set {label_set!r} in {db.path} (sets: {names})")
        return db.label_rows(label_set, label=label, top_only=top_only, limit=limit)
    finally:
        if own:
            db.close()


def export_labels(db_path, label_set: str = DEFAULT_SET, fmt: str = "csv", out: str | os.PathLike | None = None,
                  top_only: bool = False) -> int:
    """Write a set's labels as shown by ``labels_of`` as CSV (path,label,score,cosine,rank,source; UTF-8 with
    BOM so spreadsheets read Chinese) or JSON (an array of objects with those keys) to ``out`` (atomically;
    None or "-": stdout). Returns the row count."""
    _check_format(fmt)
    return write_label_rows(labels_of(db_path, label_set, top_only=top_only), fmt, out)


def _check_format(fmt: str) -> str:
    if str(fmt).lower() not in ("csv", "json"):
        raise LabelError(f"unknown export format {fmt!r} (csv or json)")
    return str(fmt).lower()


def write_label_rows(rows: Sequence[dict], fmt: str = "csv", out: str | os.PathLike | None = None) -> int:
    """Write label rows (dicts with the keys of EXPORT_FIELDS; others ignored) as ``export_labels`` does: CSV
    or JSON, to ``out`` atomically (None or "-": stdout). Returns the row count."""
    fmt = _check_format(fmt)
    rows = [{k: r.get(k) for k in EXPORT_FIELDS} for r in rows]
    for r in rows:
        r["score"] = None if r["score"] is None else round(float(r["score"]), 6)
        r["cosine"] = None if r["cosine"] is None else round(float(r["cosine"]), 6)
    if fmt == "json":
        text = json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(EXPORT_FIELDS), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        text = buf.getvalue()
    if out is None or str(out) == "-":
        sys.stdout.write(text)
    else:
        from dcclip_core.atomic import atomic_write_text
        atomic_write_text(Path(out).expanduser(), text, encoding="utf-8-sig" if fmt == "csv" else "utf-8")
    return len(rows)


def remove_paths(db_path, paths: Sequence[str | os.PathLike]) -> dict:
    """Un-index files or whole folders (rows, vectors, labels, recorded errors). A later ``build`` of a
    folder containing them indexes them again. Returns {"removed", "errors_removed", "not_found": [...]}."""
    db, own = _open(db_path)
    removed = errs = 0
    missing: list[str] = []
    try:
        for p in paths:
            raw = os.path.abspath(os.path.expanduser(str(p)))
            cands = list(dict.fromkeys([raw, str(Path(raw).resolve())]))
            hit = False
            with db.transaction():
                for c in cands:
                    c = c.rstrip(os.sep) or os.sep
                    ids = db.image_ids_under(c)
                    n_err = db.delete_errors_under(c)
                    if ids:
                        db.delete_images(ids)
                    removed += len(ids)
                    errs += n_err
                    hit = hit or bool(ids) or n_err > 0
                if hit:
                    db.bump_generation()
            if not hit:
                missing.append(str(p))
    finally:
        if own:
            db.close()
    return {"removed": removed, "errors_removed": errs, "not_found": missing}


# ---------------------------------------------------------------------------------------------------------
# Manual corrections, copying into class folders
# ---------------------------------------------------------------------------------------------------------
def _path_forms(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Each path as given, absolute, and with symlinks resolved (the index stores absolute paths)."""
    out: dict[str, None] = {}
    for p in paths:
        raw = os.path.abspath(os.path.expanduser(str(p)))
        for c in (str(p), raw, str(Path(raw).resolve())):
            out[c] = None
    return list(out)


def set_label(db_path, label_set: str, paths: Sequence[str], label: str) -> int:
    """Correct photos' label by hand: ``label`` becomes their label in the set (shown as rank 1, score 1.0,
    source "manual", instead of their machine labels) until ``remove_correction``; no labelling run deletes
    or overrides it. Returns the number of photos corrected (paths not in the index are ignored)."""
    label = " ".join(str(label or "").split())
    if not label:
        raise LabelError("an empty label (type the correct label, e.g. 猫)")
    db, own = _open(db_path)
    try:
        with db.transaction():
            if db.label_set_meta(label_set) is None:
                db.set_label_set_meta(label_set, json.dumps(
                    {"labels": [label], "model_hash": None, "top": 1, "time": now_iso()}, ensure_ascii=False))
            return db.set_correction(label_set, _path_forms(paths), label)
    finally:
        if own:
            db.close()


def remove_correction(db_path, label_set: str, paths: Sequence[str]) -> int:
    """Undo ``set_label``: the photos show their machine label in the set again (none until a labelling run
    has labelled them). Returns the number of corrections removed (other paths are ignored)."""
    db, own = _open(db_path)
    try:
        return db.remove_correction(label_set, _path_forms(paths))
    finally:
        if own:
            db.close()


def corrections_of(db_path, label_set: str = DEFAULT_SET) -> dict[str, str]:
    """{path: corrected label} of the photos corrected by hand in a set ({} when none, or no such set)."""
    db, own = _open(db_path)
    try:
        return db.corrections(label_set)
    finally:
        if own:
            db.close()


_UNSAFE = re.compile(r'[\x00-\x1f<>:"/\\|?*]')


def folder_name(label: str) -> str:
    """A label as a folder name on any OS: path separators and reserved characters become "_", Chinese stays."""
    name = _UNSAFE.sub("_", str(label)).strip().strip(".")
    return name[:120] or "_"


def _claim(dst: Path) -> tuple[Path, int]:
    """Create ``dst`` exclusively, or "name (2).ext", "name (3).ext", ... (never overwrites); (path, fd)."""
    stem, suf = dst.stem, dst.suffix
    for i in range(1, 100_000):
        cand = dst if i == 1 else dst.with_name(f"{stem} ({i}){suf}")
        try:
            return cand, os.open(cand, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
    raise LabelError(f"too many files named like {dst}")


class _DestFolder:
    """A class folder's files, found by the name a photo was copied as: "x.jpg" finds "x.jpg", "x (2).jpg", ...
    (the names ``_claim`` gives), so a photo already copied there is recognised by its content."""

    def __init__(self, path: Path):
        path.mkdir(exist_ok=True)
        self.path = path
        self._names: dict[str, list[str]] = {}
        self._sha: dict[str, str] = {}
        with os.scandir(path) as it:
            for e in it:
                if e.is_file():
                    self.add(e.name)

    def add(self, name: str) -> None:
        self._names.setdefault(name, []).append(name)
        p = Path(name)
        m = _VARIANT.match(p.stem)
        if m and m.group(1) + p.suffix != name:
            self._names.setdefault(m.group(1) + p.suffix, []).append(name)

    def holds(self, name: str, size: int, sha256: Callable[[], str]) -> bool:
        """True when a file named ``name`` or one of its " (n)" variants has this size and content."""
        from dcclip_core.runtime import sha256_file
        for cand in self._names.get(name, ()):
            p = self.path / cand
            try:
                if p.stat().st_size != size:
                    continue
                if cand not in self._sha:
                    self._sha[cand] = sha256_file(p)
            except OSError:
                continue
            if self._sha[cand] == sha256():
                return True
        return False


_VARIANT = re.compile(r"^(.*) \((\d+)\)$")


def copy_to_folders(db_path, label_set: str, out_dir: str | os.PathLike,
                    progress: Callable[[int, int], None] | None = None,
                    relabel: dict[str, str] | None = None) -> dict:
    """Copy each labelled photo into ``out_dir/<its label as shown>/`` (one sub-folder per label, created as
    needed). Running it again copies nothing twice: a photo whose folder already holds a file with the same
    content under its name or a " (n)" variant of it is counted as ``already`` there. Existing files are never
    overwritten: a different file with the name gets " (2)", " (3)", ... Photos missing on disk are listed, not
    fatal. ``relabel`` ({path: label}) sends those photos to another label's folder (e.g. "not sure").
    Returns {"copied", "already", "folders": {label: photos in its folder, copied or already}, "missing": [...],
    "out": str}."""
    import shutil
    from dcclip_core.runtime import sha256_file
    out = Path(out_dir).expanduser().resolve()
    db, own = _open(db_path)
    try:
        rows = labels_of(db, label_set, top_only=True)
        known = db.hash_rows_by_paths([r["path"] for r in rows])
    finally:
        if own:
            db.close()
    out.mkdir(parents=True, exist_ok=True)
    dests: dict[str, _DestFolder] = {}
    folders: dict[str, int] = {}
    missing: list[str] = []
    copied = already = 0
    for n, r in enumerate(rows, 1):
        src = Path(r["path"])
        label = relabel.get(r["path"], r["label"]) if relabel else r["label"]
        name = folder_name(label)
        try:
            st = src.stat()
            row = known.get(str(src)) or {}
            fresh = row.get("sha256") and row.get("size") == st.st_size and row.get("mtime") == st.st_mtime
            sha = (lambda: row["sha256"]) if fresh else functools.cache(lambda: sha256_file(src))  # read if needed
            dest = dests.get(name) or dests.setdefault(name, _DestFolder(out / name))
            if dest.holds(src.name, st.st_size, sha):
                already += 1
            else:
                with open(src, "rb") as fin:
                    dst, fd = _claim(dest.path / src.name)
                    try:
                        with os.fdopen(fd, "wb") as fout:
                            shutil.copyfileobj(fin, fout, 1 << 20)
                    except BaseException:
                        os.unlink(dst)
                        raise
                shutil.copystat(src, dst)
                dest.add(dst.name)
                copied += 1
            folders[label] = folders.get(label, 0) + 1
        except FileNotFoundError:
            missing.append(str(src))
        if progress is not None:
            progress(n, len(rows))
    return {"copied": copied, "already": already, "folders": folders, "missing": missing, "out": str(out)}

