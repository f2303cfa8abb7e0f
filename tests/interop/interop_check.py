#!/usr/bin/env python3
"""Drives a busbar node from a NATS client nobody here wrote (nats-py), with no
busbar code, and checks every answer against the wire contract.

    interop_check.py URL CONTRACTS_DIR [--project shop] [--node ID] [--timeout SECONDS]

CONTRACTS_DIR holds the NATS micro JSON Schemas (`../shared/contracts/nats-micro-v1`).
The node under test serves `echo`, `fail` (services) and `audit` (a message)
in project PROJECT with an empty bus prefix, so the subjects are
`call.PROJECT.echo` and so on. In order:

  call       request `call.PROJECT.echo` with binary bytes: the reply is the same bytes, no error headers
  error      request `call.PROJECT.fail` with `invalid:bad input`: an empty reply with
             `Nats-Service-Error: bad input`, `Nats-Service-Error-Code: 400`, `Busbar-Failure-Class: invalid`
  broadcast  publish to `event.PROJECT.audit` (flushed); whether it ran is for the caller to check
  dispatch   JetStream publish to `queue.PROJECT.echo` through nats-py's JetStream API: a publish ack
             from the stream `<PROJECT>_QUEUE`; whether it ran is for the caller to check
  discovery  request `$SRV.INFO.PROJECT`, `$SRV.PING.PROJECT`, `$SRV.STATS.PROJECT`; each reply
             validated with jsonschema (Draft 7) against {info,ping,stats}_response.json, with an
             RFC 3339 check of `format: date-time` (`started`); plus what the node must say
             (type, name, id, the endpoints' subjects)

Prints one JSON summary on stdout: {"ok", "server", "call", "error", "broadcast",
"dispatch", "discovery": {"info"|"ping"|"stats": {"subject", "valid", "schema_errors",
"reply"}}, "failures": [...]}. Each schema error is {"path", "message", "validator"}.
Exit status: 0 when every check passed, 1 when one failed (all are still run
and listed in "failures"), 2 for a usage error, 3 when nats-py or jsonschema
is missing (run ./dev test, which installs them into target/py).
"""

import argparse
import asyncio
import base64
import json
import re
import sys
from datetime import datetime
from pathlib import Path

try:
    import jsonschema
    import nats
    import nats.errors
    import nats.micro.service
    import nats.js.errors
except ImportError as missing:  # the wrong python, or a venv ./dev test did not make
    print(
        f"interop_check.py: {missing}; run ./dev test, which installs tests/interop/requirements.txt "
        f"into target/py (this is {sys.executable})",
        file=sys.stderr,
    )
    sys.exit(3)

# Not UTF-8 and with a NUL: the payload must travel as bytes, untouched.
ECHO_PAYLOAD = b"hello from nats-py \x00\xff\xfe busbar"
DISPATCH_PAYLOAD = b"dispatched by nats-py"
EVENT_PAYLOAD = b"broadcast by nats-py"
SCHEMAS = {"info": "info_response.json", "ping": "ping_response.json", "stats": "stats_response.json"}

# RFC 3339 `date-time` (what JSON Schema's format means), checked here rather
# than by jsonschema's optional rfc3339-validator, which is not installed: a
# format jsonschema cannot check would pass silently.
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def format_checker():
    checker = jsonschema.FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def is_datetime(value):
        if not isinstance(value, str):
            return True  # formats apply to strings only; `type` catches the rest
        if not RFC3339.match(value):
            raise ValueError(f"{value!r} is not an RFC 3339 date-time")
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))  # month 13, Feb 30 …
        return True

    # The check must bite, or a valid reply proves nothing.
    assert checker.conforms("2026-11-25T08:25:00Z", "date-time")
    assert checker.conforms("2026-11-25T08:25:00.123+01:00", "date-time")
    for bad in ["2026-13-01T00:00:00Z", "2026-11-25 08:25:00", "2026-11-25T08:25:00", "yesterday"]:
        assert not checker.conforms(bad, "date-time"), bad
    return checker


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="NATS server URL, e.g. nats://127.0.0.1:4222")
    parser.add_argument("contracts", type=Path, help="the folder of {info,ping,stats}_response.json")
    parser.add_argument("--project", default="shop", help="the node's project (default shop)")
    parser.add_argument("--node", default="py-node", help="the node's id (default py-node)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each reply")
    return parser.parse_args(argv)


def text_of(data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


class Checks:
    """The summary being built, and the failed checks."""

    def __init__(self):
        self.summary = {"ok": False, "failures": []}

    def expect(self, condition, what):
        if not condition:
            self.summary["failures"].append(what)
        return condition


async def request(nc, checks, section, subject, payload, timeout):
    """A request whose failure (no responders, timeout) is a failed check, not a crash."""
    try:
        return await nc.request(subject, payload, timeout=timeout)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as e:
        checks.expect(False, f"{section}: {subject}: {type(e).__name__}")
        return None


async def check_call(nc, checks, args):
    subject = f"call.{args.project}.echo"
    msg = await request(nc, checks, "call", subject, ECHO_PAYLOAD, args.timeout)
    if msg is None:
        return {"subject": subject}
    headers = dict(msg.headers or {})
    checks.expect(msg.data == ECHO_PAYLOAD, f"call: echo answered {msg.data!r}, not {ECHO_PAYLOAD!r}")
    checks.expect("Nats-Service-Error" not in headers, f"call: echo answered with an error: {headers}")
    return {
        "subject": subject,
        "sent_base64": base64.b64encode(ECHO_PAYLOAD).decode("ascii"),
        "reply_base64": base64.b64encode(msg.data).decode("ascii"),
        "same_bytes": msg.data == ECHO_PAYLOAD,
        "headers": headers,
    }


async def check_error(nc, checks, args):
    subject = f"call.{args.project}.fail"
    msg = await request(nc, checks, "error", subject, b"invalid:bad input", args.timeout)
    if msg is None:
        return {"subject": subject}
    headers = dict(msg.headers or {})
    expected = {"Nats-Service-Error": "bad input", "Nats-Service-Error-Code": "400", "Busbar-Failure-Class": "invalid"}
    for key, value in expected.items():
        checks.expect(headers.get(key) == value, f"error: header {key} is {headers.get(key)!r}, not {value!r}")
    checks.expect(msg.data == b"", f"error: an error reply has an empty body, got {msg.data!r}")
    return {
        "subject": subject,
        "code": headers.get("Nats-Service-Error-Code"),
        "message": headers.get("Nats-Service-Error"),
        "class": headers.get("Busbar-Failure-Class"),
        "body": text_of(msg.data),
        "headers": headers,
    }


async def check_broadcast(nc, checks, args):
    subject = f"event.{args.project}.audit"
    await nc.publish(subject, EVENT_PAYLOAD)
    await nc.flush(timeout=args.timeout)  # a PING/PONG round trip: the server has the message
    return {"subject": subject, "published": True}


async def check_dispatch(nc, checks, args):
    subject = f"queue.{args.project}.echo"
    stream = re.sub(r"[^A-Z0-9]", "_", args.project.upper()) + "_QUEUE"
    js = nc.jetstream(timeout=args.timeout)
    try:
        # `stream=` makes the server refuse the message unless that stream takes it.
        ack = await js.publish(subject, DISPATCH_PAYLOAD, stream=stream)
    except (nats.js.errors.Error, nats.errors.Error) as e:
        checks.expect(False, f"dispatch: JetStream publish to {subject} failed: {e!r}")
        return {"subject": subject, "expected_stream": stream}
    checks.expect(ack.stream == stream, f"dispatch: stored in stream {ack.stream!r}, not {stream!r}")
    checks.expect(isinstance(ack.seq, int) and ack.seq >= 1, f"dispatch: publish ack seq {ack.seq!r}")
    checks.expect(not ack.duplicate, "dispatch: the publish ack says duplicate")
    return {"subject": subject, "stream": ack.stream, "seq": ack.seq, "duplicate": bool(ack.duplicate)}


def schema_errors(validator, document):
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    return [
        {"path": "/" + "/".join(str(p) for p in e.absolute_path), "message": e.message, "validator": e.validator}
        for e in errors
    ]


async def check_discovery(nc, checks, args, checker):
    endpoints = {
        f"call.{args.project}.echo": "echo",
        f"call.{args.project}.fail": "fail",
        f"event.{args.project}.audit": "audit",
    }
    out = {}
    for verb, schema_file in SCHEMAS.items():
        schema = json.loads((args.contracts / schema_file).read_text())
        jsonschema.Draft7Validator.check_schema(schema)
        validator = jsonschema.Draft7Validator(schema, format_checker=checker)
        subject = f"$SRV.{verb.upper()}.{args.project}"
        msg = await request(nc, checks, f"discovery {verb}", subject, b"", args.timeout)
        if msg is None:
            out[verb] = {"subject": subject, "valid": False}
            continue
        try:
            reply = json.loads(msg.data)
        except ValueError as e:
            checks.expect(False, f"discovery {verb}: not JSON: {e}: {msg.data!r}")
            out[verb] = {"subject": subject, "valid": False, "body": text_of(msg.data)}
            continue
        errors = schema_errors(validator, reply)
        for e in errors:
            checks.expect(False, f"discovery {verb}: schema {schema_file}: at {e['path']}: {e['message']}")
        # What the schema cannot know: that this is the node we started.
        kind = f"io.nats.micro.v1.{verb}_response"
        checks.expect(reply.get("type") == kind, f"discovery {verb}: type {reply.get('type')!r}")
        checks.expect(reply.get("name") == args.project, f"discovery {verb}: name {reply.get('name')!r}")
        checks.expect(reply.get("id") == args.node, f"discovery {verb}: id {reply.get('id')!r}")
        if verb in ("info", "stats"):
            listed = {e.get("subject") for e in reply.get("endpoints") or []}
            checks.expect(
                set(endpoints) <= listed, f"discovery {verb}: endpoints {sorted(listed)} miss some of {sorted(endpoints)}"
            )
        if verb == "stats":
            echo = [e for e in reply.get("endpoints") or [] if e.get("subject") == f"call.{args.project}.echo"]
            checks.expect(
                bool(echo) and echo[0].get("num_requests", 0) >= 1, f"discovery stats: echo's calls not counted: {echo}"
            )
        # A stock NATS micro client must be able to read the reply too.
        parser = {"info": "ServiceInfo", "ping": "ServicePing", "stats": "ServiceStats"}[verb]
        try:
            getattr(nats.micro.service, parser).from_dict(reply)
        except Exception as e:  # noqa: BLE001 - any parse failure is the finding
            checks.expect(False, f"discovery {verb}: nats-py's {parser}.from_dict fails: {e!r}")
        out[verb] = {"subject": subject, "valid": not errors, "schema_errors": errors, "reply": reply}
    return out


async def run(args):
    checks = Checks()
    summary = checks.summary
    checker = format_checker()
    errors = []

    async def quiet(e):  # instead of nats-py's default, which logs a traceback per failed attempt
        errors.append(e)

    try:
        nc = await nats.connect(
            args.url,
            name="busbar-interop-check",
            connect_timeout=5,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            error_cb=quiet,
        )
    except Exception as e:  # nats-py raises several kinds here; all mean "not connected"
        checks.expect(False, f"connect to {args.url}: {errors[-1] if errors else e!r}")
        return summary
    try:
        version = nc.connected_server_version
        summary["server"] = {"version": f"{version.major}.{version.minor}.{version.patch}", "url": args.url}
        summary["call"] = await check_call(nc, checks, args)
        summary["error"] = await check_error(nc, checks, args)
        summary["broadcast"] = await check_broadcast(nc, checks, args)
        summary["dispatch"] = await check_dispatch(nc, checks, args)
        summary["discovery"] = await check_discovery(nc, checks, args, checker)
    finally:
        await nc.close()
    summary["ok"] = not summary["failures"]
    return summary


def main(argv):
    args = parse_args(argv)
    if not args.contracts.is_dir():
        print(f"interop_check.py: {args.contracts} is not a folder (the NATS micro schemas)", file=sys.stderr)
        return 2
    summary = asyncio.run(run(args))
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
