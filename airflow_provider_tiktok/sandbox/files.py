"""Customer files as ``dmp/custom_audience/file/upload/`` accepts them: one hex digest a line.

TikTok documents .txt and .csv files with one id a line and an optional header row, and refuses .zip.
A gzip file is read only when the emulator is told to accept it (TikTok does not document it). Error
messages name line numbers, never the content of a line: a line may be an unhashed email.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib

from airflow_provider_tiktok.sandbox.payloads import ApiError
from airflow_provider_tiktok.sandbox.settings import CALCULATE_TYPE_DIGEST_LENGTH

_HEX_DIGITS = b"0123456789abcdef"
_ZIP_MAGIC = b"PK\x03\x04"
_GZIP_MAGIC = b"\x1f\x8b"
#: Header rows a file may start with (any case): an encryption type or the id's plain name.
HEADER_NAMES = {name.lower().encode() for name in CALCULATE_TYPE_DIGEST_LENGTH} | {
    b"email",
    b"phone",
    b"idfa",
    b"gaid",
    b"maid",
}


def check_signature(content: bytes, file_signature: str) -> None:
    if not file_signature:
        raise ApiError(40002, "file_signature: Missing data for required field.")
    if hashlib.md5(content).hexdigest() != file_signature.lower():
        raise ApiError(40002, "file_signature does not match the MD5 of the uploaded file.")


def read_digests(content: bytes, calculate_type: str, *, max_bytes: int, accept_gzip: bool) -> list[bytes]:
    """The file's digests in file order, after checking format, size and that every line is a digest."""
    if calculate_type not in CALCULATE_TYPE_DIGEST_LENGTH:
        raise ApiError(40002, f"calculate_type: must be one of {', '.join(CALCULATE_TYPE_DIGEST_LENGTH)}.")
    if len(content) > max_bytes:
        raise ApiError(40002, f"The file exceeds {max_bytes} bytes.")
    if content.startswith(_ZIP_MAGIC):
        raise ApiError(40002, "Zip files are not supported; upload a .txt or .csv file.")
    if content.startswith(_GZIP_MAGIC):
        if not accept_gzip:
            raise ApiError(40002, "Compressed files are not supported; upload a .txt or .csv file.")
        content = _gunzip(content, max_bytes)
    lines = content.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    header = 1 if lines and lines[0].strip().lower() in HEADER_NAMES else 0
    del lines[:header]
    if not lines:
        raise ApiError(40002, "The file holds no ids.")
    width = CALCULATE_TYPE_DIGEST_LENGTH[calculate_type]
    joined = b"".join(lines)
    if len(joined) != width * len(lines) or joined.translate(None, _HEX_DIGITS):
        raise ApiError(
            40062,
            f"Line {header + _first_bad_line(lines, width)}: {calculate_type} ids must be lowercase hex digests of "
            f"length {width} (PII not hashed?).",
        )
    return lines


def _first_bad_line(lines: list[bytes], width: int) -> int:
    for number, line in enumerate(lines, start=1):
        if len(line) != width or line.translate(None, _HEX_DIGITS):
            return number
    return 0


def _gunzip(content: bytes, max_bytes: int) -> bytes:
    try:
        inflated = gzip.GzipFile(fileobj=io.BytesIO(content)).read(max_bytes + 1)
    except (OSError, EOFError, zlib.error):
        raise ApiError(40002, "The compressed file is corrupt.") from None
    if len(inflated) > max_bytes:
        raise ApiError(40002, f"The file exceeds {max_bytes} bytes once decompressed.")
    return inflated
