// `{{name}}`: a busbar service. It replies `hello, <payload>`; an empty or
// non-UTF-8 payload is refused as `invalid` (never retried).
//
// Build:  npm install && npm run build     (componentize-js; writes {{name}}.wasm)
// Deploy: cp {{name}}.wasm HANDLERS/
//
// A failure is thrown as `{ tag: CLASS, val: message }`: 'invalid', 'denied'
// and 'unauthorized' are never retried; 'retry' and 'failed' are. Any other
// exception traps the instance, which the caller sees as `trapped`.

// Another handler is one call away (a bus error is thrown with the
// `{ class, message }` record as its `payload`):
//     import { call } from 'busbar:handler/bus@0.1.0';
//     const reply = call('echo', payload, undefined);

export const service = {
  handle(ctx, payload) {
    if (payload.length === 0) {
      throw { tag: 'invalid', val: 'send a name to greet' };
    }
    let name;
    try {
      name = new TextDecoder('utf-8', { fatal: true }).decode(payload);
    } catch {
      throw { tag: 'invalid', val: 'the name is not UTF-8' };
    }
    return new TextEncoder().encode(`hello, ${name}`);
  },
};
