"""The model store: TensorFlow Serving's layout, version policies, formats we refuse."""
import json
import shutil

import pytest

from api.model.store import (ServingConfig, StoreError, list_versions, read_version, read_version_labels,
                             select_versions)


def test_versions_are_numeric_folders_oldest_first(tmp_path):
    for name in ("10", "2", "1", "tmp", "3.bak"):
        (tmp_path / "m" / name).mkdir(parents=True)
    assert list_versions(tmp_path, "m") == [1, 2, 10]
    assert list_versions(tmp_path, "absent") == []


@pytest.mark.parametrize("policy, expected", [
    ("all", [1, 2, 10]), ("latest", [10]), ("latest:2", [2, 10]), ("latest:9", [1, 2, 10]), ("1,10", [1, 10])])
def test_version_policies(policy, expected):
    assert select_versions([1, 2, 10], policy) == expected


def test_a_policy_naming_a_missing_version_is_an_error():
    with pytest.raises(StoreError, match=r"\[7\]"):
        select_versions([1, 2], "1,7")


def test_read_version_finds_model_labels_and_serving_config(store):
    version = read_version(store, "digits", 1)
    assert version.format == "keras" and version.path.name == "model.keras"
    assert version.labels == tuple("0123456789")
    assert version.serving.image.color_mode == "L" and version.serving.image.resize == "box"


def test_hdf5_models_are_refused_with_the_reason(tmp_path):
    folder = tmp_path / "m" / "1"
    folder.mkdir(parents=True)
    (folder / "model.h5").write_bytes(b"\x89HDF\r\n")
    with pytest.raises(StoreError, match="HDF5 model, which loads without safe mode"):
        read_version(tmp_path, "m", 1)


def test_a_folder_without_a_model_is_an_error(tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    with pytest.raises(StoreError, match="no model.keras"):
        read_version(tmp_path, "m", 1)


def test_serving_config_rejects_unknown_settings(store, tmp_path):
    shutil.copytree(store / "digits" / "1", tmp_path / "digits" / "1")
    (tmp_path / "digits" / "1" / "serving.json").write_text(json.dumps({"image": {"colour": "L"}}))
    with pytest.raises(StoreError, match="colour"):
        read_version(tmp_path, "digits", 1)


def test_serving_config_defaults_to_rgb_bilinear_unit_scale():
    image = ServingConfig().image
    assert (image.color_mode, image.resize, image.scale, image.invert) == ("RGB", "bilinear", 1 / 255, False)


def test_version_labels_name_versions_as_tensorflow_serving_does(tmp_path):
    (tmp_path / "m").mkdir()
    assert read_version_labels(tmp_path, "m") == {}  # no file: no labels
    (tmp_path / "m" / "version_labels.json").write_text('{"stable": 1, "canary": 2}')
    assert read_version_labels(tmp_path, "m") == {"stable": 1, "canary": 2}


@pytest.mark.parametrize("text, message", [
    ('["stable"]', "must be an object"),
    ('{"stable": "1"}', "must name a version number, got '1'"),
    ('{"stable": 0}', "must name a version number, got 0"),
    ('{"stable": true}', "must name a version number, got True"),
    ('{"2": 1}', "'2' is not a version label"),
    ('{"a b": 1}', "'a b' is not a version label"),
    ("{stable: 1}", "not JSON"),
])
def test_a_bad_labels_file_is_refused_naming_it_and_the_problem(tmp_path, text, message):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "version_labels.json").write_text(text)
    with pytest.raises(StoreError, match="version_labels.json") as refused:
        read_version_labels(tmp_path, "m")
    assert message in str(refused.value)
