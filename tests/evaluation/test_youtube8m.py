import os
import struct
from pathlib import Path

import numpy as np
import pytest

from videos.youtube8m import (
    MEAN_AUDIO_DIM,
    MEAN_RGB_DIM,
    ExampleDecodeError,
    TFRecordError,
    build_example,
    crc32c,
    iter_tfrecord,
    iter_video_level_features,
    masked_crc32c,
    parse_example,
    read_vocabulary,
    write_tfrecord,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = (REPO_ROOT / os.environ.get("RECSYS_DATA_DIR", "../shared/data")).resolve()
YOUTUBE8M_DIR = DATA_DIR / "youtube8m"


def _crc32c_bitwise(data: bytes) -> int:
    """Compute CRC-32C one bit at a time, as an independent reference."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _field(key: int, body: bytes) -> bytes:
    """Encode a length-delimited field whose key and length each fit in one byte."""
    assert key < 0x80
    assert len(body) < 0x80
    return bytes([key, len(body)]) + body


def _example(name: bytes, feature: bytes) -> bytes:
    # Example.features (0x0a) > Features.feature map entry (0x0a) > key (0x0a), value (0x12)
    return _field(0x0A, _field(0x0A, _field(0x0A, name) + _field(0x12, feature)))


def _video_features(video_id: str = "AbCd", labels=(3, 17)) -> dict:
    return {
        "id": video_id.encode(),
        "labels": list(labels),
        "mean_rgb": np.linspace(-1, 1, MEAN_RGB_DIM, dtype=np.float32),
        "mean_audio": np.linspace(0, 1, MEAN_AUDIO_DIM, dtype=np.float32),
    }


# ---------------------------------------------------------------------------
# CRC-32C
# ---------------------------------------------------------------------------


def test_crc32c_check_value():
    # The published CRC-32C check value for the ASCII digits 1..9.
    assert crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize("length", [0, 1, 5, 63, 64, 65, 4095, 4096, 4097, 4099, 10_000])
def test_crc32c_matches_bitwise_reference(length):
    data = np.random.default_rng(length).integers(0, 256, size=length, dtype=np.uint8).tobytes()

    assert crc32c(data) == _crc32c_bitwise(data)


def test_masked_crc32c_rotates_and_adds_delta():
    crc = _crc32c_bitwise(b"abc")
    expected = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF

    assert masked_crc32c(b"abc") == expected


# ---------------------------------------------------------------------------
# TFRecord framing
# ---------------------------------------------------------------------------


def test_tfrecord_round_trip(tmp_path):
    path = tmp_path / "records.tfrecord"
    payloads = [b"first", b"", bytes(range(256)) * 40]

    count = write_tfrecord(path, payloads)

    assert count == 3
    assert list(iter_tfrecord(path)) == payloads


def test_tfrecord_framing_layout(tmp_path):
    path = tmp_path / "one.tfrecord"

    write_tfrecord(path, [b"hello"])
    raw = path.read_bytes()

    # 8-byte length + 4-byte length CRC + 5-byte payload + 4-byte payload CRC
    assert len(raw) == 8 + 4 + 5 + 4
    assert struct.unpack("<Q", raw[:8]) == (5,)
    assert struct.unpack("<I", raw[8:12]) == (masked_crc32c(raw[:8]),)
    assert raw[12:17] == b"hello"
    assert struct.unpack("<I", raw[17:]) == (masked_crc32c(b"hello"),)


def test_tfrecord_empty_file_yields_nothing(tmp_path):
    path = tmp_path / "empty.tfrecord"
    path.write_bytes(b"")

    assert list(iter_tfrecord(path)) == []


def _write_two_records(tmp_path) -> tuple[Path, bytearray, int]:
    path = tmp_path / "two.tfrecord"
    write_tfrecord(path, [b"A" * 10, b"B" * 100])
    second_offset = 8 + 4 + 10 + 4
    return path, bytearray(path.read_bytes()), second_offset


def test_tfrecord_flipped_payload_byte_fails_crc(tmp_path):
    # given
    path, raw, second_offset = _write_two_records(tmp_path)
    raw[second_offset + 12 + 50] ^= 0x01
    path.write_bytes(bytes(raw))

    # when
    with pytest.raises(TFRecordError, match="payload CRC mismatch") as caught:
        list(iter_tfrecord(path))

    # then
    assert caught.value.offset == second_offset
    assert str(path) in str(caught.value)
    assert f"offset {second_offset}" in str(caught.value)


def test_tfrecord_flipped_length_byte_fails_crc(tmp_path):
    path, raw, _ = _write_two_records(tmp_path)
    raw[0] ^= 0x01
    path.write_bytes(bytes(raw))

    with pytest.raises(TFRecordError, match="length CRC mismatch") as caught:
        list(iter_tfrecord(path))

    assert caught.value.offset == 0


def test_tfrecord_skip_crc_returns_corrupt_payload(tmp_path):
    path, raw, second_offset = _write_two_records(tmp_path)
    raw[second_offset + 12] = ord("C")
    path.write_bytes(bytes(raw))

    payloads = list(iter_tfrecord(path, verify_crc=False))

    assert payloads[1] == b"C" + b"B" * 99


def test_tfrecord_truncated_payload_raises(tmp_path):
    path, raw, second_offset = _write_two_records(tmp_path)
    path.write_bytes(bytes(raw[:-3]))

    with pytest.raises(TFRecordError, match="truncated record") as caught:
        list(iter_tfrecord(path))

    assert caught.value.offset == second_offset


def test_tfrecord_truncated_header_raises(tmp_path):
    path, raw, second_offset = _write_two_records(tmp_path)
    path.write_bytes(bytes(raw[: second_offset + 5]))

    with pytest.raises(TFRecordError, match="truncated header"):
        list(iter_tfrecord(path))


def test_tfrecord_first_record_survives_later_truncation(tmp_path):
    path, raw, _ = _write_two_records(tmp_path)
    path.write_bytes(bytes(raw[:-3]))
    records = iter_tfrecord(path)

    assert next(records) == b"A" * 10


def test_tfrecord_huge_length_without_crc_raises_truncated(tmp_path):
    # A corrupt length must not make the reader allocate the claimed size.
    path = tmp_path / "huge.tfrecord"
    path.write_bytes(struct.pack("<Q", 2**60) + b"\x00" * 8)

    with pytest.raises(TFRecordError, match="truncated record"):
        list(iter_tfrecord(path, verify_crc=False))


# ---------------------------------------------------------------------------
# tf.train.Example decoding, from hand-made bytes
# ---------------------------------------------------------------------------


def test_parse_packed_int64_list():
    # Int64List.value packed (0x0a): 1 -> 01, 300 -> ac 02, -1 -> ff x9 01 (10-byte two's complement)
    int64_list = _field(0x0A, b"\x01\xac\x02" + b"\xff" * 9 + b"\x01")
    feature = _field(0x1A, int64_list)  # Feature.int64_list = field 3

    assert parse_example(_example(b"n", feature)) == {"n": [1, 300, -1]}


def test_parse_unpacked_int64_list():
    # Int64List.value unpacked: key 0x08 (field 1, varint) before each value
    int64_list = b"\x08\x01\x08\xac\x02"
    feature = _field(0x1A, int64_list)

    assert parse_example(_example(b"n", feature)) == {"n": [1, 300]}


def test_parse_packed_float_list():
    # FloatList.value packed: 1.5 = 0x3fc00000, -2.0 = 0xc0000000, little-endian
    float_list = _field(0x0A, b"\x00\x00\xc0\x3f" + b"\x00\x00\x00\xc0")
    feature = _field(0x12, float_list)  # Feature.float_list = field 2

    assert parse_example(_example(b"f", feature)) == {"f": [1.5, -2.0]}


def test_parse_unpacked_float_list():
    # FloatList.value unpacked: key 0x0d (field 1, fixed32) before each value
    float_list = b"\x0d\x00\x00\xc0\x3f" + b"\x0d\x00\x00\x00\xc0"
    feature = _field(0x12, float_list)

    assert parse_example(_example(b"f", feature)) == {"f": [1.5, -2.0]}


def test_parse_bytes_list():
    bytes_list = _field(0x0A, b"hi") + _field(0x0A, b"")
    feature = _field(0x0A, bytes_list)  # Feature.bytes_list = field 1

    assert parse_example(_example(b"s", feature)) == {"s": [b"hi", b""]}


def test_parse_skips_unknown_fields():
    # Example field 7 as a varint (0x38 05) and Feature field 9 as fixed64 (0x49 + 8 bytes)
    feature = b"\x49" + b"\x00" * 8 + _field(0x1A, b"\x08\x02")
    payload = b"\x38\x05" + _example(b"n", feature)

    assert parse_example(payload) == {"n": [2]}


def test_parse_empty_feature_is_empty_list():
    assert parse_example(_example(b"e", b"")) == {"e": []}


def test_parse_rejects_truncated_message():
    # Example.features claims 5 bytes, but only 1 follows.
    with pytest.raises(ExampleDecodeError, match="needs 5 bytes"):
        parse_example(b"\x0a\x05\x0a")


def test_parse_rejects_truncated_varint():
    with pytest.raises(ExampleDecodeError, match="truncated varint"):
        parse_example(_example(b"n", _field(0x1A, b"\x08\xff")))


def test_parse_rejects_group_wire_type():
    with pytest.raises(ExampleDecodeError, match="unsupported wire type 3"):
        parse_example(b"\x0b")


# ---------------------------------------------------------------------------
# build_example
# ---------------------------------------------------------------------------


def test_build_example_round_trip():
    # given
    features = {
        "id": b"xyz",
        "title": "héllo",
        "labels": [0, 5, 2**63 - 1, -(2**63)],
        "scores": [0.5, 1],
        "vector": np.array([1.0, -3.25], dtype=np.float64),
        "counts": np.array([4, 9], dtype=np.int32),
        "empty": [],
    }

    # when
    parsed = parse_example(build_example(features))

    # then
    assert parsed["id"] == [b"xyz"]
    assert parsed["title"] == ["héllo".encode()]
    assert parsed["labels"] == [0, 5, 2**63 - 1, -(2**63)]
    assert parsed["scores"] == [0.5, 1.0]
    assert parsed["vector"] == [1.0, -3.25]
    assert parsed["counts"] == [4, 9]
    assert parsed["empty"] == []


def test_build_example_matches_hand_encoding():
    expected = _example(b"n", _field(0x1A, _field(0x0A, b"\x01\xac\x02")))

    assert build_example({"n": [1, 300]}) == expected


def test_build_example_rejects_mixed_types():
    with pytest.raises(ValueError, match="feature 'mixed'"):
        build_example({"mixed": [1, b"x"]})


def test_build_example_rejects_int64_overflow():
    with pytest.raises(ValueError, match="outside the int64 range"):
        build_example({"big": [2**63]})


# ---------------------------------------------------------------------------
# YouTube-8M video-level records
# ---------------------------------------------------------------------------


def test_video_level_features_round_trip(tmp_path):
    # given
    path = tmp_path / "videos.tfrecord"
    write_tfrecord(path, [build_example(_video_features("AbCd", (3, 17))), build_example(_video_features("Ef", (1,)))])

    # when
    videos = list(iter_video_level_features(path))

    # then
    assert [video.id for video in videos] == ["AbCd", "Ef"]
    assert videos[0].labels == [3, 17]
    assert videos[0].mean_rgb.dtype == np.float32
    assert videos[0].mean_rgb.shape == (MEAN_RGB_DIM,)
    assert videos[0].mean_audio.shape == (MEAN_AUDIO_DIM,)
    np.testing.assert_array_equal(videos[0].mean_rgb, np.linspace(-1, 1, MEAN_RGB_DIM, dtype=np.float32))


def test_video_level_features_reject_wrong_size(tmp_path):
    path = tmp_path / "bad.tfrecord"
    features = _video_features()
    features["mean_rgb"] = np.zeros(10, dtype=np.float32)
    write_tfrecord(path, [build_example(features)])

    with pytest.raises(ExampleDecodeError, match="'mean_rgb' has 10 values; expected 1024"):
        list(iter_video_level_features(path))


def test_video_level_features_reject_missing_audio(tmp_path):
    path = tmp_path / "bad.tfrecord"
    features = _video_features()
    del features["mean_audio"]
    write_tfrecord(path, [build_example(features)])

    with pytest.raises(ExampleDecodeError, match="missing float feature 'mean_audio'"):
        list(iter_video_level_features(path))


def test_read_vocabulary_rejects_missing_column(tmp_path):
    path = tmp_path / "vocabulary.csv"
    path.write_text("Index,Label\n0,Game\n", encoding="utf-8")

    with pytest.raises(ValueError, match=r"missing required column\(s\) \['Name'\]"):
        read_vocabulary(path)


def test_read_vocabulary_rejects_bad_index(tmp_path):
    path = tmp_path / "vocabulary.csv"
    path.write_text("Index,Name\n0,Game\nx,Car\n", encoding="utf-8")

    with pytest.raises(ValueError, match="line 3: invalid Index 'x'"):
        read_vocabulary(path)


requires_youtube8m = pytest.mark.skipif(
    not (YOUTUBE8M_DIR / "validate0000.tfrecord").is_file(),
    reason=f"YouTube-8M sample not found under {YOUTUBE8M_DIR}; set RECSYS_DATA_DIR",
)


@requires_youtube8m
def test_real_file_has_video_level_features():
    # given
    vocabulary = read_vocabulary(YOUTUBE8M_DIR / "vocabulary.csv")

    # when
    videos = list(iter_video_level_features(YOUTUBE8M_DIR / "validate0000.tfrecord"))

    # then
    assert len(videos) > 100
    assert all(video.id for video in videos)
    assert all(video.mean_rgb.shape == (1024,) for video in videos)
    assert all(video.mean_audio.shape == (128,) for video in videos)
    assert all(video.mean_rgb.dtype == np.float32 for video in videos)
    assert all(np.isfinite(video.mean_rgb).all() and np.isfinite(video.mean_audio).all() for video in videos)
    assert all(video.labels for video in videos)
    assert all(label in vocabulary for video in videos for label in video.labels)


@requires_youtube8m
def test_real_vocabulary_has_all_labels():
    vocabulary = read_vocabulary(YOUTUBE8M_DIR / "vocabulary.csv")

    assert len(vocabulary) == 3862
    assert sorted(vocabulary) == list(range(3862))
    assert vocabulary[0].name == "Game"
    assert vocabulary[0].verticals == ("Games",)
    # The release leaves Name empty for a few labels but gives every label a vertical.
    assert all(len(info.verticals) >= 1 for info in vocabulary.values())
    assert all(info.knowledge_graph_id.startswith("/m/") for info in vocabulary.values())
