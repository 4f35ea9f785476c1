"""Pure functions of arrays: the paper's math, importable without Flax modules or a trainer.

``estimators`` (sign and its straight-through estimators, Eqs. 1-3), ``losses`` (the unbiased,
loss-corrected LNS loss, Eqs. 7, 15-18), ``mapping`` (the mapping network f_theta, Eq. 4),
``scaling`` (D8), ``metrics`` (flip rate, label agreement), ``packing`` (sign bits in words)
and ``binary_ops`` (exact integer binary layers for deployment). Imports nothing of bnnns
outside ``core`` (docs/architecture.md).
"""
