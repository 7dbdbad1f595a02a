// Read events with the npm `eventsource` package (a WHATWG EventSource for
// node) and print them.
//
//   node tests/js/eventsource_read.mjs URL [--count N] [--event TYPE]
//        [--last-event-id ID] [--timeout MS]
//
// Collects N (default 1) events of type TYPE (default `message`, i.e. events
// without an `event:` field) and prints one JSON line per event:
// {"id": <lastEventId>, "event": <type>, "data": <data>}; exits 0.
// `--last-event-id` sends a `Last-Event-ID` header on the first connection
// (later reconnections send the id the client tracked itself). Exits 1 on
// timeout (default 10000 ms) or when the client gives up (readyState CLOSED).
import { EventSource } from 'eventsource';
import { parseArgs } from 'node:util';

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    count: { type: 'string', default: '1' },
    event: { type: 'string', default: 'message' },
    'last-event-id': { type: 'string' },
    timeout: { type: 'string', default: '10000' },
  },
});
const url = positionals[0];
if (!url) {
  console.error(
    'usage: eventsource_read.mjs URL [--count N] [--event TYPE] [--last-event-id ID] [--timeout MS]',
  );
  process.exit(2);
}
const count = Number(opts.count);
const lastEventId = opts['last-event-id'];

let connections = 0;
const es = new EventSource(url, {
  fetch: (input, init) => {
    connections += 1;
    const headers = { ...(init?.headers ?? {}) };
    const hasId = Object.keys(headers).some((k) => k.toLowerCase() === 'last-event-id');
    if (lastEventId !== undefined && !hasId) headers['Last-Event-ID'] = lastEventId;
    return fetch(input, { ...init, headers });
  },
});

let received = 0;
const finish = (code, message) => {
  clearTimeout(timer);
  es.close();
  if (message) console.error(message);
  process.exit(code);
};
const timer = setTimeout(
  () => finish(1, `eventsource_read: timeout: ${received}/${count} "${opts.event}" events after ${opts.timeout} ms (${connections} connections)`),
  Number(opts.timeout),
);

es.addEventListener(opts.event, (ev) => {
  received += 1;
  process.stdout.write(
    JSON.stringify({ id: ev.lastEventId, event: ev.type, data: ev.data }) + '\n',
  );
  if (received >= count) finish(0);
});
es.addEventListener('error', (ev) => {
  const detail = [ev.code, ev.message].filter((x) => x !== undefined).join(' ');
  if (es.readyState === EventSource.CLOSED) {
    finish(1, `eventsource_read: connection closed for good: ${detail}`);
  } else {
    console.error(`eventsource_read: error, reconnecting: ${detail}`);
  }
});
