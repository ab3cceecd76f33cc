"""The seeds' house-price case study (Poland OLX, Q1 2022): predict the price per
square metre from the listing's features. The Kaggle file cannot be fetched here, so
a deterministic synthetic sample with the same columns stands in; point DATA_CSV at
the real file to use it.
"""

import json
import os
import tempfile

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.model_selection import train_test_split

FEATURES = ["floor", "area", "rooms", "population", "longitude", "latitude", "market_primary"]


def synthetic(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "floor": rng.integers(-1, 12, n),  # -1 basement, 0 ground, 10 = 10+, 11 attic
            "area": rng.uniform(20, 150, n).round(1),
            "rooms": rng.integers(1, 5, n),  # 4 = 4+
            "population": rng.choice([30_000, 120_000, 640_000, 1_790_000], n),
            "longitude": rng.uniform(14.1, 24.1, n),
            "latitude": rng.uniform(49.0, 54.8, n),
            "market_primary": rng.integers(0, 2, n),
        }
    )
    df["price_per_meter"] = (
        4000 + 0.004 * df["population"] - 15 * df["area"] + 300 * df["market_primary"] + rng.normal(0, 400, n)
    ).round(0)
    return df


def load() -> pd.DataFrame:
    path = os.environ.get("DATA_CSV")
    if not path:
        return synthetic()
    df = pd.read_csv(path)
    df["market_primary"] = (df["market"] == "primary").astype(int)
    return df.dropna(subset=FEATURES + ["price_per_meter"])


def main() -> str:
    mlflow.set_experiment("house-prices")
    df = load()
    x_train, x_test, y_train, y_test = train_test_split(df[FEATURES], df["price_per_meter"], random_state=1)
    params = {"n_estimators": 150, "max_depth": 3, "learning_rate": 0.1}
    with mlflow.start_run(run_name="gbr") as run:
        mlflow.set_tag("data", os.environ.get("DATA_CSV", "synthetic"))
        mlflow.log_params(params)
        model = GradientBoostingRegressor(random_state=1, **params).fit(x_train, y_train)
        pred = model.predict(x_test)
        mlflow.log_metrics({"mae": mean_absolute_error(y_test, pred), "r2": r2_score(y_test, pred)})
        with tempfile.TemporaryDirectory() as tmp:
            imp = os.path.join(tmp, "feature_importances.json")
            with open(imp, "w") as fh:
                json.dump(dict(zip(FEATURES, model.feature_importances_.round(4).tolist())), fh, indent=2)
            mlflow.log_artifact(imp)
        # MLflow 3.17 saves sklearn models with skops: name the extra types a tree
        # ensemble needs rather than falling back to pickle.
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x_test, pred),
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )
    print(f"run {run.info.run_id}: mae={mean_absolute_error(y_test, pred):.0f} PLN/m2")
    return run.info.run_id


if __name__ == "__main__":
    main()
