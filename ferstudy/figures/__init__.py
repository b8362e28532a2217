"""The study's figures (matplotlib, Agg backend, PNG), one function per figure, by family:

- `cv`: the cross-validation figures (training curves, accuracy per architecture, accuracy against
  compute, the final architecture's cross-validation confusion matrix);
- `final`: the final model (confusion matrices, training history, example predictions);
- `inside`: inside the final model (filters, activations per emotion, channel-emotion
  preferences, Grad-CAM saliency), probing it with ferstudy/probe.py;
- `plot`: what they share (saving, titles, colours, placeholders);
- `cli`: `make_all` (every figure from the result files, see docs/DESIGN.md) and `ferstudy figures`.

Example faces are always PublicTest faces, picked with a seeded generator; PrivateTest appears
only as the final model's metrics (`confusion_final`). Every title names the dataset, so demo
figures cannot pass for FER2013 ones.

This module imports nothing: the workflow (workflow/rules/common.smk) and the report read
`FIGURES` from it.
"""

FIGURES = (
    "training_curves",
    "cv_accuracy",
    "accuracy_vs_compute",
    "confusion_cv",
    "confusion_final",
    "final_history",
    "filters_layer1",
    "filters_deeper",
    "activations",
    "channel_emotion",
    "saliency",
    "examples",
)
