"""What a circuit page needs beyond the circuit itself: tables beside the atlas's own, which the ``circuits`` stage
writes for every circuit it finds and the server reads.

A found circuit is the first k nodes of an order learned by pruning. These tables keep that whole order, so the page
can show the circuit at any k of its curve, and what the job measured for it:

- ``circuit_order``: every pruning node of the model by rank (0 first), with its unit, its tau and ``edges_in``,
  the number of the circuit's weights joining it to nodes ranked before it, so the circuit at k has
  ``sum(edges_in over rank < k)`` edges, for every k;
- ``circuit_order_edges``: the weights themselves (the same nonzero weights between nodes ``render.circuit_graph``
  counts), each with ``appears``, the larger rank of its two ends: the circuit at k holds exactly the weights with
  ``appears < k``. A dense model's whole order has millions, so the job lists them up to ``listed_k`` (in the
  circuit's ``CircuitKey.VIEWS``: at least the circuit's own k) and counts the rest;
- ``circuit_probes``: JSON documents by name (``Probe``), each read whole by the circuit page.

They stand outside the atlas's format version, as the search index does (``store.search``): an atlas written before
them, or a circuit not found (which has no order worth showing), has no rows, its circuit's params have no
``CircuitKey.VIEWS``, and its page shows the circuit at its own k only. No foreign keys: the stage replaces a
circuit's rows with the circuit (``delete_views``).
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import JSON, column, delete, table, text
from sqlalchemy.orm import Session

ORDER, ORDER_EDGES, PROBES = "circuit_order", "circuit_order_edges", "circuit_probes"

CREATE = [
    f"""CREATE TABLE IF NOT EXISTS {ORDER} (circuit_id INTEGER NOT NULL, rank INTEGER NOT NULL,
        unit_id INTEGER NOT NULL, tau FLOAT NOT NULL, edges_in INTEGER NOT NULL, PRIMARY KEY (circuit_id, rank))
        WITHOUT ROWID""",
    # the circuit at k reads its weights as one range of the key: circuit_id, appears < k
    f"""CREATE TABLE IF NOT EXISTS {ORDER_EDGES} (circuit_id INTEGER NOT NULL, appears INTEGER NOT NULL,
        src_rank INTEGER NOT NULL, dst_rank INTEGER NOT NULL, weight FLOAT NOT NULL,
        PRIMARY KEY (circuit_id, appears, src_rank, dst_rank)) WITHOUT ROWID""",
    f"""CREATE TABLE IF NOT EXISTS {PROBES} (circuit_id INTEGER NOT NULL, name VARCHAR(64) NOT NULL,
        value JSON NOT NULL, PRIMARY KEY (circuit_id, name))""",
]

order_rows = table(ORDER, column("circuit_id"), column("rank"), column("unit_id"), column("tau"), column("edges_in"))
order_edges = table(ORDER_EDGES, column("circuit_id"), column("appears"), column("src_rank"), column("dst_rank"),
                    column("weight"))
probes = table(PROBES, column("circuit_id"), column("name"), column("value", JSON))


class Probe(StrEnum):
    """``circuit_probes.name``: what the job measured for the circuit, each a JSON document."""

    # The per-group ablations at every k the page offers: {"groups": ["0.attn", "0.mlp", ...] (each block's
    # attention and MLP nodes), "losses": [[k, [loss | null per group]]]}: the calibrated task loss on the pruning
    # pairs of the circuit at k with that group's nodes also mean-ablated (read as the curve's losses are, with a
    # calibration of its own); null where the circuit at k keeps none of the group's nodes
    ABLATIONS = "ablations"
    # Held-out contrastive pairs (the evaluation split's, never seen by pruning): [{"tokens": [first prompt's tokens,
    # second's], "answers": [the first prompt's correct candidate, the second's] (the task's two candidates, in its
    # order), "p_correct": [the full model's probability of each prompt's correct candidate, over the two]}]
    PAIRS = "pairs"
    # The full model's activation of the first ``nodes`` nodes of the order at each pair's last position (where the
    # candidates are scored): {"nodes": int, "values": [by rank: [by pair: [first prompt's, second's]]]}
    ACTIVATIONS = "activations"
    # The full model's attention at each pair's last position, for the heads whose q, k or v channels are among the
    # first ``ACTIVATIONS.nodes`` nodes (by first appearance): [{"block", "head", "patterns": [by pair: [the first
    # prompt's weights over its tokens, the second's]], "sink": [by pair: [weight, weight]] | null (a model without
    # an attention sink)}], for the first pairs of ``PAIRS``
    HEADS = "heads"
    # How each candidate's logit reads every write channel of the model (``CircuitKey.LOGITS``'s format, for all
    # of them, so the circuit at any k has its reads): [{"layer", "index", "token", "weight"}]
    LOGITS = "logits"


def has_views(session: Session) -> bool:
    """Whether the tables exist: a job of this version has found a circuit in the atlas."""
    return session.execute(text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name"),
                           {"name": PROBES}).first() is not None


def create_views(session: Session) -> None:
    for statement in CREATE:
        session.execute(text(statement))


def delete_views(session: Session, circuit_id: int) -> None:
    """Remove a circuit's rows (before the circuit itself goes: its id may be given to the next one)."""
    if has_views(session):
        for rows in (order_rows, order_edges, probes):
            session.execute(delete(rows).where(rows.c.circuit_id == circuit_id))
