"""ExposureService requests as the wire has them, read without decoding: what each RPC's request
may hold (Shape, SHAPES), and the checks the edge (server.api.edge) makes before decoding one.

  - its size against what the method can need (--max-rules rules of at most
    server.rules.MAX_RULE_LENGTH bytes, or names): RESOURCE_EXHAUSTED beyond it;
  - its top-level fields, counted on the wire: more rules (or names) than --max-rules is
    INVALID_ARGUMENT, before a single rule is built;
  - for the requests that carry rules, each rule walked one level deeper (rule_shapes): a rule
    far longer than a rule may be, or whose spec holds far more ports than
    server.rules.MAX_PORTS (WIRE_RULE_BYTES, WIRE_RULE_PORTS; summed over repeated copies of
    `spec`, which protobuf merges), is INVALID_ARGUMENT, before the ports are decoded; one only
    a little over is answered INVALID by itself after decoding.

Every refusal is a `Refused`: a status and a message, which the edge logs and aborts with.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import grpc

from k8sailor.v1 import exposure_pb2 as pb
from server.rules import MAX_PORTS, MAX_RULE_LENGTH

EXPOSURE_SERVICE: Final = pb.DESCRIPTOR.services_by_name["ExposureService"].full_name

#: Room for everything of a request but its rules or names: namespace and Deployment names
#: (63 and 253 characters at most when valid; a longer one still gets its own clear error),
#: the switches, and fields a newer client may add.
ENVELOPE_BYTES: Final = 64 * 1024
#: A rule's encoding around its text (or spec) of at most MAX_RULE_LENGTH bytes: the Rule's
#: own tag and length, and its oneof field's.
RULE_FRAMING_BYTES: Final = 8
#: A Service name in DeleteServices is a DNS-1035 label (63 characters); more room than that,
#: so that a wrong name gets the error that names it rather than a size refusal.
NAME_BYTES: Final = 256
#: Top-level fields besides rules (or names) that the count allows before it stops reading.
ENVELOPE_FIELDS: Final = 64


@dataclass(frozen=True, slots=True)
class Shape:
    """What an RPC's request may hold: `field` (its rules or names) at most max_items times,
    each at most item_bytes encoded."""

    field: int | None  # None: a request with no list (ListServices)
    what: str  # "rules" or "names", for messages
    item_bytes: int
    #: Its items are Rules, whose specs' ports are counted on the wire (rule_shapes).
    rules: bool = False

    def max_bytes(self, max_items: int) -> int:
        return ENVELOPE_BYTES + (0 if self.field is None else max_items * self.item_bytes)


def _field(message: Any, name: str) -> int:
    number: int = message.DESCRIPTOR.fields_by_name[name].number
    return number


_RULE_BYTES = MAX_RULE_LENGTH + RULE_FRAMING_BYTES
SHAPES: Final[Mapping[str, Shape]] = {
    f"/{EXPOSURE_SERVICE}/CreateServices": Shape(
        _field(pb.CreateServicesRequest, "rules"), "rules", _RULE_BYTES, rules=True
    ),
    f"/{EXPOSURE_SERVICE}/ApplyServices": Shape(
        _field(pb.ApplyServicesRequest, "rules"), "rules", _RULE_BYTES, rules=True
    ),
    f"/{EXPOSURE_SERVICE}/DeleteServices": Shape(
        _field(pb.DeleteServicesRequest, "names"), "names", NAME_BYTES
    ),
    f"/{EXPOSURE_SERVICE}/ListServices": Shape(None, "", 0),
}
#: Where a Rule's structured form and its ports are (the same in both requests that carry rules).
RULE_SPEC: Final = _field(pb.Rule, "spec")
SPEC_PORTS: Final = _field(pb.ServiceSpec, "ports")
#: What one rule may be on the wire before the whole request is refused undecoded. Well above
#: what a rule may be (MAX_PORTS ports, MAX_RULE_LENGTH): a rule a little over those is
#: decoded at no real cost and answered INVALID on its own, as one bad rule must not spoil the
#: others; these bounds only keep a rule of thousands of ports (each a whole message once
#: decoded, from two bytes on the wire) from costing memory out of proportion to the request.
WIRE_RULE_PORTS: Final = 2 * MAX_PORTS
WIRE_RULE_BYTES: Final = 2 * _RULE_BYTES
#: Fields one rule may hold on the wire, its spec's (every copy's) included, before the walk
#: stops, so that a rule of thousands of repeated fields costs no more to look at than a
#: valid one.
RULE_FIELDS: Final = WIRE_RULE_PORTS + ENVELOPE_FIELDS


def max_request_bytes(max_rules: int) -> int:
    """The largest request any RPC can need with --max-rules: what gRPC may receive."""
    return max(shape.max_bytes(max_rules) for shape in SHAPES.values())


class Refused(Exception):
    """A call refused at the edge: its status and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def malformed() -> Refused:
    """The refusal of bytes that are not a protobuf message (also what a DecodeError means)."""
    return Refused(grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid protobuf message")


def check(method: str, shape: Shape, raw: bytes, max_rules: int) -> None:
    """Refused when the request of `method` is larger, or has more rules (names), than allowed
    with --max-rules=max_rules, or holds a rule far beyond what a rule may be."""
    limit = shape.max_bytes(max_rules)
    if len(raw) > limit:
        rpc = method.rsplit("/", 1)[1]
        why = (
            ""
            if shape.field is None
            else f" ({max_rules} {shape.what}, --max-rules, of at most "
            f"{shape.item_bytes} bytes each, and {ENVELOPE_BYTES} for the rest): split it "
            "over several requests"
        )
        raise Refused(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the request is {len(raw)} bytes; this server takes at most {limit} in one "
            f"{rpc} request{why}",
        )
    if shape.field is None:
        return
    count, complete = count_field(raw, shape.field, max_rules + ENVELOPE_FIELDS)
    if not complete:
        raise Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request has more than {max_rules + ENVELOPE_FIELDS} fields: "
            f"this server accepts at most {max_rules} {shape.what} in one "
            f"request (--max-rules); split them over several requests",
        )
    if count > max_rules:
        raise Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{count} {shape.what} is more than this server accepts in one request "
            f"({max_rules}); split them over several requests",
        )
    if shape.rules:
        _check_rules(shape, raw)


def _check_rules(shape: Shape, raw: bytes) -> None:
    """Refused when a rule is far longer than a rule may be, or its spec has far more
    ports than MAX_PORTS (WIRE_RULE_BYTES, WIRE_RULE_PORTS): decoding them would cost
    memory out of all proportion to the request. A rule only a little over is decoded and
    answered INVALID by itself, beside the others' results."""
    assert shape.field is not None
    rules = rule_shapes(raw, shape.field, WIRE_RULE_BYTES, RULE_FIELDS)
    for index, rule in enumerate(rules):
        if rule.length > WIRE_RULE_BYTES:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"rule {index} is {rule.length} bytes encoded; a rule may be at most "
                f"{MAX_RULE_LENGTH} characters, and this server reads none over "
                f"{WIRE_RULE_BYTES} bytes: split it into several rules",
            )
        if rule.ports > WIRE_RULE_PORTS:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"rule {index} has {'' if rule.complete else 'at least '}{rule.ports} "
                f"ports; a rule may have at most {MAX_PORTS} ports, and this server reads "
                f"none with over {WIRE_RULE_PORTS}: split it into several rules",
            )
        if not rule.complete:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"rule {index} has more than {RULE_FIELDS} fields: a rule may have at "
                f"most {MAX_PORTS} ports and few other fields",
            )


def count_field(data: bytes, number: int, limit: int) -> tuple[int, bool]:
    """How often field `number` occurs at the top level of the encoded message `data`, read
    from the wire without decoding anything, and whether all of data was read: the count
    stops after `limit` top-level fields, so a request of millions of fields costs no more
    than one of `limit`. Refused (INVALID_ARGUMENT) for bytes that are not a message."""
    position, end, fields, count = 0, len(data), 0, 0
    while position < end:
        if fields == limit:
            return count, False
        field, _, _, position = _next_field(data, position, end)
        count += field == number
        fields += 1
    return count, True


@dataclass(frozen=True, slots=True)
class RuleShape:
    """One rule of a request as the wire has it: its encoded length, and the ports of its
    spec, summed over every copy of `spec` (protobuf merges them into one); `complete` is
    False when the rule was not read to its end (longer than allowed, or more fields)."""

    length: int
    ports: int
    complete: bool


def rule_shapes(data: bytes, number: int, max_bytes: int, max_fields: int) -> Iterator[RuleShape]:
    """Each occurrence of the Rule field `number` in the encoded request `data`, in order, as
    its RuleShape, without decoding anything. A rule longer than max_bytes is not read at all;
    one is read for at most max_fields fields (its own and its specs'), so the walk costs at
    most that many fields per rule. Refused (INVALID_ARGUMENT) for bytes that are not a
    message, at either level."""
    position, end = 0, len(data)
    while position < end:
        field, wire_type, start, position = _next_field(data, position, end)
        if field != number or wire_type != 2:
            continue
        length = position - start
        if length > max_bytes:
            yield RuleShape(length, 0, False)
            continue
        yield _rule_shape(data, start, position, max_fields)


def _rule_shape(data: bytes, start: int, end: int, max_fields: int) -> RuleShape:
    ports, fields, position = 0, 0, start
    while position < end:
        if fields == max_fields:
            return RuleShape(end - start, ports, False)
        field, wire_type, spec, position = _next_field(data, position, end)
        fields += 1
        if field != RULE_SPEC or wire_type != 2:
            continue
        while spec < position:  # the spec's own fields, within the rule's budget
            if fields == max_fields:
                return RuleShape(end - start, ports, False)
            inner, inner_type, _, spec = _next_field(data, spec, position)
            fields += 1
            ports += inner == SPEC_PORTS and inner_type == 2
    return RuleShape(end - start, ports, True)


def _next_field(data: bytes, position: int, end: int) -> tuple[int, int, int, int]:
    """The field at `position` of a message ending at `end`: its number, wire type, where its
    value starts (a length-delimited one's content) and where the next field starts."""
    key, position = _varint(data, position, end)
    wire_type, field = key & 7, key >> 3
    start = position
    if wire_type == 0:
        _, position = _varint(data, position, end)
    elif wire_type == 1:
        position += 8
    elif wire_type == 2:
        length, start = _varint(data, position, end)
        position = start + length
    elif wire_type == 5:
        position += 4
    else:
        raise malformed()
    if position > end or field == 0:
        raise malformed()
    return field, wire_type, start, position


def _varint(data: bytes, position: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while shift < 64 and position < end:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    raise malformed()
