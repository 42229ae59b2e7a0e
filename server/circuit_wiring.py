"""The wiring of a stored task circuit, as both its page and its circuit-tracer export draw it: kept nodes in forward
order, the weights between them, and the links the store leaves to the reader.

The store keeps a circuit's nodes (``circuit_nodes``) and the nonzero weights between them (``edges`` with its
``circuit_id``). Two kinds of link carry no weight and are derived here instead:

- residual links: a kept write channel c (``attn.out``, ``mlp.out``) reaches every later kept read channel c
  (``attn.act_in``, ``mlp.act_in``) through the residual stream, and every kept read channel c also reads the
  embedding's channel c (unit c of ``0.resid_pre``), which the graph shows as an embedding node;
- logit links: the two candidates' unembedding rows read the kept write channels (``CircuitKey.LOGITS``; a read of
  a channel the circuit does not keep would point at no node, and is left out).

Columns order the graph: the embeddings first, then each block's node layers in ``CIRCUIT_NODE_KINDS`` order, then the
candidates' logits.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session, aliased

from store.keys import CIRCUIT_NODE_KINDS, CircuitKey, LayerKind
from store.schema import Circuit, CircuitNode, Edge, Layer, Unit

EMBEDDING_LAYER = f"0.{LayerKind.RESID_PRE}"  # the residual stream block 0 reads: the token embeddings
READ_KINDS = (LayerKind.ATTN_IN, LayerKind.MLP_IN)
WRITE_KINDS = (LayerKind.ATTN_OUT, LayerKind.MLP_OUT)

NODES = (select(CircuitNode.score, Unit.id, Unit.index, Unit.stats, Layer.name, Layer.kind)
         .join(Unit, Unit.id == CircuitNode.unit_id).join(Layer, Layer.id == Unit.layer_id)
         .where(CircuitNode.circuit_id == bindparam("circuit")))
EMBEDDINGS = (select(Unit.id, Unit.index, Unit.stats).join(Layer, Layer.id == Unit.layer_id)
              .where(Layer.model_id == bindparam("model"), Layer.name == EMBEDDING_LAYER,
                     Unit.index.in_(bindparam("channels", expanding=True))))
_src, _dst = aliased(Unit), aliased(Unit)
_src_layer, _dst_layer = aliased(Layer), aliased(Layer)
EDGES = (select(_src_layer.name, _src.index, _dst_layer.name, _dst.index, Edge.weight)
         .join(_src, _src.id == Edge.src_unit_id).join(_src_layer, _src_layer.id == _src.layer_id)
         .join(_dst, _dst.id == Edge.dst_unit_id).join(_dst_layer, _dst_layer.id == _dst.layer_id)
         .where(Edge.circuit_id == bindparam("circuit"))
         .order_by(func.abs(Edge.weight).desc(), _src_layer.position, _src.index, _dst_layer.position, _dst.index))
BLOCKS = select(func.count()).select_from(Layer).where(Layer.model_id == bindparam("model"),
                                                        Layer.kind == LayerKind.RESID_PRE)


@dataclass(frozen=True)
class Node:
    unit_id: int
    layer: str
    kind: str
    index: int
    column: int
    tau: float | None
    stats: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Wiring:
    nodes: list[Node]  # kept nodes, in forward order
    embeddings: list[Node]  # the embedding's channels that feed kept read channels
    edges: list[tuple[str, int, str, int, float]]  # (src layer, index, dst layer, index, weight), strongest first
    residual: list[tuple[str, str, int]]  # (src layer, dst layer, channel): writes or the embedding to later reads
    logits: list[dict[str, Any]]  # {"layer", "index", "token", "weight"}: kept write channels to a candidate's logit
    candidates: list[str]  # the task's two candidate tokens
    logit_column: int


def column(layer: str) -> int:
    """A node layer's column: 1 + its block's offset + its kind's place in the block (the embeddings are 0)."""
    block, _, kind = layer.partition(".")
    return 1 + int(block) * len(CIRCUIT_NODE_KINDS) + CIRCUIT_NODE_KINDS.index(LayerKind(kind))


def read_wiring(session: Session, circuit: Circuit) -> Wiring:
    nodes = sorted((Node(unit_id, layer, kind, index, column(layer), tau, stats or {})
                    for tau, unit_id, index, stats, layer, kind in session.execute(NODES, {"circuit": circuit.id})),
                   key=lambda node: (node.column, node.index))
    reads = [node for node in nodes if node.kind in READ_KINDS]
    channels = sorted({node.index for node in reads})
    embeddings = [Node(unit_id, EMBEDDING_LAYER, LayerKind.RESID_PRE, index, 0, None, stats or {})
                  for unit_id, index, stats in session.execute(EMBEDDINGS, {"model": circuit.model_id,
                                                                            "channels": channels})]
    embeddings.sort(key=lambda node: node.index)
    edges = [tuple(row) for row in session.execute(EDGES, {"circuit": circuit.id})]
    params = circuit.params or {}
    kept = {(node.layer, node.index) for node in nodes}
    logits = [{key: read[key] for key in ("layer", "index", "token", "weight")}
              for read in params.get(CircuitKey.LOGITS) or [] if (read["layer"], read["index"]) in kept]
    n_blocks = session.scalar(BLOCKS, {"model": circuit.model_id})
    return Wiring(nodes, embeddings, edges, residual_links(nodes, embeddings), logits,
                  candidates(logits, params.get(CircuitKey.EXAMPLES) or []),
                  1 + n_blocks * len(CIRCUIT_NODE_KINDS))


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
