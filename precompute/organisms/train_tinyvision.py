"""Train TinyVision and write its weights plus a card (sha256, held-out accuracy, the command that made them).

    python -m precompute.organisms.train_tinyvision

Deterministic on CPU for a given torch build and thread count; a different build may differ in the last bits, so the
card records the sha256 of the committed file rather than promising bit-identical retraining everywhere.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
import typer
from torch import nn

from precompute.datasets.images import to_tensor
from precompute.datasets.patterns import CLASSES, load_photos, make_batch
from precompute.organisms.tinyvision import TinyVision

HERE = Path(__file__).parent
COMMAND = "python -m precompute.organisms.train_tinyvision"


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, list[float]]:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(chunk).argmax(1) for chunk in x.split(256)])
    correct = pred == y
    per_class = [correct[y == c].float().mean().item() for c in range(len(CLASSES))]
    return correct.float().mean().item(), per_class


def main(
    epochs: int = typer.Option(8, help="Passes over the training set."),
    per_class: int = typer.Option(1000, help="Training images per class (regenerated with new seeds each epoch)."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(HERE / "tinyvision.pt", help="Where to write the weights; the card goes beside it."),
) -> None:
    torch.manual_seed(seed)
    photos = load_photos()
    test = make_batch(100 * len(CLASSES), "test", seed, photos)
    x_test, y_test = to_tensor(test.images), torch.from_numpy(test.labels)
    model = TinyVision(len(CLASSES))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps_per_epoch = per_class * len(CLASSES) // 128
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch)
    started = time.time()
    for epoch in range(epochs):
        train = make_batch(per_class * len(CLASSES), "train", seed * 1000 + epoch, photos)
        x, y = to_tensor(train.images), torch.from_numpy(train.labels)
        model.train()
        for i in range(steps_per_epoch):
            xb, yb = x[i * 128:(i + 1) * 128], y[i * 128:(i + 1) * 128]
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc, _ = evaluate(model, x_test, y_test)
        print(f"epoch {epoch + 1}/{epochs}  loss {loss.item():.3f}  held-out accuracy {acc:.3f}  "
              f"({time.time() - started:.0f}s)", flush=True)
    acc, per_class_acc = evaluate(model, x_test, y_test)
    torch.save(model.state_dict(), out)
    card = {
        "weights": {"file": out.name, "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
                    "bytes": out.stat().st_size},
        "metrics": {"heldout_accuracy": round(acc, 4), "heldout_n": len(y_test), "chance": round(1 / len(CLASSES), 4)},
        "per_class_accuracy": {name: round(a, 3) for name, a in zip(CLASSES, per_class_acc)},
        "classes": list(CLASSES),
        "training": {"command": COMMAND, "epochs": epochs, "per_class": per_class, "seed": seed,
                     "optimizer": "AdamW lr 3e-3 one-cycle, batch 128", "torch": torch.__version__,
                     "threads": torch.get_num_threads(), "seconds": round(time.time() - started)},
        "data": "procedural patterns (8 classes) + crops of 9 scikit-image photos; held-out = other seeds and the "
                "right 25% of each photo",
        "input": {"size": 64, "range": [0, 1], "channels": "RGB"},
    }
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["metrics"]))


if __name__ == "__main__":
    typer.run(main)
