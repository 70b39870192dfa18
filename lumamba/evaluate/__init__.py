"""Evaluation: TUAB metrics (balanced accuracy, AUROC, AUPR) as JSON, loss and ROC curves as PNG.
Modules: metrics, plots, predict, report, cli (`lumamba-eval`)."""
