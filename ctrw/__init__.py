"""CTRW: Constrained Trainable Random Weight (NeurIPS 2023) as a pure PyTorch library.

Importing `ctrw` loads nothing heavy: the API process imports `ctrw.config` (pydantic only) and
never torch. Import submodules (`ctrw.nn.models`, `ctrw.training.loop`, ...) where the work happens.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
