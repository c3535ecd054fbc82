"""What the summary's metric columns measure: their kind (`fedsafe.stats`: range, sampling error,
margin, drift) and which way is better for the defender."""

# Metrics where larger is better for the defender; for every other metric smaller is better
# (attack success, transfer, reconstruction quality, membership AUC, privacy budget epsilon).
HIGHER_IS_BETTER = {"clean_accuracy", "eval_clean_accuracy", "robust_accuracy",
                    "client_robust_accuracy", "mse", "rounds_run"}
# What each summary column measures (`fedsafe.stats`: its range, sampling error, margin, drift);
# columns not listed are unbounded and counted over seeds alone.
METRIC_KIND = {"clean_accuracy": "clean", "eval_clean_accuracy": "clean",
               "robust_accuracy": "robust", "client_robust_accuracy": "robust",
               "attack_success_rate": "success", "client_attack_success_rate": "success",
               "transfer_rate": "transfer", "ssim": "ssim", "auc": "auc",
               "reconstruction_success_rate": "share", "label_accuracy": "share",
               "tpr_at_1pct_fpr": "share", "tpr_at_0_1pct_fpr": "share",
               "epsilon": "nonnegative", "empirical_epsilon": "nonnegative",
               "epsilon_ratio": "nonnegative", "mse": "nonnegative", "rounds_run": "nonnegative"}
