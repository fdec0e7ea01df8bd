//! Benchmarks of ferrite-obs; see `benches/`.
