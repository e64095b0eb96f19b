#!/usr/bin/env python3
"""Writes the inputs of issue 8 too large to commit into OUTDIR.

scripts/fuzz runs each once through its harness (the name says which:
<target>_<what>) before fuzzing, like the regression cases in corpus/.

  json_array_1mib.json       a 1 MiB array of small numbers ("[0,1,0,1,...]")
  envelope_array_1mib.json   an envelope of just under 1 MiB whose data holds
                             such an array (decodes to ~40 MB: refused, TOO_LARGE)
  json_deep_100k.json        100000 nested arrays (refused, TOO_DEEP, no recursion)
  envelope_deep_100k.json    the same inside an envelope's data
  amqp_json_deep_20k.bin     a header table nested 20000 deep (refused before
                             rabbitmq-c's recursive decoder sees it)
  amqp_json_deep_10k.bin     nested exactly CHORUS__AMQP_DECODE_MAX_DEPTH deep
                             (10000 tables, decoded; exported as AMQP base64)
  amqp_json_wide_64k.bin     65536 entries with the same empty name (a 128 KiB
                             frame's worth of repeated names: dlq show names them
                             "", " (2)", ... " (65536)")
"""
import struct
import sys

MIB = 1 << 20


def write(outdir, name, data):
    with open(f"{outdir}/{name}", "wb") as f:
        f.write(data)


def envelope(data_json):
    return (
        '{"event_id":"0190f5e2-7c1a-7b3d-8e4f-1a2b3c4d5e6f","event_type":"OrderPlaced",'
        '"aggregate_id":"6f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f","version":1,'
        '"timestamp":"2026-03-14T10:00:00.000Z","data":' + data_json + ',"metadata":{}}'
    ).encode()


def small_numbers(total):
    n = (total - 2) // 2
    return "[" + ",".join("01"[i & 1] for i in range(n)) + "]"


def nested_tables(levels):
    """A table holding one entry "" -> table ... levels tables in all."""
    enc = struct.pack(">I", 0)
    for _ in range(levels - 1):
        entry = b"\x00F" + enc
        enc = struct.pack(">I", len(entry)) + entry
    return enc


def main():
    outdir = sys.argv[1]
    write(outdir, "json_array_1mib.json", small_numbers(MIB).encode())
    head = len(envelope("[]")) - 2
    write(outdir, "envelope_array_1mib.json", envelope(small_numbers(MIB - head - 16)))
    deep = "[" * 100000 + "]" * 100000
    write(outdir, "json_deep_100k.json", deep.encode())
    write(outdir, "envelope_deep_100k.json", envelope('{"x":' + deep + "}"))
    write(outdir, "amqp_json_deep_20k.bin", nested_tables(20000))
    write(outdir, "amqp_json_deep_10k.bin", nested_tables(10000))
    entries = b"\x00V" * 65536
    write(outdir, "amqp_json_wide_64k.bin", struct.pack(">I", len(entries)) + entries)


if __name__ == "__main__":
    main()
