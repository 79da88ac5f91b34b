"""tf: the README's main job on this machine, the same over SSH on a Debian host, and the
diagnosis TensorFlow's own log gives when it sees no GPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
import zipfile

import pytest

from tests.conftest import DEADLINE, free_port, json_docs, json_of, track
from tfrig.knowledge.catalog import compat
from tfrig.tasks.tf import diagnose_no_gpu, read_verify

# What TensorFlow 2.21 logged here (no NVIDIA driver), and what others report (compat.yaml sources).
NO_DRIVER_LOG = (
    "I0000 00:00:1795690159.364346   10165 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.\n"
    "E0000 00:00:1795690159.585681   10165 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
)


@pytest.mark.parametrize(
    ("log", "diagnosis"),
    [
        (NO_DRIVER_LOG, "no NVIDIA driver or GPU: TensorFlow found no CUDA driver on this host"),
        (
            "W tensorflow/core/common_runtime/gpu/gpu_device.cc:2256] Cannot dlopen some GPU libraries. Please make sure the missing libraries mentioned above are installed properly",
            "the CUDA or cuDNN libraries are missing",
        ),
        (
            "Could not load dynamic library 'libcudnn.so.8'; dlerror: libcudnn.so.8: cannot open shared object file",
            "the CUDA or cuDNN libraries are missing",
        ),
        (
            "failed call to cuInit: CUDA_ERROR_SYSTEM_DRIVER_MISMATCH: system has unsupported display driver / cuda driver combination",
            "the NVIDIA driver is too old",
        ),
        (
            "Ignoring visible gpu device (device: 0, name: Tesla K80, compute capability: 3.7) with Cuda compute capability 3.7. The minimum required Cuda capability is 6.0.",
            "compute capability is below",
        ),
        ("failed call to cuInit: UNKNOWN ERROR (999)", "the CUDA driver failed to initialise"),
        (  # TF 2.18.0 on a T4 with an old driver (CY-CHENYUE/ComfyUI-Molmo#26)
            "2025-02-01 13:44:34.523685: W tensorflow/compiler/mlir/tools/kernel_gen/tf_gpu_runtime_wrappers.cc:40] "
            "'cuModuleLoadData(&module, data)' failed with 'CUDA_ERROR_UNSUPPORTED_PTX_VERSION'",
            "older than the CUDA TensorFlow's own GPU kernels were built with",
        ),
        ("", "TensorFlow logged no reason"),
    ],
    ids=["no-driver", "dlopen", "libcudnn", "driver-mismatch", "k80", "cuinit", "ptx", "silent"],
)
def test_no_gpu_diagnosis_from_the_log(log, diagnosis):
    assert diagnosis in diagnose_no_gpu(log)[0]


def test_verify_output_without_the_marker_is_an_error():
    from invoke.exceptions import Exit

    with pytest.raises(Exit, match="TensorFlow did not run: ModuleNotFoundError"):
        read_verify("Traceback (most recent call last):\nModuleNotFoundError: No module named 'tensorflow'")


@pytest.mark.slow
def test_readme_main_job_here_installs_verifies_and_reruns_as_a_no_op(tfrig, wheelhouse, tmp_path):
    env = {"HOME": str(tmp_path)}
    first = tfrig("tf.install", "--find-links", str(wheelhouse), "--no-index", "tf.verify", env=env)
    assert first.code == 0, first.text
    assert "installing tensorflow==2.21.0 into ~/tf-venv" in first.out
    assert "matmul on /job:localhost/replica:0/task:0/device:CPU:0: correct" in first.out
    assert "reduce_sum(random.normal) on /job:localhost/replica:0/task:0/device:CPU:0: correct" in first.out
    assert "no GPU: no NVIDIA driver or GPU: TensorFlow found no CUDA driver on this host" in first.out
    assert (tmp_path / "tf-venv" / "bin" / "python").exists()

    again = tfrig("tf.install", "--find-links", str(wheelhouse), "--no-index", env=env)
    assert again.code == 0
    assert "already done: TensorFlow 2.21.0 in venv ~/tf-venv" in again.out

    report = json_of(tfrig("tf.verify", "--json", env=env).out)
    assert report["tensorflow"] == "2.21.0" and report["result_ok"] is True and report["gpus"] == []


@pytest.mark.slow
def test_install_and_verify_over_ssh_then_jupyter_through_a_tunnel(tfrig, sshd_factory, ssh_env, wheelhouse, state_dir):
    host = sshd_factory(volumes_extra={str(wheelhouse): "/wheelhouse"})
    first = tfrig(
        "tf.install",
        "-H",
        host.spec(),
        "--find-links",
        "/wheelhouse",
        "--no-index",
        "--json",
        "tf.verify",
        "--json",
        env=ssh_env,
    )
    assert first.code == 0, first.text
    installed, verify = json_docs(first.out)
    assert installed["tensorflow"] == "2.21.0" and installed["changed"] is True and installed["kind"] == "venv"
    assert verify["python"].startswith("3.11.") and verify["result_ok"] is True
    assert verify["diagnosis"] == "no NVIDIA driver or GPU: TensorFlow found no CUDA driver on this host"
    assert host.exec("test -x /home/tfrig/tf-venv/bin/python")[0] == 0

    again = tfrig("tf.install", "-H", host.spec(), "--find-links", "/wheelhouse", "--no-index", env=ssh_env)
    assert "already done: TensorFlow 2.21.0 in venv ~/tf-venv" in again.out

    # Converged and chained: gpu.check's facts come in tf.install's one round trip (tfrig.readahead),
    # and say what gpu.check alone says.
    log = state_dir / "logs" / f"{host.spec()}.log"
    mark = len(log.read_text().splitlines())
    chained = tfrig("tf.install", "-H", host.spec(), "--find-links", "/wheelhouse", "--no-index", "--json",
                    "gpu.check", "--json", env=ssh_env)  # fmt: skip
    alone = tfrig("gpu.check", "-H", host.spec(), "--json", env=ssh_env)
    assert chained.code == alone.code == 1, chained.text  # no GPU on the stand-in
    assert json_docs(chained.out)[0]["changed"] is False
    assert json_docs(chained.out)[1] == json_docs(alone.out)[0]
    assert json_docs(alone.out)[0]["diagnosis"].startswith("no NVIDIA GPU on the PCI bus")
    commands = [line for line in log.read_text().splitlines()[mark:] if line[:1].isdigit()]
    assert len(commands) == 3, commands  # the chain's one probe, its read-ahead answer, gpu.check alone
    assert commands[1].endswith("query, table, pci: read ahead by an earlier task")

    local_port = free_port()
    jupyter = track(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tfrig",
                "tf.jupyter",
                "-H",
                host.spec(),
                "--find-links",
                "/wheelhouse",
                "--no-index",
                "--local-port",
                str(local_port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **ssh_env, "TFRIG_STATE_DIR": str(state_dir)},
        )
    )
    try:
        assert jupyter.stdout is not None
        lines = []
        for line in jupyter.stdout:
            lines.append(line)
            if line.startswith("JupyterLab: "):
                break
        url = lines[-1].split()[1]
        assert url.startswith(f"http://127.0.0.1:{local_port}/lab?token=")
        token = url.rsplit("=", 1)[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{local_port}/api/status?token={token}", timeout=10) as reply:
            assert reply.status == 200 and "started" in json.loads(reply.read())
        # On the target it listens on loopback only.
        listening = host.exec("cat /proc/net/tcp")[1]
        assert " 0100007F:22B8 00000000:0000 0A " in listening  # 127.0.0.1:8888 LISTEN
        assert " 00000000:22B8 " not in listening
    finally:
        jupyter.send_signal(signal.SIGINT)
        jupyter.wait(DEADLINE)

    # A Colab local runtime: not the server above (it doesn't allow Colab's origin), a new one
    # that does, as Colab's local-runtime page starts it; another origin is not allowed.
    taken = tfrig("tf.jupyter", "-H", host.spec(), "--colab", "--no-tunnel", env=ssh_env)
    assert taken.code == 1
    assert (
        taken.err.strip()
        .splitlines()[-1]
        .endswith(
            "JupyterLab runs on port 8888 there without Colab's origin: stop it (`jupyter server stop 8888` in the env) "
            "or give another --port."
        )
    )
    colab = tfrig("tf.jupyter", "-H", host.spec(), "--colab", "--port", "8890", "--no-tunnel", "--json", env=ssh_env)
    assert colab.code == 0, colab.text
    runtime = json_of(colab.out)
    assert runtime["colab_url"].startswith("http://127.0.0.1:8890/?token=")
    token = runtime["colab_url"].rsplit("=", 1)[1]

    def status(origin: str) -> str:
        return host.exec(
            f"curl -s -o /dev/null -D - -H 'Origin: {origin}' 'http://127.0.0.1:8890/api/status?token={token}'"
        )[1]

    # A browser lets a page read an answer only where Access-Control-Allow-Origin names the page's
    # origin (CORS): the server names Colab's, so Colab's page may, another site's may not.
    def allowed(headers: str) -> list[str]:
        return [line.split(":", 1)[1].strip() for line in headers.splitlines() if
                line.lower().startswith("access-control-allow-origin:")]  # fmt: skip

    from_colab, from_elsewhere = status("https://colab.research.google.com"), status("https://evil.example")
    assert from_colab.startswith("HTTP/1.1 200") and allowed(from_colab) == ["https://colab.research.google.com"]
    assert allowed(from_elsewhere) == ["https://colab.research.google.com"]  # not the other site's
    again = tfrig("tf.jupyter", "-H", host.spec(), "--colab", "--port", "8890", "--no-tunnel", env=ssh_env)
    assert again.code == 0 and f"Colab: Connect > Connect to a local runtime, paste {runtime['colab_url']}" in again.out


def test_an_unknown_version_is_refused_before_touching_the_host(tfrig):
    result = tfrig("tf.install", "--version", "2.99")
    assert result.code == 1
    assert (
        result.err.strip() == "TensorFlow 2.99 is not a release tfrig knows; the newest is 2.21.0 (`inv tf.versions`)."
    )


def test_versions_marks_what_fits(tfrig):
    rows = json_of(tfrig("tf.versions", "--python", "3.12", "--driver", "470.82.01", "--json").out)
    fits = {r["tensorflow"]: r["fits"] for r in rows}
    assert fits["2.21.0"] is False  # CUDA 12.5 needs 525.60.13
    assert fits["2.15.0"] is False  # Python 3.12 is too new
    assert fits["2.16.1"] is False
    assert [v for v, ok in fits.items() if ok] == []
    rows = json_of(tfrig("tf.versions", "--python", "3.10", "--driver", "470.82.01", "--json").out)
    assert [r["tensorflow"] for r in rows if r["fits"]][:2] == ["2.14.0", "2.13.0"]


@pytest.mark.parametrize("uv_there", [False, True], ids=["pip-fetching-uv", "uv"])
def test_an_index_credential_never_shows_in_the_process_list(tfrig, tmp_path, wheelhouse, uv_there):
    """tf.install with an index URL that carries a password: while the installer asks the index
    (pip fetching uv, or uv itself where it is there already), nothing in the process list holds
    the password, it is still sent (from a private config file; to uv in its environment), and the
    file is gone afterwards. The index here answers every page "not found" once it looked."""
    import base64
    import http.server
    import threading

    seen: dict[str, str] = {}

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if "ps" not in seen:  # pip is waiting on this answer: what does the process list show?
                seen["ps"] = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
                seen["auth"] = self.headers.get("Authorization", "")
                seen["agent"] = self.headers.get("User-Agent", "")
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    if uv_there:  # as an earlier tf.install left it
        version = compat()["uv_installer"]["version"]
        with zipfile.ZipFile(next(wheelhouse.glob(f"uv-{version}-*x86_64*.whl"))) as wheel:
            binary = tmp_path / ".cache/tfrig/uv" / version / "bin/uv"
            binary.parent.mkdir(parents=True)
            binary.write_bytes(wheel.read(f"uv-{version}.data/scripts/uv"))
            binary.chmod(0o755)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://alice:s3cret-pw@127.0.0.1:{server.server_address[1]}/simple"
        # Given in the environment, as a user keeps it out of their own command line.
        installed = tfrig("tf.install", env={"HOME": str(tmp_path), "INVOKE_TF_INDEX_URL": url}, timeout=600)
    finally:
        server.shutdown()
    assert installed.code != 0, installed.text  # the index has nothing
    assert "ps" in seen, installed.text
    assert "s3cret-pw" not in seen["ps"], [line for line in seen["ps"].splitlines() if "s3cret" in line]
    assert base64.b64decode(seen["auth"].removeprefix("Basic ")) == b"alice:s3cret-pw"
    assert not list((tmp_path / ".tfrig").glob("private-*"))
    assert "s3cret-pw" not in installed.text
    assert ("uv/" in seen["agent"]) is uv_there, seen["agent"]  # who asked: uv, else pip


def test_the_install_script_gives_uv_what_pip_reads_and_falls_back_to_pip_saying_why(tmp_path, wheelhouse):
    """scripts/tf-install.py with the real pip and uv: pip's own settings (here its environment
    variables: a wheelhouse and no index) reach uv, which comes from the same wheelhouse checked
    against its pinned SHA-256; a setting uv has no equivalent of, or a uv wheel that doesn't match
    its pin, and pip does the install, saying why."""
    from tfrig.hosts.host import SCRIPTS

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pinned = compat()["uv_installer"]

    def run(home: str, extra: dict[str, str], sha256: list[str]) -> subprocess.CompletedProcess[str]:
        argument = json.dumps({"installer": "uv", "uv": {"version": pinned["version"], "sha256": sha256}})
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path / home),
            "PIP_CONFIG_FILE": os.devnull,  # this machine's pip configuration stays out
            "PIP_FIND_LINKS": str(wheelhouse),
            "PIP_NO_INDEX": "1",
            **extra,
        }
        script = (SCRIPTS / "tf-install.py").read_text()
        command = [str(venv / "bin/python"), "-c", script, argument, "-q", "--", "absl-py"]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    with_uv = run("home", {}, pinned["sha256"])
    assert with_uv.returncode == 0, with_uv.stderr
    assert with_uv.stdout.splitlines()[0] == f"installer: uv {pinned['version']}"
    assert (tmp_path / f"home/.cache/tfrig/uv/{pinned['version']}/bin/uv").exists()
    assert subprocess.run([str(venv / "bin/python"), "-c", "import absl"]).returncode == 0

    unknown = run("home", {"PIP_SRC": str(tmp_path / "src")}, pinned["sha256"])
    assert unknown.returncode == 0, unknown.stderr
    assert unknown.stdout.splitlines()[:2] == [
        "note: pip's setting src (PIP_SRC) has no uv equivalent in tfrig: installing with pip",
        "installer: pip",
    ]

    tampered = run("other-home", {}, ["0" * 64])
    assert tampered.returncode == 0, tampered.stderr
    assert tampered.stdout.splitlines()[:2] == [
        f"note: uv {pinned['version']} from pip's sources does not match its pinned SHA-256: installing with pip",
        "installer: pip",
    ]
    assert not (tmp_path / "other-home/.cache/tfrig/uv" / pinned["version"]).exists()
