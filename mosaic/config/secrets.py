"""Secret and environment resolution on the raw YAML data, before validation.

* ``${VAR}`` in any string value is replaced by the environment variable
  (``$${VAR}`` keeps a literal ``${VAR}``).
* A secret field ``<key>`` (typed ``SecretStr`` in the schema or in a
  provider's ``Options``) may instead be given as ``<key>_file: /path``; the
  file's content, minus one trailing newline, becomes the value.

Which mappings have which secret fields is read from the schema by walking the
data alongside the model types (:func:`shape_of`, :func:`shape_at`), so a new
``SecretStr`` field gets ``_file`` support and redaction with no edit here.
Problems name the variable or the file, never a value.
"""

from __future__ import annotations

import functools
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mosaic import providers
from mosaic.config.schema import Config, ProviderSpec, secret_fields

Loc = tuple[Any, ...]
ENV_REF = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
FILE_SUFFIX = "_file"
MAX_SECRET_BYTES = 64 * 1024  # a secret file is small; this refuses /dev/zero and logs


@dataclass(frozen=True)
class Shape:
    """What a mapping at one place of the config accepts."""

    fields: dict[str, Any]  # key -> annotation
    secrets: frozenset[str]


@dataclass
class Resolution:
    """Outcome of :func:`resolve`: problems (loc, message) and the values to keep quiet."""

    problems: list[tuple[Loc, str]] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)
    #: every value an environment variable gave -> its reference, ``${NAME}``
    references: dict[str, str] = field(default_factory=dict)
    #: ``<key>`` location -> the ``<key>_file`` location it was read through
    moved: dict[Loc, Loc] = field(default_factory=dict)
    #: every ``<key>_file`` the config names, read or not (a reload watches them)
    files: set[Path] = field(default_factory=set)

    def redact(self, message: str) -> str:
        """``message`` with each environment value as its reference and each secret as ``***``.

        A validator may quote any value it refuses (``unknown provider 'x'``), and
        the value may be a secret that was put in an unexpected key. Quoted
        values are replaced whatever their length; bare ones from 4 characters
        on, so that a short value does not garble the words around it.
        """
        for value, reference in _longest_first(self.references.items()):
            message = message.replace(repr(value), repr(reference))
            if len(value) >= 4:
                message = message.replace(value, reference)
        for secret, _ in _longest_first((s, s) for s in self.secrets):
            message = message.replace(repr(secret), "'***'")
            if len(secret) >= 3:
                message = message.replace(secret, "***")
        return message


def _longest_first(pairs: Any) -> list[tuple[str, str]]:
    return sorted((p for p in pairs if p[0]), key=lambda pair: len(pair[0]), reverse=True)


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` down to the type that shapes the data."""
    try:
        return _unwrap_cached(annotation)
    except TypeError:  # an unhashable annotation: work it out each time
        return _unwrap_uncached(annotation)


def _unwrap_uncached(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            arms = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(arms) != 1:
                return annotation
            annotation = arms[0]
        else:
            return annotation


# The schema is fixed at run time: a config of 1,000 tenants asks the same
# questions about the same few types tens of thousands of times.
_unwrap_cached = functools.cache(_unwrap_uncached)


def _provider_options(value: Mapping[str, Any]) -> type[BaseModel] | None:
    name = value.get("type")
    if not isinstance(name, str):
        return None
    try:
        return providers.load(name).Options
    except providers.ProviderUnavailable:
        return None


def shape_of(annotation: Any, value: Mapping[str, Any]) -> Shape | None:
    """The shape of ``value`` if ``annotation`` is a model, else None.

    A provider spec's shape depends on its data: ``type`` plus the options of
    the provider it names; so does a union of models (:func:`_kind_arm`).
    """
    model = _kind_arm(_unwrap(annotation), value)
    if not _is_model(model):
        return None
    if model is ProviderSpec:
        return _provider_shape(_provider_options(value))
    return _model_shape(model)


def _kind_arm(annotation: Any, value: Mapping[str, Any]) -> Any:
    """For a union of models told apart by ``kind`` (an smb mount's ``credentials``),
    the model ``value`` is read as: the one whose ``kind`` it names, else the one whose
    ``kind`` has a default. Any other annotation as it is."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return annotation
    kind = value.get("kind")
    for arm in typing.get_args(annotation):
        field = arm.model_fields.get("kind") if _is_model(arm) else None
        if field is None:
            continue
        if kind in typing.get_args(field.annotation) or (kind is None and
                                                          not field.is_required()):
            return arm
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


@functools.cache
def _model_shape(model: type[BaseModel]) -> Shape:
    fields = {name: f.annotation for name, f in model.model_fields.items()}
    return Shape(fields, frozenset(secret_fields(model)))


@functools.cache
def _provider_shape(options: type[BaseModel] | None) -> Shape:
    """A provider spec: ``type`` plus the options of the provider it names, if known."""
    if options is None:
        return Shape({"type": str}, frozenset())
    options_shape = _model_shape(options)
    return Shape({"type": str, **options_shape.fields}, options_shape.secrets)


def child_annotation(annotation: Any, key: Any, value: Any) -> Any:
    """The annotation of ``value[key]`` given the annotation of ``value``."""
    if isinstance(value, Mapping):
        shape = shape_of(annotation, value)
        if shape is not None:
            return shape.fields.get(key)
    return _item_annotation(annotation)


def _item_annotation(annotation: Any) -> Any:
    """The annotation of the values of a ``dict[K, V]`` or items of a ``list[T]``, else None."""
    try:
        return _item_annotation_cached(annotation)
    except TypeError:  # unhashable
        return _item_annotation_uncached(annotation)


def _item_annotation_uncached(annotation: Any) -> Any:
    container = _unwrap(annotation)
    args = typing.get_args(container)
    if typing.get_origin(container) is dict and len(args) == 2:
        return args[1]
    if typing.get_origin(container) is list and args:
        return args[0]
    return None


_item_annotation_cached = functools.cache(_item_annotation_uncached)


def shape_at(loc: Loc, data: Any) -> Shape | None:
    """The shape of the mapping at ``loc`` of the raw config ``data``."""
    annotation: Any = Config
    for key in loc:
        try:
            child = data[key]
        except (KeyError, IndexError, TypeError):
            return None
        annotation, data = child_annotation(annotation, key, data), child
    return shape_of(annotation, data) if isinstance(data, Mapping) else None


def resolve(data: dict[str, Any], base_dir: Path,
            environ: Mapping[str, str] = os.environ) -> Resolution:
    """Resolve ``${VAR}`` and ``<key>_file`` in ``data`` in place.

    ``Resolution.moved`` tells which values now live under another key, so the
    caller can point later problems with them at the ``_file`` line. Relative
    secret file paths are relative to ``base_dir`` (the config's directory).
    """
    walker = _Walker(base_dir, environ)
    walker.walk(data, Config, ())
    return walker.result


class _Walker:
    def __init__(self, base_dir: Path, environ: Mapping[str, str]) -> None:
        self.base_dir = base_dir
        self.environ = environ
        self.result = Resolution()

    def walk(self, value: Any, annotation: Any, loc: Loc) -> Any:
        if isinstance(value, dict):
            self._walk_mapping(value, annotation, loc)
        elif isinstance(value, list):
            item_annotation = _item_annotation(annotation)
            for i, item in enumerate(value):
                value[i] = self.walk(item, item_annotation, (*loc, i))
        elif isinstance(value, str):
            return self.substitute(value, loc)
        return value

    def _walk_mapping(self, value: dict[Any, Any], annotation: Any, loc: Loc) -> None:
        done = self._provider_type(value, annotation, loc)
        shape = shape_of(annotation, value)
        secrets = shape.secrets if shape else frozenset()
        done |= {name for name in secrets if self._inline_file(value, name, loc)}
        item_annotation = None if shape else _item_annotation(annotation)
        for key in list(value):
            if key in done:
                continue  # a file's content is literal: no ${VAR} expansion
            child = shape.fields.get(key) if shape else item_annotation
            value[key] = self.walk(value[key], child, (*loc, key))
            if key in secrets and isinstance(value[key], str):
                self.result.secrets.add(value[key])

    def _provider_type(self, value: dict[Any, Any], annotation: Any, loc: Loc) -> set[str]:
        """Expand a provider spec's ``type`` first: it decides which keys are secrets."""
        if _unwrap(annotation) is not ProviderSpec or not isinstance(value.get("type"), str):
            return set()
        value["type"] = self.substitute(value["type"], (*loc, "type"))
        return {"type"}

    def substitute(self, text: str, loc: Loc) -> str:
        if "$" not in text:
            return text  # most values: skip the regular expression

        def replace(match: re.Match[str]) -> str:
            escaped, name = match.groups()
            if escaped:
                return match.group(0)[1:]
            if name not in self.environ:
                self.result.problems.append((loc, f"environment variable {name} is not set"))
                return match.group(0)
            self.result.references.setdefault(self.environ[name], match.group(0))
            return self.environ[name]

        return ENV_REF.sub(replace, text)

    def _inline_file(self, value: dict[Any, Any], name: str, loc: Loc) -> bool:
        """Replace ``<name>_file`` by ``<name>`` holding the file content."""
        file_key = name + FILE_SUFFIX
        if file_key not in value:
            return False
        file_loc, target_loc = (*loc, file_key), (*loc, name)
        raw_path = value.pop(file_key)
        if name in value:
            self.result.problems.append(
                (file_loc, f"give either {name} or {file_key}, not both"))
            return False
        if not isinstance(raw_path, str):
            self.result.problems.append((file_loc, f"{file_key} must be a file path"))
            return False
        self.result.moved[target_loc] = file_loc
        known_problems = len(self.result.problems)
        path = self.base_dir / self.substitute(raw_path, target_loc)
        # A path with an unset variable in it is reported once, not also as unreadable.
        content = self._read(path, target_loc) \
            if len(self.result.problems) == known_problems else None
        value[name] = content if content is not None else ""
        if content:
            self.result.secrets.add(content)
        return True

    def _read(self, path: Path, loc: Loc) -> str | None:
        self.result.files.add(path)
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_SECRET_BYTES + 1)
        except OSError as exc:
            self.result.problems.append((loc, f"cannot read {path}: {exc.strerror}"))
            return None
        if len(raw) > MAX_SECRET_BYTES:
            self.result.problems.append((loc, f"{path} is larger than {MAX_SECRET_BYTES} bytes"))
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.result.problems.append((loc, f"{path} is not UTF-8 text"))
            return None
        return text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
