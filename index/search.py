"""Searcher: text / image / similar-photo queries over an index DB, always in step with the DB.

The FAISS index is loaded from ``<db>.faiss`` (or rebuilt from the DB when the file disagrees). Before every
query the DB's change counter (meta ``generation``) is read — one indexed SELECT — and, when it moved,
vectors written since are fetched and upserted; deletions are noticed by the row count and trigger a
rebuild. So a Searcher sees what a concurrently running ``build_index`` commits, batch by batch.
Thread-safe (one lock); ``model`` is loaded lazily (``stats()`` never needs it).
"""
from __future__ import annotations

import os
import contextlib
import threading
from pathlib import Path

import numpy as np

from dcclip_core.encoder import Encoder

from .db import PhotoDB
from .errors import NotIndexedError
from .indexer import default_model, model_identity
from dcclip_core.dictionary import warm as warm_dictionary
from dcclip_core.ocr import normalise

from . import duplicates as D
from . import facesearch, textsearch, vectors


RERANK = 200       # candidates (best by cosine) a query-aware colour term may re-order (text-space models)
NAME_ONLY = "a photo of a person"    # what ranks a person's photos when the query is their name alone

class Searcher:
    def __init__(self, db_path, model: Encoder | None = None, save_faiss: bool = True, text_fusion: str = "score"):
        self.db_path = Path(db_path).expanduser().absolute()
        self.db = PhotoDB(self.db_path, create=False)
        self._model = model
        self._lock = threading.RLock()
        self._vi: vectors.VectorIndex | None = None
        self._gen: int | None = None
        self._hash: str | None = None
        self.save_faiss = save_faiss
        self.loaded_from_file = False
        if text_fusion not in textsearch.FUSIONS:
            raise ValueError(f"text_fusion must be one of {textsearch.FUSIONS}, not {text_fusion!r}")
        self.text_fusion = text_fusion          # how what photos say joins a text query's ranking (textsearch)
        self._lines = textsearch.LineVectors()
        self._faces = facesearch.FaceIndex()
        self.face_signal = facesearch.SIGNAL_WEIGHT   # weight of the "person / people / portrait" signal (0: off)
        if text_fusion != "none":
            warm_dictionary()                   # CC-CEDICT parsed in the background: no first query waits for it

    # ---- model / index --------------------------------------------------------------------------------
    @property
    def model(self) -> Encoder:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = default_model()
        return self._model

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _ensure(self) -> vectors.VectorIndex:
        """Bring the in-memory index in step with the DB (cheap when nothing changed)."""
        with self._lock:
            _, mhash, dim, _ = model_identity(self.model)
            gen = self.db.generation()
            if self._vi is not None and self._hash == mhash and gen == self._gen:
                return self._vi
            if self._vi is None or self._hash != mhash or self._vi.dim != dim:
                self._vi, self._gen, self.loaded_from_file = vectors.load_for_db(self.db, mhash, dim,
                                                                                 save=self.save_faiss)
                self._hash = mhash
                return self._vi
            # incremental: vectors (re)written after the generation we reflect, ids deleted since
            if not vectors.apply_delta(self.db, self._vi, mhash, dim, self._gen):
                self._vi, gen, self.loaded_from_file = vectors.load_for_db(self.db, mhash, dim, save=self.save_faiss)
            self._gen = gen
            return self._vi

    def vector_index(self) -> vectors.VectorIndex:
        """The vector index brought in step with the DB (loaded or built on first use): its ``kind``, ``ntotal``,
        ``dead``, ``params``."""
        return self._ensure()

    @contextlib.contextmanager
    def current_index(self):
        """Hold the searcher's lock and yield (vector index in step with the DB, model hash)."""
        with self._lock:
            vi = self._ensure()
            yield vi, self._hash

    # ---- queries --------------------------------------------------------------------------------------
    def _allowed(self, folder=None, date_from=None, date_to=None, text=None) -> tuple[np.ndarray | None, dict]:
        """(ids the filters allow (None: no filter), {id: the line holding the ``text`` string}). ``text``: True /
        "" = photos with text in them, a string = photos whose text contains it (normalised: case, full-width,
        traditional / simplified)."""
        allowed, holding = None, {}
        if folder or date_from or date_to:
            if folder:
                folder = str(Path(folder).expanduser().resolve())
            allowed = self.db.ids_matching(self._hash, folder=folder, date_from=date_from, date_to=date_to)
        if text is not None and text is not False:
            if isinstance(text, str) and text.strip():
                for ln in self.db.lines_matching(normalise(text), limit=10**7):
                    holding.setdefault(int(ln["image_id"]), ln)
                ids = np.asarray(sorted(holding), np.int64)
            else:
                ids = self.db.ids_with_text()
            allowed = ids if allowed is None else np.intersect1d(allowed, ids)
        return allowed, holding

    def _results(self, vi: vectors.VectorIndex, q: np.ndarray, k: int, threshold, offset: int,
                 exclude: set[int] = frozenset(), allowed: np.ndarray | None = None,
                 query: str | None = None, holding: dict | None = None, named: tuple = ()) -> list[dict]:
        k, offset = max(0, int(k)), max(0, int(offset))
        if k == 0:
            return []
        want = k + offset + len(exclude)
        wide = max(want, RERANK) if self._reranks(query) else want
        scores, ids = vi.search(np.asarray(q, np.float32).reshape(1, -1), wide, ids=allowed)
        hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0 and int(i) not in exclude]
        hits, stored, terms, said = self._ranked(hits, q, query, allowed, exclude)
        if threshold is not None:
            hits = [h for h in hits if h[1] >= float(threshold)]
        hits = hits[offset:offset + k]
        rows = self.db.rows_by_ids([i for i, _ in hits])
        results = self._explained(_as_results(hits, rows), q, stored, terms, said)
        for r in results:                     # a "text contains" filter names the line holding the string
            ln = (holding or {}).get(r["id"])
            if ln is not None and not (r["why"] and "text" in r["why"][0]):
                r["why"] = [{"text": ln["text"], "box": _pixel_box(ln, r), "match": "filter"}] + r["why"][:2]
        if named:
            self._person_why(results, named)
        return results

    def _person_why(self, results: list[dict], named) -> None:
        """Each result of a query naming people gets them first in its ``why``: {"person": id, "name", "box"
        (pixels of the upright photo: the person's face)}, and reads as a strong match: the person named is in it
        (the rest of the query only orders their photos; a relevance gate must not hide them)."""
        faces = self.db.faces_of([r["id"] for r in results])
        for r in results:
            found = []
            for pid in named:
                f = next((f for f in faces.get(r["id"], []) if f["person_id"] == pid), None)
                if f is not None:
                    found.append({"person": int(pid), "name": f["name"], "box": _pixel_box(f, r)})
            r["why"] = found + r["why"][:max(0, 3 - len(found))]
            if found:
                r["level_score"] = max(float(r["level_score"]), 1.0)

    def _reranks(self, query: str | None) -> bool:
        """Whether a query's ``RERANK`` best candidates may be re-ordered (colour term, text in photos)."""
        bank = getattr(self.model, "concept_bank", None)
        return (bank is not None and bank.has_colour_boost) or (query is not None and self.text_fusion != "none")

    def _ranked(self, hits: list[tuple[int, float]], q: np.ndarray, query: str | None,
                allowed: np.ndarray | None = None, exclude=frozenset()):
        """The candidates [(id, cosine)] re-ranked by the colour term and, for a text query, by what the photos
        say (index.textsearch). Returns (hits, stored concepts, colour terms, (literal matches, meaning matches)
        by image id)."""
        bank = getattr(self.model, "concept_bank", None)
        lit: dict[int, tuple] = {}
        mean: dict[int, tuple] = {}
        if query is not None and self.text_fusion != "none":
            lit = {i: m for i, m in textsearch.literal(self.db, query, allowed).items() if i not in exclude}
            mean = {i: m for i, m in self._lines.refresh(self.db, self.model).meaning(q, self.model, allowed).items()
                    if i not in exclude}
            have = {i for i, _ in hits}
            extra = [i for i in set(lit) | set(mean) if i not in have]
            if extra:                                    # text matches beyond the visual candidates: their cosine
                found, V = self.db.vectors_by_ids(extra, len(q))
                hits = hits + [(int(i), float(v @ q)) for i, v in zip(found, V)]
        stored = self.db.concepts_of([i for i, _ in hits]) if bank is not None and hits else {}
        hits, terms = self._colour_rescored(hits, q, stored)
        if lit or mean:
            hits = textsearch.fuse(hits, lit, mean, self.text_fusion)
        if query is not None and self.face_signal:
            hits = self._faces.refresh(self.db).boosted(hits, facesearch.asks_for(query), self.face_signal)
        return hits, stored, terms, (lit, mean)

    def _colour_rescored(self, hits: list[tuple[int, float]], q: np.ndarray, stored: dict):
        """A text-space model with a colour boost adds each candidate's query-aware colour term to its cosine
        (``ConceptBank.colour_terms``; the candidates are the ``RERANK`` best by cosine) and re-sorts. Returns
        (hits, {id: (c,) colour terms})."""
        bank = getattr(self.model, "concept_bank", None)
        have = [i for i, _ in hits if i in stored and stored[i][2] is not None]
        if bank is None or not bank.has_colour_boost or not have:
            return hits, {}
        T = bank.colour_terms(q, np.stack([stored[i][2] for i in have]))[0]                 # (p, c)
        terms = {i: T[j] for j, i in enumerate(have)}
        hits = [(i, s + float(terms[i].sum()) if i in terms else s) for i, s in hits]
        return sorted(hits, key=lambda h: -h[1]), terms

    def _explained(self, results: list[dict], q: np.ndarray, stored: dict, terms: dict,
                   said: tuple[dict, dict] = ({}, {})) -> list[dict]:
        """Each result gains ``why``: the top 3 concepts by share of its score, [{"concept", "en", "zh",
        "share"}] (dcclip_core.concepts; the colours a query names count too, with their colour term; [] for a
        model without a concept bank or a photo embedded before; ``stored``: the photos' concepts_of, ``terms``:
        their colour terms from ``_colour_rescored``), and ``level_score``: the score relevance
        levels read — for a text-space model the decorrelated cosine (``ConceptBank.decorrelate``: comparable
        across queries), else the score itself. A photo whose text matched (``said``: the literal and meaning
        matches from ``_ranked``) gets the line first in ``why`` ({"text", "box" in pixels of the upright photo,
        "match": "exact" / "words" / "translation" / "some words" / "part" / "meaning"}), ``text_match`` (that
        kind), and a level no lower than the match's."""
        bank = getattr(self.model, "concept_bank", None)
        qd = bank.decorrelate(q) if bank is not None else None
        for r in results:
            c = stored.get(r["id"])
            if c is None:
                r["why"], r["level_score"] = [], r["score"]
            else:
                why = bank.explain(c[0], c[1], q, top=3)
                colours = bank.colour_why(terms[r["id"]])[:1] if r["id"] in terms else []
                if colours and (len(why) < 3 or colours[0]["share"] > why[-1]["share"]):
                    why = why[:2] + colours                     # a named colour shows when it weighs as much
                r["why"] = why
                r["level_score"] = float(bank.decorrelate(c[1] @ bank.text[c[0]]) @ qd)
        self._text_why(results, *said)
        return results

    def _text_why(self, results: list[dict], lit: dict, mean: dict) -> None:
        """The matched line of each result whose text matched, first in its ``why`` (see ``_explained``): the
        literal match's line, else the line closest in meaning."""
        by_meaning = {r["id"]: mean[r["id"]] for r in results if r["id"] in mean and r["id"] not in lit}
        lines = self.db.lines_by_ids([line_id for _, line_id in by_meaning.values()])
        for r in results:
            if r["id"] in lit:
                _, line, kind = lit[r["id"]]
                level = 1.0 if kind in textsearch.STRONG else r["level_score"]    # a literal word reads as strong
            elif r["id"] in by_meaning and by_meaning[r["id"]][1] in lines:
                level, line_id = by_meaning[r["id"]]
                line, kind = lines[line_id], "meaning"
            else:
                continue
            r["why"] = [{"text": line["text"], "box": _pixel_box(line, r), "match": kind}] + r["why"][:2]
            r["text_match"] = kind
            r["level_score"] = max(float(r["level_score"]), float(level))

    def search(self, query: str, k: int = 20, threshold: float | None = None, offset: int = 0, *,
               folder=None, date_from=None, date_to=None, text=None) -> list[dict]:
        """Text query (Chinese, English or mixed) -> best-first result dicts with ``score`` (the cosine, plus
        what the photo's text adds when it matches: index.textsearch).

        Optional filters: ``folder`` (photos below it), ``date_from`` / ``date_to`` (ISO text or date objects,
        inclusive; EXIF date, else file mtime), ``text`` (True: photos with text in them; a string: photos
        whose text contains it).

        A query naming people (index.facesearch: names given in the People tab or ``python -m index people
        --rename``) ranks only the photos they are all in, by the rest of the query ("妈妈 在海边"), and each
        result names them first in its ``why``: {"person", "name", "box"}."""
        with self._lock:
            named, rest = facesearch.names_in(str(query), self._faces.refresh(self.db))
        if named:
            query = rest or NAME_ONLY
        q = np.asarray(self.model.encode_text([str(query)]), np.float32)[0]
        with self._lock:
            vi = self._ensure()
            allowed, holding = self._allowed(folder, date_from, date_to, text)
            for pid in named:
                theirs = self._faces.photos_of(self.db, pid)
                allowed = theirs if allowed is None else np.intersect1d(allowed, theirs)
            return self._results(vi, q, k, threshold, offset, allowed=allowed, query=str(query), holding=holding,
                                 named=tuple(named))

    def search_many(self, queries: list[str], k: int = 20, threshold: float | None = None) -> list[list[dict]]:
        """Several text queries at once: one vector-index pass and one row lookup for all of them. Returns one
        list per query, the same result dicts as ``search(query, k, threshold)``: ``encode_text`` gives each text
        the vector ``search`` gives it, whatever else is in the list (and spreads the list over its workers)."""
        queries = [str(q) for q in queries]
        k = max(0, int(k))
        if not queries:
            return []
        with self._lock:
            fx = self._faces.refresh(self.db)
            named = [bool(facesearch.names_in(q, fx)[0]) for q in queries]
        if any(named):                             # a person's name filters: those queries go one by one
            rest = [q for q, n in zip(queries, named) if not n]
            batched = iter(self.search_many(rest, k, threshold) if rest else [])
            return [self.search(q, k, threshold) if n else next(batched) for q, n in zip(queries, named)]
        Q = np.asarray(self.model.encode_text(queries), np.float32)                  # (n, d)
        if k == 0:
            return [[] for _ in queries]
        with self._lock:
            wide = max(k, RERANK) if self._reranks("") else k
            scores, ids = self._ensure().search(Q, wide)                             # (n, k') each
            out = []
            for b, query in enumerate(queries):
                h = [(int(i), float(sc)) for i, sc in zip(ids[b], scores[b]) if i >= 0]
                h, stored, terms, said = self._ranked(h, Q[b], query)
                if threshold is not None:
                    h = [x for x in h if x[1] >= float(threshold)]
                out.append((h[:k], stored, terms, said))
        rows = self.db.rows_by_ids(sorted({i for h, *_ in out for i, _ in h}))
        return [self._explained(_as_results(h, rows), Q[b], stored, terms, said)
                for b, (h, stored, terms, said) in enumerate(out)]

    def search_image(self, image, k: int = 20, threshold: float | None = None, offset: int = 0, *,
                     folder=None, date_from=None, date_to=None, text=None) -> list[dict]:
        """Image query (path, bytes or PIL.Image) -> best-first result dicts (raises ImageLoadError); the filters
        as ``search``'s."""
        if isinstance(image, Path):
            image = str(image)
        q = np.asarray(self.model.encode_image([image]), np.float32)[0]
        with self._lock:
            vi = self._ensure()
            allowed, holding = self._allowed(folder, date_from, date_to, text)
            return self._results(vi, q, k, threshold, offset, allowed=allowed, holding=holding)

    def _id_of(self, path) -> int:
        p = str(path)
        row = self.db.image_by_path(p)
        if row is None and os.path.exists(p):
            row = self.db.image_by_path(str(Path(p).resolve()))
        if row is None:
            raise NotIndexedError(f"not in the index: {path}")
        return int(row["id"])

    def _vector(self, vi: vectors.VectorIndex, image_id: int, path) -> np.ndarray:
        """The stored vector of an indexed photo (call holding the lock)."""
        q = self.db.vector_of(image_id) if vi.kind != "flat" or not vi.ntotal else vi.reconstruct(image_id)
        if q is None or len(q) != vi.dim:
            q = self.db.vector_of(image_id)
        if q is None:
            raise NotIndexedError(f"no vector for {path} (not embedded with this model yet)")
        return q

    def similar(self, path, k: int = 20, threshold: float | None = None, offset: int = 0) -> list[dict]:
        """Nearest neighbours of an indexed photo (itself excluded)."""
        image_id = self._id_of(path)
        with self._lock:
            vi = self._ensure()
            return self._results(vi, self._vector(vi, image_id, path), k, threshold, offset, exclude={image_id})

    def cosines(self, threshold: float | None, floor: float | None) -> tuple[float, float]:
        """(similar threshold, near floor): the given ones, else the model's own (cosines mean different things
        in different spaces: ``index.duplicates.model_cosines``)."""
        own_similar, own_floor = D.model_cosines(self.model.info)
        return (own_similar if threshold is None else threshold), (own_floor if floor is None else floor)

    def duplicates(self, threshold: float | None = None, batch: int = 4096, max_hamming: int | None = D.HAMMING,
                   floor: float | None = None, similar: bool = False) -> list[dict]:
        """Every duplicate pair, best first: [{"a", "b", "score", "hamming", "match"}] — identical files, and
        photos whose perceptual hashes differ in <= ``max_hamming`` bits at cosine >= ``floor``; with
        ``similar`` also pairs at cosine >= ``threshold`` by the embedding alone (see index.duplicates).
        None = the model's own cosines."""
        threshold, floor = self.cosines(threshold, floor)
        return D.find_duplicates(self, threshold=threshold, max_hamming=max_hamming, floor=floor, similar=similar)

    def duplicates_of(self, path, threshold: float | None = None, max_hamming: int | None = D.HAMMING,
                      floor: float | None = None, similar: bool = False) -> list[dict]:
        """The duplicates of one indexed photo, under the definition of ``duplicates`` (they agree):
        [{"path", "score", "match", "hamming"}], best first (raises NotIndexedError)."""
        threshold, floor = self.cosines(threshold, floor)
        image_id = self._id_of(path)
        with self._lock:
            vi = self._ensure()
            return D.duplicates_of(self.db, vi, self._hash, image_id, self._vector(vi, image_id, path),
                                   threshold=threshold, max_hamming=max_hamming, floor=floor, similar=similar)

    def duplicate_groups(self, threshold: float | None = None, max_hamming: int | None = D.HAMMING,
                         floor: float | None = None, similar: bool = False) -> list[dict]:
        """Groups of duplicates (connected components): [{"group", "size", "score", "paths", "keep"}]."""
        return D.group_duplicates(self.duplicates(threshold, max_hamming=max_hamming, floor=floor, similar=similar),
                                  self.db)

    # ---- info -----------------------------------------------------------------------------------------
    def stats(self, error_limit: int | None = 1000) -> dict:
        """Counts, model, vector index, label sets, and the bad files with their reasons (newest first)."""
        from .labels import label_sets
        m = self.db.model_meta()
        count = self.db.vector_stats(m["model_hash"])[0] if m["model_hash"] else 0
        head = vectors.VectorIndex.read_header(vectors.faiss_path(self.db_path)) or {}
        by_reason: dict[str, int] = {}
        for reason, n in self.db.error_reason_counts():
            kind = _reason_kind(reason)
            by_reason[kind] = by_reason.get(kind, 0) + n
        return {"images": self.db.count_images(), "errors": self.db.count_errors(),
                "error_list": self.db.list_errors(limit=error_limit),
                "errors_by_reason": dict(sorted(by_reason.items(), key=lambda kv: -kv[1])),
                "model_id": m["model_id"], "model_hash": m["model_hash"], "db": str(self.db_path),
                "dim": m["dim"], "vectors": count, "generation": self.db.generation(),
                "index": {"kind": head.get("kind") or vectors.choose_kind(count, vectors.configured_kind(self.db)),
                          "configured": vectors.configured_kind(self.db), "file": bool(head),
                          "file_kind": head.get("kind"), "file_generation": head.get("generation"),
                          "params": {k: v for k, v in (head.get("params") or {}).items() if k != "tuned"}},
                "label_sets": label_sets(self.db), "text": self.text_stats(error_limit),
                "faces": self.face_stats(error_limit)}

    def text_of(self, path) -> dict:
        """What the text pass read in an indexed photo: {"state": "none" / "text" / "capped" / "error" / None (not
        read yet), "note", "lines": [{"text", "box" (pixels of the upright photo), "conf", "script"}]} (raises
        NotIndexedError)."""
        image_id = self._id_of(path)
        row = self.db.rows_by_ids([image_id]).get(image_id) or {}
        rec = self.db.text_read_of(image_id)
        lines = [{"text": ln["text"], "conf": ln["conf"], "script": ln["script"], "box": _pixel_box(ln, row)}
                 for ln in self.db.lines_of([image_id]).get(image_id, [])]
        return {"state": rec["state"] if rec else None, "note": rec["note"] if rec else None, "lines": lines}

    def text_stats(self, error_limit: int | None = 1000) -> dict:
        """The text pass's state: {"photos": {state: n}, "with_text", "lines", "pending", "errors": [{"path",
        "state", "reason", "time"}]} (pending = photos not read yet by this reader version)."""
        from dcclip_core.ocr import reader_version
        counts = self.db.text_read_counts()
        return {"photos": counts, "with_text": counts.get("text", 0) + counts.get("capped", 0),
                "lines": self.db.count_text_lines(),
                "pending": self.db.text_pending(reader_version()), "errors": self.db.text_errors(error_limit)}


    def faces_of(self, path) -> dict:
        """The faces the face pass found in an indexed photo: {"state": "none" / "faces" / "capped" / "error" /
        None (not looked at yet), "note", "faces": [{"id", "box" (pixels of the upright photo), "person", "name"}]}
        left to right (raises NotIndexedError)."""
        image_id = self._id_of(path)
        row = self.db.rows_by_ids([image_id]).get(image_id) or {}
        rec = self.db.face_read_of(image_id)
        faces = [{"id": f["id"], "box": _pixel_box(f, row), "person": f["person_id"], "name": f["name"]}
                 for f in self.db.faces_of([image_id]).get(image_id, [])]
        return {"state": rec["state"] if rec else None, "note": rec["note"] if rec else None, "faces": faces}

    def face_stats(self, error_limit: int | None = 1000) -> dict:
        """The face pass's state: {"enabled", "photos": {state: n}, "with_faces", "faces", "people", "named",
        "pending", "errors": [{"path", "state", "reason", "time"}]}."""
        from dcclip_core.faces import finder_version
        counts = self.db.face_read_counts()
        rows = self.db.people_rows()
        enabled = self.db.faces_enabled()
        return {"enabled": enabled, "photos": counts,
                "with_faces": counts.get("faces", 0) + counts.get("capped", 0), "faces": self.db.count_faces(),
                "people": len(rows), "named": sum(1 for r in rows if r["name"]),
                "pending": self.db.face_pending(finder_version()) if enabled else 0,
                "errors": self.db.face_errors(error_limit)}


def _pixel_box(line: dict, result: dict) -> list:
    """A stored line's box (fractions x0, y0, x1, y1) in pixels of the result's upright photo (fractions when
    its size is unknown)."""
    box = [line["x0"], line["y0"], line["x1"], line["y1"]]
    w, h = result.get("width") or 0, result.get("height") or 0
    return [round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)] if w and h else box


def _as_results(hits: list[tuple[int, float]], rows: dict[int, dict]) -> list[dict]:
    """(id, score) hits + id -> image row: result dicts in hit order (ids deleted since are left out)."""
    out = []
    for i, s in hits:
        r = rows.get(i)
        if r is None:                                        # deleted since the index was loaded
            continue
        out.append({"path": r["path"], "score": s, "width": r["width"], "height": r["height"],
                    "size": r["size"], "mtime": r["mtime"], "taken_at": r["taken_at"], "id": i})
    return out


def _reason_kind(reason: str | None) -> str:
    """"truncated or corrupt image data (image file is truncated ...)" -> "truncated or corrupt image data"."""
    r = (reason or "unknown").strip()
    for sep in (" (", ": "):
        if sep in r:
            r = r.split(sep, 1)[0]
    return r
