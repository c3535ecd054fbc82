from fedsafe.claims import write_claims
from fedsafe.jobs import setup_logging

setup_logging(snakemake.log[0])
write_claims(snakemake.input.summary, snakemake.output.claims)
