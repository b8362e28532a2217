"""Reading a FER2013 CSV: streamed, parsed in vectorised chunks, every line validated.

The CSV is streamed: a reader thread reads the file (and gunzips it: zlib releases the GIL, so
the decompression runs on a second core) while the text is parsed in chunks of whole lines
(`CHUNK_BYTES`), each vectorised with numpy (the real 301 MB file has 83 million pixel tokens:
any per-token Python is far too slow). Memory stays bounded by a few chunks plus the images
themselves, whatever the file's size. Every line is still validated: the fast pass flags
suspicious lines (wrong field count, stray characters, wrong token count, over-long tokens,
values over 255), and only those lines go through `_diagnose_line`, which says precisely what is
wrong; line numbers count on across chunks.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import zlib
from pathlib import Path

import numpy as np

from . import IMAGE_SIZE, SPLIT_NAMES
from .errors import UserError

N_PIXELS = IMAGE_SIZE * IMAGE_SIZE
MAX_REPORTED_ERRORS = 5
_COLUMNS = ("emotion", "pixels", "usage")

CHUNK_BYTES = 1 << 18  # text parsed per chunk (whole lines): measured fastest, numpy's passes stay in L2
_READ_BYTES = 1 << 17  # bytes read from the file at a time
_MAX_PIECE_BYTES = 1 << 20  # most decompressed bytes from one read
_QUEUE_PIECES = 8  # decompressed pieces the reader thread may run ahead (bounded memory)
_GZIP_MAGIC = b"\x1f\x8b"
# A FER2013 line is under 10 KB (2,304 pixels of up to 3 digits); text this long without a line
# break is refused instead of read whole into memory (a one-line 1.5 GB gzip).
MAX_LINE_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"


def _existing_file(path):
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path}: file not found (download FER2013 as described in the README, "
            f"or leave `data: auto` to use the built-in demo)"
        )
    return path


def _file_pieces(path, digest=None, read_bytes=_READ_BYTES):
    """The file's text in pieces: gunzipped (every member, as `gzip.decompress` reads them) when it
    starts with the gzip magic, else as stored. Every byte read also goes into `digest`."""

    def bad_gzip(why):
        return UserError(f"{path}: not a readable gzip file ({why})")

    with open(path, "rb") as f:

        def read():
            block = f.read(read_bytes)
            if digest is not None:
                digest.update(block)
            return block

        block = read()
        if not block.startswith(_GZIP_MAGIC):
            while block:
                yield block
                block = read()
            return
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while block:
            try:
                out = d.decompress(block, _MAX_PIECE_BYTES)  # a gzip bomb comes out in bounded pieces
            except zlib.error as err:
                raise bad_gzip(err) from None
            if out:
                yield out
            block = d.unused_data if d.eof else d.unconsumed_tail
            if not block:
                block = read()
            if d.eof and block:  # another gzip member may follow (zero padding between is allowed)
                block = block.lstrip(b"\x00")
                while len(block) < 2 and (more := read()):
                    block = (block + more).lstrip(b"\x00")
                if block and not block.startswith(_GZIP_MAGIC):
                    raise bad_gzip(f"data after the end of the gzip stream: {block[:8]!r}")
                if block:
                    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if not d.eof:
            raise bad_gzip("the file ends before the end of the compressed data")


def _in_background(pieces, depth=_QUEUE_PIECES):
    """Iterate `pieces` (a generator) in a reader thread, at most `depth` items ahead. zlib and file
    reads release the GIL, so the decompression runs on a second core while this one parses."""
    q = queue.Queue(depth)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def work():
        try:
            for piece in pieces:
                if not put((piece, None)):
                    return
            put((None, None))
        except BaseException as err:  # handed to the parsing thread, which raises it
            put((None, err))
        finally:
            pieces.close()

    thread = threading.Thread(target=work, name="ferstudy-csv-reader", daemon=True)
    thread.start()
    try:
        while True:
            piece, err = q.get()
            if err is not None:
                raise err
            if piece is None:
                return
            yield piece
    finally:
        stop.set()
        thread.join()


def parse_fer_csv(
    path: Path | str, chunk_bytes: int = CHUNK_BYTES, background: bool = True, read_bytes: int = _READ_BYTES
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse and validate a FER2013 CSV (plain or gzip). Returns (images, labels, split, row).

    Raises UserError naming the file, line numbers and problems of the first few bad lines.
    """
    return _parse(path, chunk_bytes, background, read_bytes)[:4]


def _parse(path, chunk_bytes=CHUNK_BYTES, background=True, read_bytes=_READ_BYTES):
    """(images, labels, split, row, sha256 of the file as stored). The text is parsed in chunks of
    about `chunk_bytes` of whole lines, so memory stays bounded whatever the file's size; a reader
    thread decompresses ahead (`background`; without it the same generator runs inline)."""
    path = _existing_file(path)
    digest = hashlib.sha256()
    pieces = _file_pieces(path, digest, read_bytes)
    if background:
        pieces = _in_background(pieces)
    try:
        images, labels, split = _parse_pieces(path, pieces, chunk_bytes)
    finally:
        pieces.close()
    return images, labels, split, np.arange(len(labels), dtype=np.int64), digest.hexdigest()


def _parse_pieces(path, pieces, chunk_bytes):
    """Header, then the body in chunks of whole lines; line numbers count on across chunks."""
    head, eof = [], False
    while True:
        piece = next(pieces, None)
        if piece is None:
            eof = True
            break
        head.append(piece)
        if b"\n" in piece:
            break
        _check_line_length(path, 1, sum(map(len, head)))
    text = b"".join(head)
    if text.startswith(_BOM):
        text = text[len(_BOM) :]
    header_end = text.find(b"\n")
    header, rest = (text, b"") if header_end < 0 else (text[:header_end], text[header_end + 1 :])
    if not header.strip():  # a blank first line: an empty file, or a header error below
        blank = not rest.strip()
        while blank and not eof:
            piece = next(pieces, None)
            eof = piece is None
            blank = eof or not piece.strip()
        if blank:
            raise UserError(f"{path}: the file is empty (expected a header `emotion,pixels,Usage` and rows)")
    order = _column_order(path, header)

    kept, n_lines, bad_lines, messages = [], 0, 0, []
    parts, size, complete = [rest], len(rest), b"\n" in rest
    while True:
        if not eof:
            piece = next(pieces, None)
            eof = piece is None
            if not eof:
                parts.append(piece)
                size += len(piece)
                complete = complete or piece.rfind(b"\n") >= 0
                if not complete:
                    _check_line_length(path, n_lines + 2, size)
                if size <= chunk_bytes or not complete:
                    continue
        text = b"".join(parts)
        pos = 0
        for end in _chunk_ends(text, chunk_bytes, eof):
            chunk, pos = text[pos:end], end
            lines, bad, images, labels, split = _parse_chunk(chunk, order)
            if bad.any():
                for i in np.flatnonzero(bad)[: MAX_REPORTED_ERRORS - len(messages)]:
                    messages.append(
                        f"line {n_lines + i + 2}: {_diagnose_line(chunk[lines[0][i] : lines[1][i]], order)}"
                    )
                bad_lines += int(bad.sum())
            elif not bad_lines:  # after a bad line nothing is kept, only the errors counted
                kept.append((images, labels, split))
            n_lines += len(bad)
        if eof:
            break
        rest = text[pos:]
        parts, size, complete = [rest], len(rest), rest.rfind(b"\n") >= 0

    if bad_lines:
        more = f" (and {bad_lines - MAX_REPORTED_ERRORS} more bad lines)" if bad_lines > MAX_REPORTED_ERRORS else ""
        raise UserError(f"{path}: {bad_lines} malformed line(s){more}: " + "; ".join(messages))
    if n_lines == 0:
        raise UserError(f"{path}: no data rows after the header")
    return tuple(np.concatenate([k[j] for k in kept]) for j in range(3))


def _check_line_length(path, line, size):
    if size > MAX_LINE_BYTES:
        with open(path, "rb") as f:
            damaged = (
                ", or not a readable gzip file (damaged data decompresses to such text)"
                if f.read(2) == _GZIP_MAGIC
                else ""
            )
        raise UserError(
            f"{path}: line {line}: more than {MAX_LINE_BYTES:,} bytes without a line break (a FER2013 "
            f"line has about 9,000: emotion, 2,304 pixels, Usage): not a FER2013 CSV{damaged}"
        )


def _chunk_ends(text, chunk_bytes, final):
    """End offsets of consecutive chunks of whole lines of about `chunk_bytes` in `text` (a line
    longer than that is a chunk of its own). Unless `final`, a tail up to `chunk_bytes` or an
    unfinished line is left for the next call, with more text."""
    pos, n = 0, len(text)
    while n - pos > chunk_bytes:
        end = text.rfind(b"\n", pos, pos + chunk_bytes) + 1
        if end <= pos:  # one line longer than a chunk
            end = text.find(b"\n", pos + chunk_bytes) + 1 or (n if final else 0)
            if end <= pos:
                return
        yield end
        pos = end
    if final and pos < n:
        yield n


def _parse_chunk(text, order):
    """Parse and check whole lines. Returns ((line starts, line ends), bad, images, labels, split);
    the rows of bad lines hold zeros."""
    a = np.frombuffer(text, dtype=np.uint8)
    newlines = np.flatnonzero(a == ord("\n"))
    line_starts = np.concatenate(([0], newlines + 1))
    line_ends = np.concatenate((newlines, [len(a)]))
    if line_starts[-1] == len(a):  # the text ends with a newline: no line after it
        line_starts, line_ends = line_starts[:-1], line_ends[:-1]
    fields, bad = _split_fields(a, line_starts, line_ends)
    labels, split, bad = _parse_label_and_usage(text, fields, order, bad)
    p = order["pixels"]
    images, bad = _parse_pixels(a, fields[:, p], fields[:, p + 1] - 1, bad)
    return (line_starts, line_ends), bad, images, labels, split


def _column_order(path, header_bytes):
    names = [n.strip().strip('"').lower() for n in header_bytes.decode("utf-8", "replace").strip("\r").split(",")]
    missing = [c for c in _COLUMNS if c not in names]
    if missing or len(names) != 3:
        raise UserError(
            f"{path}: line 1: header {names} must have exactly the columns emotion, pixels, Usage "
            f"(missing: {', '.join(missing) or 'none'})"
        )
    return {c: names.index(c) for c in _COLUMNS}


def _split_fields(a, line_starts, line_ends):
    """Field boundaries (n, 4): start of field 0, 1, 2 and end+1 of the line; flags lines without 2 commas."""
    commas = np.flatnonzero(a == ord(","))
    line_of_comma = np.searchsorted(line_starts, commas, side="right") - 1
    count = np.bincount(line_of_comma, minlength=len(line_starts))
    bad = count != 2
    fields = np.empty((len(line_starts), 4), dtype=np.int64)
    fields[:, 0] = line_starts
    fields[:, 3] = line_ends + 1
    fields[bad, 1:3] = line_ends[bad, None]  # placeholder: these lines are diagnosed later
    good = ~bad
    fields[good, 1:3] = commas[good[line_of_comma]].reshape(-1, 2) + 1
    # A trailing CR belongs to no field.
    has_cr = (line_ends > line_starts) & (a[np.maximum(line_ends - 1, 0)] == ord("\r"))
    fields[:, 3] -= has_cr
    return fields, bad


def _parse_label_and_usage(body, fields, order, bad):
    """The two short fields. The usual spellings (one digit 0-6; Training, PublicTest, PrivateTest
    exactly) are read with numpy; any other line goes through the per-line Python, which strips
    blanks and quotes and ignores case as before."""
    n = len(fields)
    labels = np.zeros(n, dtype=np.uint8)
    split = np.zeros(n, dtype=np.uint8)
    a = np.frombuffer(body, dtype=np.uint8)
    e, u = order["emotion"], order["usage"]
    done = np.zeros(n, dtype=bool)
    one_digit = np.flatnonzero(~bad & (fields[:, e + 1] - 1 - fields[:, e] == 1))
    label = a[fields[one_digit, e]] - np.uint8(ord("0"))
    one_digit, label = one_digit[label <= 6], label[label <= 6]
    usage_len = fields[one_digit, u + 1] - 1 - fields[one_digit, u]
    for code, name in enumerate(SPLIT_NAMES):
        word = np.frombuffer(name.encode(), dtype=np.uint8)
        rows = np.flatnonzero(usage_len == len(word))
        rows = rows[(a[fields[one_digit[rows], u, None] + np.arange(len(word))] == word).all(axis=1)]
        labels[one_digit[rows]] = label[rows]
        split[one_digit[rows]] = code
        done[one_digit[rows]] = True
    usage_codes = {name.lower(): i for i, name in enumerate(SPLIT_NAMES)}
    for i in np.flatnonzero(~bad & ~done):
        emotion = body[fields[i, e] : fields[i, e + 1] - 1].strip()
        usage = body[fields[i, u] : fields[i, u + 1] - 1].strip().strip(b'"').lower()
        code = usage_codes.get(usage.decode("ascii", "replace"))
        if not emotion.isdigit() or int(emotion) > 6 or code is None:
            bad[i] = True
            continue
        labels[i] = int(emotion)
        split[i] = code
    return labels, split, bad


def _parse_pixels(a, pix_start, pix_end, bad):
    """Vectorised parse of every pixel field into (n, 48, 48) uint8; flags lines that do not parse.

    Digits outside the pixel fields are masked out first, so every run of digits left is a pixel
    token of its line, in order; a token is valued by its last three digits (a longer run marks
    its line) and each line must have exactly N_PIXELS of them.
    """
    n, size = len(pix_start), len(a)
    pix_end = np.maximum(pix_end, pix_start)  # lines without three fields (already bad): no pixel field
    outside = _ranges(np.concatenate(([0], pix_end)), np.concatenate((pix_start, [size])))
    digit = a - np.uint8(ord("0"))  # 0-9 for digits, 10-255 for anything else
    is_digit = np.zeros(size + 1, dtype=bool)  # and one non-digit after the end, so every run ends
    d = is_digit[:size]
    np.less(digit, 10, out=d)
    # Anything but digits, spaces and quotes inside a pixel field marks its line.
    allowed = (digit | np.uint8(2)) == np.uint8((ord(" ") - ord("0")) % 256 | 2)  # space or quote
    allowed |= d
    if np.count_nonzero(allowed) + len(outside) - np.count_nonzero(allowed[outside]) != size:
        allowed[outside] = True
        bad[np.searchsorted(pix_start, np.flatnonzero(~allowed), side="right") - 1] = True
    is_digit[outside] = False
    long_runs = d[:-3] & d[1:-2]
    long_runs &= d[2:-1]
    long_runs &= d[3:]
    if long_runs.any():  # four or more digits in a row: let the diagnosis judge
        bad[np.searchsorted(pix_start, np.flatnonzero(long_runs), side="right") - 1] = True

    last = np.flatnonzero(is_digit[:-1] > is_digit[1:])  # the last digit of every token
    first_token = np.searchsorted(last, pix_start)
    bad |= (np.searchsorted(last, pix_end) - first_token) != N_PIXELS
    np.multiply(digit, d, out=digit)  # 0 for everything but the digits of pixel tokens
    units_tens = np.empty(size, dtype=np.uint8)  # at each position: its digit + 10 x the one before
    units_tens[0] = 0
    np.multiply(digit[:-1], np.uint8(10), out=units_tens[1:])
    units_tens += digit
    hundreds = np.zeros(size, dtype=np.uint8)  # the digit two before, if the one between is a digit
    np.multiply(digit[:-2], d[1:-1], out=hundreds[2:])
    value = np.multiply(hundreds[last], np.uint16(100), dtype=np.uint16)
    value += units_tens[last]
    if (value > 255).any():
        over = np.flatnonzero(value > 255)
        bad[np.searchsorted(first_token, over, side="right") - 1] = True
    images = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    if not bad.any():
        images[:] = value.reshape(images.shape)
    else:
        good = np.flatnonzero(~bad)
        images[good] = value[first_token[good, None] + np.arange(N_PIXELS)].reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return images, bad


def _ranges(starts, ends):
    """All indices of the half-open ranges [starts[i], ends[i]), concatenated."""
    lengths = np.maximum(ends - starts, 0)
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(lengths.sum())


def _diagnose_line(line, order):
    """Say what is wrong with one line (only called for lines the fast pass flagged)."""
    text = line.decode("utf-8", "replace").rstrip("\r")
    if not text.strip():
        return "empty line"
    parts = text.split(",")
    if len(parts) != 3:
        return f"expected 3 comma-separated fields (emotion, pixels, Usage), found {len(parts)}"
    emotion = parts[order["emotion"]].strip()
    if not emotion.isdigit() or int(emotion) > 6:
        return f"emotion {emotion!r} is not a label 0-6"
    usage = parts[order["usage"]].strip().strip('"')
    if usage.lower() not in {s.lower() for s in SPLIT_NAMES}:
        return f"unknown Usage {usage!r} (expected one of {', '.join(SPLIT_NAMES)})"
    tokens = parts[order["pixels"]].strip().strip('"').split()
    for k, tok in enumerate(tokens):
        if not tok.isdigit():
            return f"pixel {k + 1} {tok!r} is not an integer"
        if int(tok) > 255:
            return f"pixel {k + 1} = {tok} is out of range 0-255"
    return f"expected {N_PIXELS} pixels, found {len(tokens)}"
