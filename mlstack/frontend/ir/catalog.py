"""Static facts the resolver needs, kept here so lint never imports the ML libraries.

Which estimator each (framework, task, algorithm) maps to and which constructor parameters
it accepts; which metrics fit which task; rough per-request cost figures used to derive
batching and replica counts. The tests check these tables against the installed libraries' constructors
(tests/test_catalog_signatures.py).
"""

from __future__ import annotations

# algorithm -> (module, class, the constructor parameters a spec may set)
Algorithms = dict[str, tuple[str, str, tuple[str, ...]]]

_TREE = ("max_depth", "min_samples_leaf", "min_samples_split", "max_features", "max_leaf_nodes")
_CLASSIFIERS: Algorithms = {
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
_REGRESSORS: Algorithms = {
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
# XGBoost's and LightGBM's scikit-learn wrappers (xgboost.XGBClassifier, lightgbm.LGBMRanker,
# ...). The device parameters (xgboost `device`, lightgbm `device_type`, the MLP's `device`)
# are not spec params: target.training.gpu decides them at run time (mlstack.runtime.devices).
_XGB = ("n_estimators", "max_depth", "max_leaves", "learning_rate", "subsample",
        "colsample_bytree", "colsample_bylevel", "colsample_bynode", "min_child_weight",
        "gamma", "reg_alpha", "reg_lambda", "max_delta_step", "max_bin", "grow_policy",
        "tree_method", "booster", "objective", "n_jobs")
_LGBM = ("n_estimators", "num_leaves", "max_depth", "learning_rate", "subsample",
         "subsample_freq", "colsample_bytree", "min_child_samples", "min_child_weight",
         "min_split_gain", "reg_alpha", "reg_lambda", "boosting_type", "objective",
         "subsample_for_bin", "n_jobs")
_MLP = ("hidden_layers", "epochs", "batch_size", "learning_rate", "weight_decay", "dropout")
ESTIMATORS: dict[tuple[str, str], Algorithms] = {
    ("sklearn", "binary_classification"): _CLASSIFIERS,
    ("sklearn", "multiclass_classification"): _CLASSIFIERS,
    ("sklearn", "regression"): _REGRESSORS,
    # ranking is trained pointwise (relevance regression) and evaluated per group by NDCG@k
    ("sklearn", "ranking"): {k: v for k, v in _REGRESSORS.items()
                             if k in ("gradient_boosting", "hist_gradient_boosting",
                                      "random_forest")},
    ("xgboost", "binary_classification"): {
        "gradient_boosting": ("xgboost", "XGBClassifier", _XGB + ("scale_pos_weight",))},
    ("xgboost", "multiclass_classification"): {
        "gradient_boosting": ("xgboost", "XGBClassifier", _XGB)},
    ("xgboost", "regression"): {"gradient_boosting": ("xgboost", "XGBRegressor", _XGB)},
    # learning to rank over query groups (XGBRanker's fit(qid=...)); objective rank:ndcg
    # by default, rank:pairwise or rank:map by the objective param
    ("xgboost", "ranking"): {"lambdarank": ("xgboost", "XGBRanker", _XGB)},
    ("lightgbm", "binary_classification"): {
        "gradient_boosting": ("lightgbm", "LGBMClassifier", _LGBM + ("class_weight",))},
    ("lightgbm", "multiclass_classification"): {
        "gradient_boosting": ("lightgbm", "LGBMClassifier", _LGBM + ("class_weight",))},
    ("lightgbm", "regression"): {"gradient_boosting": ("lightgbm", "LGBMRegressor", _LGBM)},
    # LGBMRanker's fit(group=sizes); objective lambdarank by default, rank_xendcg by param
    ("lightgbm", "ranking"): {"lambdarank": ("lightgbm", "LGBMRanker", _LGBM)},
    ("pytorch", "binary_classification"): {
        "mlp": ("mlstack.runtime.tabular_mlp", "MLPClassifier", _MLP)},
    ("pytorch", "multiclass_classification"): {
        "mlp": ("mlstack.runtime.tabular_mlp", "MLPClassifier", _MLP)},
    ("pytorch", "regression"): {"mlp": ("mlstack.runtime.tabular_mlp", "MLPRegressor", _MLP)},
}
SUPPORTED_FRAMEWORKS = ("sklearn", "xgboost", "lightgbm", "pytorch")
# What each framework needs installed, and the mlstack extra that installs it.
FRAMEWORK_MODULES = {"xgboost": "xgboost", "lightgbm": "lightgbm", "pytorch": "torch"}
FRAMEWORK_EXTRAS = {"xgboost": "xgboost", "lightgbm": "lightgbm", "pytorch": "pytorch"}
# What a built service installs for each (its extra's libraries, as pyproject.toml pins them).
FRAMEWORK_PACKAGES = {"xgboost": ("xgboost>=2.0",), "lightgbm": ("lightgbm>=4.0",),
                      "pytorch": ("torch>=2.2",)}
# Frameworks that train on a CUDA device, and the constructor parameters that move them.
GPU_FRAMEWORKS = ("xgboost", "lightgbm", "pytorch")
DEVICE_PARAMS = ("device", "device_type", "gpu_id", "gpu_platform_id",
                 "gpu_device_id")
# Rankers that learn over query groups: the fit keyword that carries the groups.
GROUP_FIT = {"XGBRanker": "qid", "LGBMRanker": "group"}
SEEDED = {"LogisticRegression", "RandomForestClassifier", "GradientBoostingClassifier",
          "HistGradientBoostingClassifier", "RandomForestRegressor",
          "GradientBoostingRegressor", "HistGradientBoostingRegressor", "Ridge",
          "XGBClassifier", "XGBRegressor", "XGBRanker", "LGBMClassifier", "LGBMRegressor",
          "LGBMRanker", "MLPClassifier", "MLPRegressor"}
# Constructor values mlstack sets unless the spec does: LightGBM logs a line per warning to
# stdout by default, which would flood the flow's log.
DEFAULT_PARAMS = {"LGBMClassifier": {"verbose": -1}, "LGBMRegressor": {"verbose": -1},
                  "LGBMRanker": {"verbose": -1}}

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
            "gradient_boosting": 3.0, "hist_gradient_boosting": 5.0, "random_forest": 10.0,
            "lambdarank": 3.0, "mlp": 2.0}
# Requests per second one serving replica sustains per CPU with adaptive batching (a
# conservative figure: a RandomForest service measured 459 req/s on 2 cores with batching).
CAPACITY_RPS_PER_CPU = 150.0
AUTOSCALE_UTILISATION = 0.7
DEFAULT_P99_MS = 100.0
DEFAULT_TTL_SECONDS = 30 * 86400
ONLINE_STORE_DEFAULT = {"local": "sqlite", "kubernetes": "redis", "aws": "dynamodb",
                        "gcp": "redis"}
