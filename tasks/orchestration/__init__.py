"""Everything that talks to Prefect about runs: the deployments registry, starting and handing over
runs, and the Prefect tasks that wrap the plain units of work.
"""
