"""Experiment suites (tools/experiment.py): a grid of training and PTQ runs, resumable, reported with paired tests.

    spec     the suite file, its cells and whether each is finished with the definition it has now
    run      running the cells in child processes, test predictions and INT8 export of each
    paired   McNemar's exact test and the paired bootstrap of the accuracy difference
    report   results.csv, REPORT.md and the dev-accuracy curves, from what is on disk
"""
