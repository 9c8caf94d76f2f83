"""`remedy up`: the embedded default, kept running until Ctrl-C.

Starts a Prefect server on 127.0.0.1 (unless PREFECT_API_URL names a live one) with its data under
REMEDY_HOME, and one runner serving every deployment; migrates the case store first. The server
is locked with the credential kept in REMEDY_HOME/prefect-api.auth (made on the first start).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from flows.local.credential import credential_path, ensure_credential
from flows.local.stack import LocalStack, StackError, api_healthy, port_open


def prepare_store() -> None:
    """Migrate the case store and make sure an encryption key exists."""
    from alembic import command

    from migrations import alembic_config
    from models.settings import get_settings
    from tasks.store.vault import init_key_file

    settings = get_settings()
    if settings.encryption_key is None:
        init_key_file(settings.resolved_key_file())
    command.upgrade(
        alembic_config(settings.resolved_database_url(), settings.database_schema), "head"
    )


def start_stack(
    home: Path, port: int, say: Callable[[str], None], *, approval_port: int | None = None
) -> LocalStack:
    """Start (or join) a server and start the runner; return the running stack."""
    from models.settings import get_settings

    home = home.resolve()
    env = {"REMEDY_HOME": str(home)}
    page_port = approval_port or get_settings().approval_port
    if port_open(page_port):
        raise StackError(f"127.0.0.1:{page_port} is in use; choose another with --approval-port")
    if "REMEDY_APPROVAL_BASE_URL" not in os.environ:
        # messages carry links to the page: the runner must know where it listens
        env["REMEDY_APPROVAL_BASE_URL"] = f"http://127.0.0.1:{page_port}"
    external = os.environ.get("PREFECT_API_URL")
    if external and api_healthy(external):
        stack = LocalStack(home=home, extra_env=env | {"PREFECT_API_URL": external})
        say(f"Using the Prefect server at {external}")
    else:
        if external:
            say(f"PREFECT_API_URL={external} does not answer; starting a local server instead")
        if port_open(port):
            raise StackError(f"127.0.0.1:{port} is in use; choose another with --port")
        stack = LocalStack(home=home, port=port, extra_env=env, auth_string=ensure_credential(home))
        say(f"Starting a Prefect server on 127.0.0.1:{port} (data in {home / 'prefect'}) ...")
        stack.start_server()
        say(
            f"Prefect UI: {stack.ui_url} (it asks for the API credential: the line in "
            f"{credential_path(home)})"
        )
        for name, value in stack.client_env().items():
            if name.startswith("PREFECT_"):
                os.environ[name] = value
    say("Starting the runner that serves the Remedy deployments ...")
    stack.start_runner()
    say("Starting the approval page ...")
    stack.approval_port = page_port
    page = stack.start_approval_page(port=page_port)
    say(f"Approval page: {page} (bound to 127.0.0.1)")
    return stack


def run_until_interrupted(stack: LocalStack, say: Callable[[str], None]) -> int:
    """Keep the stack up until Ctrl-C or a part exits; then stop everything."""
    stopping = False

    def _stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    try:
        while not stopping:
            for name, proc in list(stack.processes.items()):
                if proc.poll() is not None:
                    say(f"{name} exited with {proc.returncode}; see {stack.log(name)}")
                    stopping, code = True, 1
            time.sleep(1)
    finally:
        say("Stopping ...")
        stack.stop()
    return code
