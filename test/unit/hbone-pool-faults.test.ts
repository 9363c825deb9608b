// The HBONE client pool against a misbehaving peer: a real TLS 1.3 + HTTP/2 server this test
// controls, reached through a TCP relay whose connections the test can freeze (a partition or
// a frozen node: nothing more is delivered either way, the kernel still holds the sockets).
// All traffic stays on 127.0.0.1. Keepalive / probe intervals are shrunk through PoolOptions;
// the bounds asserted are generous multiples of them (the machine is shared).
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { readTcpLivenessOptions, socketFd } from '../../native-shims/index.js';
import { KEEPALIVE_IDLE_MS } from '../../src/config/env.js';
import { ZtError } from '../../src/errors.js';
import { CertificateAuthority } from '../../src/identity/ca.js';
import { SecretManager } from '../../src/identity/secret-manager.js';
import { startKeepalive } from '../../src/tunnel/h2-settings.js';
import { connectTcp } from '../../src/tunnel/tcp-connect.js';
import { HbonePool, type HboneTarget, type PoolOptions, SecureContextCache } from '../../src/tunnel/hbone-pool.js';

const SERVER_ID = 'spiffe://cluster.local/ns/default/sa/server';
const CLIENT_ID = 'spiffe://cluster.local/ns/default/sa/client';
const ca = CertificateAuthority.generate({ commonName: 'pool-faults root' });
const secrets = new SecretManager(ca);
t.teardown(() => secrets.close());
const clientTls = await secrets.fetch(CLIENT_ID);
const serverCert = ca.issueWorkloadCertificate(SERVER_ID);

type Mode = 'echo' | 'never';

interface Peer {
  port: number;
  /** What the server does with the next CONNECTs. */
  mode: Mode;
  /** Server-side sessions, oldest first. */
  sessions: http2.ServerHttp2Session[];
  /** Relay connections (client side ⇄ server side), oldest first. */
  links: { client: net.Socket; server: net.Socket; frozen: boolean }[];
  freeze(i: number): void;
  /** A partition: every link frozen, new TCP connections accepted but never forwarded. */
  partition(): void;
  /** The partition heals: new connections are forwarded again (frozen links stay dead). */
  heal(): void;
  partitioned: boolean;
}

/** A fake peer ztunnel: TLS 1.3 + h2 server, behind a freezable relay. */
async function startPeer(t: Test): Promise<Peer> {
  const server = http2.createSecureServer({
    key: serverCert.keyPem,
    cert: serverCert.certPem,
    ca: ca.rootCertPem,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
    ALPNProtocols: ['h2'],
  });
  const peer: Peer = {
    port: 0,
    mode: 'echo',
    sessions: [],
    links: [],
    partitioned: false,
    partition() {
      peer.partitioned = true;
      peer.links.forEach((l, i) => l.frozen || peer.freeze(i));
    },
    heal() {
      peer.partitioned = false;
    },
    freeze(i) {
      const link = peer.links[i];
      if (!link) throw new Error(`no link ${i}`);
      link.frozen = true;
      link.client.unpipe(link.server);
      link.server.unpipe(link.client);
      link.client.pause();
      link.server.pause();
    },
  };
  server.on('session', (s) => {
    peer.sessions.push(s);
    s.on('error', () => undefined);
  });
  server.on('stream', (stream) => {
    stream.on('error', () => undefined);
    if (peer.mode === 'never') return;
    stream.respond({ ':status': 200 });
    stream.pipe(stream);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const h2Port = (server.address() as net.AddressInfo).port;
  const relay = net.createServer((client) => {
    const upstream = net.connect(h2Port, '127.0.0.1');
    const link = { client, server: upstream, frozen: false };
    peer.links.push(link);
    client.on('error', () => undefined);
    upstream.on('error', () => undefined);
    if (peer.partitioned) {
      link.frozen = true;
      client.pause();
      upstream.pause();
    } else {
      client.pipe(upstream);
      upstream.pipe(client);
    }
    // A frozen link never forwards a close either: that is the point of freezing it.
    client.on('close', () => link.frozen || upstream.destroy());
    upstream.on('close', () => link.frozen || client.destroy());
  });
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
  peer.port = (relay.address() as net.AddressInfo).port;
  t.teardown(async () => {
    for (const l of peer.links) {
      l.client.destroy();
      l.server.destroy();
    }
    for (const s of peer.sessions) s.destroy();
    relay.close();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return peer;
}

function targetOf(port: number): HboneTarget {
  return {
    sourceIdentity: CLIENT_ID,
    tls: clientTls,
    expectedIdentities: [SERVER_ID],
    dst: { ip: '127.0.0.1', port },
    sourceIp: undefined,
  };
}

function newPool(t: Test, extra: Partial<PoolOptions> = {}): HbonePool {
  const pool = new HbonePool({
    tuning: { streamWindowBytes: 1 << 20, connectionWindowBytes: 4 << 20, frameSizeBytes: 16384 },
    maxStreamsPerConnection: 100,
    idleReleaseMs: 60_000,
    connectTimeoutMs: 8_000,
    mark: undefined,
    keepaliveIntervalMs: 3_000,
    keepaliveTimeoutMs: 6_000,
    probeAfterMs: 200,
    probeTimeoutMs: 500,
    ...extra,
  });
  t.teardown(() => pool.destroy());
  return pool;
}

const connect = (pool: HbonePool, port: number): Promise<http2.ClientHttp2Stream> =>
  pool.connect(targetOf(port), `127.0.0.9:${port}`, {});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, ms: number, what: string): Promise<number> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out after ${ms}ms waiting for ${what}`);
    await sleep(20);
  }
  return Date.now() - start;
}

/** Write `msg`, read the same bytes back (the peer echoes). */
async function echoOnce(stream: http2.ClientHttp2Stream, msg: string): Promise<string> {
  return await new Promise<string>((resolve, reject) => {
    let got = '';
    const timer = setTimeout(() => reject(new Error(`echo of ${msg} timed out (got ${JSON.stringify(got)})`)), 5000);
    const onData = (d: Buffer): void => {
      got += d.toString();
      if (got.length >= msg.length) {
        clearTimeout(timer);
        stream.removeListener('data', onData);
        resolve(got);
      }
    };
    stream.on('data', onData);
    stream.write(msg);
  });
}

const rawSocketOf = (s: http2.ClientHttp2Session): net.Socket => (s.socket as unknown as { _parent: net.Socket })._parent;

t.test('(a) silent peer: new CONNECTs move to a fresh session at once; keepalive destroys the old one', async (t) => {
  const peer = await startPeer(t);
  const pool = newPool(t);
  const first = await connect(pool, peer.port);
  t.equal(await echoOnce(first, 'before'), 'before');
  const old = first.session as http2.ClientHttp2Session;
  let firstClosedAt = 0;
  first.once('close', () => (firstClosedAt = Date.now()));
  await sleep(400); // > probeAfterMs: the session is now "quiet"
  peer.freeze(0);
  const frozenAt = Date.now();
  // Without the health probe this CONNECT sits on the silent session for the whole
  // connectTimeoutMs (8 s) and then fails.
  const second = await connect(pool, peer.port);
  const tookMs = Date.now() - frozenAt;
  t.ok(tookMs < 4000, `CONNECT after the freeze answered in ${tookMs}ms (connect timeout 8000ms)`);
  t.not(second.session, old, 'the CONNECT went to a new session');
  t.equal(peer.links.length, 2, 'a second HBONE connection was opened');
  t.equal(await echoOnce(second, 'after'), 'after');
  const third = await connect(pool, peer.port);
  t.equal(third.session, second.session, 'later CONNECTs stay on the healthy session');
  // The old session is still there for its stream until the keepalive gives up (timeout 6 s
  // after the peer's last byte), then the stream ends.
  const destroyedMs = await until(() => old.destroyed, 15_000, 'keepalive to destroy the silent session');
  await until(() => firstClosedAt > 0, 2000, 'the stream on the silent session to close');
  t.ok(destroyedMs < 12_000, `silent session destroyed ${destroyedMs}ms after the freeze (bound: keepaliveTimeoutMs 6000 + slack)`);
  t.equal(pool.sessionCount(), 1, 'only the healthy session is pooled');
  second.close();
  third.close();
});

t.test('(b) a CONNECT never answered fails at the timeout and the next one uses a new session', async (t) => {
  const peer = await startPeer(t);
  // Probes off (huge probeAfterMs): this peer answers PINGs, only the CONNECT is ignored.
  const pool = newPool(t, { connectTimeoutMs: 800, probeAfterMs: 60_000 });
  const first = await connect(pool, peer.port);
  const s1 = first.session;
  peer.mode = 'never';
  const start = Date.now();
  const err = await connect(pool, peer.port).then(
    () => undefined,
    (e: unknown) => e,
  );
  const took = Date.now() - start;
  t.ok(err instanceof ZtError, 'a ZtError');
  t.equal((err as ZtError).code, 'ZT_ERR_HBONE_STATUS');
  t.match((err as Error).message, /no HBONE response within 800ms/);
  t.ok(took >= 700 && took < 5000, `failed after ${took}ms`);
  peer.mode = 'echo';
  const next = await connect(pool, peer.port);
  t.not(next.session, s1, 'the next CONNECT went to a new session');
  t.equal(await echoOnce(first, 'still'), 'still', 'the stream already running on the old session goes on');
  first.close();
  await until(() => (s1 as http2.ClientHttp2Session).closed, 3000, 'the unusable session to close after its last stream');
  t.equal(await echoOnce(next, 'new'), 'new');
  next.close();
});

t.test('(c) GOAWAY mid-stream: the stream finishes, new streams use a new session, keepalive still guards the old one', async (t) => {
  const peer = await startPeer(t);
  const pool = newPool(t, { keepaliveIntervalMs: 300, keepaliveTimeoutMs: 1500 });
  const running = await connect(pool, peer.port);
  const old = running.session as http2.ClientHttp2Session;
  t.equal(await echoOnce(running, 'one'), 'one');
  const goaway = new Promise<void>((r) => old.once('goaway', () => r()));
  peer.sessions[0]!.close(); // graceful: GOAWAY(NO_ERROR), running streams may finish
  await goaway;
  t.ok(old.closed && !old.destroyed, 'the client session is closing, not destroyed');
  t.equal(await echoOnce(running, 'two'), 'two', 'the running stream still flows after GOAWAY');
  const fresh = await connect(pool, peer.port);
  t.not(fresh.session, old, 'a new stream goes to a new session');
  t.equal(await echoOnce(fresh, 'fresh'), 'fresh');
  // Still healthy after several keepalive intervals (PINGs on the closing session are answered).
  await sleep(2000);
  t.notOk(old.destroyed, 'an answering peer keeps the GOAWAY’d session alive');
  t.equal(await echoOnce(running, 'three'), 'three');
  // Now the peer dies silently: only the keepalive can notice (the old code stopped pinging
  // once the session was closed, leaving it to TCP keepalive after 180 s).
  peer.freeze(0);
  const ms = await until(() => old.destroyed, 10_000, 'keepalive to destroy the silent GOAWAY’d session');
  t.ok(ms < 8000, `GOAWAY’d session destroyed ${ms}ms after the freeze (timeout 1500ms)`);
  t.notOk((fresh.session as http2.ClientHttp2Session).destroyed, 'the new session is unaffected');
  fresh.close();
});

t.test('(d) peer closes mid-handshake: a clean ZtError, nothing pooled', async (t) => {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.once('data', () => s.destroy()); // the ClientHello arrived: hang up
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  const port = (server.address() as net.AddressInfo).port;
  const pool = newPool(t);
  const errors = await Promise.all(
    [1, 2, 3].map(() =>
      connect(pool, port).then(
        () => undefined,
        (e: unknown) => e,
      ),
    ),
  );
  for (const err of errors) {
    t.ok(err instanceof ZtError, `a ZtError: ${String(err)}`);
    t.match((err as ZtError).code, /^ZT_ERR_(TLS_HANDSHAKE|CONNECT_FAILED)$/);
    t.match((err as Error).message, new RegExp(`127\\.0\\.0\\.1:${port}`));
  }
  t.equal(sockets.size, 1, 'concurrent requesters shared one attempt');
  t.equal(pool.sessionCount(), 0, 'nothing left in the pool');
  // The pool is not stuck: the next CONNECT tries again.
  await connect(pool, port).catch(() => undefined);
  t.equal(sockets.size, 2, 'a later CONNECT makes a new attempt');
});

t.test('(e) idle sessions are released after idleReleaseMs', async (t) => {
  const peer = await startPeer(t);
  const pool = newPool(t, { idleReleaseMs: 300 });
  const s = await connect(pool, peer.port);
  const session = s.session as http2.ClientHttp2Session;
  t.equal(pool.sessionCount(), 1);
  await sleep(1500);
  t.equal(pool.sessionCount(), 1, 'a session with a running stream is kept');
  s.close();
  await until(() => pool.sessionCount() === 0, 5000, 'idle release');
  await until(() => session.destroyed, 5000, 'the released session to close');
  t.pass('released and closed');
});

t.test('HBONE client sockets: TCP keepalive and TCP_USER_TIMEOUT', async (t) => {
  const peer = await startPeer(t);
  const pool = newPool(t, { tcpUserTimeoutMs: 12_345 });
  const s = await connect(pool, peer.port);
  const fd = socketFd(rawSocketOf(s.session as http2.ClientHttp2Session));
  t.ok(fd >= 0, 'found the fd');
  const got = readTcpLivenessOptions(fd);
  t.same(got, { keepAlive: true, keepIdleSeconds: KEEPALIVE_IDLE_MS / 1000, userTimeoutMs: 12_345 });
  s.close();
});

t.test('TLS contexts: one per identity, replaced when the certificate changes', async (t) => {
  const peer = await startPeer(t);
  const pool = newPool(t, { maxStreamsPerConnection: 1 });
  // Count context builds (tls.connect with key/cert builds one through this export too).
  const original = tls.createSecureContext;
  let built = 0;
  tls.createSecureContext = (...args: Parameters<typeof original>) => {
    built += 1;
    return original(...args);
  };
  t.teardown(() => {
    tls.createSecureContext = original;
  });
  const a = await connect(pool, peer.port);
  const b = await connect(pool, peer.port);
  const c = await connect(pool, peer.port);
  tls.createSecureContext = original;
  t.ok(a.session !== b.session && b.session !== c.session, 'three sessions');
  t.equal(built, 1, 'the three sessions share one TLS context');
  t.equal(pool.secureContexts.size, 1);
  const cache = new SecureContextCache();
  const creds = clientTls;
  const c1 = cache.get(CLIENT_ID, creds);
  t.equal(cache.get(CLIENT_ID, { ...creds }), c1, 'same certificate: same context');
  const renewed = ca.issueWorkloadCertificate(CLIENT_ID);
  const c2 = cache.get(CLIENT_ID, { key: renewed.keyPem, cert: renewed.certPem, ca: ca.rootCertPem });
  t.not(c2, c1, 'new certificate: new context');
  t.equal(cache.size, 1, 'the stale context was dropped');
  a.close();
  b.close();
  c.close();
});

t.test('startKeepalive: default call (as the HBONE server makes it) still pings and stops on close', async (t) => {
  const peer = await startPeer(t);
  const pool = newPool(t);
  const s = await connect(pool, peer.port);
  const serverSession = peer.sessions[0]!;
  const k = startKeepalive(serverSession);
  t.type(k.lastHeardAt(), 'number');
  serverSession.destroy();
  k.stop();
  s.close();
});

t.test('tcp-connect errors bracket IPv6 addresses', async (t) => {
  // A port that was just free on ::1: the connect is refused at once.
  const probe = net.createServer();
  const listened = await new Promise<boolean>((r) => {
    probe.once('error', () => r(false));
    probe.listen(0, '::1', () => r(true));
  });
  if (!listened) {
    t.plan(0, 'no IPv6 loopback on this machine');
    return;
  }
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const err = await connectTcp('::1', port, { timeoutMs: 5000 }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof ZtError);
  t.match((err as Error).message, `connect to [::1]:${port} failed`);
});

t.test('(f) partition: new connections fail fast instead of waiting CONNECT_TIMEOUT; after healing they work again', async (t) => {
  const peer = await startPeer(t);
  const pool = newPool(t, { connectTimeoutMs: 8_000, trialGraceMs: 1_000, peerBackoffBaseMs: 400, peerBackoffMaxMs: 800 });
  const open = await connect(pool, peer.port);
  t.equal(await echoOnce(open, 'before'), 'before');
  await sleep(400); // the session is quiet now
  peer.partition();
  // First: the probe finds the session silent (500 ms), the retry's trial session gets 1 s.
  let started = Date.now();
  const e1 = await connect(pool, peer.port).then(
    () => new Error('connected across a partition'),
    (e: unknown) => e as Error,
  );
  const firstMs = Date.now() - started;
  t.ok(e1 instanceof ZtError, `failed with ${e1.message}`);
  t.ok(firstMs < 3_000, `first new connection failed after ${firstMs}ms (CONNECT_TIMEOUT 8000ms)`);
  // Later ones, during the backoff window or while a trial is pending: at once.
  const fast: number[] = [];
  for (let i = 0; i < 5; i++) {
    started = Date.now();
    const e = await connect(pool, peer.port).then(
      () => undefined,
      (err: unknown) => err as ZtError,
    );
    fast.push(Date.now() - started);
    t.ok(e instanceof ZtError, `attempt ${i} during the partition fails (${e?.code ?? 'connected!'})`);
    await sleep(150);
  }
  t.ok(fast.filter((ms) => ms < 100).length >= 3, `most fail at once during the partition: ${fast.join(', ')} ms`);
  t.match(JSON.stringify(pool.unreachablePeers()), /127\.0\.0\.1/, 'config_dump lists the peer as failing fast');
  peer.heal();
  const healedAt = Date.now();
  let stream: http2.ClientHttp2Stream | undefined;
  while (!stream && Date.now() - healedAt < 5_000) {
    stream = await connect(pool, peer.port).catch(() => undefined);
    if (!stream) await sleep(100);
  }
  const recoverMs = Date.now() - healedAt;
  t.ok(stream, `a new connection works ${recoverMs}ms after healing (no restart)`);
  t.ok(recoverMs < 3_000, `recovered within the backoff cap + a handshake (${recoverMs}ms)`);
  if (stream) t.equal(await echoOnce(stream, 'after'), 'after');
  t.same(pool.unreachablePeers(), [], 'no longer failing fast');
  stream?.close();
  open.destroy();
});

t.test('(g) a peer that never accepts: the first connect waits CONNECT_TIMEOUT, the next ones fail fast', async (t) => {
  const peer = await startPeer(t);
  peer.partition();
  const pool = newPool(t, { connectTimeoutMs: 1_500, trialGraceMs: 1_000, peerBackoffBaseMs: 2_000, peerBackoffMaxMs: 2_000 });
  let started = Date.now();
  const e1 = await connect(pool, peer.port).catch((e: unknown) => e as ZtError);
  const firstMs = Date.now() - started;
  t.equal((e1 as ZtError).code, 'ZT_ERR_HBONE_CONNECT_TIMEOUT');
  t.ok(firstMs >= 1_400, `the first waits the connect timeout (${firstMs}ms)`);
  started = Date.now();
  const e2 = await connect(pool, peer.port).catch((e: unknown) => e as ZtError);
  t.equal((e2 as ZtError).code, 'ZT_ERR_PEER_UNREACHABLE');
  t.ok(Date.now() - started < 100, `the next fails at once (${Date.now() - started}ms)`);
  t.match((e2 as ZtError).message, /not answering \(1 failed attempt, last: HBONE connect to 127\.0\.0\.1:\d+ timed out/);
});
