"""The formats of formats/: exact round trips of messages, state records and headers, and every
generation a reader still meets."""

from __future__ import annotations

import math
import random
import struct

import orjson
import pytest

from formats.events import Rejection
from formats.keys import encode_key_part
from formats.partials import (
    PARTIALS_BYTES,
    FrontierMessage,
    PartialColumns,
    PartialKey,
    PartialsMessage,
    decode_stage_message,
    encode_frontier,
    encode_partial_columns,
    key_partition,
    key_partitions,
    murmur2_many,
    partial_partition,
)
from formats.side_outputs import (
    HEADER_DETAIL,
    HEADER_MISSED,
    HEADER_OFFSET,
    HEADER_ORIGINAL_BYTES,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_TOPIC,
    dead_letter_headers,
    forwarded,
    late_headers,
    source_offset,
)
from formats.state import (
    PARTIALS_PACK_PREFIX,
    POSITION_KEY,
    TOTALS_PACK_PREFIX,
    IngestPosition,
    StateFormatError,
    encode_export_position,
    encode_ingest_position,
    encode_totals_columns,
    frontier_state_key,
    ledger_state_key,
    pack_key,
)
from formats.watermarks import Mark, decode_mark, encode_mark
from tables.partials import PartitionPartials
from tables.state import decode_export_state, decode_ingest_state
from tables.totals import InstanceTotals, Totals
from testing.fakes import generation2_messages, stored_packs, stored_totals

HOSTILE = [
    "click",
    "a|b",
    "|",
    "||",
    "1|tumbling_1m|0",
    "a:b",
    "a/b",
    "..",
    ".",
    "../../etc/passwd",
    "_hidden",
    "line\nbreak",
    "cr\rlf",
    "%7C",
    "%",
    "%%41",
    "a%7Cb",
    "*?[]{}=",
    " ",
    "ü",
    "\u2028",
    "😀|😀",
    "tab\t",
    '"quoted"',
    "\\",
    "x" * 256,
]


def _bits(values: list[float]) -> list[bytes]:
    return [struct.pack(">d", float(value)) for value in values]


# -- stage messages -----------------------------------------------------------------------


def _columns(partition: int, entries: list[tuple[PartialKey, list[float]]]) -> bytes:
    """Stage 1's message of these entries (all of one window instance)."""
    [instance] = PartitionPartials(partition, dict(entries)).instances.values()
    return encode_partial_columns(partition, instance, range(len(instance)))


def _decoded(body: bytes) -> tuple[int, list[tuple[PartialKey, list[float]]]]:
    message = decode_stage_message(body)
    assert isinstance(message, PartialColumns | PartialsMessage)
    return message.partition, message.entries


# The message stage 1 writes, and the one an earlier version wrote, which stage 2 still reads.
WRITERS = {"columns": _columns, "per key": lambda partition, entries: generation2_messages(partition, entries)[0]}


@pytest.mark.parametrize(
    "partial",
    [
        [1, 2.5, 2.5, 2.5, 0],
        [3, 0.30000000000000004, -0.1, 0.2, 17],
        [2, -0.0, -0.0, 0.0, 5],
        [1, 5e-324, 5e-324, 5e-324, 1],
        [4, 1.7976931348623157e308, -1.7976931348623157e308, 1.7976931348623157e308, 2**40],
        [1_000_000, 123456.789e-300, -2.2250738585072014e-308, 1e22, 2**53],
    ],
)
@pytest.mark.parametrize("writer", WRITERS)
def test_partial_message_round_trips_bit_exactly(partial: list[float], writer: str) -> None:
    key = PartialKey("hopping_1m", 1_700_000_020_000, "a|b\n..")
    decoded = decode_stage_message(WRITERS[writer](2, [(key, partial)]))
    assert isinstance(decoded, PartialColumns | PartialsMessage)
    assert (decoded.partition, decoded.entries) == (2, [(key, partial)])
    [(_, got)] = decoded.entries
    assert _bits(got) == _bits(partial)
    assert [math.copysign(1.0, x) for x in got] == [math.copysign(1.0, x) for x in partial]


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("event_type", HOSTILE)
def test_partial_message_body_keeps_hostile_event_types(event_type: str, writer: str) -> None:
    entries = [(PartialKey("tumbling_1m", 0, event_type), [1, 1.0, 1.0, 1.0, 9])]
    assert _decoded(WRITERS[writer](0, entries)) == (0, entries)


def test_partial_columns_body_is_compact_json_of_the_slots_asked() -> None:
    entries = {PartialKey("w", 60_000, "t"): [2, 1.5, 0.5, 1.0, 42],
               PartialKey("w", 60_000, "u"): [1, 1.0, 1.0, 1.0, 43],
               PartialKey("w", 60_000, "v"): [1, 3.0, 3.0, 3.0, 44]}
    [instance] = PartitionPartials(1, entries).instances.values()
    body = encode_partial_columns(1, instance, [0, 2])
    assert orjson.loads(body) == {"v": 3, "p": 1, "w": "w", "s": 60_000, "t": ["t", "v"], "c": [2, 1],
                                  "sum": [1.5, 3.0], "min": [0.5, 3.0], "max": [1.0, 3.0], "m": [42, 44]}
    assert b" " not in body


def test_the_column_encoding_writes_the_bytes_of_python_numbers() -> None:
    """partial_columns hands orjson numpy arrays: the bytes must be those of the same values as Python
    ints and floats (what the packs and messages held before), for any double and any 64-bit int."""
    rng = random.Random(13)
    specials = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 1 / 3, 1e16,
                123456789.125]
    for measures in (1, 2, 3):
        entries = {}
        for j in range(300):
            partial: list[float] = []
            for _ in range(measures):
                values = [rng.choice(specials) if rng.random() < 0.3 else
                          struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(3)]
                values = [v if math.isfinite(v) else 1.5 for v in values]
                partial += [rng.choice([0, 1, rng.getrandbits(63)]), *values]
            entries[PartialKey("w", 0, f"k{j}")] = [*partial, rng.choice([0, 2**53 + 1, 2**63 - 1])]
        partials = PartitionPartials(0)
        for key, partial in entries.items():
            partials.instance(key.window, key.start_ms, measures).put(key.event_type, partial)
        [instance] = partials.instances.values()
        slots = sorted(rng.sample(range(300), 120))
        keys = [instance.types[i] for i in slots]
        as_python = [entries[PartialKey("w", 0, key)] for key in keys]
        columns = {"c": [p[4 * m] for p in as_python for m in range(measures)],
                   "sum": [p[4 * m + 1] for p in as_python for m in range(measures)],
                   "min": [p[4 * m + 2] for p in as_python for m in range(measures)],
                   "max": [p[4 * m + 3] for p in as_python for m in range(measures)],
                   "m": [p[-1] for p in as_python]}
        head = {"v": 3, "p": 0, "w": "w", "s": 0} if measures == 1 else {"v": 4, "p": 0, "w": "w", "s": 0,
                                                                          "n": measures}
        assert encode_partial_columns(0, instance, slots) == orjson.dumps({**head, "t": keys, **columns})


def test_partial_message_body_is_compact_json() -> None:
    [body] = generation2_messages(1, [(PartialKey("w", 60_000, "t"), [2, 1.5, 0.5, 1.0, 42]),
                                 (PartialKey("v", 0, "u"), [1, 1.0, 1.0, 1.0, 43])])
    assert orjson.loads(body) == {"p": 1, "e": [["w", 60_000, "t", [2, 1.5, 0.5, 1.0, 42]],
                                                ["v", 0, "u", [1, 1.0, 1.0, 1.0, 43]]]}


def test_partials_are_cut_into_messages_below_the_limit_in_order() -> None:
    entries = [(PartialKey("tumbling_1m", 60_000 * i, "t" * 200), [i + 1, 1.0, 1.0, 1.0, i]) for i in range(5_000)]
    bodies = generation2_messages(3, entries)
    assert len(bodies) > 1 and all(len(body) <= PARTIALS_BYTES for body in bodies)
    decoded = [decode_stage_message(body) for body in bodies]
    assert [entry for message in decoded for entry in message.entries] == entries  # type: ignore[union-attr]
    assert generation2_messages(0, []) == []


def test_the_previous_versions_one_key_message_still_decodes() -> None:
    body = orjson.dumps({"p": 1, "w": "w", "s": 60_000, "t": "t", "a": [2, 1.5, 0.5, 1.0, 42]})
    assert decode_stage_message(body) == PartialsMessage(1, [(PartialKey("w", 60_000, "t"), [2, 1.5, 0.5, 1.0, 42])])


@pytest.mark.parametrize("writer", WRITERS)
def test_partial_marker_beyond_float_precision_round_trips(writer: str) -> None:
    decoded = decode_stage_message(WRITERS[writer](0, [(PartialKey("w", 0, "t"), [1, 1.0, 1.0, 1.0, 2**53 + 1])]))
    assert isinstance(decoded, PartialColumns | PartialsMessage)
    assert decoded.entries[0][1][4] == 2**53 + 1


@pytest.mark.parametrize(
    "message",
    [
        FrontierMessage(0, 1_700_000_040_000, 4, 1_700_000_100_123),
        FrontierMessage(3, -60_000, 1, 0),
        FrontierMessage(11, 2**62, 12, 2**63 - 1),
    ],
)
def test_frontier_message_round_trips(message: FrontierMessage) -> None:
    decoded = decode_stage_message(encode_frontier(message))
    assert decoded == message
    assert isinstance(decoded, FrontierMessage)
    assert all(type(field) is int for field in decoded)


def test_frontier_body_is_compact_json() -> None:
    body = encode_frontier(FrontierMessage(2, 120_000, 4, 130_000))
    assert orjson.loads(body) == {"v": 1, "p": 2, "f": 120_000, "n": 4, "at": 130_000}


@pytest.mark.parametrize("writer", WRITERS)
def test_partial_with_event_type_f_is_not_taken_for_a_frontier(writer: str) -> None:
    entries = [(PartialKey("f", 0, "f"), [1, 1.0, 1.0, 1.0, 0])]
    assert _decoded(WRITERS[writer](0, entries)) == (0, entries)


def test_partial_columns_of_unequal_lengths_are_refused() -> None:
    body = orjson.dumps({"p": 0, "w": "w", "s": 0, "t": ["a", "b"], "c": [1], "sum": [1.0], "min": [1.0],
                         "max": [1.0], "m": [3]})
    with pytest.raises(ValueError, match="unequal lengths"):
        decode_stage_message(body)


# -- dead-letter and late headers ---------------------------------------------------------


def test_dead_letter_headers_exact() -> None:
    headers = dead_letter_headers("events", 3, 12_345, Rejection("invalid_json", "unexpected end of data"))
    assert headers == [
        (HEADER_REASON, b"invalid_json"),
        (HEADER_DETAIL, b"unexpected end of data"),
        (HEADER_TOPIC, b"events"),
        (HEADER_PARTITION, b"3"),
        (HEADER_OFFSET, b"12345"),
    ]
    assert (HEADER_REASON, HEADER_DETAIL, HEADER_TOPIC, HEADER_PARTITION, HEADER_OFFSET) == (
        "dlq.reason", "dlq.detail", "source.topic", "source.partition", "source.offset")
    assert source_offset(headers) == 12_345


def test_late_headers_exact() -> None:
    missed = (("tumbling_1m", 1_700_000_040_000), ("hopping_1m", 1_700_000_020_000))
    headers = late_headers("events", 0, 0, missed)
    assert headers == [
        (HEADER_TOPIC, b"events"),
        (HEADER_PARTITION, b"0"),
        (HEADER_OFFSET, b"0"),
        (HEADER_MISSED, b"tumbling_1m@1700000040000,hopping_1m@1700000020000"),
    ]
    assert HEADER_MISSED == "late.windows"
    assert source_offset(headers) == 0  # offset 0 is an offset, not "absent"


def test_source_offset_of_large_offsets_and_missing_header() -> None:
    assert source_offset(late_headers("t", 1, 2**63 - 1, (("w", -60_000),))) == 2**63 - 1
    assert late_headers("t", 1, 5, (("w", -60_000),))[-1] == (HEADER_MISSED, b"w@-60000")
    assert source_offset([]) is None
    assert source_offset([(HEADER_TOPIC, b"events"), ("other", b"7")]) is None
    # Headers as a consumer returns them may carry foreign entries first.
    assert source_offset([("traceparent", b"00-ab"), *dead_letter_headers("e", 0, 77, Rejection("r", "d"))]) == 77


def test_forwarded_originals_are_cut_with_their_true_size() -> None:
    headers = [(HEADER_REASON, b"oversized")]
    assert forwarded(b"abc", headers, 3) == (b"abc", headers)
    assert forwarded(b"abcd", headers, 3) == (b"abc", [*headers, (HEADER_ORIGINAL_BYTES, b"4")])
    assert HEADER_ORIGINAL_BYTES == "dlq.original.bytes"


# -- partitioning and stored state ----------------------------------------------------------


def test_partial_partition_is_kafkas_default_partitioner_of_the_encoded_event_type() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    partitioner = DefaultPartitioner()
    rng = random.Random(3)
    for n in (1, 4, 7, 64):
        for event_type in HOSTILE[:10] + [str(rng.random()) for _ in range(50)]:
            key = encode_key_part(event_type).encode()
            assert partial_partition(event_type, n) == partitioner(key, list(range(n)), list(range(n)))


def test_murmur2_many_is_aiokafkas_murmur2_of_each_input() -> None:
    from aiokafka.partitioner import murmur2

    rng = random.Random(11)
    # Every length from 0 to 40 (each remainder mod 4, rows shorter and longer than their neighbours), and
    # bytes of every value.
    datas = [bytes(rng.randrange(256) for _ in range(length)) for length in [*range(41), *range(40, -1, -1)] * 5]
    datas += [bytes(range(256)), b"\xff" * 97, b""]
    rng.shuffle(datas)
    assert murmur2_many(datas).tolist() == [murmur2(data) for data in datas]
    assert murmur2_many([]).tolist() == []
    assert murmur2_many([b""]).tolist() == [murmur2(b"")]


def test_key_partitions_is_key_partition_of_each_key() -> None:
    rng = random.Random(12)
    texts = [*HOSTILE, *(f'["device-{rng.randrange(10**9)}", {rng.randrange(-9, 10**12)}]' for _ in range(500))]
    for partitions in (1, 3, 4, 64):
        assert key_partitions("devices", texts, partitions) == [key_partition("devices", t, partitions) for t in texts]
    assert key_partitions("devices", [], 4) == []


def test_every_window_of_an_event_type_goes_to_one_partition() -> None:
    """Alert rules keep per-type state in one stage-2 partition: windows and starts must not spread it."""
    for event_type in ["click", *HOSTILE[:10]]:
        owners = {partial_partition(PartialKey(w, s, event_type).event_type, 4)
                  for w in ("tumbling_1m", "hopping_1m") for s in range(0, 3_600_000, 30_000)}
        assert len(owners) == 1


def test_watermark_marks_round_trip() -> None:
    for mark in (Mark(None), Mark(None, idle=True), Mark(-5), Mark(1_800_000_000_123)):
        assert decode_mark(encode_mark(mark, 42)) == mark


def test_ingest_state_round_trips() -> None:
    position = IngestPosition(fold_next=10, archive_next=4, frontier_ms=-60_000, event_ms=2**53 + 1)
    key = PartialKey("w", 60_000, "a|b")
    items = {POSITION_KEY: encode_ingest_position(position),
             **stored_packs(PARTIALS_PACK_PREFIX, [(key, [3, 1.5, -2.0, 4.0, 2**62])])}
    restored_position, partials = decode_ingest_state(items, 0)
    assert (restored_position, partials.values) == (position, {key: [3, 1.5, -2.0, 4.0, 2**62]})
    empty_position, empty = decode_ingest_state({}, 0)
    assert (empty_position, empty.values) == (IngestPosition(), {})


def test_ingest_state_reads_column_packs_over_an_earlier_versions_packs() -> None:
    """Packs in sequence order, the newest value of each key winning, whichever format wrote them; the
    books count what each pack still holds, and a pack holding nothing current is to be deleted."""
    a, b, c = (PartialKey("w", 60_000, t) for t in "abc")
    old = stored_packs(PARTIALS_PACK_PREFIX, [(a, [1, 1.0, 1.0, 1.0, 1]), (b, [1, 2.0, 2.0, 2.0, 2])])  # pack 0
    newer = PartitionPartials(0, {a: [2, 3.0, 1.0, 2.0, 5], c: [1, 4.0, 4.0, 4.0, 6]})
    [instance] = newer.instances.values()
    items = {**old, pack_key(PARTIALS_PACK_PREFIX, 1): encode_partial_columns(0, instance, [0, 1]),
             pack_key(PARTIALS_PACK_PREFIX, 2): encode_partial_columns(0, instance, [1])}
    _, partials = decode_ingest_state(items, 0)
    assert partials.values == {a: [2, 3.0, 1.0, 2.0, 5], b: [1, 2.0, 2.0, 2.0, 2], c: [1, 4.0, 4.0, 4.0, 6]}
    books = partials.books
    assert books.live == {0: 1, 1: 1, 2: 1} and books.take_empty() == [] and books.next_seq == 3
    items[pack_key(PARTIALS_PACK_PREFIX, 3)] = encode_partial_columns(0, PartitionPartials(0, {
        b: [2, 2.0, 2.0, 2.0, 7]}).instance("w", 60_000), [0])
    _, partials = decode_ingest_state(items, 0)
    assert partials.books.live == {1: 1, 2: 1, 3: 1} and partials.books.take_empty() == [0]


@pytest.mark.parametrize("writer", ["columns", "an earlier version's"])
def test_export_state_round_trips(writer: str) -> None:
    key, other = PartialKey("hopping_1m", -30_000, "../x"), PartialKey("hopping_1m", -30_000, "y")
    totals = {key: {0: [1, 1.0, 1.0, 1.0, 5], 3: [2, -0.5, -1.0, 0.5, 2**62]}, other: {1: [1, -0.0, -0.0, -0.0, 0]}}
    packs = stored_totals(list(totals.items())) if writer == "columns" else stored_packs(
        TOTALS_PACK_PREFIX, [(k, {str(p): partial for p, partial in parts.items()}) for k, parts in totals.items()])
    items = {POSITION_KEY: encode_export_position(77), **packs,
             frontier_state_key(2): orjson.dumps(123), ledger_state_key("tumbling_1m", 60_000): orjson.dumps(120_000)}
    state = decode_export_state(items)
    assert (state.next_offset, state.totals(), state.frontiers, state.ledger) == (
        77, totals, {2: 123}, {("tumbling_1m", 60_000): 120_000})
    assert math.copysign(1.0, state.totals()[other][1][1]) == -1.0
    assert state.books.live == {0: 2}
    empty = decode_export_state({})
    assert (empty.next_offset, empty.windows, empty.frontiers, empty.ledger) == (None, {}, {}, {})


def test_totals_columns_body_is_compact_json_with_absent_partitions_marked() -> None:
    items = stored_totals([(PartialKey("w", 0, "a"), {0: [1, 1.5, 1.5, 1.5, 3]}),
                           (PartialKey("w", 0, "b"), {1: [2, 2.0, 0.5, 1.5, 4]})])
    [body] = items.values()
    assert orjson.loads(body) == {"v": 3, "w": "w", "s": 0, "t": ["a", "b"], "p": {
        "0": {"c": [1, 0], "sum": [1.5, 0.0], "min": [1.5, 0.0], "max": [1.5, 0.0], "m": [3, -1]},
        "1": {"c": [0, 2], "sum": [0.0, 2.0], "min": [0.0, 0.5], "max": [0.0, 1.5], "m": [-1, 4]}}}


@pytest.mark.parametrize("key", [b"k|w|0|t", b"t|w|0|t"])
def test_a_state_of_one_record_per_key_is_refused_with_the_upgrade_note(key: bytes) -> None:
    items = {key: b"[1, 1.0, 1.0, 1.0, 0]"}
    with pytest.raises(StateFormatError, match="earlier version.*reset"):
        decode_ingest_state(items, 0)
    with pytest.raises(StateFormatError, match="earlier version.*reset"):
        decode_export_state(items)


# -- several measures (generation 4) ----------------------------------------------------------------


def _two_measures() -> PartitionPartials:
    partials = PartitionPartials(3)
    instance = partials.instance("devices/tumbling_1m", 60_000, measures=2)
    instance.put('["d-17"]', [2, 43.0, 21.5, 21.5, 1, 40.2, 40.2, 40.2, 9])
    instance.put('["d-18"]', [1, -0.0, -0.0, -0.0, 0, 0.0, 0.0, 0.0, 11])  # no humidity yet
    return partials


def test_a_message_of_several_measures_round_trips_and_names_their_number() -> None:
    [instance] = _two_measures().instances.values()
    body = encode_partial_columns(3, instance, [0, 1])
    assert orjson.loads(body)["v"] == 4 and orjson.loads(body)["n"] == 2
    message = decode_stage_message(body)
    assert isinstance(message, PartialColumns) and message.measures == 2
    assert [(key.event_type, partial) for key, partial in message.entries] == [
        (key.event_type, partial) for key, partial in instance.entries()]
    assert _bits(message.entries[1][1]) == _bits(instance.partial(1))  # -0.0 kept
    bad = orjson.loads(body)
    bad["c"] = bad["c"][:-1]
    with pytest.raises(ValueError, match="unequal lengths"):
        decode_stage_message(orjson.dumps(bad))
    with pytest.raises(ValueError, match="unknown version"):
        decode_stage_message(orjson.dumps({**orjson.loads(body), "v": 5}))


def test_states_of_several_measures_round_trip() -> None:
    partials = _two_measures()
    [instance] = partials.instances.values()
    items = {pack_key(PARTIALS_PACK_PREFIX, 0): encode_partial_columns(3, instance, [0, 1])}
    _position, restored = decode_ingest_state(items, 3)
    assert restored.values == partials.values
    assert next(iter(restored.instances.values())).measures == 2
    totals = InstanceTotals("devices/tumbling_1m", 60_000, measures=2)
    totals.set(totals.slot('["d-17"]'), {0: [2, 43.0, 21.5, 21.5, 1, 40.2, 40.2, 40.2, 9],
                                         1: [1, 1.0, 1.0, 1.0, 0, 0.0, 0.0, 0.0, 4]})
    state = decode_export_state({pack_key(TOTALS_PACK_PREFIX, 0): encode_totals_columns(totals, [0])})
    [again] = state.windows.values()
    assert again.measures == 2 and again.parts(0) == totals.parts(0)
    assert again.measure_totals([0]) == [(Totals(3, 44.0, 1.0, 21.5), Totals(1, 40.2, 40.2, 40.2))]
