"""Tidy results: the summary table (one row per replicate x attack x attack parameter) and the
list of missing or stale jobs (`summary`), and the paper-style tables rendered from it (mean and
95% interval over a cell's replicates, limits within the metric's range; bold: the best cell and
those not significantly worse, Holm-corrected, never a whole column) as Markdown, LaTeX and HTML.

- `columns`: what each summary metric column measures, and which way is better;
- `sampling`: the sampling error of one replicate's value;
- `tables`: the tables' long-form raw material, one value per replicate and column;
- `intervals`: per cell, the mean and interval over its replicates, and the best-cell marks;
- `render`: the tables in each format, their notes and prose sections.

The statistical rules are in `fedsafe.stats`; this package knows which summary column holds
what. Words (cell, replicate): `fedsafe.grid_keys`.
"""
