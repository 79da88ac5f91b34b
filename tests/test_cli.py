"""The command line as users meet it: version, listing, settings, start-up cost, user errors."""

from __future__ import annotations

import os
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


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        ("INVOKE_TFRIG_CONNECT_TIMEOUT", "soon", "tfrig.connect_timeout in INVOKE_TFRIG_CONNECT_TIMEOUT is 'soon'"),
        ("INVOKE_TFRIG_KEEPALIVE", "often", "tfrig.keepalive in INVOKE_TFRIG_KEEPALIVE is 'often'"),
        ("INVOKE_TFRIG_YES", "perhaps", "tfrig.yes in INVOKE_TFRIG_YES is 'perhaps'"),
    ],
)
def test_inv_refuses_a_wrongly_typed_variable_in_one_line(variable, value, line):
    """Invoke casts INVOKE_* itself before any task runs; loading the collection checks them first."""
    inv = str(Path(sys.executable).with_name("inv"))
    done = subprocess.run(
        [inv, "gpu.check", "--input", "/dev/null"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, variable: value},
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().startswith(line), done.stderr


def test_tfrig_reads_invoke_yaml_in_the_current_folder(tfrig, tmp_path):
    (tmp_path / "invoke.yaml").write_text("docker:\n  version: '2.15'\n")
    result = tfrig("--dry", "docker.pull", cwd=tmp_path)
    assert result.code == 0, result.text
    assert result.out.strip() == "would pull tensorflow/tensorflow:2.15.0"
    assert result.err == ""


def test_a_folder_sets_where_code_comes_from_only_once_allowed(tfrig, tmp_path):
    folder_file = tmp_path / "invoke.yaml"
    folder_file.write_text("docker:\n  mirror: mirror.example:5000\n")
    held = tfrig("--dry", "docker.pull", "--version", "2.21.0", cwd=tmp_path)
    assert held.code == 0, held.text
    assert held.out.strip() == "would pull tensorflow/tensorflow:2.21.0"
    assert held.err.strip() == (
        f"tfrig: ignored docker.mirror from {folder_file}: a folder's file sets where credentials, code and "
        "host keys come from only once you allow it; read it, then `tfrig allow`."
    )
    allowed = tfrig("allow", cwd=tmp_path)
    assert allowed.code == 0, allowed.text
    used = tfrig("--dry", "docker.pull", "--version", "2.21.0", cwd=tmp_path)
    assert used.out.strip() == (
        "would pull mirror.example:5000/tensorflow/tensorflow:2.21.0 and tag it tensorflow/tensorflow:2.21.0"
    )
    assert used.err == ""
    # An edit is a new file: allowed again only when the user says so.
    folder_file.write_text("docker:\n  mirror: other.example:5000\n")
    edited = tfrig("--dry", "docker.pull", "--version", "2.21.0", cwd=tmp_path)
    assert edited.out.strip() == "would pull tensorflow/tensorflow:2.21.0"
    assert "ignored docker.mirror" in edited.err
    assert tfrig("allow", "--revoke", cwd=tmp_path).code == 0


@pytest.mark.parametrize(
    "text",
    [
        "gcp:\n  endpoint: http://127.0.0.1:9\n",
        "driver:\n  download_base: http://127.0.0.1:9\n",
        "tf:\n  index_url: http://127.0.0.1:9/simple\n",
        "tfrig:\n  host_keys: accept-new\n",
        "run:\n  shell: /tmp/not-a-shell\n",
        "gateway: nc 127.0.0.1 9\n",
    ],
    ids=["endpoint", "download_base", "index_url", "host_keys", "invoke-run-shell", "fabric-gateway"],
)
def test_each_key_that_sends_credentials_or_takes_code_waits_for_allowing(tfrig, tmp_path, text):
    (tmp_path / "invoke.yaml").write_text(text)
    result = tfrig("--dry", "docker.pull", "--version", "2.21.0", cwd=tmp_path)
    assert result.code == 0, result.text
    assert result.out.strip() == "would pull tensorflow/tensorflow:2.21.0"
    (line,) = result.err.splitlines()
    assert line.startswith("tfrig: ignored ") and "`tfrig allow`" in line


def test_a_folders_invoke_py_is_not_run(state_dir, tmp_path):
    """The installed `tfrig` command (`python -m tfrig` would import the folder's invoke.py as Invoke)."""
    marker = tmp_path / "ran"
    (tmp_path / "invoke.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    binary = str(Path(sys.executable).with_name("tfrig"))
    result = subprocess.run(
        [binary, "--dry", "docker.pull", "--version", "2.21.0"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert "a folder's invoke.py is code" in result.stderr


def test_readme_configuration_example_as_printed(tfrig, tmp_path):
    readme = (ROOT / "README.md").read_text()
    example = readme.split("```yaml\n# invoke.yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "invoke.yaml").write_text(example)
    result = tfrig("--dry", "docker.pull", cwd=tmp_path)
    assert result.code == 0, result.text
    assert "Traceback" not in result.text
    assert result.out.strip() == "would pull tensorflow/tensorflow:2.21.0"  # the mirror waits for `tfrig allow`
    assert "ignored tfrig.ssh_key, tfrig.host_keys, tfrig.known_hosts, docker.mirror" in result.err
    assert tfrig("allow", cwd=tmp_path).code == 0
    allowed = tfrig("--dry", "docker.pull", cwd=tmp_path)
    assert allowed.out.strip().startswith("would pull registry.local:5000/tensorflow/tensorflow:2.21.0"), allowed.text


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("tfrig: null\n", "tfrig in {file} is None, not a mapping"),
        ('gcp: "x"\n', "gcp in {file} is 'x', not a mapping"),
        ("gcp:\n  project: [a]\n", "gcp.project in {file} is ['a']; give text."),
        ("tfrig:\n  known_hosts: 5\n", "tfrig.known_hosts in {file} is 5; give a path."),
        ('tfrig:\n  yes: "perhaps"\n', "tfrig.yes in {file} is 'perhaps'; give true or false"),
        ("gcp:\n  zon: us-east1-b\n", "gcp.zon in {file} is not a setting"),
        ('tfrig:\n  yes: "a\\nb"\n', "tfrig.yes in {file} is 'a\\nb'; give true or false"),
        (
            "tfrig:\n  connect_timeout: " + "9" * 5000 + "x\n",
            "tfrig.connect_timeout in {file} is '" + "9" * 60 + "... (5001 characters)'",
        ),
        ("[1, 2]\n", "{file}: holds list, not settings"),
    ],
    ids=[
        "null-section",
        "text-section",
        "list-value",
        "number-path",
        "bad-boolean",
        "unknown-key",
        "newline",
        "long-value",
        "list-file",
    ],
)
def test_a_bad_setting_in_a_file_is_one_line_naming_key_value_and_file(tfrig, tmp_path, text, line):
    folder_file = tmp_path / "invoke.yaml"
    folder_file.write_text(text)
    result = tfrig("--dry", "docker.pull", cwd=tmp_path)
    assert result.code == 1, result.text
    (only,) = result.err.splitlines()
    assert only.startswith(line.format(file=folder_file)), only


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        ("INVOKE_TFRIG_CONNECT_TIMEOUT", "soon", "tfrig.connect_timeout in INVOKE_TFRIG_CONNECT_TIMEOUT is 'soon'"),
        ("INVOKE_TFRIG_YES", "perhaps", "tfrig.yes in INVOKE_TFRIG_YES is 'perhaps'; give true or false"),
        ("INVOKE_GCP_DISK_GB", "1e3x", "gcp.disk_gb in INVOKE_GCP_DISK_GB is '1e3x'; give a whole number."),
        ("INVOKE_DRIVER_UNVERIFIED", "sure", "driver.unverified in INVOKE_DRIVER_UNVERIFIED is 'sure'"),
    ],
)
def test_a_bad_setting_in_the_environment_is_one_line_naming_the_variable(tfrig, tmp_path, variable, value, line):
    result = tfrig("--dry", "docker.pull", cwd=tmp_path, env={variable: value})
    assert result.code == 1, result.text
    (only,) = result.err.splitlines()
    assert only.startswith(line), only


@pytest.mark.parametrize("word", ["false", "no", "off", "0", "False", "OFF"])
def test_a_no_in_the_environment_means_no(word):
    """Invoke casts INVOKE_TFRIG_YES=false to True; tfrig reads it as the user meant, for inv too."""
    from invoke import Config

    from tfrig import settings
    from tfrig.cli import TfrigConfig
    from tfrig.tasks import ns

    env = {"INVOKE_TFRIG_YES": word, "INVOKE_DRIVER_UNVERIFIED": word}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        invokes = Config()  # inv's own Config: tfrig settles it when the first task starts
        invokes.load_collection(ns.configuration())
        invokes.load_shell_env()
        settings.settle(invokes, ns.configuration())
        tfrigs = TfrigConfig()  # the tfrig command's: read right as it loads
        tfrigs.load_collection(ns.configuration())
        tfrigs.load_shell_env()
    for config in (invokes, tfrigs):
        assert config.tfrig.yes is False
        assert config.driver.unverified is False


def test_real_credentials_never_go_to_a_plain_http_endpoint():
    from invoke.exceptions import Exit

    from tfrig.gce.cloud import Cloud

    with pytest.raises(Exit, match="plain http, which would carry your Google token in clear text"):
        Cloud("p", endpoint="http://127.0.0.1:9")
    assert Cloud("p", endpoint="http://127.0.0.1:9", credentials="anonymous").endpoint == "http://127.0.0.1:9"


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


def test_python_m_tfrig_in_a_folder_never_imports_the_folders_modules(tfrig, tmp_path):
    """A cloned folder with invoke.py or yaml.py at its top: `python -m tfrig` there would import
    them in place of the libraries (Python puts the current folder first); it does not."""
    for module in ("invoke", "yaml", "fabric"):
        (tmp_path / f"{module}.py").write_text(f"open({str(tmp_path / (module + '.ran'))!r}, 'w').close()\n")
    listed = tfrig("--dry", "docker.pull", cwd=tmp_path)
    assert listed.code == 0, listed.text
    assert sorted(path.name for path in tmp_path.glob("*.ran")) == []
