"""I/O of Remedy: the case store, delivery and Prefect artifacts; plain functions, wrapped as tasks."""
