"""The model store: TensorFlow Serving's layout, version policies, formats we refuse."""
import json
import shutil

import pytest

from api.model.store import ServingConfig, StoreError, list_versions, read_version, select_versions


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
