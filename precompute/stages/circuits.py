"""Language stage ``circuits``: for each task of the request, the model's circuit found by pruning
(``precompute.lm.circuits``), saved as one ``circuits`` row (``store.keys.CircuitKey`` in its params), its kept
nodes as ``circuit_nodes`` and the weights between them as ``edges`` of kind ``EdgeKind.CIRCUIT`` carrying the
circuit's id; a found circuit also gets its whole node order, the order's weights and what the job measured for the
page's other k's and held-out pairs (``precompute.lm.circuit_views``) in ``store.circuit_views``'s tables. Counts nothing in the run's progress (its items are tasks, not units); the progress names the task and,
while it works, what pruning is doing (``Job.report``, at most every ``REPORT_EVERY`` seconds): the means, the sweep's
step, loss and kept nodes, the k search, the null.

A task is pending while the model has no circuit for it (every chosen task with --force). Saving replaces the task's
circuit whole, so an interrupted run leaves either the old circuit or the new one. A task whose sweep met the target
nowhere is saved as not found: its row has no nodes and no edges (n_nodes = n_edges = 0), the best loss reached, and
the evidence that does not need a circuit (the full model, everything ablated, the null). Pruning is seeded: a rerun
finds the same circuit.

The model's ablation means, and the weight-shuffled copy the null prunes with its own, are taken once per run and
shared by every task.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from precompute.lm.circuit_views import CircuitViews
from precompute.lm.circuits import CircuitConfig, FoundCircuit, Prepared, find_circuit, prepare, shuffled
from precompute.lm.tasks import Task
from precompute.stages import Job, Plan
from store.circuit_views import create_views, delete_views, order_edges, order_rows, probes
from store.keys import CircuitKey, EdgeKind
from store.schema import Circuit, CircuitNode, Edge

REPORT_EVERY = 3.0  # seconds between progress commits while a circuit is being found


@dataclass(frozen=True)
class TaskWork:
    task: Task

    @property
    def label(self) -> str:
        return f"circuit {self.task.name}"


def throttled(report: Callable[[str], None], prefix: str, every: float | None = None,
              clock: Callable[[], float] = time.monotonic) -> Callable[[str], None]:
    """``report(f"{prefix}: {words}")`` for the first words and then at most once every ``every`` seconds (default
    ``REPORT_EVERY``): each report commits the run's progress, and pruning has words for every tenth step."""
    last = [-float("inf")]

    def say(words: str) -> None:
        now = clock()
        if now - last[0] >= (REPORT_EVERY if every is None else every):
            last[0] = now
            report(f"{prefix}: {words}")

    return say


class CircuitsStage:
    name = "circuits"

    def __init__(self, job: Job, tasks: list[Task], config: CircuitConfig):
        self.job, self.tasks, self.config = job, tasks, config

    def plan(self, session: Session) -> Plan:
        have = set(session.scalars(select(Circuit.slug).where(Circuit.model_id == self.job.model_id)))
        return Plan([TaskWork(task) for task in self.tasks if self.job.force or task.name not in have])

    def run(self, items: list[TaskWork]) -> Iterator[tuple[TaskWork, FoundCircuit]]:
        tokenizer = self.job.spec.load_tokenizer()  # the model's own: each task is encoded for it
        pretraining = self.job.spec.dataset_sample().tokens
        prepared: Prepared | None = None
        null: Prepared | None = None
        for item in items:
            say = throttled(self.job.report, item.label)
            if prepared is None:
                prepared = prepare(self.job.net, pretraining, self.config.mean_windows, say)
            if null is None and self.config.null:
                null = prepare(shuffled(self.job.net, self.config.prune.seed), pretraining, self.config.mean_windows,
                               lambda words: say(f"null: {words}"))
            yield item, find_circuit(self.job.net, tokenizer, item.task, pretraining, self.config, say, prepared, null)

    def save(self, session: Session, item: TaskWork, found: FoundCircuit) -> int:
        old = session.scalar(select(Circuit.id).where(Circuit.model_id == self.job.model_id,
                                                       Circuit.slug == item.task.name))
        if old is not None:
            delete_views(session, old)
            session.execute(delete(Edge).where(Edge.circuit_id == old))
            session.execute(delete(CircuitNode).where(CircuitNode.circuit_id == old))
            session.execute(delete(Circuit).where(Circuit.id == old))
        pruned = found.pruned
        circuit = Circuit(model_id=self.job.model_id, slug=item.task.name, task=item.task.name,
                          target_loss=self.config.prune.target_loss, loss=found.loss, n_nodes=found.n_nodes,
                          n_edges=len(found.edges), params={
                              CircuitKey.TARGET: found.target,
                              CircuitKey.CONFIG: found.config,
                              CircuitKey.CURVE: [[k, loss] for k, loss in pruned.curve.items()],
                              CircuitKey.TRACE: pruned.trace,
                              CircuitKey.FAITHFULNESS: found.faithfulness,
                              CircuitKey.NULL: found.null,
                              CircuitKey.SWEEP: found.sweep,
                              CircuitKey.CALIBRATION: found.calibration,
                              CircuitKey.EXAMPLES: found.examples,
                              CircuitKey.LOGITS: found.logits,
                              CircuitKey.SIZES: found.sizes,
                              **({CircuitKey.VIEWS: found.views.record} if found.views else {})})
        session.add(circuit)
        session.flush()
        ids = {layer: self.job.unit_ids(session, layer) for layer in found.all_nodes.sizes}
        if found.nodes:
            session.execute(insert(CircuitNode), [{"circuit_id": circuit.id, "unit_id": ids[layer][index],
                                                   "score": tau} for layer, index, tau in found.nodes])
        if found.edges:
            session.execute(insert(Edge), [{"src_unit_id": ids[e.src][e.src_index], "dst_unit_id": ids[e.dst][e.dst_index],
                                             "kind": EdgeKind.CIRCUIT, "circuit_id": circuit.id, "weight": e.weight}
                                            for e in found.edges])
        if found.views is not None:
            save_views(session, circuit.id, found.views, ids)
        return 0


def save_views(session: Session, circuit_id: int, views: CircuitViews, ids: dict[str, dict[int, int]]) -> None:
    """A found circuit's order, the order's weights and its probes, in ``store.circuit_views``'s tables (made here
    the first time: they stand outside the atlas's format)."""
    create_views(session)
    session.execute(insert(order_rows), [{"circuit_id": circuit_id, "rank": rank, "unit_id": ids[layer][index],
                                          "tau": tau, "edges_in": edges_in}
                                         for rank, (layer, index, tau, edges_in) in enumerate(views.order)])
    if views.edges:
        session.execute(insert(order_edges), [{"circuit_id": circuit_id, "appears": e.appears, "src_rank": e.src_rank,
                                               "dst_rank": e.dst_rank, "weight": e.weight} for e in views.edges])
    session.execute(insert(probes), [{"circuit_id": circuit_id, "name": str(name), "value": value}
                                     for name, value in views.probes.items()])
