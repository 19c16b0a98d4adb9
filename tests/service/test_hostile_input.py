"""Hostile and broken specs against a real `stagetune serve`: each gets a 4xx whose entries
name the field and what is allowed (FastAPI's 422 shape), never a 500 or a 201; messages
name no server path or database URL; OpenAPI documents 401 and 422 (issue 13, items 8, 9,
11, 23, 24)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.service.server import Server
from tests.studies.ray_support import NO_PROBES, digits_spec

JSON, YAML = "application/json", "application/yaml"


def spec(**extra: Any) -> dict[str, Any]:
    task = {"dataset": "digits", "model": "convnet", **extra.pop("task", {})}
    return {**digits_spec("hostile", stages=NO_PROBES, resources={}), "task": task, **extra}


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


# 425 bytes of YAML whose aliases expand to millions of list items
ALIAS_BOMB = b"""name: bomb
task: {dataset: digits, model: convnet}
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""

# (id, body, content type, the loc after "body", words the message must hold)
HOSTILE: list[tuple[str, bytes, str, list[str], str]] = [
    ("json-100000-deep", b"[" * 100_000 + b"]" * 100_000, JSON, [], "nested deeper than 32"),
    ("yaml-50000-deep", b"[" * 50_000 + b"]" * 50_000, YAML, [], "nested deeper than 32"),
    ("900-nested-lists-in-dataset_options",
     json.dumps(spec(task={"dataset_options": {"classes": nested(900)}})).encode(), JSON,
     ["task", "dataset_options", "classes", *["0"] * 29], "nested deeper than 32"),
    ("5000-digit-seed", b'{"name": "x", "seed": ' + b"9" * 5000 + b"}", JSON, [],
     "numbers have at most 100"),
    ("5000-digit-seed-yaml", b"name: x\nseed: " + b"9" * 5000, YAML, [],
     "numbers have at most 100"),
    ("seed-2**64", json.dumps(spec(seed=2**64)).encode(), JSON, ["seed"],
     "less than or equal to 4294967295"),
    ("unknown-dataset-option", json.dumps(spec(task={"dataset_options": {"bogus": 1}})).encode(),
     JSON, ["task", "dataset_options"], "has no option 'bogus'; allowed: classes"),
    ("dataset-option-of-the-wrong-type",
     json.dumps(spec(task={"dataset_options": {"val_fraction": "half"}})).encode(), JSON,
     ["task", "dataset_options"], "val_fraction: Input should be a valid number"),
    ("dropout-up-to-5",
     json.dumps(spec(space={"dropout": {"type": "float", "low": 0, "high": 5}})).encode(), JSON,
     ["space", "dropout", "high"], "dropout: Input should be less than 1 (got 5.0)"),
    ("a-choice-the-knob-rejects",
     json.dumps(spec(space={"norm": {"type": "categorical", "choices": ["batch", "bogus"]}})
                ).encode(), JSON,
     ["space", "norm", "choices", "1"], "norm: Input should be 'batch', 'layer'"),
    ("fractions-for-a-whole-number-knob",
     json.dumps(spec(space={"width": {"type": "float", "low": 8, "high": 32}})).encode(), JSON,
     ["space", "width"], "width takes no fractions; use type: int"),
    ("arch-os.system", json.dumps(spec(task={"model": "torchvision"},
                                       fixed={"arch": "os.system"})).encode(), JSON,
     ["fixed", "arch"], "unknown torchvision arch 'os.system'; available: alexnet"),
    ("NaN-in-a-space", b'{"name": "x", "space": {"lr": {"type": "float", "low": NaN, '
                       b'"high": 1}}}', JSON, [], "NaN is not allowed; give a finite number"),
    ("Infinity-in-fixed", b'{"name": "x", "fixed": {"warmup_epochs": Infinity}}', JSON, [],
     "Infinity is not allowed; give a finite number"),
    (".nan-in-fixed-yaml", b"name: x\ntask: {dataset: digits, model: convnet}\nfixed: {lr: .nan}",
     YAML, ["fixed", "lr"], "nan is not allowed; give a finite number"),
    (".inf-in-a-space-yaml", b"name: x\ntask: {dataset: digits, model: convnet}\n"
                             b"space: {lr: {type: float, low: 0.1, high: .inf}}",
     YAML, ["space", "lr", "high"], "inf is not allowed; give a finite number"),
    ("yaml-alias-bomb", ALIAS_BOMB, YAML, [], "expands to about"),
    ("recursive-yaml-alias", b"name: x\ntask: &t {dataset: digits, model: *t}", YAML, [],
     "a spec cannot be recursive"),
    ("a-sentence-of-the-whole-spec",
     json.dumps(spec(fixed={"lr": 0.1})).encode(), JSON, ["fixed"],
     "'lr' is both in space and fixed"),
]


@pytest.mark.parametrize("body, content_type, loc, words",
                         [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_a_hostile_spec_gets_a_422_naming_the_problem(open_server: Server, body: bytes,
                                                      content_type: str, loc: list[str],
                                                      words: str) -> None:
    response = httpx.post(f"{open_server.url}/api/studies", content=body,
                          headers={"Content-Type": content_type}, timeout=60)
    assert response.status_code == 422, response.text[:2000]
    problems = fastapi_shaped(response)
    assert any(p["loc"] == ["body", *loc] and words in p["msg"] for p in problems), problems
    assert str(open_server.data_dir) not in response.text


def fastapi_shaped(response: httpx.Response) -> list[dict[str, Any]]:
    """FastAPI's 422: {"detail": [{"loc": [...], "msg": "...", "type": "..."}]}, with the
    field's path in loc and a non-empty sentence in msg."""
    problems = response.json()["detail"]
    assert isinstance(problems, list) and problems
    for problem in problems:
        assert set(problem) == {"loc", "msg", "type"}
        assert problem["loc"][0] == "body" and problem["msg"]
        assert all(" " not in str(part) for part in problem["loc"]), problem  # no sentence
    return problems


def test_the_huge_bodies_are_refused_quickly(open_server: Server) -> None:
    """A megabyte of nesting and an alias bomb cost the server little."""
    deep = httpx.post(f"{open_server.url}/api/studies", content=b"[" * 999_000,
                      headers={"Content-Type": YAML}, timeout=60)
    assert deep.status_code == 422 and "nested deeper than 32" in deep.text
    assert deep.elapsed.total_seconds() < 10
    bomb = httpx.post(f"{open_server.url}/api/studies", content=ALIAS_BOMB,
                      headers={"Content-Type": YAML}, timeout=60)
    assert bomb.status_code == 422 and bomb.elapsed.total_seconds() < 10
    assert f"at most {1_000_000} are allowed" in bomb.text


def test_a_weights_path_outside_the_data_folder_reads_like_a_missing_one(
        open_server: Server, tmp_path: Path) -> None:
    """Whether a file exists outside the data folder is not for a client to learn."""
    outside = tmp_path / "state.pt"
    outside.write_bytes(b"not a state_dict, but it exists")
    link = open_server.data_dir / "link.pt"
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    messages = {}
    for where in [str(outside), "/etc/passwd", "/nonexistent/weights.pt", "absent.pt",
                  "../" * 12 + "etc/passwd", "link.pt"]:
        response = httpx.post(f"{open_server.url}/api/studies",
                              json=spec(fixed={"weights": where, "transfer": "full"}))
        assert response.status_code == 422, response.text
        (problem,) = fastapi_shaped(response)
        assert problem["loc"] == ["body", "fixed", "weights"]
        messages[where] = problem["msg"].replace(repr(where), "PATH")
        assert str(open_server.data_dir) not in response.text
    assert len(set(messages.values())) == 1, messages
    assert "in the data folder" in messages["absent.pt"]


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory, ray_local: str) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("tokens")
    server = Server(f"sqlite:///{tmp / 'store.db'}", tmp / "data", tokens="alpha",
                    ray_address=ray_local).start()
    yield server
    server.stop()


@pytest.mark.slow
def test_openapi_documents_401_and_422_on_the_operations(token_server: Server,
                                                         open_server: Server) -> None:
    schema = httpx.get(f"{token_server.url}/openapi.json").json()
    api = operations(schema)
    for (method, path), operation in api.items():
        assert operation["security"] and "401" in operation["responses"], (method, path)
        if operation.get("parameters") or operation.get("requestBody"):
            assert "422" in operation["responses"], (method, path)
        for status, response in operation["responses"].items():
            if status >= "400" and "content" in response:  # errors are JSON, HTML pages' too
                assert list(response["content"]) == ["application/json"], (method, path, status)
    submit = api[("post", "/api/studies")]["responses"]["422"]
    ref = submit["content"]["application/json"]["schema"]["$ref"]
    problem = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert problem["properties"]["detail"]["type"] == "array"
    denied = httpx.get(f"{token_server.url}/api/studies")
    assert denied.status_code == 401 and set(denied.json()) == {"detail"}
    # a service without tokens asks for none, so it documents no 401
    open_api = operations(httpx.get(f"{open_server.url}/openapi.json").json())
    assert all("security" not in op and "401" not in op["responses"] for op in open_api.values())


def operations(schema: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    found = {(method, path): op for path, ops in schema["paths"].items()
             if path.startswith("/api") for method, op in ops.items()}
    assert found
    return found


def test_a_405_names_every_method_of_the_path(open_server: Server) -> None:
    response = httpx.request("OPTIONS", f"{open_server.url}/api/studies/any")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET"


@pytest.mark.slow
def test_on_postgresql_messages_name_no_database_url(postgres_url: str, tmp_path: Path,
                                                     ray_local: str) -> None:
    """NaN once reached PostgreSQL's JSON column and came back as a 503 with the URL."""
    server = Server(postgres_url, tmp_path / "data", ray_address=ray_local).start()
    url = make_url(postgres_url)
    secrets = [postgres_url, url.render_as_string(hide_password=True), "postgresql",
               str(url.host), str(url.database), str(tmp_path)]
    try:
        for body, kind in [(b'{"name": "nan", "task": {"dataset": "digits", "model": '
                            b'"convnet"}, "fixed": {"lr": NaN}}', JSON),
                           (b"name: nan\ntask: {dataset: digits, model: convnet}\n"
                            b"fixed: {lr: .nan, weight_decay: -.inf}", YAML)]:
            response = httpx.post(f"{server.url}/api/studies", content=body,
                                  headers={"Content-Type": kind})
            assert response.status_code == 422, response.text
            assert not [s for s in secrets if s in response.text], response.text
        listed = httpx.get(f"{server.url}/api/studies")
        assert listed.status_code == 200 and listed.json()["total"] == 0
    finally:
        server.stop()
