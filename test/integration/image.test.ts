// The image, without a Docker engine: the Dockerfile's stages are replayed in a clean
// temporary directory, following the Dockerfile itself — each stage gets a folder standing
// for its WORKDIR, COPY lines copy from the repository (the build context) or from an earlier
// stage's folder, RUN lines run there (npm from the lockfile, the cache preferred; the
// apt-get line of the final stage is skipped: no root filesystem to install into), ENV lines
// become the environment. Then the final folder must hold dist/src and proto/, no
// dist/bench, no dist/test and no devDependency; the ENTRYPOINT started with a minimal env
// (NODE_NAME, free ports, and a test control plane — a grpc-js server with TLS and a token
// check speaking istiod's protocols — as XDS_ADDRESS / XDS_ROOT_CA / AUTH_TOKEN) must take its
// workloads over delta xDS, reach ready on its readiness port, and the HEALTHCHECK command
// must exit 0 against it (and non-zero where nothing listens). Skipped only when npm is not
// available.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { parseLocalConfig } from '../../src/config/local-config.js';
import { startTestControlPlane } from '../helpers/control-plane.js';
import { sharedCa } from '../helpers/mesh.js';

const root = path.resolve(import.meta.dirname, '../..');

interface Copy {
  from?: string;
  sources: string[];
  dest: string;
}
interface Stage {
  name: string;
  workdir: string;
  steps: ({ kind: 'copy'; copy: Copy } | { kind: 'run'; command: string })[];
  env: Record<string, string>;
  healthcheck?: string[];
  entrypoint?: string[];
}

/** The Dockerfile as stages of COPY / RUN steps (continuation lines joined, comments dropped). */
function parseDockerfile(text: string): Stage[] {
  const lines: string[] = [];
  let cur = '';
  for (const raw of text.split('\n')) {
    if (/^\s*#/.test(raw)) continue;
    const cont = /\\\s*$/.test(raw);
    cur += (cur ? ' ' : '') + raw.replace(/\\\s*$/, '').trim();
    if (!cont) {
      if (cur.trim()) lines.push(cur.trim());
      cur = '';
    }
  }
  const stages: Stage[] = [];
  const stage = (): Stage => {
    const s = stages.at(-1);
    if (s === undefined) throw new Error('instruction before FROM');
    return s;
  };
  for (const line of lines) {
    const m = /^(\w+)\s+(.*)$/.exec(line);
    if (!m) throw new Error(`cannot parse Dockerfile line: ${line}`);
    const instr = (m[1] as string).toUpperCase();
    const rest = m[2] as string;
    switch (instr) {
      case 'FROM': {
        const as = /\s+AS\s+(\S+)$/i.exec(rest);
        stages.push({ name: as ? (as[1] as string) : `stage${stages.length}`, workdir: '/', steps: [], env: {} });
        break;
      }
      case 'WORKDIR':
        stage().workdir = rest.trim();
        break;
      case 'COPY': {
        const words = rest.split(/\s+/);
        let from: string | undefined;
        while (words[0]?.startsWith('--')) {
          const flag = words.shift() as string;
          if (flag.startsWith('--from=')) from = flag.slice('--from='.length);
        }
        const dest = words.pop();
        if (dest === undefined || words.length === 0) throw new Error(`bad COPY: ${line}`);
        stage().steps.push({ kind: 'copy', copy: { from, sources: words, dest } });
        break;
      }
      case 'RUN':
        stage().steps.push({ kind: 'run', command: rest });
        break;
      case 'ENV':
        for (const kv of rest.split(/\s+/)) {
          const eq = kv.indexOf('=');
          if (eq > 0) stage().env[kv.slice(0, eq)] = kv.slice(eq + 1);
        }
        break;
      case 'HEALTHCHECK': {
        const cmd = /\bCMD\s+(\[.*\])\s*$/.exec(rest);
        if (!cmd) throw new Error(`HEALTHCHECK must use the exec form: ${line}`);
        stage().healthcheck = JSON.parse(cmd[1] as string) as string[];
        break;
      }
      case 'ENTRYPOINT':
        stage().entrypoint = JSON.parse(rest) as string[];
        break;
      default:
        break; // EXPOSE, LABEL, USER …: nothing to replay
    }
  }
  return stages;
}

const npm = spawnSync('npm', ['--version'], { encoding: 'utf8' });
if (npm.status !== 0) {
  t.plan(0, `npm is not available (${npm.error?.message ?? npm.stderr}): cannot replay the image build`);
} else {
  const stages = parseDockerfile(fs.readFileSync(path.join(root, 'Dockerfile'), 'utf8'));
  const final = stages.at(-1) as Stage;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `zt-image-${process.pid}-`));
  const children: ChildProcess[] = [];
  t.teardown(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  const dirOf = new Map<string, string>();
  const ignored = fs
    .readFileSync(path.join(root, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const isIgnored = (p: string): boolean =>
    ignored.some((pat) => (pat.includes('*') ? new RegExp(`^${pat.replace(/\./g, '\\.').replace(/\*/g, '[^/]*')}$`).test(p) : p === pat || p.startsWith(`${pat}/`)));

  /** A path inside the image (absolute, or relative to the stage's WORKDIR) → its folder. */
  const hostPath = (stageDir: string, workdir: string, p: string): string => path.join(stageDir, path.posix.resolve(workdir, p));

  t.test('the Dockerfile stages, replayed', async (t) => {
    t.ok(stages.length >= 2, 'multi-stage');
    t.ok(final.entrypoint && final.healthcheck, 'the final stage has ENTRYPOINT and HEALTHCHECK');
    for (const st of stages) {
      const dir = path.join(tmp, st.name);
      fs.mkdirSync(dir, { recursive: true });
      dirOf.set(st.name, dir);
      for (const step of st.steps) {
        if (step.kind === 'copy') {
          const { from, sources, dest } = step.copy;
          const toDir = sources.length > 1 || dest.endsWith('/');
          for (const src of sources) {
            let srcPath: string;
            if (from === undefined) {
              t.notOk(isIgnored(src), `${src} is not excluded by .dockerignore`);
              srcPath = path.join(root, src);
            } else {
              const fromDir = dirOf.get(from);
              if (fromDir === undefined) throw new Error(`COPY --from=${from}: no such stage`);
              srcPath = path.join(fromDir, src); // absolute image paths under the other stage's root
            }
            const target = hostPath(dir, st.workdir, toDir ? path.posix.join(dest, path.basename(src)) : dest);
            fs.mkdirSync(path.dirname(target), { recursive: true });
            fs.cpSync(srcPath, target, { recursive: true, verbatimSymlinks: true });
          }
        } else if (/^apt-get\b/.test(step.command)) {
          t.comment(`skipped (needs the image's root filesystem): ${step.command.slice(0, 60)}…`);
        } else {
          const started = Date.now();
          const r = spawnSync('bash', ['-ec', step.command], {
            cwd: hostPath(dir, st.workdir, '.'),
            // The cache first, the registry only for what the cache lacks.
            env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? os.homedir(), npm_config_prefer_offline: 'true', npm_config_update_notifier: 'false', ...st.env },
            encoding: 'utf8',
            timeout: 240_000,
          });
          t.equal(r.status, 0, `${st.name}: RUN ${step.command} (${Date.now() - started} ms)${r.status === 0 ? '' : `\n${r.stdout}\n${r.stderr}`}`);
          if (r.status !== 0) return;
        }
      }
      if (st.workdir !== '/app' && st.steps.length > 0) t.fail(`stage ${st.name}: the replay expects WORKDIR /app, got ${st.workdir}`);
    }
  });

  t.test('the final image holds the app, proto/ and production dependencies only', async (t) => {
    const app = hostPath(dirOf.get(final.name) as string, final.workdir, '.');
    t.ok(fs.existsSync(path.join(app, 'dist/src/main.js')), 'dist/src/main.js');
    t.ok(fs.existsSync(path.join(app, 'dist/native-shims')), 'dist/native-shims');
    t.notOk(fs.existsSync(path.join(app, 'dist/bench')), 'no dist/bench');
    t.notOk(fs.existsSync(path.join(app, 'dist/test')), 'no dist/test');
    t.notOk(fs.existsSync(path.join(app, 'bench')) || fs.existsSync(path.join(app, 'test')) || fs.existsSync(path.join(app, 'src')), 'no sources');
    t.ok(fs.readdirSync(path.join(app, 'proto')).length > 0, 'proto/ (loaded at run time by src/xds/protos.ts)');
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
    for (const dep of Object.keys(pkg.dependencies)) t.ok(fs.existsSync(path.join(app, 'node_modules', dep)), `dependency ${dep} present`);
    // A devDependency may also be a production dependency's dependency (protobufjs needs
    // @types/node): the lockfile's `dev` flag says which packages only development needs.
    const lock = JSON.parse(fs.readFileSync(path.join(root, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
    const devOnly = Object.keys(pkg.devDependencies).filter((d) => lock.packages[`node_modules/${d}`]?.dev === true);
    t.ok(devOnly.includes('typescript') && devOnly.includes('tap'), 'the lockfile marks development-only packages');
    const devPresent = Object.keys(lock.packages).filter((k) => k.startsWith('node_modules/') && lock.packages[k]?.dev === true && fs.existsSync(path.join(app, k)));
    t.same(devPresent, [], 'no development-only package in node_modules');
    t.notOk(fs.existsSync(path.join(app, 'node_modules/.bin/tsc')), 'no TypeScript compiler');
  });

  t.test('the ENTRYPOINT reaches ready; the HEALTHCHECK command says so', async (t) => {
    const app = hostPath(dirOf.get(final.name) as string, final.workdir, '.');
    const readinessPort = await freePort();
    const cp = await startTestControlPlane(sharedCa);
    t.teardown(() => cp.close());
    cp.cp.setMesh(parseLocalConfig('workloads:\n- name: a\n  namespace: default\n  workloadIps: ["127.0.9.3"]\n  protocol: HBONE\n  node: image-test\n', 'image-test.yaml'));
    const [cmd, ...args] = final.entrypoint as string[];
    const env = {
      PATH: process.env.PATH ?? '',
      ...final.env,
      NODE_NAME: 'image-test',
      POD_NAME: 'ztunnel-image-test',
      POD_NAMESPACE: 'istio-system',
      SERVICE_ACCOUNT: 'ztunnel',
      ...cp.env,
      ZTUNNEL_OUTBOUND_PORT: '0',
      ZTUNNEL_INBOUND_PLAINTEXT_PORT: '0',
      ZTUNNEL_INBOUND_PORT: '0',
      ZTUNNEL_ADMIN_PORT: '0',
      ZTUNNEL_STATS_PORT: '0',
      ZTUNNEL_READINESS_PORT: String(readinessPort),
    };
    const child = spawn(cmd === 'node' ? process.execPath : (cmd as string), args, { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));

    const deadline = Date.now() + 30_000;
    let status = 0;
    while (Date.now() < deadline && child.exitCode === null) {
      status = await getStatus(readinessPort, '/healthz/ready');
      if (status === 200) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    t.equal(status, 200, `GET :${readinessPort}/healthz/ready answers 200\n${out.slice(-2000)}`);
    const stream = cp.cp.streamInfos().find((s) => s.nodeMetadata['NODE_NAME'] === 'image-test');
    t.ok(stream, 'it subscribed to the control plane');
    t.equal(stream?.nodeId, 'ztunnel~1.1.1.1~ztunnel-image-test.istio-system~istio-system.svc.cluster.local', 'with upstream\'s node id');
    t.ok((stream?.acks ?? 0) >= 2, 'and ACKed the first response of each type');

    const [hcCmd, ...hcArgs] = final.healthcheck as string[];
    const hcBin = hcCmd === 'node' ? process.execPath : (hcCmd as string);
    const hc = spawnSync(hcBin, hcArgs, { cwd: app, env, encoding: 'utf8', timeout: 15_000 });
    t.equal(hc.status, 0, `HEALTHCHECK exits 0 ${hc.stderr}`);
    const closedPort = await freePort();
    const down = spawnSync(hcBin, hcArgs, { cwd: app, env: { ...env, ZTUNNEL_READINESS_PORT: String(closedPort) }, encoding: 'utf8', timeout: 15_000 });
    t.not(down.status, 0, 'HEALTHCHECK fails where nothing answers');

    child.kill('SIGTERM');
    t.equal(await exited, 0, 'SIGTERM drains and exits 0');
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function getStatus(port: number, p: string): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    req.on('timeout', () => {
      req.destroy();
      resolve(0);
    });
  });
}
