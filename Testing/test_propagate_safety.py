"""``diffumamba propagate`` against issue 28's re-test: a scan propagated onto itself is the identity, not a quality
refusal (D16); the --out check comes before registering (D16); outputs are written all or none when the disk fills
(D18); an existing file in --out is kept unless --overwrite (as predict, D17)."""

import json
import subprocess
import sys

import numpy as np
import SimpleITK as sitk

from diffumamba.cli import main

from conftest import write_phantoms


def _phantoms(tmp_path):
    root = write_phantoms(tmp_path / "phantoms")
    return root / "imagesTr" / "c0_0000.nii.gz", root / "labelsTr" / "c0.nii.gz", root / "imagesTr" / "c1_0000.nii.gz"


def _propagate(prior, gtv, current, out, *extra):
    return ["propagate", "--prior", str(prior), "--prior-gtv", str(gtv), "--current", str(current), "--out", str(out),
            "--progress", "none", *extra]


def test_a_scan_propagated_onto_itself_gives_its_gtv(tmp_path, capsys):
    """D16: the test phantom onto itself was refused ("rigid metric -0.448"): its noise gives mutual information
    little to hold on to. One scan is its own follow-up by the identity."""
    image, gtv, _ = _phantoms(tmp_path)
    assert main(_propagate(image, gtv, image, tmp_path / "out")) == 0
    assert "the scans are identical: nothing to register" in capsys.readouterr().out
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "c0.nii.gz"))),
                          sitk.GetArrayFromImage(sitk.ReadImage(str(gtv))))
    report = json.loads((tmp_path / "out" / "c0_propagation.json").read_text())
    assert report["same_scan"] is True and report["rigid_metric"] is None and report["jacobian_min"] == 1.0


def test_an_unwritable_out_is_named_before_registering(tmp_path, capsys):
    """D16: a poor registration (another phantom) used to be refused first, hiding that --out cannot be written;
    --out is now checked before any work."""
    image, gtv, other = _phantoms(tmp_path)
    (tmp_path / "a_file").write_text("")
    assert main(_propagate(image, gtv, other, tmp_path / "a_file" / "out")) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and f"could not write {tmp_path / 'a_file' / 'out'}" in error[0], error
    assert "registration" not in error[0]


def test_a_full_disk_leaves_none_of_the_outputs(tmp_path):
    """D18: with --save-registered the GTV and the registered GTV were written, then the registered image failed,
    leaving the GTV without its report. Now every file of the run is removed and the error says so (a file-size
    limit is what a full disk looks like to a writer; Python ignores SIGXFSZ, so the write fails)."""
    image, gtv, _ = _phantoms(tmp_path)
    out = tmp_path / "out"
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000)); "
            "from diffumamba.cli import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, *_propagate(image, gtv, image, out, "--save-registered")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    error = done.stderr.strip().splitlines()
    assert len(error) == 1 and "c0_registered_prior.nii.gz" in error[0] and "were removed" in error[0], error
    assert not out.exists()                                   # nothing of the run, not even the folder


def test_an_existing_output_is_kept_unless_overwrite(tmp_path, capsys):
    image, gtv, _ = _phantoms(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "c0.nii.gz").write_bytes(b"an edited GTV")
    assert main(_propagate(image, gtv, image, out)) == 2
    assert "already holds c0.nii.gz, which this run would replace" in capsys.readouterr().err
    assert (out / "c0.nii.gz").read_bytes() == b"an edited GTV" and not (out / "c0_propagation.json").exists()
    assert main(_propagate(image, gtv, image, out, "--overwrite")) == 0
    assert sitk.ReadImage(str(out / "c0.nii.gz")).GetSize() == sitk.ReadImage(str(image)).GetSize()
    assert main(_propagate(image, gtv, gtv.parent / ".." / "imagesTr" / "c0_0000.nii.gz", gtv.parent,
                           "--overwrite")) == 2                # labelsTr/c0.nii.gz would be the GTV it reads
    assert "would replace --prior-gtv" in capsys.readouterr().err
