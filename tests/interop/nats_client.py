#!/usr/bin/env python3
"""A NATS client nobody here wrote (nats-py), for busbar's interop tests.

    nats_client.py URL PREFIX request NAME [PAYLOAD] [--header K=V]... [--timeout SECONDS]
    nats_client.py URL PREFIX publish NAME [PAYLOAD] [--header K=V]...

The subject is PREFIX + NAME, joined as given (`call.busbar.` + `echo`).
PAYLOAD `-` reads the payload from stdin; none sends an empty payload.

Prints one JSON object on stdout:
  request:  {"ok": true, "subject", "reply_subject", "data", "data_base64", "headers"}
            (`data` is the payload as UTF-8 text, or null when it is not UTF-8;
             `headers` maps each header to its value, {} when there are none)
  publish:  {"ok": true, "subject"}
  failure:  {"ok": false, "subject", "error": "no_responders" | "timeout" | "connect", "detail"}
Exit status: 0 when "ok" is true, 1 otherwise, 2 for a usage error.
"""

import argparse
import asyncio
import base64
import json
import sys

import nats
import nats.errors


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="NATS server URL, e.g. nats://127.0.0.1:4222")
    parser.add_argument("prefix", help="put before NAME to make the subject, e.g. call.busbar.")
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub):
        sub.add_argument("name", help="the rest of the subject")
        sub.add_argument("payload", nargs="?", default="", help="the payload; '-' reads stdin")
        sub.add_argument("--header", action="append", default=[], metavar="K=V", help="a header (repeatable)")

    request = commands.add_parser("request", help="send a request, print the reply")
    common(request)
    request.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the reply")
    publish = commands.add_parser("publish", help="publish a message (flushed), print nothing but ok")
    common(publish)
    return parser.parse_args(argv)


def payload_of(args):
    if args.payload == "-":
        return sys.stdin.buffer.read()
    return args.payload.encode()


def headers_of(args):
    headers = {}
    for item in args.header:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"nats_client.py: --header wants K=V, got {item!r}", file=sys.stderr)
            raise SystemExit(2)
        headers[key] = value
    return headers or None


def reply_json(subject, msg):
    try:
        text = msg.data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "ok": True,
        "subject": subject,
        "reply_subject": msg.subject,
        "data": text,
        "data_base64": base64.b64encode(msg.data).decode("ascii"),
        "headers": dict(msg.headers or {}),
    }


async def run(args):
    subject = args.prefix + args.name
    payload, headers = payload_of(args), headers_of(args)
    failure = {"ok": False, "subject": subject}
    errors = []

    async def quiet(e):  # instead of nats-py's default, which logs a traceback per failed attempt
        errors.append(e)

    try:
        # max_reconnect_attempts=0 would mean "forever" to nats-py: give up after a second try
        nc = await nats.connect(
            args.url,
            connect_timeout=5,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            error_cb=quiet,
        )
    except Exception as e:  # nats-py raises several kinds here; all mean "not connected"
        return {**failure, "error": "connect", "detail": repr(errors[-1] if errors else e)}
    try:
        if args.command == "publish":
            await nc.publish(subject, payload, headers=headers)
            await nc.flush()
            return {"ok": True, "subject": subject}
        try:
            msg = await nc.request(subject, payload, timeout=args.timeout, headers=headers)
        except nats.errors.NoRespondersError as e:
            return {**failure, "error": "no_responders", "detail": repr(e)}
        except nats.errors.TimeoutError as e:
            return {**failure, "error": "timeout", "detail": repr(e)}
        return reply_json(subject, msg)
    finally:
        await nc.close()


def main(argv):
    result = asyncio.run(run(parse_args(argv)))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
