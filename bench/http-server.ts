// The HTTP server of the perf bench, run inside a pod netns: keep-alive, every request answered
// 200 with the same 1 KiB body (issue 10 names 1 KiB responses; the demo's apps answer ~60 bytes).
//   node dist/bench/http-server.js PORT [BYTES]     prints {"listening":PORT} once bound
// Must never: listen anywhere but 0.0.0.0:PORT of the netns it runs in.

import http from 'node:http';
import { pathToFileURL } from 'node:url';

export const RESPONSE_BYTES = 1024;

/** A printable body of exactly `bytes` bytes ending in a newline. */
export function buildBody(bytes: number): Buffer {
  const b = Buffer.alloc(bytes, 'x');
  if (bytes > 0) b[bytes - 1] = 0x0a;
  return b;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const port = Number(process.argv[2]);
  const bytes = Number(process.argv[3] ?? RESPONSE_BYTES);
  if (!Number.isInteger(port) || port <= 0 || port > 65535 || !Number.isInteger(bytes) || bytes < 0) {
    process.stderr.write('usage: node dist/bench/http-server.js PORT [BYTES]\n');
    process.exit(2);
  }
  const body = buildBody(bytes);
  const server = http.createServer({ keepAlive: true }, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
    res.end(body);
  });
  server.keepAliveTimeout = 65_000;
  server.listen(port, '0.0.0.0', () => process.stdout.write(`${JSON.stringify({ listening: port })}\n`));
}
