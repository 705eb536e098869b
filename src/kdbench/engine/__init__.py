"""The stacked trainer: many same-shape models trained as one, with their losses and teachers."""
