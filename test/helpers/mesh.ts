// In-process ztunnels on loopback for integration tests: workloads live at 127.0.x.y
// addresses (all of 127.0.0.0/8 is local on Linux), clients enter through SOCKS5 from
// their workload's address, and every port is picked by the kernel. Nothing here needs
// root; as root the listeners also get IP_TRANSPARENT, which changes nothing on loopback.
import { createHash } from 'node:crypto';
import net from 'node:net';
import { PassThrough } from 'node:stream';
import { App, type AppOptions } from '../../src/app.js';
import { loadConfig } from '../../src/config/env.js';
import { CertificateAuthority } from '../../src/identity/ca.js';
import { noteLogLine } from './unexpected.js';
import { within } from './within.js';

export const sharedCa = CertificateAuthority.generate({ commonName: 'ztunnel-ts test root' });

export interface TestZtunnel {
  app: App;
  logs: string[];
  ports: ReturnType<App['ports']>;
}

/** Start an in-process ztunnel. `env` overrides; all ports default to 0 (any). */
export async function startZtunnel(
  env: Record<string, string>,
  ca: CertificateAuthority = sharedCa,
  extra: Omit<AppOptions, 'logDestination' | 'ca'> = {},
): Promise<TestZtunnel> {
  const logs: string[] = [];
  const sink = new PassThrough();
  let partial = '';
  sink.on('data', (b: Buffer) => {
    partial += b.toString();
    let i: number;
    while ((i = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, i);
      logs.push(line);
      noteLogLine(`ztunnel ${env.NODE_NAME ?? ''}`, line);
      partial = partial.slice(i + 1);
    }
  });
  const config = loadConfig({
    PROXY_MODE: 'node',
    UNSTABLE_ENABLE_SOCKS5: 'true',
    LOG_FORMAT: 'json',
    ZTUNNEL_OUTBOUND_PORT: '0',
    ZTUNNEL_INBOUND_PLAINTEXT_PORT: '0',
    ZTUNNEL_INBOUND_PORT: '0',
    ZTUNNEL_SOCKS5_PORT: '0',
    ZTUNNEL_ADMIN_PORT: '0',
    ZTUNNEL_STATS_PORT: '0',
    ZTUNNEL_READINESS_PORT: '0',
    ZTUNNEL_BIND_ADDRESS: '0.0.0.0',
    CONNECTION_TERMINATION_DEADLINE: '2s',
    // The data path on the test's own thread, so the suites can look into app.tracker; the
    // worker-thread suites (test/integration/workers.test.ts) and the process suites run threads.
    ZTUNNEL_WORKER_THREADS: '1',
    // Without a local config the default source is istiod: these ztunnels run standalone unless told otherwise.
    ...(env.LOCAL_XDS === undefined && env.LOCAL_XDS_PATH === undefined ? { XDS_ADDRESS: '' } : {}),
    ...env,
  });
  const app = new App(config, { logDestination: sink, ca, ...extra });
  const ports = await app.start();
  return { app, logs, ports };
}

/** Parsed JSON log lines with this message. */
export function logLines(z: TestZtunnel, message: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const l of z.logs) {
    try {
      const o = JSON.parse(l) as Record<string, unknown>;
      if (o.message === message || o.msg === message) out.push(o);
    } catch {
      /* not JSON */
    }
  }
  return out;
}

/**
 * Connect through a SOCKS5 entry from `localAddress` to host:port. Resolves with the
 * socket once the proxy answered success; rejects with the SOCKS reply code otherwise.
 */
export function socksConnect(socksPort: number, localAddress: string, host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port: socksPort, localAddress, allowHalfOpen: true });
    let stage = 0;
    let buf = Buffer.alloc(0);
    const fail = (e: Error): void => {
      sock.destroy();
      reject(e);
    };
    sock.once('error', fail);
    sock.once('close', () => {
      if (stage < 2) fail(new Error('SOCKS5: closed during handshake'));
    });
    sock.on('connect', () => sock.write(Buffer.from([5, 1, 0])));
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      if (stage === 0 && buf.length >= 2) {
        buf = buf.subarray(2);
        stage = 1;
        const isV4 = net.isIPv4(host);
        const addr = isV4 ? Buffer.from(host.split('.').map(Number)) : Buffer.concat([Buffer.from([host.length]), Buffer.from(host)]);
        const p = Buffer.alloc(2);
        p.writeUInt16BE(port);
        sock.write(Buffer.concat([Buffer.from([5, 1, 0, isV4 ? 1 : 3]), addr, p]));
      }
      if (stage === 1 && buf.length >= 10) {
        const rep = buf[1];
        sock.removeListener('data', onData);
        sock.removeListener('error', fail);
        if (rep !== 0) return fail(Object.assign(new Error(`SOCKS5 reply ${rep}`), { socksReply: rep }));
        stage = 2;
        // Hand over a paused socket: readers attach their own 'data' listener and resume.
        sock.pause();
        const rest = buf.subarray(10);
        if (rest.length) sock.unshift(rest);
        resolve(sock);
      }
    };
    sock.on('data', onData);
  });
}

/** A TCP server at ip:0 in "read double write" echo mode (each read echoed twice), as upstream's tests. */
export function startEcho(ip: string, mode: 'echo' | 'double' = 'echo'): Promise<{ server: net.Server; port: number; peers: string[] }> {
  const peers: string[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    peers.push(`${s.remoteAddress}:${s.remotePort}`);
    s.on('error', () => undefined);
    s.on('data', (d) => {
      s.write(d);
      if (mode === 'double') s.write(d);
    });
    s.on('end', () => s.end());
  });
  return new Promise((resolve) => {
    server.listen(0, ip, () => resolve({ server, port: (server.address() as net.AddressInfo).port, peers }));
  });
}

/** Read everything until EOF. */
export function readAll(sock: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.once('end', () => resolve(Buffer.concat(chunks)));
    sock.once('error', reject);
    sock.resume();
  });
}

/** Read exactly n bytes. */
export function readN(sock: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (d: Buffer): void => {
      chunks.push(d);
      got += d.length;
      if (got >= n) {
        sock.removeListener('data', onData);
        resolve(Buffer.concat(chunks));
      }
    };
    sock.on('data', onData);
    sock.once('error', reject);
    sock.once('end', () => {
      if (got < n) reject(new Error(`EOF after ${got} of ${n} bytes`));
    });
    sock.resume();
  });
}

/** Deterministic pseudo-random bytes and their sha256. */
export function pattern(size: number, seed: number): { data: Buffer; sha256: string } {
  const data = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    data.writeUInt32LE(x >>> 0, i);
  }
  return { data, sha256: createHash('sha256').update(data).digest('hex') };
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** The two-node loopback mesh config used by the integration tests. */
export function twoNodeYaml(o: { echoPort: number; serverSa?: string; extra?: string }): string {
  return `
workloads:
- name: client
  namespace: default
  serviceAccount: client
  workloadIps: ["127.0.1.2"]
  protocol: HBONE
  node: node-a
- name: foreign
  namespace: default
  serviceAccount: foreign
  trustDomain: other.local
  workloadIps: ["127.0.1.3"]
  protocol: HBONE
  node: node-a
- name: server
  namespace: default
  serviceAccount: ${o.serverSa ?? 'server'}
  workloadIps: ["127.0.2.2"]
  protocol: HBONE
  node: node-b
  services:
    default/echo.default.svc.cluster.local:
      80: ${o.echoPort}
- name: legacy
  namespace: default
  serviceAccount: legacy
  workloadIps: ["127.0.2.3"]
  protocol: TCP
  node: node-b
services:
- name: echo
  namespace: default
  hostname: echo.default.svc.cluster.local
  vips: ["/127.10.0.1"]
  ports:
    80: ${o.echoPort}
- name: empty
  namespace: default
  hostname: empty.default.svc.cluster.local
  vips: ["/127.10.0.2"]
  ports:
    80: 8080
${o.extra ?? ''}`;
}

/** GET a path on 127.0.0.1:port; resolves with status and body. */
export async function httpGet(port: number, path: string, method = 'GET'): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method });
  return { status: res.status, body: await res.text() };
}

/** The value of one sample in Prometheus text, matching every given label. */
export function sampleValue(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

/** Wait until fn() is truthy (polling), or fail after timeoutMs. */
export async function eventually<T>(fn: () => T | Promise<T>, timeoutMs = 5000, what = 'condition'): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * A connection through z's SOCKS5 entry from `from` to host:port that has echoed 'ping' once
 * (so it is established end to end); left open, errors swallowed (tests close or reset it).
 */
export async function openEchoed(z: TestZtunnel, from: string, host: string, port: number, timeoutMs = 10_000): Promise<net.Socket> {
  const s = await within(timeoutMs, socksConnect(z.ports.socks5 as number, from, host, port), `SOCKS5 connect from ${from}`);
  s.on('error', () => undefined);
  s.write('ping');
  const got = (await within(timeoutMs, readN(s, 4), `the echo for ${from}`)).toString();
  if (got !== 'ping') throw new Error(`echo answered ${JSON.stringify(got)}`);
  return s;
}

/** End a data-path worker thread of `app` from outside, as a native crash or an out-of-memory would. */
export async function terminateDataPlaneWorker(app: App, index: number): Promise<void> {
  const set = (app as unknown as { workers: { workers: { worker: { terminate(): Promise<number> } }[] } | undefined }).workers;
  const w = set?.workers[index];
  if (!w) throw new Error(`no data-path worker ${index} (ZTUNNEL_WORKER_THREADS > ${index}?)`);
  await w.worker.terminate();
}
