"""The weight-file formats read without their libraries: safetensors (read and written here),
PyTorch's zip (unpickled with an allow-list: nothing in the file runs), Keras' HDF5 layouts."""

import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from core.models.weights import WeightsFileError, open_weights_file, write_safetensors
from core.models.weights.safetensors import read_safetensors
from core.models.weights.torch_zip import read_pth
from tests.fixtures.torchvision import write_pickle_zip, write_pth

ARRAYS = {
    "conv.weight": np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3) / 7,
    "bn.num_batches_tracked": np.array(12, np.int64),
    "fc.bias": np.array([-1.5, 0.25], np.float16),
}


def test_safetensors_round_trip_and_the_headers_layout(tmp_path):
    path = write_safetensors(tmp_path / "w.safetensors", ARRAYS, metadata={"format": "pt"})
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    assert length % 8 == 0  # padded, so every tensor starts aligned
    assert header["__metadata__"] == {"format": "pt"}
    assert header["conv.weight"] == {
        "dtype": "F32",
        "shape": [2, 3, 3, 3],
        "data_offsets": [0, 216],
    }
    assert header["bn.num_batches_tracked"]["dtype"] == "I64"
    assert len(raw) == 8 + length + 216 + 8 + 4
    tensors = read_safetensors(path)
    for name, value in ARRAYS.items():
        assert tensors[name].shape == value.shape
        loaded = tensors[name].load()
        assert loaded.dtype == value.dtype
        np.testing.assert_array_equal(loaded, value)


def _with_header(path: Path, header: dict, data: bytes = b"\0" * 16) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 8]}, "do not hold"),
        ({"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}, "inside the file's 16 bytes"),
        ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, "not a list of sizes"),
        ({"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}, "not one of"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [8]}, "not two offsets"),
    ],
)
def test_a_safetensors_header_that_does_not_fit_its_data_is_refused(tmp_path, entry, message):
    path = _with_header(tmp_path / "bad.safetensors", {"t": entry})
    with pytest.raises(WeightsFileError, match=message):
        read_safetensors(path)


def test_overlapping_tensors_and_a_huge_header_length_are_refused(tmp_path):
    overlap = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    with pytest.raises(WeightsFileError, match="overlap"):
        read_safetensors(_with_header(tmp_path / "o.safetensors", overlap))
    huge = tmp_path / "h.safetensors"
    huge.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(WeightsFileError, match="not a weights file"):
        open_weights_file(huge)


def test_a_pytorch_zip_state_dict_is_read_without_pytorch(tmp_path):
    path = write_pth(tmp_path / "w.pth", ARRAYS | {"fc.bias": ARRAYS["fc.bias"].astype(np.float32)})
    tensors = read_pth(path)
    assert set(tensors) == set(ARRAYS)
    np.testing.assert_array_equal(tensors["conv.weight"].load(), ARRAYS["conv.weight"])
    assert tensors["bn.num_batches_tracked"].load() == 12
    assert open_weights_file(path).format == "pth"


def test_a_transposed_view_is_read_through_its_strides(tmp_path):
    """A tensor saved as a view keeps its storage and strides (torch.save of ``w.t()``)."""
    from tests.fixtures.torchvision import state_dict_pickle

    base = np.arange(6, dtype=np.float32).reshape(2, 3)
    pickled, storages = state_dict_pickle({"w": base})
    # the same storage read as the (3, 2) transpose: size (3, 2), stride (1, 3)
    pickled = pickled.replace(
        b"(J\x02\x00\x00\x00J\x03\x00\x00\x00t(J\x03\x00\x00\x00J\x01\x00\x00\x00t",
        b"(J\x03\x00\x00\x00J\x02\x00\x00\x00t(J\x01\x00\x00\x00J\x03\x00\x00\x00t",
    )
    path = tmp_path / "view.pth"
    write_pickle_zip(path, pickled)
    import zipfile

    with zipfile.ZipFile(path, "a") as z:
        z.writestr("archive/data/0", storages["0"])
    np.testing.assert_array_equal(read_pth(path)["w"].load(), base.T)


def test_a_pickle_that_would_run_code_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "ran"
    evil = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    path = write_pickle_zip(tmp_path / "evil.pth", evil)
    with pytest.raises(WeightsFileError, match=r"refused: it refers to os\.system"):
        read_pth(path)
    with pytest.raises(WeightsFileError, match=r"os\.system"):
        open_weights_file(path)
    assert not marker.exists()
    builtin = pickle.dumps({"x": __import__("builtins").eval}, protocol=2)
    with pytest.raises(WeightsFileError, match=r"builtin__\.eval"):
        read_pth(write_pickle_zip(tmp_path / "eval.pth", builtin))


def test_a_tensor_reaching_past_its_storage_is_refused_not_read(tmp_path):
    from tests.fixtures.torchvision import state_dict_pickle

    pickled, storages = state_dict_pickle({"w": np.zeros((2, 3), np.float32)})
    path = tmp_path / "far.pth"
    write_pickle_zip(
        path,
        pickled.replace(
            b"J\x03\x00\x00\x00J\x01\x00\x00\x00t", b"J\x00\x10\x00\x00J\x01\x00\x00\x00t"
        ),
    )
    import zipfile

    with zipfile.ZipFile(path, "a") as z:
        z.writestr("archive/data/0", storages["0"])
    with pytest.raises(WeightsFileError, match="reaches past its storage"):
        read_pth(path)["w"].load()


def test_a_legacy_pytorch_file_is_refused_saying_how_to_convert_it(tmp_path):
    legacy = tmp_path / "old.pth"
    legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + b"rest")
    with pytest.raises(WeightsFileError, match=r"not a zip.*safetensors"):
        open_weights_file(legacy)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(WeightsFileError, match="not a weights file this service reads"):
        open_weights_file(other)
    with pytest.raises(WeightsFileError, match="no such file"):
        open_weights_file(tmp_path / "absent.h5")


def test_keras_named_h5_layouts_keras_2_and_a_whole_model(tmp_path):
    """The published files are Keras 2's: datasets named ``layer/kernel:0``, listed in the
    ``layer_names`` and ``weight_names`` attributes (a whole model: under ``model_weights``)."""
    import h5py

    kernel = np.ones((1, 1, 3, 4), np.float32)
    for name, base in (("weights.h5", ""), ("model.h5", "model_weights/")):
        with h5py.File(tmp_path / name, "w") as f:
            root = f.create_group(base) if base else f
            root.attrs["layer_names"] = [b"conv1_conv"]
            group = root.create_group("conv1_conv")
            group.attrs["weight_names"] = [b"conv1_conv/kernel:0", b"conv1_conv/bias:0"]
            group.create_dataset("conv1_conv/kernel:0", data=kernel)
            group.create_dataset("conv1_conv/bias:0", data=np.arange(4, dtype=np.float32))
        file = open_weights_file(tmp_path / name)
        assert (file.format, file.source) == ("keras-h5", "keras")
        assert {n: t.shape for n, t in file.tensors.items()} == {
            "conv1_conv/kernel": (1, 1, 3, 4),
            "conv1_conv/bias": (4,),
        }
        np.testing.assert_array_equal(file.tensors["conv1_conv/bias"].load(), np.arange(4))


def test_a_keras_model_of_ours_is_read_by_layer_name_without_building_it(tmp_path):
    """A .keras file names its weights by class and position only; its config names the layers:
    read in place (the weights are a stored zip member), not copied or built."""
    from core.models import build_model, parse_architecture

    model = build_model("resnet8", input_shape=(16, 16, 3), num_classes=3, padding="symmetric")
    model.save(tmp_path / "r8.keras")
    file = open_weights_file(tmp_path / "r8.keras")
    assert (file.format, file.source, file.head_classes) == ("keras-model", "model", 3)
    assert (file.layout.stride_in, file.layout.padding) == ("3x3", "symmetric")
    assert file.normalization == "per_pixel_mean"
    for layer in model.layers:
        for i, value in enumerate(layer.get_weights()):
            np.testing.assert_array_equal(file.tensors[f"{layer.name}/{i}"].load(), value)
    file.check(parse_architecture("resnet8"))
    with pytest.raises(WeightsFileError, match="does not fit resnet14"):
        file.check(parse_architecture("resnet14"))
