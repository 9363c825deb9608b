// Running out of file descriptors while splicing must cost only the connection that hit
// the limit, never the worker and every other spliced connection (a real process under
// `prlimit --nofile`, using the built dist/).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';

const dist = path.resolve('dist/src/copy/splice-copy.js');
const prlimit = spawnSync('which', ['prlimit']).status === 0;
if (!fs.existsSync(dist) || !prlimit) {
  t.plan(0, !prlimit ? 'prlimit (util-linux) is not installed' : 'not built: run npm run build');
} else {
  t.test('EMFILE fails one connection, the others keep flowing', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zt-emfile-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const script = path.join(dir, 'emfile.mjs');
    fs.writeFileSync(
      script,
      `import net from 'node:net';
import { spliceBidirectional, startSpliceWorker, stopSpliceWorker } from ${JSON.stringify(dist)};
const listen = (s) => new Promise((r) => s.listen(0, '127.0.0.1', () => r(s.address().port)));
await startSpliceWorker();
const app = net.createServer({ allowHalfOpen: true }, (s) => { s.on('error', () => {}); s.on('data', (d) => s.write(d)); });
const appPort = await listen(app);
const results = [];
const front = net.createServer({ allowHalfOpen: true }, (down) => {
  down.on('error', () => {});
  const up = net.connect({ port: appPort, host: '127.0.0.1', allowHalfOpen: true });
  up.on('error', () => { down.destroy(); });
  up.once('connect', async () => {
    const o = await spliceBidirectional(down, up, { clientToServer: 0, serverToClient: 0 });
    results.push(o.error ? (o.error.code ?? o.error.message) : 'ok');
  });
});
front.on('error', () => {});
const frontPort = await listen(front);
const clients = [];
let failedAt = -1;
for (let i = 0; i < 80 && failedAt < 0; i++) {
  const c = net.connect({ port: frontPort, host: '127.0.0.1', allowHalfOpen: true });
  c.on('error', () => {});
  const ok = await new Promise((r) => { c.once('connect', () => r(true)); c.once('error', () => r(false)); });
  if (!ok) { failedAt = i; break; }
  c.write('ping');
  const echoed = await Promise.race([new Promise((r) => c.once('data', () => r(true))), new Promise((r) => setTimeout(() => r(false), 500))]);
  if (!echoed) { failedAt = i; c.destroy(); break; }
  clients.push(c);
}
// Every connection that worked before the limit must still work.
let alive = 0;
for (const c of clients) {
  if (c.destroyed) continue;
  c.write('again');
  const ok = await Promise.race([new Promise((r) => c.once('data', () => r(true))), new Promise((r) => setTimeout(() => r(false), 500))]);
  if (ok) alive++;
}
console.log(JSON.stringify({ failedAt, healthy: clients.length, alive }));
for (const c of clients) c.destroy();
await stopSpliceWorker(); app.close(); front.close();
`,
    );
    const r = spawnSync('prlimit', ['--nofile=201:201', process.execPath, script], { encoding: 'utf8', timeout: 60_000 });
    t.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1) as string) as { failedAt: number; healthy: number; alive: number };
    t.ok(out.failedAt > 0, `the fd limit was reached at connection ${out.failedAt}`);
    t.ok(out.healthy > 5, `${out.healthy} connections worked before the limit`);
    t.equal(out.alive, out.healthy, 'all of them still carry bytes after one hit EMFILE');
  });
}
