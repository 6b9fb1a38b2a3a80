"""TensorFlow Serving's version labels: `/v1/models/<name>/labels/<label>[:predict|/metadata]`, resolved from
the store's `<name>/version_labels.json` (`{"stable": 1, "canary": 2}`), so that a client pins `stable`
while a new version rolls out; an operator moves a label by editing the file (read at each load)."""
import json
import shutil

import pytest

from api.http.app import create_app, registry_of
from api.settings import Settings
from tests.conftest import WORDS

DIGIT = [[[0.0]] * 8] * 8


@pytest.fixture(scope="module")
def labelled(store, tmp_path_factory):
    root = tmp_path_factory.mktemp("labelled")
    shutil.copytree(store, root / "store")
    (root / "store" / "digits" / "version_labels.json").write_text(json.dumps({"stable": 1, "canary": 2,
                                                                              "gone": 7}))
    app = create_app(Settings(model_store=root / "store", run_dir=root / "run", warmup_batches=(1,),
                              model_versions="all"))
    registry_of(app).load()
    assert registry_of(app).ready, registry_of(app).error
    return app.test_client()


@pytest.mark.parametrize("label, version, labels", [("stable", "1", list("0123456789")), ("canary", "2", WORDS)])
def test_a_label_routes_to_the_version_it_names(labelled, label, version, labels):
    answer = labelled.post(f"/v1/models/digits/labels/{label}:predict", json={"instances": [DIGIT], "top_k": 10})
    assert answer.status_code == 200, answer.get_json()
    assert sorted(item["label"] for item in answer.get_json()["top_k"][0]) == sorted(labels)
    metadata = labelled.get(f"/v1/models/digits/labels/{label}/metadata").get_json()
    assert metadata["model_spec"]["version"] == version
    status = labelled.get(f"/v1/models/digits/labels/{label}")
    assert status.status_code == 200 and status.get_json()["model_version_status"]


def test_an_unknown_label_is_a_404_naming_it_and_the_labels_there_are(labelled):
    answer = labelled.post("/v1/models/digits/labels/beta:predict", json={"instances": [DIGIT]})
    assert answer.status_code == 404
    assert answer.get_json()["error"] == "model 'digits' has no version labelled 'beta' (labels: canary, gone, stable)"


def test_a_label_naming_a_version_not_loaded_is_a_404_naming_the_version(labelled):
    answer = labelled.get("/v1/models/digits/labels/gone/metadata")
    assert answer.status_code == 404 and "no version 7 loaded" in answer.get_json()["error"]


def test_a_bad_labels_file_fails_the_load_with_the_reason(store, tmp_path):
    shutil.copytree(store, tmp_path / "store")
    (tmp_path / "store" / "digits" / "version_labels.json").write_text('{"stable": "one"}')
    app = create_app(Settings(model_store=tmp_path / "store", run_dir=tmp_path / "run", warmup_batches=(1,)))
    registry_of(app).load()
    ready = app.test_client().get("/ready")
    assert ready.status_code == 503
    assert "version_labels.json: label 'stable' must name a version number" in ready.get_json()["error"]
