"""Settings as users give them (invoke.yaml, INVOKE_* variables): read, checked, and named with where
they came from when they are wrong."""

from __future__ import annotations

from typing import Any

from invoke.exceptions import Exit


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
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise Exit(
            f"{namespace}.{key} in {where_set(config, namespace, key)} is a {type(value).__name__}; "
            "give it as text (several hosts: one comma-separated text)."
        )
    return str(value)


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
