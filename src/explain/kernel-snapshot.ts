// The kernel state of one network namespace that the capture path depends on, as plain data:
// ipset members, `ip rule`s, routes of every table, the iptables rules with their counters,
// and the links with their addresses. Read with machine formats where they exist
// (`ip -j`, `ipset save`, `iptables-save -c`) through an injected Runner, then parsed by
// pure functions, so recorded output can be replayed in unit tests.
// Must never: change anything (every command here only reads), or throw on odd output — a
// command that fails or prints something unparsable becomes an entry of `errors`, and the
// explanation says what it could not read.

import { detectIptablesBackend, buildIptablesBinary } from '../redirect/iptables.js';
import type { Runner } from '../redirect/plan.js';
import { parseCidr, parseIp, cidrContains } from '../util/ip.js';

/** The commands' output, exactly as printed (what the fixtures hold). */
export interface RawKernelState {
  /** `ipset save` (every set). */
  ipsetSave: string;
  /** `ip -4 -j rule show`. */
  ipRuleJson: string;
  /** `ip -4 -j route show table all`. */
  ipRouteJson: string;
  /** `iptables-save -c` (every table). */
  iptablesSave: string;
  /** `ip -d -j addr show`. */
  ipAddrJson: string;
}

export interface IpRule {
  priority: number;
  /** `fwmark/mask` as printed, e.g. `0x100/0x100`; undefined when the rule has none. */
  fwmark: string | undefined;
  /** Table name or number as text (`main`, `101`); undefined for goto rules. */
  table: string | undefined;
  /** `goto N` target. */
  gotoTarget: number | undefined;
  /** `101: from all fwmark 0x100/0x100 lookup 101`. */
  text: string;
}

export interface IpRoute {
  /** `main` when `ip` prints no table. */
  table: string;
  /** `unicast` unless printed (`local`, `broadcast`, …). */
  type: string;
  /** `default` or a prefix / address as printed. */
  dst: string;
  gateway: string | undefined;
  dev: string | undefined;
  prefsrc: string | undefined;
  scope: string | undefined;
  /** `default via 192.168.127.2 dev istioout table 101`. */
  text: string;
}

export interface SavedRule {
  table: string;
  chain: string;
  packets: number;
  bytes: number;
  /** The rule after `-A <chain> ` (iptables-save's normalised form). */
  spec: string;
  /** The whole line without its counters: `-A <chain> <spec>`. */
  text: string;
}

export interface LinkInfo {
  name: string;
  /** Administratively up. */
  up: boolean;
  /** `veth`, `geneve`, `bridge` …; undefined for plain devices. */
  kind: string | undefined;
  /** `ip/prefix` of each IPv4 address. */
  addresses: string[];
}

export interface KernelSnapshot {
  /** Who this is, e.g. `node ambient-worker` or `ztunnel ambient-worker`. */
  label: string;
  /** set name → members (without `/32`). */
  ipsets: Map<string, Set<string>>;
  rules: IpRule[];
  routes: IpRoute[];
  iptables: SavedRule[];
  links: LinkInfo[];
  /** What could not be read or parsed, one sentence each. */
  errors: string[];
}

/** Runs the read-only commands in the runner's netns; a failed command leaves its text empty and is noted. */
export async function readRawKernelState(run: Runner): Promise<{ raw: RawKernelState; errors: string[] }> {
  const errors: string[] = [];
  const read = async (file: string, args: string[]): Promise<string> => {
    const r = await run({ file, args });
    if (r.code !== 0) {
      errors.push(`\`${[file, ...args].join(' ')}\` failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
      return '';
    }
    return r.stdout;
  };
  const backend = await detectIptablesBackend(run);
  const [ipsetSave, ipRuleJson, ipRouteJson, iptablesSave, ipAddrJson] = await Promise.all([
    read('ipset', ['save']),
    read('ip', ['-4', '-j', 'rule', 'show']),
    read('ip', ['-4', '-j', 'route', 'show', 'table', 'all']),
    read(buildIptablesBinary(backend, '-save'), ['-c']),
    read('ip', ['-d', '-j', 'addr', 'show']),
  ]);
  return { raw: { ipsetSave, ipRuleJson, ipRouteJson, iptablesSave, ipAddrJson }, errors };
}

/** Reads and parses one netns (the runner decides which: see createRunner(netns)). */
export async function readKernelSnapshot(run: Runner, label: string): Promise<KernelSnapshot> {
  const { raw, errors } = await readRawKernelState(run);
  const snap = parseKernelSnapshot(raw, label);
  snap.errors.unshift(...errors);
  return snap;
}

export function parseKernelSnapshot(raw: RawKernelState, label: string): KernelSnapshot {
  const errors: string[] = [];
  return {
    label,
    ipsets: parseIpsetSave(raw.ipsetSave),
    rules: parseJsonArray(raw.ipRuleJson, 'ip -j rule', errors).map(toIpRule),
    routes: parseJsonArray(raw.ipRouteJson, 'ip -j route', errors).map(toIpRoute),
    iptables: parseIptablesSave(raw.iptablesSave),
    links: parseJsonArray(raw.ipAddrJson, 'ip -j addr', errors).map(toLink),
    errors,
  };
}

export function parseIpsetSave(text: string): Map<string, Set<string>> {
  const sets = new Map<string, Set<string>>();
  for (const line of text.split('\n')) {
    const words = line.trim().split(/\s+/);
    if (words[0] === 'create' && words[1] !== undefined) {
      if (!sets.has(words[1])) sets.set(words[1], new Set());
    } else if (words[0] === 'add' && words[1] !== undefined && words[2] !== undefined) {
      let members = sets.get(words[1]);
      if (members === undefined) sets.set(words[1], (members = new Set()));
      members.add(words[2].replace(/\/32$/, ''));
    }
  }
  return sets;
}

type Json = Record<string, unknown>;

function parseJsonArray(text: string, what: string, errors: string[]): Json[] {
  if (text.trim() === '') return [];
  try {
    const v: unknown = JSON.parse(text);
    if (Array.isArray(v)) return v.filter((x): x is Json => typeof x === 'object' && x !== null);
    errors.push(`${what}: not a JSON array`);
  } catch (err) {
    errors.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
  }
  return [];
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined);

function toIpRule(o: Json): IpRule {
  const priority = typeof o.priority === 'number' ? o.priority : -1;
  const fwmark = str(o.fwmark);
  const fwmask = str(o.fwmask);
  // `ip -j rule` prints the mask apart when it is not 0xffffffff.
  const mark = fwmark === undefined ? undefined : fwmask === undefined || fwmark.includes('/') ? fwmark : `${fwmark}/${fwmask}`;
  const table = str(o.table);
  // iproute2 prints `"goto": N` for `goto` rules.
  const gotoTarget = typeof o.goto === 'number' ? o.goto : undefined;
  const parts = [`${priority}:`, 'from', str(o.src) ?? 'all'];
  if (mark !== undefined) parts.push('fwmark', mark);
  if (gotoTarget !== undefined) parts.push('goto', String(gotoTarget));
  else if (table !== undefined) parts.push('lookup', table);
  return { priority, fwmark: mark, table: gotoTarget === undefined ? table : undefined, gotoTarget, text: parts.join(' ') };
}

function toIpRoute(o: Json): IpRoute {
  const table = str(o.table) ?? 'main';
  const type = str(o.type) ?? 'unicast';
  const dst = str(o.dst) ?? 'default';
  const gateway = str(o.gateway);
  const dev = str(o.dev);
  const prefsrc = str(o.prefsrc);
  const scope = str(o.scope);
  const parts: string[] = type === 'unicast' ? [dst] : [type, dst];
  if (gateway !== undefined) parts.push('via', gateway);
  if (dev !== undefined) parts.push('dev', dev);
  if (scope !== undefined && scope !== 'global') parts.push('scope', scope);
  if (prefsrc !== undefined) parts.push('src', prefsrc);
  if (table !== 'main') parts.push('table', table);
  return { table, type, dst, gateway, dev, prefsrc, scope, text: parts.join(' ') };
}

function toLink(o: Json): LinkInfo {
  const flags = Array.isArray(o.flags) ? o.flags : [];
  const info = o.linkinfo as Json | undefined;
  const addrs = Array.isArray(o.addr_info) ? (o.addr_info as Json[]) : [];
  return {
    name: str(o.ifname) ?? '?',
    up: flags.includes('UP'),
    kind: info === undefined ? undefined : str(info.info_kind),
    addresses: addrs.filter((a) => a.family === 'inet').map((a) => `${str(a.local) ?? '?'}/${str(a.prefixlen) ?? '32'}`),
  };
}

/** `iptables-save -c` lines `[pkts:bytes] -A CHAIN spec`, with the table they are under. */
export function parseIptablesSave(text: string): SavedRule[] {
  const rules: SavedRule[] = [];
  let table = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) {
      table = line.slice(1);
      continue;
    }
    const m = /^(?:\[(\d+):(\d+)\]\s+)?-A\s+(\S+)\s*(.*)$/.exec(line);
    if (!m) continue;
    const spec = m[4] ?? '';
    rules.push({
      table,
      chain: m[3]!,
      packets: Number(m[1] ?? 0),
      bytes: Number(m[2] ?? 0),
      spec,
      text: `-A ${m[3]!}${spec === '' ? '' : ' ' + spec}`,
    });
  }
  return rules;
}

/**
 * The route `ip route get` would pick in one table for an IPv4 address: the longest
 * matching unicast/local prefix (metrics and TOS are not modelled).
 */
export function findRoute(snap: KernelSnapshot, table: string, ip: string): IpRoute | undefined {
  const addr = parseIp(ip);
  if (addr === undefined) return undefined;
  let best: IpRoute | undefined;
  let bestLen = -1;
  for (const r of snap.routes) {
    if (r.table !== table || (r.type !== 'unicast' && r.type !== 'local')) continue;
    const cidrText = r.dst === 'default' ? '0.0.0.0/0' : r.dst.includes('/') ? r.dst : `${r.dst}/32`;
    const cidr = parseCidr(cidrText);
    if (cidr === undefined || !cidrContains(cidr, addr)) continue;
    const len = cidr.prefixLength;
    if (len > bestLen) {
      best = r;
      bestLen = len;
    }
  }
  return best;
}

export function findLink(snap: KernelSnapshot, name: string): LinkInfo | undefined {
  return snap.links.find((l) => l.name === name);
}
