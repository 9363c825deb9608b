// The perf bench's comparison proxies, set up inside the bench topology:
//  - a second, non-mesh address on the sleep and productpage pods' eth0 (not in the ipset, no
//    table-100 route), with /32 routes on their nodes, so that traffic between the same two
//    pods can bypass the capture path;
//  - a stunnel4 pair (mutual TLS 1.3, P-256 certificates made here with openssl): client side
//    in sleep's netns (accepts on 127.0.0.1, connects from sleep's second address), server
//    side in productpage's netns (accepts on productpage's second address, connects to
//    127.0.0.1) — the HBONE row's counterpart;
//  - haproxy in TCP mode with splice forced on both ways in the source node's ztunnel netns
//    (the same hops as ztunnel's passthrough), reached from sleep's second address (a /32
//    route with `src`), connecting to plain — the passthrough row's counterpart.
// Must never: touch anything outside the bench Topology's namespaces and its own temp dir,
// or leave a process behind (every daemon is spawned through Topology.spawnIn, killed on destroy).

import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync, type ChildProcess } from 'node:child_process';
import type { Topology } from '../src/demo/topology.js';
import { runIn } from './harness.js';

export const BENCH_PORTS = { http: 8080, iperf: 5201, echo: 9000 } as const;
export type BenchService = keyof typeof BENCH_PORTS;

/** Client-side (loopback) ports of the stunnel pair, server-side ports on productpage's second address, haproxy's ports. */
export const STUNNEL_LOCAL_PORTS: Record<BenchService, number> = { http: 28080, iperf: 25201, echo: 29000 };
export const STUNNEL_REMOTE_PORTS: Record<BenchService, number> = { http: 38080, iperf: 35201, echo: 39000 };
export const HAPROXY_PORTS: Record<BenchService, number> = { http: 48080, iperf: 45201, echo: 49000 };

/** The second address of a pod: same /24, host part 250 (the topology's pods use small host numbers). */
export function buildAltIp(podIp: string): string {
  return `${podIp.split('.').slice(0, 3).join('.')}.250`;
}

export function buildStunnelConfig(o: {
  side: 'client' | 'server';
  dir: string;
  localIp: string;
  remoteIp: string;
}): string {
  const lines = [
    'foreground = yes',
    'pid =',
    'syslog = no',
    'debug = 3',
    'socket = l:TCP_NODELAY=1',
    'socket = r:TCP_NODELAY=1',
  ];
  for (const svc of Object.keys(BENCH_PORTS) as BenchService[]) {
    lines.push('', `[${svc}]`);
    if (o.side === 'client') {
      lines.push('client = yes', `accept = 127.0.0.1:${STUNNEL_LOCAL_PORTS[svc]}`, `connect = ${o.remoteIp}:${STUNNEL_REMOTE_PORTS[svc]}`, `local = ${o.localIp}`);
    } else {
      lines.push(`accept = ${o.localIp}:${STUNNEL_REMOTE_PORTS[svc]}`, `connect = 127.0.0.1:${BENCH_PORTS[svc]}`);
    }
    lines.push(
      `cert = ${join(o.dir, `${o.side}.pem`)}`,
      `key = ${join(o.dir, `${o.side}.key`)}`,
      `CAfile = ${join(o.dir, 'ca.pem')}`,
      'verifyChain = yes',
      'sslVersionMin = TLSv1.3',
      'sslVersionMax = TLSv1.3',
    );
  }
  return `${lines.join('\n')}\n`;
}

export function buildHaproxyConfig(o: { bindIp: string; targetIp: string }): string {
  const lines = [
    'global',
    '  maxconn 4000',
    '  tune.pipesize 1048576',
    '',
    'defaults',
    '  mode tcp',
    '  timeout connect 5s',
    '  timeout client 300s',
    '  timeout server 300s',
    '  option splice-request',
    '  option splice-response',
  ];
  for (const svc of Object.keys(BENCH_PORTS) as BenchService[]) {
    lines.push('', `listen ${svc}`, `  bind ${o.bindIp}:${HAPROXY_PORTS[svc]}`, `  server ${svc} ${o.targetIp}:${BENCH_PORTS[svc]}`);
  }
  return `${lines.join('\n')}\n`;
}

function openssl(args: string[]): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr.trim()}`);
}

/** A throwaway CA and a client and a server certificate, all ECDSA P-256, in `dir`. */
export function makeCertificates(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const p = (f: string): string => join(dir, f);
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', p('ca.key')]);
  openssl(['req', '-x509', '-new', '-key', p('ca.key'), '-subj', '/CN=perf-bench-ca', '-days', '2', '-out', p('ca.pem'),
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  writeFileSync(p('leaf.ext'), 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n');
  for (const side of ['client', 'server']) {
    openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', p(`${side}.key`)]);
    openssl(['req', '-new', '-key', p(`${side}.key`), '-subj', `/CN=perf-bench-${side}`, '-out', p(`${side}.csr`)]);
    openssl(['x509', '-req', '-in', p(`${side}.csr`), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial', '-days', '2',
      '-extfile', p('leaf.ext'), '-out', p(`${side}.pem`)]);
  }
}

async function ipIn(netns: string, args: string[]): Promise<void> {
  const r = await runIn(netns, 'ip', args, 10_000);
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')} in ${netns}: ${r.stderr.trim()}`);
}

/** Resolves once something listens on TCP `port` in `netns` (ss), or throws after timeoutMs. */
export async function waitListening(netns: string, port: number, timeoutMs: number, child?: ChildProcess): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (child !== undefined && child.exitCode !== null) throw new Error(`exited with ${child.exitCode} before listening on ${port}`);
    const r = await runIn(netns, 'ss', ['-Hltn', `sport = :${port}`], 5_000);
    if (r.stdout.trim() !== '') return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`nothing listens on ${port} in ${netns} after ${timeoutMs} ms`);
}

export interface Baselines {
  sleepAlt: string;
  productpageAlt: string;
  /** Where the sleep pod reaches haproxy. */
  haproxyIp: string;
  stunnelClient: ChildProcess;
  stunnelServer: ChildProcess;
  haproxy: ChildProcess;
  /** Last lines each daemon wrote to stderr, for failure reports. */
  stderrTail(): string;
  cleanup(): void;
}

function collect(child: ChildProcess, name: string, sink: string[]): void {
  const push = (c: Buffer): void => {
    for (const l of c.toString().split('\n').filter(Boolean)) {
      sink.push(`${name}: ${l}`);
      if (sink.length > 60) sink.shift();
    }
  };
  child.stdout?.on('data', push);
  child.stderr?.on('data', push);
}

/** Sets up the second addresses, the certificates, the stunnel pair and haproxy; throws when one does not come up. */
export async function startBaselines(topo: Topology, workDir: string): Promise<Baselines> {
  const sleep = topo.getPod('sleep');
  const pp = topo.getPod('productpage');
  const plain = topo.getPod('plain');
  const srcNode = topo.getNode(sleep.node);
  const sleepAlt = buildAltIp(sleep.ip);
  const productpageAlt = buildAltIp(pp.ip);
  for (const [pod, alt] of [[sleep, sleepAlt], [pp, productpageAlt]] as const) {
    await ipIn(topo.podNetns(pod.name), ['addr', 'add', `${alt}/32`, 'dev', 'eth0']);
    // The node reaches the second address through the pod's own address (its /32 link route).
    await ipIn(topo.nodeNetns(pod.node), ['route', 'add', `${alt}/32`, 'via', pod.ip]);
  }
  // sleep → its node's ztunnel netns (haproxy) from the second address: not in the ipset, so not captured.
  await ipIn(topo.podNetns('sleep'), ['route', 'add', `${srcNode.ztunnelIp}/32`, 'via', topo.podGatewayIp(sleep.node), 'dev', 'eth0', 'onlink', 'src', sleepAlt]);

  const dir = join(workDir, 'baselines');
  rmSync(dir, { recursive: true, force: true });
  makeCertificates(dir);
  writeFileSync(join(dir, 'stunnel-client.conf'), buildStunnelConfig({ side: 'client', dir, localIp: sleepAlt, remoteIp: productpageAlt }));
  writeFileSync(join(dir, 'stunnel-server.conf'), buildStunnelConfig({ side: 'server', dir, localIp: productpageAlt, remoteIp: '127.0.0.1' }));
  writeFileSync(join(dir, 'haproxy.cfg'), buildHaproxyConfig({ bindIp: srcNode.ztunnelIp, targetIp: plain.ip }));

  const tail: string[] = [];
  const check = spawnSync('haproxy', ['-c', '-f', join(dir, 'haproxy.cfg')], { encoding: 'utf8', timeout: 10_000 });
  if (check.status !== 0) throw new Error(`haproxy -c: ${check.stdout.trim()} ${check.stderr.trim()}`);
  const stunnelServer = topo.spawnIn(topo.podNetns('productpage'), 'stunnel4', [join(dir, 'stunnel-server.conf')]);
  collect(stunnelServer, 'stunnel server', tail);
  const stunnelClient = topo.spawnIn(topo.podNetns('sleep'), 'stunnel4', [join(dir, 'stunnel-client.conf')]);
  collect(stunnelClient, 'stunnel client', tail);
  const haproxy = topo.spawnIn(topo.ztunnelNetns(srcNode.name), 'haproxy', ['-db', '-f', join(dir, 'haproxy.cfg')]);
  collect(haproxy, 'haproxy', tail);
  const stderrTail = (): string => tail.join('\n');
  try {
    for (const svc of Object.keys(BENCH_PORTS) as BenchService[]) {
      await waitListening(topo.podNetns('productpage'), STUNNEL_REMOTE_PORTS[svc], 10_000, stunnelServer);
      await waitListening(topo.podNetns('sleep'), STUNNEL_LOCAL_PORTS[svc], 10_000, stunnelClient);
      await waitListening(topo.ztunnelNetns(srcNode.name), HAPROXY_PORTS[svc], 10_000, haproxy);
    }
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${stderrTail()}`);
  }
  const cleanup = (): void => {
    for (const c of [stunnelClient, stunnelServer, haproxy]) if (c.exitCode === null) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  return { sleepAlt, productpageAlt, haproxyIp: srcNode.ztunnelIp, stunnelClient, stunnelServer, haproxy, stderrTail, cleanup };
}
