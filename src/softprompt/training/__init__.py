"""The training loop and what a run needs around it: set-up, output folder, report, accumulation, optimiser,
precision, checkpoints."""
