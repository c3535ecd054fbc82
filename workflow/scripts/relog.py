from pathlib import Path

from fedsafe.cli import relog
from fedsafe.logs import setup_logging
from fedsafe.tracking import tracking_uri

setup_logging(snakemake.log[0])
uri = tracking_uri(snakemake.config["mlflow"], Path(snakemake.params.results))
n = relog(snakemake.params.jobs, snakemake.params.summary, snakemake.config["experiment"], uri)
print(f"re-logged {n} runs to {uri}")
