"""The Docker engine through the Docker SDK (imported here only): a client whose failures read
as one line with the fix, and a pull with layer progress."""

from __future__ import annotations

import os
import sys
from typing import Any

from invoke.exceptions import Exit


def client(base_url: str | None = None) -> Any:
    """A Docker client for the engine at `base_url` (DOCKER_HOST or the local socket by default)."""
    import docker
    from docker.errors import DockerException

    try:
        engine = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
        engine.ping()
    except DockerException as exc:
        raise Exit(engine_error(exc, base_url)) from None
    return engine


def client_over(conn: Any, label: str) -> Any:
    """A Docker client for the engine on the host behind `conn`, the Fabric connection tfrig opened
    with its own key and host-key policy. It speaks to the engine as the SDK's ssh:// does,
    through `docker system dial-stdio` on the host (docker/transport/sshconn.py), but over this
    connection: the SDK's own would trust only ~/.ssh/known_hosts and ~/.ssh/config's keys. The
    client reaches it through a socket in a private folder here, served while tfrig runs."""
    import shutil
    import socket
    import tempfile
    import threading
    import weakref

    import docker

    found = conn.run("docker version --format '{{.Server.Version}}'", hide=True, warn=True, in_stream=False)
    if found.failed:
        said = (found.stderr or found.stdout).strip().splitlines()
        raise Exit(
            f"[{label}] no Docker engine answers there ({said[-1] if said else f'exit {found.exited}'}); "
            f"`inv docker.install -H {label}` installs it and adds you to the docker group."
        )
    transport = conn.client.get_transport()
    folder = tempfile.mkdtemp(prefix="tfrig-docker-")  # 0700: only this user reaches the engine
    path = os.path.join(folder, "engine.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)

    def pump(local: socket.socket) -> None:
        with local:
            channel = transport.open_session()
            channel.exec_command("docker system dial-stdio")

            def upstream() -> None:
                while data := local.recv(65536):
                    channel.sendall(data)
                channel.shutdown_write()

            threading.Thread(target=upstream, daemon=True).start()
            while data := channel.recv(65536):
                local.sendall(data)
            channel.close()

    def serve() -> None:
        while True:
            try:
                local, _ = listener.accept()
            except OSError:  # closed with the client
                return
            threading.Thread(target=pump, args=(local,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    engine = docker.DockerClient(base_url=f"unix://{path}")

    def close() -> None:
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)

    weakref.finalize(engine, close)
    return engine


def engine_error(exc: BaseException, base_url: str | None = None) -> str:
    where = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    text = str(exc)
    if "PermissionError" in text or "Permission denied" in text:
        return (
            f"Permission denied on the Docker socket ({where}): add yourself to the docker group "
            f"(`inv docker.install` does) and log in again, or run as root."
        )
    if "FileNotFoundError" in text or "No such file" in text or "Connection refused" in text:
        return (
            f"No Docker engine answers at {where}: start it (`sudo systemctl start docker`) "
            f"or install it with `inv docker.install`."
        )
    return f"The Docker engine at {where} failed: {text}"


def api_error(exc: Any) -> str:
    """The engine's own explanation of a failed request, without the HTTP wrapping."""
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return str(explanation or exc)


def has_image(engine: Any, image: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        engine.images.get(image)
    except ImageNotFound:
        return False
    return True


def pull(engine: Any, image: str, out: Any = None) -> None:
    """Pull `image` layer by layer: a progress bar on a terminal, a line per finished layer elsewhere."""
    from docker.errors import APIError, NotFound

    out = out or sys.stderr
    from tfrig.knowledge.images import split_image

    repository, tag = split_image(image)
    try:
        events = engine.api.pull(repository, tag=tag, stream=True, decode=True)
        if out.isatty():
            _pull_with_bars(events, out, image)
        else:
            for event in events:
                _check_event(event, image)
                if event.get("status") in ("Pull complete", "Already exists"):
                    print(
                        f"  layer {event.get('id')}: {event['status'].lower()}",
                        file=out,
                        flush=True,
                    )
    except NotFound:
        raise Exit(
            f"{image} is not in its registry: check the tag or the mirror (`inv tf.versions` lists releases)."
        ) from None
    except APIError as exc:
        raise Exit(f"Pulling {image} failed: {api_error(exc)}") from None


def _check_event(event: dict[str, Any], image: str) -> None:
    if "error" in event:
        detail = event.get("errorDetail", {}).get("message") or event["error"]
        if "not found" in detail or "manifest unknown" in detail:
            raise Exit(f"{image} is not in its registry ({detail}); check the tag or the mirror.")
        raise Exit(f"Pulling {image} stopped half-way: {detail}. Nothing was tagged; run it again to resume.")


def _pull_with_bars(events: Any, out: Any, image: str) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
    with Progress(*columns, console=Console(file=out)) as bars:
        layers: dict[str, Any] = {}
        for event in events:
            _check_event(event, image)
            layer = event.get("id")
            detail = event.get("progressDetail") or {}
            if not layer or event.get("status") not in (
                "Downloading",
                "Pull complete",
                "Already exists",
            ):
                continue
            if layer not in layers:
                layers[layer] = bars.add_task(layer, total=detail.get("total"))
            if event["status"] == "Downloading":
                bars.update(layers[layer], completed=detail.get("current", 0), total=detail.get("total"))
            else:
                done = bars.tasks[layers[layer]].total or 1
                bars.update(layers[layer], completed=done, total=done)
