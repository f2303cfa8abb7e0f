// `echo-js`: a service that replies with its payload unchanged.
//
// Build (in examples/js, after `npm ci`):
//   npx componentize-js echo.js --wit ../../wit --world-name service-handler -d random clocks http fetch-event -o echo-js.wasm

export const service = {
  handle(ctx, payload) {
    return payload;
  },
};
