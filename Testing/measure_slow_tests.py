"""Writes Testing/slow_tests.txt: the tests that took 5 s or more in a full run (pytest's own durations) and their
seconds, which conftest marks ``slow`` so that ``pytest Testing -m "not slow"`` gives a fast subset, and by which it
starts the longest files first.

    .venv/bin/python Testing/measure_slow_tests.py   # runs the whole suite once, in one process (about 30 minutes)
"""

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
from conftest import THRESHOLD_S  # noqa: E402


def main() -> int:
    run = subprocess.run([sys.executable, "-m", "pytest", str(HERE), "-q", "--durations=0", "--durations-min=1",
                          "-p", "no:cacheprovider"], cwd=HERE.parent, capture_output=True, text=True)
    seconds: dict[str, float] = {}      # setup + call + teardown, all parametrisations of a test together
    for line in run.stdout.splitlines():
        match = re.match(r"^\s*([\d.]+)s (call|setup|teardown)\s+(\S+)", line)
        if match:
            name = match.group(3).split("[")[0]
            seconds[name] = seconds.get(name, 0.0) + float(match.group(1))
    slow = {name for name, total in seconds.items() if total >= THRESHOLD_S}
    if run.returncode != 0:
        print(run.stdout[-3000:], file=sys.stderr)
        return run.returncode
    (HERE / "slow_tests.txt").write_text("".join(f"{name} {seconds[name]:.0f}\n" for name in sorted(slow)))
    print(f"{len(slow)} slow tests written to {HERE / 'slow_tests.txt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
