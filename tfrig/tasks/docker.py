"""docker: Docker Engine, the NVIDIA Container Toolkit and TensorFlow containers."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from typing import Any

from invoke import Collection
from invoke.exceptions import Exit

from tfrig.hosts import targets
from tfrig.hosts.host import Host
from tfrig.hosts.runner import on_targets
from tfrig.settings import setting
from tfrig.tasks.taskdef import (
    COLAB_PASTE,
    HOSTS_HELP,
    JSON_HELP,
    checked_name,
    free_local_port,
    port_number,
    task,
    wait_for_listener,
)
from tfrig.ui import confirm, info_stream, print_json, table

NOTEBOOK_PORT = 8888
# Colab's Docker runtime, as its local-runtimes page gives it
# (research.google.com/colaboratory/local-runtimes.html: `docker run --gpus=all -p
# 127.0.0.1:9000:8080 us-docker.pkg.dev/colab-images/public/runtime`; linux/amd64 only).
COLAB_RUNTIME = "us-docker.pkg.dev/colab-images/public/runtime"
COLAB_PORT = 9000
COLAB_CONTAINER_PORT = 8080


def _setting(c: Any, key: str, value: Any) -> Any:
    return setting(c, "docker", key, value)


# --- install -------------------------------------------------------------------------------------


def _install_facts(host: Host, user: str) -> dict[str, Any]:
    facts = host.probe(
        {
            "os": '. /etc/os-release && echo "$ID $VERSION_ID"',
            "dockerd": "command -v dockerd",
            "engine": "docker info --format '{{.ServerVersion}}'",
            "groups": f"id -nG {shlex.quote(user)}",
        },
        sudo=True,
    )
    os_id = facts["os"].out.split()[0] if facts["os"].ok and facts["os"].out else "unknown"
    return {
        "os": facts["os"].out if facts["os"].ok else "unknown",
        "supported": os_id in ("debian", "ubuntu"),
        "installed": facts["dockerd"].ok,
        "engine": facts["engine"].out.strip() if facts["engine"].ok else None,
        "in_group": user == "root" or "docker" in facts["groups"].out.split(),
    }


@task(
    help={
        "method": "repo (Docker's apt repository, default), distro (the docker.io package) or script (get.docker.com)",
        "user": "user to add to the docker group (default: the user tfrig connects as)",
        "start": "start the engine and check that it answers (default yes; --no-start leaves it)",
        "sha256": "with --method script: the SHA-256 the downloaded script must have",
        "unverified": "with --method script and no --sha256: run it anyway, accepting the risk",
        "hosts": HOSTS_HELP,
        "json": JSON_HELP,
    }
)
def install(c, method=None, user=None, start=True, sha256=None, unverified=False, hosts=None, json=False):
    """Install Docker Engine, add the user to the docker group, start and verify it."""
    method = _setting(c, "install_method", method)
    if user is not None:
        checked_name("user", "user", user)
    if method not in ("repo", "distro", "script"):
        raise Exit(f"--method {method}: choose repo, distro or script.")
    if method == "script" and not sha256 and not unverified:
        raise Exit(
            "--method script downloads get.docker.com and runs it as root; Docker publishes no hash "
            "for it, so pass --sha256 of the copy you reviewed (curl -fsSL https://get.docker.com | "
            "sha256sum), or --unverified to accept the risk."
        )
    if sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise Exit("--sha256 must be 64 hex digits.")

    def work(host: Host) -> dict[str, Any]:
        who = user or host.user
        before = _install_facts(host, who)
        if not before["supported"]:
            raise Exit(f"[{host.label}] {before['os']}: docker.install supports Debian and Ubuntu only.")
        running_ok = before["engine"] is not None or not start
        if before["installed"] and running_ok and before["in_group"]:
            host.say(f"already done: Docker {before['engine'] or '(not started)'} installed, {who} in the docker group")
            return {"changed": False, "engine": before["engine"], "user": who, "method": method}
        env = {"METHOD": method, "DOCKER_USER": who, "START": "1" if start else "0"}
        if sha256:
            env["SCRIPT_SHA256"] = sha256.lower()
        if unverified:
            env["UNVERIFIED"] = "1"
        if before["installed"]:
            host.say("Docker is installed; setting up what is missing")
        else:
            host.say(f"installing Docker ({method}) on {before['os']}")
        host.script("install-docker.sh", env, progress=f"installing Docker ({method})")
        if host.dry:
            return {"changed": True, "engine": None, "user": who, "method": method, "dry": True}
        after = _install_facts(host, who)
        if not after["installed"] or (start and after["engine"] is None):
            raise Exit(f"[{host.label}] Docker did not come up; see the host log under the state dir.")
        if not before["in_group"] and who != "root":
            host.say(
                f"added {who} to the docker group: that is root-equivalent, and it takes effect at "
                f"their next login (or `newgrp docker`)"
            )
            host.new_session()  # the next steps of this run log in anew, in the docker group
        host.say(f"Docker {after['engine'] or '(not started)'} ready")
        return {"changed": True, "engine": after["engine"], "user": who, "method": method}

    on_targets(c, work, hosts=hosts, json_out=json, summary=lambda r: f"Docker {r.get('engine')}")


# --- toolkit -------------------------------------------------------------------------------------


def ensure_toolkit(host: Host) -> dict[str, Any]:
    """The NVIDIA Container Toolkit installed and its runtime registered with Docker."""
    facts = host.probe(
        {
            "driver": "cat /proc/driver/nvidia/version",
            "ctk": "nvidia-ctk --version",
            "runtimes": "docker info --format '{{json .Runtimes}}'",
        },
        sudo=True,
    )
    if not facts["driver"].ok:
        raise Exit(
            f"[{host.label}] no NVIDIA driver is loaded here, so containers can't get a GPU: "
            f"run `inv driver.install` (or gpu.setup --docker) first."
        )
    if not facts["runtimes"].ok:
        raise Exit(f"[{host.label}] the Docker engine does not answer: run `inv docker.install` first.")
    if facts["ctk"].ok and '"nvidia"' in facts["runtimes"].out:
        host.say("already done: NVIDIA Container Toolkit installed, nvidia runtime registered")
        return {"changed": False}
    host.say("installing the NVIDIA Container Toolkit")
    host.script("install-container-toolkit.sh", {})
    return {"changed": True}


@task(help={"hosts": HOSTS_HELP, "json": JSON_HELP})
def toolkit(c, hosts=None, json=False):
    """Install the NVIDIA Container Toolkit and register the nvidia runtime with Docker."""
    on_targets(c, ensure_toolkit, hosts=hosts, json_out=json)


# --- the engine through the SDK -------------------------------------------------------------------


def _engine_target(c: Any, hosts: str | None) -> targets.Target:
    """The one target whose engine this task uses (checked under --dry too)."""
    chosen = targets.resolve(c, hosts=hosts)
    if len(chosen) > 1:
        raise Exit("This docker task talks to one engine at a time; give one host.")
    return chosen[0]


def _engine(c: Any, hosts: str | None) -> Any:
    """The SDK client for this task's engine: local (or DOCKER_HOST), or a host's over ssh://."""
    from tfrig import engine

    target = _engine_target(c, hosts)
    if target.is_local:
        return engine.client()
    # Over tfrig's own connection: its key, and the host key checked as for every other task
    # (tfrig.hosts.hostkeys), with the same one-line refusal.
    from tfrig.hosts.host import connect, describe_error

    try:
        conn = connect(c, target)
        conn.open()
        return engine.client_over(conn, target.label)
    except Exit:
        raise
    except Exception as exc:
        raise Exit(f"[{target.label}] {describe_error(exc)}") from None


def _tf_image(c: Any, image: str | None, version: str | None, gpu: bool, jupyter: bool) -> str:
    from tfrig.knowledge import images as tf_images

    if image:
        return tf_images.check_image(image)
    return f"{tf_images.REPOSITORY}:{tf_images.tf_tag(_setting(c, 'version', version), gpu=gpu, jupyter=jupyter)}"


def _pull(c: Any, engine_client: Any, image: str, mirror: str | None, out: Any) -> str:
    from tfrig import engine
    from tfrig.knowledge import images as tf_images

    source = tf_images.mirrored(image, mirror) if mirror else image
    print(f"pulling {source}", file=out, flush=True)
    engine.pull(engine_client, source, out=out)
    if mirror:
        repository, tag = tf_images.split_image(image)
        engine_client.images.get(source).tag(repository, tag)
        print(f"tagged {source} as {image}", file=out, flush=True)
    return source


@task(
    help={
        "version": "TensorFlow release, e.g. 2.21.0 (default: latest, or docker.version)",
        "gpu": "the GPU image (-gpu tag)",
        "jupyter": "the Jupyter image (-jupyter tag)",
        "image": "any other image, by full name",
        "mirror": "registry mirror HOST[:PORT]: pull HOST/IMAGE and tag it as IMAGE (or docker.mirror)",
        "hosts": "one user@host:port whose engine to use, over ssh:// (default: the local engine)",
        "json": JSON_HELP,
    }
)
def pull(c, version=None, gpu=False, jupyter=False, image=None, mirror=None, hosts=None, json=False):
    """Pull a TensorFlow image by intent (version, GPU, Jupyter), optionally through a mirror."""
    from tfrig.knowledge.images import mirrored

    wanted = _tf_image(c, image, version, gpu, jupyter)
    mirror = _setting(c, "mirror", mirror) or None
    source = mirrored(wanted, mirror) if mirror else wanted  # a bad --mirror: one line before any engine
    out = info_stream(json)
    if c.config.run.dry:
        _engine_target(c, hosts)
        print(f"would pull {source}" + (f" and tag it {wanted}" if mirror else ""), file=out)
        return
    engine_client = _engine(c, hosts)
    source = _pull(c, engine_client, wanted, mirror, out)
    pulled = engine_client.images.get(wanted)
    result = {"image": wanted, "source": source, "id": pulled.id}
    if json:
        print_json(result)
    else:
        print(f"{wanted} ready ({pulled.short_id})")


def _gpu_request(engine_client: Any, out: Any) -> dict[str, Any]:
    """Run options that give a container every GPU: a device request, or the legacy runtime."""
    from docker.types import DeviceRequest
    from packaging.version import Version

    api = engine_client.api.api_version
    if Version(api) >= Version("1.40"):
        return {"device_requests": [DeviceRequest(count=-1, capabilities=[["gpu"]])]}
    print(
        f"engine API {api} predates --gpus (1.40, Docker 19.03): using the legacy nvidia runtime",
        file=out,
    )
    return {"runtime": "nvidia"}


def _gpu_failure(c: Any, error: str) -> Exit:
    """Turn the engine's GPU error into the doctor's explanation."""
    checks = _doctor_checks(Host(c, targets.LOCAL, out=sys.stderr), image=None)
    failed = [f"{ch['check']}: {ch['detail']} -> {ch['fix']}" for ch in checks if ch["ok"] is False]
    reasons = "; ".join(failed) or "see `inv docker.doctor`"
    return Exit(f"The container can't get a GPU ({error}). {reasons}")


def _colab_runtime(
    c: Any, target: targets.Target, name: str, port: int, result: dict[str, Any], json: bool, out: Any
) -> None:
    """Print the URL Colab asks for ("Connect to a local runtime"); for a remote engine, at this
    machine's end of an SSH tunnel to the runtime's port there, held until Ctrl-C."""
    from tfrig.hosts.host import connect, hold_tunnel

    stop = f"`inv docker.rm {name} --force{f' -H {target.label}' if not target.is_local else ''}` stops it"

    def show(how: str) -> None:
        if json:
            print_json(result)
        else:
            print(f"{COLAB_PASTE} {result['url']}  ({how})", flush=True)

    if target.is_local:
        show(stop)
        return

    def opened() -> None:
        wait_for_listener(port)  # Fabric binds the tunnel's port in a thread of its own
        show("SSH tunnel open; Ctrl-C closes it")

    hold_tunnel(connect(c, target), port, port, opened)
    print(f"tunnel closed; Colab's runtime keeps running on {target.label}: {stop}", file=out)


def _jupyter_url(container: Any, port: int, what: str = "Jupyter", timeout: float = 90) -> str:
    """Wait for the notebook server to print its token and return the URL on 127.0.0.1."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = container.logs().decode(errors="replace")
        match = re.search(r"https?://[^\s/]+:\d+/\S*token=([0-9a-f]+)", logs)
        if match:
            return f"http://127.0.0.1:{port}/?token={match[1]}"
        container.reload()
        if container.status == "exited":
            raise Exit(f"{what} stopped before it was ready: {logs.strip()[-500:]}")
        time.sleep(1)
    raise Exit(f"{what} printed no token within {timeout:.0f} s; see `docker logs {container.name}`.")


@task(
    help={
        "version": "TensorFlow release for the image (default: latest, or docker.version)",
        "image": "run this image instead of a TensorFlow one",
        "cmd": "command to run (through sh -c); its output streams and its exit code is passed on",
        "detach": "run in the background (keep the container)",
        "name": "container name",
        "gpu": "give the container every GPU (the -gpu image unless --image)",
        "jupyter": "the Jupyter image, detached, port published on 127.0.0.1 only; prints the URL",
        "colab": "Colab's runtime image (a local runtime for Colab), detached, with the engine's GPUs, on "
        "127.0.0.1 (through an SSH tunnel for -H); prints the URL to paste into Colab",
        "port": f"port on 127.0.0.1 for --jupyter (default {NOTEBOOK_PORT}) or --colab (default {COLAB_PORT})",
        "workdir": "mount this folder at /tf/work and start there",
        "mirror": "registry mirror to pull through if the image is missing (or docker.mirror)",
        "hosts": "one user@host:port whose engine to use, over ssh:// (default: the local engine)",
        "json": JSON_HELP,
    }
)
def run(
    c,
    version=None,
    image=None,
    cmd=None,
    detach=False,
    name=None,
    gpu=False,
    jupyter=False,
    colab=False,
    port=None,
    workdir=None,
    mirror=None,
    hosts=None,
    json=False,
):
    """Run a TensorFlow container: an interactive shell, a command, detached, Jupyter, or Colab's runtime."""
    if colab and (jupyter or cmd):
        raise Exit("--colab runs Colab's own runtime: leave out --jupyter and --cmd.")
    port = port_number("port", port or (COLAB_PORT if colab else NOTEBOOK_PORT))
    wanted = _tf_image(c, image, version, gpu, jupyter) if image or not colab else COLAB_RUNTIME
    mirror = _setting(c, "mirror", mirror) or None
    if mirror:
        from tfrig.knowledge import images as tf_images

        tf_images.check_mirror(mirror)
    out = info_stream(json)
    options: dict[str, Any] = {"name": checked_name("name", "container", name)} if name else {}
    volumes = {}
    if workdir:
        folder = os.path.abspath(os.path.expanduser(workdir))
        if not os.path.isdir(folder):
            raise Exit(f"--workdir {workdir}: no such folder.")
        volumes[folder] = {"bind": "/tf/work", "mode": "rw"}
        options.update(volumes=volumes, working_dir="/tf/work")
    if jupyter or colab:
        detach = True
        inside = COLAB_CONTAINER_PORT if colab else NOTEBOOK_PORT
        options["ports"] = {f"{inside}/tcp": ("127.0.0.1", int(port))}
    target = _engine_target(c, hosts)
    if colab and not target.is_local:
        free_local_port("port", port)  # this machine's end of the tunnel
    interactive = not (cmd or detach)
    if interactive and not sys.stdin.isatty() and not c.config.run.dry:
        raise Exit('An interactive shell needs a terminal; pass --cmd "..." or --detach.')

    if c.config.run.dry:
        request = {
            "image": wanted,
            "command": ["sh", "-c", cmd] if cmd else None,
            "detach": detach,
            **options,
        }
        if gpu:
            request["device_requests"] = [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]
        print("would create and start a container: " + _json_line(request), file=out)
        return

    from tfrig import engine

    engine_client = _engine(c, hosts)
    if not engine.has_image(engine_client, wanted):
        _pull(c, engine_client, wanted, mirror, out)
    if colab and not gpu:
        # The engine's GPUs where the NVIDIA Container Toolkit registered its runtime with it
        # (`nvidia-ctk runtime configure --runtime=docker`, as docker.toolkit runs).
        gpu = "nvidia" in (engine_client.info().get("Runtimes") or {})
        if not gpu:
            print("note: this engine has no NVIDIA runtime (docker.toolkit): Colab's runtime gets no GPU", file=out)
    if gpu:
        options.update(_gpu_request(engine_client, out))
    if interactive:
        _interactive(c, wanted, options, gpu)
        return

    from docker.errors import APIError

    try:
        container = engine_client.containers.create(
            wanted, command=["sh", "-c", cmd] if cmd else None, detach=True, **options
        )
    except APIError as exc:
        raise Exit(f"Creating the container failed: {engine.api_error(exc)}") from None
    try:
        container.start()
    except APIError as exc:
        container.remove(force=True)
        error = engine.api_error(exc)
        if gpu and ("gpu" in error or "nvidia" in error):
            raise _gpu_failure(c, error) from None
        raise Exit(f"Starting the container failed: {error}") from None

    if detach:
        container.reload()
        result = {
            "id": container.id,
            "name": container.name,
            "image": wanted,
            "status": container.status,
        }
        if jupyter or colab:
            result["url"] = _jupyter_url(container, int(port), "Colab's runtime" if colab else "Jupyter")
        if colab:
            _colab_runtime(c, target, container.name, int(port), result, json, out)
            return
        if json:
            print_json(result)
        else:
            print(f"started {container.name} ({container.short_id}) from {wanted}")
            if jupyter:
                print(f"Jupyter: {result['url']}  (stop with `inv docker.rm {container.name} --force`)")
        return

    try:
        for chunk in container.logs(stream=True, follow=True):
            (sys.stderr if json else sys.stdout).write(chunk.decode(errors="replace"))
        status = container.wait()
    finally:
        container.remove(force=True)
    code = int(status.get("StatusCode", 1))
    if json:
        print_json({"image": wanted, "exit_code": code})
    if code:
        raise Exit(code=code)


def _interactive(c: Any, image: str, options: dict[str, Any], gpu: bool) -> None:
    """An interactive shell needs a real TTY, which the docker CLI handles best."""
    argv = ["docker", "run", "-it", "--rm"]
    if gpu:
        argv += ["--runtime=nvidia"] if options.get("runtime") else ["--gpus", "all"]
    if options.get("name"):
        argv += ["--name", options["name"]]
    for folder, bind in options.get("volumes", {}).items():
        argv += ["-v", f"{folder}:{bind['bind']}", "-w", bind["bind"]]
    argv += [image, "bash"]
    c.run(shlex.join(argv), pty=True, warn=True)


def _json_line(data: Any) -> str:
    return json.dumps(data, default=str, sort_keys=True)


# --- everyday listing and removal ---------------------------------------------------------------


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@task(help={"all": "include stopped containers", "hosts": "one engine over ssh://", "json": JSON_HELP})
def ps(c, all=False, hosts=None, json=False):
    """List containers."""
    engine_client = _engine(c, hosts)
    rows = []
    for container in engine_client.containers.list(all=all):
        tags = container.attrs.get("Config", {}).get("Image", "")
        ports = container.attrs.get("NetworkSettings", {}).get("Ports") or {}
        published = [f"{b['HostIp']}:{b['HostPort']}->{p}" for p, binds in ports.items() for b in binds or []]
        rows.append(
            {
                "id": container.short_id,
                "name": container.name,
                "image": tags,
                "status": container.status,
                "ports": published,
            }
        )
    if json:
        print_json(rows)
    else:
        table(
            ["id", "name", "image", "status", "ports"],
            [(r["id"], r["name"], r["image"], r["status"], ", ".join(r["ports"])) for r in rows],
        )


@task(help={"hosts": "one engine over ssh://", "json": JSON_HELP})
def images_(c, hosts=None, json=False):
    """List images."""
    engine_client = _engine(c, hosts)
    rows = []
    for image in engine_client.images.list():
        rows.append(
            {
                "id": image.short_id.removeprefix("sha256:"),
                "tags": image.tags,
                "size_mb": round(image.attrs.get("Size", 0) / 1e6, 1),
                "created": image.attrs.get("Created", "")[:19],
            }
        )
    if json:
        print_json(rows)
    else:
        table(
            ["id", "tags", "size MB", "created"],
            [(r["id"], ", ".join(r["tags"]) or "<none>", r["size_mb"], r["created"]) for r in rows],
        )


@task(
    help={
        "containers": "container names or ids, comma-separated",
        "force": "also remove running containers (stops them)",
        "yes": "don't ask",
        "hosts": "one engine over ssh://",
    },
)
def rm(c, containers, force=False, yes=False, hosts=None):
    """Remove containers (running ones only with --force)."""
    from docker.errors import APIError, NotFound

    containers = _names(containers)
    if not containers:
        raise Exit("Name the containers to remove: inv docker.rm NAME[,NAME...].")
    engine_client = _engine(c, hosts)
    found = []
    for ref in containers:
        try:
            found.append(engine_client.containers.get(ref))
        except NotFound:
            raise Exit(f"No container {ref}; `inv docker.ps --all` lists them.") from None
    running = [ct.name for ct in found if ct.status == "running"]
    if running and not force:
        raise Exit(f"{', '.join(running)} running; stop it first or pass --force. Nothing removed.")
    if c.config.run.dry:
        print(f"would remove {', '.join(ct.name for ct in found)}")
        return
    confirm(f"Remove {', '.join(ct.name for ct in found)}?", yes or c.config.tfrig.yes)
    for container in found:
        try:
            container.remove(force=force)
        except APIError as exc:
            raise Exit(f"Removing {container.name} failed: {exc.explanation}") from None
        print(f"removed {container.name}")


@task(
    help={
        "images": "image names or ids, comma-separated",
        "force": "remove even if tagged several times",
        "yes": "don't ask",
        "hosts": "one engine over ssh://",
    },
)
def rmi(c, images, force=False, yes=False, hosts=None):
    """Remove images (not while a container uses them)."""
    from docker.errors import APIError, ImageNotFound

    from tfrig.engine import api_error as engine_api_error

    images = _names(images)
    if not images:
        raise Exit("Name the images to remove: inv docker.rmi IMAGE[,IMAGE...].")
    engine_client = _engine(c, hosts)
    found = []
    for ref in images:
        try:
            found.append((ref, engine_client.images.get(ref)))
        except ImageNotFound:
            raise Exit(f"No image {ref}; `inv docker.images` lists them.") from None
        except APIError as exc:  # e.g. "invalid reference format": not an image name at all
            raise Exit(f"'{ref[:80]}' is not an image name the engine takes: {engine_api_error(exc)}") from None
    ids = {image.id for _, image in found}
    users = [ct.name for ct in engine_client.containers.list(all=True) if ct.attrs.get("Image") in ids]
    if users:
        raise Exit(
            f"Containers use these images ({', '.join(users)}); remove them first (`inv docker.rm`). Nothing removed."
        )
    if c.config.run.dry:
        print(f"would remove {', '.join(ref for ref, _ in found)}")
        return
    confirm(f"Remove {', '.join(ref for ref, _ in found)}?", yes or c.config.tfrig.yes)
    for ref, _ in found:
        try:
            engine_client.images.remove(ref, force=force)
        except APIError as exc:
            raise Exit(f"Removing {ref} failed: {exc.explanation}") from None
        print(f"removed {ref}")


# --- doctor --------------------------------------------------------------------------------------


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _doctor_checks(host: Host, image: str | None) -> list[dict[str, Any]]:
    """Why containers don't see the GPU, one check at a time, each with its fix."""
    user = host.user
    facts = host.probe(
        {
            "engine": "docker version --format '{{.Server.Version}} {{.Server.APIVersion}}'",
            "groups": f"id -nG {shlex.quote(user)}",
            "session_groups": "id -nG",  # this login's groups: a group added since needs a new login
            "ctk": "nvidia-ctk --version",
            "runtimes": "docker info --format '{{json .Runtimes}}'",
            "driver": "cat /proc/driver/nvidia/version",
        }
    )
    checks = []

    def check(name: str, ok: bool | None, detail: str, fix: str = "") -> None:
        checks.append({"check": name, "ok": ok, "detail": detail, "fix": "" if ok else fix})

    engine_out = facts["engine"].out.strip()
    engine_ok = facts["engine"].ok and bool(engine_out)
    if engine_ok:
        check("engine", True, f"Docker {engine_out.split()[0]}, API {engine_out.split()[-1]}")
    elif "permission denied" in engine_out.lower():
        check(
            "engine",
            False,
            "permission denied on the Docker socket",
            "join the docker group (inv docker.install) and log in again",
        )
    else:
        check("engine", False, "no engine answers", "inv docker.install (or start the docker service)")
    member = user == "root" or "docker" in facts["groups"].out.split()
    in_session = user == "root" or "docker" in facts["session_groups"].out.split()
    if in_session:
        detail = f"{user} is in the docker group" + (" (root)" if user == "root" else "")
    elif member:
        detail = f"{user} is in the docker group, but not in this login session"
    else:
        detail = f"{user} is not in the docker group"
    check(
        "docker group",
        in_session,
        detail,
        "log in again (a new SSH session)" if member else "inv docker.install adds you; then log in again",
    )
    check(
        "container toolkit",
        facts["ctk"].ok,
        _first_line(facts["ctk"].out) if facts["ctk"].ok else "nvidia-ctk not found",
        "inv docker.toolkit",
    )
    runtime_ok = facts["runtimes"].ok and '"nvidia"' in facts["runtimes"].out
    check(
        "nvidia runtime",
        runtime_ok,
        "registered with Docker" if runtime_ok else "not registered with Docker",
        "nvidia-ctk runtime configure --runtime=docker, then restart Docker (inv docker.toolkit does both)",
    )
    driver_ok = facts["driver"].ok
    check(
        "driver",
        driver_ok,
        _first_line(facts["driver"].out)[:100] if driver_ok else "no NVIDIA driver loaded on the host",
        "inv driver.install (then gpu.check)",
    )
    if all(ch["ok"] for ch in checks) and image:
        run = host.fact(f"docker run --rm --gpus all {shlex.quote(image)} nvidia-smi -L")
        check(
            "GPU in a container",
            run.ok,
            run.out.strip().splitlines()[-1] if run.out.strip() else f"exit {run.rc}",
            "read the error above; `inv docker.doctor --json` for details",
        )
    else:
        check("GPU in a container", None, "skipped: fix the checks above first")
    return checks


@task(
    help={
        "image": "image for the final `--gpus all nvidia-smi` run (default docker.doctor_image)",
        "hosts": HOSTS_HELP,
        "json": JSON_HELP,
    }
)
def doctor(c, image=None, hosts=None, json=False):
    """Explain why containers don't see the GPU: one line per check, with the fix."""
    image = _setting(c, "doctor_image", image)
    if image:
        from tfrig.knowledge import images as tf_images

        tf_images.check_image(image)

    def work(host: Host) -> dict[str, Any]:
        checks = _doctor_checks(host, image)
        if not json:
            for ch in checks:
                mark = {True: "ok  ", False: "FAIL", None: "skip"}[ch["ok"]]
                line = f"{mark} {ch['check']}: {ch['detail']}"
                host.say(line + (f"  -> fix: {ch['fix']}" if ch["fix"] and ch["ok"] is False else ""))
        failed = [ch["check"] for ch in checks if ch["ok"] is False]
        return {"checks": checks, "gpu_ready": not failed, "failed": failed}

    results = on_targets(
        c,
        work,
        hosts=hosts,
        json_out=json,
        summary=lambda r: "GPU ready" if r["gpu_ready"] else f"failing: {', '.join(r['failed'])}",
    )
    if any(not r.get("gpu_ready", False) for r in results):
        raise Exit(code=1)


ns = Collection("docker", install, toolkit, pull, run, ps, rm, rmi, doctor)
ns.add_task(images_, name="images")
ns.configure(
    {
        "docker": {
            "install_method": "repo",
            "version": "",
            "mirror": "",
            "doctor_image": "ubuntu:24.04",
        }
    }
)
