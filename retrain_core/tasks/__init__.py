"""Tasks: problem sets, the data sources drawing from them, and their scorers.

`arithmetic` (the demo task), `data` (the `arithmetic`, `jsonl:`, `math` sources, prompt
rendering and the resumable data cursor), `reasoning_gym` (procedural tasks and their
scorer) and `answers` (the `boxed` reward). They sit below `retrain_core.train`,
`retrain_core.config` (validation reads each source's first example) and
`retrain_core.models` (the tiny model is warm-started on arithmetic), so none of those has
to import another for them. Imports only the registry of retrain_core.
"""
