"""Where a job's log lines go. A leaf module: the worker, the MLflow queue's logger process and
the relog script set up their logging here without importing the jobs."""

import logging
import sys
from pathlib import Path


def setup_logging(path: str | Path | None) -> None:
    """Job output goes to the rule's log file (and stderr), with timestamps for progress."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("flwr", "alembic", "ray"):  # our own per-round lines are the progress report
        logging.getLogger(noisy).setLevel(logging.WARNING)
