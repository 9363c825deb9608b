// `ztunnel-ts explain SRC DST:PORT [--json]`: where does this connection go? Gathers what
// explainPath() needs — the source ztunnel's /config_dump (to turn names into addresses),
// its /debug/route, the destination ztunnel's /debug/authorize, and the kernel state of the
// source node, the source ztunnel netns and (when the path crosses to another node) the
// destination node and its ztunnel netns — then prints every hop, or the JSON form.
// Where things are: on a node the CLI runs in the node's netns (the default: the current
// one) and the ztunnel admin listens on 127.0.0.1:15000 of the ztunnel pod's netns, so the
// admin is asked from inside that netns (`ip netns exec NS curl`); `--src-*` / `--dst-*` name
// them per side, and a NodeNetnsLocator (the demo topology's `--topology PREFIX`, given by
// main.ts, since explain must not import the demo) finds them by node name.
// Exit codes: 0 every hop is in place, 3 a hop is broken (the explanation says which),
// 1 the state could not be gathered (an admin unreachable, a name unknown), 2 usage error.
// Must never: change anything (only reads: admin GETs and the read-only kernel commands), or
// show a decision that did not come from the ztunnels' own /debug endpoints.

import { parseArgs } from 'node:util';
import { PODS_IPSET } from '../redirect/constants.js';
import { createRunner, type Runner } from '../redirect/plan.js';
import type { AuthorizeDecision, RouteDecision } from './decision.js';
import { buildExplanation, type ExplainInput, type Explanation } from './hops.js';
import { readKernelSnapshot, type KernelSnapshot } from './kernel-snapshot.js';
import { formatExplanation, formatExplanationJson } from './render.js';

export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:15000';

export const EXPLAIN_USAGE = `usage: ztunnel-ts explain SRC DST:PORT [--json] [where things are]
  SRC   a pod IP or namespace/name (a workload known to the mesh)
  DST   an IP, a service hostname (or its unique prefix: productpage, productpage.default) or
        namespace/name (a workload, else a service), then :PORT
Prints every hop of the connection in order with the kernel object or ztunnel decision that
decides it; stops at the first broken hop with what is wrong and the command that fixes it.
  --json                    the explanation as JSON
  --src-node-netns NS       netns of the source node            (default: the current netns)
  --src-ztunnel-netns NS    netns of the source node's ztunnel  (default: the current netns)
  --src-admin URL           that ztunnel's admin, reached inside its netns (default ${DEFAULT_ADMIN_URL})
  --dst-node-netns NS, --dst-ztunnel-netns NS, --dst-admin URL
                            the same for the destination node, when the path crosses nodes
  --src-node NAME           the source's node, for a source the mesh does not know (with --topology)
  --topology PREFIX         the demo's namespaced cluster: netns found by node name
A pod's netns without a name can be named with \`ip netns attach NAME PID\`.
Exit: 0 every hop in place, 3 a hop is broken, 1 could not gather the state, 2 usage error.
`;

/** Where one node's state is read. */
export interface SideLocation {
  /** undefined = the current netns. */
  nodeNetns: string | undefined;
  /** Where the ztunnel's kernel state is read and its admin is asked; undefined = current netns. */
  ztunnelNetns: string | undefined;
  admin: string;
}

/** Finds the netns of a node by name (the demo topology). */
export interface NodeNetnsLocator {
  nodes: readonly string[];
  locate(node: string): { nodeNetns: string; ztunnelNetns: string } | undefined;
}

export interface ExplainRequest {
  src: string;
  /** `DST:PORT` as typed. */
  dst: string;
  srcSide: SideLocation;
  /** undefined: not given (a cross-node path then needs a locator). */
  dstSide: SideLocation | undefined;
  locator?: NodeNetnsLocator | undefined;
  srcNode?: string | undefined;
}

/** The I/O explain does, injectable for tests. */
export interface ExplainIo {
  runner(netns: string | undefined): Runner;
  /** GET `url` from inside `netns` (undefined: here). */
  httpGet(netns: string | undefined, url: string): Promise<{ status: number; body: string }>;
}

export interface ExplainResult extends Explanation {
  /** What SRC and DST were resolved to, and the nodes involved. */
  query: { src: string; dst: string; srcIp: string; dstAddr: string; sourceNode: string | undefined; destNode: string | undefined };
}

/** Gathering failed: the message says what and what to do. */
export class ExplainGatherError extends Error {}

const GET_TIMEOUT_S = 5;

async function curlIn(netns: string, url: string): Promise<{ status: number; body: string }> {
  const r = await createRunner(netns)({ file: 'curl', args: ['-sS', '--max-time', String(GET_TIMEOUT_S), '-w', '\n%{http_code}', url] });
  if (r.code !== 0) throw new Error((r.stderr || r.stdout).trim() || `curl exit ${r.code}`);
  const cut = r.stdout.lastIndexOf('\n');
  return { status: Number(r.stdout.slice(cut + 1)), body: r.stdout.slice(0, cut) };
}

export const defaultExplainIo: ExplainIo = {
  runner: (netns) => createRunner(netns),
  async httpGet(netns, url) {
    if (netns !== undefined) return curlIn(netns, url);
    const res = await fetch(url, { signal: AbortSignal.timeout(GET_TIMEOUT_S * 1000) });
    return { status: res.status, body: await res.text() };
  },
};

// ---------------------------------------------------------------- admin

async function getJson<T>(io: ExplainIo, side: SideLocation, path: string): Promise<T> {
  const url = `${side.admin.replace(/\/+$/, '')}${path}`;
  const where = side.ztunnelNetns === undefined ? '' : ` (inside netns ${side.ztunnelNetns})`;
  let r: { status: number; body: string };
  try {
    r = await io.httpGet(side.ztunnelNetns, url);
  } catch (err) {
    throw new ExplainGatherError(`cannot reach the ztunnel admin at ${url}${where}: ${err instanceof Error ? err.message : String(err)}; is ztunnel running there? (say where with --src-ztunnel-netns / --src-admin, or --dst-…)`);
  }
  if (r.status !== 200) throw new ExplainGatherError(`${url}${where} answered ${r.status}: ${r.body.trim()}`);
  try {
    return JSON.parse(r.body) as T;
  } catch {
    throw new ExplainGatherError(`${url}${where} did not answer JSON (is it a ztunnel-ts admin?)`);
  }
}

// ---------------------------------------------------------------- names

interface DumpWorkload {
  name: string;
  namespace: string;
  workloadIps: string[];
  node: string;
}
interface DumpService {
  name: string;
  namespace: string;
  hostname: string;
  vips: { network: string; address: string }[];
}
export interface ConfigDumpNames {
  workloads?: DumpWorkload[];
  services?: DumpService[];
}

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

function isIp(text: string): boolean {
  return IPV4.test(text) || (text.includes(':') && /^[0-9a-f:.]+$/i.test(text));
}

/** SRC: an IP, or `namespace/name` of a workload. */
export function resolveSource(text: string, dump: ConfigDumpNames): { ip: string; workload: DumpWorkload | undefined } {
  const workloads = dump.workloads ?? [];
  if (isIp(text)) return { ip: text, workload: workloads.find((w) => w.workloadIps.includes(text)) };
  const m = /^([^/\s]+)\/([^/\s]+)$/.exec(text);
  if (!m) throw new ExplainGatherError(`SRC ${JSON.stringify(text)} is neither an IP nor namespace/name`);
  const w = workloads.find((x) => x.namespace === m[1] && x.name === m[2]);
  if (w === undefined) throw new ExplainGatherError(`SRC ${text}: no workload of that name in the mesh (${describeNames(workloads.map((x) => `${x.namespace}/${x.name}`))})`);
  const ip = w.workloadIps[0];
  if (ip === undefined) throw new ExplainGatherError(`SRC ${text}: the workload has no IP`);
  return { ip, workload: w };
}

/** DST:PORT: an IP, a service hostname (or its unique prefix) or namespace/name (workload, else service). */
export function resolveDestination(text: string, dump: ConfigDumpNames): { ip: string; port: number; what: string } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^(.+):(\d+)$/.exec(text);
  const port = Number(m?.[2]);
  if (!m || !Number.isInteger(port) || port < 1 || port > 65535) throw new ExplainGatherError(`DST ${JSON.stringify(text)} is not HOST:PORT (port 1-65535)`);
  const host = m[1]!;
  if (isIp(host)) return { ip: host, port, what: host };
  const workloads = dump.workloads ?? [];
  const services = dump.services ?? [];
  const vipOf = (s: DumpService): string => {
    const ip = s.vips[0]?.address;
    if (ip === undefined) throw new ExplainGatherError(`DST ${host}: service ${s.namespace}/${s.name} has no VIP`);
    return ip;
  };
  const nn = /^([^/\s]+)\/([^/\s]+)$/.exec(host);
  if (nn) {
    const w = workloads.find((x) => x.namespace === nn[1] && x.name === nn[2]);
    if (w?.workloadIps[0] !== undefined) return { ip: w.workloadIps[0], port, what: `workload ${host}` };
    const s = services.find((x) => x.namespace === nn[1] && x.name === nn[2]);
    if (s !== undefined) return { ip: vipOf(s), port, what: `service ${s.hostname}` };
    throw new ExplainGatherError(`DST ${host}: no workload or service of that name in the mesh`);
  }
  const exact = services.find((s) => s.hostname === host);
  const matches = exact !== undefined ? [exact] : services.filter((s) => s.hostname.startsWith(`${host}.`));
  if (matches.length === 1) return { ip: vipOf(matches[0]!), port, what: `service ${matches[0]!.hostname}` };
  if (matches.length > 1) throw new ExplainGatherError(`DST ${host} is ambiguous: ${matches.map((s) => s.hostname).join(', ')}`);
  throw new ExplainGatherError(`DST ${host}: no service with that hostname (${describeNames(services.map((s) => s.hostname))})`);
}

function describeNames(names: string[]): string {
  if (names.length === 0) return 'the mesh has none';
  return `known: ${names.slice(0, 8).join(', ')}${names.length > 8 ? ', …' : ''}`;
}

// ---------------------------------------------------------------- gathering

function locateSide(req: ExplainRequest, node: string): SideLocation {
  const found = req.locator?.locate(node);
  if (found === undefined) throw new ExplainGatherError(`no netns known for node ${node}`);
  return { ...found, admin: DEFAULT_ADMIN_URL };
}

async function snapshot(io: ExplainIo, netns: string | undefined, label: string): Promise<KernelSnapshot> {
  return readKernelSnapshot(io.runner(netns), label);
}

/** Everything explainPath() needs, read live; then the explanation. */
export async function gatherExplanation(req: ExplainRequest, io: ExplainIo = defaultExplainIo): Promise<ExplainResult> {
  // Names first, from the source side's ztunnel (with a locator: any node's; every ztunnel has the whole mesh).
  const firstNode = req.srcNode ?? req.locator?.nodes[0];
  const askSide = req.locator !== undefined && firstNode !== undefined ? locateSide(req, firstNode) : req.srcSide;
  const dump = await getJson<ConfigDumpNames>(io, askSide, '/config_dump');
  const src = resolveSource(req.src, dump);
  const dst = resolveDestination(req.dst, dump);

  let srcSide = req.srcSide;
  if (req.locator !== undefined) {
    const node = src.workload?.node ?? req.srcNode;
    if (node === undefined) throw new ExplainGatherError(`SRC ${src.ip} is not a workload known to the mesh: say its node with --src-node NAME`);
    srcSide = locateSide(req, node);
  }
  const q = (s: string): string => encodeURIComponent(s);
  const dstText = dst.ip.includes(':') ? `[${dst.ip}]:${dst.port}` : `${dst.ip}:${dst.port}`;
  const [route, sourceNode, sourceZtunnel] = await Promise.all([
    getJson<RouteDecision>(io, srcSide, `/debug/route?src=${q(src.ip)}&dst=${q(dstText)}`),
    snapshot(io, srcSide.nodeNetns, `node ${src.workload?.node ?? req.srcNode ?? srcSide.nodeNetns ?? '(this netns)'}`),
    snapshot(io, srcSide.ztunnelNetns, `ztunnel netns ${src.workload?.node ?? req.srcNode ?? srcSide.ztunnelNetns ?? '(this netns)'}`),
  ]);
  const srcNodeName = route.node ?? src.workload?.node;
  sourceNode.label = `node ${srcNodeName ?? srcSide.nodeNetns ?? '(this netns)'}`;
  sourceZtunnel.label = `ztunnel netns ${srcNodeName ?? srcSide.ztunnelNetns ?? '(this netns)'}`;

  const input: ExplainInput = { src: src.ip, dst: { ip: dst.ip, port: dst.port }, route, authorization: undefined, sourceNode, sourceZtunnel, destNode: undefined, destZtunnel: undefined };
  let destNodeName: string | undefined;
  if (route.kind === 'hbone' && route.target !== undefined) {
    destNodeName = route.destination?.node;
    const captured = isCapturedSource(route, sourceNode, src.ip);
    const sameSide = destNodeName === undefined || destNodeName === srcNodeName;
    let dstSide: SideLocation;
    if (sameSide) dstSide = srcSide;
    else if (req.locator !== undefined) dstSide = locateSide(req, destNodeName!);
    else if (req.dstSide !== undefined) dstSide = req.dstSide;
    else {
      throw new ExplainGatherError(
        `${route.destination?.name ?? dst.what} is on node ${destNodeName!}, not ${srcNodeName ?? 'this one'}: say where that node's state is read with --dst-node-netns / --dst-ztunnel-netns / --dst-admin (e.g. a port-forward to its ztunnel's 15000), or run explain on that node for its half`,
      );
    }
    const identity = captured && route.source !== undefined ? `&identity=${q(route.source.identity)}` : '';
    const authorizeAt = `/debug/authorize?src=${q(src.ip)}&dst=${q(route.target)}${identity}`;
    const [authorization, destNode, destZtunnel] = await Promise.all([
      getJson<AuthorizeDecision>(io, dstSide, authorizeAt),
      sameSide ? Promise.resolve(sourceNode) : snapshot(io, dstSide.nodeNetns, `node ${destNodeName!}`),
      sameSide ? Promise.resolve(sourceZtunnel) : snapshot(io, dstSide.ztunnelNetns, `ztunnel netns ${destNodeName!}`),
    ]);
    input.authorization = authorization;
    input.destNode = destNode;
    input.destZtunnel = destZtunnel;
  }
  const explanation = buildExplanation(input);
  return {
    query: { src: req.src, dst: req.dst, srcIp: src.ip, dstAddr: dstText, sourceNode: srcNodeName, destNode: destNodeName },
    ...explanation,
  };
}

/** Same rule as the hop logic: the mesh says HBONE, or the node's ipset captures it anyway. */
function isCapturedSource(route: RouteDecision, node: KernelSnapshot, src: string): boolean {
  return route.source?.protocol === 'HBONE' || node.ipsets.get(PODS_IPSET)?.has(src) === true;
}

export function formatExplainResult(r: ExplainResult): string {
  const nodes = r.query.destNode !== undefined && r.query.destNode !== r.query.sourceNode ? `nodes ${r.query.sourceNode ?? '?'} → ${r.query.destNode}` : `node ${r.query.sourceNode ?? '?'}`;
  const head = `explain ${r.query.src} → ${r.query.dst}  (${r.query.srcIp} → ${r.query.dstAddr}, ${nodes})`;
  return `${head}\n${formatExplanation(r)}`;
}

// ---------------------------------------------------------------- the command

export interface ExplainCliDeps {
  /** `--topology PREFIX` → the locator (main.ts gives the demo topology's). */
  topology?: (prefix: string) => NodeNetnsLocator;
  io?: ExplainIo;
  out?: (s: string) => void;
  err?: (s: string) => void;
}

export async function runExplainCli(argv: string[], deps: ExplainCliDeps = {}): Promise<number> {
  const out = deps.out ?? ((s: string) => void process.stdout.write(s));
  const err = deps.err ?? ((s: string) => void process.stderr.write(s));
  let parsed: ReturnType<typeof parseExplainArgs>;
  try {
    parsed = parseExplainArgs(argv);
  } catch (e) {
    err(`explain: ${(e as Error).message}\n${EXPLAIN_USAGE}`);
    return 2;
  }
  if (parsed === 'help') {
    out(EXPLAIN_USAGE);
    return 0;
  }
  let locator: NodeNetnsLocator | undefined;
  if (parsed.topology !== undefined) {
    if (deps.topology === undefined) {
      err('explain: --topology is not available here\n');
      return 2;
    }
    try {
      locator = deps.topology(parsed.topology);
    } catch (e) {
      err(`explain: --topology ${parsed.topology}: ${(e as Error).message}\n`);
      return 2;
    }
  }
  let result: ExplainResult;
  try {
    result = await gatherExplanation({ ...parsed.request, locator }, deps.io ?? defaultExplainIo);
  } catch (e) {
    if (e instanceof ExplainGatherError) {
      err(`explain: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
  out(parsed.json ? formatExplanationJson(result) : formatExplainResult(result));
  return result.ok ? 0 : 3;
}

/** argv → request; throws with the message of a usage error; 'help' for --help. */
export function parseExplainArgs(argv: string[]): { request: Omit<ExplainRequest, 'locator'>; json: boolean; topology: string | undefined } | 'help' {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      'src-node-netns': { type: 'string' },
      'src-ztunnel-netns': { type: 'string' },
      'src-admin': { type: 'string' },
      'dst-node-netns': { type: 'string' },
      'dst-ztunnel-netns': { type: 'string' },
      'dst-admin': { type: 'string' },
      'src-node': { type: 'string' },
      topology: { type: 'string' },
    },
  });
  if (values.help) return 'help';
  if (positionals.length !== 2) throw new Error(`expected SRC and DST:PORT, got ${positionals.length} argument(s)`);
  for (const key of ['src-admin', 'dst-admin'] as const) {
    const v = values[key];
    if (v !== undefined && !/^https?:\/\/[^/\s]+/.test(v)) throw new Error(`--${key}: ${JSON.stringify(v)} is not an http(s) URL`);
  }
  for (const key of ['src-node-netns', 'src-ztunnel-netns', 'dst-node-netns', 'dst-ztunnel-netns'] as const) {
    const v = values[key];
    if (v !== undefined && !/^[A-Za-z0-9_.-]+$/.test(v)) throw new Error(`--${key}: ${JSON.stringify(v)} is not a netns name`);
  }
  const dstGiven = values['dst-node-netns'] !== undefined || values['dst-ztunnel-netns'] !== undefined || values['dst-admin'] !== undefined;
  if (values.topology !== undefined && (dstGiven || values['src-node-netns'] !== undefined || values['src-ztunnel-netns'] !== undefined || values['src-admin'] !== undefined)) {
    throw new Error('--topology finds every netns itself; do not combine it with --src-*/--dst-* locations');
  }
  return {
    request: {
      src: positionals[0]!,
      dst: positionals[1]!,
      srcSide: { nodeNetns: values['src-node-netns'], ztunnelNetns: values['src-ztunnel-netns'], admin: values['src-admin'] ?? DEFAULT_ADMIN_URL },
      dstSide: dstGiven ? { nodeNetns: values['dst-node-netns'], ztunnelNetns: values['dst-ztunnel-netns'], admin: values['dst-admin'] ?? DEFAULT_ADMIN_URL } : undefined,
      srcNode: values['src-node'],
    },
    json: values.json === true,
    topology: values.topology,
  };
}
