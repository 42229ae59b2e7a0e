"""The wiring of a stored task circuit, as both its page and its circuit-tracer export draw it: kept nodes in forward
order, the weights between them, and the links the store leaves to the reader.

The store keeps a circuit's nodes (``circuit_nodes``) and the nonzero weights between them (``edges`` with its
``circuit_id``). Two kinds of link carry no weight and are derived here instead:

- residual links: a kept write channel c (``attn.out``, ``mlp.out``) reaches every later kept read channel c
  (``attn.act_in``, ``mlp.act_in``) through the residual stream, and every kept read channel c also reads the
  embedding's channel c (unit c of ``0.resid_pre``), which the graph shows as an embedding node;
- logit links: the two candidates' unembedding rows read the kept write channels (``CircuitKey.LOGITS``; a read of
  a channel the circuit does not keep would point at no node, and is left out).

A circuit whose stored order the job kept (``store.circuit_views``) is read at any k from it instead
(``read_wiring_at``): its first k nodes, and the weights whose later end is among them.

Columns order the graph: the embeddings first, then each block's node layers in ``CIRCUIT_NODE_KINDS`` order, then the
candidates' logits.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from store.circuit_views import Probe, order_edges, order_rows, probes
from store.keys import CIRCUIT_NODE_KINDS, CircuitKey, LayerKind, Stat
from store.schema import Circuit, CircuitNode, Edge, Layer, Unit

EMBEDDING_LAYER = f"0.{LayerKind.RESID_PRE}"  # the residual stream block 0 reads: the token embeddings
READ_KINDS = (LayerKind.ATTN_IN, LayerKind.MLP_IN)
WRITE_KINDS = (LayerKind.ATTN_OUT, LayerKind.MLP_OUT)

# A large circuit has thousands of nodes, each unit with statistics (a histogram, logit effects) and its contexts
# stored as JSON: the queries take the few values a page shows out of that JSON in SQLite (one small JSON array per
# row), rather than handing every document to Python to parse whole. Edges are read by the circuit's index alone,
# strongest first, and named from the nodes already read, with no join.
BRIEF = func.json_extract(Unit.stats, f"$.{Stat.DENSITY}", f"$.{Stat.MAX}", f"$.{Stat.TOP_TOKENS}")
NODES = (select(CircuitNode.score, Unit.id, Unit.index, BRIEF, Layer.name, Layer.kind)
         .join(Unit, Unit.id == CircuitNode.unit_id).join(Layer, Layer.id == Unit.layer_id)
         .where(CircuitNode.circuit_id == bindparam("circuit")))
EMBEDDINGS = (select(Unit.id, Unit.index, BRIEF).join(Layer, Layer.id == Unit.layer_id)
              .where(Layer.model_id == bindparam("model"), Layer.name == EMBEDDING_LAYER,
                     Unit.index.in_(bindparam("channels", expanding=True))))
EDGES = (select(Edge.src_unit_id, Edge.dst_unit_id, Edge.weight).where(Edge.circuit_id == bindparam("circuit"))
         .order_by(func.abs(Edge.weight).desc(), Edge.src_unit_id, Edge.dst_unit_id))
UNITS = (select(Unit.id, Layer.name, Unit.index).join(Layer, Layer.id == Unit.layer_id)
         .where(Unit.id.in_(bindparam("units", expanding=True))))
# The circuit at k from its stored order: the first k nodes, and the weights whose later end is among them
NODES_AT = (select(order_rows.c.rank, order_rows.c.tau, Unit.id, Unit.index, BRIEF, Layer.name, Layer.kind)
            .join(Unit, Unit.id == order_rows.c.unit_id).join(Layer, Layer.id == Unit.layer_id)
            .where(order_rows.c.circuit_id == bindparam("circuit"), order_rows.c.rank < bindparam("k")))
MOST_LISTED_EDGES = 20_000  # the strongest weights a view at k lists; past them it counts (a dense model's at a large k)
EDGES_AT = (select(order_edges.c.src_rank, order_edges.c.dst_rank, order_edges.c.weight)
            .where(order_edges.c.circuit_id == bindparam("circuit"), order_edges.c.appears < bindparam("k"))
            .order_by(func.abs(order_edges.c.weight).desc(), order_edges.c.src_rank, order_edges.c.dst_rank)
            .limit(MOST_LISTED_EDGES))
EDGES_COUNTED = select(func.sum(order_rows.c.edges_in)).where(order_rows.c.circuit_id == bindparam("circuit"),
                                                              order_rows.c.rank < bindparam("k"))
PROBE = select(probes.c.value).where(probes.c.circuit_id == bindparam("circuit"), probes.c.name == bindparam("name"))
BLOCKS = select(func.count()).select_from(Layer).where(Layer.model_id == bindparam("model"),
                                                        Layer.kind == LayerKind.RESID_PRE)


@dataclass(frozen=True, slots=True)
class Node:
    unit_id: int
    layer: str
    kind: str
    index: int
    column: int
    tau: float | None
    density: float | None = None  # the unit's statistics a brief shows; null (and no top tokens) until measured
    max: float | None = None
    top_tokens: tuple[str, ...] = ()
    rank: int | None = None  # its place in the circuit's stored order (store.circuit_views), when read from it

    @property
    def measured(self) -> bool:
        return self.density is not None or self.max is not None or bool(self.top_tokens)


@dataclass(frozen=True)
class Wiring:
    nodes: list[Node]  # kept nodes, in forward order
    embeddings: list[Node]  # the embedding's channels that feed kept read channels
    edges: list[tuple[str, int, str, int, float]]  # (src layer, index, dst layer, index, weight), strongest first
    residual: list[tuple[str, str, int]]  # (src layer, dst layer, channel): writes or the embedding to later reads
    logits: list[dict[str, Any]]  # {"layer", "index", "token", "weight"}: kept write channels to a candidate's logit
    candidates: list[str]  # the task's two candidate tokens
    logit_column: int


@lru_cache(maxsize=4096)
def column(layer: str) -> int:
    """A node layer's column: 1 + its block's offset + its kind's place in the block (the embeddings are 0)."""
    block, _, kind = layer.partition(".")
    return 1 + int(block) * len(CIRCUIT_NODE_KINDS) + CIRCUIT_NODE_KINDS.index(LayerKind(kind))


def brief_values(extracted: str | None) -> tuple[float | None, float | None, tuple[str, ...]]:
    """(density, max, top tokens) from ``BRIEF``'s JSON array."""
    density, top, tokens = json.loads(extracted) if extracted else (None, None, None)
    return density, top, tuple(tokens or ())


def is_met(circuit: Circuit) -> bool:
    """Whether pruning found the circuit: some k met the target on the pruning pairs. A row whose params lack the
    flag (an early atlas) is met when its loss is within its target."""
    met = ((circuit.params or {}).get(CircuitKey.TARGET) or {}).get("met")
    return circuit.loss <= circuit.target_loss if met is None else bool(met)


def read_wiring(session: Session, circuit: Circuit, found: bool = True) -> Wiring:
    """The circuit's nodes, edges and links; none for a circuit that was not found (``found=False``), which an early
    atlas may still store the nodes of: they were the best k reached, not a circuit, and are never shown as one."""
    rows = session.execute(NODES, {"circuit": circuit.id}) if found else ()
    nodes = [Node(unit_id, layer, kind, index, column(layer), tau, *brief_values(extracted))
             for tau, unit_id, index, extracted, layer, kind in rows]
    edges = read_edges(session, circuit, nodes) if found else []
    return assemble(session, circuit, nodes, edges, (circuit.params or {}).get(CircuitKey.LOGITS) or [])


def wiring_at(session: Session, circuit: Circuit, found: bool, k: int | None) -> tuple[Wiring, int]:
    """The circuit at k and its edge count: from its stored order when the job kept one, else (an atlas from before
    stored orders, which has the circuit's own k only) from its nodes and edges."""
    if found and k is not None and (circuit.params or {}).get(CircuitKey.VIEWS):
        return read_wiring_at(session, circuit, k)
    return read_wiring(session, circuit, found), circuit.n_edges if found else 0


def read_wiring_at(session: Session, circuit: Circuit, k: int) -> tuple[Wiring, int]:
    """The circuit at k, the first k nodes of its stored order (``store.circuit_views``), and its edge count: the
    weights with ``appears < k``, all of them when k is within the order's ``listed_k`` (the strongest
    ``MOST_LISTED_EDGES``, when there are more), and counted in any case."""
    nodes = [Node(unit_id, layer, kind, index, column(layer), tau, *brief_values(extracted), rank=rank)
             for rank, tau, unit_id, index, extracted, layer, kind in session.execute(
                 NODES_AT, {"circuit": circuit.id, "k": k})]
    by_rank = {node.rank: node for node in nodes}
    edges = [(by_rank[src].layer, by_rank[src].index, by_rank[dst].layer, by_rank[dst].index, weight)
             for src, dst, weight in session.connection().execute(EDGES_AT, {"circuit": circuit.id, "k": k})]
    n_edges = session.scalar(EDGES_COUNTED, {"circuit": circuit.id, "k": k}) or 0
    reads = session.scalar(PROBE, {"circuit": circuit.id, "name": Probe.LOGITS}) or []
    return assemble(session, circuit, nodes, edges, reads), int(n_edges)


def assemble(session: Session, circuit: Circuit, nodes: list[Node], edges: list[tuple[str, int, str, int, float]],
             reads: list[dict[str, Any]]) -> Wiring:
    """A circuit's wiring from its kept nodes and edges: nodes in forward order, the embedding channels and residual
    links they imply, and the candidates' reads of the kept write channels among ``reads``."""
    nodes = sorted(nodes, key=lambda node: (node.column, node.index))
    channels = sorted({node.index for node in nodes if node.kind in READ_KINDS})
    read = session.execute(EMBEDDINGS, {"model": circuit.model_id, "channels": channels}) if channels else ()
    embeddings = [Node(unit_id, EMBEDDING_LAYER, LayerKind.RESID_PRE, index, 0, None, *brief_values(extracted))
                  for unit_id, index, extracted in read]
    embeddings.sort(key=lambda node: node.index)
    params = circuit.params or {}
    kept = {(node.layer, node.index) for node in nodes}
    logits = [{key: read[key] for key in ("layer", "index", "token", "weight")}
              for read in reads if (read["layer"], read["index"]) in kept]
    n_blocks = session.scalar(BLOCKS, {"model": circuit.model_id})
    return Wiring(nodes, embeddings, edges, residual_links(nodes, embeddings), logits,
                  candidates(logits, params.get(CircuitKey.EXAMPLES) or []),
                  1 + n_blocks * len(CIRCUIT_NODE_KINDS))


def read_edges(session: Session, circuit: Circuit, nodes: list[Node]) -> list[tuple[str, int, str, int, float]]:
    """The circuit's weights, strongest |weight| first (SQLite sorts them), each end named by its layer and index.
    Rows stream from the cursor and are named as they come, so thousands of them are never held at once."""
    ends = {node.unit_id: (node.layer, node.index) for node in nodes}
    named, strays = [], False
    for src, dst, weight in session.connection().execute(EDGES, {"circuit": circuit.id}):
        if src in ends and dst in ends:
            named.append((*ends[src], *ends[dst], weight))
        else:  # an end the circuit does not keep (an atlas written otherwise): named after
            named.append((src, None, dst, None, weight))
            strays = True
    if strays:
        ids = {edge[i] for edge in named if edge[1] is None for i in (0, 2)} - ends.keys()
        named_ids = session.execute(UNITS, {"units": sorted(ids)})
        ends.update((unit_id, (layer, index)) for unit_id, layer, index in named_ids)
        named = [(*ends[e[0]], *ends[e[2]], e[4]) if e[1] is None else e for e in named]
    return named


def residual_links(nodes: list[Node], embeddings: list[Node]) -> list[tuple[str, str, int]]:
    """Each kept read channel c is fed by the embedding's channel c and by every kept write channel c before it."""
    sources: dict[int, list[Node]] = defaultdict(list)
    for node in embeddings:
        sources[node.index].append(node)
    for node in nodes:
        if node.kind in WRITE_KINDS:
            sources[node.index].append(node)
    return [(source.layer, read.layer, read.index) for read in nodes if read.kind in READ_KINDS
            for source in sources[read.index] if source.column < read.column]


def candidates(logits: list[dict[str, Any]], examples: list[dict[str, Any]]) -> list[str]:
    """The task's two candidate tokens, in the order the logit reads first name them (or the first example's)."""
    named = [read["token"] for read in logits]
    if examples:
        named += [examples[0]["correct"], examples[0]["wrong"]]
    return list(dict.fromkeys(named))
