"""A small vision atlas built by hand, as the vision precompute job writes it (``store.keys``), so the vision pages can
be tested without torch, a dataset or a trained model; PNGs are drawn with PIL.

The model "fixture-vision" has three conv layers: ``conv1`` (32 units), ``conv2`` (8) and ``conv3`` (4), with a max
pool between conv2 and conv3. Every unit of conv1 and conv2 has a ``channel`` feature visualisation except
``UNRENDERED`` (a conv1 unit); conv3 has none. The dataset is ``N_IMAGES`` 64×64 images, each stored once however
many units use it.

- ``FOCUS`` (conv2 unit 3): ``TOP_N`` top examples and ``MIDDLE_N`` middle ones (added out of rank order, so pages must
  sort), with boxes into the images that include ones clipped at the image's edges, quartiles and the count of images
  ranked over; direct weights (``EdgeKind.WEIGHT``, 3×3 kernels) from every conv1 unit, more than a page lists; and
  expanded weights (``EdgeKind.EXPANDED``, 6×6 kernels) to every conv3 unit.
- the other conv2 units: a few top and middle examples, except ``NO_EXAMPLES`` (none yet).
- conv2 has a DeepDream and a caricature of ``CARICATURE_NAME`` (its input is a dataset image); conv1 has no views.
- runs: an old one with another dataset, the one that ranked the examples (``DATASET``), and a newer one that named
  no dataset, so the model page must find the latest run that names one.

Use the fixtures by importing them into a test module: ``from tests.vision_fixture import vision_atlas, vision_server``.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from sqlalchemy.orm import Session

from store import Atlas
from store.keys import CropKey, DatasetKey, EdgeKind, ExampleKind, LayerImageKind, Stat
from store.schema import Asset, Edge, Example, Layer, LayerImage, Model, Run, Unit, UnitImage
from tests.conftest import serving

SLUG = "fixture-vision"
SIZE = 64  # the dataset images, as the model saw them
LAYERS = (("conv1", 32, [32, 32, 32]), ("conv2", 8, [8, 16, 16]), ("conv3", 4, [4, 8, 8]))
FOCUS = ("conv2", 3)
NO_EXAMPLES = ("conv2", 7)
UNRENDERED = ("conv1", 4)  # among the focus unit's strongest inputs, not the first
N_IMAGES, TOP_N, MIDDLE_N = 40, 32, 6
QUARTILES = [0.52, 1.1, 1.87]
PER_PAGE = 4  # the server's grid page size here, so conv2 spans two pages
CARICATURE_NAME = "cat"
DEEPDREAM_ACTIVATION = 3.25
DATASET = {DatasetKey.NAME: "fixture-shapes", DatasetKey.SOURCE: "/data/fixture-shapes", DatasetKey.IMAGES: N_IMAGES,
           DatasetKey.SKIPPED: 2, DatasetKey.SHA256: "ab" * 32, DatasetKey.LAYOUT: "classes"}
OLD_DATASET = {**DATASET, DatasetKey.NAME: "older-shapes", DatasetKey.SHA256: "cd" * 32}
VIEW_PARAMS = {"steps": 256, "size": SIZE, "seed": 0, "lr": 0.05, "objective": "mean squared activation"}


def item(position: int) -> str:
    return f"{('circles', 'squares')[position % 2]}/{position:03d}.png"


def box(cell: tuple[int, int]) -> list[int]:
    """conv2's receptive field at a cell of its 16×16 grid: 19 pixels at stride 4, clipped to the image."""
    y, x = cell
    return [max(4 * x - 7, 0), max(4 * y - 7, 0), min(4 * x + 12, SIZE), min(4 * y + 12, SIZE)]


# FOCUS's top examples: (rank, image, cell, activation), with cells at corners and edges (clipped boxes) and inside
FOCUS_TOP = [(rank, (7 * rank + 3) % N_IMAGES, (rank * 5 % 16, rank * 3 % 16), round(9.5 - 0.25 * rank, 2))
             for rank in range(TOP_N)]
FOCUS_MIDDLE = [(rank, (11 * rank + 1) % N_IMAGES, (8, 8 + rank), round(1.8 - 0.2 * rank, 2)) for rank in range(MIDDLE_N)]
# FOCUS's weights: every conv1 unit into it (32, more than the 24 a vision page lists), and it into every conv3 unit
FOCUS_INPUTS = {index: round((1 if index % 3 else -1) * (0.1 + 0.037 * ((index * 13) % 32)), 3) for index in range(32)}
FOCUS_OUTPUTS = {0: -0.42, 1: 1.35, 2: 0.08, 3: -0.9}


def encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png(atlas: Atlas, session: Session, image: Image.Image) -> str:
    """Store a picture as the job does: its blob under its sha256, and its asset row once."""
    data = encode(image)
    sha = atlas.put_blob(data)
    if session.get(Asset, sha) is None:
        session.add(Asset(sha256=sha, media_type="image/png", size=len(data), width=image.width, height=image.height))
        session.flush()
    return sha


def dataset_image(position: int) -> Image.Image:
    """A distinct picture per position: a coloured background with a shape."""
    rng = random.Random(position)
    image = Image.new("RGB", (SIZE, SIZE), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    x, y = rng.randrange(8, 40), rng.randrange(8, 40)
    shape = draw.ellipse if position % 2 == 0 else draw.rectangle
    shape((x, y, x + 18, y + 18), fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def kernel(rng: random.Random, side: int) -> Image.Image:
    """A kernel in diverging colours: white at 0, orange for positive, blue for negative."""
    image = Image.new("RGB", (side, side))
    for x in range(side):
        for y in range(side):
            v = rng.uniform(-1, 1)
            target = (234, 128, 20) if v >= 0 else (47, 91, 211)
            image.putpixel((x, y), tuple(round(255 + abs(v) * (c - 255)) for c in target))
    return image


def feature_vis(layer: str, index: int) -> Image.Image:
    image = Image.new("RGB", (32, 32), ((37 * index) % 256, 90 if layer == "conv1" else 200, 140))
    ImageDraw.Draw(image).line((0, index % 32, 31, 31 - index % 32), fill=(255, 255, 255), width=2)
    return image


def crop_row(unit: Unit, kind: str, rank: int, position: int, cell: tuple[int, int], activation: float,
             images: dict[int, str]) -> Example:
    return Example(unit_id=unit.id, kind=kind, rank=rank, activation=activation, asset_sha256=images[position],
                   source={CropKey.DATASET: DATASET[DatasetKey.NAME], CropKey.ITEM: item(position),
                           CropKey.CELL: list(cell), CropKey.GRID: [16, 16], CropKey.BOX: box(cell)})


def build(root: Path) -> Path:
    """Write the fixture atlas into ``root`` (a new directory) and return it."""
    rng = random.Random(0)
    with Atlas.open_for_writing(root) as atlas, atlas.batch() as session:
        model = Model(slug=SLUG, title="Fixture Vision", kind="vision", description="A hand-built CNN atlas.",
                      source="tests/vision_fixture.py", card={"metrics": {"heldout_accuracy": 0.9}})
        session.add(model)
        session.flush()
        units: dict[tuple[str, int], Unit] = {}
        for position, (name, n, shape) in enumerate(LAYERS):
            layer = Layer(model_id=model.id, name=name, position=position, kind="conv", n_units=n, shape=shape)
            session.add(layer)
            session.flush()
            units.update({(name, i): Unit(layer_id=layer.id, index=i, stats={}) for i in range(n)})
        session.add_all(units.values())
        session.flush()

        for (name, index), unit in units.items():
            if name != "conv3" and (name, index) != UNRENDERED:
                session.add(UnitImage(unit_id=unit.id, kind="channel", asset_sha256=png(atlas, session, feature_vis(
                    name, index)), params={"objective": "channel", "steps": 128, "seed": 0}, activation=2.0 + index))

        images = {position: png(atlas, session, dataset_image(position)) for position in range(N_IMAGES)}
        focus = units[FOCUS]
        focus.stats = {Stat.DATASET_MEAN: 0.8, Stat.DATASET_STD: 0.5, Stat.DATASET_MAX: 9.5, Stat.QUARTILES: QUARTILES,
                       Stat.EXAMPLES_N: N_IMAGES, Stat.N: N_IMAGES, Stat.MEASURE: "spatial mean of the channel"}
        rows = [crop_row(focus, ExampleKind.TOP, *row, images) for row in FOCUS_TOP]
        rows += [crop_row(focus, ExampleKind.MIDDLE, *row, images) for row in FOCUS_MIDDLE]
        for index in range(LAYERS[1][1]):
            if ("conv2", index) not in (FOCUS, NO_EXAMPLES):
                unit = units["conv2", index]
                rows += [crop_row(unit, ExampleKind.TOP, rank, (index + rank) % N_IMAGES, (index, rank + 4),
                                  5.0 - rank, images) for rank in range(3)]
                rows += [crop_row(unit, ExampleKind.MIDDLE, 0, (index + 20) % N_IMAGES, (2, 2), 1.0, images)]
        rng.shuffle(rows)
        session.add_all(rows)

        session.add_all(Edge(src_unit_id=units["conv1", source].id, dst_unit_id=focus.id, kind=EdgeKind.WEIGHT,
                             weight=weight, asset_sha256=png(atlas, session, kernel(rng, 3)))
                        for source, weight in FOCUS_INPUTS.items())
        session.add_all(Edge(src_unit_id=focus.id, dst_unit_id=units["conv3", reader].id, kind=EdgeKind.EXPANDED,
                             weight=weight, asset_sha256=png(atlas, session, kernel(rng, 6)))
                        for reader, weight in FOCUS_OUTPUTS.items())

        conv2 = units[FOCUS].layer_id
        dream = Image.new("RGB", (SIZE, SIZE), (120, 60, 160))
        ImageDraw.Draw(dream).ellipse((10, 10, 50, 50), outline=(250, 220, 40), width=4)
        caricature = dataset_image(1).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        session.add_all([
            LayerImage(layer_id=conv2, kind=LayerImageKind.DEEPDREAM, name="", asset_sha256=png(atlas, session, dream),
                       params=VIEW_PARAMS, activation=DEEPDREAM_ACTIVATION),
            LayerImage(layer_id=conv2, kind=LayerImageKind.CARICATURE, name=CARICATURE_NAME,
                       asset_sha256=png(atlas, session, caricature), source_sha256=images[1],
                       params={**VIEW_PARAMS, "objective": "cosine to the input's activations"}, activation=0.93),
        ])

        start = datetime(2025, 1, 1, tzinfo=timezone.utc)
        session.add_all(Run(model_id=model.id, config=config, started_at=start + timedelta(hours=hour),
                            finished_at=start + timedelta(hours=hour, minutes=5), progress={"stage": "done"})
                        for hour, config in enumerate(({"dataset": OLD_DATASET}, {"dataset": DATASET, "steps": 128},
                                                       {"layers": ["conv3"]})))
    return root


@pytest.fixture(scope="session")
def vision_atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("vision-atlas"))


@pytest.fixture(scope="session")
def vision_server(vision_atlas: Path) -> Iterator[str]:
    with serving(vision_atlas, env={"ATLASCOPE_PER_PAGE": str(PER_PAGE)}) as url:
        yield url
