"""The live server keeps the promises of its own ``/openapi.json``: schemathesis runs every check it has (status
codes, content types, response schemas and headers, positive and negative data, unsupported methods, Allow headers,
server errors, the stateful ones) in every phase, with a bounded number of examples per operation, and finds nothing.
And the schema itself documents the 404 every path parameter can lead to, with the error body, and no 422: path
parameters are parsed by the pages, so a bad one is a 404 that says what is missing, never a validation error.

Data is random; a failure report ends with the seed, and ``--seed N`` added to the command it shows reproduces it.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

MAX_EXAMPLES = 40  # per operation: well under a minute for the whole run on two cores
METHODS = {"get", "head", "post", "put", "patch", "delete", "options", "trace"}
REAL = 0.6  # how often a path or query parameter is drawn from the atlas's real names rather than made up
CONFIG = """
[checks.positive_data_acceptance]
# A schema-valid string for a path parameter almost never names a model, layer, unit or asset of this atlas, and the
# right answer to that is 404. Schemathesis's default list accepts 404 already, but also 401, 403, 409, 429 and 5xx,
# which a read-only site without accounts or writes must never send: say exactly what valid data may get back.
expected-statuses = ["2xx", "3xx", "404"]

# Real names, drawn some of the time, so that cases reach real pages and their 200 bodies meet the response schemas
# (made-up names alone only ever reach the 404s). Bindings for a parameter the schema lacks are ignored.
[parameters]
{bindings}

{dictionaries}
"""
DICTIONARIES = {"path.model": "models", "path.layer": "layers", "path.unit": "units", "path.name": "assets",
                "path.sha256": "assets", "query.page": "pages", "query.kind": "kinds"}


def real_names(base: str) -> dict[str, list[str]]:
    """Names that exist in the served atlas, for each dictionary of CONFIG."""
    with httpx.Client(base_url=base, timeout=30) as client:
        slug = client.get("/.json").json()["models"][0]["slug"]
        model = client.get(f"/models/{slug}.json").json()
        layer = client.get(next(l for l in model["layers"] if l["n_rendered"])["json_url"]).json()
        image = next(u["image"] for u in layer["units"] if u["image"])
    return {
        "models": [slug],
        "layers": [l["name"] for l in model["layers"]],
        "units": sorted({str(i) for l in model["layers"] for i in (0, 1, l["n_units"] - 1)}, key=int),
        "assets": [image["sha256"], image["url"].rpartition("/")[2]],
        "pages": sorted({"1", str(layer["page"]["pages"])}),
        "kinds": [k["kind"] for k in layer["kinds"]],
    }


def schemathesis_config(base: str) -> str:
    names = real_names(base)
    bindings = "\n".join(f'"{key}" = {{ dictionary = "{name}", probability = {REAL} }}'
                         for key, name in DICTIONARIES.items())
    dictionaries = "\n".join(f"[dictionaries.{name}]\nvalues = {json.dumps(values)}" for name, values in names.items())
    return CONFIG.format(bindings=bindings, dictionaries=dictionaries)


@pytest.fixture(scope="module")
def schema(live_server: str) -> dict[str, Any]:
    response = httpx.get(f"{live_server}/openapi.json", timeout=30)
    assert response.status_code == 200
    return response.json()


def operations(schema: dict[str, Any]):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow local ``$ref``s (``#/components/schemas/Name``) to the schema they name."""
    while "$ref" in node:
        target: Any = schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_schema_documents_404_with_the_error_body_and_no_422(schema: dict[str, Any]):
    with_422 = [f"{method.upper()} {path}" for path, method, op in operations(schema) if "422" in op["responses"]]
    assert not with_422, f"422 documented (path parameters are 404s, never validation errors): {with_422}"
    assert "HTTPValidationError" not in schema.get("components", {}).get("schemas", {})
    for path, method, operation in operations(schema):
        if "{" not in path:
            continue
        where = f"{method.upper()} {path}"
        not_found = operation["responses"].get("404")
        assert not_found, f"{where}: 404 not documented"
        body = not_found.get("content", {}).get("application/json")
        assert body, f"{where}: 404 documents no application/json body"
        error = resolve(schema, resolve(schema, body["schema"]).get("properties", {}).get("error", {}))
        assert {"status", "message"} <= set(error.get("properties", {})), f"{where}: 404 body is not the error shape"
        assert {"status", "message"} <= set(error.get("required", [])), f"{where}: error fields are optional"


def test_json_twins_have_response_models(schema: dict[str, Any]):
    """Response-schema checks only bite if a twin's 200 is a real model, not "any object"."""
    for path, method, operation in operations(schema):
        if path.endswith(".json"):
            ok = resolve(schema, operation["responses"]["200"]["content"]["application/json"]["schema"])
            shapes = [resolve(schema, shape) for shape in ok.get("oneOf", [ok])]  # one shape per model kind, or one
            assert all("properties" in shape for shape in shapes), f"{method.upper()} {path}: 200 has no response model"


def test_schemathesis_finds_nothing(live_server: str, tmp_path: Path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(schemathesis_config(live_server))
    command = [sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(config), "run",
               f"{live_server}/openapi.json", "--checks", "all", "--max-examples", str(MAX_EXAMPLES),
               "--request-timeout", "30"]
    # In tmp_path: hypothesis keeps its example database in the working directory.
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    report = done.stdout[max(done.stdout.find("=== FAILURES ==="), 0):]
    if len(report) > 12_000:  # the first failures in full, then the summary with the seed
        report = f"{report[:8_000]}\n[...]\n{report[-4_000:]}"
    assert done.returncode == 0, f"{' '.join(command)}\n{report}\n{done.stderr[-2_000:]}"
