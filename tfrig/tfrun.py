"""tf.run's layer: the cluster and each worker's TF_CONFIG, the folder sent to the hosts, and the
workers started together, watched, and stopped together.

The cluster is TensorFlow's own multi-worker runtime: every worker gets TF_CONFIG with the same
`cluster.worker` list (worker 0 is the chief) and its own `task.index`
(tensorflow.org/guide/distributed_training, "Setting up the TF_CONFIG environment variable").
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shlex
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoke.exceptions import Exit

from tfrig.hosts.targets import _HOST_SPEC, Target
from tfrig.knowledge import nvsmi

# Never sent: the repository's own history, and the workers' logs when a run was here.
ALWAYS_IGNORED = (".git/", ".tfrig-logs/")
LOG_FOLDER = ".tfrig-logs"
# Each worker leads a process group whose id is kept here while it runs: tf.run stops a worker
# through it, and the idle-stop agent (scripts/idle-stop.sh) sees a job running by it. The folder
# is the user's own (0700), not /tmp, where another user could forge a job's exit code or group.
JOBS_FOLDER = '"$HOME"/.tfrig/jobs'
GROUP_FILE = JOBS_FOLDER + "/run-{run}-{index}.pgid"
MAKE_JOBS_FOLDER = 'mkdir -p "$HOME"/.tfrig/jobs && chmod 700 "$HOME"/.tfrig/jobs'


def group_id_only(variable: str) -> str:
    """A shell line that empties `variable` unless it holds a process group id as tfrig wrote it:
    what is read back from a file is checked (`kill -- -1` would signal every process of the user)."""
    return f'case "${variable}" in ""|*[!0-9]*|0|1) {variable}=;; esac'


def exit_code_only(variable: str, otherwise: int) -> str:
    """A shell line that sets `variable` to `otherwise` unless it holds an exit code."""
    return f'case "${variable}" in ""|*[!0-9]*) {variable}={otherwise};; esac'


STOP_GRACE_SECONDS = 5
LEFT_BEHIND_TICKS = STOP_GRACE_SECONDS * 5  # of 0.2 s
# Keras 3 (TensorFlow 2.16 on) can't run model.fit under MultiWorkerMirroredStrategy: it fails
# converting the distributed batch (keras-team/keras#20585, tensorflow/tensorflow#72388, open).
KERAS_FIT_UNDER_MULTI_WORKER = "(<class 'tensorflow.python.distribute.values.PerReplica'>) to a Tensor"
KERAS_FIT_HINT = (
    "Keras 3's model.fit does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585): "
    "train in a custom loop (strategy.run), or use tf_keras with TF_USE_LEGACY_KERAS=1"
)


@dataclass(frozen=True)
class Worker:
    index: int
    target: Target
    host: str  # where the other workers reach it
    port: int

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _split_address(item: str, port: int) -> tuple[str, int]:
    match = _HOST_SPEC.match(item)
    if not match or match["user"]:
        raise Exit(f"--cluster-addresses: '{item[:80]}' is not host or host:port.")
    given = int(match["port"]) if match["port"] else port
    if not 0 < given < 65536:
        raise Exit(f"--cluster-addresses: port {given} in '{item}' is out of range 1-65535.")
    return match["host"].strip("[]"), given


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cluster(targets: list[Target], port: int, cluster_addresses: str | None) -> list[Worker]:
    """One worker per target, in target order, at the address the other workers reach it at: the
    `--cluster-addresses` entry, else a VM's internal address, else the SSH host of a `-H` target."""
    if cluster_addresses:
        given = [part.strip() for part in cluster_addresses.split(",") if part.strip()]
        if len(given) != len(targets):
            raise Exit(
                f"--cluster-addresses names {len(given)} address(es) for {len(targets)} target(s); "
                "give one per target, in target order."
            )
        workers = [Worker(i, t, *_split_address(a, port)) for i, (t, a) in enumerate(zip(targets, given, strict=True))]
    elif len(targets) == 1:
        return [Worker(0, targets[0], targets[0].host or "localhost", port)]
    else:
        workers = []
        for index, target in enumerate(targets):
            if target.is_local:
                raise Exit(
                    "A job across several hosts needs each one's address: give every worker with -H "
                    "(this machine too), or --cluster-addresses."
                )
            vm = target.vm or {}
            host = vm.get("internal_address") if vm else target.host
            if not host and target.assumed is not None:  # --dry over a VM not created: known once it is
                host = f"<{target.label}'s internal address>"
            if not host:
                raise Exit(
                    f"VM {target.label} has no internal address recorded; `inv gcp.list` refreshes it, "
                    "or give --cluster-addresses."
                )
            workers.append(Worker(index, target, host, port))
        loopback = [w for w in workers if _is_loopback(w.host)]
        if loopback and len({w.target.host for w in workers}) > 1:
            raise Exit(
                f"{loopback[0].target.label}: {loopback[0].host} is a loopback address, which the other hosts "
                "can't reach; give the addresses they reach each other at with --cluster-addresses."
            )
    seen: dict[str, Worker] = {}
    for worker in workers:
        if worker.address in seen:
            raise Exit(
                f"Workers {seen[worker.address].index} and {worker.index} would both listen at {worker.address}; "
                "two workers on one machine need two ports (--cluster-addresses host:port,...)."
            )
        seen[worker.address] = worker
    return workers


def tf_config(workers: list[Worker], index: int) -> str:
    """Worker `index`'s TF_CONFIG: the whole cluster, worker 0 the chief."""
    return json.dumps(
        {"cluster": {"worker": [w.address for w in workers]}, "task": {"type": "worker", "index": index}},
        separators=(",", ":"),
    )


# --- the folder ---------------------------------------------------------------------------------


def ignore_rules(folder: Path) -> tuple[Any, str]:
    """What not to send: `.tfrigignore` if the folder has one, else its `.gitignore` (git's rules,
    read by pathspec), always the repository's `.git/`. Returns the rules and where they came from."""
    import warnings

    import pathspec

    lines = list(ALWAYS_IGNORED)
    source = "none"
    for name in (".tfrigignore", ".gitignore"):
        rules = folder / name
        if rules.is_file():
            source = str(rules)
            for number, line in enumerate(rules.read_text(errors="replace").splitlines(), 1):
                # A line git takes but pathspec can't compile (a trailing backslash, a range
                # such as [z-a]) matches nothing in git either: it is skipped, with a note.
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # re's FutureWarning on [[:alpha:]]
                        pathspec.GitIgnoreSpec.from_lines([line])
                except Exception:
                    note_once(f"{rules}:{number}: an ignore pattern tfrig can't read; skipped")
                    continue
                lines.append(line)
            break
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pathspec.GitIgnoreSpec.from_lines(lines), source


def local_manifest(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file to send, by path relative to `folder`: (size, modification second), the check
    rsync makes by default. A symbolic link is sent as what it names: a file as that file, a folder
    as that folder's files (each folder once, so a link to a folder above can't loop). Only
    regular files are sent: a FIFO, socket or device is left out with a note."""
    import stat as stat_module

    spec, _ = ignore_rules(folder)
    found: dict[str, tuple[int, int]] = {}
    seen_folders: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        here = os.stat(root)
        if (here.st_dev, here.st_ino) in seen_folders:
            dirs[:] = []
            continue
        seen_folders.add((here.st_dev, here.st_ino))
        relative_root = Path(root).relative_to(folder)
        dirs[:] = sorted(d for d in dirs if not spec.match_file(f"{(relative_root / d).as_posix()}/"))
        for name in sorted(files):
            relative = (relative_root / name).as_posix()
            if spec.match_file(relative):
                continue
            try:
                stat = (Path(root) / name).stat()
            except OSError:  # a dangling link
                continue
            if not stat_module.S_ISREG(stat.st_mode):
                note_once(f"{relative} is not a regular file (a FIFO, socket or device); not sent")
                continue
            found[relative] = (stat.st_size, int(stat.st_mtime))
    return found


# Run on a host (its TensorFlow env's Python): the files already in the run folder and which of
# the workers' ports something listens on, as one JSON line.
_HOST_FACTS = r"""
import json, os, socket, sys
root, ports = os.path.expanduser(sys.argv[1]), [int(p) for p in sys.argv[2:]]
files = {}
for folder, dirs, names in os.walk(root):
    dirs[:] = [d for d in dirs if d not in (".git", ".tfrig-logs")]
    for name in names:
        try:
            st = os.stat(os.path.join(folder, name))
        except OSError:
            continue
        files[os.path.relpath(os.path.join(folder, name), root)] = [st.st_size, int(st.st_mtime)]
busy = []
for port in ports:
    s = socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: only a listener is in the way
    try:
        s.bind(("", port))
    except OSError:
        busy.append(port)
    finally:
        s.close()
print(json.dumps({"files": files, "busy": busy}))
"""


def host_facts_command(python: str, remote_folder: str, ports: list[int]) -> str:
    from tfrig.hosts.host import shell_path

    return f"{python} -c {shlex.quote(_HOST_FACTS)} {shell_path(remote_folder)} {' '.join(map(str, ports))}"


def read_host_facts(output: str) -> dict[str, Any]:
    lines = output.strip().splitlines()
    try:
        facts: dict[str, Any] = json.loads(lines[-1])
        return facts
    except (ValueError, IndexError):
        raise Exit(f"could not read the host's run folder and ports: {output.strip()[-200:]}") from None


def changed(local: dict[str, tuple[int, int]], remote: dict[str, list[int]]) -> list[str]:
    """The files whose size or modification second differ from the host's copy, or that it lacks."""
    return [path for path, (size, mtime) in local.items() if remote.get(path) != [size, mtime]]


@contextlib.contextmanager
def bundle(folder: Path, paths: list[str]) -> Iterator[Path]:
    """The files `paths` of `folder` in a gzip tarball (a temporary file), times kept, links as
    what they name. Each file's folders come first as folder entries: GNU tar then replaces a
    link of that name in the run folder by a folder (and a linked file by the file), instead of
    writing through it to wherever it points."""
    from pathlib import PurePosixPath

    folders = sorted(
        {str(parent) for path in paths for parent in PurePosixPath(path).parents if str(parent) != "."},
        key=lambda name: (name.count("/"), name),
    )
    with tempfile.TemporaryDirectory(prefix="tfrig-run-") as tmp:
        archive = Path(tmp) / "send.tar.gz"
        with tarfile.open(archive, "w:gz", dereference=True) as tar:
            for path in [*folders, *paths]:
                tar.add(folder / path, arcname=path, recursive=False)
        yield archive


def size_text(count: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return ""


# --- the workers --------------------------------------------------------------------------------


class PrefixedLines:
    """A stream for one worker's output: whole lines, each prefixed by the worker's name."""

    lock = threading.Lock()

    def __init__(self, prefix: str, out: Any) -> None:
        self.prefix, self.out, self.partial = prefix, out, ""

    def write(self, text: str) -> int:
        self.partial += text
        *lines, self.partial = self.partial.split("\n")
        if lines:
            with self.lock:
                self.out.write("".join(f"[{self.prefix}] {line}\n" for line in lines))
                self.out.flush()
        return len(text)

    def flush(self) -> None:
        if self.partial:
            with self.lock:
                self.out.write(f"[{self.prefix}] {self.partial}\n")
                self.out.flush()
            self.partial = ""


def worker_command(
    *,
    run_id: str,
    index: int,
    folder: str,
    env_bin: str,
    exports: str,
    interpreter: str,
    script: str,
    args: list[str],
    config: str | None,
) -> str:
    """The shell command that runs one worker and follows it: the worker runs detached, in a
    process group of its own (its id kept in GROUP_FILE), its output into the run folder's log and
    its exit code into a file; the command streams the log until the worker ends and passes its
    exit code on. A dropped connection ends only the streaming: the job goes on, logged there."""
    from tfrig.hosts.host import shell_path

    group = GROUP_FILE.format(run=run_id, index=index)
    rc_file = group.replace(".pgid", ".rc")
    log = f"{LOG_FOLDER}/{run_id}-worker{index}.log"
    variables = "PYTHONUNBUFFERED=1" + (f" TF_CONFIG={shlex.quote(config)}" if config else "")
    job = f'export PATH={env_bin}:"$PATH"; {exports}export {variables}; {interpreter} {shlex.join([script, *args])}'
    leader = 'echo $$ > "$0"; eval "$1" > "$2" 2>&1 < /dev/null; echo $? > "$3.part"; mv "$3.part" "$3"; rm -f "$0"'
    return (
        f"{MAKE_JOBS_FOLDER} && cd {shell_path(folder)} && mkdir -p {LOG_FOLDER} && : > {log} || exit $?; "
        f"setsid sh -c {shlex.quote(leader)} {group} {shlex.quote(job)} {log} {rc_file} </dev/null >/dev/null 2>&1 & "
        # the group's leader, once it has said who it is (or already ended)
        f"i=0; while [ ! -s {group} ] && [ ! -e {rc_file} ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done; "
        f"leader=$(cat {group} 2>/dev/null); {group_id_only('leader')}; "
        f'if [ -n "$leader" ]; then tail -n +1 -s 0.05 -f --pid="$leader" {log}; else cat {log}; fi; '
        # until the whole group is gone: TensorFlow's workers catch TERM, and outlive their shell.
        # Once the script has ended (its exit code written), what it left running in its group
        # gets STOP_GRACE_SECONDS, then TERM, then KILL after as long again: tf.run ends with it.
        f'n=0; while [ -n "$leader" ] && kill -0 -"$leader" 2>/dev/null; do '
        f"if [ -e {rc_file} ]; then n=$((n+1)); "
        f'[ $n -eq {LEFT_BEHIND_TICKS} ] && echo "tfrig: the script ended; stopping what it left running" '
        f'&& kill -TERM -"$leader" 2>/dev/null; '
        f'[ $n -ge {2 * LEFT_BEHIND_TICKS} ] && kill -KILL -"$leader" 2>/dev/null; fi; '
        f"sleep 0.2; done; "
        # no exit code: the worker was stopped (TERM, else KILL) before it could write one
        f"rc=$(cat {rc_file} 2>/dev/null || echo 143); {exit_code_only('rc', 1)}; "
        f"rm -f {rc_file} {group}; exit $rc"
    )


def stop_command(run_id: str, index: int, wait_for_start: bool) -> str:
    """Stop one worker's whole process group: TERM, then KILL after STOP_GRACE_SECONDS. A worker
    still starting is waited for until its group is known."""
    group = GROUP_FILE.format(run=run_id, index=index)
    ticks = STOP_GRACE_SECONDS * 10
    wait = (
        f"i=0; while [ ! -s {group} ] && [ $i -lt {ticks} ]; do sleep 0.1; i=$((i+1)); done; " if wait_for_start else ""
    )
    return (
        f"{wait}g=$(cat {group} 2>/dev/null) || exit 0; {group_id_only('g')}; "
        f'[ -n "$g" ] || exit 0; kill -TERM -$g 2>/dev/null || exit 0; '
        f"i=0; while kill -0 -$g 2>/dev/null && [ $i -lt {ticks} ]; do sleep 0.1; i=$((i+1)); done; "
        f"kill -KILL -$g 2>/dev/null; exit 0"
    )


@dataclass
class Outcome:
    worker: Worker
    exit_code: int | None = None
    seconds: float = 0.0
    output: str = ""
    error: str | None = None  # the connection failed: no exit code
    stopped: bool = False  # tfrig stopped it (another worker failed, or Ctrl-C)

    @property
    def failed(self) -> bool:
        return not self.stopped and (self.error is not None or self.exit_code != 0)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def last_lines(text: str, count: int = 5) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:]) if lines else "no output"


def say_err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


_noted: set[str] = set()


def note_once(note: str) -> None:
    if note not in _noted:
        _noted.add(note)
        say_err(f"note: {note}")


# --- the job ------------------------------------------------------------------------------------


@dataclass
class Place:
    """One target of the job: its connection, TensorFlow env and run folder, and what it lacks."""

    host: Any  # tfrig.hosts.host.Host
    env: Any  # tfrig.steps.tfenv.Environment
    folder: str  # the run folder there
    remote_files: dict[str, list[int]]
    busy: list[int]
    gpus: list[str]


def _checked_script(folder: str | None, script: str, args: str | None) -> tuple[Path, str, list[str]]:
    """The local folder, the script's path inside it, and its arguments, or one line."""
    local = Path(folder or ".").expanduser().resolve()
    if not local.is_dir():
        raise Exit(f"--folder {folder}: no such folder here.")
    if not script:
        raise Exit("--script is empty; name the program to run, e.g. --script train.py.")
    try:
        path = (local / script).resolve()
        relative = path.relative_to(local).as_posix()
        is_file = path.is_file()
    except ValueError:
        raise Exit(f"--script {script} is outside --folder {local}; the folder is what is sent to the hosts.") from None
    except OSError as exc:  # a name too long for the file system
        raise Exit(f"--script {script}: {exc.strerror}.") from None
    if not is_file:
        raise Exit(f"--script {script}: no such file in {local}.")
    spec, source = ignore_rules(local)
    if {".git", LOG_FOLDER} & set(relative.split("/")[:-1]):
        raise Exit(f"--script {script}: tfrig never sends .git/ or {LOG_FOLDER}/; put the script elsewhere.")
    if spec.match_file(relative):
        raise Exit(f"--script {script} is ignored by {source}, so it would not be sent.")
    try:
        words = shlex.split(args or "")
    except ValueError as exc:
        raise Exit(f"--args {args!r}: {exc}; quote as in a shell.") from None
    return local, relative, words


def _odd_tensorflow(places: dict[Target, Place]) -> str | None:
    """Why the hosts can't run one job together: a host without TensorFlow, or versions that differ."""
    from collections import Counter

    missing = [p.host.label for p in places.values() if not p.env.tensorflow]
    if missing:
        return (
            f"no TensorFlow on {', '.join(missing)}: run `inv tf.install -H {','.join(missing)}` first "
            "(the same version as the other workers)."
        )
    versions = Counter(p.env.tensorflow for p in places.values())
    if len(versions) == 1:
        return None
    common = versions.most_common(1)[0][0]
    odd = [p for p in places.values() if p.env.tensorflow != common]
    return (
        "every worker must run the same TensorFlow: "
        + ", ".join(f"{p.host.label} has {p.env.tensorflow}" for p in odd)
        + f", the others {common}; run `inv tf.install --version {common} -H {','.join(p.host.label for p in odd)}`."
    )


def run_job(
    c: Any,
    *,
    script: str,
    args: str | None,
    folder: str | None,
    remote_folder: str | None,
    port: int,
    cluster_addresses: str | None,
    hosts: str | None,
    json_out: bool,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tfrig.hosts import targets as targets_mod
    from tfrig.hosts.host import Host, connect, describe_error, shell_path
    from tfrig.steps.tfenv import environment
    from tfrig.ui import info_stream, print_json, table

    out = info_stream(json_out)
    local, relative, words = _checked_script(folder, script, args)
    workers = cluster(targets_mod.resolve(c, hosts=hosts), port, cluster_addresses)
    print(f"target: {', '.join(w.target.label for w in workers)} (tf.run)", file=out, flush=True)
    remote = remote_folder or f"~/tfrig-runs/{local.name}"
    distinct = list(dict.fromkeys(w.target for w in workers))
    files = local_manifest(local) if any(not t.is_local for t in distinct) else {}

    def preflight(target: Target) -> Place:
        host = Host(connect(c, target), target, out=out)
        where = str(local) if target.is_local else remote
        env = environment(host, c)
        if not env.tensorflow or target.assumed is not None:
            return Place(host, env, where, {}, [], [])
        ports = [w.port for w in workers if w.target == target]
        facts = host.probe({"run": host_facts_command(env.python, where, ports), "gpus": nvsmi.LIST_COMMAND})
        found = read_host_facts(facts["run"].out)
        if facts["gpus"].rc == nvsmi.SMI_TIMED_OUT:
            host.say(f"note: {nvsmi.diagnose_failure('', nvsmi.SMI_TIMED_OUT).diagnosis}")
        gpus = [
            line.split(":", 1)[1].split("(UUID")[0].strip()
            for line in facts["gpus"].out.splitlines()
            if facts["gpus"].ok and line.startswith("GPU ")
        ]
        return Place(host, env, where, found["files"], found["busy"], gpus)

    def each(step: Any, items: list[Any]) -> list[Any]:
        """`step` on every item at once; a host's failure is one line each, and then one Exit."""

        def attempt(item: Any) -> Any:
            try:
                return step(item)
            except Exception as exc:
                return exc

        with ThreadPoolExecutor(max_workers=min(16, len(items))) as pool:
            results = list(pool.map(attempt, items))
        errors = [(item, r) for item, r in zip(items, results, strict=True) if isinstance(r, Exception)]
        for item, error in errors:
            text = describe_error(error)
            say_err(text if text.startswith("[") else f"[{item.label}] {text}")
        if errors:
            raise Exit(f"tf.run: {len(errors)} of {len(items)} host(s) not ready; no worker was started.")
        return results

    places = dict(zip(distinct, each(preflight, distinct), strict=True))
    problem = _odd_tensorflow(places)
    if problem:
        raise Exit(problem)
    for worker in workers:
        place = places[worker.target]
        if worker.port in place.busy:
            raise Exit(
                f"[{worker.target.label}] port {worker.port} is in use there; give another --port "
                "(or --cluster-addresses host:port), or stop what listens on it."
            )
    several = len(workers) > 1
    for worker in workers:
        place = places[worker.target]
        gpus = f"{len(place.gpus)} GPU(s) ({', '.join(sorted(set(place.gpus)))})" if place.gpus else "no GPU"
        role = (
            f"worker {worker.index}{' (chief)' if worker.index == 0 else ''} at {worker.address}: " if several else ""
        )
        place.host.say(f"{role}TensorFlow {place.env.tensorflow} in {place.env.kind} {place.env.path}, {gpus}")

    def send(target: Target) -> None:
        place = places[target]
        if target.is_local:
            return
        to_send = changed(files, place.remote_files)
        size = size_text(sum(files[path][0] for path in to_send))
        if not to_send:
            place.host.say(f"{remote} is up to date ({len(files)} files)")
            return
        if place.host.dry:
            place.host.say(f"would send {len(to_send)} of {len(files)} files ({size}) to {remote}")
            return
        place.host.say(f"sending {len(to_send)} of {len(files)} files ({size}) to {remote}")
        upload = f".tfrig-send-{uuid.uuid4().hex}.tar.gz"  # in the home folder, where SFTP starts
        with bundle(local, to_send) as archive:
            place.host.c.put(str(archive), upload)
        place.host.change(
            f'mkdir -p {shell_path(remote)} && tar -xzf "$HOME"/{upload} -C {shell_path(remote)}; '
            f'rc=$?; rm -f "$HOME"/{upload}; exit $rc',
            what=f"unpack {len(to_send)} files into {remote}",
        )

    each(send, distinct)
    run_id = new_run_id()
    # The interpreter's argument: a script named like an option (-W.py) must still be the script.
    script_path = f"./{relative}" if relative.startswith("-") else relative
    commands = {
        worker.index: worker_command(
            run_id=run_id,
            index=worker.index,
            folder=places[worker.target].folder,
            env_bin=shell_path(places[worker.target].env.path.rstrip("/") + "/bin"),
            exports=places[worker.target].env.exports,
            interpreter=places[worker.target].env.interpreter,
            script=script_path,
            args=words,
            config=tf_config(workers, worker.index) if several else None,
        )
        for worker in workers
    }
    if c.config.run.dry:
        plan = []
        for worker in workers:
            place = places[worker.target]
            config = tf_config(workers, worker.index) if several else None
            if config:
                place.host.say(f"TF_CONFIG={config}")
            place.host.say(f"would run: cd {place.folder} && python {shlex.join([relative, *words])}")
            plan.append({"host": worker.target.label, "index": worker.index, "tf_config": config})
        if json_out:
            print_json({"dry": True, "workers": plan})
        return
    outcomes = _watch(c, workers, places, commands, run_id, out)
    for outcome in outcomes:
        # The connection ended with no exit code, or SSH's "none" (-1): the VM may be gone.
        if outcome.failed and (outcome.error or outcome.exit_code in (None, -1)):
            from tfrig.hosts.host import lost_reason

            reason = lost_reason(c, outcome.worker.target)
            if reason:
                outcome.error = reason
    rows = [
        {
            "host": o.worker.target.label,
            "index": o.worker.index,
            "address": o.worker.address if several else None,
            "exit_code": o.exit_code,
            "seconds": round(o.seconds, 1),
            "stopped": o.stopped,
            "error": o.error,
        }
        for o in outcomes
    ]
    interrupted = all(o.stopped for o in outcomes if o.exit_code != 0 or o.error) and any(o.stopped for o in outcomes)
    failed = [o for o in outcomes if o.failed]
    if json_out:
        print_json({"ok": not failed and not interrupted, "run": run_id, "workers": rows})
    elif several:
        table(
            ["host", "worker", "result", "seconds"],
            [
                [
                    r["host"],
                    r["index"],
                    "stopped" if r["stopped"] else (r["error"] or f"exit {r['exit_code']}"),
                    r["seconds"],
                ]
                for r in rows
            ],
            out=out,
        )
    if failed:
        first = failed[0]
        label, log = first.worker.target.label, f"{places[first.worker.target].folder}/{LOG_FOLDER}"
        others = sum(o.stopped for o in outcomes)
        cause = first.error or f"exit {first.exit_code}: {last_lines(first.output)}"
        if several and KERAS_FIT_UNDER_MULTI_WORKER in first.output:
            cause += f"; {KERAS_FIT_HINT}"
        raise Exit(
            f"[{label}] worker {first.worker.index} failed ({cause})"
            + (f"; stopped the other {others} worker(s)" if others else "")
            + f"; its log: {log}/{run_id}-worker{first.worker.index}.log there.",
            code=first.exit_code or 1,
        )
    if interrupted:
        raise Exit("stopped every worker at Ctrl-C.", code=130)


def _watch(
    c: Any, workers: list[Worker], places: dict[Target, Place], commands: dict[int, str], run_id: str, out: Any
) -> list[Outcome]:
    """Start every worker at once and wait for all; the first to fail, or Ctrl-C, stops the rest."""
    import signal

    from tfrig.hosts.host import describe_error

    outcomes = [Outcome(w) for w in workers]
    lock = threading.Lock()
    stopping = threading.Event()
    cause: list[Outcome] = []  # the first worker that failed, if one did
    labels = [w.target.label for w in workers]
    threads: list[threading.Thread] = []

    def stop(outcome: Outcome) -> None:
        host = places[outcome.worker.target].host
        with contextlib.suppress(Exception):  # the host went away: nothing there to stop
            host.c.run(
                stop_command(run_id, outcome.worker.index, wait_for_start=outcome.exit_code is None),
                hide=True,
                warn=True,
                in_stream=False,
            )

    def stop_others() -> None:
        """Every other running worker stopped at once (each may take the grace before its KILL)."""
        running = [o for o, t in zip(outcomes, threads, strict=True) if o not in cause and t.is_alive()]
        stopping_each = [threading.Thread(target=stop, args=(o,), daemon=True) for o in running]
        for thread in stopping_each:
            thread.start()
        for thread in stopping_each:
            thread.join()

    stopper: list[threading.Thread] = []

    def start_stopping(outcome: Outcome | None) -> None:
        with lock:
            if stopping.is_set():
                return
            if outcome is not None:
                cause.append(outcome)
            stopping.set()
            stopper.append(threading.Thread(target=stop_others, daemon=True))
        stopper[0].start()

    def run(outcome: Outcome) -> None:
        worker, place = outcome.worker, places[outcome.worker.target]
        prefix = (
            worker.target.label if labels.count(worker.target.label) == 1 else f"{worker.target.label}#{worker.index}"
        )
        stream = PrefixedLines(prefix, out)
        began = time.monotonic()
        try:
            result = place.host.c.run(
                commands[worker.index],
                warn=True,
                hide=False,
                out_stream=stream,
                err_stream=stream,
                in_stream=False,
                pty=False,
            )
            outcome.exit_code, outcome.output = result.exited, result.stdout
        except Exception as exc:
            outcome.error = describe_error(exc)
        finally:
            stream.flush()
            outcome.seconds = time.monotonic() - began
            place.host.log("run", f"tf.run worker {worker.index}", outcome.exit_code, outcome.output)
        with lock:
            if stopping.is_set() and outcome not in cause and (outcome.error or outcome.exit_code != 0):
                outcome.stopped = True
        if outcome.failed:
            start_stopping(outcome)

    def interrupted(signum: int, frame: Any) -> None:
        if stopping.is_set():  # Ctrl-C while stopping: leave now, the workers may go on there
            raise KeyboardInterrupt
        print("stopping every worker (Ctrl-C again to leave them running)", file=sys.stderr, flush=True)
        start_stopping(None)

    threads.extend(threading.Thread(target=run, args=(o,), daemon=True) for o in outcomes)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, interrupted) if main else None
    try:
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(0.2)
        for thread in stopper:  # the stop commands run to their end (KILL after the grace)
            thread.join(STOP_GRACE_SECONDS * 3)
    except KeyboardInterrupt:
        raise Exit("left at the second Ctrl-C; the workers may still run there.", code=130) from None
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    return outcomes
