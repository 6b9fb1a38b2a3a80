"""`{"b64": ...}` as people produce it (api/protocols/images.decode_b64): what GNU `base64`, `openssl base64`,
`base64.urlsafe_b64encode` and padding-stripping encoders write all decode to the same bytes; what is
not base64 is still a 400 "invalid base64" naming where it was."""
import base64
import io
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from api.errors import InvalidInput
from api.protocols.images import decode_b64

DATA = bytes(range(256)) * 3 + b"\xfb\xff\xfe\x00"  # every byte value, '+' and '/' needed, 772: padded


def wrapped(text: str, width: int, newline: str = "\n") -> str:
    return newline.join(text[i:i + width] for i in range(0, len(text), width)) + newline


STANDARD = base64.b64encode(DATA).decode()
FORMS = {
    "standard": STANDARD,
    "GNU base64 (76 per line)": wrapped(STANDARD, 76),
    "openssl base64 (64 per line)": wrapped(STANDARD, 64),
    "Windows line ends": wrapped(STANDARD, 76, "\r\n"),
    "urlsafe_b64encode": base64.urlsafe_b64encode(DATA).decode(),
    "padding stripped": STANDARD.rstrip("="),
    "one of two '=' stripped": STANDARD[:-1],
    "URL-safe, padding stripped": base64.urlsafe_b64encode(DATA).decode().rstrip("="),
}


@pytest.mark.parametrize("form", FORMS)
def test_every_common_form_decodes_to_the_same_bytes(form):
    assert "=" in STANDARD and ("+" in STANDARD or "/" in STANDARD)  # the forms really differ
    assert decode_b64(FORMS[form], "instances[0]") == DATA


@pytest.mark.skipif(not shutil.which("base64"), reason="GNU coreutils' base64 is not installed")
def test_what_gnu_base64_writes_decodes():
    encoded = subprocess.run(["base64"], input=DATA, capture_output=True, check=True).stdout.decode()
    assert "\n" in encoded.strip()  # it wraps
    assert decode_b64(encoded, "instances[0]") == DATA


@pytest.mark.parametrize("value, why", [
    ("not base64!", "a character outside both alphabets"),
    ("QUJD" + "=" + "QUJD", "padding in the middle"),
    ("QUJDR", "a length no base64 has (one past a whole group)"),
    ("QU*D", "a stray character"),
])
def test_what_is_not_base64_is_refused_with_where_it_was(value, why):
    with pytest.raises(InvalidInput, match=r"^instances\[3\]: invalid base64") as refused:
        decode_b64(value, "instances[3]")
    assert refused.value.status == 400, why


def test_a_non_string_is_refused():
    with pytest.raises(InvalidInput, match="'b64' must be a base64 string"):
        decode_b64(12, "instances[0]")


def test_a_png_in_every_form_gets_the_same_prediction(client, digits):
    """As a new user sends it: the same digit's PNG in each form, through the app, answers alike."""
    grey = Image.fromarray(np.round(digits[0][0].squeeze() * 255).astype("uint8"), mode="L").resize((32, 32))
    buffer = io.BytesIO()
    grey.save(buffer, "PNG")
    png = buffer.getvalue()
    standard = base64.b64encode(png).decode()
    forms = [standard, wrapped(standard, 76), wrapped(standard, 64), base64.urlsafe_b64encode(png).decode(),
             standard.rstrip("=")]
    answers = [client.post("/predict", json={"instances": [{"b64": form}]}) for form in forms]
    assert all(answer.status_code == 200 for answer in answers), [a.get_json() for a in answers]
    assert all(answer.get_json() == answers[0].get_json() for answer in answers)
