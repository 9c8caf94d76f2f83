"""I/O of Remedy: case store, delivery, Prefect artifacts; plain functions wrapped as tasks."""
