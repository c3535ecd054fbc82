"""The two words for the grid's points, as the summary columns that key them.

- A **cell** is a grid point: one dataset, defense and noise multiplier. A table row, a plot
  point and a claim's subject or baseline are cells; a cell's seeds are its replicates.
- A **replicate** is one cell at one seed: one training run and the attacks on its model (one
  folder under results/train/ and results/attacks/).
"""

CELL = ["dataset", "defense", "noise_multiplier"]
REPLICATE = CELL + ["seed"]
