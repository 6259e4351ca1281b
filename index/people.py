"""People from faces: group the face pass's faces into people, keep what a person did by hand, find names in queries.

    assign_new(db)                 # incremental: each face without a person joins the nearest person or starts one
    recluster(db)                  # from scratch (chinese whispers), keeping every face placed by hand
    people(db)                     # [{"id", "name", "faces", "paths", "cover"}], most faces first
    rename(db, 3, "妈妈"); merge(db, 3, 7); move_face(db, face_id, to=None)

Rules (what survives a re-cluster):
* a face placed by hand (``faces.by_hand``: in a person that was named, merged, or a face moved) stays where it is;
* a face taken out of a person (``face_not``) never joins that person again;
* a re-clustered group of faces keeps the id (and name) of the person most of it came from, so ids stay stable;
* named people are never deleted by a re-cluster; unnamed people left without faces are.

Distances are Euclidean between dlib's 128-d descriptors. ``JOIN`` is the distance under which a new face joins
a person (its nearest faces vote), measured on photos of the same and different people
(``python -m benchmarks faces``; BENCHMARKS.md).
"""
from __future__ import annotations

import collections
import re
import unicodedata

import numpy as np

JOIN = 0.55              # a face joins the person of its nearest faces closer than this
VOTERS = 3               # nearest faces that vote
MIN_CLUSTER_QUALITY = 0.0   # faces below this quality are kept but never start a person of their own


def cluster_labels(vecs: np.ndarray, threshold: float = JOIN) -> np.ndarray:
    """Chinese-whispers clustering (dlib) of (n, 128) descriptors: (n,) int labels 0..k-1; faces closer than
    ``threshold`` are linked."""
    vecs = np.asarray(vecs, np.float32)
    if len(vecs) == 0:
        return np.zeros(0, np.int64)
    if len(vecs) == 1:
        return np.zeros(1, np.int64)
    import dlib
    labels = dlib.chinese_whispers_clustering([dlib.vector(v.astype(float).tolist()) for v in vecs],
                                              float(threshold))
    return np.asarray(labels, np.int64)


def vote(vec: np.ndarray, known: np.ndarray, owners: np.ndarray, threshold: float = JOIN,
         voters: int = VOTERS, barred: set | None = None) -> int | None:
    """The person a face (128,) joins: among the ``voters`` nearest of the ``known`` (n, 128) faces closer than
    ``threshold``, the person (``owners`` (n,)) with most votes (ties: the nearest); None: nobody is close."""
    if len(known) == 0:
        return None
    d = np.linalg.norm(known - vec[None, :], axis=1)                                     # (n,)
    order = np.argsort(d)[:max(1, voters)]
    votes: dict[int, list] = collections.defaultdict(list)
    for i in order:
        if d[i] >= threshold:
            break
        pid = int(owners[i])
        if barred and pid in barred:
            continue
        votes[pid].append(float(d[i]))
    if not votes:
        return None
    return min(votes, key=lambda p: (-len(votes[p]), min(votes[p])))


# ---- names in queries --------------------------------------------------------------------------------------
_LATIN_WORD = re.compile(r"[a-z0-9]")


def name_key(name: str) -> str:
    """The form names are matched in: NFKC, casefold, traditional -> simplified, spaces squeezed."""
    from dcclip_core.tokenizer import script_converter
    s = unicodedata.normalize("NFKC", name or "").casefold().strip()
    s = script_converter("t2s").convert(s) if s else s
    return " ".join(s.split())


def find_names(query: str, names: dict[int, str]) -> tuple[list[int], str]:
    """People named in ``query`` ({person id: name}): (ids, the query without the names). Latin names match
    whole words ("Al" is not in "Alice"), Chinese names anywhere; longer names first ("Anne Helene" before
    "Anne")."""
    q = name_key(query)
    found: list[int] = []
    for pid, name in sorted(names.items(), key=lambda kv: -len(name_key(kv[1] or ""))):
        key = name_key(name or "")
        if not key:
            continue
        if _LATIN_WORD.search(key[0]) or _LATIN_WORD.search(key[-1]):
            pat = re.compile(r"(?<![\w])" + re.escape(key) + r"(?![\w])")
        else:
            pat = re.compile(re.escape(key))
        if pat.search(q):
            found.append(int(pid))
            q = pat.sub(" ", q)
    rest = " ".join(q.split())
    return found, rest


# ---- people from faces (PhotoDB) ---------------------------------------------------------------------------
def assign_new(db, threshold: float = JOIN, voters: int = VOTERS) -> dict:
    """Give every face without a person one: it joins the person its nearest faces vote for, or starts a new
    person (faces of one photo never join each other's person: two faces in a photo are two people). Faces are
    taken best quality first, so a person starts from a good face. Returns {"joined", "new_people"}."""
    ids, owners, _, known = db.face_vectors(with_person=True)
    new_ids, _, _, new_vecs = db.face_vectors(with_person=False)
    if not len(new_ids):
        return {"joined": 0, "new_people": 0}
    nots = db.face_nots()
    image_of = {int(f["id"]): img for img, fs in db.faces_of(db.face_image_ids(new_ids)).items() for f in fs}
    peers = _people_by_image(db, image_of.values())
    m = len(known)                                  # faces with a person so far: known[:m], owners[:m]
    d = new_vecs.shape[1]
    known = np.concatenate([known.reshape(m, d), np.zeros((len(new_ids), d), np.float32)])       # (m + new, 128)
    owners = np.concatenate([owners, np.full(len(new_ids), -1, np.int64)])
    joined = started = 0
    moves = []
    for fid, vec in zip(new_ids, new_vecs):
        fid = int(fid)
        img = image_of.get(fid)
        barred = set(nots.get(fid, ())) | peers.get(img, set())
        pid = vote(vec, known[:m], owners[:m], threshold, voters, barred)
        if pid is None:
            pid = db.new_person()
            started += 1
        else:
            joined += 1
        moves.append((fid, pid, None))
        known[m], owners[m] = vec, pid
        m += 1
        peers.setdefault(img, set()).add(pid)
    db.set_face_people(moves)
    return {"joined": joined, "new_people": started}


def _people_by_image(db, image_ids) -> dict[int, set[int]]:
    """image id -> the people already in it."""
    out: dict[int, set[int]] = {}
    for img, faces in db.faces_of(sorted(set(image_ids))).items():
        out[img] = {int(f["person_id"]) for f in faces if f["person_id"] is not None}
    return out


def recluster(db, threshold: float = JOIN) -> dict:
    """Group every face not placed by hand again, from scratch (chinese whispers at ``threshold``), keeping what a
    person did (module doc). A group close to a person with faces placed by hand joins that person (its hand
    faces vote, as in ``assign_new``); any other keeps the id of the person most of its faces came from, else
    becomes a new person. Returns {"faces", "people", "joined_named"}."""
    ids, owners, hand, vecs = db.face_vectors()
    if not len(ids):
        return {"faces": 0, "people": 0, "joined_named": 0}
    nots = db.face_nots()
    free = ~hand
    labels = cluster_labels(vecs[free], threshold)
    fixed_vecs, fixed_owner = vecs[hand], owners[hand]
    moves, used, joined_named = [], set(), 0
    free_ids, free_owner, free_vecs = ids[free], owners[free], vecs[free]
    for lab in np.unique(labels):
        members = np.flatnonzero(labels == lab)
        barred = set().union(*(nots.get(int(free_ids[m]), set()) for m in members))
        # the hand-placed person the group's faces vote for, by majority of the group
        ballots = collections.Counter()
        for m in members:
            p = vote(free_vecs[m], fixed_vecs, fixed_owner, threshold, VOTERS, barred)
            if p is not None:
                ballots[p] += 1
        if ballots and ballots.most_common(1)[0][1] * 2 > len(members):
            pid = ballots.most_common(1)[0][0]
            joined_named += 1
        else:
            before = collections.Counter(int(free_owner[m]) for m in members if free_owner[m] >= 0)
            pid = next((p for p, _ in before.most_common() if p not in used and p not in barred
                        and p not in set(fixed_owner.tolist())), None)
            if pid is None:
                pid = db.new_person()
        used.add(pid)
        moves += [(int(free_ids[m]), int(pid), None) for m in members]
    db.set_face_people(moves)
    return {"faces": int(len(ids)), "people": len({p for _, p, _ in moves} | set(fixed_owner.tolist())),
            "joined_named": joined_named}


def people(db) -> list[dict]:
    """[{"id", "name", "faces", "photos", "cover", "paths"}] of every person with faces, most faces first."""
    out = []
    for r in db.people_rows():
        out.append({"id": int(r["id"]), "name": r["name"], "faces": int(r["faces"]), "photos": int(r["photos"]),
                    "cover": r["cover"], "paths": db.person_paths(r["id"])})
    return out


class PersonNotFoundError(KeyError):
    def __str__(self):
        return f"no person with id {self.args[0]}"


def _need(db, person_id: int) -> dict:
    row = db.person(int(person_id))
    if row is None:
        raise PersonNotFoundError(int(person_id))
    return row


def rename(db, person_id: int, name: str | None) -> dict:
    """Name a person (Chinese, English, any script; empty or None removes the name). Its faces count as placed
    by hand from then on. Raises PersonNotFoundError, ValueError for a name over 80 characters."""
    _need(db, person_id)
    name = " ".join(str(name or "").split()) or None
    if name is not None and len(name) > 80:
        raise ValueError("a name has at most 80 characters")
    db.set_person_name(int(person_id), name, name_key(name) if name else None)
    return db.person(int(person_id))


def merge(db, keep: int, other: int) -> dict:
    """Put every face of ``other`` into ``keep`` (one person after all); ``keep`` keeps its name, or takes
    ``other``'s when it has none. Raises PersonNotFoundError, ValueError when both are the same."""
    a, b = _need(db, keep), _need(db, other)
    if int(keep) == int(other):
        raise ValueError("cannot merge a person with itself")
    if not a["name"] and b["name"]:
        db.set_person_name(int(keep), b["name"], b["name_key"])
    db.merge_people(int(keep), int(other))
    return db.person(int(keep))


def move_face(db, face_id: int, to: int | None = None) -> int:
    """Take a face out of its person (it never joins that person again) and put it into ``to`` (None: a person
    of its own); returns the person it is in now."""
    row = db.face_row(int(face_id))
    if row is None:
        raise KeyError(f"no face with id {face_id}")
    if to is not None:
        _need(db, to)
    with db.transaction():
        if row["person_id"] is not None and row["person_id"] != to:
            db.add_face_not(int(face_id), int(row["person_id"]))
        pid = int(to) if to is not None else db.new_person()
        db.set_face_people([(int(face_id), pid, True)])
    return pid


def name_from_photos(db, names: dict[str, str]) -> int:
    """Name the people in known photos ({path: name}, e.g. the bundled demo photos' assets/demo/people.json):
    the person of the largest face in each photo gets the name unless it has one. Returns how many were named."""
    n = 0
    for path, name in names.items():
        row = db.image_by_path(str(path))
        if row is None:
            continue
        faces = sorted(db.faces_of([row["id"]]).get(int(row["id"]), []), key=lambda f: -(f["side"] or 0))
        if faces and faces[0]["person_id"] is not None and not faces[0]["name"]:
            rename(db, faces[0]["person_id"], name)
            n += 1
    return n
