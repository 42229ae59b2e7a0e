"""OpenAI Microscope's links over HTTP, and the label and provenance of untrained and registered models, from the real
server serving a small atlas built here by hand (no torch).

The atlas holds seven of Microscope's eight organisms under Microscope's slugs, each with every layer its table
(``store.microscope``) maps to, except ``ABSENT_LAYER``; ``ABSENT_MODEL`` is not there at all. InceptionV1 also has a
layer of its own named like one of Microscope's ops (``SHADOW``), which must be served as itself, and a DeepDream on
mixed4c. Besides them: ``RANDOM`` (an untrained InceptionV1: random weights, seed 0) and ``USER`` (a model its user
brought, with its definition on the card).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import httpx
import pytest
from PIL import Image

from store import Atlas
from store.keys import CardKey, LayerImageKind
from store.microscope import (
    _OPS, LAYER_TECHNIQUES, MICROSCOPE_LAYERS, UNIT_TECHNIQUES, microscope_layer, op_slug, technique,
)
from store.schema import Layer, LayerImage, Model
from tests.conftest import serving
from tests.test_server import assert_twin
from tests.vision_fixture import png

ABSENT_MODEL = "alexnet_caffe_places365"
ABSENT_LAYER = ("inceptionv1", "mixed5b")
SHADOW = ("inceptionv1", "conv2d0_pre_relu_0")  # Microscope's name for conv2d0, and a real layer here too
UNITS = 8  # units per layer, except these
WIDE = {("inceptionv1", "mixed4c"): 512, ("vgg19_caffe", "conv3_1"): 256}
RANDOM = "inceptionv1-random"
USER = "resnet18"

INCEPTION_WEIGHTS = {"file": "inception5h.pth", "sha256": "ab" * 32,
                     "url": "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth",
                     "found": "torch hub cache", "checked": True, "format": "state_dict", "random": False,
                     "note": "torch-lucent's port of lucid's InceptionV1 graph"}
VGG_WEIGHTS = {"file": "VGG_ILSVRC_19_layers.caffemodel", "sha256": "cd" * 32,
               "url": "http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/VGG_ILSVRC_19_layers.caffemodel",
               "found": "downloaded", "checked": False, "format": "caffemodel", "random": False}
RANDOM_WEIGHTS = {"random": True, "seed": 0, "note": "untrained: seeded random weights (--random-weights)"}
USER_WEIGHTS = {"file": "resnet18.pt", "sha256": "ef" * 32, "found": "--weights", "checked": False,
                "format": "state_dict", "random": False}
INCEPTION_INPUT = {"size": 224, "resize": 256, "value_range": [-117.0, 138.0], "mean": [0.0, 0.0, 0.0],
                   "std": [1.0, 1.0, 1.0], "channels": "RGB"}
CAFFE_INPUT = {"size": 224, "resize": 256, "value_range": [0.0, 255.0], "mean": [103.939, 116.779, 123.68],
               "std": [1.0, 1.0, 1.0], "channels": "BGR"}
USER_LAYERS = [{"name": "layer1", "module": "layer1", "units": 64, "shape": [64, 56, 56]},
               {"name": "layer2", "module": "layer2", "units": 128, "shape": [128, 28, 28]}]
ARCHITECTURE = "ResNet(\n  (conv1): Conv2d(3, 64, kernel_size=(7, 7))\n  (fc): Linear(<in>=512 & out=1000)\n)"
DEFINITION = {"target": "torchvision:resnet18", "card_file": "/home/me/cards/resnet18.toml", "layers": USER_LAYERS,
              "architecture": ARCHITECTURE, "parameters": 11689512}
BANNER = "Untrained: random weights — these pictures show the architecture's biases, not learned features."
MODEL_BANNER = ("Untrained: random weights (seed 0) — these pictures show the architecture's biases, not learned "
                "features.")


def ours(model: str) -> list[str]:
    """The layers of ``model`` the fixture atlas holds, in the table's order."""
    names = list(dict.fromkeys(MICROSCOPE_LAYERS[model].values()))
    return [name for name in names if (model, name) != ABSENT_LAYER] + ([SHADOW[1]] if model == SHADOW[0] else [])


def build(root: Path) -> Path:
    with Atlas.open_for_writing(root) as atlas, atlas.batch() as session:
        def model(slug: str, card: dict, layers: list[tuple[str, int]], title: str | None = None) -> Model:
            row = Model(slug=slug, title=title or slug, kind="vision", description="", source="tests", card=card)
            session.add(row)
            session.flush()
            session.add_all(Layer(model_id=row.id, name=name, position=position, kind="conv", n_units=n,
                                  shape=[n, 7, 7]) for position, (name, n) in enumerate(layers))
            session.flush()
            return row

        for slug in MICROSCOPE_LAYERS:
            if slug == ABSENT_MODEL:
                continue
            weights = {"inceptionv1": INCEPTION_WEIGHTS, "vgg19_caffe": VGG_WEIGHTS}.get(slug, INCEPTION_WEIGHTS)
            card = {CardKey.WEIGHTS: weights, CardKey.INPUT: CAFFE_INPUT if "caffe" in slug else INCEPTION_INPUT,
                    CardKey.MICROSCOPE: {"slug": slug}}
            model(slug, card, [(name, WIDE.get((slug, name), UNITS)) for name in ours(slug)])
        mixed4c = session.query(Layer).join(Model).filter(Model.slug == "inceptionv1", Layer.name == "mixed4c").one()
        session.add(LayerImage(layer_id=mixed4c.id, kind=LayerImageKind.DEEPDREAM, name="",
                               asset_sha256=png(atlas, session, Image.new("RGB", (16, 16), (200, 80, 40))),
                               params={"steps": 8}, activation=1.5))
        model(RANDOM, {CardKey.WEIGHTS: RANDOM_WEIGHTS, CardKey.INPUT: INCEPTION_INPUT}, [("mixed4c", UNITS)],
              title="InceptionV1 (untrained)")
        model(USER, {CardKey.WEIGHTS: USER_WEIGHTS, CardKey.INPUT: INCEPTION_INPUT, CardKey.DEFINITION: DEFINITION},
              [(layer["name"], layer["units"]) for layer in USER_LAYERS])
    return root


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with serving(build(tmp_path_factory.mktemp("microscope-atlas"))) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        yield client


BLOCK = re.compile(r"</?(?:table|thead|tbody|tr|th|td|p|div|section|details|summary|pre|h\d)\b[^>]*>")


def text(markup: str) -> str:
    """What a reader sees: block tags as spaces, inline ones dropped, entities decoded, whitespace collapsed."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", "", BLOCK.sub(" ", markup)))).strip()


def element(html: str, id_: str) -> str:
    """The element with this id, from its opening tag to its own closing tag (elements of its kind nested in it
    skipped)."""
    match = re.search(r'<(\w+)[^>]*\bid="%s"' % re.escape(id_), html)
    assert match, f'no id="{id_}"'
    tag, depth = match.group(1), 0
    for other in re.finditer(r"<(/?)%s\b[^>]*>" % tag, html[match.start():]):
        depth += -1 if other.group(1) else 1
        if depth == 0:
            return html[match.start():match.start() + other.end()]
    raise AssertionError(f'id="{id_}" is never closed')


def missing(client: httpx.Client, url: str) -> str:
    """The message of the 404 ``url`` answers, asked for as JSON (as ``.json`` paths are answered anyway)."""
    response = client.get(url, headers={"Accept": "application/json"})
    assert response.status_code == 404, (url, response.status_code, response.headers.get("location"))
    return response.json()["error"]["message"]


def moved(client: httpx.Client, url: str, **kwargs) -> str:
    response = client.get(url, **kwargs)
    assert response.status_code == 301, (url, response.status_code, response.text[:300])
    assert response.headers["cache-control"] == "no-cache"
    return response.headers["location"]


# The table

def test_op_slugs_write_tensorflow_names_as_microscope_did():
    assert op_slug("mixed4c") == "mixed4c_0"
    assert op_slug("conv3_1/conv3_1") == "conv3_1_conv3_1_0"
    assert op_slug("InceptionV3/InceptionV3/Mixed_5b/concat") == "InceptionV3_InceptionV3_Mixed_5b_concat_0"
    assert op_slug("resnet_v2_50/block1/unit_1/bottleneck_v2/preact/Relu") == \
        "resnet_v2_50_block1_unit_1_bottleneck_v2_preact_Relu_0"
    assert microscope_layer("inceptionv1", "mixed4c_0") == "mixed4c"
    assert microscope_layer("vgg19_caffe", "conv3_1_conv3_1_0") == "conv3_1"
    assert microscope_layer("inceptionv3_slim", "InceptionV3_InceptionV3_Mixed_5b_concat_0") == "Mixed_5b"
    assert microscope_layer("resnetv2_50_slim", "resnet_v2_50_block1_unit_1_bottleneck_v2_preact_Relu_0") == \
        "block1_unit_1_preact"
    assert microscope_layer("alexnet_caffe_places365", "conv5_concat_0") == "conv5"
    assert microscope_layer("inceptionv1_caffe_places365", "inception_4c_output_0") == "inception_4c"
    assert microscope_layer("inceptionv1", "mixed4c") is None  # our name is not Microscope's
    assert microscope_layer("tinyvision", "conv1_0") is None


def test_the_table_round_trips():
    """Every op of every model has one slug, the table maps it to its layer, and no slug is one of our layer names
    (which would win over it, and so never redirect)."""
    assert list(MICROSCOPE_LAYERS) == ["alexnet", "alexnet_caffe_places365", "inceptionv1",
                                       "inceptionv1_caffe_places365", "vgg19_caffe", "inceptionv3_slim",
                                       "inceptionv4_slim", "resnetv2_50_slim"]
    for model, ops in _OPS.items():
        slugs = [op_slug(op) for op, _ in ops]
        assert len(set(slugs)) == len(ops) == len(MICROSCOPE_LAYERS[model]), model
        for (op, layer), slug in zip(ops, slugs):
            assert MICROSCOPE_LAYERS[model][slug] == layer == microscope_layer(model, slug)
            assert re.fullmatch(r"[A-Za-z0-9_]+_0", slug) and slug.replace("_", "") == re.sub(r"[/:_]", "", op) + "0"
        assert not set(slugs) & set(MICROSCOPE_LAYERS[model].values()), model


def test_the_table_names_the_registry_layers():
    """Each Microscope model is a registered organism under the same slug, and every layer the table maps to is one
    of its layers."""
    from precompute.registry import REGISTRY

    for model, table in MICROSCOPE_LAYERS.items():
        spec = REGISTRY[model]
        assert spec.microscope == model and spec.kind == "vision"
        assert set(table.values()) <= {layer.name for layer in spec.layers}, model


@pytest.mark.parametrize(("query", "expected"), [
    ({"models.op.technique": "feature_vis"}, ("unit", "feature-visualisation")),
    ({"models.op.feature_vis.type": "neuron", "models.op.technique": "feature_vis"}, ("unit", "feature-visualisation")),
    ({"models.op.feature_vis.type": "channel"}, ("unit", "feature-visualisation")),
    ({"models.op.technique": "dataset_examples"}, ("unit", "examples")),
    ({"models.op.technique": "weights"}, ("unit", "weights")),
    ({"models.technique": "deep_dream"}, ("layer", "layer-views")),
    ({"models.technique": "caricature"}, ("layer", "layer-views")),
    ({"models.technique": "deep_dream", "models.op.technique": "dataset_examples"}, ("unit", "examples")),
    ({"models.op.technique": "dataset_examples", "models.technique": "deep_dream"}, ("unit", "examples")),
    ({"models.technique": "activation_atlas"}, None),
    ({"page": "2"}, None),
    ({}, None),
])
def test_technique(query: dict[str, str], expected: tuple[str, str] | None):
    assert technique(query) == expected
    assert set(UNIT_TECHNIQUES.values()) == {"feature-visualisation", "examples", "weights"}
    assert set(LAYER_TECHNIQUES.values()) == {"layer-views"}


# Redirects

def test_every_entry_of_the_table_redirects_or_says_what_is_missing(client: httpx.Client):
    redirected = 0
    for model, table in MICROSCOPE_LAYERS.items():
        for op, layer in table.items():
            base, canonical = f"/models/{model}/{op}", f"/models/{model}/{layer}"
            if model == ABSENT_MODEL:
                expected = (f"model {model} (a Microscope organism) is not in this atlas; `atlascope precompute "
                            f"{model} --atlas DIR --dataset IMAGES` adds it")
                for url in (base, f"{base}/3", f"{base}.json", f"{base}/3.json"):
                    assert missing(client, url) == expected, url
            elif (model, layer) == ABSENT_LAYER:
                expected = (f"Microscope's {model} layer {op} (our {layer}) is not in this atlas; `atlascope "
                            f"precompute {model} --layers {layer} ...` adds it")
                for url in (base, f"{base}/3", f"{base}.json", f"{base}/3.json"):
                    assert missing(client, url) == expected, url
            elif (model, op) == SHADOW:
                assert client.get(base).status_code == 200
            else:
                assert moved(client, base) == canonical
                assert moved(client, f"{base}/3") == f"{canonical}/3"
                assert moved(client, f"{base}.json") == f"{canonical}.json"
                assert moved(client, f"{base}/3.json") == f"{canonical}/3.json"
                redirected += 1
    # every entry, less the absent model's, the absent layer's (InceptionV1's mixed5b_0) and the shadowed one
    absent_layer = [op for op, layer in MICROSCOPE_LAYERS["inceptionv1"].items() if layer == ABSENT_LAYER[1]]
    assert absent_layer == ["mixed5b_0"]
    assert redirected == sum(map(len, MICROSCOPE_LAYERS.values())) - len(MICROSCOPE_LAYERS[ABSENT_MODEL]) - 1 - 1


def test_cited_links_land_on_the_unit(client: httpx.Client):
    assert moved(client, "/models/inceptionv1/mixed4c_0/447") == "/models/inceptionv1/mixed4c/447"
    assert moved(client, "/models/vgg19_caffe/conv3_1_conv3_1_0/5") == "/models/vgg19_caffe/conv3_1/5"
    assert moved(client, "/models/inceptionv3_slim/InceptionV3_InceptionV3_Mixed_5b_concat_0") == \
        "/models/inceptionv3_slim/Mixed_5b"
    assert moved(client, "/models/resnetv2_50_slim/resnet_v2_50_block1_unit_1_bottleneck_v2_preact_Relu_0/2") == \
        "/models/resnetv2_50_slim/block1_unit_1_preact/2"
    assert moved(client, "/models/inceptionv1/conv2d1_pre_relu_0/7") == "/models/inceptionv1/conv2d1/7"
    followed = client.get("/models/inceptionv1/mixed4c_0/447.json", follow_redirects=True)
    assert followed.status_code == 200 and str(followed.url).endswith("/models/inceptionv1/mixed4c/447.json")
    assert followed.json()["index"] == 447 and followed.json()["layer"]["name"] == "mixed4c"
    assert assert_twin(client, "/models/inceptionv1/mixed4c/447")["index"] == 447


UNIT = "/models/inceptionv1/mixed4c_0/447"
LAYER = "/models/inceptionv1/mixed4c_0"


@pytest.mark.parametrize(("url", "params", "location"), [
    (UNIT, {"models.op.feature_vis.type": "neuron", "models.op.technique": "feature_vis"},
     "/models/inceptionv1/mixed4c/447#feature-visualisation"),
    (UNIT, {"models.op.feature_vis.type": "channel"}, "/models/inceptionv1/mixed4c/447#feature-visualisation"),
    (UNIT, {"models.op.technique": "dataset_examples"}, "/models/inceptionv1/mixed4c/447#examples"),
    (UNIT, {"models.op.technique": "weights"}, "/models/inceptionv1/mixed4c/447#weights"),
    (UNIT, {"models.technique": "deep_dream"}, "/models/inceptionv1/mixed4c#layer-views"),
    (UNIT, {"models.technique": "deep_dream", "models.op.technique": "weights"},
     "/models/inceptionv1/mixed4c/447#weights"),
    (UNIT, {"models.technique": "nonsense", "page": "2", "kind": "neuron", "unit": "3"},
     "/models/inceptionv1/mixed4c/447"),
    (LAYER, {"models.technique": "deep_dream"}, "/models/inceptionv1/mixed4c#layer-views"),
    (LAYER, {"models.technique": "caricature"}, "/models/inceptionv1/mixed4c#layer-views"),
    (LAYER, {"models.op.technique": "dataset_examples"}, "/models/inceptionv1/mixed4c?thumbnail=example"),
    (LAYER, {"models.op.technique": "feature_vis"}, "/models/inceptionv1/mixed4c"),
    (LAYER, {"page": "2", "unit": "5", "thumbnail": "bogus"}, "/models/inceptionv1/mixed4c"),
    (f"{UNIT}.json", {"models.op.technique": "dataset_examples"}, "/models/inceptionv1/mixed4c/447.json"),
    (f"{UNIT}.json", {"models.technique": "deep_dream"}, "/models/inceptionv1/mixed4c/447.json"),
    (f"{LAYER}.json", {"models.technique": "deep_dream", "page": "2"}, "/models/inceptionv1/mixed4c.json"),
])
def test_techniques_become_sections(client: httpx.Client, url: str, params: dict[str, str], location: str):
    assert moved(client, url, params=params) == location


def test_the_sections_techniques_lead_to_are_there(client: httpx.Client):
    unit = client.get("/models/inceptionv1/mixed4c/447").text
    for section in UNIT_TECHNIQUES.values():
        assert re.search(r'<section [^>]*id="%s"' % section, unit), section
    layer = client.get("/models/inceptionv1/mixed4c").text
    assert re.search(r'<section [^>]*id="layer-views"', layer) and "DeepDream" in element(layer, "layer-views")
    assert client.get("/models/inceptionv1/mixed4c?thumbnail=example").status_code == 200


@pytest.mark.parametrize(("unit", "message"), [
    ("512", "unit 512 out of range: layer mixed4c has 512 units (0–511); Microscope's inceptionv1 layer mixed4c_0 "
            "is our mixed4c"),
    ("-1", "unit -1 out of range: layer mixed4c has 512 units (0–511); Microscope's inceptionv1 layer mixed4c_0 is "
           "our mixed4c"),
    ("0447", "unit '0447' not found: units are numbered 0, 1, 2, ...; Microscope's inceptionv1 layer mixed4c_0 is "
             "our mixed4c"),
    ("dog", "unit 'dog' not found: units are numbered 0, 1, 2, ...; Microscope's inceptionv1 layer mixed4c_0 is our "
            "mixed4c"),
])
def test_a_unit_out_of_range_is_not_found(client: httpx.Client, unit: str, message: str):
    assert missing(client, f"{LAYER}/{unit}") == message
    assert missing(client, f"{LAYER}/{unit}.json") == message
    page = client.get(f"{LAYER}/{unit}", params={"models.op.technique": "feature_vis"})
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert message.replace("'", "&#39;") in page.text


def test_a_missing_model_names_the_microscope_organism(client: httpx.Client):
    message = ("model alexnet_caffe_places365 (a Microscope organism) is not in this atlas; `atlascope precompute "
               "alexnet_caffe_places365 --atlas DIR --dataset IMAGES` adds it")
    assert missing(client, "/models/alexnet_caffe_places365/conv5_concat_0/12") == message
    page = client.get("/models/alexnet_caffe_places365/conv5_concat_0")
    assert page.status_code == 404 and "a Microscope organism" in page.text


def test_other_names_keep_their_own_not_found(client: httpx.Client):
    assert missing(client, "/models/inceptionv1/mixed4c_1") == "layer 'mixed4c_1' not found in model 'inceptionv1'"
    assert missing(client, "/models/inceptionv1/mixed4c_1/3") == "layer 'mixed4c_1' not found in model 'inceptionv1'"
    # Microscope's name in another model than its own is no Microscope name
    assert missing(client, "/models/vgg19_caffe/mixed4c_0/3") == "layer 'mixed4c_0' not found in model 'vgg19_caffe'"
    assert missing(client, f"/models/{RANDOM}/mixed4c_0") == f"layer 'mixed4c_0' not found in model '{RANDOM}'"
    assert missing(client, "/models/tinyvision/mixed4c_0/3") == "model 'tinyvision' not found"
    assert missing(client, "/models/inceptionv1/mixed4c/512") == \
        "unit 512 out of range: layer mixed4c has 512 units (0–511)"


def test_a_real_layer_named_like_an_op_wins(client: httpx.Client):
    model, op = SHADOW
    layer = assert_twin(client, f"/models/{model}/{op}")
    assert layer["layer"]["name"] == op and layer["page"]["total"] == UNITS
    unit = assert_twin(client, f"/models/{model}/{op}/3")
    assert (unit["layer"]["name"], unit["index"]) == (op, 3)
    assert client.get(f"/models/{model}/{op}/3", params={"models.op.technique": "weights"}).status_code == 200
    assert missing(client, f"/models/{model}/{op}/{UNITS}") == \
        f"unit {UNITS} out of range: layer {op} has {UNITS} units (0–{UNITS - 1})"


def test_head_answers_like_get(client: httpx.Client):
    head = client.head(UNIT, params={"models.op.technique": "weights"})
    assert head.status_code == 301 and head.content == b""
    assert head.headers["location"] == "/models/inceptionv1/mixed4c/447#weights"
    assert client.head(f"{LAYER}.json").headers["location"] == "/models/inceptionv1/mixed4c.json"
    missing = client.head("/models/alexnet_caffe_places365/conv5_concat_0/1")
    assert missing.status_code == 404 and missing.content == b""
    assert client.head(f"/models/{SHADOW[0]}/{SHADOW[1]}/1").status_code == 200


def test_the_schema_documents_the_redirect(client: httpx.Client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/models/{model}/{layer}", "/models/{model}/{layer}.json", "/models/{model}/{layer}/{unit}",
                 "/models/{model}/{layer}/{unit}.json"):
        assert "Location" in paths[path]["get"]["responses"]["301"]["headers"], path
    assert "301" not in paths["/models/{model}"]["get"]["responses"]


# Untrained models and the model card's provenance

@pytest.mark.parametrize(("slug", "untrained"), [(RANDOM, True), ("inceptionv1", False), (USER, False)])
def test_twins_say_whether_the_model_is_untrained(client: httpx.Client, slug: str, untrained: bool):
    layer = "layer1" if slug == USER else "mixed4c"
    pages = {f"/models/{slug}": MODEL_BANNER, f"/models/{slug}/{layer}": BANNER, f"/models/{slug}/{layer}/2": BANNER}
    for url, banner in pages.items():
        assert assert_twin(client, url)["untrained"] is untrained, url
        html = client.get(url).text
        if untrained:
            assert text(element(html, "untrained")) == banner, url
            assert html.index('id="untrained"') < html.index("<h1>"), "the banner comes first"
        else:
            assert 'id="untrained"' not in html and "Untrained" not in html, url


def test_the_schema_documents_untrained(client: httpx.Client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for twin in ("VisionModelPage", "VisionLayerPage", "VisionUnitPage"):
        field = schemas[twin]["properties"]["untrained"]
        assert field["type"] == "boolean" and "random" in field["description"], twin
        assert "untrained" in schemas[twin]["required"]


def test_model_page_shows_where_the_weights_came_from(client: httpx.Client):
    html = client.get("/models/inceptionv1").text
    weights = text(element(html, "weights"))
    assert weights.startswith(f"weights inception5h.pth · sha256 {'ab' * 32} ")
    provenance = element(html, "weights-provenance")
    assert f'<a href="{INCEPTION_WEIGHTS["url"]}">{INCEPTION_WEIGHTS["url"]}</a>' in provenance
    assert text(provenance) == (f"published at {INCEPTION_WEIGHTS['url']} found torch hub cache checksum checked "
                                f"matches the publisher's sha256 format state_dict note {INCEPTION_WEIGHTS['note']}")
    assert text(element(html, "input")) == ("input shorter side resized to 256 px, the centre 224×224 px · RGB · "
                                            "values in [-117.0, 138.0]")
    assert text(element(html, "microscope")) == "OpenAI Microscope's inceptionv1: its old links redirect here."
    assert 'id="definition"' not in html
    card = assert_twin(client, "/models/inceptionv1")["model"]["card"]
    assert card[CardKey.WEIGHTS] == INCEPTION_WEIGHTS and card[CardKey.MICROSCOPE] == {"slug": "inceptionv1"}

    vgg = client.get("/models/vgg19_caffe").text
    assert text(element(vgg, "weights-checked")) == ("not checked no sha256 from the publisher to compare with; the "
                                                     "one above is the file's own")
    assert text(element(vgg, "input")) == (
        "input shorter side resized to 256 px, the centre 224×224 px · BGR · values in [0.0, 255.0] · minus the "
        "mean (103.939, 116.779, 123.68)")
    assert text(element(vgg, "microscope")) == "OpenAI Microscope's vgg19_caffe: its old links redirect here."


def test_untrained_model_page_says_its_weights_are_random(client: httpx.Client):
    html = client.get(f"/models/{RANDOM}").text
    assert text(element(html, "weights")) == \
        f"weights untrained: seeded random weights, seed 0 note {RANDOM_WEIGHTS['note']}"
    assert 'id="microscope"' not in html  # Microscope's links go to the trained model only


def test_a_users_model_page_shows_its_definition(client: httpx.Client):
    html = client.get(f"/models/{USER}").text
    definition = element(html, "definition")
    assert text(element(definition, "definition-table")) == (
        "target torchvision:resnet18 card file /home/me/cards/resnet18.toml parameters 11,689,512")
    rows = element(definition, "definition-layers").split("<tr>")[2:]
    assert [text(row) for row in rows] == ["layer1 layer1 64 64×56×56", "layer2 layer2 128 128×28×28"]
    assert f'<a href="/models/{USER}/layer1">layer1</a>' in rows[0]
    details = element(definition, "architecture")
    assert details.startswith('<details id="architecture">') and "<summary>" in details
    pre = re.search(r"<pre[^>]*>(.*)</pre>", details, re.S).group(1)
    assert pre == ARCHITECTURE.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert text(element(html, "weights")).startswith(f"weights resnet18.pt · sha256 {'ef' * 32} found --weights")
    assert 'id="microscope"' not in html and 'id="untrained"' not in html
