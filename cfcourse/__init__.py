"""cfcourse: models, data, training loops, metrics, plots and widgets for a course on catastrophic forgetting."""
from .config import by_mode, device, fast_mode, seed, set_seed

__version__ = "0.1.0"
__all__ = ["by_mode", "device", "fast_mode", "seed", "set_seed", "__version__"]
