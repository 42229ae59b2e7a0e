"""The comparison page's drawings: a dense model's circuit and a weight-sparse model's, for the same task at the same
task loss, drawn side by side at one scale, so the difference in edges is something the eye sees.

Each pair the comparison compares (``server.pages.tasks.pair``) at a loss is drawn from each circuit at the k its
sizes give at that loss: the circuit itself at the target, or the first k nodes of its stored order at another loss
(``store.circuit_views``; an atlas from before stored orders draws the circuits at the target only). Every node is a
dot in its layer's column (the columns of both drawings are the same), every weight between kept nodes a line, so
a circuit with sixteen times the weights is sixteen times as dense on the page. The drawing is plain SVG made by the
template (``templates/circuit/side_by_side.html``), with no script.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from server.circuit_wiring import Wiring, is_met, read_wiring_at, wiring_at
from server.pages.circuit_views import view_url
from server.pages.common import model_ref
from store.keys import CircuitKey
from store.schema import Circuit, Model

MOST_EDGES = 8000  # weights drawn per circuit at most (a dense circuit's strongest); the count says how many there are


def drawing(session: Session, circuit: Circuit, model: Model, k: int) -> dict[str, Any] | None:
    """One circuit at k as dots in columns and lines between them; None when the atlas cannot show it at k."""
    if k == circuit.n_nodes and is_met(circuit):
        wiring, n_edges = wiring_at(session, circuit, True, k)
    elif (circuit.params or {}).get(CircuitKey.VIEWS) and 0 < k <= circuit.params[CircuitKey.VIEWS]["nodes"]:
        wiring, n_edges = read_wiring_at(session, circuit, k)
    else:
        return None
    return {"model": model_ref(model), "url": view_url(model.slug, circuit, k), "k": k, "n_edges": n_edges,
            **layout(wiring)}


def layout(wiring: Wiring) -> dict[str, Any]:
    """Nodes as (column, row): each column's nodes in index order; edges as indices into the nodes, strongest first."""
    rows: dict[int, int] = {}
    place: dict[tuple[str, int], int] = {}
    nodes = []
    for node in wiring.nodes:  # in forward order, then index
        row = rows.get(node.column, 0)
        rows[node.column] = row + 1
        place[node.layer, node.index] = len(nodes)
        nodes.append({"layer": node.layer, "index": node.index, "column": node.column, "row": row})
    edges = [{"src": place[src, i], "dst": place[dst, j], "weight": weight}
             for src, i, dst, j, weight in wiring.edges[:MOST_EDGES]]
    return {"nodes": nodes, "edges": edges, "rows": max(rows.values(), default=0)}


def side_by_side(session: Session, circuits: list[tuple[Circuit, Model]], pairs: list[dict]) -> list[dict[str, Any]]:
    """For each pair compared at a loss, both circuits drawn at that loss (either may be null: see ``drawing``)."""
    by_slug = {model.slug: (circuit, model) for circuit, model in circuits}
    out = []
    for pair in pairs:
        if pair["loss"] is None:
            continue
        sides = {side: drawing(session, *by_slug[pair[side]["slug"]], pair[f"{side}_size"]["nodes"])
                 for side in ("dense", "sparse")}
        columns = sorted({node["column"] for side in sides.values() if side for node in side["nodes"]})
        out.append({"loss": pair["loss"], "at_target": pair["at_target"], "columns": columns,
                    "rows": max((side["rows"] for side in sides.values() if side), default=0), **sides})
    return out
