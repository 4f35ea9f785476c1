"""Flax layers and models: ``layers`` (BinaryConv, BinaryDense) compose :mod:`bnnns.core`;
``models`` holds the paper's networks by name. Imports only :mod:`bnnns.core`."""
