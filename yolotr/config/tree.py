"""Turning plain yaml data into typed dataclass trees, with errors that name the key path and the file.

Why by hand: the checks we need (unknown keys, `Literal` choices, `X | None`, nested dataclasses, errors naming the
exact key path and source file) take ~100 lines here, while pydantic/omegaconf would add a dependency and their own
error formats for the same job.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from yolotr.errors import UsageError


class ConfigError(UsageError):
    """A config value that cannot be used. The message always names the key path (and the file when known)."""

    same_on_every_rank = True  # every rank reads the same config and command line

    def __init__(self, key: str, problem: str, source: str | None = None):
        where = f" in {source}" if source else ""
        super().__init__(f"config key '{key}'{where}: {problem}")
        self.key = key
        self.problem = problem
        self.source = source


def from_dict(cls: type, data: Any, *, path: str = "", source: str | None = None) -> Any:
    """Builds dataclass `cls` from `data`, recursively, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path or "<root>", f"expected a mapping, got {type(data).__name__}", source)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = _join(path, str(unknown[0]))
        raise ConfigError(key, f"unknown key{_did_you_mean(str(unknown[0]), fields, path)} (known keys here: "
                          f"{', '.join(sorted(fields))})", source)
    values = {}
    for name, value in data.items():
        values[name] = _convert(hints[name], value, _join(path, name), source)
    try:
        return cls(**values)
    except TypeError as exc:  # a required field without default that the yaml left out
        raise ConfigError(path or "<root>", str(exc), source) from None
    except ValueError as exc:  # a section's own check of its values (its __post_init__), which names the field
        raise ConfigError(path or "<root>", str(exc), source) from None


def _did_you_mean(name: str, known, path: str) -> str:
    """`; did you mean 'train.lr0'?` for a near miss (a typo, a missing letter), else nothing."""
    close = [f"'{_join(path, match)}'" for match in difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)]
    return f"; did you mean {' or '.join(close)}?" if close else ""


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _convert(tp: Any, value: Any, path: str, source: str | None) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path=path, source=source)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, path, source)
            except ConfigError as exc:
                errors.append(exc.problem)
        raise ConfigError(path, "; ".join(errors), source)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(path, f"must be one of {list(choices)}, got {value!r}", source)
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {type(value).__name__} {value!r}", source)
        (item_type, *rest) = get_args(tp) or (Any,)
        return [_convert(item_type, v, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {type(value).__name__}", source)
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {value!r}", source)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {value!r}", source)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"expected a number, got {value!r}", source)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {value!r}", source)
        return value
    raise ConfigError(path, f"unsupported type {tp}", source)


def to_dict(obj: Any) -> Any:
    """The plain-data form of a dataclass tree (what is written to the run folder and stored in checkpoints)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_override(data: dict, override: str, *, source: str = "command line") -> None:
    """Applies one `key.path=value` override (value parsed as YAML) to plain config data, in place."""
    if "=" not in override:
        raise ConfigError(override, "an override must look like key.path=value", source)
    key, raw = override.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"value {raw!r} is not valid YAML: {exc}", source) from None
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), "is a value, not a section", source)
        node = child
    node[parts[-1]] = value


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal under each field), for the config reference."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = str(nxt.value.value).strip()  # type: ignore[union-attr]
    return docs


__all__ = ["ConfigError", "from_dict", "to_dict", "apply_override", "field_docs", "typing"]
