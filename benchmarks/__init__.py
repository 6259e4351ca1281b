"""Benchmarks: measured speed and size of the runtime against what a user would otherwise run.

    python -m benchmarks --help
    python -m benchmarks encoders [--quick] [--out benchmarks/results/encoders.json]

Each suite is a module with ``add_arguments(parser)`` and ``run(args) -> int``, listed in ``SUITES``.
Benchmarks are not unit tests: they are run by hand (or before a release) and their small JSON results
under ``benchmarks/results/`` are committed so numbers in the docs can be traced to a run.
"""
from __future__ import annotations

# suite name -> (module, one-line help)
SUITES: dict[str, tuple[str, str]] = {
    "app": ("benchmarks.app", "Gradio app: search p50/p95 with 1 and 8 gradio_client clients at 10k/100k photos, cold start"),
    "encoders": ("benchmarks.encoders",
                 "image/text encoder speed and size: ours vs a ViT-B/32 CLIP reference (fp32, int8)"),
    "faces": ("benchmarks.faces", "people: face detection recall / false positives per detector setting, ms at 12 MP, "
                                  "descriptor distances, clustering, MIN_SIDE / MIN_SHARPNESS"),
    "fewshot": ("benchmarks.fewshot", "seconds to learn a few-shot prompt (CoOp, Tip-Adapter, ...) for 5 classes x 16 shots"),
    "index": ("benchmarks.index", "photo index: indexing images/s vs the ViT-B/32 pipeline, query latency + recall "
                                  "at 10k-1M vectors, peak RSS"),
    "ocr": ("benchmarks.ocr", "text in photos: reader accuracy (EN / simplified / traditional Chinese / real signs), "
                              "gate and reading sides, MIN_CONF, ms per photo with and without text"),
    "peoplesearch": ("benchmarks.peoplesearch", "people in search: held-out R@5 by people-signal weight (dev / test "
                                                "split), generic people queries' precision@5"),
    "text": ("benchmarks.text", "text encoder: query latency, batch-64 and labelling throughput, batch invariance "
                                "(one run per text now vs one shared run before)"),
    "textsearch": ("benchmarks.textsearch", "text in photos, search side: recall per query type and fusion, false "
                                            "positives of common words, held-out picture queries, text pass cost"),
    "training": ("benchmarks.training", "training samples/s per stage (2 cores) and the teacher-feature cache speed-up"),
}

__all__ = ["SUITES"]
