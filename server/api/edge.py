"""The gRPC edge: what every call passes before its request is read.

A server interceptor turns each ExposureService handler into one that reads its request
message itself (gRPC would otherwise read it whole, however slowly it comes, and decode it,
before the handler runs), and then, in this order:

  1. the caller is authenticated from the call's context (server.auth.gate): a call that
     proves nothing when an identity is needed ends UNAUTHENTICATED before a byte of its
     request is read;
  2. the request message is received, as bytes, within RECEIVE_SECONDS;
  3. its size is checked against what the method can need (--max-rules rules of at most
     server.rules.MAX_RULE_LENGTH bytes, or names), RESOURCE_EXHAUSTED beyond it;
  4. its top-level fields are counted on the wire, without decoding them: more rules (or
     names) than --max-rules is INVALID_ARGUMENT, before a single rule is built;
  5. for the requests that carry rules, each rule is walked one level deeper on the wire
     (rule_shapes): a rule far longer than a rule may be, or whose spec holds far more ports
     than server.rules.MAX_PORTS (WIRE_RULE_BYTES, WIRE_RULE_PORTS; summed over repeated
     copies of `spec`, which protobuf merges), is INVALID_ARGUMENT, before the ports are
     decoded; one only a little over is answered INVALID by itself after decoding;
  6. only then is it decoded, and the servicer runs, with the caller at hand (caller()).

The same interceptor bounds the calls that need no identity (health Check and Watch): at most
MAX_IDENTITY_FREE_CALLS of them at once per port, far below --max-concurrent-rpcs, so that
they can never take the call slots authenticated callers need; their request must arrive
within IDENTITY_FREE_RECEIVE_SECONDS; health Watch streams are capped lower still (probes use
Check), and when
authorization is on, reflection serves only callers who authenticate. On the wire nothing
changes: a caller sends its one request message as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import grpc
from google.protobuf.message import DecodeError

from k8sailor.v1 import exposure_pb2 as pb
from server.auth.errors import AuthError, AuthUnavailable, Forbidden, Unauthenticated
from server.auth.gate import AccessControl
from server.auth.identity import ANONYMOUS, Caller
from server.kube.fairness import Shares, new_share, use_share
from server.observability.logs import Fields, trace_fields
from server.rules import MAX_PORTS, MAX_RULE_LENGTH
from server.wrapping import WrappingInterceptor

if TYPE_CHECKING:  # generic in grpc-stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]

Context = grpc.aio.ServicerContext[Any, Any]
# A handler's behaviour: grpc-stubs types them as synchronous, grpc.aio's are coroutines or
# async generators.
Behavior = Callable[..., Any]
log = logging.getLogger("k8sailor.requests")

EXPOSURE_SERVICE: Final = pb.DESCRIPTOR.services_by_name["ExposureService"].full_name
HEALTH_WATCH: Final = "/grpc.health.v1.Health/Watch"
REFLECTION_PREFIX: Final = "/grpc.reflection."

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
#: How long a call's one request message may take to arrive, from when the call was admitted
#: (authenticated, for ExposureService): a caller that sends it slowly, or never, holds one of
#: --max-concurrent-rpcs for no longer. 4 MiB in 30 s is about 1 Mbit/s.
RECEIVE_SECONDS = 30.0  # not Final: tests shorten it
#: How long the request of a call that needs no identity may take to arrive: a
#: HealthCheckRequest is a service name, a few bytes, so a caller who has not sent it within a
#: second is holding a slot, not probing.
IDENTITY_FREE_RECEIVE_SECONDS = 1.0  # not Final: tests lengthen it
#: Concurrent health Watch streams per server: probes use Check, Watch is for the few clients
#: that follow the status; each stream is held open for as long as its caller likes.
MAX_HEALTH_WATCHES: Final = 32
#: Concurrent calls that need no identity (health Check and Watch, from when they arrive,
#: request unread, to their end) per port: the Watch streams and 16 Checks at once besides.
#: Anyone can open these, so they must stay well below --max-concurrent-rpcs (256: 208 slots
#: are then always left for callers who authenticate); beyond it, RESOURCE_EXHAUSTED at once.
MAX_IDENTITY_FREE_CALLS: Final = MAX_HEALTH_WATCHES + 16

_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("k8sailor_caller")


def caller() -> Caller:
    """The caller of the RPC being handled, as the edge authenticated it (ANONYMOUS when the
    server has no access control at all). Only inside a handler the edge wrapped."""
    try:
        return _caller.get()
    except LookupError:
        raise RuntimeError("caller() outside an RPC admitted by server.api.edge.Edge") from None


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
        raise _malformed()
    if position > end or field == 0:
        raise _malformed()
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
    raise _malformed()


def _malformed() -> Refused:
    return Refused(grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid protobuf message")


def auth_status(error: AuthError) -> tuple[grpc.StatusCode, str]:
    """The gRPC status for what identity and rights decided, here and in the servicers
    (server.api.exposure.status_for asks this for every AuthError)."""
    if isinstance(error, Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED, str(error)
    if isinstance(error, Forbidden):
        return grpc.StatusCode.PERMISSION_DENIED, str(error)
    if isinstance(error, AuthUnavailable):
        return grpc.StatusCode.UNAVAILABLE, str(error)
    return grpc.StatusCode.INTERNAL, str(error)


class Edge(WrappingInterceptor):
    """Authentication, size and count limits before decoding, for every ExposureService RPC;
    and the bounds on the streams that need no identity. Install it last (innermost), so that
    the metrics and tracing interceptors count and trace what it refuses."""

    def __init__(self, access: AccessControl | None, max_rules: int) -> None:
        """access None: no access control at all (every caller is ANONYMOUS)."""
        super().__init__()
        self._access = access
        self._max_rules = max_rules
        self._watch_cap = Cap(MAX_HEALTH_WATCHES)
        self._identity_free = Cap(MAX_IDENTITY_FREE_CALLS)
        self._shares = Shares()  # one turn per caller, see _admit

    def wrap(self, method: str, handler: Handler) -> Handler:
        shape = SHAPES.get(method)
        if shape is not None:
            deserialize = handler.request_deserializer

            async def admit(context: Context) -> Any:
                return await self._admit(method, shape, deserialize, context)

            return read_by_edge(handler, admit)
        if method.startswith(f"/{EXPOSURE_SERVICE}/"):
            # An RPC of ours with no Shape would go unauthenticated: refuse to serve it.
            raise LookupError(f"server.api.edge.SHAPES has no limits for {method}")
        if method.startswith(REFLECTION_PREFIX) and self._access is not None:
            return self._authenticated_stream(handler)
        return bounded(method, handler, self._watch_cap, self._identity_free)

    # ------------------------------------------------------------------ ExposureService

    async def _admit(
        self,
        method: str,
        shape: Shape,
        deserialize: Callable[[bytes], Any] | None,
        context: Context,
    ) -> Any:
        """The request, decoded once the caller is authenticated and it is within the limits
        (caller() is then set for the servicer); otherwise the call is logged and aborted."""
        started, size = time.monotonic(), 0
        try:
            who = ANONYMOUS
            if self._access is not None:
                try:
                    who = await self._access.authenticate(context)
                except AuthError as error:
                    raise Refused(*auth_status(error)) from error
            _caller.set(who)
            # Whose turn this call's API calls take (server.kube.fairness), set here for every RPC:
            # a caller's requests share one turn, so opening more requests at once buys no
            # more of the API server (its own priority and fairness goes by user too). Without
            # an identity (authorization off), each request is its own.
            if who is ANONYMOUS:
                new_share(method.rsplit("/", 1)[-1])
            else:
                use_share(self._shares.get(who.user))
            raw = await receive(context)
            size = len(raw)
            self._check(method, shape, raw)
            return raw if deserialize is None else deserialize(raw)
        except DecodeError:
            refused = _malformed()
        except Refused as error:
            refused = error
        _log_refusal(method, refused, size, started, context)
        await context.abort(refused.code, refused.message)
        raise AssertionError("unreachable: abort raises")

    def _check(self, method: str, shape: Shape, raw: bytes) -> None:
        """Refused when the request is larger, or has more rules (names), than allowed."""
        limit = shape.max_bytes(self._max_rules)
        if len(raw) > limit:
            rpc = method.rsplit("/", 1)[1]
            why = (
                ""
                if shape.field is None
                else f" ({self._max_rules} {shape.what}, --max-rules, of at most "
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
        count, complete = count_field(raw, shape.field, self._max_rules + ENVELOPE_FIELDS)
        if not complete:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request has more than {self._max_rules + ENVELOPE_FIELDS} fields: "
                f"this server accepts at most {self._max_rules} {shape.what} in one "
                f"request (--max-rules); split them over several requests",
            )
        if count > self._max_rules:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{count} {shape.what} is more than this server accepts in one request "
                f"({self._max_rules}); split them over several requests",
            )
        if shape.rules:
            self._check_rules(shape, raw)

    def _check_rules(self, shape: Shape, raw: bytes) -> None:
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

    # ----------------------------------------------------------------- identity-free streams

    def _authenticated_stream(self, handler: Handler) -> Handler:
        """A bidi stream (reflection) that starts only for a caller who authenticates, when
        authorization needs an identity (authenticate() asks for none otherwise)."""
        access = self._access
        behavior: Behavior | None = handler.stream_stream
        if access is None or behavior is None:
            return handler

        async def authenticated(requests: Any, context: Context) -> AsyncIterator[Any]:
            try:
                await access.authenticate(context)
            except AuthError as error:
                await context.abort(*auth_status(error))
            async for response in behavior(requests, context):
                yield response

        return grpc.stream_stream_rpc_method_handler(
            authenticated,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def receive(context: Context, seconds: float | None = None) -> bytes:
    """The call's one request message, as bytes, if it arrives within `seconds` (None:
    RECEIVE_SECONDS)."""
    seconds = RECEIVE_SECONDS if seconds is None else seconds
    try:
        message = await asyncio.wait_for(context.read(), seconds)
    except TimeoutError:
        raise Refused(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"the request message did not arrive within {seconds:g} s",
        ) from None
    if message is grpc.aio.EOF:  # type: ignore[attr-defined]  # missing in grpc-stubs
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "the call ended without a request")
    data: bytes = message
    return data


def read_by_edge(handler: Handler, admit: Callable[[Context], Awaitable[Any]]) -> Handler:
    """handler, of a method with one request message, as a handler that reads that message
    itself: `admit(context)` authenticates, receives and checks it, before gRPC has read a byte
    of it (for a handler of a unary request, gRPC reads it whole, however slowly it comes,
    before the handler runs). On the wire nothing changes: the caller sends one message."""
    serialize = handler.response_serializer
    if handler.request_streaming:
        raise TypeError("read_by_edge: the method's request must be one message")
    if handler.response_streaming:
        streaming: Behavior | None = handler.unary_stream
        assert streaming is not None
        if inspect.isasyncgenfunction(streaming):

            async def generator(_: Any, context: Context) -> AsyncIterator[Any]:
                async for response in streaming(await admit(context), context):
                    yield response

            return grpc.stream_stream_rpc_method_handler(
                generator, request_deserializer=None, response_serializer=serialize
            )

        async def coroutine(_: Any, context: Context) -> Any:
            return await streaming(await admit(context), context)

        return grpc.stream_stream_rpc_method_handler(
            coroutine, request_deserializer=None, response_serializer=serialize
        )
    unary: Behavior | None = handler.unary_unary
    assert unary is not None

    async def single(_: Any, context: Context) -> Any:
        return await unary(await admit(context), context)

    return grpc.stream_unary_rpc_method_handler(
        single, request_deserializer=None, response_serializer=serialize
    )


def bounded(method: str, handler: Handler, watch_cap: Cap, calls: Cap) -> Handler:
    """A method that needs no identity (health, anything but ExposureService and reflection):
    at most calls.limit such calls at once, its one request message must arrive within
    IDENTITY_FREE_RECEIVE_SECONDS, and health Watch streams are capped. A stream of requests
    (reflection) is left as it is."""
    if handler.request_streaming:
        return handler
    if method == HEALTH_WATCH:
        handler = watch_capped(handler, watch_cap)
    deserialize = handler.request_deserializer

    async def admit(context: Context) -> Any:
        try:
            raw = await receive(context, IDENTITY_FREE_RECEIVE_SECONDS)
            return raw if deserialize is None else deserialize(raw)
        except DecodeError:
            refused = _malformed()
        except Refused as error:
            refused = error
        await context.abort(refused.code, refused.message)
        raise AssertionError("unreachable: abort raises")

    return identity_free(read_by_edge(handler, admit), calls)


def identity_free(handler: Handler, cap: Cap) -> Handler:
    """handler (of a request stream, as read_by_edge makes it), refusing RESOURCE_EXHAUSTED at
    once beyond cap.limit calls at once: its slot is taken before its request is read, and held
    until the call ends, so that callers who prove nothing hold at most cap.limit of the
    server's --max-concurrent-rpcs, however they send (or never send) their requests."""
    serialize = handler.response_serializer

    async def enter(context: Context) -> None:
        if not cap.admit():
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this server serves at most {cap.limit} calls that need no identity (health "
                "checks) at once on this port; try again shortly",
            )

    if handler.response_streaming:
        streaming: Behavior | None = handler.stream_stream
        assert streaming is not None
        if inspect.isasyncgenfunction(streaming):

            async def generator(requests: Any, context: Context) -> AsyncIterator[Any]:
                await enter(context)
                try:
                    async for response in streaming(requests, context):
                        yield response
                finally:
                    cap.release()

            return grpc.stream_stream_rpc_method_handler(
                generator, request_deserializer=None, response_serializer=serialize
            )

        async def coroutine(requests: Any, context: Context) -> Any:
            await enter(context)
            try:
                return await streaming(requests, context)
            finally:
                cap.release()

        return grpc.stream_stream_rpc_method_handler(
            coroutine, request_deserializer=None, response_serializer=serialize
        )
    unary: Behavior | None = handler.stream_unary
    assert unary is not None

    async def single(requests: Any, context: Context) -> Any:
        await enter(context)
        try:
            return await unary(requests, context)
        finally:
            cap.release()

    return grpc.stream_unary_rpc_method_handler(
        single, request_deserializer=None, response_serializer=serialize
    )


class Cap:
    """How many calls of a kind one server (port) has open at once, and its cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._watches = 0

    def admit(self) -> bool:
        if self._watches >= self.limit:
            return False
        self._watches += 1
        return True

    def release(self) -> None:
        self._watches -= 1


class HealthEdge(WrappingInterceptor):
    """For the plaintext health port (server.api.health): the bounds of `bounded`, its own caps."""

    def __init__(self) -> None:
        super().__init__()
        self._watch_cap = Cap(MAX_HEALTH_WATCHES)
        self._identity_free = Cap(MAX_IDENTITY_FREE_CALLS)

    def wrap(self, method: str, handler: Handler) -> Handler:
        return bounded(method, handler, self._watch_cap, self._identity_free)


def watch_capped(handler: Handler, cap: Cap) -> Handler:
    """The health Watch handler, refusing RESOURCE_EXHAUSTED beyond cap.limit streams at once
    (grpc_health's Watch writes through context.write: a coroutine)."""
    watch: Behavior | None = handler.unary_stream
    if watch is None:
        return handler

    async def capped(request: Any, context: Context) -> Any:
        if not cap.admit():
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this server serves at most {cap.limit} health Watch streams at once; use "
                "Check (as probes do), or watch again later",
            )
        try:
            return await watch(request, context)
        finally:
            cap.release()

    return grpc.unary_stream_rpc_method_handler(
        capped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _log_refusal(
    method: str, refused: Refused, size: int, started: float, context: Context
) -> None:
    """The request's one log line, for a call refused before the servicer saw it: who (when
    known), what status, how big; never what the request held, which was not decoded."""
    try:
        who = _caller.get()
    except LookupError:
        who = ANONYMOUS
    line = {
        "event": method.rsplit("/", 1)[1],
        "user": who.user,
        "groups": list(who.groups),
        "authn": who.method.value,
        "namespace": "",
        "deployment": "",
        "status": refused.code.name,
        "message": refused.message,
        "ms": round((time.monotonic() - started) * 1000, 1),
        "bytes": size,
        "peer": context.peer(),
        **trace_fields(),
    }
    log.info(Fields(line))
