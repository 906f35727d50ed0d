"""The kit's benchmarks: its CPU-first claims measured as ratios, the notebook budgets, and accuracy.

Run ``python -m benchmarks --size full`` from the project root (``make benchmarks``);
``python -m benchmarks --help`` lists the options. Every comparison runs both sides
in the same process, alternating repetitions, and reports medians, so a busy machine
slows both sides alike and the ratios stay meaningful.

Modules:

- :mod:`benchmarks.common`: timing (alternating repetitions, medians), the log-log
  slope, hardware facts, atomic writes, the settings and data the benchmarks use;
- :mod:`benchmarks.core`: feature extraction, the head and last-block epochs against
  plain Keras, the equivalence check, and scaling with the number of images;
- :mod:`benchmarks.notebooks`: wall time of every notebook per profile, and the
  accuracies the notebooks report;
- :mod:`benchmarks.grading`: autograding throughput of a simulated class, every score
  checked against what its kind of submission must get;
- :mod:`benchmarks.report`: ``REPORT.md``, ``results.json`` and the plots;
- :mod:`benchmarks.run`: the command line.
"""
