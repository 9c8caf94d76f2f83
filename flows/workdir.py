"""prefect.yaml's pull step: a worker's flow run starts in the code that worker has.

A process worker starts each flow run in a fresh temporary directory, and Prefect resolves a
relative `set_working_directory` against that directory, not the worker's. The deployments'
entrypoints (`flows/<step>.py:<flow>`) are relative to the folder holding `flows/`; this step
changes to that folder: the checkout on PYTHONPATH or installed with `pip install -e .`, or
site-packages for an installed wheel. So every host runs the code it has, wherever it keeps it.
"""

from __future__ import annotations

import os
from pathlib import Path


def enter_code_directory() -> dict[str, str]:
    """Change to the folder holding this `flows` package; return it as the step's output."""
    directory = Path(__file__).resolve().parent.parent
    os.chdir(directory)
    return {"directory": str(directory)}
