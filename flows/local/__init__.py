"""The embedded local stack: a Prefect server, the runner and the approval page (`remedy up`)."""
