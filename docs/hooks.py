"""MkDocs hook: generate the configuration and CLI reference pages at build time.

* ``reference/config.md`` from the pydantic models of ``camoe/config.py``: one table per section (``RunConfig`` and
  every model nested in it), each key with its type, default and description. The descriptions are the comments
  written beside the fields in ``camoe/config.py`` (read with ``tokenize``): the comment on the field's line and
  the continuation lines under it that start with ``#   ``, or the comment block right above a field that has none
  on its line. A comment block above a field that has its own comment heads a group ("# numeric") and is shown
  before the description of each field of the group. A field without any comment falls back to the docstring of
  the model it holds (``split: SplitConfig``); a field with neither fails the build.
* ``reference/cli.md`` from ``camoe.cli.build_parser()``: every subcommand with its help, usage, arguments,
  defaults and choices.

Nothing is written into ``docs/``: the pages are added to the build as generated files (``on_files``), so they can
never be stale copies. ``config_reference()`` and ``cli_reference()`` return the Markdown for tests and scripts.
"""

from __future__ import annotations

import argparse
import ast
import html
import inspect
import io
import json
import logging
import os
import re
import sys
import tokenize
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # document the checkout being built, not another installed copy

log = logging.getLogger("mkdocs.hooks.camoe")  # a warning fails `mkdocs build --strict`



# ---------------------------------------------------------------------------------------------------------------------
# configuration reference


@dataclass
class FieldDoc:
    key: str  # public name (alias)
    type: str
    default: str
    description: str


@dataclass
class Section:
    path: str  # "" for the top level, "data.split", "schema.features[]"
    model: type
    fields: list[FieldDoc]


def _comments(source: str) -> tuple[dict[int, str], set[int]]:
    """Comment text per line (without the leading ``#``) and the lines that hold nothing but a comment."""
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string[1:]
    lines = source.splitlines()
    only = {n for n in comments if lines[n - 1].strip().startswith("#")}
    return comments, only


def field_comments(source: str) -> dict[str, dict[str, str]]:
    """{class name: {field name: description}} from the comments beside and above each annotated field."""
    comments, only = _comments(source)

    def is_continuation(n: int) -> bool:
        return n in only and comments[n].startswith("   ")

    out: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        docs: dict[str, str] = {}
        group = ""
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            first, last = stmt.lineno, stmt.end_lineno or stmt.lineno
            inline = " ".join(comments[n].strip() for n in range(first, last + 1) if n in comments and n not in only)
            n = last + 1
            while is_continuation(n):
                inline += " " + comments[n].strip()
                n += 1
            above: list[str] = []
            n = first - 1
            while n in only and not is_continuation(n):
                above.insert(0, comments[n].strip())
                n -= 1
            block = " ".join(above)
            if inline and block:  # a heading for the fields that follow
                group = block
            elif block:  # the field's own description; any group ends here
                group, inline = "", block
            docs[stmt.target.id] = f"({group}) {inline}" if group and inline else inline
        out[node.name] = docs
    return out


def _model_types(annotation: Any) -> list[type]:
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _model_types(arg)]


def _anchor(path: str) -> str:
    return "top-level" if not path else re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def _constraints(metadata: list[Any], text: bool = False) -> str:
    marks = []
    for item in metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                marks.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
        if getattr(item, "min_length", None) is not None:
            unit = "character" if text else "entry"
            marks.append(f"at least {item.min_length} {unit}{'' if item.min_length == 1 else 's'}")
    return ", ".join(marks)


def _type_text(annotation: Any, paths: dict[type, str]) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "`null`"
    if annotation is typing.Any:
        return "any"
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is typing.Annotated:
        inner = _type_text(args[0], paths)
        marks = _constraints([a for a in args[1:] for a in getattr(a, "metadata", [a])])
        return f"{inner} {marks}".strip()
    if origin in (typing.Union, types.UnionType):
        parts = [_type_text(a, paths) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} or `null`" if type(None) in args else text
    if origin is list:
        if not args:
            return "list"
        item = _type_text(args[0], paths)
        return f"list of {f'({item})' if item.startswith(('list', 'mapping')) else item}"
    if origin is dict:
        if not args:
            return "mapping"
        value = _type_text(args[1], paths)
        return f"mapping {_type_text(args[0], paths)} → {f'({value})' if ' ' in value else value}"
    if isinstance(annotation, type) and annotation in paths:
        return f"section [`{paths[annotation]}`](#{_anchor(paths[annotation])})"
    if isinstance(annotation, type):
        return {"str": "text", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__)
    return str(annotation)


def _default_text(field: Any, paths: dict[type, str]) -> str:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    models = _model_types(field.annotation)
    if models and models[0] in paths and not isinstance(value, (list, dict)):
        return "its section's defaults"
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _docstring(model: type) -> str:
    doc = inspect.getdoc(model) or ""
    own = model.__dict__.get("__doc__")  # not inherited from BaseModel
    return doc if own else ""


def _summary(model: type) -> str:
    return _docstring(model).split("\n\n")[0].replace("\n", " ")


def _markdown_text(text: str) -> str:
    """Plain comment or docstring text as Markdown: ``code`` -> `code`; <, >, &, | and * escaped outside code."""
    text = re.sub(r"``(.+?)``", r"`\1`", text)
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # outside code spans
        parts[i] = html.escape(parts[i], quote=False).replace("|", "&#124;").replace("*", "&#42;")
    return "`".join(parts)


def config_sections() -> list[Section]:
    """``RunConfig`` and every model nested in it, in file order of their first appearance."""
    from camoe import config as config_module
    from camoe.config import RunConfig

    notes = field_comments(Path(inspect.getsourcefile(config_module) or "").read_text())
    order: list[tuple[str, type]] = []

    def walk(model: type, path: str) -> None:
        order.append((path, model))
        for name, field in model.model_fields.items():
            key = field.alias or name
            for sub in _model_types(field.annotation):
                many = typing.get_origin(field.annotation) is list
                walk(sub, f"{path + '.' if path else ''}{key}{'[]' if many else ''}")

    walk(RunConfig, "")
    paths = {model: path for path, model in order}
    sections = []
    for path, model in order:
        rows = []
        for name, field in model.model_fields.items():
            key = field.alias or name
            text = notes.get(model.__name__, {}).get(name, "")
            held = _model_types(field.annotation)
            if not text and held:
                text = _summary(held[0])
            ftype = _type_text(field.annotation, paths)
            marks = _constraints(field.metadata, text=field.annotation is str)
            if not text:
                log.warning(f"config reference: {model.__name__}.{name} has no description; add a comment beside it "
                            f"in camoe/config.py")
            rows.append(FieldDoc(key, f"{ftype}, {marks}" if marks else ftype, _default_text(field, paths), text))
        sections.append(Section(path, model, rows))
    return sections


def config_reference() -> str:
    """Markdown of the configuration reference page."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from the pydantic models in `camoe/config.py` when the site is built: every key, its type, "
        "default and description (the comment beside the field in the source). A run config is a YAML file of these "
        "sections; unknown keys are refused with the list of accepted ones. On the command line, `--set KEY=VALUE` "
        "overrides one key (`--set train.epochs=2`, `--set model.expert_hidden=[64,32]`). A YAML file may name a "
        "`base:` file and hold only what differs. Start from `camoe/configs/synthetic.yaml`.",
        "",
        "| section | model | what it holds |",
        "|---|---|---|",
    ]
    sections = config_sections()
    for s in sections:
        name = f"`{s.path}`" if s.path else "top level"
        lines.append(f"| [{name}](#{_anchor(s.path)}) | `{s.model.__name__}` | {_markdown_text(_summary(s.model))} |")
    for s in sections:
        title = f"`{s.path}`" if s.path else "Top level"
        lines += ["", f"## {title} {{#{_anchor(s.path)}}}", "", f"Model: `camoe.config.{s.model.__name__}`.", ""]
        doc = _docstring(s.model)
        if doc:
            lines += [_markdown_text(doc), ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for f in s.fields:
            full = f"{s.path}.{f.key}" if s.path else f.key
            lines.append(f"| `{full}` | {f.type} | {f.default} | {_markdown_text(f.description) or '–'} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# CLI reference


def _cell(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "&#124;").replace("\n", " ")


def _value(action: argparse.Action) -> str:
    """What an argument takes: a flag, its choices, or its value type."""
    if action.nargs == 0:
        return "flag"
    if action.choices:
        return ", ".join(f"`{c}`" for c in action.choices)
    kind = action.type
    closure = dict(zip(getattr(getattr(kind, "__code__", None), "co_freevars", ()), getattr(kind, "__closure__", None) or ()))
    if "low" in closure and "high" in closure:  # camoe.cli._int_in(low, high)
        text = f"integer in [{closure['low'].cell_contents}, {closure['high'].cell_contents}]"
    else:
        text = {None: "text", str: "text", int: "integer", float: "number"}.get(kind, getattr(kind, "__name__", str(kind)))
    if action.nargs in ("*", "+"):
        text = f"{'zero or more' if action.nargs == '*' else 'one or more'} × {text}"
    return text


def _help(action: argparse.Action, prog: str) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    params = {**vars(action), "prog": prog}
    if action.choices is not None:
        params["choices"] = ", ".join(map(str, action.choices))
    text = re.sub(r"\s*\(default: %\(default\)s\)", "", action.help) % params  # the default has its own column
    if isinstance(action, argparse._AppendAction):
        text += " (repeatable)"
    return text


def _default(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    value = action.default
    if value is None or value == argparse.SUPPRESS or value == []:
        return ""
    return f"`{value}`"


def _arg_name(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    names = ", ".join(action.option_strings)
    if action.nargs == 0 or (action.choices and not action.metavar):
        return f"`{names}`"
    metavar = action.metavar or action.dest.upper()
    suffix = {"*": f"[{metavar} ...]", "+": f"{metavar} [...]", "?": f"[{metavar}]"}.get(str(action.nargs), metavar)
    return f"`{names} {suffix}`"


def _usage(parser: argparse.ArgumentParser, width: int = 100) -> str:
    """The parser's usage line, wrapped by argparse at ``width`` columns (it reads ``COLUMNS``)."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        lines = parser.format_usage().rstrip().splitlines()
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    prefix = len("usage: ")  # argparse indents continuation lines under the program name that follows it
    return "\n".join(line[prefix:] for line in lines)


def subcommands() -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """{name: (help, parser)} of every ``camoe`` subcommand, in the parser's order."""
    from camoe.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    return {name: (helps.get(name, ""), p) for name, p in sub.choices.items()}


def cli_reference() -> str:
    """Markdown of the CLI reference page."""
    from camoe.cli import build_parser

    top = build_parser()
    commands = subcommands()
    lines = [
        "# CLI reference",
        "",
        "Generated from `camoe.cli.build_parser()` when the site is built; `camoe COMMAND --help` prints the same. "
        f"{_cell(top.description or '')} Run the commands as `camoe ...` inside the virtualenv, as "
        "`./run camoe ...` from the repository root, or as `python -m camoe ...`. Errors in data or config print "
        "one line naming the file, column, feature or value and exit with status 2. `camoe --version` prints "
        "the version.",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    lines += [f"| [`camoe {name}`](#camoe-{name}) | {_cell(help_)} |" for name, (help_, _) in commands.items()]
    for name, (help_, parser) in commands.items():
        usage = _usage(parser)
        lines += ["", f"## `camoe {name}` {{#camoe-{name}}}", "", _cell(help_[0].upper() + help_[1:]) + ".", "",
                  "```text", usage, "```", "",
                  "| argument | value | default | description |", "|---|---|---|---|"]
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            help_text = _cell(_help(action, parser.prog)) or "–"
            lines.append(f"| {_arg_name(action)} | {_value(action)} | {_default(action)} | {help_text} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# MkDocs events

GENERATED = {"reference/config.md": config_reference, "reference/cli.md": cli_reference}


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for src_uri, make in GENERATED.items():
        files.append(File.generated(config, src_uri, content=make()))
    return files
