"""I/O of Remedy: case store, delivery, Prefect artifacts; plain functions wrapped as tasks."""

import gc

# Every deployment's flow process (a fresh one at each pickup) imports Prefect, then this package,
# whose modules build many objects (tables, models, forms). Each full collection those imports set
# off would walk all of Prefect's objects again; they live as long as the process, so they are set
# aside from the collector once, here (about half a CPU second per pickup: bench/bench_pickup.py).
gc.freeze()
