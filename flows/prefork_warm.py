"""Imported last by the fork server (flows/prefork.py): what every flow run forked from it would
otherwise do again after the fork. Measured per pickup before this module (bench/README.md,
Forked pickups): importing modules the engine and the steps import only once they run, apprise's
notification plugins (0.2 s in each run that sends), configuring the store's SQLAlchemy mappers,
building TLS contexts (flows/tls_pool.py), and (measured with py-spy in `bench workers`: 9% of
the forked runs' CPU) importing psycopg and Jinja and compiling the message templates.

Importing it has these effects on purpose; nothing else imports it.
"""

import gc
import importlib

import certifi
from apprise.manager_plugins import NotificationManager
from prefect.settings import PREFECT_API_SSL_CERT_FILE
from sqlalchemy.orm import configure_mappers

from flows import tls_pool
from flows.prefork import WARMED
from notifications.render import environment, message_templates

for _name in WARMED:
    importlib.import_module(_name)

NotificationManager().load_modules()  # apprise imports its plugins on first use otherwise
configure_mappers()  # every mapper imported so far (the steps' modules brought the tables)

# the one environment messages are rendered with, its templates compiled (Jinja checks each
# file's modification time when a run takes it: an edited template is compiled again)
for _name in message_templates():
    environment().get_template(_name)

# the CA file Prefect's clients verify with (as prefect.client.orchestration picks it), and the
# system's default certificates that apprise's e-mail uses (measured: 9 and 2 in a pickup that asks
# its first question and sends its e-mails)
tls_pool.install({PREFECT_API_SSL_CERT_FILE.value() or certifi.where(): 12, None: 12})

# what this warm-up and the preloaded modules after `tasks` built live as long as the fork server:
# set aside from the runs' garbage collections too, as tasks/__init__.py does for what came before
gc.freeze()
