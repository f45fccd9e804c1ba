import numpy as np
import pytest

from workers.extractors.errors import ModalityUnavailable
from workers.extractors.text import TEXT_DIM, build_video_text, clean_text, default_text_model_dir, spell_out_symbols


def _cosine(first: np.ndarray, second: np.ndarray) -> float:
    return float(first @ second / (np.linalg.norm(first) * np.linalg.norm(second)))


def test_default_model_dir_is_in_wheel():
    folder = default_text_model_dir()

    assert (folder / "config.json").exists()
    assert (folder / "model.safetensors").exists()


def test_build_video_text_joins_parts():
    text = build_video_text("Dog barking", "A dog barks at the mail carrier.", ["dog", " pets "])

    assert text == "Dog barking\nA dog barks at the mail carrier.\ndog, pets"


def test_build_video_text_skips_empty_parts():
    assert build_video_text("", None, ["", "  ", "cats"]) == "cats"


def test_build_video_text_all_empty():
    assert build_video_text(None, "   ", None) == ""


def test_clean_text_replaces_lone_surrogate():
    assert clean_text("bad \ud800 text") == "bad \ufffd text"


def test_clean_text_joins_surrogate_pair():
    # U+1F600 written as its UTF-16 surrogate pair.
    assert clean_text("smile \ud83d\ude00") == "smile \U0001f600"


def test_clean_text_removes_nul_and_control_characters():
    assert clean_text("a\x00b\x07c\r\n\td") == "a b c d"


def test_spell_out_symbols_names_emoji():
    assert spell_out_symbols("good boy🐶!") == "good boy dog face !"


def test_spell_out_symbols_drops_skin_tone():
    assert spell_out_symbols("\U0001f44d\U0001f3fd") == "thumbs up sign"


def test_spell_out_symbols_drops_replacement_character():
    assert spell_out_symbols("bad \ufffd text") == "bad text"


def test_spell_out_symbols_keeps_letters_and_cjk():
    assert spell_out_symbols("Café 王者") == "Café 王者"


def test_embed_one_separates_emoji_only_titles(text_embedder):
    dog = text_embedder.embed_one("🐶")
    fire = text_embedder.embed_one("🔥")

    assert float(dog @ fire) < 0.95


def test_embed_one_is_unit_float32(text_embedder):
    vector = text_embedder.embed_one("A fluffy dog walks on a sidewalk")

    assert vector.shape == (TEXT_DIM,)
    assert vector.dtype == np.float32
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("text", ["", "   \n\t ", "\x00\x00\x00", "\x01\x02 \x7f"])
def test_embed_one_rejects_empty_text(text_embedder, text):
    with pytest.raises(ModalityUnavailable) as raised:
        text_embedder.embed_one(text)

    assert raised.value.code == "empty_text"


@pytest.mark.parametrize(
    "text",
    [
        "🐶🐱🎉🔥",
        "王者荣耀 梦泪 兄弟",
        "invalid \ud800 surrogate \udfff here",
        "title with \x00 NUL byte",
        "مرحبا بالعالم",
    ],
)
def test_embed_one_handles_unusual_text(text_embedder, text):
    vector = text_embedder.embed_one(text)

    assert vector.shape == (TEXT_DIM,)
    assert np.isfinite(vector).all()


def test_embed_one_truncates_long_title(text_embedder):
    # 10,000 words are far beyond 256 tokens, so only the first words count: the
    # embedding equals that of the first 1,000 words, which also exceed 256 tokens.
    words = [f"word{index % 50}" for index in range(10_000)]

    long_vector = text_embedder.embed_one(" ".join(words))
    prefix_vector = text_embedder.embed_one(" ".join(words[:1000]))

    np.testing.assert_allclose(long_vector, prefix_vector, atol=1e-5)


def test_embed_one_respects_max_tokens():
    from workers.extractors.text import TextEmbedder

    short = TextEmbedder(max_tokens=8)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda"

    # 8 tokens are [CLS], 6 words and [SEP]: the words after the sixth are cut.
    assert np.allclose(short.embed_one(words), short.embed_one("alpha beta gamma delta epsilon zeta"), atol=1e-5)


def test_embed_one_places_related_titles_closer(text_embedder):
    dog = text_embedder.embed_one("Dog barking")
    other_dog = text_embedder.embed_one("A puppy barks loudly outside")
    finance = text_embedder.embed_one("Quarterly stock market report")

    assert _cosine(dog, other_dog) > _cosine(dog, finance)


def test_embed_batch_returns_none_for_empty_text(text_embedder):
    results = text_embedder.embed_batch(["Boat on the water", "", "  "])

    assert results[0] is not None
    assert results[1] is None
    assert results[2] is None


def test_embed_batch_matches_embed_one(text_embedder):
    texts = ["Fire burning close up", "Archery practice at the range today", "", "短视频"]

    batch = text_embedder.embed_batch(texts)

    for text, vector in zip(texts, batch):
        if not text:
            continue
        np.testing.assert_allclose(vector, text_embedder.embed_one(text), atol=1e-5)


def test_embed_batch_handles_more_texts_than_one_batch(text_embedder):
    texts = [f"video number {index}" for index in range(70)]

    results = text_embedder.embed_batch(texts)

    assert len(results) == 70
    assert all(vector.shape == (TEXT_DIM,) for vector in results)
