"""Reading the user's text files (reports, prompt and manifest CSVs) with a message and a fix for what goes wrong:
a missing file, a folder, bytes that are not UTF-8, a CSV that the ``csv`` module cannot parse (e.g. a field over
its 128 kB limit: an unclosed quote)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..errors import MedSynError

CONVERT = "save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 OLD > NEW`"


def read_text(path: str | Path, what: str, encoding: str = "utf-8") -> str:
    """The text of the file ``path`` (``what`` names it in messages, e.g. "report file")."""
    path = Path(path)
    if path.is_dir():
        raise MedSynError(f"{what} {path} is a folder", f"give the text file that holds the {what.split()[0]}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise MedSynError(f"{what} {path} is not UTF-8 text (byte {exc.start} cannot be decoded)", CONVERT) from None


def read_csv_rows(path: str | Path, what: str) -> tuple[list[str], list[dict]]:
    """(column names, rows) of the CSV file ``path`` (a UTF-8 byte-order mark is allowed)."""
    text = read_text(path, what, encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        rows, columns = list(reader), list(reader.fieldnames or ())
    except csv.Error as exc:
        raise MedSynError(f"{what} {path} is not a valid CSV file (line {reader.line_num}: {exc})",
                          "check the quoting on that line (a field that opens a \" must close it); save the "
                          "file from a spreadsheet as CSV UTF-8") from None
    return columns, rows
