//! Shared helpers for tandem's benchmarks.
