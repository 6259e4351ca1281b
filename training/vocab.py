"""Prune the teacher's 250k-piece XLM-R vocabulary to what Chinese + English need.

The student keeps the teacher's Unigram pieces and scores (so segmentation stays the teacher's wherever a
piece survives) restricted to: the special tokens, every single character seen in the corpus (so any word in
those scripts can still be spelled), and the most frequent pieces of the corpus. Student id i is teacher id
``kept[i]``; ``init_text_student_from_teacher`` copies embedding rows in that order.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from dcclip_core.tokenizer import BOS, EOS, PAD, UNK


def count_pieces(teacher, texts: list[str], batch: int = 4096) -> Counter:
    """Teacher piece frequencies over the corpus (no "query:" prefix: the student never sees it)."""
    from dcclip_core.tokenizer import script_converter
    conv = script_converter("t2s")
    counts: Counter = Counter()
    for s in range(0, len(texts), batch):
        chunk = [conv.convert(t) for t in texts[s:s + batch]]
        for enc in teacher.tokenizer.encode_batch(chunk, add_special_tokens=False):
            counts.update(enc.ids)
    return counts


def select_pieces(pieces: list[str], counts: Counter, max_vocab: int, specials: list[int],
                  min_char_count: int = 1) -> np.ndarray:
    """Teacher ids to keep, specials first, then characters, then frequent pieces (descending count)."""
    kept: list[int] = list(specials)
    seen = set(kept)
    chars = [i for i, c in counts.most_common() if len(pieces[i].lstrip("\u2581")) == 1 and c >= min_char_count]
    meta = [i for i, p in enumerate(pieces) if p == "\u2581"]
    for i in meta + chars:
        if i not in seen and len(kept) < max_vocab:
            kept.append(i)
            seen.add(i)
    for i, _ in counts.most_common():
        if len(kept) >= max_vocab:
            break
        if i not in seen:
            kept.append(i)
            seen.add(i)
    return np.array(kept, np.int64)


def build_pruned_tokenizer(teacher, texts: list[str], max_vocab: int, out_path: str | Path) -> np.ndarray:
    """Write a self-contained HF tokenizer.json for the student; returns kept teacher ids [V]."""
    from tokenizers.processors import TemplateProcessing

    from training.teachers.e5 import teacher_hf_tokenizer

    f = teacher.file
    sp = f.special
    specials = [sp["bos"], sp["pad"], sp["eos"], sp["unk"]]          # -> student ids 0, 1, 2, 3
    counts = count_pieces(teacher, texts)
    kept = select_pieces(f.pieces, counts, max_vocab, specials)
    assert [BOS, PAD, EOS, UNK] == [0, 1, 2, 3]
    pieces = [f.pieces[i] for i in kept]
    scores = f.scores[kept]
    tok = teacher_hf_tokenizer(f, pieces, scores)
    tok.post_processor = TemplateProcessing(single=f"{pieces[BOS]} $A {pieces[EOS]}",
                                            special_tokens=[(pieces[BOS], BOS), (pieces[EOS], EOS)])
    tok.add_special_tokens([pieces[BOS], pieces[PAD], pieces[EOS], pieces[UNK]])
    out_path = Path(out_path)
    tok.save(str(out_path))
    covered = sum(counts[i] for i in kept) / max(1, sum(counts.values()))
    (out_path.with_suffix(".stats.json")).write_text(json.dumps({
        "teacher_pieces": len(f.pieces), "kept": int(len(kept)), "corpus_pieces_seen": len(counts),
        "token_coverage": covered}, indent=2))
    return kept
