"""Membership inference: was a sample (or a client) in the training data of the cell's model?

- `loss`: the LOSS attack (members have lower loss).
- `reference_models`: the dataset's reference models (the `reference` rule), trained with the
  target's recipe on halves of the population pool.
- `reference_attacks`: RMIA and LiRA, on those models' logits.
- `audit`: the one-run privacy audit (a lower bound on epsilon from canaries), with the canaries'
  scores in `canaries`.
- `cell`: what every attack on a cell shares (the samples scored, the cell's delta, the row).
"""
