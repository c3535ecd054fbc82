"""A malicious server: it sends the clients a crafted model and reads their images back from
what they return (the attacks of the honest-but-curious server are in `attacks/inversion/`).

- `imprint`: the imprint attack ("Robbing the Fed", Fowl et al. 2022; MedLeak on medical
  images): a block of bins in front of the network, images recovered analytically.
"""
