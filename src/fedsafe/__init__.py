"""fedsafe: a reproducible benchmark of attacks and defenses in federated learning on medical images."""

__version__ = "0.1.0"
