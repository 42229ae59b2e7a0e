"""Small models trained by this project on offline data, with committed weights: the demo and test defaults."""
