"""What tf.install runs on a target in a given state (MockContext): conda env or venv, the pinned
requirement, and the refusals."""

from __future__ import annotations

import json
import re
import shlex

import pytest
from invoke import Result
from invoke.exceptions import Exit

from tests.plan import commands, context
from tfrig.knowledge.catalog import compat
from tfrig.tasks import tf


def env_facts(
    system: str | None = "3.12.3",
    conda: dict | None = None,
    venv: dict | None = None,
    gpu: str | None = None,
) -> dict[str, tuple[int, str]]:
    """What environment()'s probe answers: the facts script's JSON (env: python, tf, pip, packages,
    conda_packages) and nvidia-smi's line."""

    def described(env: dict | None) -> dict | None:
        if env is None:
            return None
        packages = {**env.get("packages", {}), **({"tensorflow": env["tf"]} if env.get("tf") else {})}
        return {
            "python_runs": env.get("runs", True),
            "python_version": env.get("python"),
            "pip": env.get("pip", True),
            "packages": packages,
            "conda_packages": env.get("conda_packages", {}),
        }

    facts = {"system_python": system, "conda": described(conda), "venv": described(venv)}
    return {"tf_env": (0, json.dumps(facts)), "gpu": (0, gpu) if gpu else (127, "")}


NOTHING = env_facts()
VENV_SCRIPT = re.compile(r"^env VENV='~/tf-venv' AS_USER=\S+ bash -c .*python-venv\.sh'?$", re.S)
PIP = re.compile(r".* -c .*Install packages into this Python.*", re.S)


def install_command(command: str) -> tuple[str, dict, list[str], list[str]]:
    """scripts/tf-install.py's command line: the env's Python, its argument, pip's options, packages."""
    words = shlex.split(command)
    at = words.index("-c")
    rest = words[at + 3 :]
    return words[at - 1], json.loads(words[at + 2]), rest[: rest.index("--")], rest[rest.index("--") + 1 :]


@pytest.fixture(autouse=True)
def as_root(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 0)


def test_fresh_host_gets_a_venv_and_the_cpu_build(capsys):
    c = context(
        "tf.install",
        probes=[NOTHING, env_facts(venv={"python": "3.12.3", "tf": "2.21.0"})],
        changes={VENV_SCRIPT: Result(), PIP: Result()},
    )
    tf.install(c)
    ran = commands(c)
    assert ran[0] == "probe" and VENV_SCRIPT.match(ran[1]) and ran[3] == "probe"
    python, argument, options, packages = install_command(ran[2])
    assert ran[2].startswith('"$HOME"/tf-venv/bin/python -c ') and python == "$HOME/tf-venv/bin/python"
    assert argument["installer"] == "uv" and argument["uv"]["version"] == compat()["uv_installer"]["version"]
    assert options == ["--disable-pip-version-check", "-q"] and packages == ["tensorflow==2.21.0"]


def test_installer_pip_keeps_pip_and_a_bad_installer_is_refused_before_anything():
    c = context(
        "tf.install",
        probes=[
            env_facts(venv={"python": "3.12.3", "pip": True}),
            env_facts(venv={"python": "3.12.3", "tf": "2.21.0"}),
        ],
        changes={PIP: Result(stdout="installer: pip\n")},
    )
    tf.install(c, installer="pip")
    assert install_command(commands(c)[1])[1]["installer"] == "pip"
    bad = context("tf.install", probes=[NOTHING])
    with pytest.raises(Exit, match=r"^--installer conda: choose uv or pip\.$"):
        tf.install(bad, installer="conda")
    assert commands(bad) == []


def test_what_the_install_script_says_reaches_the_user(capsys):
    said = "note: pip's setting user (PIP_USER) has no uv equivalent in tfrig: installing with pip"
    c = context(
        "tf.install",
        probes=[
            env_facts(venv={"python": "3.12.3", "pip": True}),
            env_facts(venv={"python": "3.12.3", "tf": "2.21.0"}),
        ],
        changes={PIP: Result(stdout=f"{said}\ninstaller: pip\nSuccessfully installed tensorflow\n")},
    )
    tf.install(c, json=True)
    shown = capsys.readouterr()
    assert f"[local] {said}" in shown.err and "TensorFlow 2.21.0 installed (with pip)" in shown.err
    assert json.loads(shown.out)["installer"] == "pip"


def test_a_gpu_host_gets_and_cuda_into_its_conda_env(capsys):
    conda = {"python": "3.11.9"}
    c = context(
        "tf.install",
        probes=[
            env_facts(conda=conda, gpu="580.159.04, 8.9"),
            env_facts(conda={**conda, "tf": "2.21.0"}, gpu="580.159.04, 8.9"),
        ],
        changes={PIP: Result(), "test -e /wheels": Result()},
    )
    tf.install(c, find_links="/wheels")
    assert commands(c)[1] == "test -e /wheels"  # there on the target, before pip
    python, _, options, packages = install_command(commands(c)[2])
    assert python == "$HOME/miniconda3/envs/tf/bin/python"
    assert options == ["--disable-pip-version-check", "-q", "--find-links", "/wheels"]
    assert packages == ["tensorflow[and-cuda]==2.21.0"]
    assert "installing tensorflow[and-cuda]==2.21.0 into ~/miniconda3/envs/tf" in capsys.readouterr().out


def test_a_find_links_folder_missing_on_the_target_stops_before_pip():
    c = context(
        "tf.install",
        probes=[env_facts(conda={"python": "3.11.9"}, gpu="580.159.04, 8.9")],
        changes={"test -e /wheels": Result(exited=1)},
    )
    with pytest.raises(Exit) as refused:
        tf.install(c, find_links="/wheels")
    assert refused.value.message == "[local] tf.install: --find-links /wheels: no such folder there."
    assert commands(c) == ["probe", "test -e /wheels"]


def test_the_right_version_already_there_is_a_no_op(capsys):
    c = context("tf.install", probes=[env_facts(venv={"python": "3.12.3", "tf": "2.21.0"})])
    tf.install(c)
    assert commands(c) == ["probe"]
    assert "already done: TensorFlow 2.21.0 in venv ~/tf-venv" in capsys.readouterr().out


def test_an_old_release_with_a_gpu_needs_conda_for_its_cuda_libraries():
    c = context("tf.install", probes=[env_facts(system="3.10.12", gpu="535.261.03, 7.5")])
    with pytest.raises(Exit, match=re.escape("takes its CUDA libraries from conda-forge (cudatoolkit=11.8)")):
        tf.install(c, version="2.13")
    assert commands(c) == ["probe"]


def test_an_old_release_in_a_conda_env_without_its_cuda_packages_is_sent_to_conda_cuda():
    conda = {"python": "3.10.14", "conda_packages": {"cudatoolkit": "11.2.2"}}
    c = context("tf.install", probes=[env_facts(conda=conda, gpu="535.261.03, 7.5")])
    with pytest.raises(Exit, match=re.escape("from conda-forge (cudnn=8.1.0.77): run `inv conda.install")):
        tf.install(c, version="2.10")


def test_tensorflow_2_13_on_the_conda_route_installs_pips_cudnn_and_runs_with_the_envs_libraries(capsys):
    conda = {"python": "3.11.9", "conda_packages": {"cudatoolkit": "11.8.0"}}
    done = {**conda, "tf": "2.13.0", "packages": {"nvidia_cudnn_cu11": "8.6.0.163"}}
    c = context(
        "tf.install",
        probes=[env_facts(conda=conda, gpu="535.261.03, 7.5"), env_facts(conda=done, gpu="535.261.03, 7.5")],
        changes={PIP: Result()},
    )
    tf.install(c, version="2.13")
    pip = commands(c)[1]
    env = '"$HOME"/miniconda3/envs/tf'
    library_path = (
        f'{env}/lib/python3.11/site-packages/nvidia/cudnn/lib:{env}/lib"${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"'
    )
    assert pip.startswith(f"env LD_LIBRARY_PATH={library_path} {env}/bin/python -c ")
    assert install_command(pip)[3] == ["tensorflow==2.13.0", "nvidia-cudnn-cu11==8.6.0.163"]
    again = context("tf.install", probes=[env_facts(conda=done, gpu="535.261.03, 7.5")])
    tf.install(again, version="2.13")
    assert commands(again) == ["probe"]
    assert "already done: TensorFlow 2.13.0 in conda" in capsys.readouterr().out


def test_the_targets_python_outside_the_range_is_refused_with_what_works():
    c = context("tf.install", probes=[NOTHING])
    with pytest.raises(Exit, match=re.escape("the target's Python is 3.12.3, and TensorFlow 2.15.0 supports 3.9–3.11")):
        tf.install(c, version="2.15")


def test_a_driver_too_old_for_the_cuda_is_refused():
    c = context("tf.install", probes=[env_facts(gpu="470.82.01, 7.5")])
    with pytest.raises(Exit, match=re.escape("driver 470.82.01 is below 555.42.02")):
        tf.install(c)


def test_a_gpu_install_of_2_16_into_a_venv_links_the_cuda_libraries(capsys):
    venv = {"python": "3.12.3"}
    links = re.compile(r"^env VENV='~/tf-venv' bash -c .*tf-cuda-links\.sh'?$", re.S)
    c = context(
        "tf.install",
        probes=[env_facts(venv=venv, gpu="580.159.04, 7.5"), env_facts(venv={**venv, "tf": "2.16.1"})],
        changes={PIP: Result(), links: Result()},
    )
    tf.install(c, version="2.16")
    ran = commands(c)
    assert ran[1].endswith("'tensorflow[and-cuda]==2.16.1'") and links.match(ran[2])
    assert "linking the pip CUDA libraries into TensorFlow's folder" in capsys.readouterr().out


def test_the_library_links_script_links_what_tensorflows_pip_page_says(tmp_path):
    """scripts/tf-cuda-links.sh on a venv laid out as pip lays out tensorflow[and-cuda]."""
    import subprocess
    import sys

    venv = tmp_path / "venv"
    site = venv / "lib" / "python3" / "site-packages"
    (site / "tensorflow").mkdir(parents=True)
    (site / "tensorflow" / "__init__.py").write_text("")
    for package, library in (("cublas", "libcublas.so.12"), ("cudnn", "libcudnn.so.8")):
        (site / "nvidia" / package / "lib").mkdir(parents=True)
        (site / "nvidia" / package / "lib" / library).write_text("")
    (site / "nvidia" / "cuda_nvcc" / "bin").mkdir(parents=True)
    (site / "nvidia" / "cuda_nvcc" / "__init__.py").write_text("")
    (site / "nvidia" / "cuda_nvcc" / "bin" / "ptxas").write_text("")
    (venv / "bin").mkdir()
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} "$@"\n')
    (venv / "bin" / "python").chmod(0o755)
    from tfrig.hosts.host import SCRIPTS

    for _ in range(2):  # idempotent
        done = subprocess.run(
            ["bash", str(SCRIPTS / "tf-cuda-links.sh")], env={"VENV": str(venv), "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert (site / "tensorflow" / "libcublas.so.12").resolve() == (site / "nvidia/cublas/lib/libcublas.so.12").resolve()
    assert (site / "tensorflow" / "libcudnn.so.8").is_symlink()
    assert (venv / "bin" / "ptxas").resolve() == (site / "nvidia/cuda_nvcc/bin/ptxas").resolve()


def verify_output(ops: list[dict], gpus: list[dict], log: str = "") -> str:
    import json

    report = {
        "tensorflow": "2.21.0",
        "python": "3.12.3",
        "built_with_cuda": True,
        "cuda": "12.5.1",
        "cudnn": "9",
        "gpus": gpus,
        "ops": ops,
        "device": ops[0]["device"],
        "result_ok": all(op["ok"] for op in ops),
        "seconds": 3.2,
    }
    return log + "@@tfrig-verify " + json.dumps(report) + "\n"


GPU0 = "/job:localhost/replica:0/task:0/device:GPU:0"
CPU0 = "/job:localhost/replica:0/task:0/device:CPU:0"
T4 = [{"name": "Tesla T4", "compute_capability": "7.5"}]
WITH_TF = env_facts(venv={"python": "3.12.3", "tf": "2.21.0"}, gpu="580.159.04, 7.5")


@pytest.mark.parametrize(
    ("ops", "log", "message"),
    [
        (
            [{"op": "matmul", "device": GPU0, "ok": True, "ms": 3.0},
             {"op": "reduce_sum(random.normal)", "device": CPU0, "ok": True, "ms": 1.0}],
            "",
            f"TensorFlow lists a GPU but ran reduce_sum(random.normal) on {CPU0}: the GPU did not do the work",
        ),
        (
            [{"op": "matmul", "device": GPU0, "ok": True, "ms": 3.0},
             {"op": "reduce_sum(random.normal)", "device": "/GPU:0", "ok": False,
              "error": "InternalError: 'cuLaunchKernel(...)' failed with 'CUDA_ERROR_INVALID_HANDLE'"}],
            "W tf_gpu_runtime_wrappers.cc:40] 'cuModuleLoadData(&module, data)' failed with "
            "'CUDA_ERROR_UNSUPPORTED_PTX_VERSION'\n",
            "TensorFlow's reduce_sum(random.normal) on /GPU:0 failed: InternalError",
        ),
    ],
    ids=["placed-on-cpu", "ptx-jit-fails"],
)  # fmt: skip
def test_verify_proves_the_gpu_did_the_work(ops, log, message):
    c = context("tf.verify", probes=[WITH_TF], changes={re.compile(r".* -c .*"): Result(verify_output(ops, T4, log))})
    with pytest.raises(Exit, match=re.escape(message)) as refused:
        tf.verify(c)
    if "ptx" in log.lower():
        assert "CUDA_ERROR_UNSUPPORTED_PTX_VERSION" in str(refused.value)


def test_verify_reports_each_op_its_device_and_time(capsys):
    ops = [{"op": "matmul", "device": GPU0, "ok": True, "ms": 3.0},
           {"op": "reduce_sum(random.normal)", "device": GPU0, "ok": True, "ms": 1.5}]  # fmt: skip
    c = context("tf.verify", probes=[WITH_TF], changes={re.compile(r".* -c .*"): Result(verify_output(ops, T4))})
    tf.verify(c)
    out = capsys.readouterr().out
    assert f"matmul on {GPU0}: correct in 3.0 ms" in out
    assert f"reduce_sum(random.normal) on {GPU0}: correct in 1.5 ms" in out
    assert "GPUs: Tesla T4 (compute capability 7.5)" in out


def test_the_env_facts_script_reads_envs_as_pip_venv_and_conda_lay_them_out(tmp_path):
    """scripts/tf-env-facts.py on real folders: a ready venv, a half-made one, a conda env with the
    CUDA route's packages, and a 1.x tensorflow-gpu, all in one interpreter start."""
    import subprocess
    import sys

    from tfrig.hosts.host import SCRIPTS

    def make_env(path, python_link, files):
        (path / "bin").mkdir(parents=True)
        (path / "bin" / "python").symlink_to(python_link)
        for name, text in files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_text(text)

    site = "lib/python3.11/site-packages"
    venv, conda = tmp_path / "venv", tmp_path / "miniconda3" / "envs" / "tf"
    make_env(venv, sys.executable, {"pyvenv.cfg": "home = /usr/bin\nversion = 3.11.2\n", "bin/pip": ""})
    (venv / "bin" / "pip").chmod(0o755)
    (venv / site / "tensorflow-2.21.0.dist-info").mkdir(parents=True)
    (venv / site / "~ensorflow-2.20.0.dist-info").mkdir()  # what pip leaves of an interrupted upgrade
    make_env(
        conda,
        sys.executable,
        {
            "conda-meta/python-3.11.9-h955ad1f_0.json": "{}",
            "conda-meta/cudatoolkit-11.8.0-h6a678d5_0.json": "{}",
            "conda-meta/libstdcxx-ng-11.2.0-h1234567_1.json": "{}",
        },
    )
    (conda / site / "tensorflow-2.13.0.dist-info").mkdir(parents=True)
    (conda / site / "nvidia_cudnn_cu11-8.6.0.163.dist-info").mkdir()

    def facts(conda_env, venv_path):
        script = (SCRIPTS / "tf-env-facts.py").read_text()
        done = subprocess.run(
            [sys.executable, "-c", script, str(conda_env), str(venv_path), "system"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return json.loads(done.stdout)

    found = facts(conda, venv)
    assert found["system_python"] == ".".join(str(p) for p in sys.version_info[:3])
    assert found["venv"] == {
        "python_runs": True, "python_version": "3.11.2", "pip": True, "packages": {"tensorflow": "2.21.0"},
        "conda_packages": {},
    }  # fmt: skip
    assert found["conda"]["python_version"] == "3.11.9"
    assert found["conda"]["conda_packages"] == {"cudatoolkit": "11.8.0"}
    assert found["conda"]["packages"] == {"tensorflow": "2.13.0", "nvidia_cudnn_cu11": "8.6.0.163"}

    (venv / "bin" / "pip").unlink()  # a venv made without ensurepip
    (venv / site / "tensorflow-2.21.0.dist-info").rename(venv / site / "tensorflow_gpu-1.15.0.dist-info")
    half = facts(tmp_path / "none", venv)
    assert half["conda"] is None and half["venv"]["pip"] is False
    assert half["venv"]["packages"] == {"tensorflow_gpu": "1.15.0"}
    (venv / "bin" / "python").unlink()
    (venv / "bin" / "python").symlink_to(tmp_path / "gone")  # its base Python was removed
    assert facts(tmp_path / "none", venv)["venv"]["python_runs"] is False
