// The pipe loop on real loopback sockets: half-close, reset propagation, and no wedge
// when one side disappears while the other is still sending.
import t from 'tap';
import { getSocketError, socketFd } from '../../native-shims/index.js';
import { copyBidirectional, socketSide } from '../../src/copy/copy.js';
import { type Proxied, buildProxied, collect } from '../helpers/relay-sockets.js';
import { within } from '../helpers/within.js';

// Every awaited event has a bound (generous: the machine is shared), so a broken copy loop
// fails here by name instead of hanging until tap's file timeout.
const W = 10_000;

/** The copy loop between two real socket pairs, started at once. */
async function proxied(): Promise<Proxied & { done: Promise<{ error: Error | undefined }> }> {
  const p = await buildProxied(t, (down, up, counters) => copyBidirectional(socketSide(down), socketSide(up), counters));
  return { ...p, done: p.start() };
}

t.test('half-close each way; bytes counted', async (t) => {
  const { client, app, counters, done } = await proxied();
  const appGot = collect(app);
  client.end('request');
  t.equal(await within(W, appGot, 'the app to read the request and its EOF'), 'request', 'the app sees the EOF after the bytes');
  const clientGot = collect(client);
  app.write('still ');
  app.end('answering');
  t.equal(await within(W, clientGot, 'the client to read the answer and its EOF'), 'still answering', 'the reverse direction kept flowing after the first EOF');
  const outcome = await within(W, done, 'the copy to finish');
  t.equal(outcome.error, undefined);
  t.same(counters, { clientToServer: 7, serverToClient: 15 });
});

t.test('a reset on one side becomes a reset on the other', async (t) => {
  const { client, app, done } = await proxied();
  const seen = new Promise<string>((r) => {
    client.on('error', (e: NodeJS.ErrnoException) => r(String(e.code)));
    client.on('end', () => r('end'));
  });
  client.write('x');
  await within(W, new Promise((r) => app.once('data', r)), 'the app to receive the first byte');
  app.resetAndDestroy();
  t.equal(await within(W, seen, 'the client to see the reset'), 'ECONNRESET');
  t.ok((await within(W, done, 'the copy to finish')).error, 'the copy reports the error');
});

t.test('the other side vanishing while this one still sends does not wedge', async (t) => {
  const { client, app, up, done } = await proxied();
  // The upstream half-closes, then goes away without an error (as an HTTP/2 stream does on
  // RST_STREAM CANCEL after END_STREAM) while the client keeps uploading.
  app.end();
  await within(W, new Promise((r) => client.once('end', r)), "the client to see the app's EOF");
  up.destroy();
  const closed = new Promise<void>((r) => client.once('close', () => r()));
  client.on('error', () => undefined);
  const timer = setInterval(() => {
    if (!client.destroyed) client.write(Buffer.alloc(64 * 1024));
  }, 5);
  try {
    await within(W, closed, 'the client connection to be closed (the copy wedged?)');
  } finally {
    clearInterval(timer);
  }
  await within(W, done, 'the copy to finish');
  t.pass('the client connection was closed and the copy finished');
});

t.test('a reset that Linux reports as EOF (data then RST) is still propagated as a reset', async (t) => {
  // recv() returns 0 when an RST lands behind data already read; the error waits in SO_ERROR.
  const outcomes: string[] = [];
  await Promise.all(
    Array.from({ length: 30 }, async () => {
      const { client, app } = await proxied();
      client.on('data', () => undefined);
      const seen = new Promise<string>((r) => {
        client.once('error', (e: NodeJS.ErrnoException) => r(String(e.code)));
        // The test's own socket is subject to the same kernel behaviour: look at SO_ERROR too.
        client.once('end', () => r(getSocketError(socketFd(client)) === 0 ? 'end' : 'reset behind data'));
      });
      app.write(Buffer.alloc(100_000 + Math.floor(Math.random() * 100_000)));
      await new Promise((r) => setTimeout(r, Math.random() * 10));
      app.resetAndDestroy();
      outcomes.push(await within(W, seen, 'the client to see the end of the stream'));
    }),
  );
  t.same(
    outcomes.filter((o) => o === 'end'),
    [],
    `every client saw a reset (${outcomes.filter((o) => o !== 'end').length}/30)`,
  );
});
