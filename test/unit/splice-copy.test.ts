// The zero-copy relay on real loopback sockets, against the copy.ts contract: data intact
// both ways at volume, half-close each way, resets propagated both ways (also after an
// EOF), the other side vanishing, exact byte counts, bytes Node held before the hand-over,
// abort, no fd left behind, and a worker that never keeps the process alive.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { setLingerZero, socketFd } from '../../native-shims/index.js';
import { spliceAvailable, spliceBidirectional, stopSpliceWorker } from '../../src/copy/splice-copy.js';
import { type Proxied, buildProxied, collect, socketPair } from '../helpers/relay-sockets.js';

if (!spliceAvailable()) {
  t.plan(0, 'splice(2) is not available here (Linux + koffi needed)');
  process.exit(0);
}

t.teardown(() => stopSpliceWorker());

/** client ⇄ down [splice] up ⇄ app; the relay starts when start() is called. */
function proxied(t: Test): Promise<Proxied> {
  return buildProxied(t, (down, up, counters, signal) => spliceBidirectional(down, up, counters, signal ? { signal } : {}));
}

/** 'end' | the error code | 'close' (closed with neither). */
function fate(s: net.Socket): Promise<string> {
  return new Promise((r) => {
    s.on('error', (e: NodeJS.ErrnoException) => r(String(e.code)));
    s.on('end', () => r('end'));
    s.on('close', () => r('close'));
  });
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

t.test('half-close each way; bytes counted exactly', async (t) => {
  const { client, app, down, up, counters, start } = await proxied(t);
  const done = start();
  const appGot = collect(app);
  client.end('request');
  t.equal(await appGot, 'request', 'the app sees the EOF after the bytes');
  t.ok(down.destroyed && up.destroyed, 'the relay runs in the worker: the Node sockets were handed over');
  const clientGot = collect(client);
  app.write('still ');
  await new Promise((r) => setTimeout(r, 20));
  app.end('answering');
  t.equal(await clientGot, 'still answering', 'the reverse direction kept flowing after the first EOF');
  const outcome = await done;
  t.equal(outcome.error, undefined);
  t.same(counters, { clientToServer: 7, serverToClient: 15 });
});

t.test('half-close from the server side first', async (t) => {
  const { client, app, counters, start } = await proxied(t);
  const done = start();
  const clientGot = collect(client);
  app.end('bye');
  t.equal(await clientGot, 'bye');
  const appGot = collect(app);
  client.end('late upload');
  t.equal(await appGot, 'late upload', 'the client could still send after the server EOF');
  t.equal((await done).error, undefined);
  t.same(counters, { clientToServer: 11, serverToClient: 3 });
});

t.test('64 MiB each way at once arrive intact', async (t) => {
  const { client, app, counters, start } = await proxied(t);
  const done = start();
  const size = 64 * 1024 * 1024;
  const block = 1024 * 1024;
  const send = async (s: net.Socket): Promise<string> => {
    const h = createHash('sha256');
    for (let sent = 0; sent < size; sent += block) {
      const b = randomBytes(block);
      h.update(b);
      if (!s.write(b)) await new Promise((r) => s.once('drain', r));
    }
    s.end();
    return h.digest('hex');
  };
  const receive = (s: net.Socket): Promise<[string, number]> =>
    new Promise((resolve) => {
      const h = createHash('sha256');
      let n = 0;
      s.on('data', (d: Buffer) => {
        n += d.length;
        h.update(d);
      });
      s.once('end', () => resolve([h.digest('hex'), n]));
    });
  const [up, down, sentUp, sentDown] = await Promise.all([receive(app), receive(client), send(client), send(app)]);
  t.same(up, [sentUp, size], 'client → app: every byte, in order');
  t.same(down, [sentDown, size], 'app → client: every byte, in order');
  t.equal((await done).error, undefined);
  t.same(counters, { clientToServer: size, serverToClient: size });
});

t.test('many connections at once share the worker without mixing bytes', async (t) => {
  const runs = Array.from({ length: 60 }, async (_, i) => {
    const { client, app, counters, start } = await proxied(t);
    const done = start();
    const appGot = collect(app);
    const clientGot = collect(client);
    const up = `up-${i}-`.repeat(i + 1);
    const down = `down-${i}-`.repeat(2 * i + 1);
    client.end(up);
    app.end(down);
    const [a, c, outcome] = await Promise.all([appGot, clientGot, done]);
    return a === up && c === down && outcome.error === undefined && counters.clientToServer === up.length && counters.serverToClient === down.length;
  });
  t.same(await Promise.all(runs), Array(60).fill(true), 'every connection got its own bytes and counts');
});

t.test('a reset by the server becomes a reset to the client', async (t) => {
  const { client, app, start } = await proxied(t);
  const done = start();
  const seen = fate(client);
  client.write('x');
  await new Promise((r) => app.once('data', r));
  app.resetAndDestroy();
  t.equal(await seen, 'ECONNRESET');
  const { error } = await done;
  t.equal((error as NodeJS.ErrnoException | undefined)?.code, 'ECONNRESET', 'the splice reports the peer reset');
});

t.test('a reset by the client becomes a reset to the server', async (t) => {
  const { client, app, start } = await proxied(t);
  const done = start();
  const seen = fate(app);
  app.write('y');
  await new Promise((r) => client.once('data', r));
  client.resetAndDestroy();
  t.equal(await seen, 'ECONNRESET');
  t.ok((await done).error);
});

t.test('a reset after a clean EOF on the idle side is still propagated', { timeout: 10_000 }, async (t) => {
  const { client, app, start } = await proxied(t);
  const done = start();
  client.on('error', () => undefined);
  const appGot = collect(app);
  client.end('bye');
  t.equal(await appGot, 'bye');
  // Nothing reads from or writes to the relay's client socket now; only its error queue tells.
  setLingerZero(socketFd(client));
  client.destroy();
  const { error } = await done;
  t.ok(error, 'the splice saw the reset');
  // The app already had its EOF, so Node no longer reads: it learns of the RST on writing.
  const seen = new Promise<string>((r) => app.once('error', (e: NodeJS.ErrnoException) => r(String(e.code))));
  const timer = setInterval(() => app.write('z'), 10);
  t.match(await seen, /^(ECONNRESET|EPIPE)$/, 'the app connection was reset, not closed with a FIN');
  clearInterval(timer);
});

t.test('the other side vanishing while this one still sends does not wedge', { timeout: 10_000 }, async (t) => {
  const { client, app, start } = await proxied(t);
  const done = start();
  app.end();
  await new Promise((r) => client.once('end', r));
  app.destroy();
  const closed = new Promise<void>((r) => client.once('close', () => r()));
  client.on('error', () => undefined);
  const timer = setInterval(() => {
    if (!client.destroyed) client.write(Buffer.alloc(64 * 1024));
  }, 5);
  await closed;
  clearInterval(timer);
  await done;
  t.pass('the client connection was closed and the splice finished');
});

t.test('bytes Node read or queued before the hand-over are not lost', async (t) => {
  const { client, app, down, up, counters, start } = await proxied(t);
  down.pause();
  up.pause();
  client.write('early-');
  app.write('EARLY-');
  await new Promise<void>((r) => {
    const check = (): void => (down.readableLength >= 6 && up.readableLength >= 6 ? r() : void setTimeout(check, 5));
    check();
  });
  // Queued on the Node side of the relay, as a SOCKS5 reply would be.
  down.write('reply-');
  const done = start();
  const appGot = collect(app);
  const clientGot = collect(client);
  client.end('late');
  app.end('LATE');
  t.equal(await appGot, 'early-late');
  t.equal(await clientGot, 'reply-EARLY-LATE');
  t.equal((await done).error, undefined);
  t.same(counters, { clientToServer: 10, serverToClient: 10 }, 'the pre-read bytes are counted, the caller’s own write is not');
});

t.test('an abort resets both sides', async (t) => {
  const { client, app, start } = await proxied(t);
  const ac = new AbortController();
  const done = start(ac.signal);
  const seenClient = fate(client);
  const seenApp = fate(app);
  client.write('x');
  await new Promise((r) => app.once('data', r));
  ac.abort();
  t.equal(await seenClient, 'ECONNRESET');
  t.equal(await seenApp, 'ECONNRESET');
  t.ok((await done).error);
});

t.test('counters are readable while the connection is open', async (t) => {
  const { client, app, counters, start } = await proxied(t);
  const done = start();
  app.resume();
  client.write(Buffer.alloc(100_000));
  await new Promise((r) => setTimeout(r, 1300));
  t.equal(counters.clientToServer, 100_000, 'refreshed from the shared slots without a message');
  client.end();
  app.end();
  await done;
});

t.test('no fd is left behind once the worker stops', async (t) => {
  await stopSpliceWorker();
  const before = openFds();
  for (let i = 0; i < 10; i++) {
    const [client, down, c1] = await socketPair();
    const [app, up, c2] = await socketPair();
    const done = spliceBidirectional(down, up, { clientToServer: 0, serverToClient: 0 });
    const got = collect(app);
    client.end('ping');
    await got;
    client.resume();
    app.end();
    await done;
    client.destroy();
    app.destroy();
    c1();
    c2();
  }
  await stopSpliceWorker();
  await new Promise((r) => setTimeout(r, 50));
  t.equal(openFds(), before, 'the dups, pipes, epoll and eventfd fds are all closed');
});

t.test('stopping the worker resets what it still runs', async (t) => {
  const { client, app, start } = await proxied(t);
  const done = start();
  const seen = fate(client);
  app.on('error', () => undefined);
  client.write('x');
  await new Promise((r) => app.once('data', r));
  await stopSpliceWorker();
  t.ok((await done).error, 'the pending splice ends with an error');
  t.equal(await seen, 'ECONNRESET');
});

/** Runs a child that splices one connection, then checks it exits by itself. */
function childExits(t: Test, stopFirst: boolean): Promise<number | null> {
  const mod = fileURLToPath(new URL('../../src/copy/splice-copy.js', import.meta.url));
  const code = `
    import net from 'node:net';
    const { spliceBidirectional, stopSpliceWorker } = await import(${JSON.stringify(mod)});
    const listen = () => new Promise((r) => { const s = net.createServer({ allowHalfOpen: true }); s.listen(0, '127.0.0.1', () => r(s)); });
    const a = await listen(); const b = await listen();
    const conn = (s) => new Promise((r) => { s.once('connection', (inner) => { r([outer, inner]); s.close(); }); const outer = net.connect({ port: s.address().port, host: '127.0.0.1', allowHalfOpen: true }); });
    const [client, down] = await conn(a); const [app, up] = await conn(b);
    const done = spliceBidirectional(down, up, { clientToServer: 0, serverToClient: 0 });
    app.on('data', () => { app.end(); }); client.on('data', () => {}); client.on('end', () => client.end());
    client.on('error', () => {}); app.on('error', () => {});
    client.write('x');
    ${stopFirst ? 'await stopSpliceWorker();' : ''}
    await done;
    ${stopFirst ? '' : 'client.destroy(); app.destroy();'}
  `;
  return new Promise((resolve) => {
    // A file, not -e: a worker inherits execArgv, and '--input-type' would break its loading.
    const file = join(mkdtempSync(join(tmpdir(), 'splice-copy-test-')), 'child.mjs');
    writeFileSync(file, code);
    const child = spawn(process.execPath, [...process.execArgv, file], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.once('exit', (status) => {
      clearTimeout(timer);
      if (status !== 0) t.comment(stderr);
      resolve(status);
    });
    t.teardown(() => {
      clearTimeout(timer);
      if (child.exitCode === null) child.kill('SIGKILL');
      rmSync(dirname(file), { recursive: true, force: true });
    });
  });
}

t.test('an idle worker does not keep the process alive', async (t) => {
  t.equal(await childExits(t, false), 0, 'the child exited on its own, with status 0');
});

t.test('stopSpliceWorker lets the process exit with a connection still open', async (t) => {
  t.equal(await childExits(t, true), 0);
});
