"""Shared core of fedrec: data, catalog embeddings, model, metrics and evaluation.

Nothing in here imports Flower; central training, the simulation and the edge client all use it.
"""
