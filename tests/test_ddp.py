"""Data-parallel training on CPU (gloo): 2 processes x batch B make the same update as 1 process x batch 2B, for
stage 1 (feature distillation) and stage 2 (InfoNCE over all-gathered embeddings), through torchrun and the CLI."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import make_tiny_hf, photo_folder, tiny_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _rel_diff(a: dict, b: dict) -> float:
    """||a - b|| / ||a|| over all float tensors (Adam turns float-summation noise on ~zero gradients into
    lr-sized steps on a few weights, so the whole-model relative difference is the meaningful measure)."""
    num = sum(float((a[k].float() - b[k].float()).pow(2).sum()) for k in a if a[k].is_floating_point())
    den = sum(float(a[k].float().pow(2).sum()) for k in a if a[k].is_floating_point())
    return (num / den) ** 0.5


DRIVER = """
import sys
from training.__main__ import main
distill, align = sys.argv[1].split(" "), sys.argv[2].split(" ")
assert main(distill) == 0 and main(align) == 0
"""


def test_ddp_torchrun_2_processes_match_1_process_with_double_batch(tmp_path):
    """`torchrun --nproc_per_node=2` (gloo, CPU) of stage 1 and stage 2 vs one process with the doubled batch."""
    from safetensors.torch import load_file

    from training.__main__ import main
    clip = make_tiny_hf("clip", tmp_path)
    photos = photo_folder(tmp_path / "photos")
    caps = {"chelsea": ("a cat", "一只猫"), "coffee": ("coffee", "咖啡"), "rocket": ("a rocket", "火箭"),
            "astronaut": ("an astronaut", "宇航员")}
    with open(tmp_path / "pairs.jsonl", "w", encoding="utf-8") as f:
        for k, (en, zh) in caps.items():
            f.write(json.dumps({"image": f"photos/{k}.jpg", "en": en, "zh": zh}, ensure_ascii=False) + "\n")
    with open(tmp_path / "protos.jsonl", "w", encoding="utf-8") as f:
        for c, t in enumerate(["cat", "猫", "dog", "狗", "coffee", "咖啡", "rocket", "火箭"]):
            f.write(json.dumps({"text": t, "classes": [c // 2]}, ensure_ascii=False) + "\n")
    tok = tiny_tokenizer(tmp_path / "tok.json")
    distill = (f"distill --teacher hf:{clip} --teacher-image-size 32 --student arch:tiny-test --student-init random "
               f"--layers 1:1,2:3 --images {photos} --views 3 --max-steps 3 --lr 1e-3 --precision fp32 --threads 1 "
               f"--cache {tmp_path / 'cache'} --set warmup_steps=1 --set log_every=1 --json")
    align = (f"align --student arch:tiny-test --set student_init=random --set tokenizer={tok} "
             f"--pairs {tmp_path / 'pairs.jsonl'} --prototypes {tmp_path / 'protos.jsonl'} --steps 3 "
             f"--train-image classifier --lr 1e-3 --head-lr 1e-3 --precision fp32 --threads 1 --set warmup_steps=1 "
             f"--set log_every=1 --json")
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(f"{distill} --batch-size 8 --out {one / 'distill'}".split(" ")) == 0      # 1 process, batch 8
    assert main(f"{align} --batch-size 4 --out {one / 'align'}".split(" ")) == 0          # 1 process, batch 4
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(tmp_path / "driver.py"), f"{distill} --batch-size 4 --out {two / 'distill'}",
           f"{align} --batch-size 2 --out {two / 'align'}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)               # own process group: a hang kills all ranks
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    reports = [json.loads(ln) for ln in stdout.splitlines() if ln.startswith("{")]
    assert [x["world"] for x in reports] == [2, 2]                              # rank 0 reports once per stage
    assert "train" in reports[0]["teacher_cache_s"]                               # cached teacher features (no timing
                                                                                 # asserts in tests: speed is benchmarked)
    for stage, weights in (("distill", "student_image.safetensors"), ("align", "last.safetensors")):
        la = [json.loads(x) for x in (one / stage / "metrics.jsonl").read_text().splitlines()]
        lb = [json.loads(x) for x in (two / stage / "metrics.jsonl").read_text().splitlines()]
        assert [x["step"] for x in la] == [x["step"] for x in lb] == [1, 2, 3]
        assert [x["loss"] for x in la] == pytest.approx([x["loss"] for x in lb], rel=1e-5), stage
        a, b = load_file(str(one / stage / weights)), load_file(str(two / stage / weights))
        assert set(a) == set(b) and _rel_diff(a, b) < 1e-4, stage


def test_ddp_helpers_single_process():
    from training import ddp
    d = ddp.setup()
    assert not d.enabled and d.main
    order = ddp.global_order(10, seed=1, epochs=2)
    assert sorted(order[:10]) == list(range(10)) and sorted(order[10:]) == list(range(10))
    gb = ddp.batches_of(order, 4, 6)                                            # wraps around the end
    assert len(gb) == 6
    two = [ddp.micro_batches(gb, ddp.Dist(rank=r, world=2), accum=1)[0] for r in (0, 1)]
    assert np.array_equal(np.concatenate(two), gb)
    assert [len(m) for m in ddp.micro_batches(gb, d, accum=3)] == [2, 2, 2]
    assert ddp.resolve_precision("fp32") == "fp32"
    assert ddp.resolve_precision("auto") == ("bf16" if ddp.bf16_supported() else "fp32")
    assert ddp.cosine_lr(0, 10, 2, 1.0) == 0.5 and ddp.cosine_lr(10, 10, 2, 1.0) == pytest.approx(0.0)
