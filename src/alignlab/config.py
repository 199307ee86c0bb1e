"""Dataclass configs whose field docstrings become CLI help.

A config field is documented by a string literal right under it::

    @dataclass(frozen=True)
    class TrainConfig:
        lr: float = 1e-3
        \"\"\"Adam learning rate.\"\"\"

``add_dataclass_args`` turns every field into ``--field-name`` with that help text, and
``from_args`` builds the dataclass back from the parsed namespace.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import re
import textwrap
import types
import typing
from typing import Any, TypeVar

from alignlab.errors import AlignlabError

T = TypeVar("T")


def field_docs(cls: type) -> dict[str, str]:
    """Map field name -> the docstring written under it in the class body."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for stmt, nxt in zip(body, body[1:]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def _base_type(tp: Any) -> tuple[Any, bool]:
    """Strip ``X | None`` -> (X, optional)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Add one ``--option`` per dataclass field, with the field's docstring as help."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli") is False:
            continue
        tp, _optional = _base_type(hints[f.name])
        flag = "--" + prefix + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        help_text = docs.get(f.name, "").replace("%", "%%")  # argparse formats help with %
        if default is not None:
            help_text += f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": prefix.replace("-", "_") + f.name, "default": None, "help": help_text}
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin in (list, tuple):
            inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
            kwargs.update(nargs="+", type=inner)
        elif origin is typing.Literal:
            kwargs.update(choices=list(typing.get_args(tp)), type=type(typing.get_args(tp)[0]))
        elif tp in (int, float, str):
            kwargs["type"] = tp
        else:
            kwargs["type"] = str
        group.add_argument(flag, **kwargs)


def from_args(cls: type[T], args: argparse.Namespace, prefix: str = "", **overrides: Any) -> T:
    """Build ``cls`` from parsed args; options left unset keep the dataclass default."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = prefix.replace("-", "_") + f.name
        value = getattr(args, key, None)
        if value is not None:
            if isinstance(value, list) and typing.get_origin(f.type) is tuple:
                value = tuple(value)
            values[f.name] = value
    values.update(overrides)
    if not prefix:
        return cls(**values)
    try:
        return cls(**values)
    except AlignlabError as exc:  # the dataclass names its own flags; name the prefixed ones the user typed
        raise type(exc)(_prefix_flags(str(exc), cls, prefix)) from exc


def _prefix_flags(message: str, cls: type, prefix: str) -> str:
    names = sorted((f.name.replace("_", "-") for f in dataclasses.fields(cls)), key=len, reverse=True)
    pattern = re.compile(r"(?<![\w-])--(" + "|".join(map(re.escape, names)) + r")(?![\w-])")
    return pattern.sub(lambda m: "--" + prefix + m.group(1), message)


def check_finite(obj: Any, *names: str) -> None:
    """Raise a one-line error when a float field is NaN or infinite (comparisons with NaN are all False,
    so range checks alone let it through)."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise AlignlabError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
