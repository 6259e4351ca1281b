"""PhotoDB: the one place that holds SQL. SQLite (WAL) through sqlite-utils.

Tables
  images(id, path UNIQUE, size, mtime, sha256, phash, width, height, taken_at, format, model_hash, indexed_at)
  vectors(image_id PK -> images.id, vec BLOB float32 little-endian, gen)   gen = meta generation when written
  errors(id, path UNIQUE, reason, time, size, mtime, ctime)
  labels(image_id, label_set, label, score, source, cosine, rank, time)      machine labels (labels.py): source
                         "zero-shot:<model hash>" or "prompt:<name>"; a labelling run may replace them all
  corrections(image_id, label_set, label, time)   a person's label for a photo in a set (PK image_id, label_set):
                         a fact no labelling run deletes; reads of a set show it instead of the machine rows
  text_lines(id, image_id -> images.id, line, text, norm, x0, y0, x1, y1, conf, script, vec, model_hash)
                         the text read in a photo (index/textpass.py): one row a line, box as fractions of the
                         upright photo, ``norm`` the matched form (dcclip_core.ocr.normalise), ``vec`` the
                         model's text-tower vector of the line (float16) and the model that made it
  text_lines_fts         FTS5 over text_lines.norm, trigram tokenizer (Chinese substrings of 3+ characters;
                         shorter queries scan ``norm``), kept in step by triggers (sqlite-utils ``enable_fts``)
  text_reads(image_id PK -> images.id, sha256, reader, state, lines, seconds, note, time)
                         one row per photo the text pass has read: state "none" / "text" / "capped" / "error"
                         (note says why); a photo whose sha256 or reader changed is read again
  faces(id, image_id -> images.id, x0, y0, x1, y1, score, side, sharpness, quality, vec, person_id, by_hand)
                         the faces the face pass found (index/facepass.py): box as fractions of the upright
                         photo, ``vec`` the 128-d descriptor (float32), ``person_id`` the person it is grouped
                         into (index/people.py), ``by_hand`` 1 when a person put it there (kept by re-clustering)
  people(id, name, name_key, time)   a person: a name (any language; NULL until given) and its matched form
  face_not(face_id, person_id)       a face a person took out of a person: it never joins that person again
  face_reads(image_id PK -> images.id, sha256, finder, state, faces, seconds, note, time)
                         one row per photo the face pass has looked at: "none" / "faces" / "capped" / "error"
  meta(key PK, value)    schema_version, model_id, model_hash, dim, generation, faiss_*, index_kind (see
                         vectors.py), label_set:NAME (JSON definition of a label set, see labels.py)

``generation`` is bumped by every committed write batch; readers (Searcher) compare it per query to notice
changes cheaply, and vectors written since a known generation can be fetched incrementally.

What goes through sqlite-utils, and why the rest is SQL
  sqlite-utils: upserts by primary key (``_upsert``: labels, corrections, meta; no column list or ON CONFLICT
  clause to keep in step with the schema) and bulk inserts (``load_rows``). Its writes join the open
  transaction (savepoints), so ``with db.transaction():`` stays atomic.
  SQL: the schema itself, as versioned DDL (``_SCHEMA_V1`` + ``_MIGRATIONS``) that a fresh database and an old
  one both run, so they end byte-identical in ``sqlite_master`` (ON DELETE CASCADE, composite keys and the v3
  data move included); the upserts whose conflict target is a UNIQUE column rather than the key (images and
  errors by path, and ``upsert_image`` returns the id); ``put_vector``, the indexer's per-photo hot path, where
  sqlite-utils' per-call table introspection would cost ~20x the statement; path-prefix range queries,
  the joins that show a label set with its corrections, deletes, and the vector iteration (a cursor streamed
  in batches into numpy).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import itertools
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import sqlite_utils

from dcclip_core.faces import box_iou

from .errors import DatabaseNotFoundError, SchemaError

SCHEMA_VERSION = 6

_SCHEMA_V1 = [
    """CREATE TABLE IF NOT EXISTS images (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        size INTEGER,
        mtime REAL,
        sha256 TEXT,
        phash TEXT,
        width INTEGER,
        height INTEGER,
        taken_at TEXT,
        format TEXT,
        model_hash TEXT,
        indexed_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS idx_images_sha256 ON images(sha256)",
    "CREATE INDEX IF NOT EXISTS idx_images_taken_at ON images(taken_at)",
    """CREATE TABLE IF NOT EXISTS vectors (
        image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
        vec BLOB NOT NULL,
        gen INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS idx_vectors_gen ON vectors(gen)",
    """CREATE TABLE IF NOT EXISTS errors (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        reason TEXT,
        time TEXT,
        size INTEGER,
        mtime REAL,
        ctime REAL)""",
    """CREATE TABLE IF NOT EXISTS labels (
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        label_set TEXT NOT NULL,
        label TEXT NOT NULL,
        score REAL,
        source TEXT,
        PRIMARY KEY (image_id, label_set, label))""",
    "CREATE INDEX IF NOT EXISTS idx_labels_set_label ON labels(label_set, label)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
]

# version -> statements upgrading from (version - 1); v1 is the base schema
_MIGRATIONS: dict[int, list[str]] = {
    2: ["ALTER TABLE labels ADD COLUMN cosine REAL",             # zero-shot: cosine beside the probability
        "ALTER TABLE labels ADD COLUMN rank INTEGER",
        "ALTER TABLE labels ADD COLUMN time TEXT",
        "CREATE INDEX IF NOT EXISTS idx_images_phash ON images(phash)"],
    3: ["""CREATE TABLE IF NOT EXISTS corrections (
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            label_set TEXT NOT NULL,
            label TEXT NOT NULL,
            time TEXT,
            PRIMARY KEY (image_id, label_set))""",
        "CREATE INDEX IF NOT EXISTS idx_corrections_set_label ON corrections(label_set, label)",
        # manual rows of v2 (source 'manual' in labels) become corrections; the best-ranked one per photo wins
        "INSERT OR IGNORE INTO corrections(image_id, label_set, label, time) "
        "SELECT image_id, label_set, label, time FROM labels WHERE source='manual' ORDER BY rank, label",
        "DELETE FROM labels WHERE source='manual'"],
    # text-space models: a photo's non-zero concept weights beside its vector (what "why" explains results
    # with; dcclip_core.concepts). NULL for models without a concept bank and for vectors from before v4.
    4: ["ALTER TABLE vectors ADD COLUMN concepts BLOB"],
    # text in photos: the lines a photo's text pass read, their full-text index, and the pass's record
    5: ["""CREATE TABLE IF NOT EXISTS text_lines (
            id INTEGER PRIMARY KEY,
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            line INTEGER NOT NULL,
            text TEXT NOT NULL,
            norm TEXT NOT NULL,
            x0 REAL, y0 REAL, x1 REAL, y1 REAL,
            conf REAL,
            script TEXT,
            vec BLOB,
            model_hash TEXT)""",
        "CREATE INDEX IF NOT EXISTS idx_text_lines_image ON text_lines(image_id)",
        """CREATE TABLE IF NOT EXISTS text_reads (
            image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
            sha256 TEXT,
            reader TEXT,
            state TEXT NOT NULL,
            lines INTEGER,
            seconds REAL,
            note TEXT,
            time TEXT)""",
        "CREATE INDEX IF NOT EXISTS idx_text_reads_state ON text_reads(state)",
        lambda db: db["text_lines"].enable_fts(["norm"], fts_version="FTS5", create_triggers=True,
                                               tokenize="trigram")],
    # people: the faces the face pass found, the people they are grouped into, and what a person did by hand
    6: ["""CREATE TABLE IF NOT EXISTS people (
            id INTEGER PRIMARY KEY,
            name TEXT,
            name_key TEXT,
            time TEXT)""",
        """CREATE TABLE IF NOT EXISTS faces (
            id INTEGER PRIMARY KEY,
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            x0 REAL, y0 REAL, x1 REAL, y1 REAL,
            score REAL,
            side INTEGER,
            sharpness REAL,
            quality REAL,
            vec BLOB NOT NULL,
            person_id INTEGER REFERENCES people(id) ON DELETE SET NULL,
            by_hand INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX IF NOT EXISTS idx_faces_image ON faces(image_id)",
        "CREATE INDEX IF NOT EXISTS idx_faces_person ON faces(person_id)",
        """CREATE TABLE IF NOT EXISTS face_not (
            face_id INTEGER NOT NULL REFERENCES faces(id) ON DELETE CASCADE,
            person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
            PRIMARY KEY (face_id, person_id))""",
        """CREATE TABLE IF NOT EXISTS face_reads (
            image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
            sha256 TEXT,
            finder TEXT,
            state TEXT NOT NULL,
            faces INTEGER,
            seconds REAL,
            note TEXT,
            time TEXT)""",
        "CREATE INDEX IF NOT EXISTS idx_face_reads_state ON face_reads(state)"],
}

LABEL_COLUMNS = ("image_id", "label_set", "label", "score", "source", "cosine", "rank", "time")
CORRECTION_COLUMNS = ("image_id", "label_set", "label", "time")
IMAGE_FIELDS = ("path", "size", "mtime", "sha256", "phash", "width", "height", "taken_at", "format",
                "model_hash", "indexed_at")
RESULT_FIELDS = ("id", "path", "width", "height", "size", "mtime", "taken_at")
MANUAL = "manual"                           # the source a corrected label is shown with (labels.py)
_HASH_COLS = "id, path, size, mtime, sha256, phash"
LABEL_SET_KEY = "label_set:"                # meta key prefix of a label set's definition


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def vec_to_blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def blob_to_vec(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<f4")


def concepts_to_blob(ids: np.ndarray, weights: np.ndarray, colours: np.ndarray | None = None) -> bytes:
    """m (uint32), m concept ids (uint32), their m weights (float32), then the photo's colour shares (float32,
    text-space models with a colour boost; none otherwise), little-endian."""
    ids = np.ascontiguousarray(ids, dtype="<u4")
    w = np.ascontiguousarray(weights, dtype="<f4")
    if ids.shape != w.shape or ids.ndim != 1:
        raise ValueError(f"concept ids {ids.shape} and weights {w.shape} must be two (m,) arrays")
    tail = b"" if colours is None else np.ascontiguousarray(colours, dtype="<f4").tobytes()
    return np.uint32(len(ids)).astype("<u4").tobytes() + ids.tobytes() + w.tobytes() + tail


def blob_to_concepts(b: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """-> (concept ids int64 (m,), weights float32 (m,), colour shares float32 (c,) or None)."""
    m = int(np.frombuffer(b[:4], dtype="<u4")[0])
    ids = np.frombuffer(b[4:4 + 4 * m], dtype="<u4").astype(np.int64)
    w = np.frombuffer(b[4 + 4 * m:4 + 8 * m], dtype="<f4").astype(np.float32)
    rest = b[4 + 8 * m:]
    return ids, w, (np.frombuffer(rest, dtype="<f4").astype(np.float32) if rest else None)


def _iso(value) -> str:
    """date / datetime / ISO string -> ISO text comparable with images.taken_at."""
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()[:19]
    return str(value).strip().replace(" ", "T")[:19]


def _prefix_range(root: str) -> tuple[str, str]:
    """[lo, hi) bounds of the paths strictly below ``root`` (uses the UNIQUE index on path)."""
    prefix = root if root.endswith(os.sep) else root + os.sep
    return prefix, prefix[:-1] + chr(ord(os.sep) + 1)


class PhotoDB:
    """The index database. ``PhotoDB(path)`` creates/migrates it; ``create=False`` requires it to exist.

    The connection may be shared between threads (calls are serialised by a lock); writes go through
    ``with db.transaction():`` so a batch is committed atomically.
    """

    def __init__(self, path: str | os.PathLike, create: bool = True, timeout: float = 30.0):
        self.path = Path(path).expanduser().absolute()
        if not create and not self.path.is_file():
            raise DatabaseNotFoundError(f"index database not found: {self.path}")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._depth = 0
        self.conn = sqlite3.connect(str(self.path), timeout=timeout, check_same_thread=False,
                                    isolation_level=None)
        self.db = sqlite_utils.Database(self.conn)
        # sqlite-utils otherwise finds out by creating and dropping a scratch table on the first upsert: a schema
        # change that made a text pass running on another connection fail ("no such table: text_lines")
        self.db._supports_on_conflict = sqlite3.sqlite_version_info >= (3, 24, 0)
        try:
            self.conn.execute("PRAGMA busy_timeout = %d" % int(timeout * 1000))
            mode = self.conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() != "wal":
                try:
                    self.conn.execute("PRAGMA journal_mode = WAL")
                except sqlite3.OperationalError:      # read-only media, another writer holding it: keep going
                    pass
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as e:
            self.conn.close()
            raise SchemaError(f"{self.path} is not a usable index database: {e}") from None

    # ---- plumbing -------------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def execute(self, sql: str, params: Sequence | dict = ()):
        with self._lock:
            return self.conn.execute(sql, params)

    def query(self, sql: str, params: Sequence | dict = ()) -> list[sqlite3.Row]:
        with self._lock:
            cur = self.conn.execute(sql, params)
            cols = [c[0] for c in cur.description or ()]
            return [dict(zip(cols, r)) for r in cur.fetchall()]

    def _all(self, sql: str, params: Sequence | dict = ()) -> list[tuple]:
        """Every row of a query as tuples, fetched under the lock."""
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def transaction(self):
        """One atomic write (BEGIN IMMEDIATE ... COMMIT); nested uses join the outer transaction."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self
            except BaseException:
                self._depth = 0
                self.conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self.conn.execute("COMMIT")

    def _upsert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence],
                pk: str | tuple[str, ...]) -> None:
        """Insert ``rows`` (tuples in ``columns`` order) into ``table``, updating the other columns of a row whose
        primary key ``pk`` exists, in one transaction (sqlite-utils' ``upsert_all``: INSERT ... ON CONFLICT(pk)
        DO UPDATE). A row without a key value raises sqlite3.IntegrityError, as any other bad row does."""
        with self.transaction():
            try:
                self.db[table].upsert_all(itertools.chain([tuple(columns)], rows), pk=pk)
            except sqlite_utils.db.PrimaryKeyRequired as e:
                raise sqlite3.IntegrityError(f"NOT NULL constraint failed: {table} key {pk} ({e})") from None

    def _migrate(self) -> None:
        try:                                    # up to date: no write needed (read-only media, busy writer)
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            has_gen = self.conn.execute("SELECT 1 FROM meta WHERE key='generation'").fetchone()
            if row and has_gen and int(row[0]) == SCHEMA_VERSION:
                return
        except sqlite3.OperationalError:        # no meta table yet
            pass
        with self.transaction():
            has_meta = self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
            version = None
            if has_meta:
                row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                version = int(row[0]) if row else None
            if version is None:
                for stmt in _SCHEMA_V1:
                    self.conn.execute(stmt)
                version = 1
            if version > SCHEMA_VERSION:
                raise SchemaError(f"{self.path} has schema version {version}; this program understands up to "
                                  f"{SCHEMA_VERSION} (upgrade it)")
            while version < SCHEMA_VERSION:
                for stmt in _MIGRATIONS[version + 1]:
                    stmt(self.db) if callable(stmt) else self.conn.execute(stmt)
                version += 1
            self._set_meta("schema_version", str(version))
            if self.conn.execute("SELECT 1 FROM meta WHERE key='generation'").fetchone() is None:
                self._set_meta("generation", "0")

    # ---- meta -----------------------------------------------------------------------------------------
    def _set_meta(self, key: str, value) -> None:
        self._upsert("meta", ("key", "value"), [(key, None if value is None else str(value))], pk="key")

    def get_meta(self, key: str, default=None):
        row = self.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None or row[0] is None else row[0]

    def set_meta(self, key: str, value) -> None:
        with self.transaction():
            self._set_meta(key, value)

    def meta(self) -> dict:
        return {r[0]: r[1] for r in self.execute("SELECT key, value FROM meta").fetchall()}

    def generation(self) -> int:
        return int(self.get_meta("generation", 0))

    def bump_generation(self) -> int:
        """Increment the change counter (call inside the write transaction); returns the new value."""
        with self.transaction():
            g = self.generation() + 1
            self._set_meta("generation", g)
            return g

    def model_meta(self) -> dict:
        m = self.meta()
        return {"model_id": m.get("model_id") or "", "model_hash": m.get("model_hash") or "",
                "dim": int(m["dim"]) if m.get("dim") else 0}

    def set_model_meta(self, model_id: str, model_hash: str, dim: int) -> None:
        with self.transaction():
            self._set_meta("model_id", model_id)
            self._set_meta("model_hash", model_hash)
            self._set_meta("dim", int(dim))

    # ---- images ---------------------------------------------------------------------------------------
    def image_by_path(self, path: str) -> dict | None:
        rows = self.query("SELECT * FROM images WHERE path=?", (str(path),))
        return rows[0] if rows else None

    def image_by_id(self, image_id: int) -> dict | None:
        rows = self.query("SELECT * FROM images WHERE id=?", (int(image_id),))
        return rows[0] if rows else None

    def images_under(self, root: str) -> dict[str, dict]:
        """path -> {id, size, mtime, sha256, model_hash, has_vec} for every image strictly below ``root``."""
        lo, hi = _prefix_range(root)
        rows = self.query(
            "SELECT i.id, i.path, i.size, i.mtime, i.sha256, i.model_hash, "
            "(v.image_id IS NOT NULL) AS has_vec FROM images i LEFT JOIN vectors v ON v.image_id = i.id "
            "WHERE i.path >= ? AND i.path < ?", (lo, hi))
        return {r["path"]: r for r in rows}

    def images_by_sha(self, sha256: str) -> list[dict]:
        return self.query("SELECT i.*, (v.image_id IS NOT NULL) AS has_vec FROM images i "
                          "LEFT JOIN vectors v ON v.image_id = i.id WHERE i.sha256=?", (sha256,))

    def upsert_image(self, fields: dict) -> int:
        """Insert or update (by path) an image row; returns its id (stable across updates)."""
        f = {k: fields.get(k) for k in IMAGE_FIELDS}
        f["indexed_at"] = f["indexed_at"] or now_iso()
        cols = ", ".join(IMAGE_FIELDS)
        marks = ", ".join("?" for _ in IMAGE_FIELDS)
        upd = ", ".join(f"{k}=excluded.{k}" for k in IMAGE_FIELDS if k != "path")
        with self.transaction():
            self.conn.execute(f"INSERT INTO images ({cols}) VALUES ({marks}) "
                              f"ON CONFLICT(path) DO UPDATE SET {upd}", [f[k] for k in IMAGE_FIELDS])
            return int(self.conn.execute("SELECT id FROM images WHERE path=?", (f["path"],)).fetchone()[0])

    def update_image(self, image_id: int, **fields) -> None:
        bad = set(fields) - set(IMAGE_FIELDS)
        if bad:
            raise ValueError(f"unknown image fields {sorted(bad)}")
        if not fields:
            return
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.transaction():
            self.conn.execute(f"UPDATE images SET {sets} WHERE id=?", [*fields.values(), int(image_id)])

    def move_image(self, image_id: int, new_path: str, size: int, mtime: float) -> None:
        """A file that moved: keep its row (and vector, labels), update the path and stat fields."""
        with self.transaction():
            # a stale row already holding the new path (e.g. replaced file) gives way
            old = self.conn.execute("SELECT id FROM images WHERE path=? AND id<>?",
                                    (new_path, int(image_id))).fetchone()
            if old:
                self._delete_ids([old[0]])
            self.conn.execute("UPDATE images SET path=?, size=?, mtime=? WHERE id=?",
                              (new_path, size, mtime, int(image_id)))

    def all_image_ids(self) -> list[int]:
        """Every image id, ascending."""
        return [int(r[0]) for r in self._all("SELECT id FROM images ORDER BY id")]

    def set_image_files(self, rows: Iterable[tuple[int, str, int, float]]) -> None:
        """(id, path, size, mtime) for many rows at once: photos now stored elsewhere (one transaction)."""
        with self.transaction():
            self.conn.executemany("UPDATE images SET path=?, size=?, mtime=? WHERE id=?",
                                  [(str(p), int(sz), float(mt), int(i)) for i, p, sz, mt in rows])

    def load_rows(self, images: list[dict], vectors: np.ndarray, gen: int) -> None:
        """Bulk-load image rows (dicts of "id" and IMAGE_FIELDS) with their vectors (n, d) at generation ``gen``,
        through sqlite-utils' batched inserts (synthetic collections for benchmarks; the indexer goes through
        upsert_image / put_vector)."""
        if len(images) != len(vectors):
            raise ValueError(f"{len(images)} image rows but {len(vectors)} vectors")
        with self.transaction():
            self.db["images"].insert_all(images, batch_size=10_000)
            self.db["vectors"].insert_all(({"image_id": int(r["id"]), "vec": vec_to_blob(v), "gen": int(gen)}
                                           for r, v in zip(images, vectors)), batch_size=10_000)

    def _delete_ids(self, ids: Sequence[int]) -> None:
        for i in range(0, len(ids), 500):
            chunk = [int(x) for x in ids[i:i + 500]]
            marks = ",".join("?" * len(chunk))
            self.conn.execute(f"DELETE FROM vectors WHERE image_id IN ({marks})", chunk)
            self.conn.execute(f"DELETE FROM labels WHERE image_id IN ({marks})", chunk)
            self.conn.execute(f"DELETE FROM corrections WHERE image_id IN ({marks})", chunk)
            self.conn.execute(f"DELETE FROM text_lines WHERE image_id IN ({marks})", chunk)
            self.conn.execute(f"DELETE FROM text_reads WHERE image_id IN ({marks})", chunk)
            self.conn.execute(f"DELETE FROM faces WHERE image_id IN ({marks})", chunk)
            self.conn.execute(f"DELETE FROM face_reads WHERE image_id IN ({marks})", chunk)
            self.conn.execute(f"DELETE FROM images WHERE id IN ({marks})", chunk)
        if ids:
            self._drop_empty_people()
            self._bump("face_generation")

    def delete_images(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        with self.transaction():
            self._delete_ids(ids)
        return len(ids)

    def delete_paths(self, paths: Iterable[str]) -> int:
        """Remove images by path (rows, vectors, labels); returns how many existed."""
        ids = []
        for p in paths:
            row = self.execute("SELECT id FROM images WHERE path=?", (str(p),)).fetchone()
            if row:
                ids.append(row[0])
        return self.delete_images(ids)

    def image_ids_under(self, path: str) -> list[int]:
        """ids of the image at ``path`` and of every image below it (``path`` as a folder)."""
        lo, hi = _prefix_range(path)
        return [r[0] for r in self._all("SELECT id FROM images WHERE path=? OR (path >= ? AND path < ?)",
                                        (path, lo, hi))]

    def paths_ending_with(self, suffix: str, limit: int = 50) -> list[str]:
        """Indexed paths ending with ``suffix`` (LIKE: ``%`` / ``_`` in it match loosely), sorted, at most ``limit``."""
        return [r[0] for r in self._all("SELECT path FROM images WHERE path LIKE ? ORDER BY path LIMIT ?",
                                        ("%" + suffix, int(limit)))]

    def embedded_images(self, model_hash: str) -> list[dict]:
        """[{"id", "path"}] of the images with a vector, embedded with ``model_hash``, by id."""
        return self.query("SELECT i.id, i.path FROM images i JOIN vectors v ON v.image_id = i.id "
                          "WHERE i.model_hash=? ORDER BY i.id", (model_hash,))

    def images_without_phash(self, limit: int | None = None) -> list[dict]:
        """[{"id", "path"}] of images with no perceptual hash (rows written by an older version)."""
        return self.query("SELECT id, path FROM images WHERE phash IS NULL"
                          + (f" LIMIT {int(limit)}" if limit else ""))

    def _rows_in(self, cols: str, key: str, values: Sequence) -> dict:
        """key value -> row of ``SELECT cols FROM images WHERE key IN (values)``, in chunks of 500 (SQLite's
        parameter limit); unknown values left out."""
        out: dict = {}
        values = list(values)
        for s in range(0, len(values), 500):
            chunk = values[s:s + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.query(f"SELECT {cols} FROM images WHERE {key} IN ({marks})", chunk):
                out[r[key]] = r
        return out

    def hash_rows_by_ids(self, ids: Sequence[int]) -> dict[int, dict]:
        """id -> {"id", "path", "size", "mtime", "sha256", "phash"} (unknown ids left out)."""
        return self._rows_in(_HASH_COLS, "id", [int(i) for i in ids])

    def hash_rows_by_paths(self, paths: Sequence[str]) -> dict[str, dict]:
        """path -> {"id", "path", "size", "mtime", "sha256", "phash"} (unknown paths left out)."""
        return self._rows_in(_HASH_COLS, "path", [str(p) for p in paths])

    def same_bytes_ids(self, model_hash: str, sha256: str | None = None) -> list[list[int]]:
        """Groups (ids ascending, 2 or more) of images embedded with ``model_hash`` whose files have the same
        sha256; only the group of ``sha256`` when given."""
        sql = ("SELECT i.sha256, i.id FROM images i JOIN vectors v ON v.image_id = i.id WHERE i.model_hash=? AND "
               + ("i.sha256=?" if sha256 else "i.sha256 IN (SELECT sha256 FROM images WHERE sha256 IS NOT NULL "
                  "GROUP BY sha256 HAVING COUNT(*) > 1)") + " ORDER BY i.sha256, i.id")
        groups: dict[str, list[int]] = {}
        for sha, i in self._all(sql, (model_hash, sha256) if sha256 else (model_hash,)):
            groups.setdefault(sha, []).append(int(i))
        return [g for g in groups.values() if len(g) > 1]

    def size_rows_by_paths(self, paths: Sequence[str]) -> dict[str, dict]:
        """path -> {"path", "width", "height", "size"} (unknown paths left out)."""
        return self._rows_in("path, width, height, size", "path", [str(p) for p in paths])

    def count_images(self, model_hash: str | None = None) -> int:
        if model_hash is None:
            return int(self.execute("SELECT COUNT(*) FROM images").fetchone()[0])
        return int(self.execute("SELECT COUNT(*) FROM images WHERE model_hash=?", (model_hash,)).fetchone()[0])

    def rows_by_ids(self, ids: Sequence[int]) -> dict[int, dict]:
        """id -> the RESULT_FIELDS of that image (unknown ids left out)."""
        return self._rows_in(", ".join(RESULT_FIELDS), "id", [int(i) for i in ids])

    def ids_matching(self, model_hash: str, folder: str | None = None, date_from=None, date_to=None) -> np.ndarray:
        """ids (int64) of images embedded with ``model_hash`` below ``folder`` and dated within
        [date_from, date_to] (ISO text; a date-only ``date_to`` includes that whole day). The date is the EXIF
        DateTimeOriginal, or the file's local mtime when the photo has none."""
        sql = "SELECT id FROM images WHERE model_hash=?"
        params: list = [model_hash]
        if folder:
            lo, hi = _prefix_range(str(folder))
            sql += " AND path >= ? AND path < ?"
            params += [lo, hi]
        date = "COALESCE(taken_at, strftime('%Y-%m-%dT%H:%M:%S', mtime, 'unixepoch', 'localtime'))"
        if date_from:
            sql += f" AND {date} >= ?"
            params.append(_iso(date_from))
        if date_to:
            d = _iso(date_to)
            sql += f" AND {date} <= ?"
            params.append(d + "T99" if len(d) == 10 else d)
        rows = self.execute(sql, params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    # ---- vectors --------------------------------------------------------------------------------------
    def put_vector(self, image_id: int, vec: np.ndarray, gen: int,
                   concepts: tuple | None = None) -> None:
        """Store a photo's vector (and, for text-space models, its concept (ids, weights[, colour shares]))."""
        with self.transaction():
            self.conn.execute("INSERT INTO vectors(image_id, vec, gen, concepts) VALUES (?, ?, ?, ?) "
                              "ON CONFLICT(image_id) DO UPDATE SET vec=excluded.vec, gen=excluded.gen, "
                              "concepts=excluded.concepts",
                              (int(image_id), vec_to_blob(vec), int(gen),
                               None if concepts is None else concepts_to_blob(*concepts)))

    def concepts_of(self, image_ids) -> dict[int, tuple]:
        """image id -> (concept ids int64 (m,), weights float32 (m,), colour shares (c,) or None) for the photos
        that have them."""
        ids = [int(i) for i in image_ids]
        out: dict[int, tuple] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = self.execute(f"SELECT image_id, concepts FROM vectors WHERE concepts IS NOT NULL AND image_id IN "
                                f"({','.join('?' * len(chunk))})", chunk).fetchall()
            for image_id, blob in rows:
                out[int(image_id)] = blob_to_concepts(blob)
        return out

    def vector_stats(self, model_hash: str) -> tuple[int, int]:
        """(count, max id) of the vectors belonging to ``model_hash`` (what a FAISS index must hold)."""
        row = self.execute("SELECT COUNT(*), MAX(v.image_id) FROM vectors v JOIN images i ON i.id = v.image_id "
                           "WHERE i.model_hash=?", (model_hash,)).fetchone()
        return int(row[0]), int(row[1] or 0)

    def vector_ids(self, model_hash: str) -> np.ndarray:
        """Sorted ids (int64) of the images with a vector from ``model_hash``."""
        rows = self.execute("SELECT v.image_id FROM vectors v JOIN images i ON i.id = v.image_id "
                            "WHERE i.model_hash=? ORDER BY v.image_id", (model_hash,)).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def vectors_by_ids(self, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids found int64 (m,), vecs float32 (m, dim)) for ``ids`` (unknown ids / other widths left out)."""
        found, blobs = [], []
        ids = [int(i) for i in ids]
        for s in range(0, len(ids), 500):
            chunk = ids[s:s + 500]
            marks = ",".join("?" * len(chunk))
            for i, b in self.execute(f"SELECT image_id, vec FROM vectors WHERE image_id IN ({marks})", chunk):
                if len(b) == 4 * dim:
                    found.append(i)
                    blobs.append(b)
        vecs = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(found), dim).astype(np.float32)
        return np.asarray(found, np.int64), vecs

    def vector_of(self, image_id: int) -> np.ndarray | None:
        row = self.execute("SELECT vec FROM vectors WHERE image_id=?", (int(image_id),)).fetchone()
        return None if row is None else blob_to_vec(row[0]).copy()

    def iter_vectors(self, model_hash: str, dim: int, min_gen: int | None = None,
                     batch: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids int64 (b,), vecs float32 (b, dim)) for ``model_hash`` (optionally only gen > min_gen)."""
        sql = ("SELECT v.image_id, v.vec FROM vectors v JOIN images i ON i.id = v.image_id "
               "WHERE i.model_hash=?")
        params: list = [model_hash]
        if min_gen is not None:
            sql += " AND v.gen > ?"
            params.append(int(min_gen))
        sql += " ORDER BY v.image_id"
        with self._lock:
            cur = self.conn.execute(sql, params)
            while True:
                rows = cur.fetchmany(batch)
                if not rows:
                    break
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                good = [len(r[1]) == 4 * dim for r in rows]
                if not all(good):                       # a vector of another width: skip it (stale / corrupt)
                    ids = ids[np.asarray(good)]
                    rows = [r for r, g in zip(rows, good) if g]
                if rows:
                    vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)
                    yield ids, vecs.astype(np.float32)

    # ---- text in photos (index/textpass.py, index/textsearch.py) -------------------------------------------
    def _todo_sql(self, records: str, version_col: str, count: bool) -> str:
        """Photos with a vector that a pass (its records table: text_reads, face_reads) never looked at, or looked
        at in other bytes or with another version; a file's own error is not retried until the file changes."""
        cols = "COUNT(*)" if count else "i.id, i.path, i.sha256, i.width, i.height"
        return (f"SELECT {cols} FROM images i JOIN vectors v ON v.image_id = i.id LEFT JOIN {records} r "
                f"ON r.image_id = i.id WHERE r.image_id IS NULL OR r.sha256 IS NOT i.sha256 "
                f"OR (r.{version_col} IS NOT ? AND r.state != 'error')" + ("" if count else " ORDER BY i.id"))

    def text_todo(self, reader: str, limit: int | None = None) -> list[dict]:
        """[{"id", "path", "sha256", "width", "height"}] of photos with a vector whose text was never read, or
        read from other bytes or by another reader (``reader``: dcclip_core.ocr.reader_version), oldest id
        first. Errors about the file (not the reader) are not retried until the file changes."""
        sql = self._todo_sql("text_reads", "reader", count=False)
        return self.query(sql + (f" LIMIT {int(limit)}" if limit is not None else ""), (reader,))

    def text_pending(self, reader: str) -> int:
        """How many photos ``text_todo`` would return."""
        return int(self.execute(self._todo_sql("text_reads", "reader", count=True), (reader,)).fetchone()[0])

    def put_text(self, image_id: int, sha256: str | None, reader: str, state: str, lines: Sequence[dict],
                 seconds: float = 0.0, note: str = "") -> None:
        """Replace a photo's text: ``lines`` [{"text", "norm", "box": (x0, y0, x1, y1), "conf", "script"[, "vec",
        "model_hash"]}] in reading order, and its record in text_reads (one transaction)."""
        with self.transaction():
            self.conn.execute("DELETE FROM text_lines WHERE image_id=?", (int(image_id),))
            self.conn.executemany(                    # a line without "vec" may still name the model: no words
                "INSERT INTO text_lines(image_id, line, text, norm, x0, y0, x1, y1, conf, script, vec, model_hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(int(image_id), n, ln["text"], ln["norm"], *map(float, ln["box"]), float(ln["conf"]), ln["script"],
                  None if ln.get("vec") is None else np.asarray(ln["vec"], "<f2").tobytes(), ln.get("model_hash"))
                 for n, ln in enumerate(lines)])
            self.conn.execute(
                "INSERT INTO text_reads(image_id, sha256, reader, state, lines, seconds, note, time) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(image_id) DO UPDATE SET sha256=excluded.sha256, "
                "reader=excluded.reader, state=excluded.state, lines=excluded.lines, seconds=excluded.seconds, "
                "note=excluded.note, time=excluded.time",
                (int(image_id), sha256, reader, state, len(lines), round(float(seconds), 4), note or None, now_iso()))
            self._set_meta("text_generation", str(int(self.get_meta("text_generation", 0)) + 1))

    def text_generation(self) -> int:
        """Bumped by every text write (put_text, put_line_vectors): readers notice new text cheaply."""
        return int(self.get_meta("text_generation", 0))

    def lines_without_vectors(self, model_hash: str, limit: int = 512) -> list[tuple[int, str]]:
        """[(line id, text)] of lines not yet embedded by ``model_hash``."""
        return self._all("SELECT id, text FROM text_lines WHERE model_hash IS NOT ? ORDER BY id LIMIT ?",
                         (model_hash, int(limit)))

    def count_lines_without_vectors(self, model_hash: str) -> int:
        return int(self.execute("SELECT COUNT(*) FROM text_lines WHERE model_hash IS NOT ?",
                                (model_hash,)).fetchone()[0])

    def put_line_vectors(self, rows: Sequence[tuple[int, np.ndarray]], model_hash: str) -> None:
        """Store text-tower vectors (float16) of lines by id (None: the line has no vector for ``model_hash``)."""
        with self.transaction():
            self.conn.executemany("UPDATE text_lines SET vec=?, model_hash=? WHERE id=?",
                                  [(None if v is None else np.asarray(v, "<f2").tobytes(), model_hash, int(i))
                                   for i, v in rows])
            self._set_meta("text_generation", str(int(self.get_meta("text_generation", 0)) + 1))

    def line_vectors(self, model_hash: str, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(line ids int64 (n,), image ids int64 (n,), vectors float32 (n, dim)) of every line embedded by
        ``model_hash`` (what the semantic text match scores a query against)."""
        rows = self._all("SELECT id, image_id, vec FROM text_lines WHERE model_hash=? AND vec IS NOT NULL "
                         "ORDER BY id", (model_hash,))
        rows = [r for r in rows if len(r[2]) == 2 * dim]
        vecs = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f2").reshape(len(rows), dim).astype(np.float32)
        return (np.fromiter((r[0] for r in rows), np.int64, len(rows)),
                np.fromiter((r[1] for r in rows), np.int64, len(rows)), vecs)

    def lines_matching(self, norm: str, image_ids: Sequence[int] | None = None, limit: int = 5000) -> list[dict]:
        """Lines whose normalised text contains ``norm`` (already ``dcclip_core.ocr.normalise``d): the FTS5
        trigram index for 3+ characters, a scan of ``norm`` for shorter strings. [{"id", "image_id", "line",
        "text", "norm", "x0", "y0", "x1", "y1", "conf"}], optionally only of ``image_ids``."""
        norm = str(norm)
        if not norm:
            return []
        cols = "l.id, l.image_id, l.line, l.text, l.norm, l.x0, l.y0, l.x1, l.y1, l.conf"
        if len(norm) >= 3:
            sql = (f"SELECT {cols} FROM text_lines_fts f JOIN text_lines l ON l.id = f.rowid "
                   "WHERE text_lines_fts MATCH ?")
            params: list = ['"' + norm.replace('"', '""') + '"']
        else:
            sql, params = f"SELECT {cols} FROM text_lines l WHERE instr(l.norm, ?) > 0", [norm]
        if image_ids is not None:
            ids = sorted({int(i) for i in image_ids})
            if not ids:
                return []
            sql += f" AND l.image_id IN ({','.join(map(str, ids))})"
        return self.query(sql + f" LIMIT {int(limit)}", params)

    def lines_of(self, image_ids: Sequence[int]) -> dict[int, list[dict]]:
        """image id -> its lines in reading order [{"id", "line", "text", "x0", "y0", "x1", "y1", "conf",
        "script"}]."""
        out: dict[int, list[dict]] = {}
        ids = [int(i) for i in image_ids]
        for s in range(0, len(ids), 500):
            chunk = ids[s:s + 500]
            for r in self.query("SELECT id, image_id, line, text, x0, y0, x1, y1, conf, script FROM text_lines "
                                f"WHERE image_id IN ({','.join('?' * len(chunk))}) ORDER BY image_id, line", chunk):
                out.setdefault(int(r.pop("image_id")), []).append(r)
        return out

    def lines_by_ids(self, line_ids: Sequence[int]) -> dict[int, dict]:
        """line id -> {"id", "image_id", "text", "x0", "y0", "x1", "y1"}."""
        ids = sorted({int(i) for i in line_ids})
        out: dict[int, dict] = {}
        for s in range(0, len(ids), 500):
            chunk = ids[s:s + 500]
            for r in self.query("SELECT id, image_id, text, x0, y0, x1, y1 FROM text_lines "
                                f"WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                out[int(r["id"])] = r
        return out

    def ids_with_text(self) -> np.ndarray:
        """Sorted ids (int64) of the photos whose text pass found text."""
        rows = self._all("SELECT image_id FROM text_reads WHERE state IN ('text', 'capped') ORDER BY image_id")
        return np.fromiter((r[0] for r in rows), np.int64, len(rows))

    def text_read_of(self, image_id: int) -> dict | None:
        """A photo's text_reads record {"state", "note", "lines", "reader", "time"} (None: not read yet)."""
        rows = self.query("SELECT state, note, lines, reader, time FROM text_reads WHERE image_id=?", (int(image_id),))
        return rows[0] if rows else None

    def count_text_lines(self) -> int:
        return int(self.execute("SELECT COUNT(*) FROM text_lines").fetchone()[0])

    def text_read_times(self) -> list[tuple[str, float]]:
        """[(state, seconds)] of every photo the text pass read (what its benchmark averages)."""
        return [(st, float(sec or 0.0)) for st, sec in self._all("SELECT state, seconds FROM text_reads")]

    def text_read_counts(self) -> dict[str, int]:
        """{state: photos} over the text pass's records ("none", "text", "capped", "error")."""
        return {s: int(n) for s, n in self._all("SELECT state, COUNT(*) FROM text_reads GROUP BY state")}

    def text_errors(self, limit: int | None = 1000) -> list[dict]:
        """[{"path", "reason", "time"}] of photos the text pass could not read (or capped), newest first."""
        sql = ("SELECT i.path, t.state, t.note AS reason, t.time FROM text_reads t JOIN images i ON i.id = t.image_id "
               "WHERE t.state IN ('error', 'capped') ORDER BY t.time DESC, i.path")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self.query(sql)

    # ---- faces and people (index/facepass.py, index/people.py) ------------------------------------------------
    def _bump(self, key: str) -> None:
        self._set_meta(key, str(int(self.get_meta(key, 0)) + 1))

    def face_generation(self) -> int:
        """Bumped by every face or people write: readers (search, the People tab) notice changes cheaply."""
        return int(self.get_meta("face_generation", 0))

    def faces_enabled(self) -> bool:
        """The privacy switch: whether this library looks for faces (on unless a person turned it off)."""
        return self.get_meta("faces", "on") != "off"

    def set_faces_enabled(self, on: bool) -> None:
        self.set_meta("faces", "on" if on else "off")

    def face_todo(self, finder: str, limit: int | None = None) -> list[dict]:
        """[{"id", "path", "sha256", "width", "height"}] of photos with a vector whose faces were never looked
        for, or looked for in other bytes or by another finder (``finder``: dcclip_core.faces.finder_version),
        oldest id first. Errors about the file are not retried until the file changes."""
        sql = self._todo_sql("face_reads", "finder", count=False)
        return self.query(sql + (f" LIMIT {int(limit)}" if limit is not None else ""), (finder,))

    def face_pending(self, finder: str) -> int:
        """How many photos ``face_todo`` would return."""
        return int(self.execute(self._todo_sql("face_reads", "finder", count=True), (finder,)).fetchone()[0])

    def put_faces(self, image_id: int, sha256: str | None, finder: str, state: str, faces: Sequence[dict],
                  seconds: float = 0.0, note: str = "") -> list[int]:
        """Replace a photo's faces (``faces`` [{"box": (x0, y0, x1, y1), "score", "side", "sharpness", "quality",
        "vec": (128,)}]) and its face_reads record, in one transaction; returns the ids of its faces without a
        person (new ones). A face found again where one was (box overlap >= 0.5: the file changed, or a newer
        finder) keeps its row, so its person and what was done to it by hand stay."""
        image_id = int(image_id)
        with self.transaction():
            old = self.query("SELECT id, x0, y0, x1, y1, person_id FROM faces WHERE image_id=?", (image_id,))
            kept: set[int] = set()
            for f in faces:
                box = tuple(float(b) for b in f["box"])
                best, best_iou = None, 0.5
                for o in old:
                    if o["id"] in kept:
                        continue
                    iou = box_iou(box, (o["x0"], o["y0"], o["x1"], o["y1"]))
                    if iou >= best_iou:
                        best, best_iou = o, iou
                vals = (*box, float(f["score"]), int(f["side"]), float(f["sharpness"]), float(f["quality"]),
                        np.asarray(f["vec"], "<f4").tobytes())
                if best is not None:
                    kept.add(best["id"])
                    self.conn.execute("UPDATE faces SET x0=?, y0=?, x1=?, y1=?, score=?, side=?, sharpness=?, "
                                      "quality=?, vec=? WHERE id=?", (*vals, best["id"]))
                else:
                    self.conn.execute("INSERT INTO faces(image_id, x0, y0, x1, y1, score, side, sharpness, quality, "
                                      "vec) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (image_id, *vals))
            gone = [o["id"] for o in old if o["id"] not in kept]
            if gone:
                self.conn.execute(f"DELETE FROM faces WHERE id IN ({','.join(map(str, gone))})")
                self._drop_empty_people()
            self.conn.execute(
                "INSERT INTO face_reads(image_id, sha256, finder, state, faces, seconds, note, time) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(image_id) DO UPDATE SET sha256=excluded.sha256, "
                "finder=excluded.finder, state=excluded.state, faces=excluded.faces, seconds=excluded.seconds, "
                "note=excluded.note, time=excluded.time",
                (image_id, sha256, finder, state, len(faces), round(float(seconds), 4), note or None, now_iso()))
            self._bump("face_generation")
            return [r[0] for r in self.conn.execute(
                "SELECT id FROM faces WHERE image_id=? AND person_id IS NULL ORDER BY id", (image_id,))]

    def face_vectors(self, face_ids: Sequence[int] | None = None, with_person: bool | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(face ids (n,), person ids (n,) with -1 for none, by_hand (n,) bool, descriptors (n, 128) float32) of
        ``face_ids`` (all faces when None), optionally only those with / without a person; by quality, best first."""
        sql, params = "SELECT id, person_id, by_hand, vec FROM faces", []
        cond = []
        if with_person is True:
            cond.append("person_id IS NOT NULL")
        elif with_person is False:
            cond.append("person_id IS NULL")
        if face_ids is not None:
            ids = sorted({int(i) for i in face_ids})
            cond.append(f"id IN ({','.join(map(str, ids))})" if ids else "0")
        if cond:
            sql += " WHERE " + " AND ".join(cond)
        rows = self._all(sql + " ORDER BY quality DESC, id", params)
        n = len(rows)
        vecs = (np.frombuffer(b"".join(r[3] for r in rows), dtype="<f4").reshape(n, -1).astype(np.float32)
                if n else np.zeros((0, 128), np.float32))
        return (np.fromiter((r[0] for r in rows), np.int64, n),
                np.fromiter((-1 if r[1] is None else r[1] for r in rows), np.int64, n),
                np.fromiter((bool(r[2]) for r in rows), bool, n), vecs)

    def set_face_people(self, rows: Iterable[tuple[int, int | None, bool | None]]) -> None:
        """[(face id, person id or None, by_hand or None to keep it)]: move faces, in one transaction; people left
        without faces are deleted."""
        with self.transaction():
            for fid, pid, hand in rows:
                if hand is None:
                    self.conn.execute("UPDATE faces SET person_id=? WHERE id=?", (pid, int(fid)))
                else:
                    self.conn.execute("UPDATE faces SET person_id=?, by_hand=? WHERE id=?",
                                      (pid, int(bool(hand)), int(fid)))
            self._drop_empty_people()
            self._bump("face_generation")

    def new_person(self, name: str | None = None, name_key: str | None = None) -> int:
        with self.transaction():
            cur = self.conn.execute("INSERT INTO people(name, name_key, time) VALUES (?, ?, ?)",
                                    (name or None, name_key or None, now_iso()))
            self._bump("face_generation")
            return int(cur.lastrowid)

    def set_person_name(self, person_id: int, name: str | None, name_key: str | None) -> bool:
        """Name (or un-name, with None) a person; its faces count as placed by hand from then on. False: no such
        person."""
        with self.transaction():
            n = self.conn.execute("UPDATE people SET name=?, name_key=?, time=? WHERE id=?",
                                  (name or None, name_key or None, now_iso(), int(person_id))).rowcount
            if n:
                self.conn.execute("UPDATE faces SET by_hand=1 WHERE person_id=?", (int(person_id),))
                self._bump("face_generation")
            return bool(n)

    def person(self, person_id: int) -> dict | None:
        rows = self.query("SELECT p.id, p.name, p.name_key, COUNT(f.id) AS faces FROM people p LEFT JOIN faces f "
                          "ON f.person_id = p.id WHERE p.id=? GROUP BY p.id", (int(person_id),))
        return rows[0] if rows else None

    def people_rows(self) -> list[dict]:
        """[{"id", "name", "faces", "photos", "cover"}] of every person with faces, most faces first; ``cover``
        is the id of its best face (quality)."""
        return self.query(
            "SELECT p.id, p.name, COUNT(f.id) AS faces, COUNT(DISTINCT f.image_id) AS photos, "
            "(SELECT g.id FROM faces g WHERE g.person_id = p.id ORDER BY g.by_hand DESC, g.quality DESC, g.id "
            "LIMIT 1) AS cover FROM people p JOIN faces f ON f.person_id = p.id GROUP BY p.id "
            "ORDER BY faces DESC, p.name IS NULL, p.id")

    def person_names(self) -> dict[int, str]:
        """{person id: name} of the named people."""
        return {int(i): n for i, n in self._all("SELECT id, name FROM people WHERE name IS NOT NULL")}

    def person_paths(self, person_id: int) -> list[str]:
        """Paths of the photos a person's faces are in, by path."""
        return [r[0] for r in self._all("SELECT DISTINCT i.path FROM faces f JOIN images i ON i.id = f.image_id "
                                        "WHERE f.person_id=? ORDER BY i.path", (int(person_id),))]

    def person_image_ids(self, person_id: int) -> np.ndarray:
        rows = self._all("SELECT DISTINCT image_id FROM faces WHERE person_id=? ORDER BY image_id",
                         (int(person_id),))
        return np.fromiter((r[0] for r in rows), np.int64, len(rows))

    def faces_of_person(self, person_id: int) -> list[dict]:
        """[{"id", "image_id", "path", "x0", "y0", "x1", "y1", "quality", "by_hand"}] best first."""
        return self.query("SELECT f.id, f.image_id, i.path, f.x0, f.y0, f.x1, f.y1, f.quality, f.by_hand FROM faces f "
                          "JOIN images i ON i.id = f.image_id WHERE f.person_id=? "
                          "ORDER BY f.by_hand DESC, f.quality DESC, f.id", (int(person_id),))

    def faces_of(self, image_ids: Sequence[int]) -> dict[int, list[dict]]:
        """image id -> its faces [{"id", "x0", "y0", "x1", "y1", "side", "quality", "person_id", "name"}], left
        to right."""
        out: dict[int, list[dict]] = {}
        ids = [int(i) for i in image_ids]
        for s in range(0, len(ids), 500):
            chunk = ids[s:s + 500]
            for r in self.query(
                    "SELECT f.id, f.image_id, f.x0, f.y0, f.x1, f.y1, f.side, f.quality, f.person_id, p.name "
                    f"FROM faces f LEFT JOIN people p ON p.id = f.person_id WHERE f.image_id IN "
                    f"({','.join('?' * len(chunk))}) ORDER BY f.image_id, f.x0", chunk):
                out.setdefault(int(r.pop("image_id")), []).append(r)
        return out

    def face_row(self, face_id: int) -> dict | None:
        rows = self.query("SELECT f.id, f.image_id, i.path, f.x0, f.y0, f.x1, f.y1, f.person_id FROM faces f "
                          "JOIN images i ON i.id = f.image_id WHERE f.id=?", (int(face_id),))
        return rows[0] if rows else None

    def face_image_ids(self, face_ids: Sequence[int]) -> list[int]:
        """The photos ``face_ids`` are in (each once)."""
        ids = sorted({int(i) for i in face_ids})
        if not ids:
            return []
        return [int(r[0]) for r in self._all(f"SELECT DISTINCT image_id FROM faces WHERE id IN "
                                             f"({','.join(map(str, ids))})")]

    def face_summary(self) -> dict[int, tuple[int, float]]:
        """image id -> (faces, the largest face's side as a fraction of the photo's shorter side): the people
        signal search reads."""
        rows = self._all("SELECT f.image_id, COUNT(*), MAX(f.side), MIN(i.width, i.height) FROM faces f "
                         "JOIN images i ON i.id = f.image_id GROUP BY f.image_id")
        return {int(i): (int(n), float(side) / max(1, short or side or 1)) for i, n, side, short in rows}

    def face_read_of(self, image_id: int) -> dict | None:
        """A photo's face_reads record {"state", "note", "faces", "finder", "time"} (None: not looked at yet)."""
        rows = self.query("SELECT state, note, faces, finder, time FROM face_reads WHERE image_id=?", (int(image_id),))
        return rows[0] if rows else None

    def add_face_not(self, face_id: int, person_id: int) -> None:
        with self.transaction():
            self.conn.execute("INSERT OR IGNORE INTO face_not(face_id, person_id) VALUES (?, ?)",
                              (int(face_id), int(person_id)))

    def face_nots(self) -> dict[int, set[int]]:
        """face id -> the people it was taken out of."""
        out: dict[int, set[int]] = {}
        for f, p in self._all("SELECT face_id, person_id FROM face_not"):
            out.setdefault(int(f), set()).add(int(p))
        return out

    def merge_people(self, keep: int, other: int) -> int:
        """Move every face of ``other`` into ``keep`` (placed by hand) and delete ``other``; returns faces moved."""
        with self.transaction():
            n = self.conn.execute("UPDATE faces SET person_id=?, by_hand=1 WHERE person_id=?",
                                  (int(keep), int(other))).rowcount
            self.conn.execute("UPDATE faces SET by_hand=1 WHERE person_id=?", (int(keep),))
            self.conn.execute("DELETE FROM face_not WHERE person_id=? AND face_id IN "
                              "(SELECT id FROM faces WHERE person_id=?)", (int(keep), int(keep)))
            self.conn.execute("DELETE FROM people WHERE id=?", (int(other),))
            self._bump("face_generation")
            return max(0, n)

    def _drop_empty_people(self) -> None:
        self.conn.execute("DELETE FROM people WHERE id NOT IN (SELECT person_id FROM faces WHERE person_id IS NOT NULL)")

    def count_faces(self) -> int:
        return int(self.execute("SELECT COUNT(*) FROM faces").fetchone()[0])

    def face_read_counts(self) -> dict[str, int]:
        """{state: photos} over the face pass's records ("none", "faces", "capped", "error")."""
        return {s: int(n) for s, n in self._all("SELECT state, COUNT(*) FROM face_reads GROUP BY state")}

    def face_read_times(self) -> list[tuple[str, float]]:
        return [(st, float(sec or 0.0)) for st, sec in self._all("SELECT state, seconds FROM face_reads")]

    def face_errors(self, limit: int | None = 1000) -> list[dict]:
        """[{"path", "state", "reason", "time"}] of photos the face pass could not read (or capped), newest first."""
        sql = ("SELECT i.path, f.state, f.note AS reason, f.time FROM face_reads f JOIN images i ON i.id = f.image_id "
               "WHERE f.state IN ('error', 'capped') ORDER BY f.time DESC, i.path")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self.query(sql)

    def delete_face_data(self) -> int:
        """Forget every face, person, name and face record (the privacy button); returns the faces deleted."""
        with self.transaction():
            n = int(self.conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0])
            for table in ("face_not", "faces", "people", "face_reads"):
                self.conn.execute(f"DELETE FROM {table}")
            self._bump("face_generation")
        with self._lock:                              # the descriptors leave the file, not just the tables
            try:
                self.conn.execute("VACUUM")
            except sqlite3.OperationalError:          # another connection is reading: freed pages stay unused
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return n

    # ---- errors ---------------------------------------------------------------------------------------
    def record_error(self, path: str, reason: str, size=None, mtime=None, ctime=None) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT INTO errors(path, reason, time, size, mtime, ctime) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(path) DO UPDATE SET reason=excluded.reason, time=excluded.time, size=excluded.size, "
                "mtime=excluded.mtime, ctime=excluded.ctime", (str(path), reason, now_iso(), size, mtime, ctime))

    def clear_errors(self, paths: Iterable[str]) -> None:
        with self.transaction():
            for p in paths:
                self.conn.execute("DELETE FROM errors WHERE path=?", (str(p),))

    def delete_errors_under(self, path: str) -> int:
        """Forget the recorded errors of ``path`` and of every file below it; returns how many."""
        lo, hi = _prefix_range(path)
        with self.transaction():
            n = self.conn.execute("DELETE FROM errors WHERE path=? OR (path >= ? AND path < ?)",
                                  (path, lo, hi)).rowcount
        return max(0, n)

    def error_reason_counts(self) -> list[tuple[str | None, int]]:
        """[(reason, files)] over the recorded errors."""
        return [(r, int(n)) for r, n in self._all("SELECT reason, COUNT(*) FROM errors GROUP BY reason")]

    def errors_under(self, root: str) -> dict[str, dict]:
        lo, hi = _prefix_range(root)
        return {r["path"]: r for r in self.query("SELECT * FROM errors WHERE path >= ? AND path < ?", (lo, hi))}

    def list_errors(self, limit: int | None = None) -> list[dict]:
        sql = "SELECT path, reason, time FROM errors ORDER BY time DESC, path"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self.query(sql)

    def count_errors(self) -> int:
        return int(self.execute("SELECT COUNT(*) FROM errors").fetchone()[0])

    # ---- labels (labels.py) ---------------------------------------------------------------------------
    def label_set_meta(self, label_set: str) -> str | None:
        """The stored definition (JSON text) of a label set, None when there is no such set."""
        return self.get_meta(LABEL_SET_KEY + label_set)

    def set_label_set_meta(self, label_set: str, definition: str) -> None:
        self.set_meta(LABEL_SET_KEY + label_set, definition)

    def label_set_metas(self) -> list[tuple[str, str]]:
        """[(label set name, definition JSON text)] of every stored set, by name."""
        rows = self._all("SELECT key, value FROM meta WHERE key GLOB ? ORDER BY key", (LABEL_SET_KEY + "*",))
        return [(k[len(LABEL_SET_KEY):], v) for k, v in rows]

    def put_labels(self, rows: Iterable[Sequence]) -> None:
        """Insert or update label rows (image_id, label_set, label, score, source, cosine, rank, time), atomically."""
        self._upsert("labels", LABEL_COLUMNS, rows, pk=("image_id", "label_set", "label"))

    def clear_labels(self, label_set: str) -> int:
        """Delete a set's machine labels (its corrections stay); returns how many rows."""
        with self.transaction():
            return max(0, self.conn.execute("DELETE FROM labels WHERE label_set=?", (label_set,)).rowcount)

    def _ids_of_paths(self, paths: Iterable[str]) -> list[int]:
        """ids of the indexed ``paths`` (others left out), in order, without repeats."""
        ids: dict[int, None] = {}
        for p in paths:
            row = self.conn.execute("SELECT id FROM images WHERE path=?", (str(p),)).fetchone()
            if row is not None:
                ids[int(row[0])] = None
        return list(ids)

    def set_correction(self, label_set: str, paths: Iterable[str], label: str) -> int:
        """Record ``label`` as the photos' corrected label in the set (replacing an earlier correction; machine
        labels are kept, hidden while it lasts); returns how many photos were indexed (others are ignored)."""
        when = now_iso()
        with self.transaction():
            ids = self._ids_of_paths(paths)
            self._upsert("corrections", CORRECTION_COLUMNS, [(i, label_set, label, when) for i in ids],
                         pk=("image_id", "label_set"))
        return len(ids)

    def remove_correction(self, label_set: str, paths: Iterable[str]) -> int:
        """Forget the photos' corrections in the set (their machine labels show again); returns how many."""
        with self.transaction():
            ids = self._ids_of_paths(paths)
            return sum(max(0, self.conn.execute("DELETE FROM corrections WHERE image_id=? AND label_set=?",
                                                (i, label_set)).rowcount) for i in ids)

    def corrections(self, label_set: str) -> dict[str, str]:
        """path -> corrected label of every corrected photo in the set, by path."""
        return dict(self._all("SELECT i.path, c.label FROM corrections c JOIN images i ON i.id = c.image_id "
                              "WHERE c.label_set=? ORDER BY i.path", (label_set,)))

    def corrected_image_ids(self, label_set: str) -> set[int]:
        """ids of the images whose label in the set was corrected by hand."""
        return {r[0] for r in self._all("SELECT image_id FROM corrections WHERE label_set=?", (label_set,))}

    def labelled_image_ids(self, label_set: str) -> set[int]:
        """ids of the images with a machine label in the set (what a labelling run has already done)."""
        return {r[0] for r in self._all("SELECT DISTINCT image_id FROM labels WHERE label_set=?", (label_set,))}

    def labelled_image_count(self, label_set: str) -> int:
        """Photos with a label in the set (machine or corrected)."""
        return int(self._all("SELECT COUNT(*) FROM (SELECT image_id FROM labels WHERE label_set=? UNION "
                             "SELECT image_id FROM corrections WHERE label_set=?)", (label_set, label_set))[0][0])

    @staticmethod
    def _shown_labels(label: str | None, top_only: bool) -> tuple[str, list]:
        """SQL (with its parameters after the set name, twice) of a set's labels as shown: a corrected photo
        has its correction alone (rank 1, score 1.0, source "manual"), any other its machine rows."""
        cond, extra = "", []
        if label is not None:
            cond, extra = " AND {t}.label=?", [label]
        sql = (f"SELECT c.image_id, c.label, 1.0 AS score, NULL AS cosine, 1 AS rank, '{MANUAL}' AS source "
               "FROM corrections c WHERE c.label_set=?" + cond.format(t="c") +
               " UNION ALL SELECT l.image_id, l.label, l.score, l.cosine, l.rank, l.source FROM labels l "
               "WHERE l.label_set=?" + cond.format(t="l") + (" AND l.rank=1" if top_only else "") +
               " AND NOT EXISTS (SELECT 1 FROM corrections x WHERE x.image_id = l.image_id AND "
               "x.label_set = l.label_set)")
        return sql, extra

    def label_counts(self, label_set: str) -> dict[str, int]:
        """label -> photos whose best (rank 1) label in the set it is, corrections counted (labels with none
        left out)."""
        sql, extra = self._shown_labels(None, True)
        return {lb: int(n) for lb, n in self._all(
            f"SELECT label, COUNT(*) FROM ({sql}) GROUP BY label", [label_set, *extra] * 2)}

    def label_rows(self, label_set: str, label: str | None = None, top_only: bool = False,
                   limit: int | None = None) -> list[dict]:
        """[{"path", "label", "score", "cosine", "rank", "source"}] of a set as shown (a corrected photo: its
        correction alone, source "manual"), optionally only ``label`` / only rank 1; by path, rank."""
        sql, extra = self._shown_labels(label, top_only)
        sql = (f"SELECT i.path, s.label, s.score, s.cosine, s.rank, s.source FROM ({sql}) s "
               "JOIN images i ON i.id = s.image_id ORDER BY i.path, s.rank")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self.query(sql, [label_set, *extra] * 2)

    # ---- integrity ------------------------------------------------------------------------------------
    def integrity_check(self) -> str:
        return str(self.execute("PRAGMA integrity_check").fetchone()[0])

