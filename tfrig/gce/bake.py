"""Images baked from a VM's boot disk (gcp.bake): their names, and the labels that say what is on them.

Labels follow Compute Engine's rules (gcloud's labels_util: keys start with a lowercase letter;
keys and values hold only lowercase letters, digits, "-" and "_", at most 63 characters), so a
version's dots become dashes ("580.159.04" -> "580-159-04") and are read back the same way.
"""

from __future__ import annotations

import re
import time

from tfrig.settings import shown as shown_value

BAKED = "tfrig-baked"  # the label every image gcp.bake makes carries
WHAT = {"driver": "tfrig-driver", "tensorflow": "tfrig-tensorflow", "docker": "tfrig-docker"}
_NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")  # a Compute Engine resource name
_STAMP = "-%Y%m%d-%H%M%S"


class Invalid(Exception):
    """A family or image name Compute Engine would refuse; the message says what to give."""


def check_family(family: str) -> str:
    """An image family name with room for the image name's date (-YYYYmmdd-HHMMSS)."""
    if not _NAME.fullmatch(family) or len(family) > 63 - len(time.strftime(_STAMP)):
        raise Invalid(
            f"--family {shown_value(family)}: lowercase letters, digits and dashes, starting with a letter, at "
            "most 47 characters (e.g. tf-t4)."
        )
    return family


def check_image_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise Invalid(f"--delete {shown_value(name)}: give an image's name, as `inv gcp.images` lists them.")
    return name


def image_name(family: str, now: float | None = None) -> str:
    """FAMILY-YYYYmmdd-HHMMSS (UTC): new images of a family sort after the old ones."""
    return family + time.strftime(_STAMP, time.gmtime(now))


def label_value(text: str | None) -> str:
    """A version as a label value: lowercase, other characters as dashes; "none" when absent."""
    if not text:
        return "none"
    return re.sub(r"[^-_a-z0-9]", "-", text.strip().lower())[:63]


def labels(driver: str | None, tensorflow: str | None, docker: str | None) -> dict[str, str]:
    return {
        BAKED: "true",
        WHAT["driver"]: label_value(driver),
        WHAT["tensorflow"]: label_value(tensorflow),
        WHAT["docker"]: label_value(docker),
    }


def shown(labels: dict[str, str], what: str) -> str:
    """A label's version as people write it ("580-159-04" -> "580.159.04"); "-" where there is
    none, "unknown" where it could not be read."""
    value = labels.get(WHAT[what], "")
    if value in ("", "none"):
        return "-"
    return value if value == "unknown" else value.replace("-", ".")
