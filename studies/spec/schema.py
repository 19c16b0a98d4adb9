"""The study spec as a JSON Schema (Draft 2020-12): for editors (`stagetune schema`) and
for the OpenAPI document of `POST /api/studies`.

Generated from `StudySpec`, then widened where the server reads a spec more loosely than
the models' types say, so that the schema never rejects a spec the server accepts:

- a condition's value may be one value or a list (`when: {optimizer: sgd}`);
- a number may be written as a string that spells one: the server's YAML 1.1 parser
  reads `1e-5` (no dot) as a string, and pydantic takes it as the number;
- a boolean may be `yes`, `no`, `on`, `off`, ...: YAML 1.1 reads those as booleans, the
  YAML 1.2 of editors as strings.

The rules the models check in validators go in too where JSON Schema can say them (RULES:
a dataset and a model or a trainer, a budget's epochs or seconds, ...). What the schema
cannot know it leaves to the server: the registered names (plugins add datasets, models
and trainers), the knobs they take, comparisons of two fields (low below high), and the
bounds of a number written as text.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from stagetune.studies.spec.model import RESOURCE_UNIT, StudySpec

DIALECT = "https://json-schema.org/draft/2020-12/schema"
TITLE = "stagetune study spec"
DESCRIPTION = ("A stagetune study: the task, the search space, fixed knobs, the stages' sizes, "
               "the budget and the resources. YAML or JSON; `stagetune validate` checks the "
               "names and rules this schema cannot.")
_BOOLEAN_WORDS = list(dict.fromkeys(word for stem in ("y", "yes", "n", "no", "true", "false", "on", "off")
                                    for word in (stem, stem.capitalize(), stem.upper())))
# Text the server reads as a number or a boolean; definitions of their own in the schema
TEXT_DEFS: dict[str, dict[str, Any]] = {
    # a number as text, the way YAML 1.1 leaves `1e-5` and pydantic still reads it
    "NumberText": {"type": "string", "pattern": r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$",
                   "description": "a number written as text, e.g. 1e-5 read by YAML 1.1"},
    # YAML 1.1's booleans, which YAML 1.2 (editors) reads as strings; pydantic takes them
    "BooleanText": {"type": "string", "enum": _BOOLEAN_WORDS,
                    "description": "a YAML 1.1 boolean (yes, no, on, off, ...)"},
}
LOCAL_REFS = "#/$defs/{model}"


def _given(*fields: str) -> dict[str, Any]:
    """The fields are present and not null."""
    return {"required": list(fields), "properties": {f: {"not": {"type": "null"}} for f in fields}}


_TRUE = [True, *(w for w in _BOOLEAN_WORDS if w.lower() in ("y", "yes", "true", "on"))]
# spec._check_bounds: a log scale needs low > 0
_LOG_LOW = {"if": {"required": ["log"], "properties": {"log": {"enum": _TRUE}}},
            "then": {"properties": {"low": {"exclusiveMinimum": 0}}}}
# Rules of the models' validators, by definition, merged into pydantic's schema before it is
# widened (so a number given here may be text too); each names the validator it mirrors.
RULES: dict[str, dict[str, Any]] = {
    "TaskSpec": {"anyOf": [_given("trainer"), _given("dataset", "model")]},  # _something_to_train
    "Budget": {"anyOf": [_given("epochs"), _given("seconds")]},  # Budget._something
    "FloatParam": _LOG_LOW,
    "IntParam": _LOG_LOW,
    "CategoricalParam": {"properties": {"choices": {"uniqueItems": True}}},  # _distinct
    "Resources": {"properties": {"custom": {  # Resources._check_custom
        "propertyNames": {"pattern": r"\S", "not": {"enum": ["CPU", "GPU"]}},
        "additionalProperties": {"minimum": RESOURCE_UNIT}}}},
}


@functools.cache
def _generated(ref_template: str) -> dict[str, Any]:
    schema = StudySpec.model_json_schema(ref_template=ref_template)
    for name, rule in RULES.items():
        _merge(schema["$defs"][name], copy.deepcopy(rule))
    schema = _widened(schema, ref_template)
    schema.setdefault("$defs", {}).update(TEXT_DEFS)
    return schema  # type: ignore[no-any-return]


def spec_schema() -> dict[str, Any]:
    """The spec's schema as one self-contained document (its definitions under `$defs`)."""
    schema = copy.deepcopy(_generated(LOCAL_REFS))
    return {"$schema": DIALECT, "title": TITLE, "description": DESCRIPTION,
            **{k: v for k, v in schema.items() if k != "title"}}


def spec_components(ref_template: str = "#/components/schemas/{model}") -> dict[str, Any]:
    """The spec's schema and its definitions by name, as OpenAPI's components hold them;
    `StudySpec` is the spec itself."""
    schema = copy.deepcopy(_generated(ref_template))
    definitions = schema.pop("$defs", {})
    return {**definitions, "StudySpec": {**schema, "description": DESCRIPTION}}


def _merge(into: dict[str, Any], rule: dict[str, Any]) -> None:
    """`rule`'s keywords added to `into`, mappings merged key by key."""
    for key, value in rule.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _widened(node: Any, refs: str, any_text: bool = False) -> Any:
    """`node` with every number, boolean and condition widened as the module says;
    `any_text`: a sibling branch of a union already takes every string."""
    if isinstance(node, list):
        return [_widened(item, refs, any_text) for item in node]
    if not isinstance(node, dict):
        return node
    branches = node.get("anyOf", [])
    text_branch = {"type": "string"} in branches
    out = {key: _widened(value, refs, text_branch and key == "anyOf")
           for key, value in node.items()}
    if "when" in out.get("properties", {}):
        out["properties"]["when"] = _condition(out["properties"]["when"])
    kind = out.get("type")  # in `properties`, "type" is a field's name: its value a schema
    text = {"number": "NumberText", "boolean": "BooleanText"}.get(kind) \
        if isinstance(kind, str) else None
    if text and not any_text:
        annotations = {k: out.pop(k) for k in ("title", "description", "default") if k in out}
        return {"anyOf": [out, {"$ref": refs.format(model=text)}], **annotations}
    return out


def _condition(when: dict[str, Any]) -> dict[str, Any]:
    """`when` maps a parameter to its values: a list, or one value standing for a list;
    at least one parameter and one value (spec._Conditional._not_empty)."""
    for branch in when.get("anyOf", [when]):
        values = branch.get("additionalProperties")
        if branch.get("type") == "object" and isinstance(values, dict) \
                and values.get("type") == "array":
            branch["additionalProperties"] = {"anyOf": [values["items"], {**values, "minItems": 1}]}
            branch["minProperties"] = 1
    return when


__all__ = ["DIALECT", "spec_components", "spec_schema"]
