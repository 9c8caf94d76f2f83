"""Benchmarks of Remedy on a real local Prefect server: they print figures, they assert nothing.

`python -m bench` runs them all with modest defaults; `python -m bench pipeline` and
`python -m bench waiting [--cases N]` run one. See bench/README.md.
"""
