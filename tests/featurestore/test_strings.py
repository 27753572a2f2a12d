"""One string codec for every string column: fixed-length utf-8 written, any stored form read back."""

from __future__ import annotations

import h5py
import numpy as np

from featurestore.strings import decode_strings, encode_strings

NAMES = ["cat", "", "émeu", "bad-\udcff-name.png"]  # the last: a file name that is not valid UTF-8


def test_fixed_length_columns_round_trip_any_name(tmp_path):
    data, dtype = encode_strings(NAMES)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("fixed", data=data, dtype=dtype)
        f.create_dataset("empty", data=encode_strings([])[0], dtype=encode_strings([])[1])
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f["fixed"].dtype.kind == "S"
        assert decode_strings(f["fixed"][()]).tolist() == NAMES
        assert decode_strings(f["empty"][()]).tolist() == []


def test_variable_length_columns_of_earlier_shards_read_the_same(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("vlen", data=NAMES[:3], dtype=h5py.string_dtype("utf-8"))
    with h5py.File(tmp_path / "f.h5", "r") as f:
        decoded = decode_strings(f["vlen"][()])
    assert decoded.dtype == object and decoded.tolist() == NAMES[:3]


def test_str_and_ascii_bytes_decode_to_object_arrays_of_str():
    for raw in (np.array(["a", "b"]), np.array([b"a", b"b"]), ["a", "b"], np.array(["a", "b"], dtype=object)):
        decoded = decode_strings(raw)
        assert decoded.dtype == object and decoded.tolist() == ["a", "b"]
