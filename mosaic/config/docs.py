"""Render the Markdown reference of every config key from the schema.

``python -m mosaic.config.docs > docs/config-reference.md`` regenerates the
checked-in reference; a test fails when it no longer matches the schema, so the
docs cannot drift from the code.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel, ByteSize, SecretStr
from pydantic.fields import FieldInfo

from mosaic import providers
from mosaic.config.schema import Config, MountPath, ProviderSpec, VirtualPath, secret_fields
from mosaic.config.secrets import FILE_SUFFIX

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path",
            SecretStr: "secret", ByteSize: "size (bytes, or `10 GiB`, `500MB`)"}
_BOUNDS = ((annotated_types.Ge, "≥"), (annotated_types.Gt, ">"), (annotated_types.Le, "≤"),
           (annotated_types.Lt, "<"))

INTRO = """\
# Configuration reference

Generated from `mosaic/config/schema.py` by `python -m mosaic.config.docs`;
do not edit by hand (a test compares this file with the schema).

Unknown keys are errors. Any string value may use `${ENV_VAR}` (`$${X}` keeps a
literal `${X}`). A key of type *secret* may instead be given as `<key>_file:
/path`: the file's content, minus one trailing newline, becomes the value
(relative paths are relative to the config file). Secrets never appear in
error messages or logs.
"""


def render_reference() -> str:
    """The whole reference as Markdown."""
    sections = [INTRO]
    for path, model in _models(Config, "", set()):
        sections.append(_section(path, model))
        if model is ProviderSpec:
            sections.extend(_provider_sections())
    return "\n".join(sections)


def _models(model: type[BaseModel], path: str,
            seen: set[type[BaseModel]]) -> Iterator[tuple[str, type[BaseModel]]]:
    """Every model reachable from ``model``, once each, with the first path reaching it."""
    seen.add(model)
    yield path, model
    for name, field in model.model_fields.items():
        for suffix, child in _nested(field.annotation, name):
            if child not in seen:
                yield from _models(child, f"{path}.{suffix}" if path else suffix, seen)


def _nested(annotation: Any, path: str) -> Iterator[tuple[str, type[BaseModel]]]:
    annotation = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield path, annotation
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict:
        placeholder = "path" if args[0] in (VirtualPath, MountPath) else "name"
        yield from _nested(args[1], f"{path}.<{placeholder}>")
    elif origin is list:
        yield from _nested(args[0], f"{path}[]")
    elif origin in (typing.Union, types.UnionType):
        for arm in args:
            yield from _nested(arm, path)


def _section(path: str, model: type[BaseModel]) -> str:
    title = f"`{path}`" if path else "Top level"
    # Docstrings are reStructuredText: ``x`` becomes Markdown's `x`.
    doc = inspect.cleandoc(model.__doc__).replace("``", "`") + "\n\n" if model.__doc__ else ""
    return (f'<a id="{_anchor(model)}"></a>\n\n## {title} ({model.__name__})\n\n{doc}'
            f"{_table(model)}")


def _provider_sections() -> list[str]:
    """Options of the built-in providers (those needing no extra package)."""
    sections = []
    for name, (_module, extra) in sorted(providers.REGISTRY.items()):
        if extra is None:
            options = providers.load(name).Options
            sections.append(f"### Provider `type: {name}`\n\n{_table(options)}")
    return sections


def _table(model: type[BaseModel]) -> str:
    if not model.model_fields:
        return "No options.\n"
    rows = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    secrets = secret_fields(model)
    for name, field in model.model_fields.items():
        description = field.description or ""
        if name in secrets:
            description = f"{description}. Or `{name}{FILE_SUFFIX}`: read from that file."
        rows.append(_row(f"`{name}`", _type_text(field), _default(field), description.strip()))
    if model is ProviderSpec:
        rows.append(_row("*(others)*", "", "", "options of the provider named by `type`, below"))
    return "\n".join(rows) + "\n"


def _row(*cells: str) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _type_text(field: FieldInfo) -> str:
    bounds = [f"{sign} {getattr(m, type(m).__name__.lower())}"
              for m in field.metadata for kind, sign in _BOUNDS if isinstance(m, kind)]
    text = _type_name(field.annotation)
    return f"{text} ({', '.join(bounds)})" if bounds else text


def _type_name(annotation: Any) -> str:
    if annotation in (VirtualPath, MountPath):
        return "virtual path"
    annotation = _strip(annotation)
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{_anchor(annotation)})"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"mapping: {_key_name(args[0])} → {_type_name(args[1])}"
    if origin in (typing.Union, types.UnionType):
        arms = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(arms) + (" or null" if type(None) in args else "")
    return str(annotation)


def _key_name(annotation: Any) -> str:
    if annotation in (VirtualPath, MountPath):
        return "virtual path"
    for meta in typing.get_args(annotation)[1:]:
        pattern = getattr(meta, "pattern", None) or next(
            (getattr(m, "pattern", None) for m in getattr(meta, "metadata", [])), None)
        if pattern:
            return f"name matching `{pattern}`"
    return _type_name(annotation)


def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "computed"
    if field.is_required():
        return "**required**"
    value = field.default
    if isinstance(value, BaseModel):
        return "see section"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`" if value not in ([], {}) else f"`{value!r}`"


def _anchor(model: type[BaseModel]) -> str:
    return model.__name__.lower()


if __name__ == "__main__":
    print(render_reference(), end="")
