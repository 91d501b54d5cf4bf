"""Helpers that tests, benches and tools share and the product never needs (fake adapters,
an allocator warm-up, fabricated campaign folders and the frozen demo TOML). Imported as
`tests.support.*` from the repository root: pytest is run there, and each bench and tool
puts the root on `sys.path`."""
