// `hits-js`: a handler that does real work. It GETs the URL in its payload
// with fetch() (wasi:http) and counts the request in key-value bucket
// `counter` (key `hits`), replying `STATUS BODY COUNT`; with an empty payload
// it only counts, replying `COUNT`. Its sidecar grants both:
//
//   http = ["http://127.0.0.1:8080"]
//   keyvalue = ["counter"]
//
// `handle` is async: componentize-js exports a synchronous function and runs
// the event loop until the promise settles. fetch() needs componentize-js's
// `http` feature, so this build leaves it on (only `-d fetch-event`).
//
// Build (in examples/js, after `npm ci`):
//   npx componentize-js hits.js --wit ../../wit --world-name service-handler -d fetch-event -o hits-js.wasm

import { open } from 'wasi:keyvalue/store@0.2.0-draft2';
import { increment } from 'wasi:keyvalue/atomics@0.2.0-draft2';

export const service = {
  async handle(ctx, payload) {
    let url;
    try {
      url = new TextDecoder('utf-8', { fatal: true }).decode(payload).trim();
    } catch {
      throw { tag: 'invalid', val: 'the URL is not UTF-8' };
    }
    let fetched;
    if (url) {
      try {
        const response = await fetch(url);
        fetched = { status: response.status, body: await response.text() };
      } catch (e) {
        throw { tag: 'retry', val: `GET ${url}: ${e}` };
      }
    }
    let count;
    try {
      const bucket = open('counter');
      count = increment(bucket, 'hits', 1n); // s64 is a BigInt
    } catch (e) {
      throw { tag: 'retry', val: `counting in bucket \`counter\`: ${JSON.stringify(e.payload ?? String(e))}` };
    }
    const reply = fetched ? `${fetched.status} ${fetched.body} ${count}` : `${count}`;
    return new TextEncoder().encode(reply);
  },
};
