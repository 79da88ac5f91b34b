"""Install packages into this Python's environment with uv, else pip; run by the env's own Python.

argv: a JSON object {"installer": "uv"|"pip", "uv": {"version": V, "sha256": [...]}}, then pip's
source options as tfrig gives them (--index-url, --find-links, --no-index, -q, ...), "--", and the
requirements. An index URL with a credential comes in the file PIP_CONFIG_FILE names (never an
argument, which the process list shows) and goes to uv in its environment only.

uv doesn't read pip's configuration, so what pip would read for `pip install` (`pip config list`:
environment variables, then the [install] and [global] sections of its files) is given to uv as its
own options; a setting with no uv equivalent means pip does the install, and says why. uv itself comes
from the same sources as a wheel pinned by version and SHA-256 (pip --require-hashes), kept in
~/.cache/tfrig/uv/VERSION; where it can't be had, pip does the install, and says why.
Prints "installer: uv VERSION" or "installer: pip" and "note: ..." lines, then runs the installer.

With "prefetch": true it installs nothing: it fills the installer's cache with what the install
would take (uv: an install into a folder removed after, so its cache holds the unpacked wheels;
pip: `pip download` into one, whose HTTP cache keeps the wheels), for an install later in the run
(after a reboot) to read from there. uv's and pip's caches are in the user's home and outlive a reboot.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

ARGS = json.loads(sys.argv[1])
rest = sys.argv[2:]
OPTIONS = rest[: rest.index("--")]
PACKAGES = rest[rest.index("--") + 1 :]
TRUE = ("1", "true", "yes", "on")
# pip settings that change nothing uv would do differently here (output, pip's own checks; the
# file PIP_CONFIG_FILE names, whose settings are listed with the rest).
IGNORED = {
    "config-file",
    "disable-pip-version-check",
    "quiet",
    "verbose",
    "progress-bar",
    "no-input",
    "no-color",
    "root-user-action",
    "no-warn-script-location",
    "require-virtualenv",
    "break-system-packages",
    "cache-dir",
    "no-cache-dir",
    "prefer-binary",
    "upgrade-strategy",
    "retries",
    "log",
}


PREFETCH = bool(ARGS.get("prefetch"))


def into_scratch(command, env=None):
    """Run `command` (ending in the folder it fills) on a scratch folder beside the caches, removed after."""
    cache = os.path.expanduser("~/.cache/tfrig")
    os.makedirs(cache, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="prefetch-", dir=cache)
    try:
        sys.exit(subprocess.run([*command, scratch], env=env, check=False).returncode)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def pip(reason=None):
    if reason:
        print(f"note: {reason}: {'fetching' if PREFETCH else 'installing'} with pip", flush=True)
    print("installer: pip", flush=True)
    if PREFETCH:
        into_scratch([sys.executable, "-m", "pip", "download", *OPTIONS, *PACKAGES, "--dest"])
    os.execv(sys.executable, [sys.executable, "-m", "pip", "install", *OPTIONS, *PACKAGES])


def pip_settings():
    """What `pip install` reads from its configuration: key -> (value, where)."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    found: dict = {}
    rank = {"global": 0, "install": 1, ":env:": 2}
    for line in listed.splitlines():
        name, _, value = line.partition("=")
        section, _, key = name.rpartition(".")
        if section not in rank or not value:
            continue
        value = value.strip().strip("'\"")
        if key not in found or rank[section] >= found[key][2]:
            found[key] = (
                value,
                "PIP_" + key.upper().replace("-", "_") if section == ":env:" else section,
                rank[section],
            )
    return {key: (value, where) for key, (value, where, _) in found.items()}


def translate(settings):
    """uv's arguments and environment for what pip would do; a reason where uv can't do the same."""
    given = set()
    args, env = [], {}
    words = iter(OPTIONS)
    for word in words:  # tfrig's own options, which pip takes before its configuration
        if word in ("--index-url", "--find-links"):
            args += [word, next(words)]
            given.add(word[2:])
        elif word == "--no-index":
            args.append(word)
            given.add("no-index")
        elif word == "-q":
            args.append(word)
    for key, (value, where) in settings.items():
        if key in IGNORED or key in given:
            continue
        if key == "index-url":
            env["UV_INDEX_URL"] = value  # in the environment: it may carry a credential
        elif key == "extra-index-url":
            env["UV_EXTRA_INDEX_URL"] = " ".join(value.split())
            # pip takes the best version across all its indexes; uv's default is the first index's
            env["UV_INDEX_STRATEGY"] = "unsafe-best-match"
        elif key == "find-links":
            args += [part for link in value.split() for part in ("--find-links", link)]
        elif key == "no-index":
            if value.lower() in TRUE:
                args.append("--no-index")
        elif key == "trusted-host":
            args += [part for host in value.split() for part in ("--allow-insecure-host", host)]
        elif key == "cert":
            args += ["--cert", value]
        elif key == "client-cert":
            env["SSL_CLIENT_CERT"] = value
        elif key == "proxy":
            env["HTTPS_PROXY"] = env["HTTP_PROXY"] = value
        elif key in ("timeout", "default-timeout"):
            env["UV_HTTP_TIMEOUT"] = value
        elif key in ("constraint", "constraints"):
            args += [part for path in value.split() for part in ("--constraints", path)]
        elif key in ("only-binary", "no-binary"):
            args += [f"--{key}", value]
        elif key == "pre":
            if value.lower() in TRUE:
                args += ["--prerelease", "allow"]
        else:
            return None, None, f"pip's setting {key} ({where}) has no uv equivalent in tfrig"
    return args, env, None


def uv_binary():
    """uv of the pinned version from pip's own sources, checked against its SHA-256s; None and the
    reason where it can't be had."""
    version = ARGS["uv"]["version"]
    home = os.path.expanduser(f"~/.cache/tfrig/uv/{version}")
    binary = os.path.join(home, "bin", "uv")
    if os.access(binary, os.X_OK):
        return binary, None
    os.makedirs(os.path.dirname(home), exist_ok=True)
    work = tempfile.mkdtemp(dir=os.path.dirname(home))
    try:
        requirement = os.path.join(work, "uv.txt")
        with open(requirement, "w") as out:
            out.write(f"uv=={version} " + " ".join(f"--hash=sha256:{digest}" for digest in ARGS["uv"]["sha256"]) + "\n")
        pinned = ["--no-deps", "--only-binary", ":all:", "--require-hashes", "-r", requirement]
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "install", *OPTIONS, *pinned, "--target", os.path.join(work, "uv")],
            capture_output=True,
            text=True,
            check=False,
        )
        if fetched.returncode != 0:
            said = fetched.stderr or fetched.stdout
            if "DO NOT MATCH THE HASHES" in said:
                return None, f"uv {version} from pip's sources does not match its pinned SHA-256"
            lines = [line.strip() for line in said.splitlines() if line.strip()]
            return None, f"uv {version} could not be had from pip's sources ({lines[-1] if lines else 'pip failed'})"
        os.replace(os.path.join(work, "uv"), home)
        return binary, None
    finally:
        shutil.rmtree(work, ignore_errors=True)


if ARGS["installer"] == "pip":
    pip()
args, env, reason = translate(pip_settings())
if reason:
    pip(reason)
binary, reason = uv_binary()
if reason:
    pip(reason)
print(f"installer: uv {ARGS['uv']['version']}", flush=True)
command = [binary, "pip", "install", "--python", sys.executable, *args, *PACKAGES]
if PREFETCH:
    into_scratch([*command, "--target"], {**os.environ, **env})
os.execve(binary, command, {**os.environ, **env})
