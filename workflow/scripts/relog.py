from pathlib import Path

from fedsafe.cli import relog
from fedsafe.jobs import setup_logging
from fedsafe.tracking import tracking_uri

setup_logging(snakemake.log[0])
results = Path(snakemake.log[0]).parents[1]
uri = tracking_uri(snakemake.params.mlflow, results)
print(f"re-logged {relog(results, snakemake.params.experiment, uri)} runs to {uri}")
