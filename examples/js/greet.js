// `greet-js`: calls `echo-js` through the bus with its payload and replies
// `hello, <echo's reply>`. An empty or non-UTF-8 payload is `invalid`; a bus
// error becomes this handler's failure with the same retry behaviour.
//
// Build (in examples/js, after `npm ci`):
//   npx componentize-js greet.js --wit ../../wit --world-name service-handler -d random clocks http fetch-event -o greet-js.wasm

import { call } from 'busbar:handler/bus@0.1.0';

// The five classes a handler can answer keep their class and message.
const SAME_CLASS = new Set(['invalid', 'denied', 'unauthorized', 'retry', 'failed']);

// A bus error as a failure of this handler: the handler classes pass through;
// `overloaded` and `timeout` become `retry`, `not-found` and `trapped` become
// `failed`, with the original class in the message (the same mapping as the
// Rust SDK's `From<BusError> for Failure`).
function failure({ class: errorClass, message }) {
  if (SAME_CLASS.has(errorClass)) return { tag: errorClass, val: message };
  const retry = errorClass === 'overloaded' || errorClass === 'timeout';
  return { tag: retry ? 'retry' : 'failed', val: `${errorClass}: ${message}` };
}

export const service = {
  handle(ctx, payload) {
    if (payload.length === 0) throw { tag: 'invalid', val: 'greet needs a name' };
    try {
      new TextDecoder('utf-8', { fatal: true }).decode(payload);
    } catch {
      throw { tag: 'invalid', val: 'the name is not UTF-8' };
    }
    let reply;
    try {
      reply = call('echo-js', payload, undefined);
    } catch (e) {
      throw failure(e.payload);
    }
    const hello = new TextEncoder().encode('hello, ');
    const out = new Uint8Array(hello.length + reply.length);
    out.set(hello);
    out.set(reply, hello.length);
    return out;
  },
};
