"""The run's pictures: results.png, PR_curve.png, F1/P/R_curve.png, confusion_matrix.png, train_batch0.jpg,
val_pred.jpg, labels.jpg.

Figures are drawn on `matplotlib.figure.Figure` objects (Agg canvas), never through pyplot, so plotting holds
no global state and needs no display; the batch mosaics are pure torchvision + Pillow.
"""

from yolotr.eval.plots.labels import plot_labels
from yolotr.eval.plots.mosaics import plot_train_batch, plot_val_predictions
from yolotr.eval.plots.pr_curves import plot_pr_curves
from yolotr.eval.plots.results import plot_results
from yolotr.eval.plots.run import plot_validation, redraw_run

__all__ = ["plot_labels", "plot_pr_curves", "plot_results", "plot_train_batch", "plot_val_predictions",
           "plot_validation", "redraw_run"]
