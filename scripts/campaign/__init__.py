"""GPU campaign: one prepared command that turns a lent GPU's minutes into figures.

A GPU is lent now and then, for about ten minutes, on a bare machine that cannot download anything and
returns at most 8 files. Everything it needs travels with the working tree, and one command runs
time-boxed stages and writes its results as it goes. From the repository root (no install needed):

    python -m scripts.campaign prepare                    # here: wheels + Fashion-MNIST -> .travel/
    python3 -m scripts.campaign run --out OUT             # there: ~9 min of stages -> OUT/
    python -m scripts.campaign run --out /tmp/c --quick   # CPU, tiny, every stage (tests/test_campaign.py)

Each stage is a module of this package with a ``BOX`` and a ``run(ctx)``, run in a child process with a
time box; a failure is recorded with its traceback and the campaign goes on. ``plan.STAGES`` lists them
in order; a new stage is one module and one name there. OUT holds summary.md, results.json,
provenance.json (+ provenance.diff when the tree was dirty), campaign.log and campaign.tar.gz (run logs,
metrics.csv, reports and figures; no checkpoints), rewritten after every stage.
"""
