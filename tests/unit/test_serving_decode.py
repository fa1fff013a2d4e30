"""The served pyfunc in-process: the ingest decoder (16-bit, float TIFF, RGBA), per-row errors and
the size limit. The model is a real checkpoint of an untrained `resnet_tiny`, which starts as the
identity, so the answer shows what the model was given. (Over HTTP: tests/integration/test_serving.py.)"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModelContext
from PIL import Image

from pipeline.ingestion.decode import decode_photo
from pipeline.serving.codec import IMAGE_COLUMN, SERVING_MAX_PIXELS, decode_image
from pipeline.serving.pyfunc import CHECKPOINT_ARTIFACT, DerainPyfunc


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> DerainPyfunc:
    from pipeline.models.factory import create_model, derain_checkpoint, parse_spec

    path = tmp_path_factory.mktemp("model") / "model.pt"
    spec = parse_spec("resnet_tiny")
    torch.save(derain_checkpoint(spec, create_model(spec).state_dict(), None), path)
    model = DerainPyfunc()
    model.load_context(PythonModelContext({CHECKPOINT_ARTIFACT: str(path)}, {"tile": 64, "overlap": 8}))
    return model


def _b64(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def _answer(served: DerainPyfunc, *texts: object) -> pd.DataFrame:
    return served.predict(None, pd.DataFrame({IMAGE_COLUMN: list(texts)}))


def test_sixteen_bit_png_is_scaled_like_ingest_not_clipped_to_white(served):
    grey16 = np.full((20, 24), 128 * 257, dtype=np.uint16)  # mid grey in 16 bits
    image = Image.fromarray(grey16)
    assert image.mode.startswith("I;16")
    text = _b64(image)
    answer = _answer(served, text)
    out = decode_image(answer[IMAGE_COLUMN][0])
    assert answer["error"][0] is None and out.shape == (20, 24, 3)
    ingested = decode_photo(base64.b64decode(text), max_pixels=10**8, short_side=10**6).image
    assert ingested.max() == 128
    assert np.abs(out.astype(int) - ingested).max() <= 2  # the identity model, not white (255)


def test_rgba_is_composited_on_white_as_at_ingest(served):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, 8:, 3] = 255  # left half fully transparent
    out = decode_image(_answer(served, _b64(Image.fromarray(rgba, "RGBA")))[IMAGE_COLUMN][0])
    assert np.abs(out[:, :8].astype(int) - 255).max() <= 2  # transparent -> white, as ingest shows it
    assert np.abs(out[:, 8:].astype(int) - [200, 0, 0]).max() <= 2


def test_float_tiff_is_refused_with_the_reason_not_answered_black(served):
    text = _b64(Image.fromarray(np.full((8, 8), 0.5, np.float32), "F"), "TIFF")
    with pytest.raises(MlflowException, match=r"row 0: column 'image': floating-point pixels") as error:
        _answer(served, text)
    assert error.value.get_http_status_code() == 400


def test_one_bad_row_does_not_fail_the_batch_and_names_its_row(served):
    good = _b64(Image.fromarray(np.full((10, 12, 3), 90, np.uint8)))
    answer = _answer(served, good, "not base64!", base64.b64encode(b"plain text").decode(), good)
    assert list(answer.columns) == [IMAGE_COLUMN, "error"]
    assert answer[IMAGE_COLUMN][0] is not None and answer[IMAGE_COLUMN][3] is not None
    assert answer[IMAGE_COLUMN][1] is None and answer[IMAGE_COLUMN][2] is None
    assert answer["error"][1].startswith("row 1: column 'image': not valid base64 (expected base64 text of an image file")
    assert answer["error"][2].startswith("row 2: column 'image': not an image")
    assert answer["error"][0] is None and decode_image(answer[IMAGE_COLUMN][3]).shape == (10, 12, 3)


def test_every_row_bad_is_a_400_naming_rows_without_a_stack_trace(served):
    with pytest.raises(MlflowException) as error:
        _answer(served, "not base64!", 12)
    message = error.value.message
    assert error.value.get_http_status_code() == 400 and "stack_trace" not in error.value.serialize_as_json()
    assert "row 0: column 'image': not valid base64" in message and "row 1: column 'image': expected base64 text" in message
    assert str(Path(__file__).parents[2]) not in message
    with pytest.raises(MlflowException, match=r"expected a DataFrame with an 'image' column .*\['picture'\]"):
        served.predict(None, pd.DataFrame({"picture": ["x"]}))


def test_an_image_above_the_serving_limit_is_refused_naming_the_limit(served):
    side = int(SERVING_MAX_PIXELS**0.5) + 1
    big = _b64(Image.new("RGB", (side, side), (10, 20, 30)))
    with pytest.raises(MlflowException, match=rf"row 0: column 'image': too large: {side}x{side} = {side * side} pixels > "
                                              rf"the serving limit max_pixels={SERVING_MAX_PIXELS}") as error:
        _answer(served, big)
    assert error.value.get_http_status_code() == 400
