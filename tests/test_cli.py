"""The command line as users meet it: version, listing, settings, start-up cost, user errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, json_of
from tfrig import __version__

HEAVY = ("google.cloud.compute_v1", "docker", "fabric", "paramiko", "rich")


def test_version(tfrig):
    result = tfrig("--version")
    assert result.code == 0
    assert result.out.strip() == f"tfrig {__version__}"


def test_loading_the_collection_imports_no_sdk():
    code = f"import sys, tasks; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("command", [["inv", "--list"], ["tfrig", "--list"]], ids=["inv", "tfrig"])
def test_both_commands_list_every_namespace(command, tmp_path):
    binary = str(Path(sys.executable).with_name(command[0]))
    cwd = ROOT if command[0] == "inv" else tmp_path
    out = subprocess.run([binary, *command[1:]], cwd=cwd, capture_output=True, text=True, check=True).stdout
    for namespace in ("docker.", "gcp.", "driver.", "gpu.", "conda.", "tf."):
        assert namespace in out


def test_tfrig_reads_invoke_yaml_in_the_current_folder(tfrig, tmp_path):
    (tmp_path / "invoke.yaml").write_text("docker:\n  mirror: mirror.example:5000\n")
    result = tfrig("--dry", "docker.pull", "--version", "2.21.0", cwd=tmp_path)
    assert result.code == 0, result.text
    assert result.out.strip() == (
        "would pull mirror.example:5000/tensorflow/tensorflow:2.21.0 and tag it tensorflow/tensorflow:2.21.0"
    )


def test_env_settings_reach_the_tasks(tfrig, tmp_path):
    result = tfrig("--dry", "docker.pull", "--gpu", cwd=tmp_path, env={"INVOKE_DOCKER_VERSION": "2.15"})
    assert result.out.strip() == "would pull tensorflow/tensorflow:2.15.0-gpu"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["docker.pull", "--version", "9.9.0"], "TensorFlow 9.9.0 is not a release tfrig knows (newest: 2.21.0)"),
        (["docker.pull", "--version", "2.21.0-py3"], "--version takes a release number such as 2.21.0"),
        (
            ["docker.pull", "--image", "tensorflow/tensorflow:latest-gpu-py3"],
            "'-py3' tags were only needed up to 1.15.0 and 2.1.0; newer images have Python 3 in the plain tag: "
            "use tensorflow/tensorflow:latest-gpu",
        ),
        (["docker.pull", "--image", "tensorflow/tensorflow-gpu:1.13.1"], "use tensorflow/tensorflow:1.13.1-gpu"),
        (["docker.pull", "--mirror", "http://x/"], "--mirror 'http://x/' should be HOST or HOST:PORT"),
        (["docker.install", "--method", "snap"], "--method snap: choose repo, distro or script."),
        (["docker.install", "--method", "script"], "Docker publishes no hash for it, so pass --sha256"),
        (["docker.install", "-H", "bad host"], "'bad host' is not a host"),
        (["gpu.check", "--input", "/nonexistent"], "--input /nonexistent: No such file or directory."),
    ],
    ids=[
        "unknown-version",
        "variant-in-version",
        "py3-tag",
        "tensorflow-gpu-image",
        "mirror",
        "method",
        "script-hash",
        "host",
        "input",
    ],
)
def test_user_errors_are_one_line_without_traceback(tfrig, argv, message):
    result = tfrig(*argv)
    assert result.code == 1
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert "Traceback" not in result.text


def test_py3_tags_of_old_releases_are_still_right(tfrig):
    result = tfrig("--dry", "docker.pull", "--image", "tensorflow/tensorflow:1.15.0-gpu-py3")
    assert result.code == 0
    assert "would pull tensorflow/tensorflow:1.15.0-gpu-py3" in result.out


def test_json_output_is_only_json(tfrig):
    result = tfrig("tf.versions", "--json")
    assert json_of(result.out)[0]["tensorflow"] == "2.21.0"
