"""The core trainer (`retrain run`): sampling, rewards, loss, checkpoints, metrics.

Importing this package is cheap (no torch); the heavy parts live in `loop` and `backend`.
"""

EXIT_OK = 0
EXIT_PREEMPTED = 75  # SIGTERM: the step finished, a checkpoint was written, resume later
EXIT_CONFIG_ERROR = 2

__all__ = ["EXIT_CONFIG_ERROR", "EXIT_OK", "EXIT_PREEMPTED"]
