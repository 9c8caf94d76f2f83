"""Run by tests/unit/test_prefork.py in a forked child in place of `prefect.engine`: writes what
the child sees (environment, directory, Prefect's settings, modules) to PROBE_OUT, as JSON."""

import gc
import json
import os
import sys

from prefect.settings import get_current_settings

from flows.prefork import is_flow_process

if __name__ == "__main__":
    # the fork server's objects left to the run's garbage collections (gc.freeze sets them aside)
    unfrozen = len(gc.get_objects())
    from flows.prefork import WARMED

    # imported, and the store's mappers configured, by the fork server: not again in every run
    not_warm = [name for name in WARMED if name not in sys.modules]
    import ssl

    import sqlalchemy as sa

    from flows import tls_pool
    from models.tables import RemediationCase as Case

    # a run that opens the case store on PostgreSQL and renders a message imports nothing more
    # (psycopg and Jinja were 9% of the forked runs' CPU), and the templates are compiled
    before = set(sys.modules)
    sa.create_engine("postgresql+psycopg://remedy@127.0.0.1:1/none").dialect.import_dbapi()
    from notifications.render import environment, message_templates

    templates = message_templates()
    compiled = len(environment().cache or {})
    environment().get_template("messages/decision_requested.j2")
    imported = sorted(set(sys.modules) - before)

    stocked = tls_pool.served
    ssl.create_default_context()
    seen = {
        "not_warm": not_warm,
        # apprise's plugins are imported, and a TLS context comes from the fork server's stock
        "apprise_plugins": sum(name.startswith("apprise.plugins.") for name in sys.modules),
        "tls_from_stock": tls_pool.served - stocked,
        "mappers_configured": sa.inspect(Case).configured,
        "imported_after_the_fork": imported,
        "unfrozen_at_start": unfrozen,
        "templates": len(templates),
        "templates_compiled": compiled,
        "environ": dict(os.environ),
        "cwd": os.getcwd(),
        "api_url": get_current_settings().api.url,
        "argv": sys.argv,
        "is_flow_process": is_flow_process(os.getpid()),
    }
    with open(os.environ["PROBE_OUT"], "w", encoding="utf-8") as out:
        json.dump(seen, out)
    sys.exit(3)
