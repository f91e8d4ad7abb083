"""Hostile inputs for tests and benchmarks: decompression bombs written without allocating their pixels.

Each bomb is a valid file of a few hundred kB whose header declares a huge
all-black image; decoding it for real would take width x height bytes or more.
The compressed data is built once for a band of rows and reused, so writing
one takes well under a second.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

# Rows compressed per zlib call: bounds the memory used while writing a bomb.
_BAND_BYTES = 32 << 20


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A black 8-bit grayscale PNG of ``width`` x ``height`` pixels."""
    row = bytes(1 + width)  # filter byte 0 + one zero byte a pixel
    rows_per_band = max(1, min(height, _BAND_BYTES // len(row)))
    bands, rest = divmod(height, rows_per_band)
    band = row * rows_per_band
    # After a full flush deflate refers to nothing before it, so one band's compressed bytes can be repeated.
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    band_deflated = compressor.compress(band) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.compress(row * rest) + compressor.flush()
    checksum = (len(row) * height % 65521) << 16 | 1  # Adler-32 of that many zero bytes
    stream = b"\x78\xda" + band_deflated * bands + tail + struct.pack(">I", checksum)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b""))
    return path


def tiff_bomb(path: Path, width: int, height: int, rows_per_strip: int = 256) -> Path:
    """A black 8-bit grayscale TIFF whose deflate-compressed strips all point at the same bytes."""
    strip = zlib.compress(bytes(width * rows_per_strip), 9)
    strips = -(-height // rows_per_strip)
    tag_count = 9
    offsets_at = 8 + 2 + 12 * tag_count + 4  # after the header and the IFD
    counts_at = offsets_at + 4 * strips
    data_at = counts_at + 4 * strips
    inline = strips == 1  # one value sits in the IFD entry itself instead of at an offset
    entries = [  # (tag, type, count, value); type 3 = SHORT, 4 = LONG
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 8),  # 259 = 8: deflate
        (262, 3, 1, 1), (273, 4, strips, data_at if inline else offsets_at), (277, 3, 1, 1),
        (278, 4, 1, rows_per_strip), (279, 4, strips, len(strip) if inline else counts_at)]
    ifd = struct.pack("<H", tag_count) + b"".join(
        struct.pack("<HHI", tag, kind, count)
        + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
        for tag, kind, count, value in entries) + struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack(f"<{strips}I", *[data_at] * strips)
                     + struct.pack(f"<{strips}I", *[len(strip)] * strips) + strip)
    return path


def gif_bomb(path: Path, width: int, height: int) -> Path:
    """A black GIF: LZW codes for ever longer runs of colour 0, the table cleared before it fills."""
    path.write_bytes(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + bytes(6)  # 2-colour palette
                     + b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
                     + b"\x02" + _sub_blocks(_lzw_zero_run(width * height)) + b"\x00;")
    return path


def _lzw_zero_run(pixels: int, minimum_code_size: int = 2) -> bytes:
    """GIF LZW data decoding to ``pixels`` zeros.

    Mirrors the decoder's table: after a clear, code 0 is one zero; every
    later code adds an entry one zero longer than the previous code's string,
    so emitting the newest entry each time covers 1 + 2 + 3 + ... pixels.
    """
    clear, end = 1 << minimum_code_size, (1 << minimum_code_size) + 1
    bits, bit_count, out = 0, 0, bytearray()

    def emit(code: int, width: int) -> None:
        nonlocal bits, bit_count
        bits |= code << bit_count
        bit_count += width
        while bit_count >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            bit_count -= 8

    remaining, width = pixels, minimum_code_size + 1
    while remaining:
        emit(clear, width)  # at the width in use; the decoder resets it after reading the clear
        width = minimum_code_size + 1
        emit(0, width)
        remaining -= 1
        code_of_length = {1: 0}
        next_code, previous_length = end + 1, 1
        while remaining and next_code < 4000:
            length = min(previous_length + 1, remaining)
            # The decoder adds (previous string + "0") as entry next_code, so a run one longer is that new entry.
            code = next_code if length == previous_length + 1 else code_of_length[length]
            code_of_length[previous_length + 1] = next_code
            next_code += 1
            if next_code > (1 << width) and width < 12:
                width += 1
            emit(code, width)
            remaining -= length
            previous_length = length
    emit(end, width)
    if bit_count:
        out.append(bits & 0xFF)
    return bytes(out)


def _sub_blocks(data: bytes) -> bytes:
    return b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255))


def graph_writing_file(target: Path, size: int = 32, classes: int = 3):
    """A Poets-contract GraphDef (``input`` -> ``final_result``) whose output waits for writing ``target``."""
    import tensorflow as tf
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, size, size, 3], name="input")
        written = tf.io.write_file(str(target), "written by the graph", name="SideEffect")
        with tf.control_dependencies([written]):
            logits = tf.tile(tf.reduce_mean(images, axis=[1, 2, 3], keepdims=False)[:, None], [1, classes])
        tf.nn.softmax(logits, name="final_result")
    return graph.as_graph_def()


def saved_model_writing_file(folder: Path, target: Path) -> Path:
    """A SavedModel (TF-Hub style: callable on images, and a serving signature) that writes ``target`` when run."""
    import tensorflow as tf
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)], autograph=False)
    def call(images):
        with tf.control_dependencies([tf.io.write_file(str(target), "written by the module")]):
            return tf.reduce_mean(images, axis=[1, 2])
    module.__call__ = call
    tf.saved_model.save(module, str(folder), signatures={"serving_default": call})
    return folder
