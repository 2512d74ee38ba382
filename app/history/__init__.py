"""Run history over time: day partitions, retention, and rollups that outlive it."""
