"""The standing rule for every task and flag: bad input ends in one line on stderr, a non-zero
exit, no traceback and no change. Add the new flag's bad values here with the flag."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tfrig import state

HUGE = "9" * 30
CSV_HEADER = "index, name, uuid, driver_version, memory.total [MiB], memory.used [MiB], compute_cap\n"

# argv, and what the one line must say. {tmp} is the test's folder; {silent} an SSH port that
# accepts and never speaks; {refused} one that refuses.
CORPUS: list[tuple[list[str], str]] = [
    # numbers
    (["gcp.create", "--gpus", "abc"], "--gpus 'abc': give a whole number"),
    (["gcp.create", "--gpus", "1.5"], "--gpus '1.5': give a whole number"),
    (["gcp.create", "--gpus", "-1"], "--gpus -1: out of range"),
    (["gcp.create", "--gpus", HUGE], "--gpus 9999"),
    (["gcp.create", "--count", "abc"], "--count 'abc': give a whole number"),
    (["gcp.create", "--count", "-3"], "--count -3: out of range"),
    (["gcp.create", "--count", "1000"], "--count 1000: out of range"),
    (["gcp.create", "--disk-gb", "huge"], "--disk-gb 'huge': give a whole number"),
    (["gcp.create", "--disk-gb", "5"], "--disk-gb 5: boot disks need at least 10 GB"),
    (["gcp.create", "--disk-gb", HUGE], "--disk-gb 9999"),
    (["gcp.create", "--network", "My VPC"], "--network 'My VPC': give a network's name"),
    (["gcp.create", "--subnet", "a/b"], "--subnet 'a/b': give a subnet's name"),
    (["gcp.create", "--tags", "ssh,-bad"], "--tags: '-bad' is not a network tag"),
    (["gcp.create", "--service-account", "me"], "--service-account 'me': give a service account's email"),
    (["gcp.create", "--scopes", "all"], "--scopes: 'all' is not a scope"),
    (["gcp.tunnel", "--port", "abc"], "--port 'abc': give a whole number from 1 to 65535"),
    (["gcp.tunnel", "--port", "0"], "--port 0: out of range"),
    (["gcp.tunnel", "--port", "70000"], "--port 70000: out of range"),
    (["gcp.tunnel", "--port", "8888", "--local-port", "-1"], "--local-port -1: out of range"),
    (["tf.jupyter", "--port", "70000"], "--port 70000: out of range"),
    (["tf.jupyter", "--port", "1.5"], "--port '1.5': give a whole number"),
    (["tf.jupyter", "--local-port", "0"], "--local-port 0: out of range"),
    (["docker.run", "--port", "99999"], "--port 99999: out of range"),
    (["docker.run", "--port", "http"], "--port 'http': give a whole number"),
    # versions
    (["tf.install", "--version", "2.15.99"], "TensorFlow 2.15.99 was never released"),
    (["tf.install", "--version", "2.16.0"], "TensorFlow 2.16.0 was never released"),
    (["tf.install", "--version", "9.99.0"], "TensorFlow 9.99.0 is not a release tfrig knows"),
    (["tf.install", "--version", "abc"], "'abc' is not a TensorFlow version"),
    (["tf.install", "--python", "3.x"], "--python 3.x: give major.minor"),
    (["tf.install", "--installer", "conda"], "--installer conda: choose uv or pip"),
    # hosts
    (["gpu.check", "-H", ""], "--hosts is empty"),
    (["gpu.check", "-H", "h" * 100_000], "is not a host"),
    (["gpu.check", "-H", "a b"], "'a b' is not a host"),
    (["gpu.check", "-H", "me@127.0.0.1:99999"], "port 99999 is out of range"),
    (["driver.status", "-H", "me@127.0.0.1:{refused}"], "can't connect"),
    (["driver.status", "-H", "me@127.0.0.1:{silent}"], "[me@127.0.0.1:{silent}] driver.status: "),
    (["gpu.check", "-H", "no-such-vm-*"], "matches no VM in tfrig's state"),
    # captures
    (["gpu.check", "--input", "/dev/zero"], "over 8 MiB"),
    (["gpu.check", "--input", "{tmp}/empty.txt"], "the capture is empty"),
    (["gpu.check", "--input", "{tmp}/header-only.csv"], "no GPUs in this capture"),
    (["gpu.check", "--input", "{tmp}/fifo"], "the capture is empty"),  # no writer: read as empty, no wait
    # special files where a file is read: a FIFO no one writes to would wait for good
    (["gcp.put", "{tmp}/fifo"], "the source {tmp}/fifo is a FIFO, not a file; name a regular file."),
    (["gcp.ssh-config", "--name", "tfrig-alice", "--file", "{tmp}/fifo"], "--file {tmp}/fifo is a FIFO, not a file"),
    (["gpu.check", "--input", "{tmp}/long-index.csv"], "5000-digit number is not nvidia-smi output"),
    (["gpu.check", "--input", "{tmp}/capability.csv"], "compute capability 'abc' is not one such as 7.5"),
    (["gpu.check", "--input", "{tmp}/huge-field.csv"], "not nvidia-smi's CSV"),
    (["gpu.check", "--input", "{tmp}/missing.txt"], "No such file or directory"),
    (["gpu.check", "--input", "{tmp}"], "Is a directory"),
    # files (the VM tfrig-alice is in the state: see test_bad_input_is_one_line_with_no_change)
    (["gcp.ssh-config", "--name", "tfrig-alice", "--file", "{tmp}"], "is a folder; name the ssh config file"),
    (["gcp.ssh-config", "--name", "tfrig-alice", "--file", "{tmp}/no/such/config"], "does not exist; create it first"),
    # idle stop
    (["gcp.create", "--idle-stop", "1m"], "--idle-stop 1m: give 5 minutes to 30 days"),
    (["gcp.create", "--idle-stop", "soon"], "--idle-stop soon: write it like 2h, 90m, 1h30m or 7d"),
    (["gcp.create", "--flex-start", "--gpu", "nvidia-l4", "--wait", "soon"], "--wait soon: write it like 2h"),
    (["gcp.create", "--wait", "1h"], "--wait is how long a --flex-start request waits for capacity"),
    (["gcp.create", "--reservation", "Bad_Name"], "--reservation Bad_Name: give a reservation's name"),
    (["gcp.create", "--idle-stop", "30m", "--no-ssh-wait"], "--idle-stop installs its agent over SSH"),
    (["gcp.idle-stop"], "Give --after (e.g. --after 30m) to set idle stop, or --off"),
    (["gcp.idle-stop", "--after", "30m", "--off"], "Give --after (e.g. --after 30m) to set idle stop, or --off"),
    (["gcp.idle-stop", "--after", "31d"], "--after 31d: give 5 minutes to 30 days"),
    (["gcp.idle-stop", "--after", "800h"], "--after 800h: give 5 minutes to 30 days"),
    (["gcp.idle-stop", "--after", "30m", "--threshold", "0"], "--threshold 0: out of range"),
    (["gcp.idle-stop", "--after", "30m", "--threshold", "high"], "--threshold 'high': give a whole number"),
    # tf.run
    (["tf.run", "--script", "nope.py", "--folder", "{tmp}"], "--script nope.py: no such file in"),
    (["tf.run", "--script", "x.py", "--folder", "{tmp}/missing"], "/missing: no such folder here"),
    (["tf.run", "--script", "empty.txt", "--folder", "{tmp}", "--port", "0"], "--port 0: out of range"),
    (["tf.run", "--script", "empty.txt", "--folder", "{tmp}", "--args", "'open"], "No closing quotation"),
    (
        ["tf.run", "--script", "empty.txt", "--folder", "{tmp}", "-H", "a,b", "--cluster-addresses", "10.0.0.1"],
        "--cluster-addresses names 1 address(es) for 2 target(s)",
    ),
    (
        ["tf.run", "--script", "empty.txt", "--folder", "{tmp}", "-H", "me@127.0.0.1:{silent},me@127.0.0.2:{silent}"],
        "127.0.0.1 is a loopback address, which the other hosts can't reach",
    ),
    # every other flag that takes a value
    (["docker.install", "--user", "bad user;"], "--user 'bad user;': not a user name"),
    (["docker.install", "--method", "magic"], "--method magic: choose repo, distro or script"),
    (["docker.install", "--sha256", "xyz"], "--sha256 must be 64 hex digits"),
    (["docker.pull", "--version", "latest gpu"], "--version takes a release number such as 2.21.0"),
    (["docker.pull", "--image", "BAD!!"], "--image 'BAD!!' is not an image reference"),
    (["docker.pull", "--mirror", "not a url"], "--mirror 'not a url' should be HOST or HOST:PORT"),
    (["docker.run", "--version", "1..2"], "'1..2' is not a TensorFlow version"),
    (["docker.run", "--image", "Tensorflow/tf"], "--image 'Tensorflow/tf' is not an image reference"),
    (["docker.run", "--cmd", ""], "An interactive shell needs a terminal"),
    (["docker.run", "--cmd", "true", "--name", "bad name!"], "--name 'bad name!': not a container name"),
    (["docker.run", "--cmd", "true", "--workdir", "{tmp}/missing"], "/missing: no such folder"),
    (["docker.run", "--cmd", "true", "--mirror", "ftp://x"], "--mirror 'ftp://x' should be HOST or HOST:PORT"),
    (["docker.rm", ""], "Name the containers to remove"),
    (["docker.doctor", "--image", "BAD!!"], "--image 'BAD!!' is not an image reference"),
    (["gcp.create", "--name", "Bad_Name"], "--name Bad_Name: Compute Engine names are 1-63 lowercase"),
    (["gcp.create", "--gpu", "nvidia-tesla-k9000"], "--gpu nvidia-tesla-k9000: not a Compute Engine GPU type"),
    (["gcp.create", "--machine-type", "bogus-1"], "bogus-1"),
    (["gcp.create", "--zone", "mars"], "mars"),
    (["gcp.create", "--region", "mars-1a-b"], "mars-1a-b"),
    (["gcp.create", "--image", "windows-95"], "--image windows-95: choose ubuntu-24.04"),
    (["gcp.create", "--max-run-duration", "forever"], "--max-run-duration forever: write it like 2h"),
    (["gcp.create", "--on-termination", "explode"], "--on-termination explode: choose stop or delete"),
    (["gcp.create", "--project", "Bad Project"], "'Bad Project' is not a Google Cloud project ID"),
    (["gcp.start", "--name", "nope"], "No VM named nope in tfrig's state"),
    (["gcp.stop", "--name", "nope"], "No VM named nope in tfrig's state"),
    (["gcp.bake", "--family", "tf-t4", "--name", "nope"], "No VM named nope in tfrig's state"),
    (["gcp.bake", "--family", "Bad Family"], "--family 'Bad Family': lowercase letters, digits and dashes"),
    (["gcp.create", "--image-family", "tf_t4"], "--image-family 'tf_t4': lowercase letters, digits and dashes"),
    (["gcp.create", "--image-family", "x", "--image", "debian-12"], "give --image or --image-family, not both"),
    (["gcp.images", "--delete", "Bad_Image"], "--delete 'Bad_Image': give an image's name"),
    (["gcp.images", "--project", "-bad-"], "'-bad-' is not a Google Cloud project ID"),
    (["gcp.delete", "--name", "nope"], "No VM named nope in tfrig's state"),
    (["gcp.down", "--project", "x"], "'x' is not a Google Cloud project ID"),
    (["gcp.zones", "--gpu", "k9000"], "--gpu k9000: not a Compute Engine GPU type"),
    (["gcp.zones", "--region", "mars-1a-b"], "mars-1a-b"),
    (["gcp.zones", "--project", "-bad-"], "'-bad-' is not a Google Cloud project ID"),
    (["gcp.quota", "--gpu", "k9000"], "--gpu k9000: not a Compute Engine GPU type"),
    (["gcp.quota", "--region", "mars-1a-b"], "mars-1a-b"),
    (["gcp.quota", "--project", "UPPER-case"], "'UPPER-case' is not a Google Cloud project ID"),
    (["gcp.gpus", "--gpu", "k9000"], "--gpu k9000: not a Compute Engine GPU type"),
    (["gcp.gpus", "--region", "mars-1a-b"], "mars-1a-b"),
    (["gcp.gpus", "--project", "-bad-"], "'-bad-' is not a Google Cloud project ID"),
    (["gcp.reservations", "--project", "UPPER-case"], "'UPPER-case' is not a Google Cloud project ID"),
    (["gcp.list", "--project", "a"], "'a' is not a Google Cloud project ID"),
    (["gcp.check", "--project", "Mine!"], "'Mine!' is not a Google Cloud project ID"),
    (["gcp.ssh", "--name", "nope"], "No VM named nope in tfrig's state"),
    (["gcp.tunnel", "8888", "--name", "nope"], "No VM named nope in tfrig's state"),
    (["gcp.put", "{tmp}/missing"], "/missing: no such file or folder here"),
    (["gcp.put", "{tmp}/empty.txt", "--name", "tfrig-alice", "--destination", "x"], "can't connect"),
    (["gcp.get", ""], "Name the file or folder to copy from the VM"),
    (["gcp.get", "x", "--name", "tfrig-alice", "--destination", "{tmp}/no/such/x"], "does not exist here"),
    (["gcp.exec", "--cmd", " "], "Give the command to run"),
    (["gcp.exec", "--cmd", "true", "--name", "tfrig-alice"], "can't connect"),
    (["gcp.idle-stop", "--after", "30m", "--name", "tfrig-alice"], "can't connect"),
    (["driver.install", "--version", "abc"], "--version abc is not an NVIDIA driver version"),
    (["driver.install", "--branch", "banana"], "--branch banana: choose one of"),
    (["driver.install", "--method", "magic"], "--method magic: choose run or apt"),
    (["driver.install", "--module", "closed-ish"], "--module closed-ish: choose open or proprietary"),
    (["driver.install", "--cuda", "abc"], "--cuda abc: give a CUDA version such as 12.4"),
    (["driver.install", "--sha256", "xyz"], "--sha256 must be 64 hex digits"),
    (["driver.install", "--installer-url", "ftp://x/y.run"], "--installer-url 'ftp://x/y.run': give an https://"),
    (["driver.install", "--download-base", "not a url"], "--download-base 'not a url': give a URL"),
    (["gpu.setup", "--version", "5.1"], "--version 5.1 is not an NVIDIA driver version"),
    (["gpu.setup", "--branch", "999"], "--branch 999: choose one of"),
    (["gpu.setup", "--method", "yum"], "--method yum: choose run or apt"),
    (["gpu.setup", "--module", "both"], "--module both: choose open or proprietary"),
    (["gpu.setup", "--cuda", "99.1"], "CUDA 99.1 is not one tfrig knows a driver minimum for"),
    (["gpu.setup", "--sha256", "0" * 63], "--sha256 must be 64 hex digits"),
    (["gpu.setup", "--installer-url", "http//x"], "--installer-url 'http//x': give an https://"),
    (["gpu.setup", "--download-base", "download.nvidia.com"], "--download-base 'download.nvidia.com': give a URL"),
    (["conda.install", "--distribution", "anaconda9"], "--distribution anaconda9: choose miniconda or miniforge"),
    (["conda.install", "--prefix", "relative"], "--prefix 'relative': give an absolute path"),
    (
        ["conda.install", "--installer-url", "ftp://x"],
        "--installer-url 'ftp://x': give a https:// or http:// or file:// URL",
    ),
    (["conda.install", "--sha256", "xyz"], "--sha256 must be 64 hex digits"),
    (["conda.install", "--sha256-url", "notaurl"], "--sha256-url 'notaurl': give a https:// or http:// or file:// URL"),
    (["conda.create", "--name", "bad name/"], "--name 'bad name/': not a conda env name"),
    (["conda.create", "--python", "3.x"], "--python 3.x: give major.minor"),
    (["conda.create", "--tf-version", "abc"], "'abc' is not a TensorFlow version"),
    (["conda.create", "--prefix", "opt/conda"], "--prefix 'opt/conda': give an absolute path"),
    (["conda.cuda", "--name", "a:b"], "--name 'a:b': not a conda env name"),
    (["conda.cuda", "--tf-version", "abc"], "'abc' is not a TensorFlow version"),
    (["conda.cuda", "--prefix", "relative"], "--prefix 'relative': give an absolute path"),
    (["conda.remove", "--name", "a#b"], "--name 'a#b': not a conda env name"),
    (["conda.remove", "--prefix", "relative"], "--prefix 'relative': give an absolute path"),
    (["conda.list", "--prefix", "relative"], "--prefix 'relative': give an absolute path"),
    (["tf.install", "--index-url", "not a url"], "--index-url 'not a url': give a https://"),
    (["tf.install", "--find-links", "{tmp}/missing"], "--find-links {tmp}/missing: no such folder there"),
    (["tf.versions", "--python", "3.x"], "--python 3.x: give major.minor"),
    (["tf.versions", "--driver", "abc"], "--driver abc: give a driver version"),
    (["tf.jupyter", "--index-url", "pypi.org"], "--index-url 'pypi.org': give a https://"),
    # docker
    (["docker.rmi", "BAD image!!"], "is not an image name the engine takes"),
    (["docker.rmi", ""], "Name the images to remove"),
]


def _tasks_with_hosts() -> list[str]:
    import inspect

    from tfrig.tasks import ns

    return [
        f"{name}.{task_name}"
        for name, collection in ns.collections.items()
        for task_name, found in collection.tasks.items()
        if "hosts" in inspect.signature(found.body).parameters
    ]


# Every task that takes -H refuses a host that can't be one, before it does anything (given what
# else it needs first).
_NEEDS = {
    "docker.run": ["--cmd", "true"],
    "docker.rm": ["c1"],
    "docker.rmi": ["tensorflow/tensorflow"],
    "conda.install": ["--distribution", "miniforge"],
    "tf.run": ["--script", "empty.txt", "--folder", "{tmp}"],
}
CORPUS += [([task, *_NEEDS.get(task, []), "-H", "a b"], "'a b' is not a host") for task in _tasks_with_hosts()]

# Flags any text is good for, each with why (test_every_flag_that_takes_a_value_has_a_bad_input_case).
FREE_TEXT = {
    ("gcp.put", "destination"): "a path on the VM; one under a missing folder is refused there (test_e2e)",
    ("gcp.get", "destination"): "a path here; one under a missing folder is a case above",
    ("tf.run", "remote-folder"): "a path on each host, made if missing",
    ("tf.run", "args"): "the program's own arguments; unbalanced quotes are a case above",
    ("tf.run", "cluster-addresses"): "a cluster that can't meet is one line each in test_tfrun, and a case above",
    ("tf.jupyter", "find-links"): "checked on the target by the code that checks tf.install's (a case above)",
    ("gcp.exec", "name"): "a VM or a host; one that can't be reached is a case above",
}

# Settings, each in the invoke.yaml of the folder tfrig runs in.

SETTINGS: list[tuple[str, list[str], str]] = [
    ("tfrig:\n  hosts: [a, b]\n", ["gpu.check"], "tfrig.hosts"),
    ("tfrig:\n  connect_timeout: soon\n", ["driver.status", "-H", "me@127.0.0.1:1"], "tfrig.connect_timeout"),
    ("tfrig:\n  host_keys: maybe\n", ["driver.status", "-H", "me@127.0.0.1:{silent}"], "tfrig.host_keys"),
    ("tfrig: [unclosed\n", ["gpu.check"], "invoke.yaml"),
    (
        "gcp:\n  project: tfrig-test\n  credentials: anonymous\n  endpoint: http://127.0.0.1:1\n  operation_timeout: soon\n",
        ["gcp.create", "--yes", "--no-ssh-wait"],
        "gcp.operation_timeout",
    ),
]


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """An SSH port that accepts connections and never sends a banner."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in held:
        conn.close()


@pytest.fixture(scope="module")
def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: nothing listens there


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("captures")
    (folder / "empty.txt").write_text("")
    os.mkfifo(folder / "fifo")
    (folder / "header-only.csv").write_text(CSV_HEADER)
    (folder / "long-index.csv").write_text(
        CSV_HEADER + "9" * 5000 + ", Tesla T4, GPU-1, 535.1, 15360 MiB, 0 MiB, 7.5\n"
    )
    (folder / "capability.csv").write_text(CSV_HEADER + "0, Tesla T4, GPU-1, 535.1, 15360 MiB, 0 MiB, abc\n")
    (folder / "huge-field.csv").write_text(CSV_HEADER + "0, " + "x" * 300_000 + ", GPU-1, 535.1, 1 MiB, 0 MiB, 7.5\n")
    return folder


def corpus_env(home: Path, state_dir: Path, refused_port: int) -> dict[str, str]:
    """Where a case runs: its own home and state, and a Compute API endpoint that refuses."""
    return {
        "HOME": str(home),
        "TFRIG_STATE_DIR": str(state_dir),
        "INVOKE_TFRIG_CONNECT_TIMEOUT": "3",
        "INVOKE_GCP_PROJECT": "corpus-project",
        "INVOKE_GCP_ENDPOINT": f"http://127.0.0.1:{refused_port}",
        "INVOKE_GCP_CREDENTIALS": "anonymous",
    }


def no_pip_source(tmp_path: Path) -> dict[str, str]:
    """pip can fetch nothing, were a refusal missed."""
    return {"INVOKE_TF_FIND_LINKS": str(tmp_path / "no-wheels"), "INVOKE_TF_NO_INDEX": "true"}


def fingerprint(folder: Path) -> dict[str, str]:
    """What a case may not change: every file under `folder` (the state, a HOME) and its content."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "logs" not in path.parts and "cache" not in path.parts
    }


# What may come before the one line: a wait saying what it waits for (the Compute API retried at
# an endpoint that refuses, for a VM's host keys), never an error of its own.
PROGRESS = "waiting for the Compute API ("


def assert_one_line(argv: list[str], outcome, needle: str) -> None:
    shown = " ".join(part[:60] for part in argv)
    assert outcome.code != 0, f"{shown}: exit 0\n{outcome.text[-2000:]}"
    assert "Traceback" not in outcome.text, f"{shown}:\n{outcome.text[-3000:]}"
    lines = [line for line in outcome.err.splitlines() if line.strip() and not line.startswith(PROGRESS)]
    assert len(lines) == 1, f"{shown}: {len(lines)} lines on stderr:\n{outcome.err[-2000:]}"
    assert needle in lines[0], f"{shown}: {lines[0][:500]!r} lacks {needle!r}"


@pytest.mark.parametrize(("argv", "needle"), CORPUS, ids=[" ".join(a)[:60] for a, _ in CORPUS])
def test_bad_input_is_one_line_with_no_change(argv, needle, tmp_path, captures, silent_port, refused_port):
    fill = {"tmp": str(captures), "silent": str(silent_port), "refused": str(refused_port)}
    argv = [part.format(**fill) for part in argv]
    home, state_dir = tmp_path / "home", tmp_path / "state"
    home.mkdir()
    env = {**corpus_env(home, state_dir, refused_port), **no_pip_source(tmp_path)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TFRIG_STATE_DIR", str(state_dir))
        state.record_vm("tfrig-alice", address="127.0.0.1", port=refused_port, user="alice", zone="us-central1-a")
    before = fingerprint(tmp_path)
    outcome = run_cli(*argv, env=env, cwd=tmp_path, timeout=120)
    assert_one_line(argv, outcome, needle.format(**fill))
    assert fingerprint(tmp_path) == before, f"{argv}: changed files"


@pytest.mark.parametrize(("yaml_text", "argv", "needle"), SETTINGS, ids=[needle for _, _, needle in SETTINGS])
def test_bad_settings_are_one_line_naming_the_key_and_the_file(yaml_text, argv, needle, tmp_path, silent_port):
    (tmp_path / "invoke.yaml").write_text(yaml_text)
    argv = [part.format(silent=silent_port) for part in argv]
    env = {"HOME": str(tmp_path), "TFRIG_STATE_DIR": str(tmp_path / "state")}
    outcome = run_cli(*argv, env=env, cwd=tmp_path, timeout=120)
    assert_one_line(argv, outcome, needle)


@pytest.mark.parametrize(
    ("setting", "what"),
    [("INVOKE_TFRIG_SSH_KEY", "the SSH key"), ("INVOKE_TFRIG_KNOWN_HOSTS", "the known-hosts file")],
)
def test_a_fifo_named_in_a_setting_is_refused_not_waited_on(setting, what, tmp_path, refused_port):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    env = {"HOME": str(tmp_path), "TFRIG_STATE_DIR": str(tmp_path / "state"), setting: str(fifo)}
    argv = ["driver.status", "-H", f"me@127.0.0.1:{refused_port}"]
    outcome = run_cli(*argv, env=env, cwd=tmp_path, timeout=60)
    assert_one_line(argv, outcome, f"{what} {fifo} is a FIFO, not a file; name a regular file.")


def test_a_settings_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "invoke.yaml")
    outcome = run_cli("tf.versions", env={"HOME": str(tmp_path)}, cwd=tmp_path, timeout=60)
    assert_one_line(["tf.versions"], outcome, f"the settings file {tmp_path / 'invoke.yaml'} is a FIFO, not a file")


def test_a_table_with_nothing_to_show_is_its_header_when_not_a_terminal():
    """docker.ps and docker.images with no containers or images, piped: the header, no traceback."""
    import io

    from tfrig.ui import table

    out = io.StringIO()
    table(["container", "image", "status"], [], out=out)
    assert out.getvalue() == "container  image  status\n"


def test_every_flag_that_takes_a_value_has_a_bad_input_case():
    """The standing rule, kept: a new flag needs its case in CORPUS, or its reason in FREE_TEXT."""
    import inspect

    from tfrig.tasks import ns

    covered = {(argv[0], part.lstrip("-")) for argv, _ in CORPUS for part in argv[1:] if part.startswith("--")}
    covered |= {(argv[0], "hosts") for argv, _ in CORPUS if "-H" in argv}
    missing = []
    for name, collection in ns.collections.items():
        for task_name, found in collection.tasks.items():
            task = f"{name}.{task_name}"
            for parameter in list(inspect.signature(found.body).parameters.values())[1:]:
                flag = parameter.name.replace("_", "-")
                if isinstance(parameter.default, bool) or (task, flag) in FREE_TEXT:
                    continue
                positional = parameter.default is inspect.Parameter.empty
                if positional and any(argv[0] == task and len(argv) > 1 for argv, _ in CORPUS):
                    continue  # given without its flag name: the task's own cases give it
                if (task, flag) not in covered:
                    missing.append(f"{task} --{flag}")
    assert missing == []


def _value_flags() -> list[tuple[str, str]]:
    import inspect

    from tfrig.tasks import ns

    return [
        (f"{name}.{task_name}", parameter.name.replace("_", "-"))
        for name, collection in ns.collections.items()
        for task_name, found in collection.tasks.items()
        for parameter in list(inspect.signature(found.body).parameters.values())[1:]
        if not isinstance(parameter.default, bool)
    ]


# A value with a newline, 100,000 characters long: what a pasted file or a broken script sends.
HOSTILE_VALUE = "x\ny" + "z" * 100_000


@pytest.mark.parametrize(("task", "flag"), _value_flags(), ids=[f"{t} --{f}" for t, f in _value_flags()])
def test_a_hostile_value_in_any_flag_is_shown_escaped_and_cut(task, flag, tmp_path, refused_port):
    """Under --dry: refused in one short line, or (text a flag passes on as it is) taken quietly;
    never a second line, a whole 100,000-character echo or a traceback."""
    env = {**corpus_env(tmp_path, tmp_path / "state", refused_port), **no_pip_source(tmp_path)}
    outcome = run_cli("--dry", task, f"--{flag}", HOSTILE_VALUE, env=env, cwd=tmp_path, timeout=120)
    assert "Traceback" not in outcome.text, outcome.text[-3000:]
    lines = [line for line in outcome.err.splitlines() if line.strip()]
    if outcome.code == 0:
        assert lines == [] or all(len(line) < 1000 for line in lines), outcome.err[:2000]
        return
    assert len(lines) == 1, outcome.err[:2000]
    assert len(lines[0]) < 600, lines[0][:1000]


NAMESPACE_TASK = {
    "tfrig": ["driver.status", "-H", "me@127.0.0.1:{refused}"],
    "gcp": ["gcp.create", "--yes"],
    "docker": ["docker.pull"],
    "driver": ["driver.install"],
    "gpu": ["gpu.setup"],
    "conda": ["conda.create"],
    "tf": ["tf.install"],
}


def _text_settings() -> list[str]:
    from tfrig.tasks import ns

    return [
        f"{namespace}.{key}"
        for namespace, keys in ns.configuration().items()
        if namespace in NAMESPACE_TASK
        for key, default in keys.items()
        if isinstance(default, str)
    ]


@pytest.mark.parametrize("setting", _text_settings())
@pytest.mark.parametrize("source", ["environment", "file"])
def test_a_hostile_value_in_any_text_setting_is_shown_escaped_and_cut(setting, source, tmp_path, refused_port):
    """The same value as a setting, from an INVOKE_* variable or the user's ~/.invoke.yaml, read
    by a task of its namespace under --dry: one short last line or a quiet run, never a traceback."""
    import json

    namespace, key = setting.split(".")
    env = corpus_env(tmp_path, tmp_path / "state", refused_port)  # tf's own settings are the ones given here
    if source == "environment":
        env[f"INVOKE_{namespace}_{key}".upper()] = HOSTILE_VALUE
    else:  # JSON is YAML: the value written exactly
        (tmp_path / ".invoke.yaml").write_text(json.dumps({namespace: {key: HOSTILE_VALUE}}))
    argv = [part.format(refused=refused_port) for part in NAMESPACE_TASK[namespace]]
    outcome = run_cli("--dry", *argv, env=env, cwd=tmp_path, timeout=120)
    assert "Traceback" not in outcome.text, outcome.text[-3000:]
    lines = [line for line in outcome.err.splitlines() if line.strip()]
    assert all(len(line) < 1000 for line in lines), [line[:200] for line in lines]
    if outcome.code != 0:
        assert lines and len(lines[-1]) < 600, outcome.text[-1000:]
