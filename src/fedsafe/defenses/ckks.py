"""What CKKS parameters can hold: the arithmetic the config check runs at parse time for the `he`
defense (homomorphic.py), with no encryption library imported.

A CKKS ciphertext of ring degree N holds N/2 real values, each stored as round(value x 2^scale)
modulo the product of the data primes (every coefficient-modulus prime but the last, the special
prime used only for key switching). Aggregation adds ciphertexts and never multiplies, so the
data primes only need to hold the scaled values: scale_bits + value bits + a sign bit. The error a
decryption adds is about N x 2^(1 - scale_bits) per value (measured here with TenSEAL 0.3.18:
1.4e-8 at N 8192 and scale 2^40, 4e-12 at 2^52), independent of the values.
"""

import math

# Microsoft SEAL's largest total coefficient modulus per ring degree at 128-bit security (the
# HomomorphicEncryption.org standard); SEAL refuses larger ones ("parameters are not set
# correctly").
MAX_COEFF_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
MAX_PRIME_BITS = 60  # SEAL's largest coefficient-modulus prime
# Flower's largest gRPC message (flwr.common.GRPC_MAX_MESSAGE_LENGTH): a client's encrypted
# update must fit in one reply
MAX_MESSAGE_BYTES = 2_147_483_647


def expected_error(options: dict) -> float:
    """The decryption error per value, about N x 2^(1 - scale_bits)."""
    return options["poly_modulus_degree"] * 2.0 ** (1 - options["scale_bits"])


def ciphertext_bytes(options: dict, n_values: int) -> int:
    """An encrypted vector's size: ceil(n / (N/2)) ciphertexts of two polynomials, N 64-bit words
    per data prime, and a header (under 1 KiB). Serialisation compresses the words a little where
    the primes are well below 64 bits (measured: none at 60 bits, 16% at 40)."""
    n = options["poly_modulus_degree"]
    primes = len(options["coeff_mod_bit_sizes"]) - 1
    return math.ceil(n_values / (n // 2)) * (2 * n * primes * 8 + 1024)


def check(where: str, options: dict, n_values: int | None = None) -> None:
    """Parameters that SEAL accepts, that hold `max_value` at the scale, whose error stays below
    `precision`, and (given the model's update size `n_values`) whose ciphertexts fit one Flower
    message; the ValueError names the key."""
    n, bits = options["poly_modulus_degree"], options["coeff_mod_bit_sizes"]
    scale = options["scale_bits"]
    key = f"{where}.coeff_mod_bit_sizes"
    if not isinstance(bits, list) or len(bits) < 2 or not all(
            isinstance(b, int) and not isinstance(b, bool) and 20 <= b <= MAX_PRIME_BITS
            for b in bits):
        raise ValueError(f"{key}: {bits!r}; expected a list of at least two prime sizes, each "
                         f"20 to {MAX_PRIME_BITS} bits (the last is SEAL's special prime)")
    if sum(bits) > MAX_COEFF_BITS[n]:
        raise ValueError(f"{key}: {sum(bits)} bits in all; poly_modulus_degree {n} allows at "
                         f"most {MAX_COEFF_BITS[n]} at 128-bit security (raise "
                         "poly_modulus_degree or use fewer bits)")
    data_bits = sum(bits[:-1])
    need = scale + math.ceil(math.log2(options["max_value"])) + 1
    if need > data_bits:
        raise ValueError(f"{where}.scale_bits: {scale} bits of scale + values up to max_value "
                         f"{options['max_value']} + a sign bit need {need} bits, but the data "
                         f"primes of coeff_mod_bit_sizes {bits} (all but the last) hold "
                         f"{data_bits}")
    if expected_error(options) > options["precision"]:
        raise ValueError(f"{where}.scale_bits: {scale} gives decryption errors of about "
                         f"{expected_error(options):.2g} per value at poly_modulus_degree {n}, "
                         f"above precision {options['precision']:g}; raise scale_bits")
    if n_values is not None and ciphertext_bytes(options, n_values) > MAX_MESSAGE_BYTES:
        raise ValueError(f"{key}: the model's update ({n_values} values) encrypts to about "
                         f"{ciphertext_bytes(options, n_values) / 2**20:.0f} MiB (32 bytes per "
                         f"value and data prime), beyond one Flower message "
                         f"({MAX_MESSAGE_BYTES / 2**20:.0f} MiB); use fewer data primes or a "
                         "smaller federation.model")
