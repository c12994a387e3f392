"""Outputs appear whole and verified or not at all; truncated inputs are refused (issue 14: 1, 2, 4, 16a).

ITK's NIfTI writer does not raise when the disk fills up, and its reader fills a cut ``.nii.gz`` with zeros;
these tests reproduce both with real files and a file-size limit (what a full disk looks like to a writer).
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import SimpleITK as sitk

from diffumamba import files, imageio
from diffumamba.cli import main


def _real_nifti(shared_data, tmp_path):
    """A real MR volume from the shared data, re-written here so the test may cut it."""
    image = sitk.ReadImage(str(shared_data / "brain_tumor_progression" / "01" / "Pre_Scan_T1.nii.gz"))
    path = tmp_path / "scan.nii.gz"
    sitk.WriteImage(image, str(path), useCompression=True)
    return image, path


def _cut(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


def _silently_truncating_writer(monkeypatch):
    """sitk.WriteImage as ITK's NIfTI writer behaves on a full disk: half the file, no exception."""
    real = sitk.WriteImage

    def write(image, path, *args, **kwargs):
        real(image, path, *args, **kwargs)
        _cut(__import__("pathlib").Path(path))

    monkeypatch.setattr(sitk, "WriteImage", write)


def test_truncated_nifti_is_refused_when_read(shared_data, tmp_path, capsys):
    image, path = _real_nifti(shared_data, tmp_path)
    _cut(path)
    with pytest.raises(ValueError, match=r"scan.nii.gz is truncated or corrupt \(expected \d+ bytes of voxel data, "
                                         r"found \d+\): re-export or re-copy it"):
        imageio.read_scalar_image(path)
    label = sitk.GetImageFromArray((sitk.GetArrayFromImage(image) > 300).astype(np.uint8))
    label.CopyInformation(image)
    for folder in ("pred", "ref"):
        (tmp_path / folder).mkdir()
        sitk.WriteImage(label, str(tmp_path / folder / "case.nii.gz"))
    _cut(tmp_path / "pred" / "case.nii.gz")
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert "case.nii.gz is truncated or corrupt" in err and "Traceback" not in err


def test_silently_truncated_image_write_is_refused(tmp_path, monkeypatch):
    _silently_truncating_writer(monkeypatch)
    target = tmp_path / "label.nii.gz"
    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 3, (20, 40, 40)).astype(np.uint8))
    with pytest.raises(OSError, match=f"could not write {target}: the file is truncated"):
        imageio.write_image_atomic(image, target)
    assert list(tmp_path.iterdir()) == []                      # neither the file nor its partial


def test_full_disk_is_named(tmp_path, monkeypatch):
    _silently_truncating_writer(monkeypatch)
    monkeypatch.setattr(files, "_free_bytes", lambda folder: 0)
    target = tmp_path / "label.nii.gz"
    with pytest.raises(files.OutputError, match=f"no space left on \\S+ while writing {target}: free some space"):
        imageio.write_image_atomic(sitk.GetImageFromArray(np.ones((8, 30, 30), np.float32)), target)
    assert list(tmp_path.iterdir()) == []


def test_dataset_writer_refuses_a_truncated_case(tmp_path, monkeypatch):
    from diffumamba.convert.writer import DatasetWriter

    writer = DatasetWriter(tmp_path / "ds", ["CT"], ["GTV"])
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(10, 30, 30)).astype(np.float32))
    label = sitk.GetImageFromArray(np.zeros((10, 30, 30), np.uint8))
    _silently_truncating_writer(monkeypatch)
    with pytest.raises(files.OutputError, match="could not write .*case1_0000.nii.gz: the file is truncated"):
        writer.add("case1", [image], label)
    assert not any((tmp_path / "ds" / "imagesTr").iterdir()) and not any((tmp_path / "ds" / "labelsTr").iterdir())


def test_file_size_limit_fails_byte_writes_naming_the_file(tmp_path):
    script = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))     # Python ignores SIGXFSZ: writes get EFBIG
        from diffumamba.files import atomic_write_bytes
        try:
            atomic_write_bytes({str(tmp_path / 'big.bin')!r}, bytes(5000))
        except OSError as err:
            print(err)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert f"could not write {tmp_path / 'big.bin'}: File too large" in done.stdout, done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []


def test_partial_names_are_unique_hidden_and_skipped(tmp_path):
    from diffumamba.evaluation.images import case_id

    first, second = imageio.partial_path(tmp_path / "c1.nii.gz"), imageio.partial_path(tmp_path / "c1.nii.gz")
    assert first != second and first.name.startswith(".") and first.name.endswith(".nii.gz")
    assert files.is_partial(first) and not files.is_partial(tmp_path / "c1.nii.gz")
    assert case_id(first) is None and case_id(tmp_path / "c1.nii.gz") == "c1"


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_dead_runs_lock_is_taken_over_and_its_partials_removed(tmp_path):
    dead = _dead_pid()
    (tmp_path / files.LOCK_NAME).write_text(f"{dead}\n")
    orphan = tmp_path / f".c1.partial-{dead}-0123abcd.nii.gz"
    mine = files.partial_path(tmp_path / "c2.nii.gz", ".nii.gz")
    legacy = tmp_path / ".c3.partial.nii.gz"
    for path in (orphan, mine, legacy):
        path.write_bytes(b"half")
    with files.output_lock(tmp_path) as lock:
        assert lock.read_text().strip() == str(os.getpid())
        assert not orphan.exists() and not legacy.exists() and mine.exists()
        with pytest.raises(files.OutputError, match=f"another run is writing {tmp_path} \\(pid {os.getpid()}\\); "
                                                    "wait for it or choose another --out"):
            with files.output_lock(tmp_path):
                pass
    assert not lock.exists()
