"""Deployment: the packed ``.bnn`` artifact, export from a run, exact integer inference,
``predict`` and the model summary. Imports core, nn, data and train; never bench or
experiments."""
