// The pipe loop's write policy: a destination that reports "full" (Node's 16 KiB mark, e.g.
// an HTTP/2 stream after each 64 KiB read) does not pause the source until PAUSE_AT_BYTES are
// queued, and bulk chunks into a TCP socket within one loop turn leave in one writev.
import net from 'node:net';
import { Duplex, PassThrough } from 'node:stream';
import t from 'tap';
import { COALESCE_MIN_BYTES, PAUSE_AT_BYTES, copyBidirectional, socketSide } from '../../src/copy/copy.js';
import { buildProxied } from '../helpers/relay-sockets.js';
import { within } from '../helpers/within.js';

const W = 10_000;

/** A duplex whose writes complete only when release() is called (a flow-controlled stream). */
function heldWriter(): { stream: Duplex; release: () => void } {
  const pending: (() => void)[] = [];
  let held = true;
  const stream = new Duplex({
    highWaterMark: 16 * 1024,
    read() {},
    write(_chunk, _enc, cb) {
      if (held) pending.push(() => cb());
      else cb();
    },
  });
  return {
    stream,
    release: () => {
      held = false;
      for (const cb of pending.splice(0)) cb();
    },
  };
}

t.test('the source keeps flowing until PAUSE_AT_BYTES are queued, then resumes on drain', async (t) => {
  const src = new PassThrough();
  const dst = heldWriter();
  const counters = { clientToServer: 0, serverToClient: 0 };
  void copyBidirectional({ stream: src, reset: () => src.destroy() }, { stream: dst.stream, reset: () => dst.stream.destroy() }, counters);
  const chunk = Buffer.alloc(64 * 1024);
  const below = Math.floor(PAUSE_AT_BYTES / chunk.length) - 1;
  for (let i = 0; i < below; i++) src.write(chunk);
  await new Promise((r) => setImmediate(r));
  t.equal(counters.clientToServer, below * chunk.length, 'every chunk below the mark was handed on');
  t.notOk(src.isPaused(), `not paused with ${dst.stream.writableLength} bytes queued (Node's own mark is 16 KiB)`);
  for (let i = 0; i < 3; i++) src.write(chunk);
  await new Promise((r) => setImmediate(r));
  t.ok(src.isPaused(), `paused with ${dst.stream.writableLength} bytes queued`);
  t.ok(dst.stream.writableLength <= PAUSE_AT_BYTES + 2 * chunk.length, 'the queue stays bounded');
  const drained = new Promise((r) => dst.stream.once('drain', r));
  dst.release();
  await within(W, drained, 'drain');
  await new Promise((r) => setImmediate(r));
  t.notOk(src.isPaused(), 'resumed after drain');
  src.destroy();
  dst.stream.destroy();
});

t.test('bulk chunks into a TCP socket within one turn are written together', async (t) => {
  const src = new PassThrough();
  const p = await buildProxied(t, () => Promise.resolve({ error: undefined }));
  const up = p.up;
  const counters = { clientToServer: 0, serverToClient: 0 };
  let writevCalls = 0;
  let writevChunks = 0;
  const proto = Object.getPrototypeOf(up) as { _writev: (chunks: unknown[], cb: () => void) => void };
  const original = proto._writev;
  (up as unknown as { _writev: typeof original })._writev = function (this: net.Socket, chunks: unknown[], cb: () => void) {
    writevCalls += 1;
    writevChunks += chunks.length;
    return original.call(this, chunks, cb);
  };
  void copyBidirectional({ stream: src, reset: () => src.destroy() }, socketSide(up), counters);
  const chunk = Buffer.alloc(COALESCE_MIN_BYTES * 2, 1);
  let got = 0;
  const all = new Promise<void>((r) =>
    p.app.on('data', (d: Buffer) => {
      got += d.length;
      if (got === 4 * chunk.length) r();
    }),
  );
  for (let i = 0; i < 4; i++) src.write(chunk);
  t.equal(up.writableCorked, 1, 'held until the check phase');
  await within(W, all, 'the app to receive all bytes');
  t.equal(writevCalls, 1, 'one writev');
  t.equal(writevChunks, 4, 'with the four chunks');
  // A small chunk (request/response traffic) is written at once.
  src.write(Buffer.from('ping'));
  t.equal(up.writableCorked, 0, 'small chunks are not held');
  src.destroy();
});
