"""What an evasion attack reports, per sample and per set.

Robust accuracy = share of samples classified correctly both clean and under attack
(RobustBench's definition: a misclassified clean sample is never robust); attack success rate
(ASR) = share of correctly classified samples whose prediction flips. Per-sample masks ('1' =
robust) let the results take the per-sample worst case over all attacks of a cell
(fedsafe.robustness).
"""

import numpy as np
import torch


def bits(mask: torch.Tensor) -> str:
    return "".join("1" if v else "0" for v in mask.tolist())


def share(mask: torch.Tensor) -> float:
    return int(mask.sum()) / len(mask)


def nanmean(values) -> float:
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def flip_rate(correct, robust) -> float:
    n = int(correct.sum())
    return float((correct & ~robust).sum()) / n if n else float("nan")
