from pathlib import Path

from fedsafe.cli import relog
from fedsafe.logs import setup_logging
from fedsafe.tracking import tracking_uri

setup_logging(snakemake.log[0])
results = Path(snakemake.params.results)
uri = tracking_uri(snakemake.config["mlflow"], results)
print(f"re-logged {relog(results, snakemake.config['experiment'], uri)} runs to {uri}")
