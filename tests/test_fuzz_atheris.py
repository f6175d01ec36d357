"""A bounded run of the coverage-guided SMTP fuzzer (tests/fuzz/fuzz_smtp.py, atheris) in a
subprocess: two thousand inputs from the seed corpus must not crash it."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).parent / "fuzz"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris is not installed (pip install atheris; wheels exist for Linux x86_64)")


def test_atheris_smtp_fuzzer_finds_no_crash_in_a_bounded_run(tmp_path: Path):
    corpus = tmp_path / "corpus"
    shutil.copytree(FUZZ / "corpus", corpus)
    result = subprocess.run(
        [sys.executable, str(FUZZ / "fuzz_smtp.py"), "-runs=2000", "-seed=1",
         f"-dict={FUZZ / 'smtp.dict'}", f"-artifact_prefix={tmp_path}/", str(corpus)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Done 2000 runs" in result.stderr
    assert not list(tmp_path.glob("crash-*"))
