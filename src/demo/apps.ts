// Small apps the demo runs inside pod namespaces:
//   node dist/src/demo/apps.js productpage PORT   HTML page, first line <!DOCTYPE html>, shows the client address
//   node dist/src/demo/apps.js http PORT NAME     one-line JSON {service, client}
//   node dist/src/demo/apps.js echo PORT          TCP echo, half-close aware
//   node dist/src/demo/apps.js sink PORT          reads until EOF, answers "<sha256> <bytes>\n"
//   node dist/src/demo/apps.js source PORT BYTES  sends BYTES of buildBulkData(), then EOF
// Must never: listen anywhere but 0.0.0.0:PORT of the netns it runs in.
// Invariant: servers use allowHalfOpen so a client's FIN does not cut the answer short
// (a pitfall met while prototyping).

import { createHash } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { pathToFileURL } from 'node:url';

const BULK_BLOCK = 64 * 1024;

/** Deterministic bulk bytes: block i is sha256("ztunnel-ts bulk " + i) repeated; both ends can rebuild it. */
export function buildBulkBlock(index: number): Buffer {
  const seed = createHash('sha256').update(`ztunnel-ts bulk ${index}`).digest();
  const block = Buffer.allocUnsafe(BULK_BLOCK);
  for (let off = 0; off < BULK_BLOCK; off += seed.length) seed.copy(block, off);
  return block;
}

export function buildBulkDigest(bytes: number): string {
  const h = createHash('sha256');
  for (let i = 0, left = bytes; left > 0; i++, left -= BULK_BLOCK) h.update(buildBulkBlock(i).subarray(0, Math.min(BULK_BLOCK, left)));
  return h.digest('hex');
}

const clientOf = (s: net.Socket): string => `${(s.remoteAddress ?? '').replace(/^::ffff:/, '')}:${s.remotePort ?? 0}`;

export function buildProductPage(client: string): string {
  return [
    '<!DOCTYPE html>',
    '<html>',
    '<head><title>Simple Bookstore App</title></head>',
    '<body>',
    '<h1>The Comedy of Errors</h1>',
    `<p>Served by productpage to ${client}</p>`,
    '</body>',
    '</html>',
    '',
  ].join('\n');
}

function listening(kind: string, port: number): () => void {
  return () => process.stdout.write(`${JSON.stringify({ app: kind, listening: port })}\n`);
}

export function startApp(kind: string, port: number, extra: string | undefined): net.Server | http.Server {
  switch (kind) {
    case 'productpage':
      return http
        .createServer((req, res) => {
          res.setHeader('content-type', 'text/html; charset=utf-8');
          res.end(buildProductPage(clientOf(req.socket)));
        })
        .listen(port, '0.0.0.0', listening(kind, port));
    case 'http':
      return http
        .createServer((req, res) => {
          res.setHeader('content-type', 'application/json');
          res.end(`${JSON.stringify({ service: extra ?? 'http', client: clientOf(req.socket) })}\n`);
        })
        .listen(port, '0.0.0.0', listening(kind, port));
    case 'echo':
      return net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s).on('error', () => s.destroy())).listen(port, '0.0.0.0', listening(kind, port));
    case 'sink':
      return net
        .createServer({ allowHalfOpen: true }, (s) => {
          const h = createHash('sha256');
          let bytes = 0;
          s.on('data', (c: Buffer) => {
            h.update(c);
            bytes += c.length;
          });
          s.on('end', () => s.end(`${h.digest('hex')} ${bytes}\n`));
          s.on('error', () => s.destroy());
        })
        .listen(port, '0.0.0.0', listening(kind, port));
    case 'source': {
      const total = Number(extra ?? 64 * 1024 * 1024);
      return net
        .createServer({ allowHalfOpen: true }, (s) => {
          let i = 0;
          let left = total;
          const pump = (): void => {
            while (left > 0) {
              const chunk = buildBulkBlock(i++).subarray(0, Math.min(BULK_BLOCK, left));
              left -= chunk.length;
              if (!s.write(chunk)) {
                s.once('drain', pump);
                return;
              }
            }
            s.end();
          };
          s.on('error', () => s.destroy());
          s.resume();
          pump();
        })
        .listen(port, '0.0.0.0', listening(kind, port));
    }
    default:
      throw new Error(`unknown app '${kind}' (productpage, http, echo, sink, source)`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [kind, portText, extra] = process.argv.slice(2);
  const port = Number(portText);
  if (kind === undefined || !Number.isInteger(port) || port <= 0 || port > 65535) {
    process.stderr.write('usage: node dist/src/demo/apps.js productpage|http|echo|sink|source PORT [NAME|BYTES]\n');
    process.exit(2);
  }
  try {
    startApp(kind, port, extra);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(2);
  }
}
