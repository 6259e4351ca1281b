"""The layers the code may not cross (.importlinter): benchmarks on top, then the page (ui), the photo index, the
runtime (dcclip_core); training builds on the runtime alone; the runtime imports no other part of the project."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    pytest.importorskip("importlinter", reason="import-linter not installed (it is in requirements.txt)")
    out = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                          "sys.exit(lint_imports_command())"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout, out.stdout[-2000:]
