"""Evasion: test-time adversarial examples against the models the federation produced.

- `run`: the attack job (the cell's test subset, the global model, the summary rows).
- `suite`: the attacks themselves, built from torchattacks (FGSM, PGD, APGD, CW, Square,
  AutoAttack), and `craft`, which runs one on a set of samples.
- `transfer`: the malicious-client threat model (each client's received copy, transfer between
  the copies).
- `metrics`: robust accuracy, attack success rate, per-sample masks.
"""
