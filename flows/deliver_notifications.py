"""deliver-notifications: drains whatever the outbox still holds (every `delivery_drain_seconds`).

Steps and sweeps send their own messages as they go; this catches what failed, what was written
while a mail server was down, and anything a crash left behind: a message claimed by a process
that died is sent by the first drain after its lease runs out, within the lease plus one drain
interval (two minutes and one by default; tasks/drain.py).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from tasks.orchestration.step_tasks import deliver_all_task


@flow(name="deliver-notifications", retries=0)
def deliver_notifications(limit: int = 2000) -> dict[str, int]:
    """Send every due message of the outbox, up to limit."""
    report = deliver_all_task(limit)
    get_run_logger().info(
        "outbox: %d claimed, %d delivered, %d to retry, %d given up, %d suppressed",
        report.claimed,
        report.delivered,
        report.failed,
        report.gave_up,
        report.suppressed,
    )
    return report.model_dump()
