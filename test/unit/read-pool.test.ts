// Pooled reads (src/tunnel/read-pool.ts): a byte-stream socket made by tcp-connect.ts reads
// through one shared area into buffers the copy loop hands back once their write completed,
// so a bulk transfer reuses a handful of buffers instead of a new backing store per read;
// the bytes arrive intact even through an HTTP/2 stream, which holds a written chunk until
// nghttp2 has sent it (a buffer reused too early would corrupt the stream).
import { createHash, randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import net from 'node:net';
import t, { type Test } from 'tap';
import { copyBidirectional, socketSide } from '../../src/copy/copy.js';
import { POOLED_READ_RELEASE, POOL_MAX_FREE, readPoolStats } from '../../src/tunnel/read-pool.js';
import { connectTcp } from '../../src/tunnel/tcp-connect.js';
import { within } from '../helpers/within.js';

const W = 30_000;
const TOTAL = 24 * 1024 * 1024;

/** A loopback TCP server that sends `data` to whoever connects, then ends. */
async function sourceServer(t: Test, data: Buffer): Promise<number> {
  const srv = net.createServer((s) => {
    s.on('error', () => undefined);
    s.end(data);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => srv.close());
  return (srv.address() as net.AddressInfo).port;
}

t.test('a created byte-stream socket hands out pooled chunks for large reads, bytes intact', async (t) => {
  const big = randomBytes(1024 * 1024);
  const port = await sourceServer(t, big);
  const sock = await connectTcp('127.0.0.1', port, { timeoutMs: 5000 });
  let pooled = 0;
  let plain = 0;
  const parts: Buffer[] = [];
  sock.on('data', (d: Buffer) => {
    parts.push(Buffer.from(d));
    if ((d.buffer as { [POOLED_READ_RELEASE]?: unknown })[POOLED_READ_RELEASE]) pooled += 1;
    else plain += 1;
  });
  await within(W, new Promise((r) => sock.once('end', r)), 'end');
  sock.destroy();
  t.ok(Buffer.concat(parts).equals(big), 'the bytes arrive in order and intact');
  t.ok(pooled > 0, `${pooled} pooled chunks (${plain} plain)`);
});

t.test('bulk through the copy loop into an HTTP/2 stream: intact, and the pool buffers are reused', async (t) => {
  const data = randomBytes(TOTAL);
  const want = createHash('sha256').update(data).digest('hex');
  const port = await sourceServer(t, data);
  // The receiving end: an h2c server hashing what one stream delivers.
  const h2srv = http2.createServer();
  const got = new Promise<{ hash: string; bytes: number }>((resolve) => {
    h2srv.on('stream', (stream) => {
      const h = createHash('sha256');
      let bytes = 0;
      stream.on('data', (d: Buffer) => {
        bytes += d.length;
        h.update(d);
      });
      stream.on('end', () => {
        stream.respond({ ':status': 200 });
        stream.end();
        resolve({ hash: h.digest('hex'), bytes });
      });
    });
  });
  await new Promise<void>((r) => h2srv.listen(0, '127.0.0.1', r));
  t.teardown(() => h2srv.close());
  const session = http2.connect(`http://127.0.0.1:${(h2srv.address() as net.AddressInfo).port}`);
  t.teardown(() => session.destroy());
  const stream = session.request({ ':method': 'POST', ':path': '/' });
  stream.on('error', () => undefined);

  const before = readPoolStats().created;
  const sock = await connectTcp('127.0.0.1', port, { timeoutMs: 5000 });
  const counters = { clientToServer: 0, serverToClient: 0 };
  const done = copyBidirectional(socketSide(sock), { stream, reset: () => stream.close(http2.constants.NGHTTP2_CANCEL) }, counters);
  const r = await within(W, got, 'the h2 side received everything');
  t.equal(r.bytes, TOTAL, 'every byte arrived');
  t.equal(r.hash, want, 'and none was overwritten by a reused buffer');
  const created = readPoolStats().created - before;
  // Without the hand-back in the copy loop every large read would take a new buffer
  // (TOTAL / 64 KiB = 384 of them); the pause mark bounds what is in flight.
  t.ok(created <= POOL_MAX_FREE, `${created} pool buffers created for ${TOTAL / 2 ** 20} MiB`);
  t.ok(readPoolStats().free > 0, 'buffers went back to the free list');
  sock.destroy();
  stream.close();
  await within(W, done, 'copy finished');
});

t.test('only a whole pooled chunk goes back, and only once', async (t) => {
  const port = await sourceServer(t, randomBytes(256 * 1024));
  const sock = await connectTcp('127.0.0.1', port, { timeoutMs: 5000 });
  const chunk = await within(
    W,
    new Promise<Buffer>((resolve) => {
      const onData = (d: Buffer): void => {
        if (!(d.buffer as { [POOLED_READ_RELEASE]?: unknown })[POOLED_READ_RELEASE]) return;
        sock.removeListener('data', onData);
        sock.pause();
        resolve(d);
      };
      sock.on('data', onData);
    }),
    'a pooled chunk',
  );
  t.teardown(() => sock.destroy());
  const release = (chunk.buffer as { [POOLED_READ_RELEASE]?: (c: Buffer) => void })[POOLED_READ_RELEASE]!;
  const free0 = readPoolStats().free;
  t.ok(free0 < POOL_MAX_FREE, 'room on the free list');
  release(chunk.subarray(10));
  release(chunk.subarray(0, chunk.length - 1));
  t.equal(readPoolStats().free, free0, 'a part of the chunk does not free the buffer');
  release(chunk);
  t.equal(readPoolStats().free, free0 + 1, 'the whole chunk does');
  release(chunk);
  t.equal(readPoolStats().free, free0 + 1, 'a second release does nothing');
});
