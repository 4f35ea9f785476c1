"""The paper's own numbers (Han et al. 2020, CIFAR-10 ResNet-20), printed beside ours for
orientation: Table 1's rows and the accuracy at each point of Figs. 4 and 5."""

from __future__ import annotations

# The paper's grids (Fig. 5: rho; Fig. 4: alpha) and accuracy (%) at each point (method.md
# §5.1, digitised to about ±0.01).
RHO_GRID = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.1, 0.2)
ALPHA_GRID = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_FIG5 = (85.39, 85.41, 85.38, 85.56, 85.53, 85.45, 85.41, 85.34, 85.38, 85.29, 85.07)
_FIG4 = (85.36, 85.45, 85.41, 85.42, 85.42, 85.44, 85.44, 85.53, 85.45, 85.46)
FIG5 = dict(zip(RHO_GRID, _FIG5, strict=True))  # rho (= rho_pos = rho_neg) -> accuracy
FIG4 = dict(zip(ALPHA_GRID, _FIG4, strict=True))  # alpha -> accuracy
# A sweep's parameter -> the paper's accuracy at each of its values.
SWEEPS: dict[str, dict[float, float]] = {"lns.rho_pos": FIG5, "lns.alpha": FIG4}
# Table 1 (%, mean ± std where the paper gives one), by row name.
TABLE1 = {
    "baseline": "85.06",
    "fine-tune": "85.26 ± 0.06",
    "LNS alpha=0": "85.36 ± 0.06",
    "LNS": "85.56 ± 0.11",
}
