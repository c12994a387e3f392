"""dciodvfy (David Clunie's DICOM validator, Debian/Ubuntu package ``dicom3tools``) on the objects tests write.

``assert_valid_dicom(path)`` requires zero "Error" lines and returns the warnings. Without dciodvfy it FAILS
(does not skip): CI installs it (.ci/run), and a conformance check that silently does not run is no check.
"""

import shutil
import subprocess
from pathlib import Path


def dciodvfy_report(path) -> tuple[list[str], list[str]]:
    """(errors, warnings) dciodvfy prints for the file."""
    program = shutil.which("dciodvfy")
    assert program, ("dciodvfy is not installed: `apt-get install -y dicom3tools` (Debian/Ubuntu); "
                     "the DICOM conformance tests need it and do not skip")
    done = subprocess.run([program, str(Path(path))], capture_output=True, text=True, timeout=300)
    lines = (done.stdout + done.stderr).splitlines()
    return [l for l in lines if l.startswith("Error")], [l for l in lines if l.startswith("Warning")]


def assert_valid_dicom(path) -> list[str]:
    errors, warnings = dciodvfy_report(path)
    assert not errors, f"dciodvfy reports errors in {Path(path).name}:\n" + "\n".join(errors)
    return warnings
