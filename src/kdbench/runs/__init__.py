"""The run folder and what reads it: store, loading, export, latency, resources, tracking."""
