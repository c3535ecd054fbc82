"""Federated training on Flower's Message API: local training, the server strategy, and a runner
that executes one grid cell as an in-process simulation."""


def clients_per_round(n_clients: int, fraction: float) -> int:
    """How many clients the server samples each round (at least one): the strategy samples
    them, the config check and the inversion attacks count them."""
    return max(1, int(round(n_clients * fraction)))
