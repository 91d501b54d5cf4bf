"""Helpers that tests and benches share and the product never needs (fake adapters, an
allocator warm-up). Imported as `tests.support.*` from the repository root: pytest is run
there, and each bench puts the root on `sys.path`."""
