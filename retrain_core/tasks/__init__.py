"""Tasks: problem sets shared by the trainer's data sources and the builtin models.

A task lives here, below both `retrain_core.train` (whose `arithmetic` data source draws
from it) and `retrain_core.models` (whose tiny model is warm-started on it), so neither
package has to import the other for it. Imports nothing of retrain_core.
"""
