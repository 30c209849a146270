"""Static facts the resolver needs, kept here so lint never imports the ML libraries.

Which estimator each (framework, task, algorithm) maps to and which constructor parameters
it accepts; which metrics fit which task; rough per-request cost figures used to derive
batching and replica counts. The engine tests check these tables against real sklearn.
"""

from __future__ import annotations

_TREE = ("max_depth", "min_samples_leaf", "min_samples_split", "max_features", "max_leaf_nodes")
_CLASSIFIERS = {
    "logistic_regression": ("sklearn.linear_model", "LogisticRegression",
                            ("C", "max_iter", "class_weight", "tol", "fit_intercept")),
    "random_forest": ("sklearn.ensemble", "RandomForestClassifier",
                      ("n_estimators", "class_weight", "bootstrap", "criterion") + _TREE),
    "gradient_boosting": ("sklearn.ensemble", "GradientBoostingClassifier",
                          ("n_estimators", "learning_rate", "subsample") + _TREE),
    "hist_gradient_boosting": ("sklearn.ensemble", "HistGradientBoostingClassifier",
                               ("max_iter", "learning_rate", "max_depth", "max_leaf_nodes",
                                "min_samples_leaf", "l2_regularization", "class_weight")),
}
_REGRESSORS = {
    "linear_regression": ("sklearn.linear_model", "LinearRegression", ("fit_intercept",)),
    "ridge": ("sklearn.linear_model", "Ridge", ("alpha", "fit_intercept", "max_iter", "tol")),
    "random_forest": ("sklearn.ensemble", "RandomForestRegressor",
                      ("n_estimators", "bootstrap", "criterion") + _TREE),
    "gradient_boosting": ("sklearn.ensemble", "GradientBoostingRegressor",
                          ("n_estimators", "learning_rate", "subsample", "loss") + _TREE),
    "hist_gradient_boosting": ("sklearn.ensemble", "HistGradientBoostingRegressor",
                               ("max_iter", "learning_rate", "max_depth", "max_leaf_nodes",
                                "min_samples_leaf", "l2_regularization")),
}
ESTIMATORS = {
    ("sklearn", "binary_classification"): _CLASSIFIERS,
    ("sklearn", "multiclass_classification"): _CLASSIFIERS,
    ("sklearn", "regression"): _REGRESSORS,
    # ranking is trained pointwise (relevance regression) and evaluated per group by NDCG@k
    ("sklearn", "ranking"): {k: v for k, v in _REGRESSORS.items()
                             if k in ("gradient_boosting", "hist_gradient_boosting",
                                      "random_forest")},
}
SUPPORTED_FRAMEWORKS = ("sklearn",)
SEEDED = {"LogisticRegression", "RandomForestClassifier", "GradientBoostingClassifier",
          "HistGradientBoostingClassifier", "RandomForestRegressor",
          "GradientBoostingRegressor", "HistGradientBoostingRegressor", "Ridge"}

METRICS = {
    "binary_classification": ("accuracy", "auc", "f1", "logloss", "precision", "recall"),
    "multiclass_classification": ("accuracy", "f1_macro", "logloss"),
    "regression": ("mae", "r2", "rmse"),
    "ranking": ("ndcg@k",),
}
LOWER_IS_BETTER = ("logloss", "mae", "rmse")


def metric_family(metric: str) -> str:
    """'ndcg@10' -> 'ndcg@k'; others unchanged."""
    return metric.split("@")[0] + "@k" if "@" in metric else metric


def metric_fits(task: str, metric: str) -> bool:
    return metric_family(metric) in METRICS.get(task, ())


# Rough cost figures (milliseconds) for the batching budget; see docs/architecture.md.
HTTP_OVERHEAD_MS = 5.0
FETCH_MS = {"sqlite": 3.0, "redis": 2.0, "dynamodb": 8.0}
TRANSFORM_MS = 1.0
MODEL_MS = {"logistic_regression": 1.0, "linear_regression": 1.0, "ridge": 1.0,
            "gradient_boosting": 3.0, "hist_gradient_boosting": 5.0, "random_forest": 10.0}
# Requests per second one serving replica sustains per CPU with adaptive batching (a
# conservative figure: a RandomForest service measured 459 req/s on 2 cores with batching).
CAPACITY_RPS_PER_CPU = 150.0
AUTOSCALE_UTILISATION = 0.7
DEFAULT_P99_MS = 100.0
DEFAULT_TTL_SECONDS = 30 * 86400
ONLINE_STORE_DEFAULT = {"local": "sqlite", "kubernetes": "redis", "aws": "dynamodb",
                        "gcp": "redis"}
