"""Classic machine learning on any feature matrix: scikit-learn pipelines chosen by cross-validation.

The Dataiku lab's last step ("use features in new ML algorithms"): each candidate is a
``Pipeline`` of ``StandardScaler`` and one classifier (logistic regression, linear SVM,
k-nearest neighbours, a forest of extremely randomised trees) with a small grid of hyper-parameters. Models
are compared by cross-validation on the *training* data only; the test split is used
once, at the end, to report how the chosen model does on images it never saw.
Nothing here knows about images: any ``(n_samples, n_features)`` matrix works.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

MODEL_TITLES = {
    "logistic_regression": "Logistic regression",
    "linear_svm": "Linear SVM",
    "knn": "k-nearest neighbours",
    "extra_trees": "Extra trees (forest)",
}


def _estimator(name: str, seed: int) -> Any:
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import LinearSVC

    builders: dict[str, Callable[[], Any]] = {
        # newton-cg converges in ~10 iterations on scaled deep features: several times faster than lbfgs.
        "logistic_regression": lambda: LogisticRegression(C=0.1, solver="newton-cg", max_iter=1000),
        "linear_svm": lambda: LinearSVC(C=0.01, max_iter=5000, random_state=seed),
        # Deep features are compared by angle (cosine), as in the similar-images search.
        "knn": lambda: KNeighborsClassifier(n_neighbors=5, metric="cosine", weights="distance"),
        # A random forest whose split points are drawn at random: on 768 deep features it
        # is both more accurate and about three times faster than a plain random forest.
        "extra_trees": lambda: ExtraTreesClassifier(n_estimators=150, max_features="sqrt", random_state=seed, n_jobs=1),
    }
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(builders)}.")
    return builders[name]()


def make_pipeline(name: str, *, seed: int = 0, **params: Any) -> "Any":
    """A scikit-learn ``Pipeline``: ``StandardScaler`` then the named classifier.

    Used by notebook 03, section 5 (exercise 4's candidates) and notebook 04, section 4 (the raw-pixel baseline).

    The scaler sits inside the pipeline so that, in cross-validation, it is fitted on
    each training fold only (fitting it on all the data first would leak the held-out
    fold's statistics into training).

    Args:
        name: ``logistic_regression``, ``linear_svm``, ``knn`` or ``extra_trees``.
        seed: Random state for the estimators that have one.
        **params: Parameters of the classifier (for example ``C=1.0``), set on the
            pipeline's ``classifier`` step.

    Raises:
        ValueError: Unknown model name or parameter.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = Pipeline([("scale", StandardScaler()), ("classifier", _estimator(name, seed))])
    if params:
        try:
            pipeline.set_params(**{f"classifier__{key}": value for key, value in params.items()})
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
    return pipeline


# Small grids around the values that win on backbone features (strong regularisation:
# hundreds of features for a few hundred images), so that the whole search stays
# within about half a minute on a 2-core laptop for ~600 training images.
PARAM_GRIDS: dict[str, dict[str, list[Any]]] = {
    "logistic_regression": {"classifier__C": [0.01, 0.1]},
    "linear_svm": {"classifier__C": [0.0003, 0.001, 0.003]},
    "knn": {"classifier__n_neighbors": [5, 15]},
    "extra_trees": {},
}


def candidates(names: list[str] | None = None, *, seed: int = 0) -> dict[str, tuple[Any, dict[str, list[Any]]]]:
    """The candidate models: name -> (pipeline, parameter grid).

    Used inside :func:`select_by_cv` (notebook 03, section 5).

    Args:
        names: Which models (default: all four, see :data:`MODEL_TITLES`).
        seed: Random state for the estimators.
    """
    names = list(MODEL_TITLES) if names is None else list(names)
    return {name: (make_pipeline(name, seed=seed), dict(PARAM_GRIDS.get(name, {}))) for name in names}


def cv_splitter(y: Any, folds: int = 5, *, seed: int = 0, groups: Any = None) -> Any:
    """Stratified, shuffled K-fold with K lowered to the smallest class size when needed.

    Used inside :func:`select_by_cv` (notebook 03, section 5).

    With ``groups`` (one group name per example: frames of one episode, a burst of
    photos), a stratified *group* K-fold: every group stays in one fold, so no fold is
    scored on near-copies of its training examples (see :mod:`helpers.splits`). Pass
    the splitter's ``split(X, y, groups)`` folds, or give ``groups`` to :func:`select_by_cv`.

    Raises:
        ValueError: Fewer than two classes, or a class with fewer than two examples.
    """
    from sklearn.model_selection import StratifiedKFold

    labels, counts = np.unique(np.asarray(y), return_counts=True)
    if len(labels) < 2:
        raise ValueError("cross-validation needs at least two classes in the training labels.")
    if counts.min() < 2:
        rare = labels[counts < 2].tolist()
        raise ValueError(f"classes {rare} have fewer than 2 training examples; add images or drop those classes.")
    if folds < 2:
        raise ValueError(f"folds must be at least 2, not {folds}.")
    if groups is not None:
        from sklearn.model_selection import StratifiedGroupKFold

        if len(groups) != len(y):
            raise ValueError(f"{len(groups)} groups for {len(y)} examples; give one group per example.")
        fewest = min(len(set(np.asarray(groups)[np.asarray(y) == label])) for label in labels)
        if fewest < 2:
            raise ValueError("group cross-validation needs at least two groups per class; use groups=None.")
        return StratifiedGroupKFold(n_splits=int(min(folds, fewest)), shuffle=True, random_state=seed)
    return StratifiedKFold(n_splits=int(min(folds, counts.min())), shuffle=True, random_state=seed)


@dataclasses.dataclass
class Selection:
    """Result of :func:`select_by_cv`: everything decided from the training data alone.

    Returned by :func:`select_by_cv` in notebook 03, section 5 (its ``best_model`` predicts again in section 10).

    Attributes:
        table: One row per model: model, title, CV accuracy (mean, std), best
            parameters, fit seconds (refit on all training data), search seconds.
        best: Name of the model with the best CV accuracy.
        models: Name -> pipeline refitted on all the training data with its best parameters.
        folds: Number of CV folds used.
    """

    table: pd.DataFrame
    best: str
    models: dict[str, Any]
    folds: int

    @property
    def best_model(self) -> Any:
        """The chosen, fitted pipeline."""
        return self.models[self.best]


def _check_xy(X: Any, y: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2:
        raise ValueError(f"{what} features must be a 2-D array (images x features), got shape {X.shape}.")
    if len(X) != len(y):
        raise ValueError(f"{what}: {len(X)} feature rows but {len(y)} labels.")
    if len(X) == 0:
        raise ValueError(f"{what} data is empty.")
    return X, y


def best_by_cv(table: pd.DataFrame) -> str:
    """The model with the highest mean CV accuracy (ties: lower std, then faster fit).

    Used inside :func:`select_by_cv` (notebook 03, section 5).
    """
    if table.empty:
        raise ValueError("no model in the table.")
    ordered = table.sort_values(["cv accuracy", "cv std", "fit seconds"], ascending=[False, True, True], kind="stable")
    return str(ordered.iloc[0]["model"])


def select_by_cv(
    X_train: Any,
    y_train: Any,
    models: Mapping[str, tuple[Any, Mapping[str, list[Any]]]] | None = None,
    *,
    folds: int = 5,
    seed: int = 0,
    n_jobs: int | None = None,
    verbose: bool = True,
    groups: Any = None,
) -> Selection:
    """Tune and compare models by cross-validation on the training data; never sees test data.

    Taught in notebook 03, section 5 (all four families, tuned by cross-validation).

    Each model's grid is searched with ``GridSearchCV`` (accuracy, stratified K-fold),
    then refitted on all the training data with its best parameters.

    Args:
        X_train: Training features, shape ``(n, d)``.
        y_train: Training labels.
        models: Name -> (pipeline, grid); :func:`candidates` by default.
        folds: Number of CV folds (lowered to the smallest class size if needed).
        seed: Seed of the fold shuffling and the estimators.
        n_jobs: Parallel jobs for each grid search (None: one).
        verbose: Print one line per model.
        groups: One group name per training example (the frame's ``group`` column):
            folds then keep each group whole (:func:`cv_splitter`), so that the CV score
            is not flattered by near-copies across folds.

    Returns:
        A :class:`Selection`.
    """
    from sklearn.model_selection import GridSearchCV

    X_train, y_train = _check_xy(X_train, y_train, "training")
    models = candidates(seed=seed) if models is None else models
    if not models:
        raise ValueError("give at least one model to compare.")
    splitter = cv_splitter(y_train, folds, seed=seed, groups=groups)
    rows, fitted = [], {}
    for name, (pipeline, grid) in models.items():
        began = time.perf_counter()
        search = GridSearchCV(pipeline, dict(grid) or {}, cv=splitter, scoring="accuracy", n_jobs=n_jobs, refit=True)
        search.fit(X_train, y_train, groups=None if groups is None else np.asarray(groups))
        seconds = time.perf_counter() - began
        best = search.best_index_
        rows.append(
            {
                "model": name,
                "title": MODEL_TITLES.get(name, name),
                "cv accuracy": float(search.cv_results_["mean_test_score"][best]),
                "cv std": float(search.cv_results_["std_test_score"][best]),
                "best params": {k.split("__", 1)[-1]: v for k, v in search.best_params_.items()},
                "fit seconds": float(search.refit_time_),
                "search seconds": seconds,
            }
        )
        fitted[name] = search.best_estimator_
        if verbose:
            row = rows[-1]
            print(f"{row['title']:<22} CV accuracy {row['cv accuracy']:.3f} ± {row['cv std']:.3f}  ({seconds:.1f} s)")
    table = pd.DataFrame(rows)
    return Selection(table=table, best=best_by_cv(table), models=fitted, folds=splitter.get_n_splits())


def results_table(selection: Selection, X_test: Any, y_test: Any) -> pd.DataFrame:
    """Score every selected model once on the test split: the results table.

    Taught in notebook 03, section 5 (the test split, used once, after the choice).

    The choice is already made (``selection.best``, by CV); the test column only
    reports how each model does on unseen images.

    Returns:
        DataFrame with model, title, CV accuracy, CV std, test accuracy, fit seconds,
        search seconds, best params and ``chosen`` (True on the CV winner), best CV first.
    """
    from sklearn.metrics import accuracy_score

    X_test, y_test = _check_xy(X_test, y_test, "test")
    table = selection.table.copy()
    table["test accuracy"] = [
        float(accuracy_score(y_test, selection.models[name].predict(X_test))) for name in table["model"]
    ]
    table["chosen"] = table["model"] == selection.best
    columns = [
        "model", "title", "cv accuracy", "cv std", "test accuracy",
        "fit seconds", "search seconds", "best params", "chosen",
    ]
    return table[columns].sort_values("cv accuracy", ascending=False, kind="stable").reset_index(drop=True)
