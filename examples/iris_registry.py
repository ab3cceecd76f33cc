"""The seeds' scenario 3, against our server: train an iris classifier, log it,
register it as `iris-classifier`, point the `champion` alias at it and load it back
by alias, the way a serving job would.

    export MLFLOW_TRACKING_URI=https://mlflow.example.com
    export MLFLOW_TRACKING_USERNAME=alice MLFLOW_TRACKING_PASSWORD=...
    export MLFLOW_TRACKING_SERVER_CERT_PATH=ca.pem   # self-signed front door only
    python examples/iris_registry.py
"""

import mlflow
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

MODEL_NAME = "iris-classifier"


def main() -> str:
    mlflow.set_experiment("iris")
    x, y = load_iris(return_X_y=True, as_frame=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=42)
    params = {"C": 0.5, "max_iter": 500}
    with mlflow.start_run(run_name="logreg") as run:
        mlflow.log_params(params)
        model = LogisticRegression(**params).fit(x_train, y_train)
        acc = accuracy_score(y_test, model.predict(x_test))
        mlflow.log_metric("accuracy", acc)
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x_test, model.predict(x_test)),
            input_example=x_test.head(3),
            registered_model_name=MODEL_NAME,
        )
    client = MlflowClient()
    version = max(int(v.version) for v in client.search_model_versions(f"name='{MODEL_NAME}'"))
    client.set_registered_model_alias(MODEL_NAME, "champion", str(version))
    loaded = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    preds = loaded.predict(x_test.head(5))
    print(f"run {run.info.run_id}: accuracy={acc:.3f}, {MODEL_NAME} v{version} is champion, predicts {list(preds)}")
    return run.info.run_id


if __name__ == "__main__":
    main()
