"""Reading a user's text file: a byte that is not UTF-8 is reported by line and column."""

from pathlib import Path

from dlrun.errors import DataError


def read_utf8(path: Path, fix: str) -> str:
    """The file's text; `fix` ends the message when it cannot be read (what to do instead)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; {fix}") from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror}; {fix}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        byte = raw[error.start]
        raise DataError(
            f"{path}:{line}:{column}: byte 0x{byte:02x} is not UTF-8 text; save the file as UTF-8"
        ) from None
