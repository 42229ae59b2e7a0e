"""Datasets that exist offline: procedural images and crops of the photos shipped inside scikit-image."""
