"""Datasets: the bundled MNIST, the files kdbench finds or downloads, and their splits."""
