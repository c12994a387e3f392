"""Benchmarks find the tools of the interpreter they run under, without an activated venv (issue 33)."""

import io
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "nnunet"))
from measure import CommandFailed, run_measured, tool  # noqa: E402


def test_nnunet_tools_are_found_beside_the_interpreter_with_an_empty_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", "")
    found = tool("nnUNetv2_extract_fingerprint")
    assert Path(found).parent == Path(sys.executable).parent and os.access(found, os.X_OK)
    # a bare name runs the interpreter's own tool; its --help exits 0
    with (tmp_path / "commands.log").open("w") as log:
        assert run_measured(["nnUNetv2_extract_fingerprint", "--help"], None, log)["seconds"] > 0
    written = (tmp_path / "commands.log").read_text()
    assert f"$ {found} --help" in written and "usage:" in written


def test_a_missing_tool_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(CommandFailed, match="no_such_tool_xyz is neither beside .* nor on PATH: install"):
        run_measured(["no_such_tool_xyz"], None, io.StringIO())
