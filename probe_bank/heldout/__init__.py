"""Held-out evaluation: every figure a bank reports, measured on entities the probes never saw.

`folds` (entity-grouped folds, `cross_fit` of the one `RecencyProbes` estimator), `metrics`
(headline figures with bootstrap-over-entities intervals, from `stats`), `geometry` (cross-fitted
stage centroids), `selection` (the layer/position choice inside each outer fold), `permutation`
(the label-shuffle null) and `baselines` (the scalar statistics a probe could be exploiting, each
scored with the same folds, and the statistic-balanced probes).
"""
