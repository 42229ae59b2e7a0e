"""The web server over a real atlas, through a real uvicorn process: pages and their JSON twins, assets and their
caching, precise 404s, pagination, and that serving stays read-only and free of torch."""

import hashlib
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from server.app import create_app

JSON = "application/json"
NO_TORCH = Path(__file__).with_name("no_torch.py")


@pytest.fixture(scope="module")
def client(live_server: str):
    with httpx.Client(base_url=live_server, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def model(client: httpx.Client) -> dict:
    """The model JSON of the atlas's first model."""
    first = client.get("/.json").json()["models"][0]
    return client.get(first["json_url"]).json()


@pytest.fixture(scope="module")
def layer(client: httpx.Client, model: dict) -> dict:
    """The layer JSON of the first layer with rendered units."""
    rendered = next(layer for layer in model["layers"] if layer["n_rendered"])
    return client.get(rendered["json_url"]).json()


@pytest.fixture(scope="module")
def unit(client: httpx.Client, layer: dict) -> dict:
    """The unit JSON of the first unit with a rendered image."""
    first = next(u for u in layer["units"] if u["image"])
    return client.get(first["json_url"]).json()


def assert_twin(client: httpx.Client, url: str) -> dict:
    """The HTML page answers, links its JSON twin three ways, and the twin answers with the same identity."""
    page = client.get(url)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    twin = page.headers["link"]
    json_url = re.fullmatch(r'<([^>]+)>; rel="alternate"; type="application/json"', twin).group(1)
    assert f'<link rel="alternate" type="application/json" href="{json_url}">' in page.text
    assert f'href="{json_url}"' in page.text.split("</head>", 1)[1]  # the visible JSON link too
    data = client.get(json_url)
    assert data.status_code == 200 and data.headers["content-type"] == JSON
    body = data.json()
    assert body["url"] == url and body["json_url"] == json_url
    return body


def test_health(client: httpx.Client):
    health = client.get("/-/health").json()
    assert health["status"] == "ok" and health["models"] >= 1 and health["format_version"] >= 1


def test_openapi_docs(client: httpx.Client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/models/{model}/{layer}/{unit}.json" in paths and "/assets/{name}" in paths


def test_index(client: httpx.Client):
    index = assert_twin(client, "/")
    assert index["json_url"] == "/.json"
    first = index["models"][0]
    assert first["n_units"] > 0 and first["n_rendered"] > 0
    assert first["title"] in client.get("/").text


def test_model_card(client: httpx.Client, model: dict):
    body = assert_twin(client, model["url"])
    assert body == model
    html = client.get(model["url"]).text
    accuracy = model["model"]["card"]["metrics"]["heldout_accuracy"]
    assert f"{accuracy:.1%}" in html
    positions = [html.index(f'href="{layer["url"]}"') for layer in model["layers"]]
    assert positions == sorted(positions)  # the table lists layers in forward order
    assert all(0 <= layer["n_rendered"] <= layer["n_units"] for layer in model["layers"])


def test_layer_grid(client: httpx.Client, layer: dict):
    body = assert_twin(client, layer["url"])
    page = body["page"]
    assert (page["page"], page["total"]) == (1, body["layer"]["n_units"])
    assert [u["index"] for u in body["units"]] == list(range(min(page["total"], page["per_page"])))
    html = client.get(layer["url"]).text
    rendered = [u for u in body["units"] if u["image"]]
    assert 0 < len(rendered) <= body["layer"]["n_rendered"]
    assert html.count('class="cell"') == len(rendered)
    assert html.count('class="cell empty"') == len(body["units"]) - len(rendered)
    for u in rendered:
        assert u["image"]["url"] in html and u["url"] in html


def test_unit_page(client: httpx.Client, unit: dict):
    body = assert_twin(client, unit["url"])
    assert body["rendered"] and body["images"]
    assert body["stats"]["dataset_max"] is not None
    assert body["up"]["url"] == body["layer"]["url"]
    assert body["next"]["index"] == body["index"] + 1
    html = client.get(unit["url"]).text
    for image in body["images"]:
        assert image["url"] in html
        assert {"objective", "steps", "seed"} <= set(image["params"])
    assert "image-rendering: pixelated" in client.get("/static/atlas.css").text
    if not body["examples"]:
        assert "Not computed yet." in html
    assert "circuits" not in body and 'id="circuits"' not in html  # a vision unit has no circuits section


def test_a_vision_unit_shows_its_dataset_examples_and_weights(client: httpx.Client, model: dict):
    """On the real precompute (the tests' 68-image dataset folder): a conv2 unit's twin and page carry its top and
    middle examples as boxes into whole images, and its strongest conv1 inputs as kernels beside their images."""
    body = assert_twin(client, f"{model['model']['url']}/conv2/3")
    top = [e for e in body["examples"] if e["kind"] == "top"]
    middle = [e for e in body["examples"] if e["kind"] == "middle"]
    assert [e["rank"] for e in top] == list(range(32)) and 0 < len(middle) <= 6
    assert [e["activation"] for e in top] == sorted((e["activation"] for e in top), reverse=True)
    q25, _, q75 = body["stats"]["quartiles"]
    assert all(q25 - 1e-4 <= e["activation"] <= q75 + 1e-4 for e in middle)
    for example in top[:4]:
        left, top_, right, bottom = example["box"]
        assert 0 <= left < right <= 64 and 0 <= top_ < bottom <= 64 and example["image"]["width"] == 64
        assert client.get(example["image"]["url"]).content.startswith(b"\x89PNG")
    inputs = body["edges"]["in"]["shown"]
    assert inputs and all(e["kind"] == "expanded_weight" and e["image"] for e in inputs)
    assert [abs(e["weight"]) for e in inputs] == sorted((abs(e["weight"]) for e in inputs), reverse=True)
    assert any(e["thumbnail"] for e in inputs)  # conv1 units 0-7 have feature visualisations
    html = client.get(body["url"]).text
    assert "Dataset examples" in html and "Weights" in html
    assert top[0]["image"]["url"] in html and inputs[0]["image"]["url"] in html and inputs[0]["unit"]["url"] in html


def test_unit_image_is_the_hashed_blob(client: httpx.Client, unit: dict):
    image = unit["images"][0]
    response = client.get(image["url"])
    assert response.status_code == 200
    assert response.headers["content-type"] == image["media_type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert hashlib.sha256(response.content).hexdigest() == image["sha256"]
    assert image["url"] == f"/assets/{image['sha256']}.png"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["etag"] == f'"{image["sha256"]}"'
    again = client.get(image["url"], headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and not again.content
    assert client.get(f"/assets/{image['sha256']}").content == response.content  # the extension is optional


def test_unit_without_images_still_answers(client: httpx.Client, layer: dict):
    bare = next(u for u in layer["units"] if not u["image"])
    body = client.get(bare["json_url"]).json()
    assert body["rendered"] is False and body["images"] == []
    html = client.get(bare["url"])
    assert html.status_code == 200 and "Not rendered yet" in html.text


def bad_paths(model: dict, layer: dict) -> list[tuple[str, str]]:
    slug, name, n = model["model"]["slug"], layer["layer"]["name"], layer["layer"]["n_units"]
    base = f"/models/{slug}/{name}"
    out_of_range = f"layer {name} has {n} units (0–{n - 1})"
    return [
        ("/models/no-such-model", "model 'no-such-model' not found"),
        (f"/models/{slug}/no-such-layer", f"layer 'no-such-layer' not found in model '{slug}'"),
        (f"{base}/abc", "unit 'abc' not found"),
        (f"{base}/1.5", "unit '1.5' not found"),
        (f"{base}/0005", "unit '0005' not found"),  # one URL per unit: no leading zeros
        (f"{base}/-0", "unit '-0' not found"),
        (f"{base}/{n}", f"unit {n} out of range: {out_of_range}"),
        (f"{base}/999999", f"unit 999999 out of range: {out_of_range}"),
        (f"{base}/-1", f"unit -1 out of range: {out_of_range}"),
        ("/no/such/page", "no page at /no/such/page"),
    ]


def test_not_found_json(client: httpx.Client, model: dict, layer: dict):
    for path, message in bad_paths(model, layer):
        response = client.get(path + ".json")
        assert response.status_code == 404, path
        assert response.json()["error"]["status"] == 404
        assert message.replace("/no/such/page", "/no/such/page.json") in response.json()["error"]["message"]


def test_not_found_html(client: httpx.Client, model: dict, layer: dict):
    for path, message in bad_paths(model, layer):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/html")
        assert "404" in response.text and message.replace("'", "&#39;") in response.text


def test_not_found_negotiates_json(client: httpx.Client, model: dict):
    response = client.get(model["url"] + "-missing", headers={"Accept": JSON})
    assert response.status_code == 404 and "not found" in response.json()["error"]["message"]


def test_assets_not_found(client: httpx.Client):
    for name in ("0" * 64, "0" * 64 + ".png", "not-a-hash.png", "ABC"):
        response = client.get(f"/assets/{name}", headers={"Accept": JSON})
        assert response.status_code == 404, name
        assert response.json()["error"]["message"] == f"asset {name!r} not found"
    assert client.get("/assets/..%2Fatlas.db").status_code == 404


def test_page_values(client: httpx.Client, layer: dict):
    url, pages = layer["layer"]["json_url"], layer["page"]["pages"]
    assert client.get(url, params={"page": "1"}).json()["units"] == layer["units"]
    for bad in ("0", str(pages + 1), "-1", "abc", "1.5", ""):
        response = client.get(url, params={"page": bad})
        assert response.status_code == 404, bad
        assert response.json()["error"]["message"] == f"page '{bad}' not found: pages run from 1 to {pages}"
    assert client.get(layer["layer"]["url"], params={"page": "abc"}).status_code == 404


def test_layer_grid_by_image_kind(client: httpx.Client, layer: dict):
    """The grid shows channel images by default and any other kind the layer has on request, keeping ?kind= in links."""
    assert layer["kind"] == "channel" and [k["kind"] for k in layer["kinds"]] == ["channel", "neuron"]
    neuron = client.get(layer["kinds"][1]["json_url"]).json()
    assert neuron["kind"] == "neuron" and neuron["json_url"] == layer["layer"]["json_url"] + "?kind=neuron"
    shown = {u["index"]: u["image"]["sha256"] for u in neuron["units"] if u["image"]}
    assert shown and shown.keys() == {u["index"] for u in layer["units"] if u["image"]}
    for index, sha in shown.items():
        unit = client.get(neuron["units"][index]["json_url"]).json()
        assert sha == next(i["sha256"] for i in unit["images"] if i["kind"] == "neuron")
    html = client.get(layer["kinds"][1]["url"])
    assert html.status_code == 200 and 'aria-current="true">neuron<' in html.text
    missing = client.get(layer["layer"]["json_url"], params={"kind": "deepdream"})
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == (
        f"image kind 'deepdream' not found in layer '{layer['layer']['name']}'; it has: channel, neuron")


def test_pagination(atlas_dir: Path, monkeypatch: pytest.MonkeyPatch, layer: dict):
    """With a small page size, a layer spreads over pages that link to each other, and units link up to theirs."""
    monkeypatch.setenv("ATLASCOPE_PER_PAGE", "10")
    client = TestClient(create_app(atlas_dir))  # in-process: the live server pages by the default 256
    n = layer["layer"]["n_units"]
    pages = -(-n // 10)
    last = client.get(layer["layer"]["json_url"], params={"page": pages}).json()
    assert (last["page"]["page"], last["page"]["pages"], last["page"]["per_page"]) == (pages, pages, 10)
    assert [u["index"] for u in last["units"]] == list(range((pages - 1) * 10, n))
    assert last["page"]["next"] is None and last["page"]["prev"]["page"] == pages - 1
    assert last["json_url"] == f"{layer['layer']['json_url']}?page={pages}"
    html = client.get(last["url"])
    assert html.headers["link"].startswith(f"<{last['json_url']}>")
    assert f'<link rel="prev" href="{last["page"]["prev"]["url"]}">' in html.text
    assert client.get(layer["layer"]["json_url"], params={"page": pages + 1}).status_code == 404
    assert client.get(last["units"][0]["json_url"]).json()["up"]["url"] == last["url"]


def test_serves_without_torch(atlas_dir: Path, unit: dict, tmp_path: Path):
    """A base install has no torch or numpy: the server must import and serve without them."""
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path

        from fastapi.testclient import TestClient
        from server.app import create_app

        response = TestClient(create_app(Path(sys.argv[1]))).get(sys.argv[2])
        assert response.status_code == 200, response.text
        loaded = {name.partition(".")[0] for name in sys.modules}
        assert not loaded & (BLOCKED | {"render", "precompute"}), loaded & (BLOCKED | {"render", "precompute"})
        print("served", len(response.text))
        """
    )
    done = subprocess.run(
        [sys.executable, str(NO_TORCH), "-c", script, str(atlas_dir), unit["url"]],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("served")


def test_never_writes(client: httpx.Client, atlas_dir: Path, model: dict, layer: dict, unit: dict):
    def snapshot() -> dict[str, tuple[int, int]]:
        return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(atlas_dir.rglob("*"))}

    before = snapshot()
    for url in ("/", model["url"], layer["url"], unit["url"], unit["images"][0]["url"], "/models/x", "/-/health"):
        client.get(url)
        client.get(url.partition("?")[0] + ".json")
    assert snapshot() == before


def test_head_answers_like_get(client: httpx.Client, unit: dict):
    for url in (unit["url"], unit["json_url"], unit["images"][0]["url"]):
        head, get = client.head(url), client.get(url)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
    assert client.head(unit["images"][0]["url"]).headers["cache-control"].endswith("immutable")
