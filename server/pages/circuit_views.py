"""The circuit page as an instrument: which k it shows, and what the job measured for the circuit at that k.

A found circuit whose order the job stored (``store.circuit_views``; its params have ``CircuitKey.VIEWS``) can be
shown at any k the job offers (``?k=``): each on the curve, so its loss is known. The page then shows the circuit at
k, the first k nodes of the order (``server.circuit_wiring.read_wiring_at``), and beside it

- the node count of every node layer at k;
- the loss with each block's attention or MLP nodes also ablated at k (``Probe.ABLATIONS``), against the loss at k;
- the nodes' activations on held-out contrastive pairs (``Probe.ACTIVATIONS``: the full model at the last position,
  so they are the same at every k; the page shows the rows of the nodes kept at k), with the pairs' tokens;
- the attention of the heads whose q, k or v channels are kept at k (``Probe.HEADS``).

An atlas written before the order was stored offers the circuit's own k only, with none of these.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from server.circuit_wiring import Wiring
from server.errors import NotFound
from server.pages.common import echo
from server.urls import circuit_url
from store.circuit_views import Probe, probes
from store.keys import CIRCUIT_NODE_KINDS, CircuitKey
from store.schema import Circuit

PROBES = select(probes.c.name, probes.c.value).where(probes.c.circuit_id == bindparam("circuit"),
                                                     probes.c.name.in_(bindparam("names", expanding=True)))
ATTENTION_KINDS = ("attn.q", "attn.k", "attn.v")


def offered(circuit: Circuit) -> list[int]:
    """The k's the circuit's page offers: the job's (``CircuitKey.VIEWS``), else the circuit's own."""
    views = (circuit.params or {}).get(CircuitKey.VIEWS)
    return list(views["ks"]) if views else [circuit.n_nodes]


def chosen_k(circuit: Circuit, found: bool, raw: str | None) -> int | None:
    """The k a page shows: ``?k=`` when given (one the page offers, else a 404 saying which it does), else the
    circuit's own; None for a circuit that was not found, which shows no nodes at any k."""
    if raw is None:
        return circuit.n_nodes if found else None
    if not found:
        raise NotFound(f"circuit {circuit.slug!r} was not found (no k met the target), so it has no view at k = "
                       f"{echo(raw)}")
    ks = offered(circuit)
    value = raw.strip()
    if not value.isdigit() or int(value) not in ks:
        raise NotFound(f"no view of circuit {circuit.slug!r} at k = {echo(raw)}: its page offers k = "
                       + ", ".join(f"{k:,}" for k in ks))
    return int(value)


def view_url(slug: str, circuit: Circuit, k: int) -> str:
    """The page at k; the circuit's own k is the page without ``?k=``."""
    url = circuit_url(slug, circuit.slug)
    return url if k == circuit.n_nodes else f"{url}?k={k}"


def k_view(slug: str, circuit: Circuit, k: int, n_edges: int, listed_edges: int,
           curve: dict[int, float]) -> dict[str, Any]:
    views = (circuit.params or {}).get(CircuitKey.VIEWS) or {}
    return {"k": k, "circuit_k": circuit.n_nodes, "total": views.get("nodes"), "loss": curve.get(k),
            "n_edges": n_edges, "edges_listed": listed_edges == n_edges,
            "listed_k": views.get("listed_k", circuit.n_nodes),
            "choices": [{"k": at, "loss": curve.get(at), "url": view_url(slug, circuit, at)}
                        for at in offered(circuit)]}


def layer_counts(wiring: Wiring) -> list[dict[str, Any]]:
    """Nodes of every node layer of the model at k, in forward order (zero where none is kept)."""
    blocks = (wiring.logit_column - 1) // len(CIRCUIT_NODE_KINDS)
    counts: dict[str, int] = {}
    for node in wiring.nodes:
        counts[node.layer] = counts.get(node.layer, 0) + 1
    return [{"layer": f"{block}.{kind}", "column": 1 + block * len(CIRCUIT_NODE_KINDS) + place,
             "nodes": counts.get(f"{block}.{kind}", 0)}
            for block in range(blocks) for place, kind in enumerate(CIRCUIT_NODE_KINDS)]


def group_of(layer: str) -> str:
    """A node layer's ablation group: its block's attention or MLP (``1.attn.q`` -> ``1.attn``)."""
    return ".".join(layer.split(".")[:2])


def read_probes(session: Session, circuit: Circuit, names: tuple[Probe, ...]) -> dict[str, Any]:
    return dict(session.execute(PROBES, {"circuit": circuit.id, "names": [str(name) for name in names]}).all())


def ablations(stored: dict[str, Any] | None, k: int, loss_at_k: float | None, wiring: Wiring) -> list[dict] | None:
    """Each group's bar at k; null when the job recorded none at this k."""
    at = dict((int(where), losses) for where, losses in (stored or {}).get("losses", []))
    if k not in at:
        return None
    counts: dict[str, int] = {}
    for node in wiring.nodes:
        counts[group_of(node.layer)] = counts.get(group_of(node.layer), 0) + 1
    return [{"group": group, "nodes": counts.get(group, 0), "loss": loss,
             "delta": None if loss is None or loss_at_k is None else loss - loss_at_k}
            for group, loss in zip(stored["groups"], at[k], strict=True)]


def activations(pairs: list[dict] | None, stored: dict[str, Any] | None, wiring: Wiring,
                urls: dict[tuple[str, int], str]) -> dict[str, Any] | None:
    """The pairs and the rows of the nodes kept at k among those the job read, by rank."""
    if not pairs or not stored:
        return None
    values = stored["values"]
    rows = sorted((node for node in wiring.nodes if node.rank is not None and node.rank < len(values)),
                  key=lambda node: node.rank)
    return {"pairs": [{key: pair[key] for key in ("tokens", "answers", "p_correct")} for pair in pairs],
            "stored_nodes": stored["nodes"],
            "nodes": [{"layer": node.layer, "index": node.index, "rank": node.rank,
                       "url": urls[node.layer, node.index], "values": values[node.rank]} for node in rows]}


def heads(stored: list[dict] | None, wiring: Wiring, d_head: int | None) -> list[dict] | None:
    """The recorded heads with a q, k or v channel kept at k, in the order the job recorded them."""
    if stored is None or not d_head:
        return None
    channels: dict[tuple[int, int], int] = {}
    for node in wiring.nodes:
        if node.layer.split(".", 1)[1] in ATTENTION_KINDS:
            key = (int(node.layer.split(".")[0]), node.index // d_head)
            channels[key] = channels.get(key, 0) + 1
    return [{"block": head["block"], "head": head["head"], "channels": channels[head["block"], head["head"]],
             "patterns": head["patterns"], "sink": head["sink"]}
            for head in stored if (head["block"], head["head"]) in channels]


def instrument(session: Session, slug: str, circuit: Circuit, k: int, n_edges: int, curve: dict[int, float],
               wiring: Wiring, urls: dict[tuple[str, int], str]) -> dict[str, Any]:
    """The page's fields for the view at k: ``view``, ``layers``, ``ablations``, ``activations``, ``heads``."""
    views = (circuit.params or {}).get(CircuitKey.VIEWS)
    found = read_probes(session, circuit, (Probe.ABLATIONS, Probe.PAIRS, Probe.ACTIVATIONS, Probe.HEADS)) \
        if views else {}
    return {
        "view": k_view(slug, circuit, k, n_edges, len(wiring.edges), curve),
        "layers": layer_counts(wiring),
        "ablations": ablations(found.get(Probe.ABLATIONS), k, curve.get(k), wiring),
        "activations": activations(found.get(Probe.PAIRS), found.get(Probe.ACTIVATIONS), wiring, urls),
        "heads": heads(found.get(Probe.HEADS), wiring, (views or {}).get("d_head")) if views else None,
    }
