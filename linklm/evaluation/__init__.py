"""The evaluation district: model answers, per-row predictions, metrics, baselines, the
evaluation of a run, charts and reports. Imports from ``linklm.data`` and ``linklm.model``."""
