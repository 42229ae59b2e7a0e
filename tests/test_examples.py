"""The one-pass dataset-examples collector (``render.examples``) against brute force on random activations."""

from __future__ import annotations

import torch

from render.examples import ExampleCollector, sample_positions


def _pass(acts: torch.Tensor, k: int, sample: torch.Tensor, middle: int, batch: int) -> ExampleCollector:
    collector = ExampleCollector({"layer": acts.shape[1]}, k=k, sample=sample, middle=middle, seed=3)
    for start in range(0, len(acts), batch):
        collector.update_layer("layer", acts[start:start + batch], torch.arange(start, min(start + batch, len(acts))))
    return collector


def test_top_examples_are_the_brute_force_top_k_with_their_cells():
    acts = torch.randn(203, 7, 25)  # [images, units, positions]
    ranked = _pass(acts, k=32, sample=sample_positions(203, 64), middle=5, batch=17).ranked("layer")
    maxima, cells = acts.max(dim=2)  # [images, units]
    expected = maxima.T.topk(32, dim=1)
    assert torch.equal(ranked.top_values, expected.values)
    assert torch.equal(ranked.top_images, expected.indices)
    assert torch.equal(ranked.top_cells, cells.T.gather(1, expected.indices))
    assert ranked.images == 203


def test_fewer_images_than_k_leave_the_rest_empty():
    ranked = _pass(torch.randn(5, 3, 4), k=8, sample=torch.arange(5), middle=2, batch=2).ranked("layer")
    assert (ranked.top_images[:, :5] >= 0).all() and (ranked.top_images[:, 5:] == -1).all()
    assert torch.isinf(ranked.top_values[:, 5:]).all()


def test_middle_examples_lie_between_the_quartiles_of_the_sample_and_are_seeded():
    acts = torch.randn(300, 6, 9)
    sample = sample_positions(300, 100, seed=1)
    ranked = _pass(acts, k=4, sample=sample, middle=6, batch=32).ranked("layer")
    maxima, cells = acts.max(dim=2)
    on_sample = maxima[sample]  # [100, units]
    assert torch.allclose(ranked.quartiles, on_sample.quantile(torch.tensor([0.25, 0.5, 0.75]), dim=0).T)
    for unit in range(6):
        images = ranked.middle_images[unit]
        assert (images >= 0).all() and len(set(images.tolist())) == 6 and set(images.tolist()) <= set(sample.tolist())
        values = maxima[images, unit]
        assert torch.equal(values, ranked.middle_values[unit])
        assert (values >= ranked.quartiles[unit, 0]).all() and (values <= ranked.quartiles[unit, 2]).all()
        assert torch.equal(cells[images, unit], ranked.middle_cells[unit])
        assert (values[:-1] >= values[1:]).all()
    again = _pass(acts, k=4, sample=sample, middle=6, batch=50).ranked("layer")
    assert torch.equal(again.middle_images, ranked.middle_images)
