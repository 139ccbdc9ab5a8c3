"""Experiments built on the training loop: sweeps over a grid of options, their tables and plots, and transfer.

grid.py reads a sweep file into cells; sweep.py runs them (resumably); table.py writes results.csv and the Markdown
table; plots.py the PNG plots; transfer.py trains on one task and scores the result on others.
"""
