"""Language-model pages over HTTP, from the real server serving a hand-built LM atlas (``tests/lm_fixture.py``): a
unit's contexts, activation, logit effects and connections, a layer's sortable table and jump box, the model card, and
that every HTML page says what its JSON twin says."""

from __future__ import annotations

import html
import re
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from store.keys import CardKey, LayerKind
from tests.lm_fixture import (  # noqa: F401 (lm_atlas, lm_server: fixtures)
    CARD, CHANNEL, D_MLP, DEAD, DENSE_SLUG, HISTOGRAM, KNOWN_DOCUMENT, KNOWN_NEGATIVE, KNOWN_PEAK, KNOWN_TOKENS,
    LOGIT_EFFECTS, NEURON, ODD_TOKENS, QUERY, SLUG, TOP_MAX, UNMEASURED, layer_names, layer_stats, lm_atlas, lm_server,
)
from tests.test_server import assert_twin

# One token of a context as the page writes it: its sign and mark in the class, its shade, its value, its text.
TOKEN = re.compile(r'<span class="t(?P<minus> minus)?(?P<mark> mark)?"(?: style="--a:(?P<a>[0-9.]+)")? '
                   r'title="(?P<title>[^"]*)">(?P<text>.*?)</span>', re.S)
NEWLINE_MARK = '<i class="nl"></i>'
MARKS = str.maketrans({" ": "␣", "\n": "⏎", "\t": "→"})  # a token's whitespace, as pages mark it


@pytest.fixture(scope="module")
def client(lm_server: str):
    with httpx.Client(base_url=lm_server, timeout=30) as client:
        yield client


def url(layer: str, index: int | None = None) -> str:
    base = f"/models/{SLUG}/{layer}"
    return base if index is None else f"{base}/{index}"


def section(page: str, element_id: str, end: str = "</section>") -> str:
    """The HTML of the element with that id, up to ``end``."""
    start = page.index(f'id="{element_id}"')
    return page[start:page.index(end, start)]


def text_of(fragment: str) -> str:
    """An HTML fragment's text, as a browser shows it."""
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def contexts_in(page: str, group: str) -> list[list[dict]]:
    """Each context of the group (``top``, ``random``) as the page shows it: its tokens' text, value, shade, marks."""
    blocks = section(page, f"{group}-contexts").split('<li class="ctx">')[1:]
    return [[{"text": html.unescape(m["text"].replace(NEWLINE_MARK, "")), "title": m["title"],
              "a": float(m["a"] or 0), "minus": bool(m["minus"]), "mark": bool(m["mark"])}
             for m in TOKEN.finditer(block)] for block in blocks]


def test_model_page_says_sparsity_loss_tasks_training_and_tokenizer(client: httpx.Client):
    body = assert_twin(client, f"/models/{SLUG}")
    assert body["model"]["kind"] == "language"
    assert body["model"]["card"] == {str(k): v for k, v in CARD.items()}
    assert [l["name"] for l in body["layers"]] == [name for name, _, _ in layer_names()]
    page = client.get(f"/models/{SLUG}").text
    sparsity, heldout = CARD[CardKey.SPARSITY], CARD[CardKey.HELDOUT]
    assert "sparse weights" in page and f"{sparsity['nonzero_fraction']:.2%}" in page
    assert f"{heldout['loss']:.4g}" in page and "nats/token" in page
    assert f"{heldout['tokens']:,} tokens" in page and heldout["corpus_sha256"] in page
    for name, w in sparsity["matrices"].items():
        assert re.search(rf"<code>{re.escape(name)}</code>.*?{w['nonzero']}.*?{w['fraction']:.2%}", page, re.S)
    tasks = section(page, "task-table", "</table>")
    for name, task in CARD[CardKey.TASKS].items():
        assert re.search(rf"<td>{name}</td><td class=\"r\">{task['accuracy']:.1%}</td>", tasks)
    assert CARD[CardKey.TRAINING]["command"] in page and "took 25 min 34 s" in page
    assert CARD[CardKey.TOKENIZER]["name"] in page and CARD[CardKey.WEIGHTS]["sha256"] in page
    assert "measured</th>" in page  # its layers are measured, not rendered


def test_neuron_twin_has_ranked_contexts_activation_logit_effects_and_edges(client: httpx.Client):
    body = assert_twin(client, url(*NEURON))
    assert body["rendered"] and not {"stats", "images", "examples"} & set(body)  # a vision unit's fields
    top, random = body["contexts"]["top"], body["contexts"]["random"]
    assert [c["rank"] for c in top] == list(range(20)) and [c["rank"] for c in random] == list(range(5))
    assert [c["activation"] for c in top] == sorted((c["activation"] for c in top), reverse=True)
    known = top[0]  # the context the fixture made the neuron's strongest is listed first
    assert (known["tokens"], known["position"], known["document"]) == (KNOWN_TOKENS, KNOWN_PEAK, KNOWN_DOCUMENT)
    assert known["activation"] == known["values"][KNOWN_PEAK] == TOP_MAX and known["values"][KNOWN_NEGATIVE] < 0
    assert all(len(c["values"]) == len(c["tokens"]) for c in top + random)
    assert body["contexts"]["scale"] == TOP_MAX
    activation = body["activation"]
    assert (activation["density"], activation["max"], activation["n"]) == (0.12, TOP_MAX, 262144)
    assert activation["histogram"] == HISTOGRAM and activation["top_tokens"] == [" <", "\n", "né"]
    assert body["logit_effects"] == LOGIT_EFFECTS
    reads = {(e["unit"]["layer"], e["unit"]["index"]): e["weight"] for e in body["edges"]["in"]["shown"]}
    writes = {(e["unit"]["layer"], e["unit"]["index"]): e["weight"] for e in body["edges"]["out"]["shown"]}
    mid, post = f"0.{LayerKind.RESID_MID}", f"1.{LayerKind.RESID_PRE}"
    assert reads == {(mid, 1): 0.7, (mid, 2): -0.4, (mid, 5): 0.25}
    assert writes == {(post, 0): 1.2, CHANNEL: -0.9}


def test_neuron_page_shows_what_its_twin_says(client: httpx.Client):
    body = client.get(url(*NEURON) + ".json").json()
    page = client.get(url(*NEURON)).text
    for group in ("top", "random"):
        shown = contexts_in(page, group)
        assert len(shown) == len(body["contexts"][group])
        for tokens, context in zip(shown, body["contexts"][group]):
            assert [t["text"] for t in tokens] == context["tokens"]
            assert [t["title"] for t in tokens] == [f"{v:.4g}" for v in context["values"]]
            assert [t["minus"] for t in tokens] == [v < 0 for v in context["values"]]
            assert [i for i, t in enumerate(tokens) if t["mark"]] == [context["position"]]
            assert [t["a"] for t in tokens] == [round(abs(v) / TOP_MAX, 2) if abs(v) / TOP_MAX >= 0.005 else 0
                                                for v in context["values"]]
    known = contexts_in(page, "top")[0]
    assert known[KNOWN_PEAK]["a"] == 1.0 and known[KNOWN_NEGATIVE]["minus"] and known[KNOWN_NEGATIVE]["a"] > 0
    top = section(page, "top-contexts")
    assert top.index(KNOWN_DOCUMENT) < top.index("lib/m1.py")  # rank 0 first
    assert "".join(KNOWN_TOKENS).replace("\n", "") in html.unescape(re.sub(r"<[^>]+>", "", top)).replace("\n", "")

    activation = section(page, "activation")
    assert "12.00%" in activation and "262,144" in activation and "4.5" in activation
    assert activation.count("<rect ") == len(HISTOGRAM["counts"])
    assert f"{HISTOGRAM['clipped']} beyond the edges" in activation
    assert all(f"{count}</title>" in activation for count in HISTOGRAM["counts"])
    effects = section(page, "logit-effects")
    for side in ("promoted", "suppressed"):
        listed = re.findall(r'<code class="tok" title="token (\d+)">(.*?)</code>', effects.split(f'id="{side}"')[1]
                            .split("</table>")[0])
        assert [(int(i), text_of(t)) for i, t in listed] == [
            (e["id"], e["token"].translate(MARKS).replace("\x13", "<0x13>")) for e in LOGIT_EFFECTS[side]]


def test_tokens_are_escaped_and_newlines_kept(client: httpx.Client):
    page = client.get(url(*NEURON)).text
    top = section(page, "top-contexts")
    assert 'title="4.5"> &lt;</span>' in top  # the peak token " <", escaped, outlined by its class
    assert '"> &#34;</span>' in top and '">né</span>' in top and '">λ</span>' in top  # quotes escaped, text kept
    assert '<i class="nl"></i>\n' in top  # the source's newline stays a newline, marked for the eye
    assert '<code class="tok" title="token 301"><span class="ws">␣</span>&lt;</code>' in page  # whitespace marked
    assert " <" not in re.sub(r"<[a-z/!][^>]*>", "", page)  # no raw "<" outside tags anywhere on the page


def byte_mark(text: str) -> str:
    """A byte or an invisible character as pages mark it: by number, in a span set apart from the token's text."""
    return f'<span class="byte">{html.escape(text)}</span>'


def test_bytes_invisible_characters_and_whitespace_show_as_marks_wherever_tokens_appear(client: httpx.Client):
    """A byte no character completes (stored <0xC3>), a control or invisible character and whitespace show as marks
    set apart from text, in contexts, the tokens a unit peaks on, logit effects and the layer's table: no token is
    blank, none shows "�" or a missing-glyph box. The twin keeps the texts as stored."""
    body = client.get(url(*CHANNEL) + ".json").json()
    assert body["contexts"]["top"][0]["tokens"] == ODD_TOKENS and body["logit_effects"] == LOGIT_EFFECTS
    page, table = client.get(url(*CHANNEL)).text, client.get(url(CHANNEL[0])).text
    for shown in (page, table):
        assert not any(char in shown for char in ("\x13", "\x0f", "\u200b", "\ufffd"))

    context = section(page, "top-contexts").split('<li class="ctx">')[1]
    tokens = re.findall(r'<span class="t[^"]*"[^>]*>(.*?)</span>(?=<span class="t|</code>)', context, re.S)
    assert tokens == ["x", " =", " &#39;", byte_mark("<0xC3>"), byte_mark("<0x87>"), "&#39;", " +", " &#39;",
                      byte_mark("<0x13>"), byte_mark("<U+200B>"), "&#39;", NEWLINE_MARK + "\n", "    ", "y"]

    space = '<span class="ws">{}</span>'.format
    peaks = "".join(f'<code class="chip tok">{chip}</code>' for chip in (
        space("␣") + "x", "λ", byte_mark("<0xC5>"), byte_mark("<0x0F>"), space("␣␣␣␣")))
    assert peaks in section(page, "activation") and peaks in table
    effects = section(page, "logit-effects")
    for token_id, mark in ((121, byte_mark("<0xBC>")), (208, byte_mark("<0x13>")), (4, space("␣")), (5, space("→")),
                           (3, space("⏎"))):
        assert f'<code class="tok" title="token {token_id}">{mark}</code>' in effects


def test_dense_card_loss_layer_shape_and_random_contexts_say_what_they_are(client: httpx.Client):
    """The dense model's card says it is dense (not "100.00% of its sparse matrices"); held-out losses have three
    decimals everywhere (2.350, not 2.35 beside 2.346); a layer's shape says it is an activation's shape per token;
    random contexts are described as drawn: where the unit is nonzero, of either sign."""
    dense = client.get(f"/models/{DENSE_SLUG}").text
    assert "sparse matrices" not in dense and "of the weights nonzero" not in dense
    assert "Dense: its matrices are not pruned (100.00% of their weights are nonzero)." in text_of(dense)
    assert '<span class="metric-value">dense</span><span class="metric-name">weights, none pruned</span>' in dense
    sparse = client.get(f"/models/{SLUG}").text
    assert "Weight-sparse: 6.12% of the weights of its sparse matrices are nonzero (target 6.25%)." in text_of(sparse)
    for page, loss in ((dense, "2.350"), (sparse, "2.346")):
        assert f'<span class="metric-value">{loss}</span><span class="metric-name">held-out loss' in page
    layer = text_of(client.get(url(NEURON[0])).text)
    assert f"{D_MLP} units · activation shape {D_MLP} per token" in " ".join(layer.split())
    random = section(client.get(url(*NEURON)).text, "random-contexts")
    assert "drawn at random from the tokens where it is nonzero, either sign" in random


def test_connections_link_to_units_that_link_back(client: httpx.Client):
    body = client.get(url(*NEURON) + ".json").json()
    page = client.get(url(*NEURON)).text
    for direction, back in (("in", "out"), ("out", "in")):
        for edge in body["edges"][direction]["shown"]:
            other = edge["unit"]
            link = rf'<a href="{re.escape(other["url"])}">{re.escape(other["layer"])}:{other["index"]}</a></td>\s*'
            sign, weight = re.search(link + r'<td class="r (pos|neg)">([^<]*)</td>', page).groups()
            assert (sign == "neg") == (edge["weight"] < 0) and float(weight) == edge["weight"]
            assert client.get(other["url"]).status_code == 200
            linked = client.get(other["json_url"]).json()["edges"][back]["shown"]
            assert any(e["unit"]["url"] == body["url"] and e["weight"] == edge["weight"] for e in linked)


def test_residual_channel_lists_every_edge(client: httpx.Client):
    """A language model's unit lists all its weights, well past the 24 a vision unit shows."""
    body = assert_twin(client, url(*CHANNEL))
    out = body["edges"]["out"]
    assert out["total"] == len(out["shown"]) == 30
    assert [abs(e["weight"]) for e in out["shown"]] == sorted((abs(e["weight"]) for e in out["shown"]), reverse=True)
    assert body["logit_effects"] == LOGIT_EFFECTS and len(body["contexts"]["top"]) == 20
    page = client.get(url(*CHANNEL)).text
    assert "(all 30)" in page and page.count('<td class="r neg">') + page.count('<td class="r pos">') >= 31
    for edge in out["shown"]:
        assert f'href="{edge["unit"]["url"]}"' in page


def test_query_channel_has_no_logit_effects(client: httpx.Client):
    body = assert_twin(client, url(*QUERY))
    assert body["logit_effects"] is None and body["activation"]["density"] == 0.25
    page = client.get(url(*QUERY)).text
    assert "Logit effects" not in page and "Top contexts" in page and "Activation" in page


def test_unmeasured_and_dead_units(client: httpx.Client):
    body = client.get(url(*UNMEASURED) + ".json").json()
    assert not body["rendered"] and (body["activation"], body["contexts"], body["logit_effects"]) == (None,) * 3
    assert "Not measured yet" in client.get(url(*UNMEASURED)).text
    dead = client.get(url(*DEAD) + ".json").json()
    assert dead["rendered"] and dead["activation"]["density"] == 0 and dead["contexts"] is None
    assert dead["activation"]["histogram"] == {"edges": [], "counts": [], "clipped": 0}
    page = client.get(url(*DEAD)).text
    assert "0.00%" in section(page, "activation") and "<svg" not in page


def test_dotted_layer_names_reach_the_json_routes(client: httpx.Client):
    layer = client.get(url(NEURON[0]) + ".json")
    assert layer.status_code == 200 and layer.headers["content-type"] == "application/json"
    assert layer.json()["layer"]["name"] == NEURON[0]
    unit = client.get(url(*NEURON) + ".json")
    assert unit.headers["content-type"] == "application/json" and unit.json()["index"] == NEURON[1]


def expected_order(sort: str, descending: bool) -> list[int]:
    """The neuron layer's units sorted as the fixture made them, unmeasured last."""
    stats = {i: layer_stats(i) for i in range(D_MLP) if (NEURON[0], i) != UNMEASURED}
    stats[NEURON[1]] = {"density": 0.12, "max": TOP_MAX}
    measured = sorted(stats, key=lambda i: (-stats[i][sort] if descending else stats[i][sort], i))
    return measured + [UNMEASURED[1]]


def test_layer_table_sorts_on_the_server(client: httpx.Client):
    body = assert_twin(client, url(NEURON[0]))
    assert (body["sort"], body["order"]) == ("index", "asc")
    assert [u["index"] for u in body["units"]] == list(range(D_MLP))
    assert body["layer"]["n_rendered"] == D_MLP - 1
    row = body["units"][NEURON[1]]
    assert (row["density"], row["max"], row["top_tokens"]) == (0.12, TOP_MAX, [" <", "\n", "né"])
    assert body["units"][UNMEASURED[1]]["density"] is None
    density = next(s for s in body["sorts"] if s["sort"] == "density")
    assert density["order"] == "desc" and not density["current"]
    by_density = assert_twin(client, density["url"])
    assert density["url"] == url(NEURON[0]) + "?sort=density"
    assert [u["index"] for u in by_density["units"]] == expected_order("density", descending=True)
    page = client.get(density["url"]).text
    rows = re.findall(r'<tr>\s*<td><a href="([^"]+)">(\d+)</a>', page)
    assert [int(i) for _, i in rows] == expected_order("density", descending=True)
    assert all(href == url(NEURON[0], int(i)) for href, i in rows)
    assert 'aria-sort="descending"' in page and "12.00%" in page
    flipped = next(s for s in by_density["sorts"] if s["sort"] == "density")
    assert flipped["current"] and flipped["order"] == "asc"
    ascending = client.get(flipped["json_url"]).json()
    assert [u["index"] for u in ascending["units"]] == expected_order("density", descending=False)
    by_max = client.get(url(NEURON[0]) + ".json", params={"sort": "max"}).json()
    assert [u["index"] for u in by_max["units"]] == expected_order("max", descending=True)


def test_sorted_pages_split_one_order(lm_atlas: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ATLASCOPE_PER_PAGE", "5")
    client = TestClient(create_app(lm_atlas))
    first = client.get(url(NEURON[0]) + ".json", params={"sort": "density"}).json()
    assert first["page"]["pages"] == 4
    seen = []
    for link in first["page"]["all"]:
        assert "sort=density" in link["json_url"]
        seen += [u["index"] for u in client.get(link["json_url"]).json()["units"]]
    assert seen == expected_order("density", descending=True)


def test_bad_sort_and_order_are_404s_that_say_why(client: httpx.Client):
    layer = url(NEURON[0])
    for params, message in (({"sort": "nope"}, f"sort 'nope' not found: layer '{NEURON[0]}' sorts by index, "
                                                "density, max"),
                            ({"sort": "density", "order": "up"}, "order 'up' not found: it is asc or desc")):
        for path in (layer, layer + ".json"):
            response = client.get(path, params=params, headers={"Accept": "application/json"})
            assert response.status_code == 404 and response.json()["error"]["message"] == message


def test_jump_to_unit_redirects(client: httpx.Client):
    layer = url(NEURON[0])
    page = client.get(layer).text
    assert f'<form class="jump" method="get" action="{layer}"' in page and 'name="unit"' in page
    for path, target in ((layer, url(*NEURON)), (layer + ".json", url(*NEURON) + ".json")):
        jump = client.get(path, params={"unit": str(NEURON[1])})
        assert jump.status_code == 303 and jump.headers["location"] == target
    for bad, message in (("16", f"unit 16 out of range: layer {NEURON[0]} has 16 units (0–15)"),
                         ("x", "unit 'x' not found: units are numbered 0, 1, 2, ...")):
        response = client.get(layer + ".json", params={"unit": bad})
        assert response.status_code == 404 and response.json()["error"]["message"] == message


def test_index_counts_measured_units(client: httpx.Client):
    model = next(m for m in assert_twin(client, "/")["models"] if m["slug"] == SLUG)
    assert model["n_rendered"] == (D_MLP - 1) + 2  # the neuron layer but one, the channel and the query
