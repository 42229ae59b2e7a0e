"""What a newcomer trips on in the pages (issue 20 items A6 and A7): each model kind's pages and twins carry only its
own sections and fields, and a circuit's residual read and write channels, which have no weights of their own among
the model's edges, show on their unit pages the weights that make their circuit edges, and the residual channel whose
page lists the rest. On the hand-built fixture atlases, served over HTTP."""

from __future__ import annotations

import re

import httpx
import pytest

from store.keys import LayerKind
from tests.lm_fixture import SLUG, TASK, lm_atlas, lm_server  # noqa: F401
from tests.vision_fixture import SLUG as VISION, vision_atlas, vision_server  # noqa: F401

VISION_FIELDS = {"stats", "images", "examples", "kind", "kinds", "thumbnail", "thumbnails", "views", "dataset"}
LANGUAGE_FIELDS = {"activation", "logit_effects", "contexts", "circuits", "residual"}
READ = (f"0.{LayerKind.MLP_IN}", 5)  # in both fixture circuits: read by the neuron 0.mlp.post_act 3
WRITE = (f"0.{LayerKind.ATTN_OUT}", 5)  # the quote circuit's: written by 0.attn.v 2


@pytest.fixture(scope="module")
def lm(lm_server: str) -> httpx.Client:  # noqa: F811
    with httpx.Client(base_url=lm_server, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def vision(vision_server: str) -> httpx.Client:  # noqa: F811
    with httpx.Client(base_url=vision_server, timeout=30) as client:
        yield client


def twin(client: httpx.Client, url: str) -> dict:
    response = client.get(f"{url}.json")
    assert response.status_code == 200, response.text
    return response.json()


def test_a_language_models_twins_carry_no_vision_fields(lm: httpx.Client):
    for url in (f"/models/{SLUG}", f"/models/{SLUG}/0.mlp.post_act", f"/models/{SLUG}/0.mlp.post_act/3"):
        assert not VISION_FIELDS & set(twin(lm, url)), url
    unit = twin(lm, f"/models/{SLUG}/0.mlp.post_act/3")
    assert all(set(edge) == {"kind", "weight", "unit"} for side in unit["edges"].values() for edge in side["shown"])
    assert 'id="thumbnail-' not in lm.get(f"/models/{SLUG}/0.mlp.post_act").text
    assert lm.get(f"/models/{SLUG}/0.mlp.post_act.json?kind=neuron").status_code == 404


def test_a_vision_models_twins_and_pages_carry_no_language_sections(vision: httpx.Client):
    model, unit = twin(vision, f"/models/{VISION}"), twin(vision, f"/models/{VISION}/conv2/1")
    assert "circuits" not in model and not LANGUAGE_FIELDS & set(unit)
    assert {"images", "examples", "stats"} <= set(unit) and "dataset" in model
    html = vision.get(f"/models/{VISION}/conv2/1").text
    assert 'id="circuits"' not in html and "<h2>Circuits</h2>" not in html
    assert 'id="circuits"' not in vision.get(f"/models/{VISION}").text


def test_the_schema_documents_each_kinds_shape(lm: httpx.Client):
    schemas = lm.get("/openapi.json").json()["components"]["schemas"]
    assert {"kinds", "thumbnails", "views"} <= set(schemas["VisionLayerPage"]["properties"])
    assert not {"kinds", "thumbnails", "views"} & set(schemas["LanguageLayerPage"]["properties"])
    assert not {"circuits", "contexts"} & set(schemas["VisionUnitPage"]["properties"])
    assert not {"images", "examples", "stats"} & set(schemas["LanguageUnitPage"]["properties"])


def circuit_edges_at(client: httpx.Client, task: str, node: tuple[str, int]) -> set[tuple[str, str, int, float]]:
    """(direction, other layer, other index, weight) of every edge at ``node`` on the circuit's own page."""
    edges = twin(client, f"/models/{SLUG}/circuits/{task}")["edges"]
    found = set()
    for edge in edges:
        src, dst = (edge["src_layer"], edge["src_index"]), (edge["dst_layer"], edge["dst_index"])
        if dst == node:
            found.add(("in", *src, edge["weight"]))
        if src == node:
            found.add(("out", *dst, edge["weight"]))
    return found


@pytest.mark.parametrize("node", [READ, WRITE], ids=["read channel", "write channel"])
def test_a_residual_channels_page_shows_the_weights_of_its_circuit_edges(lm: httpx.Client, node: tuple[str, int]):
    unit = twin(lm, f"/models/{SLUG}/{node[0]}/{node[1]}")
    assert unit["edges"]["in"]["total"] == unit["edges"]["out"]["total"] == 0  # no weights of its own
    listed = {c["slug"]: {(e["direction"], e["unit"]["layer"], e["unit"]["index"], e["weight"]) for e in c["edges"]}
              for c in unit["circuits"]}
    assert listed and all(listed[task] == circuit_edges_at(lm, task, node) for task in listed)
    assert any(listed.values())
    stream = f"0.{LayerKind.RESID_MID}"  # mlp.act_in reads it through ln_2; attn.out adds to it
    assert unit["residual"]["layer"] == stream and unit["residual"]["index"] == node[1]

    html = lm.get(f"/models/{SLUG}/{node[0]}/{node[1]}").text
    note = html[html.index('id="residual-note"'):]
    assert f'href="/models/{SLUG}/{stream}/{node[1]}"' in note[:note.index("</p>")]
    table = html[html.index(f'id="circuit-edges-{TASK}"'):]
    table = table[:table.index("</table>")]
    shown = re.findall(r'<a href="/models/[^"]+">([^<]+)</a></td>\s*<td class="r (?:pos|neg)">([^<]+)</td>', table)
    assert len(shown) == len(listed[TASK]) > 0


def test_the_last_mlps_write_channel_adds_to_the_stream_the_unembedding_reads(lm: httpx.Client):
    unit = twin(lm, f"/models/{SLUG}/1.{LayerKind.MLP_OUT}/0")
    assert unit["residual"]["layer"] == f"1.{LayerKind.RESID_POST}"
    assert twin(lm, f"/models/{SLUG}/0.{LayerKind.MLP_OUT}/0")["residual"]["layer"] == f"1.{LayerKind.RESID_PRE}"
    assert twin(lm, f"/models/{SLUG}/0.mlp.post_act/3")["residual"] is None
