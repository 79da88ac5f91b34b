"""TensorFlow image names: from what the user wants (version, GPU, Jupyter) to a Docker Hub tag.

Pure functions over compat.yaml `tf_docker_tags`; retired names are explained, not pulled.
"""

from __future__ import annotations

import re

from invoke.exceptions import Exit
from packaging.version import Version

from tfrig.knowledge.catalog import tf_versions

REPOSITORY = "tensorflow/tensorflow"
_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")
_MIRROR = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$")
# compat.yaml tf_docker_tags.py3_suffix: "-py3" tags hold Python 3 only up to these versions.
_PY3_TAGS_LAST = {1: Version("1.15.0"), 2: Version("2.1.0")}


def tf_tag(version: str | None = None, gpu: bool = False, jupyter: bool = False) -> str:
    """`--version 2.21.0 --gpu --jupyter` → `2.21.0-gpu-jupyter`; no version → `latest`."""
    base = "latest" if version in (None, "", "latest") else _checked_version(str(version))
    return base + ("-gpu" if gpu else "") + ("-jupyter" if jupyter else "")


def _checked_version(version: str) -> str:
    if version == "nightly":
        return version
    if version.endswith("-py3") or "gpu" in version or "jupyter" in version:
        raise Exit(
            f"--version takes a release number such as 2.21.0; "
            f"ask for variants with --gpu and --jupyter (got '{version}')."
        )
    if not _VERSION.match(version):
        raise Exit(
            f"'{version}' is not a TensorFlow version; try one of {', '.join(tf_versions()[:4])}, ... or 'nightly'."
        )
    known = tf_versions()
    minor = ".".join(version.split(".")[:2])
    same_minor = [v for v in known if v.startswith(minor + ".")]
    if not same_minor:
        raise Exit(
            f"TensorFlow {version} is not a release tfrig knows (newest: {known[0]}); "
            f"`inv tf.versions` lists them, or pass --image for any other image."
        )
    return version if version.count(".") == 2 else same_minor[0]


def split_image(image: str) -> tuple[str, str]:
    """`repo/name:tag` → (`repo/name`, `tag`); a registry port is not a tag."""
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, "latest"
    return name, tag


def retired_image_message(image: str) -> str | None:
    """Why an image name is retired and what to use instead; None when it is fine."""
    repository, tag = split_image(image)
    current = tag.replace("-py3", "")
    if repository.endswith("tensorflow/tensorflow-gpu") or repository == "tensorflow-gpu":
        suggestion = current if "gpu" in current else f"{current}-gpu"
        return (
            f"{image}: GPU images live in {REPOSITORY} with a -gpu tag since TensorFlow 2.1; "
            f"use {REPOSITORY}:{suggestion}"
        )
    if not repository.endswith(REPOSITORY) or "-py3" not in tag:
        return None
    head = current.split("-")[0]
    if _VERSION.match(head):
        parsed = Version(head)
        last = _PY3_TAGS_LAST.get(parsed.major)
        if last is not None and parsed <= last:
            return None
    return (
        f"{image}: '-py3' tags were only needed up to 1.15.0 and 2.1.0; newer images have Python 3 "
        f"in the plain tag: use {REPOSITORY}:{current}"
    )


# An image reference as the engine parses it (github.com/distribution/reference, regexp.go):
# [domain[:port]/]path-component[/...][:tag][@digest], path components lowercase.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])"
)
_REFERENCE = re.compile(
    rf"^(?:{_DOMAIN}(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


def check_image(image: str) -> str:
    """A TensorFlow image the user named: a reference the engine takes, and not a retired one."""
    first = image.split("/", 1)[0]
    # Only a first part with a "." or ":" (or localhost) is a registry, whose name may have capitals
    # (distribution/reference normalize.go, splitDockerDomain).
    registry = "/" in image and ("." in first or ":" in first or first == "localhost")
    if not _REFERENCE.match(image) or len(image) > 255 or (not registry and first != first.lower()):
        raise Exit(f"--image {image[:80]!r} is not an image reference, e.g. tensorflow/tensorflow:2.21.0-gpu.")
    message = retired_image_message(image)
    if message:
        raise Exit(message)
    return image


def check_mirror(mirror: str) -> str:
    if not _MIRROR.match(mirror):
        raise Exit(f"--mirror '{mirror}' should be HOST or HOST:PORT, e.g. mirror.example.com:5000.")
    return mirror


def mirrored(image: str, mirror: str) -> str:
    """The name of `image` on a registry mirror (`HOST[:PORT]`)."""
    return f"{check_mirror(mirror)}/{image}"
