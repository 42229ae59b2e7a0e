"""SQLAlchemy 2 schema of an atlas.

One shape serves vision and language models: a *layer* is any hook point (a conv block's output, ``3.mlp.post_act``),
a *unit* is one channel or neuron of it. What we learn about a unit attaches to it in its own table:

- ``unit_images``  — rendered pictures of the unit (feature visualisations by objective, later caricatures);
- ``examples``     — ranked dataset examples (image crops, as boxes into a stored image, or token windows);
- ``layer_images`` — pictures of a whole vision layer (DeepDream, caricatures of input images);
- ``edges``        — weighted connections between units (direct or expanded weights; a circuit's own edges carry its
  ``circuit_id``);
- ``circuits`` / ``circuit_nodes`` — task circuits of language models found by pruning, and the units they keep.

Pictures and other payloads live in ``assets``, keyed by the sha256 of their bytes (see ``store.atlas``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, ColumnElement, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint,
                        select, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Bump when a change to the tables makes older atlases unreadable by this code, and add its step to MIGRATIONS.
FORMAT_VERSION = 4

# How the writer brings an atlas of format version N up to N + 1, in place: SQL statements it runs in one transaction
# with the new version number, under its lock. Readers refuse older atlases; any precompute into one upgrades it.
MIGRATIONS: dict[int, list[str]] = {
    1: ["ALTER TABLE runs ADD COLUMN progress JSON NOT NULL DEFAULT '{}'"],  # Run.progress
    # Edge.circuit_id, and circuits lose graph_sha256 (the server builds graphs from rows). No writer filled circuits
    # before version 3, so their tables are made anew; edges are copied.
    2: ["DROP TABLE circuit_nodes",
        "DROP TABLE circuits",
        """CREATE TABLE circuits (id INTEGER NOT NULL, model_id INTEGER NOT NULL, slug VARCHAR(128) NOT NULL,
        task VARCHAR(128) NOT NULL, target_loss FLOAT NOT NULL, loss FLOAT NOT NULL, n_nodes INTEGER NOT NULL,
        n_edges INTEGER NOT NULL, params JSON NOT NULL, PRIMARY KEY (id), UNIQUE (model_id, slug),
        FOREIGN KEY(model_id) REFERENCES models (id))""",
        "CREATE INDEX ix_circuits_model_id ON circuits (model_id)",
        """CREATE TABLE circuit_nodes (circuit_id INTEGER NOT NULL, unit_id INTEGER NOT NULL, score FLOAT,
        PRIMARY KEY (circuit_id, unit_id), FOREIGN KEY(circuit_id) REFERENCES circuits (id),
        FOREIGN KEY(unit_id) REFERENCES units (id))""",
        "CREATE INDEX ix_circuit_nodes_unit_id ON circuit_nodes (unit_id)",
        """CREATE TABLE edges_v3 (id INTEGER NOT NULL, src_unit_id INTEGER NOT NULL, dst_unit_id INTEGER NOT NULL,
        kind VARCHAR(64) NOT NULL, circuit_id INTEGER, weight FLOAT NOT NULL, asset_sha256 VARCHAR(64),
        PRIMARY KEY (id), FOREIGN KEY(src_unit_id) REFERENCES units (id),
        FOREIGN KEY(dst_unit_id) REFERENCES units (id), FOREIGN KEY(circuit_id) REFERENCES circuits (id),
        FOREIGN KEY(asset_sha256) REFERENCES assets (sha256))""",
        """INSERT INTO edges_v3 (id, src_unit_id, dst_unit_id, kind, weight, asset_sha256)
        SELECT id, src_unit_id, dst_unit_id, kind, weight, asset_sha256 FROM edges""",
        "DROP TABLE edges",
        "ALTER TABLE edges_v3 RENAME TO edges",
        "CREATE INDEX ix_edges_src_unit_id ON edges (src_unit_id)",
        "CREATE INDEX ix_edges_dst_unit_id ON edges (dst_unit_id)",
        "CREATE INDEX ix_edges_circuit_id ON edges (circuit_id)",
        "CREATE UNIQUE INDEX uq_model_edges ON edges (src_unit_id, dst_unit_id, kind) WHERE circuit_id IS NULL",
        "CREATE UNIQUE INDEX uq_circuit_edges ON edges (circuit_id, src_unit_id, dst_unit_id, kind) "
        "WHERE circuit_id IS NOT NULL"],
    3: ["""CREATE TABLE layer_images (id INTEGER NOT NULL, layer_id INTEGER NOT NULL, kind VARCHAR(64) NOT NULL,
        name VARCHAR(256) NOT NULL, asset_sha256 VARCHAR(64) NOT NULL, source_sha256 VARCHAR(64), params JSON NOT NULL,
        activation FLOAT, PRIMARY KEY (id), UNIQUE (layer_id, kind, name), FOREIGN KEY(layer_id) REFERENCES layers (id),
        FOREIGN KEY(asset_sha256) REFERENCES assets (sha256), FOREIGN KEY(source_sha256) REFERENCES assets (sha256))""",
        "CREATE INDEX ix_layer_images_layer_id ON layer_images (layer_id)"],
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Meta(Base):
    """Key/value facts about the atlas itself (format version)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Model(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(128), unique=True)
    title: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(32))  # "vision" | "language"
    description: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(Text, default="")  # where the weights came from
    # Free-form model card: metrics (held-out accuracy), classes, weights sha256, training command, input size.
    card: Mapped[dict[str, Any]] = mapped_column(default=dict)
    layers: Mapped[list[Layer]] = relationship(back_populates="model", order_by="Layer.position")


class Layer(Base):
    __tablename__ = "layers"
    __table_args__ = (UniqueConstraint("model_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))  # URL-safe op name, e.g. "mixed4c" or "3.mlp.post_act"
    position: Mapped[int] = mapped_column(Integer)  # order in the forward pass
    kind: Mapped[str] = mapped_column(String(64))  # "conv", "mlp.post_act", "attn.q", ...
    n_units: Mapped[int] = mapped_column(Integer)
    shape: Mapped[list[Any]] = mapped_column(default=list)  # activation shape of one input, e.g. [C, H, W]
    description: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[Model] = relationship(back_populates="layers")


class Unit(Base):
    __tablename__ = "units"
    __table_args__ = (UniqueConstraint("layer_id", "index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    layer_id: Mapped[int] = mapped_column(ForeignKey("layers.id"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    label: Mapped[str | None] = mapped_column(Text, default=None)  # human or automatic explanation
    # Activation statistics over the model's dataset sample: mean, std, max of the unit's spatial mean.
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Asset(Base):
    """An immutable blob, named by the sha256 of its bytes."""

    __tablename__ = "assets"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    media_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer, default=None)
    height: Mapped[int | None] = mapped_column(Integer, default=None)


class UnitImage(Base):
    """A picture of a unit: a feature visualisation under one objective ("channel", "neuron", ...)."""

    __tablename__ = "unit_images"
    __table_args__ = (UniqueConstraint("unit_id", "kind"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    asset_sha256: Mapped[str] = mapped_column(ForeignKey("assets.sha256"))
    # How it was made: objective, steps, size, seed, lr, transforms, batch.
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    activation: Mapped[float | None] = mapped_column(Float, default=None)  # the unit's objective on this image
    asset: Mapped[Asset] = relationship(lazy="joined")


class LayerImage(Base):
    """A picture of a whole vision layer (``store.keys.LayerImageKind``): its DeepDream, or a caricature of an input
    image (the input is ``source``)."""

    __tablename__ = "layer_images"
    __table_args__ = (UniqueConstraint("layer_id", "kind", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    layer_id: Mapped[int] = mapped_column(ForeignKey("layers.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(256))  # "" for DeepDream; the input's file stem for a caricature
    asset_sha256: Mapped[str] = mapped_column(ForeignKey("assets.sha256"))
    source_sha256: Mapped[str | None] = mapped_column(ForeignKey("assets.sha256"), default=None)
    # How it was made: steps, size, seed, lr, transforms, objective
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    activation: Mapped[float | None] = mapped_column(Float, default=None)  # the objective on the final image
    asset: Mapped[Asset] = relationship(lazy="joined", foreign_keys=[asset_sha256])
    source: Mapped[Asset | None] = relationship(lazy="joined", foreign_keys=[source_sha256])


class Example(Base):
    """A ranked dataset example of a unit: an image crop or a token window, with where it came from."""

    __tablename__ = "examples"
    __table_args__ = (UniqueConstraint("unit_id", "kind", "rank"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))  # store.keys.ExampleKind: "top", "bottom", "band", ...
    rank: Mapped[int] = mapped_column(Integer)
    activation: Mapped[float] = mapped_column(Float)
    asset_sha256: Mapped[str | None] = mapped_column(ForeignKey("assets.sha256"), default=None)
    # Provenance and payload: an image crop (store.keys.CropKey) or a token window (store.keys.ContextKey).
    source: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Edge(Base):
    """A weighted connection from a unit it reads from (src) to the unit that reads it (dst). The model's own edges
    have no ``circuit_id``; a circuit's edges (the weights between its kept nodes, as the pruning counts them) carry
    it, so two circuits may share a connection and each list it once."""

    __tablename__ = "edges"
    __table_args__ = (
        Index("uq_model_edges", "src_unit_id", "dst_unit_id", "kind", unique=True,
              sqlite_where=text("circuit_id IS NULL")),
        Index("uq_circuit_edges", "circuit_id", "src_unit_id", "dst_unit_id", "kind", unique=True,
              sqlite_where=text("circuit_id IS NOT NULL")),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    src_unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)
    dst_unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))  # store.keys.EdgeKind
    circuit_id: Mapped[int | None] = mapped_column(ForeignKey("circuits.id"), index=True, default=None)
    weight: Mapped[float] = mapped_column(Float)
    asset_sha256: Mapped[str | None] = mapped_column(ForeignKey("assets.sha256"), default=None)  # e.g. kernel image


class Circuit(Base):
    """A task circuit found by pruning: the fewest nodes (by the learned order) whose task loss on the pruning pairs is
    at most the target. ``loss`` is that loss (the lowest reached, when no k met the target: ``params`` says so);
    ``params`` holds the rest under ``store.keys.CircuitKey``: config, curve, faithfulness, examples."""

    __tablename__ = "circuits"
    __table_args__ = (UniqueConstraint("model_id", "slug"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    slug: Mapped[str] = mapped_column(String(128))
    task: Mapped[str] = mapped_column(String(128))
    target_loss: Mapped[float] = mapped_column(Float)
    loss: Mapped[float] = mapped_column(Float)
    n_nodes: Mapped[int] = mapped_column(Integer)
    n_edges: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)


class CircuitNode(Base):
    __tablename__ = "circuit_nodes"
    circuit_id: Mapped[int] = mapped_column(ForeignKey("circuits.id"), primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), primary_key=True, index=True)
    score: Mapped[float | None] = mapped_column(Float, default=None)  # the node's learned mask logit tau


class Run(Base):
    """One precompute invocation, for provenance on the model page."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # What the run is doing, committed with every saved batch so a server can show a job filling the atlas:
    # {"stage": "stats" | "render" | "done", "planned", "kept", "todo", "done": image counts, "current": "conv2 neuron"
    # or null}. A run that stopped before "done" without a live writer (store.lock.writer_active) was interrupted;
    # the job records that on it (INTERRUPTED_AT, INTERRUPTED) when it fails, or the next run when it was killed.
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")


# Keys of an unfinished run's ``progress`` once its stop is recorded: when (ISO 8601: at once for a failure or Ctrl-C;
# for a killed run, when a later run found it, so it stopped before then) and why ("Ctrl-C", "failed: ...", "killed: ...")
INTERRUPTED_AT, INTERRUPTED = "interrupted_at", "interrupted"


def unreferenced_assets() -> list[ColumnElement[bool]]:
    """Conditions on ``Asset`` that hold when no row uses the asset. Every asset is added in the transaction of the row
    that uses it, so an unreferenced one is garbage (an image replaced by --force or re-rendered). Found from the
    foreign keys, so a table that starts pointing at assets is counted without a change here."""
    target = Asset.__table__.c.sha256
    # NOT IN a subquery, which SQLite runs once into a temporary index, rather than a correlated NOT EXISTS, which
    # scans the (unindexed) referencing column once per asset: minutes for thousands of assets and 100,000s of edges.
    # NULLs are left out of the subquery: one would make every NOT IN unknown.
    return [target.not_in(select(column).where(column.is_not(None))) for table in Base.metadata.tables.values()
            for column in table.columns if any(key.column is target for key in column.foreign_keys)]
