// The real `ztunnel-ts` process: bad configuration is a clear start-up error (names the
// file, the key and the problem, non-zero exit); SIGTERM drains and exits 0; `ca create`.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';

const main = path.resolve('dist/src/main.js');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zt-proc-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

const baseEnv = {
  PATH: process.env.PATH ?? '',
  ZTUNNEL_OUTBOUND_PORT: '0',
  ZTUNNEL_INBOUND_PLAINTEXT_PORT: '0',
  ZTUNNEL_INBOUND_PORT: '0',
  ZTUNNEL_ADMIN_PORT: '0',
  ZTUNNEL_STATS_PORT: '0',
  ZTUNNEL_READINESS_PORT: '0',
  LOG_FORMAT: 'json',
  NODE_NAME: 'local',
  XDS_ADDRESS: '',
};

t.test('without a local config it talks to istiod; a missing root says which variable and how to go on, and exits 1', async (t) => {
  const { XDS_ADDRESS: _none, ...env } = baseEnv;
  const r = spawnSync(process.execPath, [main], { env: { ...env, XDS_ROOT_CA: path.join(dir, 'no-such-root.pem') }, encoding: 'utf8', timeout: 20_000 });
  t.equal(r.status, 1);
  t.match(r.stderr, /XDS_ROOT_CA|CA_ROOT_CA/);
  t.match(r.stderr, 'no-such-root.pem');
  t.match(r.stderr, /ENOENT/);
});

t.test('a malformed local config names the file, the key and the problem, and exits non-zero', async (t) => {
  const file = path.join(dir, 'bad.yaml');
  fs.writeFileSync(file, 'workloads:\n- name: a\n  namespace: default\n  workloadIps: ["10.0.0.300"]\n');
  const r = spawnSync(process.execPath, [main], { env: { ...baseEnv, LOCAL_XDS_PATH: file }, encoding: 'utf8', timeout: 20_000 });
  t.equal(r.status, 1);
  t.match(r.stderr, file);
  t.match(r.stderr, 'workloads[0].workloadIps[0]');
  t.match(r.stderr, /10\.0\.0\.300.*not an IP/);
});

t.test('node mode without NODE_NAME refuses to start, naming the variable', async (t) => {
  const { NODE_NAME: _n, ...env } = baseEnv;
  const r = spawnSync(process.execPath, [main], { env, encoding: 'utf8', timeout: 20_000 });
  t.equal(r.status, 1);
  t.match(r.stderr, /NODE_NAME: required when PROXY_MODE=node/);
});

t.test('a bad environment variable is named', async (t) => {
  const r = spawnSync(process.execPath, [main], { env: { ...baseEnv, PACKET_MARK: 'abc' }, encoding: 'utf8', timeout: 20_000 });
  t.equal(r.status, 1);
  t.match(r.stderr, /PACKET_MARK/);
});

t.test('ca create writes a root; the key file is private', async (t) => {
  const out = path.join(dir, 'ca');
  const r = spawnSync(process.execPath, [main, 'ca', 'create', '--out', out], { encoding: 'utf8', timeout: 20_000 });
  t.equal(r.status, 0, r.stderr);
  t.match(fs.readFileSync(path.join(out, 'ca-cert.pem'), 'utf8'), /BEGIN CERTIFICATE/);
  t.equal(fs.statSync(path.join(out, 'ca-key.pem')).mode & 0o077, 0, 'ca-key.pem is 0600');
  const again = spawnSync(process.execPath, [main, 'ca', 'create', '--out', out], { encoding: 'utf8', timeout: 20_000 });
  t.not(again.status, 0, 'refuses to overwrite');
});

t.test('SIGTERM drains and exits 0; private keys never reach the logs', async (t) => {
  const ca = path.join(dir, 'ca2');
  spawnSync(process.execPath, [main, 'ca', 'create', '--out', ca]);
  const yaml = path.join(dir, 'ok.yaml');
  fs.writeFileSync(yaml, 'workloads:\n- name: a\n  namespace: default\n  workloadIps: ["127.0.9.2"]\n  protocol: HBONE\n  node: local\n');
  const child = spawn(process.execPath, [main], {
    env: { ...baseEnv, LOCAL_XDS_PATH: yaml, LOCAL_CA_CERT: path.join(ca, 'ca-cert.pem'), LOCAL_CA_KEY: path.join(ca, 'ca-key.pem'), LOG_LEVEL: 'debug' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not ready: ${out}`)), 15_000);
    child.stdout.on('data', () => {
      if (out.includes('ztunnel-ts ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  const started = Date.now();
  child.kill('SIGTERM');
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  t.equal(code, 0, 'exit 0');
  t.ok(Date.now() - started < 7000, 'within the 5 s deadline (+ margin)');
  t.match(out, /draining/);
  t.notMatch(out, /PRIVATE KEY/);
});

t.test('a stdout nobody reads neither blocks traffic nor the exit', async (t) => {
  const child = spawn(process.execPath, [main], {
    env: { ...baseEnv, ZTUNNEL_INBOUND_PLAINTEXT_PORT: '0', ZTUNNEL_ADMIN_PORT: '0', CONNECTION_TERMINATION_DEADLINE: '1s' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Learn the ports from the first line, then stop reading stdout entirely.
  const first = await new Promise<string>((resolve) => {
    let acc = '';
    const onData = (d: Buffer): void => {
      acc += d.toString();
      if (acc.includes('ztunnel-ts ready')) {
        child.stdout.removeListener('data', onData);
        child.stdout.pause();
        resolve(acc);
      }
    };
    child.stdout.on('data', onData);
  });
  const ports = JSON.parse(JSON.parse(first.split('\n').find((l) => l.includes('ztunnel-ts ready')) as string).ports) as { inboundPlaintext: number };
  // Each connection to 15006 addressed to the listener itself is refused with a log line (~250 B).
  const net = await import('node:net');
  for (let i = 0; i < 1500; i++) {
    await new Promise<void>((r) => {
      const s = net.connect(ports.inboundPlaintext, '127.0.0.1');
      s.on('error', () => r());
      s.on('close', () => r());
    });
  }
  const started = Date.now();
  child.kill('SIGTERM');
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  t.equal(code, 0);
  t.ok(Date.now() - started < 6000, `exited in ${Date.now() - started} ms with a stuck stdout`);
});

t.test('SIGINT drains; a second SIGINT exits at once', async (t) => {
  const { socksConnect, startEcho } = await import('../helpers/mesh.js');
  const echo = await startEcho('127.0.9.5');
  t.teardown(() => echo.server.close());
  const yaml = path.join(dir, 'sigint.yaml');
  fs.writeFileSync(yaml, 'workloads:\n- name: a\n  namespace: default\n  workloadIps: ["127.0.9.2"]\n  protocol: HBONE\n  node: local\n');
  const child = spawn(process.execPath, [main], {
    env: { ...baseEnv, LOCAL_XDS_PATH: yaml, UNSTABLE_ENABLE_SOCKS5: 'true', ZTUNNEL_SOCKS5_PORT: '0', CONNECTION_TERMINATION_DEADLINE: '30s' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise<void>((resolve) => {
    const check = (): void => {
      if (out.includes('ztunnel-ts ready')) resolve();
      else setTimeout(check, 20);
    };
    check();
  });
  const ready = JSON.parse(out.split('\n').find((l) => l.includes('ztunnel-ts ready')) as string) as { ports: string };
  const ports = JSON.parse(ready.ports) as { socks5: number };
  const s = await socksConnect(ports.socks5, '127.0.9.2', '127.0.9.5', echo.port);
  s.on('error', () => undefined);
  child.kill('SIGINT');
  await new Promise((r) => setTimeout(r, 500));
  t.equal(child.exitCode, null, 'still draining: one connection is open and the deadline is 30 s');
  const started = Date.now();
  child.kill('SIGINT');
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  t.equal(code, 130);
  t.ok(Date.now() - started < 2000, 'the second SIGINT exits at once');
  s.destroy();
});
