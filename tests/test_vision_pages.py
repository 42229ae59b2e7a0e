"""Vision pages over HTTP, from the real server serving the hand-built vision atlas (``tests/vision_fixture.py``): a
unit's dataset examples (top by rank, then middle ones, with boxes into shared whole images, quartiles and the dataset
they were ranked over) and weights (kernels beside the other units' feature visualisations, strongest first, linked
both ways); a layer's DeepDream and caricatures and its grid's switch between feature visualisations and top
examples (kept across pages and sorts, a bad value a 400); the model's dataset; and the schema documenting them."""

from __future__ import annotations

import hashlib
import re

import httpx
import pytest

from store.keys import DatasetKey, EdgeKind
from tests.test_server import assert_twin
from tests.vision_fixture import (  # noqa: F401 (vision_atlas, vision_server: fixtures)
    CARICATURE_NAME, DATASET, DEEPDREAM_ACTIVATION, FOCUS, FOCUS_INPUTS, FOCUS_MIDDLE, FOCUS_OUTPUTS, FOCUS_TOP,
    MIDDLE_N, N_IMAGES, NO_EXAMPLES, PER_PAGE, QUARTILES, SLUG, TOP_N, UNRENDERED, VIEW_PARAMS, box, dataset_image,
    encode, item, vision_atlas, vision_server,
)

MODEL = f"/models/{SLUG}"
LAYER = f"{MODEL}/{FOCUS[0]}"
UNIT = f"{LAYER}/{FOCUS[1]}"


def sha_of(position: int) -> str:
    """The asset name of a dataset image, computed afresh from the picture."""
    return hashlib.sha256(encode(dataset_image(position))).hexdigest()


@pytest.fixture(scope="module")
def client(vision_server: str):
    with httpx.Client(base_url=vision_server, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def unit(client: httpx.Client) -> dict:
    return assert_twin(client, UNIT)


def section(page: str, id_: str) -> str:
    start = page.index(f'id="{id_}"')
    return page[start:page.index("</section>", start)]


def test_unit_twin_lists_top_then_middle_crops_by_rank(unit: dict):
    expected = [("top", rank, activation, position, cell) for rank, position, cell, activation in FOCUS_TOP]
    expected += [("middle", rank, activation, position, cell) for rank, position, cell, activation in FOCUS_MIDDLE]
    got = [(c["kind"], c["rank"], c["activation"], c["item"], tuple(c["cell"])) for c in unit["examples"]]
    assert got == [(kind, rank, act, item(position), cell) for kind, rank, act, position, cell in expected]
    for crop, (_, _, _, position, cell) in zip(unit["examples"], expected):
        assert crop["box"] == box(cell) and crop["grid"] == [16, 16] and crop["dataset"] == DATASET[DatasetKey.NAME]
        assert crop["image"]["sha256"] == sha_of(position) and (crop["image"]["width"], crop["image"]["height"]) == (64, 64)
    assert [c["activation"] for c in unit["examples"][:TOP_N]] == sorted((a for *_, a in FOCUS_TOP), reverse=True)
    assert unit["stats"]["quartiles"] == QUARTILES and unit["stats"]["examples_n"] == N_IMAGES
    assert all(QUARTILES[0] <= c["activation"] <= QUARTILES[2] for c in unit["examples"][TOP_N:])
    # no language-model sections
    assert not {"contexts", "activation", "logit_effects"} & set(unit)


def test_a_crop_is_drawn_from_its_whole_image(client: httpx.Client, unit: dict):
    """No crop is an image of its own: the page shows the whole image's blob, cut to the box."""
    crop = unit["examples"][0]
    blob = client.get(crop["image"]["url"])
    assert blob.status_code == 200 and blob.headers["content-type"] == "image/png"
    assert hashlib.sha256(blob.content).hexdigest() == crop["image"]["sha256"]
    others = client.get(f"{LAYER}/0.json").json()["examples"]
    shared = {c["image"]["sha256"] for c in others} & {c["image"]["sha256"] for c in unit["examples"]}
    assert shared, "units ranking the same image share its asset"


def test_unit_page_shows_examples_with_their_activations_and_where_they_lie(client: httpx.Client, unit: dict):
    page = client.get(UNIT).text
    examples = section(page, "examples")
    note = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", section(page, "examples-note").split("</p>")[0]))
    assert f"ranked over {N_IMAGES} images of {DATASET[DatasetKey.NAME]}" in note
    top, middle = examples.split('id="middle-label"')
    assert top.count('<figure class="example" tabindex="0"') == TOP_N
    assert middle.count('<figure class="example" tabindex="0"') == MIDDLE_N
    assert f"{MIDDLE_N} random images with activation between 0.52 and 1.87, the quartiles; median 1.1" in middle
    for crop in unit["examples"]:
        assert examples.count(crop["image"]["url"]) >= 2  # the crop and the whole image, from one blob
        left, top_, right, bottom = crop["box"]
        assert (f'left: {100 * left / 64:.4f}%; top: {100 * top_ / 64:.4f}%; width: {100 * (right - left) / 64:.4f}%; '
                f'height: {100 * (bottom - top_) / 64:.4f}%') in examples  # the box outlined on the whole image
    first = re.search(r'<span class="act">([^<]*)</span>', top).group(1)
    assert float(first) == FOCUS_TOP[0][3]
    assert "Connections" not in page  # a vision unit's connections are its weights, shown once


def test_weights_are_the_strongest_first_with_kernels_and_thumbnails(client: httpx.Client, unit: dict):
    inputs, outputs = unit["edges"]["in"], unit["edges"]["out"]
    strongest = sorted(FOCUS_INPUTS.items(), key=lambda kv: -abs(kv[1]))[:24]
    assert inputs["total"] == len(FOCUS_INPUTS) == 32 and len(inputs["shown"]) == 24
    assert [(e["unit"]["layer"], e["unit"]["index"], e["weight"]) for e in inputs["shown"]] == [
        ("conv1", index, weight) for index, weight in strongest]
    assert {e["kind"] for e in inputs["shown"]} == {EdgeKind.WEIGHT}
    assert all((e["image"]["width"], e["image"]["height"]) == (3, 3) for e in inputs["shown"])
    for edge in inputs["shown"]:
        other = client.get(edge["unit"]["json_url"]).json()
        channel = next((i["sha256"] for i in other["images"] if i["kind"] == "channel"), None)
        assert (edge["thumbnail"] or {}).get("sha256") == channel
        assert (channel is None) == ((edge["unit"]["layer"], edge["unit"]["index"]) == UNRENDERED)
        back = other["edges"]["out"]["shown"]  # the link resolves, and the other unit links back
        assert [(e["unit"]["url"], e["weight"], e["image"]) for e in back] == [(UNIT, edge["weight"], edge["image"])]
    assert outputs["total"] == 4 and [(e["unit"]["index"], e["weight"]) for e in outputs["shown"]] == sorted(
        FOCUS_OUTPUTS.items(), key=lambda kv: -abs(kv[1]))
    assert {e["kind"] for e in outputs["shown"]} == {EdgeKind.EXPANDED} and all(e["thumbnail"] is None
                                                                               for e in outputs["shown"])
    assert all((e["image"]["width"], e["image"]["height"]) == (6, 6) for e in outputs["shown"])
    for edge in outputs["shown"]:
        assert client.get(edge["unit"]["url"]).status_code == 200
        assert client.get(edge["image"]["url"]).status_code == 200


def test_unit_page_shows_weights_beside_the_other_units(client: httpx.Client, unit: dict):
    weights = section(client.get(UNIT).text, "weights")
    assert "Inputs from conv1" in weights and "(24 strongest of 32)" in weights
    assert "Outputs to conv3" in weights and "(all 4)" in weights
    for direction, kind in (("in", "direct"), ("out", "expanded")):
        table = weights[weights.index(f'id="weights-{direction}"'):]
        table = table[:table.index("</table>")]
        rows = table.split("<tr>")[2:]
        assert len(rows) == len(unit["edges"][direction]["shown"])
        for row, edge in zip(rows, unit["edges"][direction]["shown"]):
            assert f'<img class="kernel" src="{edge["image"]["url"]}"' in row
            assert (f'<img class="thumb" src="{edge["thumbnail"]["url"]}"' in row if edge["thumbnail"]
                    else '<span class="thumb none"' in row)
            assert f'<a href="{edge["unit"]["url"]}">{edge["unit"]["layer"]}:{edge["unit"]["index"]}</a>' in row
            sign, value = re.search(r'<td class="r (pos|neg)">([^<]*)</td>', row).groups()
            assert (sign == "neg") == (edge["weight"] < 0) and value == f"{edge['weight']:.3g}"
            assert f'<td class="muted">{kind}</td>' in row


def test_units_without_examples_or_weights_say_so(client: httpx.Client):
    bare = assert_twin(client, f"{LAYER}/{NO_EXAMPLES[1]}")
    assert bare["examples"] == [] and bare["edges"]["in"]["total"] == 0
    page = client.get(bare["url"]).text
    assert "Not computed yet." in section(page, "examples") and "Not computed yet." in section(page, "weights")


def test_layer_page_heads_with_its_deepdream_and_caricatures(client: httpx.Client):
    layer = assert_twin(client, LAYER)
    views = layer["views"]
    assert views["deepdream"]["kind"] == "deepdream" and views["deepdream"]["name"] == ""
    assert views["deepdream"]["activation"] == DEEPDREAM_ACTIVATION and views["deepdream"]["params"] == VIEW_PARAMS
    assert views["deepdream"]["input"] is None
    [caricature] = views["caricatures"]
    assert caricature["name"] == CARICATURE_NAME and caricature["input"]["sha256"] == sha_of(1)
    assert caricature["image"]["sha256"] != caricature["input"]["sha256"]
    page = client.get(LAYER).text
    shown = section(page, "layer-views")
    assert page.index('id="layer-views"') < page.index('class="thumbs')  # above the units
    for image in (views["deepdream"]["image"], caricature["input"], caricature["image"]):
        assert image["url"] in shown and client.get(image["url"]).status_code == 200
    assert f"caricature</strong> of <code>{CARICATURE_NAME}</code>" in shown

    conv1 = client.get(f"{MODEL}/conv1.json").json()
    assert conv1["views"] == {"deepdream": None, "caricatures": []}
    assert 'id="layer-views"' not in client.get(f"{MODEL}/conv1").text


def test_layer_grid_switches_to_top_examples(client: httpx.Client):
    featvis = client.get(LAYER + ".json").json()
    assert featvis["thumbnail"] == "featvis" and all(u["example"] is None for u in featvis["units"])
    links = {t["thumbnail"]: t for t in featvis["thumbnails"]}
    assert links["featvis"]["current"] and not links["example"]["current"]
    assert links["example"]["url"] == f"{LAYER}?thumbnail=example"

    examples = assert_twin(client, links["example"]["url"])
    assert examples["thumbnail"] == "example" and examples["page"]["pages"] == 2
    assert [u["image"] for u in examples["units"]] == [u["image"] for u in featvis["units"]]
    for u in examples["units"]:
        assert u["example"] == client.get(u["json_url"]).json()["examples"][0]  # its top example, rank 0
    html = client.get(examples["url"]).text
    assert html.count('<span class="crop">') == len(examples["units"])
    assert 'aria-current="true">top dataset example<' in html
    assert f'href="{LAYER}" id="thumbnail-featvis"' in html

    second = client.get(examples["page"]["next"]["json_url"]).json()  # the next page keeps the thumbnail
    assert examples["page"]["next"]["url"] == f"{LAYER}?page=2&thumbnail=example" and second["thumbnail"] == "example"
    missing = next(u for u in second["units"] if u["index"] == NO_EXAMPLES[1])
    assert missing["example"] is None and len(second["units"]) == PER_PAGE
    assert "1 of the 4 units here have no dataset examples yet." in client.get(second["url"]).text
    flipped = next(s for s in examples["sorts"] if s["sort"] == "index")  # so does sorting
    assert flipped["url"] == f"{LAYER}?order=desc&thumbnail=example"
    assert [u["index"] for u in client.get(flipped["json_url"]).json()["units"]] == [7, 6, 5, 4]


def test_a_bad_thumbnail_is_a_400_that_says_which_exist(client: httpx.Client):
    for url, negotiated in ((LAYER + ".json", {}), (LAYER, {"Accept": "application/json"})):
        response = client.get(url, params={"thumbnail": "crop"}, headers=negotiated)
        assert response.status_code == 400
        message = response.json()["error"]["message"]
        assert message.startswith("thumbnail 'crop' is not one a layer grid shows") and "featvis" in message
        assert "example" in message
    page = client.get(LAYER, params={"thumbnail": "crop"})
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
    assert "thumbnail &#39;crop&#39; is not one" in page.text


def test_model_page_names_the_dataset_of_the_latest_run_with_one(client: httpx.Client):
    model = assert_twin(client, MODEL)
    runs = model["runs"]
    assert model["dataset"] == {**{key.value: value for key, value in DATASET.items()}, "run": runs[1]["id"]}
    assert "dataset" not in runs[2]["config"]
    table = section(client.get(MODEL).text.replace("</table>", "</section>"), "dataset-table")
    assert DATASET[DatasetKey.NAME] in table and DATASET[DatasetKey.SHA256] in table
    assert f"{N_IMAGES} read, 2 unreadable skipped" in table


def test_schema_documents_crops_weights_views_and_the_thumbnail(client: httpx.Client):
    schema = client.get("/openapi.json").json()
    parts = schema["components"]["schemas"]
    assert {"kind", "rank", "activation", "image", "dataset", "item", "cell", "grid", "box"} == set(
        parts["Crop"]["properties"])
    assert {"image", "thumbnail", "weight", "kind", "unit"} <= set(parts["VisionEdge"]["properties"])
    assert {"deepdream", "caricatures"} == set(parts["LayerViews"]["properties"])
    assert {"thumbnail", "thumbnails", "views"} <= set(parts["VisionLayerPage"]["properties"])
    assert {"name", "source", "images", "skipped", "sha256", "layout", "run"} == set(parts["Dataset"]["properties"])
    layer = schema["paths"]["/models/{model}/{layer}.json"]["get"]
    assert "400" in layer["responses"]
    thumbnail = next(p for p in layer["parameters"] if p["name"] == "thumbnail")
    assert thumbnail["schema"]["enum"] == ["featvis", "example"]
