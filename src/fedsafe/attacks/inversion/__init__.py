"""Gradient inversion: the honest-but-curious server reconstructs a client's images from the
update (or gradient) it observed.

- `run`: the attack job (what the server recorded, the victim, scoring, the summary row).
- `gradient_matching`: DLG, iDLG and Inverting Gradients, on one gradient.
- `fedavg_update`: the multi-step attack on a FedAvg update (simulated local training).
- `regularisers`: image priors both attacks add to their loss (total variation).
- `optimiser`: the signed-Adam search both run on their dummy images.
- `figures`: reconstruction grids and loss curves (`save_images`).
"""
