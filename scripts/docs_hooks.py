"""MkDocs hooks (mkdocs.yml, `hooks:`): the reference pages, written while the site builds,
each from its one source in the code, and the home page from README.md.

- reference/spec.md: the spec's JSON Schema (`stagetune schema`), one table per object;
- reference/cli.md: the Typer app's commands, as `typer ... utils docs` writes them;
- reference/settings.md: the `Settings` class: each field's variable, default and the comment
  beside it in workers/settings.py;
- reference/api.md: the service's OpenAPI document, one section per operation.

Nothing here starts Ray or opens a database: the app is built but never started (its
lifespan is what connects), and its settings are the defaults, whatever this shell sets.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import re
import tokenize
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parents[1]
GENERATED = ("Generated from the code when the site is built (`scripts/docs_hooks.py`); "
             "edit {source}, not this page.")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    pages = {
        "index.md": home_page(),
        "reference/spec.md": spec_page(),
        "reference/spec.schema.json": _json(_spec_schema()),
        "reference/cli.md": cli_page(),
        "reference/settings.md": settings_page(),
        "reference/api.md": api_page(),
        "reference/openapi.json": _json(_openapi()),
    }
    for path, content in pages.items():
        files.append(File.generated(config, path, content=content))
    return files


def home_page() -> str:
    """README.md, whose links name the pages from the repository's root (docs/guides/...)."""
    return (REPO / "README.md").read_text().replace("](docs/", "](")


# -- the spec


def _spec_schema() -> dict[str, Any]:
    from stagetune.studies.spec.schema import spec_schema

    return spec_schema()


TEXT_FORMS = {"NumberText", "BooleanText"}  # the widening for YAML 1.1: said once, above


def spec_page() -> str:
    schema = _spec_schema()
    defs = schema["$defs"]
    lines = ["# The study spec", "",
             GENERATED.format(source="the pydantic models in `studies/spec/model.py`"), "",
             schema["description"], "",
             "The same schema as one JSON document: [spec.schema.json](spec.schema.json) "
             "(`stagetune schema` prints it). Wherever a number or a boolean is taken, the text "
             "YAML 1.1 leaves for one is taken too (`1e-5`, `yes`, `off`), as the service "
             "reads it. What a schema cannot know (the registered names, the knobs they take, "
             "`low` below `high`) `stagetune validate` and the service check. "
             "[The stages](../guides/stages.md) says what the stages' fields change.", ""]
    lines += _object_section("StudySpec", schema, level=2)
    for name in _reachable(schema, defs):
        lines += _object_section(name, defs[name], level=3)
    return "\n".join(lines)


def _model_comments(name: str) -> dict[str, str]:
    """The comments beside the fields of the spec's model `name` and of its bases."""
    from pydantic import BaseModel

    from stagetune.studies.spec import model

    cls = getattr(model, name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
        return {}
    said: dict[str, str] = {}
    for base in reversed([c for c in cls.__mro__ if issubclass(c, BaseModel) and c is not BaseModel]):
        said.update({f: text for f, (_, text) in _field_comments(base).items() if text})
    return said


def _reachable(schema: dict[str, Any], defs: dict[str, Any]) -> list[str]:
    """Definition names in the order a reader meets them from the top, breadth first."""
    order: list[str] = []
    queue = [schema]
    while queue:
        for ref in _refs(queue.pop(0)):
            if ref not in order and ref not in TEXT_FORMS and ref in defs:
                order.append(ref)
                queue.append(defs[ref])
    return order + [n for n in defs if n not in order and n not in TEXT_FORMS]


def _refs(node: Any) -> list[str]:
    if isinstance(node, list):
        return [r for item in node for r in _refs(item)]
    if not isinstance(node, dict):
        return []
    own = [node["$ref"].rsplit("/", 1)[-1]] if "$ref" in node else []
    return own + [r for key, value in node.items() if key != "$defs" for r in _refs(value)]


def _object_section(name: str, node: dict[str, Any], level: int,
                    link: Callable[[str], str] | None = None) -> list[str]:
    """A heading and a table of an object's fields; `link` names the objects it refers to."""
    link = link or _spec_link
    lines = ["#" * level + f" {name}", ""]
    if node.get("description") and name != "StudySpec":
        lines += [_one_paragraph(node["description"]), ""]
    needs = _needs(node)
    if needs:
        lines += [f"Needs {needs}.", ""]
    required = set(node.get("required", []))
    comments = _model_comments(name) if link is _spec_link else {}
    lines += ["| field | type | default | description |", "|---|---|---|---|"]
    for field, sub in node.get("properties", {}).items():
        lines.append(f"| `{field}` | {_cell(_type(sub, link))} | {_default(field in required, sub)} | "
                     f"{_cell(_one_paragraph(sub.get('description') or comments.get(field, '')))} |")
    if node.get("additionalProperties") is False:
        lines += ["", "Any other field is refused."]
    return lines + [""]


def _default(required: bool, node: dict[str, Any]) -> str:
    if required:
        return "required"
    if "default" not in node:
        return ""
    value = node["default"]
    # an object's default is its fields' defaults, which its own table gives
    return "its fields' defaults" if isinstance(value, dict) and value else f"`{json.dumps(value)}`"


def _needs(node: dict[str, Any]) -> str:
    """An object-level `anyOf` of required fields (a dataset and a model, or a trainer)."""
    options = [" and ".join(f"`{f}`" for f in branch["required"])
               for branch in node.get("anyOf", []) if branch.get("required")]
    return " or ".join(options)


def _spec_link(name: str) -> str:
    return "" if name in TEXT_FORMS else f"[{name}](#{name.lower()})"


def _type(node: dict[str, Any], link: Callable[[str], str] = _spec_link) -> str:
    """A schema in a few words: its type, its bounds, links to the objects it names."""
    if "$ref" in node:
        return link(node["$ref"].rsplit("/", 1)[-1])
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    branches = node.get("anyOf") or node.get("oneOf")
    if branches:
        kinds = list(dict.fromkeys(t for t in (_type(b, link) for b in branches) if t))
        if set(SCALARS) <= set(kinds):  # a condition's or a choice's value
            kinds = ["scalar", *(k for k in kinds if k not in SCALARS)]
        return " or ".join(kinds)
    kind = node.get("type")
    if kind == "array":
        words = f"list of {_type(node.get('items', {}), link) or 'anything'}"
    elif kind == "object":
        values = node.get("additionalProperties")
        words = (f"map of {_type(values, link) or 'anything'}" if isinstance(values, dict)
                 else "object")
    else:
        words = str(kind) if kind else "anything"
    return words + _bounds(node)


SCALARS = ("string", "integer", "number", "boolean")
BOUNDS = {"minimum": "≥ {}", "exclusiveMinimum": "> {}", "maximum": "≤ {}",
          "exclusiveMaximum": "< {}", "minLength": "at least {} character",
          "maxLength": "at most {} character", "minItems": "at least {} item",
          "maxItems": "at most {} item", "minProperties": "at least {} entry",
          "maxProperties": "at most {} entry", "pattern": "matching `{}`"}


def _bounds(node: dict[str, Any]) -> str:
    said = [_plural(text.format(node[key]), node[key]) for key, text in BOUNDS.items()
            if key in node]
    if node.get("uniqueItems"):
        said.append("distinct")
    return f" ({', '.join(said)})" if said else ""


def _plural(text: str, count: Any) -> str:
    if count == 1 or not text.startswith("at "):
        return text
    return text[:-1] + "ies" if text.endswith("y") else text + "s"


# -- the command line


def cli_page() -> str:
    import typer.main
    from typer.cli import get_docs_for_click  # what `typer MODULE utils docs` writes

    from stagetune.service.cli._app import app  # the Typer app (`cli.app` is untyped, lazy)

    command = typer.main.get_command(app)
    context = typer.Context(command, info_name="stagetune")
    body = get_docs_for_click(obj=command, ctx=context, name="stagetune", indent=1)
    # the list of commands links to each command's section
    body = re.sub(r"^\* `([a-z][\w-]*)`:", r"* [`\1`](#stagetune-\1):", body, flags=re.MULTILINE)
    return "\n".join(["# The command line", "",
                      GENERATED.format(source="the commands' docstrings and options in "
                                       "`service/cli/`"), "",
                      "How the commands behave (formats, paging, waiting, exit codes) is in "
                      "[Using the command line](../guides/cli.md).", "", body])


# -- the settings


def settings_page() -> str:
    from stagetune.workers.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    comments = _field_comments(Settings)
    lines = ["# Settings", "",
             GENERATED.format(source="`workers/settings.py`"), "",
             "Every setting is an environment variable, read once per process by the one "
             "`Settings` class (`workers/settings.py`; `stagetune.service.settings` re-exports "
             "it). An empty variable means the default. Where the runners and the workers "
             "read theirs: [Observability and integrations](../guides/observability.md#settings) "
             "and [On Ray](../guides/ray.md).", ""]
    section = None
    for name, field in Settings.model_fields.items():
        heading, comment = comments.get(name, (None, ""))
        if heading != section:
            section = heading
            title = heading or "other"
            lines += ["", f"## {title[:1].upper()}{title[1:]}", "",
                      "| variable | default | type | what it does |", "|---|---|---|---|"]
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        variable = alias or f"{prefix}{name}".upper()
        default = ("unset" if field.default is None else "empty" if field.default == ""
                   else f"`{_plain(field.default)}`")
        about = field.description or comment
        lines.append(f"| `{variable}` | {default} | {_cell(_annotation(field))} | {_cell(about)} |")
    return "\n".join(lines) + "\n"


def _field_comments(cls: type) -> dict[str, tuple[str | None, str]]:
    """Each field's section (a `# -- name` line above it) and its comment: the comment lines
    right above it and the one beside it, which are the code's only words for a setting."""
    source = inspect.getsource(cls)
    beside: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and token.line.strip() != token.string:
            beside[token.start[0]] = token.string.lstrip("# ")
    found: dict[str, tuple[str | None, str]] = {}
    section: str | None = None
    above: list[str] = []
    for number, line in enumerate(source.splitlines(), start=1):
        text = line.strip()
        if text.startswith("# -- "):
            section, above = text.removeprefix("# -- ").strip(), []
        elif text.startswith("#"):
            above.append(text.lstrip("# "))
        elif field := re.match(r"(\w+)\s*:", text):
            words = [*above, beside.get(number, "")]
            found[field.group(1)] = (section, _sentence(" ".join(w for w in words if w)))
            above = []
        else:
            above = []
    return found


def _sentence(text: str) -> str:
    """A comment as prose: `x ... / ... y` continuations joined."""
    return re.sub(r"\s*\.\.\.\s+\.\.\.\s*", " ", text).strip()


def _annotation(field: Any) -> str:
    choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is Literal \
        else ()
    if choices:
        return "one of " + ", ".join(f"`{c}`" for c in choices)
    kind = str(field.annotation).replace("typing.", "").replace("pathlib.", "")
    kind = re.sub(r"<class '(\w+)'>", r"\1", kind)
    bounds = [f"{symbol} {getattr(m, attr)}" for m in field.metadata
              for attr, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))
              if getattr(m, attr, None) is not None]
    return f"`{kind}`" + (f" ({', '.join(bounds)})" if bounds else "")


def _plain(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


# -- the REST API


@functools.cache
def _openapi() -> dict[str, Any]:
    from stagetune.service.app import create_app
    from stagetune.service.settings import Settings

    # the defaults, not this shell's environment; creating the app connects nothing
    return create_app(Settings.model_construct()).openapi()


def api_page() -> str:
    document = _openapi()
    operations = [(path, method.upper(), op) for path, ops in document["paths"].items()
                  for method, op in ops.items()]
    lines = ["# The REST API", "",
             GENERATED.format(source="the routes in `service/api/` and `service/metrics.py`"), "",
             f"{document['info']['title']} {document['info']['version']}: "
             f"{document['info'].get('summary', '')}. A running service serves the same "
             "document at `/openapi.json` and browses it at `/docs` and `/redoc`; here it is "
             "as one file: [openapi.json](openapi.json). How the API behaves (statuses, "
             "cancelling, the queue, errors) is in [Using the API](../guides/api.md); a "
             "study's body is [the spec](spec.md).", "",
             "| method | path | what it does |", "|---|---|---|"]
    for path, method, op in operations:
        lines.append(f"| {method} | [`{path}`](#{_anchor(method, path)}) | "
                     f"{_cell(op.get('summary', ''))} |")
    for path, method, op in operations:
        lines += ["", f"## {method} `{path}` {{#{_anchor(method, path)}}}", ""]
        lines += _operation(op, document)
    models = {name: schema for name, schema in document["components"]["schemas"].items()
              if name != "StudySpec" and name not in _spec_schema()["$defs"]}
    lines += ["", "## What the answers hold", "",
              "The objects the operations above answer with; a study's spec is on "
              "[its own page](spec.md).", ""]
    for name, schema in models.items():
        lines += _object_section(name, schema, level=3, link=_api_link)
    return "\n".join(lines) + "\n"


def _anchor(method: str, path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"{method} {path}".lower()).strip("-")


def _operation(op: dict[str, Any], document: dict[str, Any]) -> list[str]:
    lines = [_one_paragraph(op.get("description") or op.get("summary", "")), ""]
    parameters = op.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | type | default | description |", "|---|---|---|---|---|"]
        for p in parameters:
            schema = _resolved(p.get("schema", {}), document)
            lines.append(f"| `{p['name']}` | {p['in']} | {_cell(_api_type(schema))} | "
                         f"{_default(bool(p.get('required')), schema)} | "
                         f"{_cell(_one_paragraph(p.get('description', schema.get('description', ''))))} |")
        lines.append("")
    body = op.get("requestBody")
    if body:
        kinds = ", ".join(f"`{media}` ({_api_type(content.get('schema', {}))})"
                          for media, content in body.get("content", {}).items())
        lines += [f"Body: {kinds}.", ""]
    lines += ["| answer | what it means |", "|---|---|"]
    for status, answer in op.get("responses", {}).items():
        media = answer.get("content", {})
        shapes = [_api_type(m["schema"]) for m in media.values() if m.get("schema")]
        shape = f" ({', '.join(s for s in shapes if s)})" if any(shapes) else ""
        lines.append(f"| {status} | {_cell(_one_paragraph(answer.get('description', '')) + shape)} |")
    return lines


def _resolved(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return dict(document.get("components", {}).get("schemas", {}).get(name, {}))
    return schema


def _api_link(name: str) -> str:
    """The spec's objects link to their page; the API's own models are named."""
    if name == "StudySpec":
        return "[StudySpec](spec.md)"
    if name in _spec_schema()["$defs"]:
        return "" if name in TEXT_FORMS else f"[{name}](spec.md#{name.lower()})"
    return f"[{name}](#{_model_anchor(name)})"


def _model_anchor(name: str) -> str:
    """The anchor that the toc extension gives a heading `### name`."""
    return re.sub(r"[^\w-]+", "", name.lower().replace(" ", "-"))


def _api_type(schema: dict[str, Any]) -> str:
    """A parameter's or an answer's schema in a few words."""
    return _type(schema, _api_link) if schema else ""


# -- Markdown


def _one_paragraph(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    """Text for a table cell: a pipe escaped, except in code, where the table keeps it."""
    parts = re.split(r"(`[^`]*`)", text.replace("\n", " "))
    return "".join(p if p.startswith("`") else p.replace("|", "\\|") for p in parts)


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"
