"""The spec's JSON Schema: `stagetune schema` for editors, and the OpenAPI request body of
`POST /api/studies`. Specs are checked with `jsonschema`'s Draft 2020-12 validator, the
kind of validator an editor runs; the server (`load_spec`) is the other side of each check."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from stagetune.service.app import create_app
from stagetune.service.cli._app import app
from stagetune.service.settings import Settings
from stagetune.studies.errors import SpecError
from stagetune.studies.spec import load_spec
from stagetune.workers.data import get_data_settings

EXAMPLES = Path(__file__).parents[2] / "examples"
SPECS = sorted(EXAMPLES.glob("*.yaml")) + sorted((EXAMPLES / "plugin" / "specs").glob("*.yaml"))
# Written against the schema, in an editor: the YAML language server reads the first line
WRITTEN = """# yaml-language-server: $schema=./spec.schema.json
name: edited-in-an-editor
task: {dataset: digits, model: convnet, objective: val_accuracy}
space:
  lr: {type: float, low: 1e-5, high: 1.0e-1, log: yes}   # YAML 1.1: "1e-5" is a string
  optimizer: {type: categorical, choices: [sgd, adamw]}
  momentum: {type: float, low: 0.8, high: 0.99, when: {optimizer: sgd}}
  width: [{type: int, low: 8, high: 32, when: {optimizer: [sgd]}},
          {type: int, low: 16, high: 64, when: {optimizer: adamw}}]
fixed: {schedule: cosine}
stages:
  overfit: {enabled: off}
  coarse: {trials: 8, epochs: 2, sampler: qmc}
  refine: {trials: 4, epochs: 4, sampler: tpe, pruner: median}
budget: {epochs: 200}
resources: {max_concurrent: 2}
seed: 3
"""


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("schema") / "spec.schema.json"
    written = CliRunner().invoke(app, ["schema", "-o", str(out)])
    assert written.exit_code == 0, written.output
    printed = CliRunner().invoke(app, ["schema"])
    assert json.loads(printed.stdout) == json.loads(out.read_text())
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def test_the_schema_is_valid_draft_2020_12_and_self_contained(schema: dict[str, Any]) -> None:
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    refs = {ref for ref in _refs(schema)}
    assert refs and all(r.startswith("#/$defs/") for r in refs)
    assert {r.removeprefix("#/$defs/") for r in refs} <= set(schema["$defs"])
    assert {"name", "task", "space", "fixed", "stages", "budget", "resources", "seed"} \
        <= set(schema["properties"]) and schema["required"] == ["name", "task"]


def test_a_spec_written_against_the_schema_validates_there_and_on_the_server(
        schema: dict[str, Any]) -> None:
    spec = yaml.safe_load(WRITTEN)
    assert spec["space"]["lr"]["low"] == "1e-5"  # what the server's YAML parser reads
    assert list(Draft202012Validator(schema).iter_errors(spec)) == []
    load_spec(spec)  # the server takes it too


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_example_the_server_takes_validates(schema: dict[str, Any], path: Path,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    spec = yaml.safe_load(path.read_text())
    assert list(Draft202012Validator(schema).iter_errors(spec)) == [], path
    if "plugin" not in path.parts:  # the plugin's names are registered by the plugin only
        monkeypatch.setenv("STAGETUNE_DATA_DIR", str(tmp_path))
        (tmp_path / "digits-0-4-convnet.pt").write_bytes(b"transfer.yaml's starting weights")
        get_data_settings.cache_clear()
        try:
            load_spec(spec)
        finally:
            get_data_settings.cache_clear()


@pytest.mark.parametrize("change, where", [
    ({"stages": {"coarse": {"trials": 0}}}, "trials"),
    ({"stages": {"coarse": {"sampler": "grid"}}}, "sampler"),
    ({"stages": {"refine": {"epocs": 3}}}, "epocs"),
    ({"space": {"lr": {"type": "float", "low": "small", "high": 1}}}, "low"),
    ({"space": {"lr": {"type": "floaty", "low": 0.1, "high": 1}}}, "lr"),
    ({"name": "has spaces"}, "name"),
    ({"seed": -1}, "seed"),
    ({"colour": "blue"}, "colour"),
    ({"resources": {"max_concurrent": "many"}}, "max_concurrent"),
    # the validators' rules, which the schema states too (spec_schema.RULES)
    ({"task": {"model": None}}, "task"),  # a dataset and a model, or a trainer
    ({"budget": {"epochs": None}}, "budget"),  # epochs, seconds or both
    ({"space": {"lr": {"low": 0}}}, "lr"),  # log: yes needs low > 0
    ({"space": {"optimizer": {"choices": ["sgd", "sgd"]}}}, "optimizer"),
    ({"space": {"momentum": {"when": {"optimizer": []}}}}, "momentum"),
    ({"space": {"dropout": {"type": "float", "low": 0, "high": 0.5, "when": {}}}}, "dropout"),
    ({"resources": {"custom": {"GPU": 1}}}, "custom"),
    ({"resources": {"custom": {" ": 1}}}, "custom"),
    ({"resources": {"custom": {"a100": 0}}}, "custom"),
])
def test_an_invalid_spec_fails_it_and_the_server_refuses_it_too(
        schema: dict[str, Any], change: dict[str, Any], where: str) -> None:
    spec = _merged(yaml.safe_load(WRITTEN), change)
    errors = list(Draft202012Validator(schema).iter_errors(spec))
    assert errors and any(where in f"{e.json_path} {e.message}" for e in errors), errors
    with pytest.raises(SpecError, match=where):
        load_spec(spec)


def test_openapi_documents_the_spec_as_the_post_body(tmp_path: Path,
                                                     schema: dict[str, Any]) -> None:
    served = create_app(Settings(database_url=f"sqlite:///{tmp_path / 's.db'}"))
    document = TestClient(served, base_url="http://localhost").get("/openapi.json").json()
    body = document["paths"]["/api/studies"]["post"]["requestBody"]
    assert body["required"] and set(body["content"]) == {"application/json", "application/yaml"}
    components = document["components"]["schemas"]
    for media in body["content"].values():
        ref = media["schema"]["$ref"]
        documented = components[ref.rsplit("/", 1)[1]]
        assert {"name", "task", "space", "stages", "budget", "resources"} <= set(documented["properties"])
        assert documented["properties"].keys() == schema["properties"].keys()
    # the components validate like the editors' file: a spec through OpenAPI's references
    within = Draft202012Validator({"$ref": "#/components/schemas/StudySpec",
                                   "components": document["components"]})
    assert list(within.iter_errors(yaml.safe_load(WRITTEN))) == []
    assert list(within.iter_errors({"name": "x", "task": {}, "stages": {"coarse": {"trials": 0}}}))


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return ([node["$ref"]] if "$ref" in node else []) + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out
