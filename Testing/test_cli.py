"""The ``diffumamba`` command line: outputs, written configs and clear errors."""

import json
import subprocess
import sys

import pytest

from diffumamba.cli import main
from diffumamba.nets import NetworkConfig, default_2d


@pytest.fixture
def small_config(tmp_path):
    path = tmp_path / "net.json"
    path.write_text(default_2d("diffumamba", n_stages=3, base_features=4, max_features=8).to_json())
    return path


def test_network_prints_parameters_and_output_shapes(small_config, capsys):
    assert main(["network", "--config", str(small_config), "--input-size", "17", "24"]) == 0
    out = capsys.readouterr().out
    assert "network: diffumamba (2D, 3 stages" in out
    assert "outputs: (1, 2, 17, 24), (1, 2, 9, 12)" in out
    count = int(out.split("parameters: ")[1].split()[0].replace(",", ""))
    assert count > 0


def test_network_writes_a_config_that_rebuilds(small_config, tmp_path, capsys):
    target = tmp_path / "out.json"
    assert main(["network", "--config", str(small_config), "--network", "resunet", "--num-classes", "3",
                 "--write-config", str(target)]) == 0
    config = NetworkConfig.from_json(target.read_text())
    assert config.network == "resunet" and config.num_classes == 3
    assert [p.name for p in tmp_path.iterdir()] != [] and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("content, message", [
    ("{not json", "not JSON"),
    (json.dumps({"network": "diffumamba"}), "missing keys"),
    (json.dumps([1, 2]), "expected a JSON object"),
])
def test_bad_config_files_fail_clearly(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    target = tmp_path / "out.json"
    assert main(["network", "--config", str(bad), "--write-config", str(target)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not target.exists()


def test_wrong_input_size_and_missing_folder(small_config, tmp_path, capsys):
    assert main(["network", "--config", str(small_config), "--input-size", "8", "8", "8"]) == 2
    assert "needs 2 numbers" in capsys.readouterr().err
    assert main(["network", "--config", str(small_config), "--write-config", str(tmp_path / "no" / "c.json")]) == 2
    assert "output folder does not exist" in capsys.readouterr().err
    assert main(["network", "--config", str(tmp_path / "missing.json")]) == 2


def test_console_entry_point_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "diffumamba", "info"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "selective scan: PyTorch scan" in done.stdout or "CUDA kernel" in done.stdout
