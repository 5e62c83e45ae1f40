"""Data quality: GX suites from the contracts, gates in the daily run, cross-table checks."""
