"""Analysis layer: benchmarks now; aggregation, comparisons, figures and reports later."""
