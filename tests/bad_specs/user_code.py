"""Functions the user-code cases in this corpus name (parsed by lint, never imported)."""

import numpy as np


def build_forest(n_estimators=100, max_depth=None, random_state=None):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth,
                                  random_state=random_state)


def spend_ratio(spend, age):
    return spend / np.maximum(age, 1)


def double(values):
    return 2 * values


class Forest:
    pass
