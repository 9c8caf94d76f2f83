"""Imported last by the fork server (flows/prefork.py): what every flow run forked from it would
otherwise do again after the fork. Measured per pickup before this module: 60 ms configuring the
store's SQLAlchemy mappers and 60 ms importing modules the engine and the steps import only once
they run (bench/README.md, Forked pickups).

Importing it has these effects on purpose; nothing else imports it.
"""

import importlib

from sqlalchemy.orm import configure_mappers

from flows.prefork import WARMED

for _name in WARMED:
    importlib.import_module(_name)

configure_mappers()  # every mapper imported so far (the steps' modules brought the tables)
