"""Federated training on Flower's Message API: local training, the server strategy, and a runner
that executes one grid cell as an in-process simulation."""
