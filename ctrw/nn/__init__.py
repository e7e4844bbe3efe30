"""Layers and models: the random weight, the networks, the sigma bounds and their constraint."""
