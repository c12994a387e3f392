"""The Slicer module's runner, outside Slicer: progress lines parsed, errors carried to the user, and Cancel
killing the whole process tree (the child and what it started)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "DiffUMambaSeg"))

from DiffUMambaSegLib.runner import CommandRunner, parse_progress  # noqa: E402


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_progress_lines_are_told_from_log_lines():
    assert parse_progress('{"stage": "predict", "fraction": 0.5, "message": "ct", "time": 1.0}').fraction == 0.5
    assert parse_progress('{"stage": "x", "fraction": 7}').fraction == 1.0           # clipped
    for line in ("plain text", "{not json", '{"stage": "x"}', '{"stage": "x", "fraction": "a"}', "[1, 2]"):
        assert parse_progress(line) is None


def test_a_real_predict_run_reports_monotone_progress_to_the_end(tmp_path):
    """The real command line (a registration-only propagation of tiny images) through the runner."""
    import numpy as np
    import SimpleITK as sitk

    grid = np.indices((12, 24, 24))
    image = (((grid - 10) ** 2).sum(0) < 40).astype(np.float32) * 100
    mask = (image > 0).astype(np.uint8)
    for name, array in (("prior.nii.gz", image), ("gtv.nii.gz", mask), ("current.nii.gz", np.roll(image, 1, 2))):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / name))
    seen, log = [], []
    runner = CommandRunner([sys.executable, "-m", "diffumamba", "propagate", "--prior", str(tmp_path / "prior.nii.gz"),
                            "--prior-gtv", str(tmp_path / "gtv.nii.gz"), "--current", str(tmp_path / "current.nii.gz"),
                            "--out", str(tmp_path / "out"), "--rigid-only", "--progress", "json"],
                           on_progress=seen.append, on_log=log.append)
    runner.start()
    result = runner.wait(timeout=120)
    assert result.ok, log
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and {"rigid", "done"} <= {p.stage for p in seen}
    assert any("prior GTV" in line for line in log)                  # the summary reaches the log
    assert (tmp_path / "out" / "current.nii.gz").is_file()


def test_command_errors_reach_the_user(tmp_path):
    runner = CommandRunner([sys.executable, "-m", "diffumamba", "predict", str(tmp_path / "missing.nii.gz"),
                            "--model", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "out")])
    runner.start()
    result = runner.wait(timeout=60)
    assert result.returncode == 2 and not result.ok and not result.cancelled
    assert "does not exist" in result.error or "no such" in result.error.lower()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie (exited, not reaped by its parent) counts as dead
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX; Windows uses taskkill /T")
def test_cancel_kills_the_child_and_its_children(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time, json, signal\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"          # a child that ignores a polite stop
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(g.pid))\n"
        "for i in range(600):\n"
        "    print(json.dumps({'stage': 'predict', 'fraction': i / 600}), file=sys.stderr, flush=True)\n"
        "    time.sleep(0.1)\n")
    seen = []
    runner = CommandRunner(python(code), on_progress=seen.append)
    runner.start()
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text() and seen) and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    assert alive(runner.process.pid) and alive(grandchild)
    started = time.monotonic()
    runner.cancel(grace_seconds=0.5)
    result = runner.wait(timeout=10)
    assert result.cancelled and not result.ok and time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(runner.process.pid) and not alive(grandchild)


def test_a_runner_runs_once():
    runner = CommandRunner(python("pass"))
    with pytest.raises(RuntimeError, match="start"):
        runner.poll()
    runner.start()
    assert runner.wait(timeout=30).ok
    with pytest.raises(RuntimeError, match="started already"):
        runner.start()


@pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX; Windows uses taskkill /T")
def test_cancel_returns_at_once_and_the_kill_follows_in_the_background(tmp_path):
    """The review's K8: Cancel ran the grace (3 s) on Slicer's GUI thread. Now ``cancel`` returns at once; a child
    that ignores SIGTERM is killed after the grace all the same, and ``poll`` reports the run as cancelled."""
    ready = tmp_path / "ready"
    code = ("import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            f"open({str(ready)!r}, 'w').write('1')\n"
            "time.sleep(600)\n")
    runner = CommandRunner(python(code))
    runner.start()
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    runner.cancel(grace_seconds=2.0)
    returned = time.monotonic() - started
    assert returned < 0.5, f"cancel blocked the caller for {returned:.2f} s"
    assert runner.poll() is None                       # still in its grace: ignoring SIGTERM
    result = runner.wait(timeout=15)
    took = time.monotonic() - started
    assert result.cancelled and not result.ok and 1.5 < took < 10, took
    assert not alive(runner.process.pid)


def test_a_run_cancelled_after_its_process_ended_is_not_applied():
    """Cancel (or a scene close) between the child's exit and the next poll: the user never saw a result, so the
    run counts as cancelled and nothing lands in the (new) scene."""
    runner = CommandRunner(python("pass"))
    runner.start()
    runner.process.wait(30)
    runner.cancel()
    result = runner.wait(timeout=30)
    assert result.returncode == 0 and result.cancelled and not result.ok


class _HungWindowsProcess:
    """A child that never exits (stuck in a driver call): only a bounded wait returns."""
    pid = 4242

    def __init__(self):
        self.waits = []

    def poll(self):
        return None

    def wait(self, timeout=None):
        self.waits.append(timeout)
        if timeout is None:
            raise AssertionError("an unbounded wait would hang Slicer here")
        raise subprocess.TimeoutExpired("child", timeout)


def test_windows_stop_is_bounded_even_when_taskkill_and_the_child_hang():
    """The review's K8: on Windows ``process.wait()`` after ``taskkill`` had no timeout (runner.py:175-177)."""
    from DiffUMambaSegLib.runner import stop_process_tree

    calls = []

    def hung_taskkill(command, **options):
        calls.append((command, options))
        raise subprocess.TimeoutExpired(command, options.get("timeout"))

    process = _HungWindowsProcess()
    started = time.monotonic()
    stop_process_tree(process, 0.2, platform="win32", run=hung_taskkill)
    assert time.monotonic() - started < 5
    assert calls[0][0] == ["taskkill", "/F", "/T", "/PID", "4242"] and calls[0][1]["timeout"] is not None
    assert process.waits and None not in process.waits
