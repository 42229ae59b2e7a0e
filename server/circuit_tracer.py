"""A task circuit as circuit-tracer's graph JSON, at ``/models/{model}/circuits/{task}/graph.json``.

circuit-tracer (github safety-research/circuit-tracer) writes attribution graphs in this format and Neuronpedia's graph
viewer reads it, which makes it the common way to hand a circuit to another tool: ``{metadata, qParams, nodes,
links}``. Its graphs are of transcoder features at token positions; a pruned circuit is of model channels acting at
every position, so the mapping is:

- ``layer``: the node's column in forward order, as a string (the circuit page's columns: 1 + block x 8 + the kind's
  place among ``store.keys.CIRCUIT_NODE_KINDS``); ``"E"`` for the embeddings, the last column for the logits.
- ``feature``: the unit's index in its atlas layer (an embedding's: its residual channel; a logit's: the candidate's
  place among the task's two), so ``/models/{scan}/{clerp's layer}/{feature}`` is the unit's page.
- ``feature_type``: ``embedding`` and ``logit`` as circuit-tracer writes them; a model channel is written as
  ``cross layer transcoder``, the one type viewers treat as an interpretable node, and its ``clerp`` says which
  channel it really is (``1.mlp.post_act:7``) and the tokens it peaks on.
- ``ctx_idx``: the prompt's last position, where the candidates are scored (the circuit acts at every position).
- ``links``: every weight of the circuit, the residual links from writes and the embedding to later reads (weight 1:
  an identity), and the logit reads. ``metadata.prompt`` is the circuit's first held-out example; ``qParams`` pins
  the kept nodes and the logits, which are the whole circuit.

A circuit pruning did not find (no k met the target) exports no nodes but the two logits, and ``metadata.info``
says ``met: false``: the best k reached is not a circuit.

``?k=`` exports the circuit at another k its page offers (``server.pages.circuit_views``). The page keeps the
reader's view in its URL in this format's terms (``pinnedIds``, ``supernodes``, ``clerps``, naming nodes by their
``node_id``, which the page's twin gives each node as ``tracer_id``); given them, the export writes them into its
``qParams`` instead of pinning the whole circuit, so a view the reader made carries over to other tools.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import Field
from sqlalchemy.orm import Session

from server.circuit_wiring import Node, Wiring, is_met, wiring_at
from server.errors import BadRequest
from server.pages.circuit_views import chosen_k
from server.pages.common import echo, find_circuit, find_model
from server.twins import Twin
from server.urls import circuit_url
from store.keys import CircuitKey

SCHEMA_VERSION = 1  # circuit-tracer's graph format version this writes
CLERP_TOKENS = 5  # top tokens named in a node's label
UNIT_TYPE, EMBEDDING_TYPE, LOGIT_TYPE = "cross layer transcoder", "embedding", "logit"
EMBEDDING_LAYER = "E"


class TracerMetadata(Twin):
    slug: str = Field(description="The graph's name: `{model}-{task}`.")
    scan: str = Field(description="What the graph is of: the model's slug.")
    prompt: str = Field(description="The first held-out example's prompt.")
    prompt_tokens: list[str] = Field(description="That prompt as the model reads it.")
    transcoder_list: list[str] = Field(description="Empty: the nodes are the model's own channels.")
    node_threshold: float | None = Field(description="Null: pruning, not an attribution threshold, chose the nodes.")
    schema_version: int
    info: dict[str, Any] = Field(description="Where the graph comes from: the atlas's circuit page and its numbers.")


class TracerQParams(Twin):
    pinnedIds: list[str] = Field(description="The page's pinned nodes (`?pinnedIds=`); without them, the kept nodes "
                                             "and the logits: the whole circuit.")
    supernodes: list[list[str]] = Field(description="The page's groups (`?supernodes=`): `[name, node_id, ...]`.")
    clerps: list[list[str]] = Field(description="The page's own labels (`?clerps=`): `[node_id, label]`.")
    linkType: str
    clickedId: str
    sg_pos: str


class TracerNode(Twin):
    node_id: str = Field(description="`{layer}_{feature}_{ctx_idx}`, unique.")
    feature: int = Field(description="The unit's index in its layer; a logit's: the candidate's place (0, 1).")
    layer: str = Field(description="The column in forward order; `E` for the embeddings.")
    ctx_idx: int = Field(description="The prompt's last position.")
    feature_type: str = Field(description="`embedding`, `logit`, or `cross layer transcoder` for a model channel.")
    token_prob: float = Field(description="A logit's probability over the two candidates, full model, on the prompt.")
    is_target_logit: bool = Field(description="Whether this logit is the prompt's correct candidate.")
    run_idx: int
    reverse_ctx_idx: int
    jsNodeId: str = Field(description="The id viewers use for the node, unique.")
    clerp: str = Field(description="A label: the atlas layer and index, and the tokens the unit peaks on.")
    influence: float | None
    activation: float | None


class TracerLink(Twin):
    source: str = Field(description="A `node_id`.")
    target: str = Field(description="A `node_id`.")
    weight: float


class TracerGraph(Twin):
    """A circuit in circuit-tracer's graph JSON (github safety-research/circuit-tracer), as Neuronpedia reads it."""

    metadata: TracerMetadata
    qParams: TracerQParams
    nodes: list[TracerNode]
    links: list[TracerLink]


def first_prompt(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """The held-out example the graph's metadata and positions are of."""
    return examples[0] if examples else {"tokens": [], "correct": None, "full": None}


def tracer_ids(wiring: Wiring, examples: list[dict[str, Any]]) -> tuple[dict[tuple[str, int], str], dict[str, str]]:
    """Each unit node's and each candidate logit's ``node_id`` (the page's URL state names nodes by it too)."""
    position = max(len(first_prompt(examples)["tokens"]) - 1, 0)
    return ({(node.layer, node.index): node_id(node_layer(node), node.index, position)
             for node in wiring.embeddings + wiring.nodes},
            {token: node_id(str(wiring.logit_column), place, position) for place, token in enumerate(wiring.candidates)})


def tracer_graph(session: Session, slug: str, task: str, k: str | None = None,
                 raw_state: tuple[str | None, str | None, str | None] = (None, None, None)) -> dict[str, Any]:
    """The circuit at k (``?k=``; the circuit's own k without it), with the page's URL state (``pinnedIds``,
    ``supernodes``, ``clerps``, as given: ``view_state`` reads them once the circuit is found, so a missing circuit
    is a 404 whatever they hold) as its ``qParams`` when given."""
    model = find_model(session, slug)
    circuit = find_circuit(session, model, task)
    found = is_met(circuit)
    shown = chosen_k(circuit, found, k)
    state = view_state(*raw_state)
    wiring = wiring_at(session, circuit, found, shown)[0]
    examples = (circuit.params or {}).get(CircuitKey.EXAMPLES) or []
    prompt = first_prompt(examples)
    position = max(len(prompt["tokens"]) - 1, 0)
    ids, logit_ids = tracer_ids(wiring, examples)
    return {
        "metadata": {"slug": f"{model.slug}-{circuit.slug}", "scan": model.slug, "prompt": "".join(prompt["tokens"]),
                     "prompt_tokens": prompt["tokens"], "transcoder_list": [], "node_threshold": None,
                     "schema_version": SCHEMA_VERSION,
                     "info": {"source": "atlascope", "url": circuit_url(model.slug, circuit.slug), "task": circuit.task,
                              "target_loss": circuit.target_loss, "loss": circuit.loss, "met": found,
                              "n_nodes": circuit.n_nodes if found else 0,
                              "n_edges": circuit.n_edges if found else 0, "k": shown}},
        "qParams": q_params(state, [ids[node.layer, node.index] for node in wiring.nodes] + list(logit_ids.values()),
                            set(ids.values()) | set(logit_ids.values())),
        "nodes": ([unit_node(node, position) for node in wiring.embeddings + wiring.nodes]
                  + [logit_node(str(wiring.logit_column), place, token, position, prompt)
                     for place, token in enumerate(wiring.candidates)]),
        "links": ([{"source": ids[src, i], "target": ids[dst, j], "weight": weight}
                   for src, i, dst, j, weight in wiring.edges]
                  + [{"source": ids[src, index], "target": ids[dst, index], "weight": 1.0}
                     for src, dst, index in wiring.residual]
                  + [{"source": ids[read["layer"], read["index"]], "target": logit_ids[read["token"]],
                      "weight": read["weight"]} for read in wiring.logits]),
    }


@dataclass(frozen=True)
class ViewState:
    """The circuit page's view as its URL holds it, in circuit-tracer's ``qParams`` terms: pinned ``node_id``s, named
    groups of them (supernodes) and labels the reader gave nodes (clerps)."""

    pinned: list[str]
    supernodes: list[list[str]]
    clerps: list[list[str]]


def view_state(pinned: str | None, supernodes: str | None, clerps: str | None) -> ViewState | None:
    """The state from the URL's ``pinnedIds`` (comma-separated ``node_id``s), ``supernodes`` (JSON: ``[[name,
    node_id, ...], ...]``) and ``clerps`` (JSON: ``[[node_id, label], ...]``); None when none is given. A value that
    is not of that shape is a 400 naming the parameter."""
    if pinned is None and supernodes is None and clerps is None:
        return None
    return ViewState([p for p in (pinned or "").split(",") if p], _lists("supernodes", supernodes, 1),
                     _lists("clerps", clerps, 2))


def _lists(name: str, raw: str | None, length: int) -> list[list[str]]:
    """A JSON list of lists of strings, each of at least (supernodes) or exactly (clerps) ``length`` strings."""
    if raw is None or not raw.strip():
        return []
    try:
        found = json.loads(raw)
    except ValueError:
        found = None
    shape = "[[name, node_id, ...], ...]" if length == 1 else "[[node_id, label], ...]"
    if not isinstance(found, list) or not all(
            isinstance(item, list) and all(isinstance(x, str) for x in item)
            and (len(item) >= length if length == 1 else len(item) == length) for item in found):
        raise BadRequest(f"{name} {echo(raw)} is not a JSON list of the form {shape}")
    return found


def q_params(state: ViewState | None, pinned_by_default: list[str], known: set[str]) -> dict[str, Any]:
    """circuit-tracer's ``qParams``: the page's state, with what names no node of the graph at this k left out
    (a group left empty goes too); without a state, the whole circuit pinned."""
    view = {"linkType": "both", "clickedId": "", "sg_pos": ""}
    if state is None:
        return {"pinnedIds": pinned_by_default, "supernodes": [], "clerps": [], **view}
    groups = ([name, *(member for member in members if member in known)] for name, *members in state.supernodes)
    return {"pinnedIds": [node for node in state.pinned if node in known],
            "supernodes": [group for group in groups if len(group) > 1],
            "clerps": [[node, label] for node, label in state.clerps if node in known], **view}


def node_layer(node: Node) -> str:
    return EMBEDDING_LAYER if node.column == 0 else str(node.column)


def node_id(layer: str, feature: int, position: int) -> str:
    return f"{layer}_{feature}_{position}"


def unit_node(node: Node, position: int) -> dict[str, Any]:
    """An embedding channel or a kept node, labelled with its atlas unit and the tokens it peaks on."""
    layer = node_layer(node)
    top = ", ".join(repr(token) for token in node.top_tokens[:CLERP_TOKENS])
    return tracer_node(node_id(layer, node.index, position), node.index, layer, position,
                       EMBEDDING_TYPE if node.column == 0 else UNIT_TYPE, f"{layer}_{node.index}-0",
                       f"{node.layer}:{node.index}" + (f" peaks on {top}" if top else ""))


def logit_node(layer: str, place: int, token: str, position: int, prompt: dict[str, Any]) -> dict[str, Any]:
    """A candidate's logit, with its probability (over the two) in the full model on the prompt."""
    p_correct = (prompt.get("full") or {}).get("p_correct")
    target = token == prompt["correct"]
    prob = 0.0 if p_correct is None else p_correct if target else 1 - p_correct
    label = f"Output {token!r}" + (f" (p={prob:.3f})" if p_correct is not None else "")
    return {**tracer_node(node_id(layer, place, position), place, layer, position, LOGIT_TYPE, f"L_{place}-{position}",
                          label), "token_prob": prob, "is_target_logit": target}


def tracer_node(node_id: str, feature: int, layer: str, position: int, feature_type: str, js_id: str,
                clerp: str) -> dict[str, Any]:
    return {"node_id": node_id, "feature": feature, "layer": layer, "ctx_idx": position, "feature_type": feature_type,
            "token_prob": 0.0, "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0, "jsNodeId": js_id,
            "clerp": clerp, "influence": None, "activation": None}
