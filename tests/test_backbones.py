"""Each registry source loads from a local copy; downloads are tested on 127.0.0.1."""
import numpy as np
import pytest

from retrain.errors import UserError
from retrain.models.architectures import ARCHITECTURES, get_architecture, tfhub_spec
from retrain.models.backbones import load_backbone
from tests.conftest import TINY_FEATURES, TINY_SIZE, tiny_graph_def, tiny_spec, tiny_tarball


def test_registry_has_every_poets_name_and_the_newer_backbones():
    poets = [f"mobilenet_{w}_{s}{q}" for w in ("1.0", "0.75", "0.50", "0.25") for s in (224, 192, 160, 128)
             for q in ("", "_quantized")]
    assert len(poets) == 32 and all(name in ARCHITECTURES for name in poets)
    for name in ("inception_v3", "inception_v4", "mobilenetv2", "vgg16", "resnet50"):
        spec = ARCHITECTURES[name]
        assert spec.url.startswith("http") and spec.input_size > 0 and spec.feature_size > 0
    assert ARCHITECTURES["mobilenetv2"].feature_size == 1792  # MobileNet v2 1.4


def test_unknown_architecture_suggests_close_names():
    with pytest.raises(UserError, match="did you mean mobilenet_1.0_224"):
        get_architecture("mobilenet_1.0_225")


def test_frozen_graph_tarball_is_downloaded_once_then_used_offline(http_server, tmp_path):
    folder, base_url, requests = http_server
    (folder / "tiny_v1_frozen.tgz").write_bytes(tiny_tarball())
    spec = tiny_spec(url=f"{base_url}/tiny_v1_frozen.tgz")
    model_dir = tmp_path / "models"
    backbone = load_backbone(spec, model_dir)
    assert requests == ["/tiny_v1_frozen.tgz"]
    assert (model_dir / "tiny_v1" / "frozen_graph.pb").is_file()
    assert not (model_dir / "tiny_v1" / "tiny_v1_frozen.tgz").exists()
    features = backbone(np.full((3, TINY_SIZE, TINY_SIZE, 3), 128, np.uint8))
    assert features.shape == (3, TINY_FEATURES)
    # Offline: the server is unreachable, but the file is there.
    offline = tiny_spec(url="http://127.0.0.1:9/unreachable.tgz")
    assert load_backbone(offline, model_dir).feature_size == TINY_FEATURES
    assert requests == ["/tiny_v1_frozen.tgz"]


def test_offline_with_nothing_in_model_dir_names_the_file_to_place(tmp_path):
    spec = tiny_spec(url="http://127.0.0.1:9/tiny_v1_frozen.tgz")
    with pytest.raises(UserError) as error:
        load_backbone(spec, tmp_path / "models")
    message = str(error.value)
    assert "tiny_v1_frozen.tgz" in message and str(tmp_path / "models" / "tiny_v1" / "frozen_graph.pb") in message


def test_file_hash_is_verified(tiny_model_dir):
    with pytest.raises(UserError, match="damaged or not the expected file"):
        load_backbone(tiny_spec(file_hash="sha256:" + "0" * 64), tiny_model_dir)


def test_archive_without_the_expected_member_is_rejected(http_server, tmp_path):
    folder, base_url, _ = http_server
    (folder / "wrong.tgz").write_bytes(tiny_tarball())
    spec = tiny_spec(url=f"{base_url}/wrong.tgz", archive_member="quantized_graph.pb",
                     model_file="tiny_v1/quantized_graph.pb")
    with pytest.raises(UserError, match="has no file named quantized_graph.pb"):
        load_backbone(spec, tmp_path / "models")


def test_wrong_feature_size_in_a_row_is_caught(tiny_model_dir):
    with pytest.raises(UserError, match="gives 8-d features, the registry says 16"):
        load_backbone(tiny_spec(feature_size=16), tiny_model_dir)


def test_a_row_whose_input_size_the_graph_does_not_take_is_one_line(tiny_model_dir):
    with pytest.raises(UserError, match=f"backbone tiny does not accept {TINY_SIZE + 8}x{TINY_SIZE + 8} images"):
        load_backbone(tiny_spec(input_size=TINY_SIZE + 8), tiny_model_dir)


def save_tiny_hub_module(directory):
    """A TF-Hub-style feature-vector SavedModel: [N, 16, 16, 3] in [0, 1] -> [N, 6]; returns its kernel."""
    import tensorflow as tf

    class FeatureVector(tf.Module):
        def __init__(self):
            self.kernel = tf.Variable(tf.random.stateless_normal([3, 6], seed=[1, 2]))

        @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.float32)])
        def __call__(self, images):
            return tf.matmul(tf.reduce_mean(images, axis=[1, 2]), self.kernel)

    module = FeatureVector()
    tf.saved_model.save(module, str(directory))
    return module.kernel.numpy()


def check_tiny_hub_backbone(backbone, kernel):
    assert backbone.feature_size == 6
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    expected = (images.astype(np.float32) / 255.0).mean(axis=(1, 2)) @ kernel
    np.testing.assert_allclose(backbone(images), expected, rtol=1e-4, atol=1e-5)


def test_tfhub_module_loads_from_a_local_saved_model(tmp_path):
    kernel = save_tiny_hub_module(tmp_path / "hub_module")
    check_tiny_hub_backbone(load_backbone(tfhub_spec(str(tmp_path / "hub_module"), input_size=16),
                                          tmp_path / "models"), kernel)


def test_tfhub_url_is_downloaded_into_model_dir_once_then_used_offline(http_server, tmp_path, monkeypatch):
    import tarfile
    monkeypatch.delenv("TFHUB_CACHE_DIR", raising=False)
    monkeypatch.setattr("retrain.models.backbones._USER_TFHUB_CACHE_DIR", None)
    folder, base_url, requests = http_server
    kernel = save_tiny_hub_module(tmp_path / "hub_module")
    with tarfile.open(folder / "module.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "hub_module", arcname=".")
    spec = tfhub_spec(f"{base_url}/module.tar.gz", input_size=16)
    model_dir = tmp_path / "models"
    check_tiny_hub_backbone(load_backbone(spec, model_dir), kernel)
    assert len(requests) == 1 and (model_dir / "tfhub").is_dir()
    (folder / "module.tar.gz").unlink()  # the "network" no longer has it
    check_tiny_hub_backbone(load_backbone(spec, model_dir), kernel)
    assert len(requests) == 1


def test_tfhub_url_unreachable_offline_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr("retrain.models.backbones._USER_TFHUB_CACHE_DIR", None)
    with pytest.raises(UserError, match="cannot load TF-Hub module .* to work offline"):
        load_backbone(tfhub_spec("http://127.0.0.1:9/module.tar.gz", input_size=16), tmp_path / "models")


def test_tfhub_bad_handle_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="neither a URL nor a SavedModel folder"):
        load_backbone(tfhub_spec(str(tmp_path / "nothing")), tmp_path / "models")


def test_keras_application_loads_from_a_local_weights_file(tmp_path):
    import keras

    from retrain.models.architectures import ArchitectureSpec
    model_dir = tmp_path / "models"
    weights = model_dir / "keras" / "tiny_mobilenet_v2.weights.h5"
    weights.parent.mkdir(parents=True)
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, pooling="avg",
                                               input_shape=(64, 64, 3), alpha=0.35)
    reference.save_weights(str(weights))
    spec = ArchitectureSpec(name="tiny_keras", source="keras", keras_model="MobileNetV2",
                            keras_kwargs={"alpha": 0.35}, url="http://127.0.0.1:9/unreachable.h5",
                            model_file="keras/tiny_mobilenet_v2.weights.h5", input_size=64,
                            input_mean=0.0, input_std=1.0, feature_size=1280)
    backbone = load_backbone(spec, model_dir)
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    expected = reference(keras.applications.mobilenet_v2.preprocess_input(images.astype(np.float32)),
                         training=False)
    np.testing.assert_allclose(backbone(images), np.asarray(expected), rtol=1e-4, atol=1e-4)


def test_poets_batch_one_graph_is_batched(tiny_model_dir):
    backbone = load_backbone(tiny_spec(), tiny_model_dir)
    assert backbone(np.zeros((5, TINY_SIZE, TINY_SIZE, 3), np.uint8)).shape == (5, TINY_FEATURES)
    assert tiny_graph_def().node[0].attr["shape"].shape.dim[0].size == 1


@pytest.mark.parametrize("name", ["inception_v3", "vgg16", "resnet50"])  # the others: test_todays_backbones.py
def test_keras_rows_build_and_give_the_registered_feature_size(name):
    """Weights can't be downloaded here, but each row's constructor, input size and feature size can be checked."""
    import keras
    spec = ARCHITECTURES[name]
    model = getattr(keras.applications, spec.keras_model)(
        include_top=False, weights=None, pooling="avg", input_shape=(spec.input_size, spec.input_size, 3),
        **dict(spec.keras_kwargs))
    assert model.output_shape == (None, spec.feature_size)
