"""`python -m bench [pipeline|waiting|outbox|monitoring|junk|sqlite-load|workers|pickup] [...]`."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICK_CASES = 50


def _parser() -> argparse.ArgumentParser:
    from bench import (
        bench_junk,
        bench_monitoring,
        bench_outbox,
        bench_pickup,
        bench_pipeline,
        bench_sqlite_load,
        bench_waiting,
        bench_workers,
    )

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="bench")
    bench_pipeline.add_arguments(
        sub.add_parser("pipeline", help="one case through six steps, against empty flows")
    )
    bench_waiting.add_arguments(
        sub.add_parser("waiting", help="many cases waiting for a decision at once")
    )
    bench_outbox.add_arguments(
        sub.add_parser("outbox", help="drain the outbox, against a bare apprise loop")
    )
    bench_monitoring.add_arguments(
        sub.add_parser("monitoring", help="the monitoring sweep over 10,000 cases")
    )
    bench_junk.add_arguments(
        sub.add_parser("junk", help="junk links on the approval page, and a concurrent command")
    )
    bench_sqlite_load.add_arguments(
        sub.add_parser("sqlite-load", help="cases through step 1 at once: SQLite vs PostgreSQL")
    )
    bench_workers.add_arguments(
        sub.add_parser("workers", help="one worker vs two on two hosts, and a host lost")
    )
    bench_pickup.add_arguments(
        sub.add_parser(
            "pickup",
            help="CPU seconds a flow process spends importing each step, against Prefect alone",
        )
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark(s) named on the command line."""
    # The runner's deployments point at files relative to the working directory.
    os.chdir(ROOT)
    # This process is a Prefect client too: keep its profile and telemetry out of the user's home.
    client_home = Path(tempfile.mkdtemp(prefix="remedy-bench-client-"))
    os.environ["PREFECT_HOME"] = str(client_home)
    from flows.local.stack import QUIET_PREFECT

    os.environ.update(QUIET_PREFECT)
    from bench import (
        bench_junk,
        bench_monitoring,
        bench_outbox,
        bench_pickup,
        bench_pipeline,
        bench_sqlite_load,
        bench_waiting,
        bench_workers,
    )
    from bench.common import say, stop_on_sigterm

    stop_on_sigterm()
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.bench == "pipeline":
            return bench_pipeline.run(args)
        if args.bench == "waiting":
            return bench_waiting.run(args)
        if args.bench == "outbox":
            return bench_outbox.run(args)
        if args.bench == "monitoring":
            return bench_monitoring.run(args)
        if args.bench == "junk":
            return bench_junk.run(args)
        if args.bench == "sqlite-load":
            return bench_sqlite_load.run(args)
        if args.bench == "workers":
            return bench_workers.run(args)
        if args.bench == "pickup":
            return bench_pickup.run(args)
        say("all benchmarks, modest defaults (python -m bench NAME --help for options)")
        code = bench_pipeline.run(parser.parse_args(["pipeline"]))
        code |= bench_waiting.run(parser.parse_args(["waiting", "--cases", str(QUICK_CASES)]))
        code |= bench_outbox.run(parser.parse_args(["outbox"]))
        code |= bench_monitoring.run(parser.parse_args(["monitoring"]))
        code |= bench_junk.run(parser.parse_args(["junk"]))
        code |= bench_pickup.run(parser.parse_args(["pickup"]))
        code |= bench_sqlite_load.run(parser.parse_args(["sqlite-load", "--cases", "5"]))
        code |= bench_workers.run(
            parser.parse_args(["workers", "--cases", "10", "--crash-cases", "0"])
        )
        return code
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return 130
    finally:
        shutil.rmtree(client_home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
