"""The seeds' demo-mlflow wine example: an ElasticNet sweep over alpha x l1_ratio,
one nested run per point, the best one tagged on the parent run.

sklearn ships the UCI wine *recognition* data (not the wine-quality CSV the seed
downloads), so this regresses the alcohol content on the other measurements: the
tracking pattern is the same and nothing is fetched at run time.
"""

import itertools

import mlflow
import numpy as np
from sklearn.datasets import load_wine
from sklearn.linear_model import ElasticNet
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def main() -> str:
    mlflow.set_experiment("wine-elasticnet")
    data = load_wine(as_frame=True).frame
    y = data.pop("alcohol")
    x_train, x_test, y_train, y_test = train_test_split(data, y, test_size=0.25, random_state=7)
    best = (np.inf, None)
    with mlflow.start_run(run_name="sweep") as parent:
        for alpha, l1_ratio in itertools.product([0.01, 0.1, 0.5], [0.2, 0.5, 0.8]):
            with mlflow.start_run(run_name=f"a{alpha}-l{l1_ratio}", nested=True) as child:
                model = make_pipeline(StandardScaler(), ElasticNet(alpha=alpha, l1_ratio=l1_ratio, random_state=7))
                model.fit(x_train, y_train)
                pred = model.predict(x_test)
                rmse = float(np.sqrt(mean_squared_error(y_test, pred)))
                mlflow.log_params({"alpha": alpha, "l1_ratio": l1_ratio})
                mlflow.log_metrics({"rmse": rmse, "mae": mean_absolute_error(y_test, pred), "r2": r2_score(y_test, pred)})
                if rmse < best[0]:
                    best = (rmse, child.info.run_id)
        mlflow.set_tags({"best_run_id": best[1], "best_rmse": f"{best[0]:.4f}"})
    print(f"sweep {parent.info.run_id}: best rmse {best[0]:.4f} in run {best[1]}")
    return parent.info.run_id


if __name__ == "__main__":
    main()
