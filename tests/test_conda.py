"""conda against a local HTTP server serving an installer built for the test (this machine can't
reach the real ones): checksums, batch flags, the Terms of Service refusal, and each task's commands.

What only a real Miniconda run would prove: that the real installer's `-b -p` and conda's own
`create`, `install -c conda-forge cudatoolkit cudnn` and `tos accept` behave as the stand-in does.
"""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import json_of

# A stand-in for a conda installer: with -b it lays out PREFIX/bin/conda (a shell stand-in that
# logs its arguments and keeps envs as folders); without -b it waits at a prompt, as the real one.
INSTALLER = r"""#!/bin/bash
echo "$0 $*" >> "${TFRIG_TEST_LOG:-/dev/null}"
batch=0; prefix=""
while getopts "bfup:" opt; do case $opt in b) batch=1;; p) prefix=$OPTARG;; *) ;; esac; done
if [ "$batch" != 1 ]; then echo "Do you accept the license terms? [yes|no]"; read -r answer; exit 1; fi
mkdir -p "$prefix/bin" "$prefix/envs"
echo "@DIST@" > "$prefix/distribution"
cat > "$prefix/bin/conda" <<'CONDA'
#!/bin/bash
prefix=$(cd "$(dirname "$0")/.." && pwd)
echo "$*" >> "$prefix/calls.log"
needs_tos() { [ "$(cat "$prefix/distribution")" = miniconda ] && [ ! -s "$prefix/tos" ]; }
name=""; args=("$@"); for i in "${!args[@]}"; do [ "${args[$i]}" = -n ] && name=${args[$((i + 1))]}; done
case "$1" in
  --version) echo "conda 25.5.1" ;;
  tos) echo "$*" >> "$prefix/tos" ;;
  env)
    if [ "$2" = list ]; then
      printf '{"envs": ["%s"' "$prefix"
      for e in "$prefix"/envs/*/; do [ -d "$e" ] && printf ', "%s"' "${e%/}"; done
      echo ']}'
    else rm -rf "${prefix:?}/envs/$name"; fi ;;
  create)
    if needs_tos; then echo "CondaToSNonInteractiveError: Terms of Service have not been accepted for the following channels." >&2; exit 1; fi
    mkdir -p "$prefix/envs/$name/bin" ;;
  list)
    printf '['; sep=""
    for record in "$prefix/envs/$name"/conda-meta/*.json; do
      [ -e "$record" ] || continue
      base=$(basename "$record" .json); version=${base%-*}; version=${version##*-}
      printf '%s{"name": "%s", "version": "%s"}' "$sep" "${base%%-*}" "$version"; sep=", "
    done
    echo ']' ;;
  install)
    mkdir -p "$prefix/envs/$name/conda-meta"
    for spec in "${@:8}"; do  # after: install -y -q -n NAME -c CHANNEL
      touch "$prefix/envs/$name/conda-meta/${spec%%=*}-${spec#*=}-0.json"
    done
    echo "installed ${*: -2}" ;;
esac
CONDA
chmod +x "$prefix/bin/conda"
"""


class Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        handler = self._handler()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _handler(self) -> type:
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(server.root), **kwargs)

            def log_message(self, format, *args):
                server.requests.append(self.path)

        return Handler

    def publish(self, name: str, body: str) -> str:
        (self.root / name).write_text(body)
        return hashlib.sha256(body.encode()).hexdigest()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "www"
    root.mkdir()
    serving = Server(root)
    yield serving
    serving.httpd.shutdown()


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "home"
    folder.mkdir()
    return {"HOME": str(folder), "TFRIG_TEST_LOG": str(tmp_path / "installer.log")}


def anaconda_index(name: str, sha256: str) -> str:
    """The shape of repo.anaconda.com/miniconda/: a table row per installer with its SHA-256."""
    return (
        "<table>\n<tr><th>Filename</th><th>Size</th><th>Last Modified</th><th>SHA256</th></tr>\n"
        f'<tr>\n  <td><a href="{name}">{name}</a></td>\n  <td class="s">148.9M</td>\n'
        f"  <td>2025-07-15 10:00:00</td>\n  <td>{sha256}</td>\n</tr>\n</table>\n"
    )


NAME = "Miniconda3-latest-Linux-x86_64.sh"


def test_miniconda_without_accepting_the_tos_stops_before_downloading(tfrig, server, home):
    server.publish(NAME, INSTALLER.replace("@DIST@", "miniconda"))
    result = tfrig("conda.install", "--installer-url", f"{server.url}/{NAME}", "--unverified", env=home)
    assert result.code == 1
    assert result.err.strip() == (
        "Miniconda's default channels need Anaconda's Terms of Service accepted (since July 2025), and an "
        "unattended install can't answer the prompt: pass --accept-tos (or set conda.accept_tos: true), "
        "or use --distribution miniforge (conda-forge only)."
    )
    assert server.requests == []


def test_miniconda_install_checks_the_published_sha256_runs_batch_and_accepts_the_tos(tfrig, server, home, tmp_path):
    digest = server.publish(NAME, INSTALLER.replace("@DIST@", "miniconda"))
    server.publish("index.html", anaconda_index(NAME, digest))
    args = (
        "conda.install",
        "--accept-tos",
        "--installer-url",
        f"{server.url}/{NAME}",
        "--sha256-url",
        f"{server.url}/index.html",
    )
    result = tfrig(*args, env=home)
    assert result.code == 0, result.text
    prefix = Path(home["HOME"]) / "miniconda3"
    assert (prefix / "bin" / "conda").exists()
    assert f" -b -p {prefix}" in (tmp_path / "installer.log").read_text()
    assert (prefix / "tos").read_text().splitlines() == [
        "tos accept --override-channels --channel https://repo.anaconda.com/pkgs/main",
        "tos accept --override-channels --channel https://repo.anaconda.com/pkgs/r",
    ]
    assert server.requests == [f"/{NAME}", "/index.html"]

    again = tfrig(*args[:1], "--accept-tos", env=home)
    assert again.code == 0
    assert "already done: conda 25.5.1 at ~/miniconda3" in again.out
    assert server.requests == [f"/{NAME}", "/index.html"]


def test_a_checksum_mismatch_runs_nothing(tfrig, server, home, tmp_path):
    server.publish(NAME, INSTALLER.replace("@DIST@", "miniconda"))
    result = tfrig(
        "conda.install", "--accept-tos", "--installer-url", f"{server.url}/{NAME}", "--sha256", "0" * 64, env=home
    )
    assert result.code == 1
    assert f"{NAME} does not match SHA-256 {'0' * 64}; not running it" in result.err
    assert not (Path(home["HOME"]) / "miniconda3").exists()
    assert not (tmp_path / "installer.log").exists()


def test_an_installer_url_without_a_hash_is_refused(tfrig, server, home):
    result = tfrig("conda.install", "--distribution", "miniforge", "--installer-url", f"{server.url}/x.sh", env=home)
    assert result.code == 1
    assert "tfrig can't know its SHA-256; pass --sha256 (or --sha256-url), or --unverified" in result.err


def test_miniforge_reads_the_sha256_file_beside_the_installer_and_needs_no_tos(tfrig, server, home):
    name = "Miniforge3-Linux-x86_64.sh"
    digest = server.publish(name, INSTALLER.replace("@DIST@", "miniforge"))
    server.publish(f"{name}.sha256", f"{digest}  {name}\n")
    result = tfrig(
        "conda.install",
        "--distribution",
        "miniforge",
        "--installer-url",
        f"{server.url}/{name}",
        "--sha256-url",
        f"{server.url}/{name}.sha256",
        "--prefix",
        "~/miniforge3",
        env=home,
    )
    assert result.code == 0, result.text
    prefix = Path(home["HOME"]) / "miniforge3"
    assert not (prefix / "tos").exists()
    created = tfrig("conda.create", "--prefix", "~/miniforge3", "--tf-version", "2.15", env=home)
    assert created.code == 0, created.text
    assert "creating env tf with Python 3.11" in created.out
    assert "create -y -q -n tf python=3.11" in (prefix / "calls.log").read_text()
    again = tfrig("conda.create", "--prefix", "~/miniforge3", env=home)
    assert "already done: env tf exists" in again.out
    listed = json_of(tfrig("conda.list", "--prefix", "~/miniforge3", "--json", env=home).out)
    assert listed["envs"] == [str(prefix), str(prefix / "envs" / "tf")]


@pytest.fixture
def miniconda(tfrig, server, home) -> Path:
    digest = server.publish(NAME, INSTALLER.replace("@DIST@", "miniconda"))
    result = tfrig(
        "conda.install", "--accept-tos", "--installer-url", f"{server.url}/{NAME}", "--sha256", digest, env=home
    )
    assert result.code == 0, result.text
    return Path(home["HOME"]) / "miniconda3"


def test_create_without_the_tos_accepted_says_how_to_fix_it(tfrig, miniconda, home):
    (miniconda / "tos").unlink()
    result = tfrig("conda.create", env=home)
    assert result.code == 1
    assert (
        "conda refuses the default channels until Anaconda's Terms of Service are accepted: run `inv conda.install --accept-tos`"
        in result.err
    )


def test_cuda_libraries_only_for_tensorflow_before_2_14(tfrig, miniconda, home):
    assert tfrig("conda.create", env=home).code == 0
    modern = tfrig("conda.cuda", "--tf-version", "2.21", env=home)
    assert "nothing to do: TensorFlow 2.21.0 brings its CUDA libraries with tensorflow[and-cuda]" in modern.out
    old = tfrig("conda.cuda", "--tf-version", "2.13", env=home)
    assert old.code == 0, old.text
    assert "install -y -q -n tf -c conda-forge cudatoolkit=11.8\n" in (miniconda / "calls.log").read_text()
    again = tfrig("conda.cuda", "--tf-version", "2.13", env=home)
    assert "already done: cudatoolkit=11.8 in env tf, on its library path" in again.out
    assert (miniconda / "calls.log").read_text().count("install -y") == 1


def test_the_envs_activation_puts_its_cuda_libraries_first_and_deactivation_restores(tfrig, miniconda, home):
    assert tfrig("conda.create", env=home).code == 0
    assert tfrig("conda.cuda", "--tf-version", "2.10", env=home).code == 0
    assert "cudatoolkit=11.2 cudnn=8.1.0.77" in (miniconda / "calls.log").read_text()
    env = miniconda / "envs" / "tf"
    cudnn = env / "lib" / "python3.11" / "site-packages" / "nvidia" / "cudnn" / "lib"
    cudnn.mkdir(parents=True)  # where pip puts nvidia-cudnn-cu11 (TensorFlow 2.12/2.13)
    shell = (
        f"export CONDA_PREFIX={env} LD_LIBRARY_PATH=/opt/mine; . {env}/etc/conda/activate.d/tfrig-cuda.sh; "
        f'echo "$LD_LIBRARY_PATH"; . {env}/etc/conda/deactivate.d/tfrig-cuda.sh; echo "$LD_LIBRARY_PATH"'
    )
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [f"{cudnn}:{env}/lib:/opt/mine", "/opt/mine"]


def test_remove_asks_and_yes_removes(tfrig, miniconda, home):
    assert tfrig("conda.create", env=home).code == 0
    refused = tfrig("conda.remove", env=home)
    assert refused.code == 1 and "pass --yes" in refused.err
    assert (miniconda / "envs" / "tf").is_dir()
    assert tfrig("conda.remove", "--yes", env=home).code == 0
    assert not (miniconda / "envs" / "tf").exists()
