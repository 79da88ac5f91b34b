"""Settings as users give them (invoke.yaml, INVOKE_* variables): read, checked, and named with where
they came from when they are wrong.

The schema is every namespace's defaults (one `ns.configure` each): a setting's kind is its
default's type. Files and variables are checked against it once, before any task runs, and a
folder's own file (the `tfrig` command reads ./invoke.yaml) sets only what can't send credentials,
code or host keys elsewhere until the user allows that file (`tfrig allow`), as direnv does.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from invoke.exceptions import Exit

from tfrig import state

# What people write for yes and no (YAML 1.1's words, and the shell's 1/0); Invoke itself takes any
# non-empty text but "0" as true, so INVOKE_TFRIG_YES=false would answer every question.
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")

# Settings that change where credentials go or where code and host keys come from: a folder's own
# file sets them only once allowed. (All of Invoke's and Fabric's own settings count too, e.g.
# run.shell, gateway, forward_agent: a folder's file may set only tfrig's other settings.)
SENSITIVE = frozenset(
    {
        "gcp.endpoint",
        "gcp.oslogin_endpoint",
        "gcp.resourcemanager_endpoint",
        "gcp.orgpolicy_endpoint",
        "gcp.billing_endpoint",
        "driver.download_base",
        "driver.installer_url",
        "driver.sha256",
        "driver.unverified",
        "driver.apt_repo_base",
        "conda.installer_url",
        "docker.mirror",
        "tf.index_url",
        "tf.find_links",
        "tfrig.host_keys",
        "tfrig.known_hosts",
        "tfrig.ssh_key",
    }
)
# Settings whose words are fixed, checked with the rest (each task checks its flags the same way).
CHOICES = {
    "tfrig.host_keys": ("strict", "accept-new"),  # tfrig.hosts.hostkeys.POLICIES
    "gcp.credentials": ("", "anonymous"),
    "docker.install_method": ("repo", "distro", "script"),
    "driver.method": ("run", "apt"),
    "driver.module": ("", "open", "proprietary"),
    "gcp.ssh_via": ("external", "internal", "iap"),  # tfrig.gce.plan.SSH_VIA
    "gcp.ssh_mode": ("auto", "metadata", "oslogin"),  # tfrig.gce.provision.choose_login
    "tf.installer": ("uv", "pip"),  # tfrig.tasks.tf.INSTALLERS
}
# Text settings that name a file or folder: a number there is a mistake (a version may be 2.15).
PATHS = frozenset({"tfrig.ssh_key", "tfrig.known_hosts", "tf.venv", "tf.find_links", "conda.prefix"})
ALLOWED_FILE = "allowed-folders.json"
SHOWN_LIMIT = 60


def shown(value: Any) -> str:
    """A value as a message shows it: escaped (a newline can't start a second line) and cut."""
    text = value if isinstance(value, str) else repr(value)
    escaped = text.encode("unicode_escape").decode("ascii")
    if len(escaped) > SHOWN_LIMIT:
        escaped = f"{escaped[:SHOWN_LIMIT]}... ({len(text)} characters)"
    return f"'{escaped}'" if isinstance(value, str) else escaped


def boolean(text: str) -> bool | None:
    """`text` as people mean yes or no, else None."""
    word = text.strip().lower()
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None


def _checked_value(key: str, default: Any, value: Any, where: str) -> Any:
    """`value` for the setting `key` in the kind its default has, else one line naming key, value and where."""

    def wrong(wanted: str) -> Exit:
        return Exit(f"{key} in {where} is {shown(value)}; give {wanted}.")

    if isinstance(default, bool):
        parsed = (
            value
            if isinstance(value, bool)
            else boolean(value)
            if isinstance(value, str)
            else {1: True, 0: False}.get(value)
            if isinstance(value, int)
            else None
        )
        if parsed is None:
            raise wrong("true or false (yes/no, on/off, 1/0)")
        return parsed
    if isinstance(default, int | float):
        kind, wanted = (int, "a whole number") if isinstance(default, int) else (float, "a number")
        if isinstance(value, bool):
            raise wrong(wanted)
        try:
            return kind(str(value).strip())
        except ValueError:
            raise wrong(wanted) from None
    if isinstance(default, str):
        if key in PATHS and not isinstance(value, str):
            raise wrong("a path")
        if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
            raise wrong("text" + (" (several hosts: one comma-separated text)" if key == "tfrig.hosts" else ""))
        text = str(value)
        choices = CHOICES.get(key)
        if choices and text not in choices:
            raise wrong(" or ".join(repr(choice) for choice in choices if choice) or "nothing")
        return text
    return value


def checked_file(data: Any, where: str, schema: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A config file's data with tfrig's sections checked against `schema`: each a mapping of known
    keys with values of their kind (bool words read as people mean them); else one line."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise Exit(f"{where}: holds {type(data).__name__}, not settings; write `namespace: {{key: value}}`.")
    checked = dict(data)
    for namespace, section in data.items():
        if namespace not in schema:
            continue
        if not isinstance(section, dict):
            raise Exit(
                f"{namespace} in {where} is {shown(section)}, not a mapping; "
                f"write its settings under it (`{namespace}:` then `  key: value`)."
            )
        keys: dict[str, Any] = {}
        for key, value in section.items():
            if namespace == "tfrig" and key is True:
                key = "yes"  # YAML 1.1 reads an unquoted `yes:` key as true; `yes` is tfrig's only such key
            if not isinstance(key, str) or key not in schema[namespace]:
                known = ", ".join(sorted(schema[namespace])) or "none"
                raise Exit(
                    f"{namespace}.{shown(str(key))[1:-1]} in {where} is not a setting ({namespace} has: {known})."
                )
            keys[key] = _checked_value(f"{namespace}.{key}", schema[namespace][key], value, where)
        checked[namespace] = keys
    return checked


def checked_environment(
    schema: Mapping[str, Mapping[str, Any]], prefix: str = "INVOKE", environ: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """The INVOKE_NAMESPACE_KEY variables of tfrig's settings, each read as its kind, else one line
    naming the variable. Invoke would cast them itself: a bool from any non-empty text but "0", an
    int with a traceback."""
    environ = os.environ if environ is None else environ
    found: dict[str, dict[str, Any]] = {}
    for namespace, keys in schema.items():
        for key, default in keys.items():
            variable = f"{prefix.rstrip('_')}_{namespace}_{key}".upper()
            if variable in environ:
                value = _checked_value(f"{namespace}.{key}", default, environ[variable], variable)
                found.setdefault(namespace, {})[key] = value
    return found


def held_back(data: Mapping[str, Any], schema: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The keys a folder's file sets that wait for the user's allowing it: the sensitive ones of
    tfrig's, and every setting not tfrig's own."""
    keys = []
    for namespace, section in data.items():
        if namespace not in schema:
            keys.append(str(namespace))
            continue
        keys += [f"{namespace}.{key}" for key in section if f"{namespace}.{key}" in SENSITIVE]
    return keys


def without(data: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """`data` less the dotted `keys` (a namespace alone drops the whole section)."""
    kept = {namespace: dict(section) if isinstance(section, dict) else section for namespace, section in data.items()}
    for dotted in keys:
        namespace, _, key = dotted.partition(".")
        if not key:
            kept.pop(namespace, None)
        elif isinstance(kept.get(namespace), dict):
            kept[namespace].pop(key, None)
    return kept


def folder_file(folder: Path) -> Path | None:
    """The folder's settings file, where Invoke looks for it, in its order; None if it has none (a
    FIFO counts as one: loading it refuses it, rather than passing over it in silence)."""
    return next(
        (
            path
            for suffix in ("yaml", "yml", "json", "py")
            if (path := folder / f"invoke.{suffix}").exists() and not path.is_dir()
        ),
        None,
    )


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _allowed_path() -> Path:
    return state.state_dir() / ALLOWED_FILE


def allowed(path: Path) -> bool:
    """Whether the user allowed this file, as it is now (its SHA-256 recorded for its real path)."""
    try:
        record = json.loads(_allowed_path().read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get(str(path.resolve())) == file_digest(path)


def allow(path: Path, *, revoke: bool = False) -> None:
    """Record (or drop) this file's SHA-256 as allowed; a later edit needs allowing again."""
    with state.locked_file(_allowed_path()) as record:
        if revoke:
            record.pop(str(path.resolve()), None)
        else:
            record[str(path.resolve())] = file_digest(path)


def setting(c: Any, namespace: str, key: str, value: Any) -> Any:
    """A value given on the command line wins; else the `namespace.key` setting (invoke.yaml, INVOKE_*)."""
    return value if value not in (None, "") else c.config[namespace].get(key)


def where_set(config: Any, namespace: str, key: str) -> str:
    """Which of Invoke's config levels gave `namespace.key`: a file's path, or the environment."""
    for level in ("runtime", "project", "user", "system"):
        data = getattr(config, f"_{level}", None) or {}
        if isinstance(data.get(namespace), dict) and key in data[namespace]:
            return str(getattr(config, f"_{level}_path", None) or f"the {level} config file")
    return f"INVOKE_{namespace.upper()}_{key.upper()} or a config file"


def setting_text(config: Any, namespace: str, key: str) -> str:
    """A text setting, else one line naming the key and where it was set."""
    value = config.get(namespace, {}).get(key)
    if value is None:
        return ""
    return str(_checked_value(f"{namespace}.{key}", "", value, where_set(config, namespace, key)))


def setting_number(config: Any, namespace: str, key: str, low: int, high: int, default: int) -> int:
    """A whole-number setting in [low, high] (`default` when unset), else one line naming the key
    and where it was set."""
    return int(_setting_in_range(config, namespace, key, low, high, default, int, "a whole number"))


def setting_seconds(config: Any, namespace: str, key: str, low: float, high: float, default: float) -> float:
    """A number of seconds (fractions allowed) in [low, high], like setting_number."""
    return _setting_in_range(config, namespace, key, low, high, default, float, "a number of seconds")


def _setting_in_range(
    config: Any, namespace: str, key: str, low: float, high: float, default: float, kind: Any, wanted: str
) -> float:
    value = config.get(namespace, {}).get(key)
    if value is None:
        return default
    try:
        number = kind(str(value).strip())
    except ValueError:
        number = low - 1
    if isinstance(value, bool) or not low <= number <= high:
        raise Exit(
            f"{namespace}.{key} in {where_set(config, namespace, key)} is {str(value)[:40]!r}; "
            f"give {wanted} from {low:g} to {high:g}."
        )
    return float(number)


def use_environment_booleans(config: Any, environment: Mapping[str, Mapping[str, Any]]) -> None:
    """Put the boolean INVOKE_* values as `checked_environment` read them where Invoke put its own
    cast (its env level, which a runtime file given with -f still overrides), and merge."""
    runtime = getattr(config, "_runtime", None) or {}
    for namespace, keys in environment.items():
        for key, value in keys.items():
            if isinstance(value, bool) and key not in (runtime.get(namespace) or {}):
                config._env.setdefault(namespace, {})[key] = value
    config.merge()


def settle(config: Any, schema: Mapping[str, Mapping[str, Any]]) -> None:
    """Check tfrig's settings as merged, once per run, for a Config that didn't check them as it
    loaded (`inv`'s own): INVOKE_* booleans read again as people mean them, every value of its kind."""
    if getattr(config, "settings_checked", False):
        return
    use_environment_booleans(config, checked_environment(schema, getattr(config, "_env_prefix", None) or "INVOKE"))
    for namespace, keys in schema.items():
        section = config.get(namespace)
        if section is None:  # a Context made without tfrig's collection (a test's MockContext)
            continue
        if not isinstance(section, Mapping):
            raise Exit(f"{namespace} in {where_set(config, namespace, '')} is not a mapping of settings; fix it.")
        for key, default in keys.items():
            if key not in section:
                continue
            value = _checked_value(f"{namespace}.{key}", default, section[key], where_set(config, namespace, key))
            if value != section[key]:
                config[namespace][key] = value
    config._set(settings_checked=True)
