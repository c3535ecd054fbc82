"""MedPFL's defense: noise of scale b on every shared update tensor, no clipping.

MedPFL adds Laplace noise to the gradient a client shares; here the shared thing is the client's
update (one or more local steps), so the noise goes on the update in `uplink`. Option
`distribution`: "laplace" (scale b, std b * sqrt(2)) or "gaussian" (std b). No clipping means no
bounded sensitivity, hence no formal guarantee.
"""

import torch

from fedsafe.defenses.base import Mechanism


class GradientNoise(Mechanism):
    def uplink(self, update, rnd, client):
        if self.noise == 0:
            return update
        g = self.generator("gradient_noise", rnd, client)
        out = {}
        for k, v in update.items():
            if not v.is_floating_point():
                out[k] = v
                continue
            if self.options["distribution"] == "gaussian":
                noise = torch.randn(v.shape, generator=g, dtype=v.dtype)
            else:  # Laplace by inverse CDF, so it uses the seeded generator
                u = torch.rand(v.shape, generator=g, dtype=torch.float64) - 0.5
                noise = (-torch.sign(u) * torch.log1p(-2 * u.abs().clamp(max=0.5 - 2**-40))).to(v.dtype)
            out[k] = v + self.noise * noise.to(v.device)
        return out
