"""The built-in protocols; importing this package registers them
(:func:`bnnns.experiments.protocol.get_protocol` does)."""

from bnnns.experiments.protocols import cifar10, mnist  # noqa: F401
