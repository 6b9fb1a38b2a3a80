"""Keras applications as users bring them: MobileNetV2 and EfficientNetB0 (its preprocessing, Rescaling and
Normalization layers, inside the model), built here with `weights=None` (no download), saved as `.keras`,
served through the app, answering what the same model answers in-process.

Small inputs (64x64x3) keep the test quick; the layers, and so what the loader must accept, are the same
at 224x224.
"""
import keras
import numpy as np
import pytest

from api.http.app import create_app, registry_of
from api.settings import Settings

APPLICATIONS = {
    "mobilenet_v2": lambda: keras.applications.MobileNetV2(input_shape=(64, 64, 3), weights=None, classes=5),
    "efficientnet_b0": lambda: keras.applications.EfficientNetB0(input_shape=(64, 64, 3), weights=None, classes=5),
}


@pytest.mark.parametrize("name", APPLICATIONS)
def test_an_application_serves_what_it_answers_in_process(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = APPLICATIONS[name]()
    folder = tmp_path / "store" / name / "1"
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    app = create_app(Settings(model_store=tmp_path / "store", model_name=name, run_dir=tmp_path / "run",
                              warmup_batches=(1,), max_batch_size=4))
    registry = registry_of(app)
    registry.load()
    assert registry.ready, registry.error

    x = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    answer = app.test_client().post("/predict", json={"instances": x.tolist()})
    assert answer.status_code == 200, answer.get_json()
    served = np.array(answer.get_json()["predictions"])
    expected = model(x, training=False).numpy()
    assert served.shape == (3, 5)
    assert np.allclose(served, expected, atol=1e-5), np.abs(served - expected).max()

    meta = app.test_client().get(f"/v2/models/{name}").get_json()
    assert meta["inputs"][0]["shape"] == [-1, 64, 64, 3] and meta["outputs"][0]["shape"] == [-1, 5]
