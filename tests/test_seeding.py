"""Random streams: distinct purposes never share a stream; the same keys always give one."""

from fedsafe.seeding import derive_seed


def test_keys_sharing_a_prefix_are_distinct_streams():
    assert derive_seed(0, "reference", 1) != derive_seed(0, "reference-train", 1)
    assert derive_seed(0, "dp_fedavg", 1) != derive_seed(0, "dp_fedavg_server", 1)
    assert derive_seed(0, "gradient_noise", 2, 0) == derive_seed(0, "gradient_noise", 2, 0)
    assert derive_seed(0, "train", 1, 0) != derive_seed(0, "train", 0, 1)
    assert 0 <= derive_seed(7, "x") < 2 ** 63
