// The local config file (LOCAL_XDS_PATH / LOCAL_XDS, upstream's local config schema: https://github.com/istio/ztunnel/blob/master/examples/localhost.yaml): YAML text in, validated
// and deep-frozen LocalConfig records out. Everything is checked here, once, so the state
// layer never sees a half-valid record.
// Must never: accept an unknown key (upstream uses deny-unknown-fields), guess at a wrong
// type, or return a partial result. Every error names the source, the key path, the problem
// and, where the YAML gives it, the line.
// Deliberate differences from upstream's loader: workload trustDomain defaults to
// cluster.local and serviceAccount to default (as xDS does), uid is derived when omitted,
// and a workload's `services` map is kept on the workload as well as turned into endpoints.

import { readFileSync } from 'node:fs';
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import { ZtError } from '../errors.js';
import { canonicalCidr, canonicalIp } from '../util/ip.js';
import { deepFreeze } from './freeze.js';
import type {
  Authorization,
  Endpoint,
  GatewayAddress,
  HealthStatus,
  LocalConfig,
  Match,
  PortMap,
  Service,
  ServiceAccountMatch,
  StringMatch,
  Workload,
} from './types.js';

export const EMPTY_LOCAL_CONFIG: LocalConfig = deepFreeze({ workloads: [], services: [], policies: [] });

const DEFAULT_TRUST_DOMAIN = 'cluster.local';
const DEFAULT_SERVICE_ACCOUNT = 'default';
const DEFAULT_UID_CLUSTER = 'cluster1';
const DEFAULT_HBONE_MTLS_PORT = 15008;
const MAX_U32 = 2 ** 32 - 1;
// Aliases are expanded while walking; this bounds "billion laughs" documents. (yaml's own
// maxAliasCount guards toJS() only, which this loader never calls: the walk below is the guard.)
const MAX_ALIAS_NODES = 100_000;
// A real config nests about ten levels (policies → rules → clauses → matches → lists). A bound
// far above that keeps the recursive walk and validation below off the end of the stack.
const MAX_DEPTH = 100;

// ------------------------------------------------------------------ YAML → plain tree

/** A YAML node with its line, so that errors found after parsing can still point at it. */
type YNode = YMap | YSeq | YScalar;
interface YEntry {
  key: string;
  keyLine: number;
  value: YNode;
}
interface YMap {
  kind: 'map';
  line: number;
  entries: YEntry[];
}
interface YSeq {
  kind: 'seq';
  line: number;
  items: YNode[];
}
interface YScalar {
  kind: 'scalar';
  line: number;
  value: unknown;
  tag: string | undefined;
}

class TreeBuilder {
  private expanded = 0;
  private aliasDepth = 0;
  private depth = 0;
  private readonly open = new Set<unknown>();
  // yaml's Alias.resolve() searches the whole document on every call; a document that
  // expands one alias node many times (an alias of a list of aliases) must search once per node.
  private readonly targets = new Map<unknown, unknown>();
  constructor(
    private readonly doc: Document,
    private readonly lines: LineCounter,
    private readonly fail: (line: number, problem: string) => never,
  ) {}

  build(node: unknown, fallbackLine: number): YNode {
    if (this.aliasDepth > 0 && ++this.expanded > MAX_ALIAS_NODES) {
      this.fail(fallbackLine, `aliases expand to more than ${MAX_ALIAS_NODES} nodes (an alias bomb?)`);
    }
    if (node === null || node === undefined) return { kind: 'scalar', line: fallbackLine, value: null, tag: undefined };
    if (isAlias(node)) {
      let target = this.targets.get(node);
      if (target === undefined) {
        target = node.resolve(this.doc);
        this.targets.set(node, target);
      }
      const line = this.lineOf(node, fallbackLine);
      if (this.open.has(target)) this.fail(line, `alias '*${node.source}' refers to itself`);
      this.aliasDepth++;
      try {
        return this.build(target, line);
      } finally {
        this.aliasDepth--;
      }
    }
    if (this.depth >= MAX_DEPTH) this.fail(this.lineOf(node, fallbackLine), `nesting is deeper than ${MAX_DEPTH} levels`);
    this.open.add(node);
    this.depth++;
    try {
      return this.buildNode(node, fallbackLine);
    } finally {
      this.depth--;
      this.open.delete(node);
    }
  }

  private buildNode(node: unknown, fallbackLine: number): YNode {
    const line = this.lineOf(node, fallbackLine);
    if (isMap(node)) {
      const entries: YEntry[] = [];
      for (const pair of node.items) {
        const rawKey = isAlias(pair.key) ? pair.key.resolve(this.doc) : pair.key;
        const keyLine = this.lineOf(rawKey, line);
        if (!isScalar(rawKey) || rawKey.value === null || typeof rawKey.value === 'object') {
          this.fail(keyLine, 'map keys must be plain strings or numbers');
        }
        entries.push({ key: String(rawKey.value), keyLine, value: this.build(pair.value, keyLine) });
      }
      return { kind: 'map', line, entries };
    }
    if (isSeq(node)) return { kind: 'seq', line, items: node.items.map((item) => this.build(item, line)) };
    if (isScalar(node)) return { kind: 'scalar', line, value: node.value, tag: node.tag };
    return this.fail(line, 'unsupported YAML node');
  }

  private lineOf(node: unknown, fallback: number): number {
    const range = (node as { range?: [number, number, number] | null } | null)?.range;
    return range ? this.lines.linePos(range[0]).line : fallback;
  }
}

// ------------------------------------------------------------------ error helpers

function describe(node: YNode): string {
  if (node.kind === 'map') return 'a map';
  if (node.kind === 'seq') return 'a list';
  const v = node.value;
  if (v === null) return 'null';
  if (typeof v === 'string') return `string '${v}'`;
  return `${typeof v} ${String(v)}`;
}

function childPath(path: string, key: string): string {
  if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) return path === '' ? key : `${path}.${key}`;
  return `${path}[${JSON.stringify(key)}]`;
}

function indexPath(path: string, i: number | string): string {
  return `${path}[${i}]`;
}

function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0] as number;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j] as number;
      prev[j] = Math.min(up + 1, (prev[j - 1] as number) + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length] as number;
}

function suggest(key: string, allowed: readonly string[]): string {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of allowed) {
    const d = editDistance(key.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  if (best !== undefined && bestDistance <= Math.max(2, Math.floor(best.length / 4))) return ` (did you mean '${best}'?)`;
  return ` (allowed: ${allowed.join(', ')})`;
}

const PORT_TEXT = /^\d{1,5}$/;

// ------------------------------------------------------------------ the parser

/** The keys of one YAML map, checked against the allowed set before any value is read. */
class Fields {
  private readonly byKey = new Map<string, YEntry>();

  constructor(
    private readonly p: LocalConfigParser,
    readonly node: YMap,
    readonly path: string,
    allowed: readonly string[],
  ) {
    for (const entry of node.entries) {
      if (!allowed.includes(entry.key)) {
        p.fail(path, entry.keyLine, `unknown key '${entry.key}'${suggest(entry.key, allowed)}`);
      }
      this.byKey.set(entry.key, entry);
    }
  }

  at(key: string): string {
    return childPath(this.path, key);
  }

  /** The value, with an explicit null counted as absent. */
  find(key: string): YNode | undefined {
    const v = this.byKey.get(key)?.value;
    if (v === undefined || (v.kind === 'scalar' && v.value === null && v.tag === undefined)) return undefined;
    return v;
  }

  get(key: string): YNode {
    const v = this.find(key);
    if (v === undefined) this.p.fail(this.path, this.node.line, `missing required key '${key}'`);
    return v;
  }

  string(key: string, fallback: string): string {
    const v = this.find(key);
    return v === undefined ? fallback : this.p.string(v, this.at(key));
  }

  requiredString(key: string): string {
    return this.p.string(this.get(key), this.at(key));
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.find(key);
    return v === undefined ? fallback : this.p.bool(v, this.at(key));
  }

  choice<T extends string>(key: string, allowed: readonly T[], fallback: T): T;
  choice<T extends string>(key: string, allowed: readonly T[], fallback: undefined): T | undefined;
  choice<T extends string>(key: string, allowed: readonly T[], fallback: T | undefined): T | undefined {
    const v = this.find(key);
    return v === undefined ? fallback : this.p.choice(v, this.at(key), allowed);
  }

  requiredChoice<T extends string>(key: string, allowed: readonly T[]): T {
    return this.p.choice(this.get(key), this.at(key), allowed);
  }

  list<T>(key: string, each: (node: YNode, path: string) => T): T[] {
    const v = this.find(key);
    return v === undefined ? [] : this.p.list(v, this.at(key), each);
  }

  requiredList<T>(key: string, each: (node: YNode, path: string) => T): T[] {
    return this.p.list(this.get(key), this.at(key), each);
  }

  optional<T>(key: string, read: (node: YNode, path: string) => T): T | undefined {
    const v = this.find(key);
    return v === undefined ? undefined : read(v, this.at(key));
  }
}

interface ServiceDraft {
  service: Omit<Service, 'endpoints'>;
  endpoints: Map<string, Endpoint>;
}

class LocalConfigParser {
  constructor(private readonly source: string) {}

  fail(path: string, line: number | undefined, problem: string): never {
    const where = path === '' ? '' : `${path}: `;
    const at = line === undefined ? '' : ` (line ${line})`;
    throw new ZtError('ZT_ERR_CONFIG_INVALID', `${this.source}: ${where}${problem}${at}`);
  }

  // ---- primitives

  map(node: YNode, path: string, allowed: readonly string[]): Fields {
    if (node.kind !== 'map') this.fail(path, node.line, `expected a map, got ${describe(node)}`);
    return new Fields(this, node, path, allowed);
  }

  /** The entries of a map whose keys are data (uids, service keys), not field names. */
  entries(node: YNode, path: string, what: string): YEntry[] {
    if (node.kind !== 'map') return this.fail(path, node.line, `expected ${what}, got ${describe(node)}`);
    return node.entries;
  }

  /** Custom tags (`!Name`) only mean something in string matches; elsewhere they are a mistake. */
  private refuseTag(node: YNode, path: string): void {
    if (node.kind === 'scalar' && node.tag !== undefined && node.tag.startsWith('!')) {
      this.fail(path, node.line, `unexpected tag '${node.tag}' (tags are only used in string matches such as !Exact)`);
    }
  }

  string(node: YNode, path: string): string {
    this.refuseTag(node, path);
    if (node.kind !== 'scalar' || typeof node.value !== 'string') {
      const hint = node.kind === 'scalar' && node.value !== null ? ' (quote it if it is meant as text)' : '';
      return this.fail(path, node.line, `expected a string, got ${describe(node)}${hint}`);
    }
    return node.value;
  }

  bool(node: YNode, path: string): boolean {
    if (node.kind !== 'scalar' || typeof node.value !== 'boolean') {
      return this.fail(path, node.line, `expected true or false, got ${describe(node)}`);
    }
    return node.value;
  }

  int(node: YNode, path: string, min: number, max: number, what = 'an integer'): number {
    const v = node.kind === 'scalar' ? node.value : undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      return this.fail(path, node.line, `expected ${what} (${min}-${max}), got ${describe(node)}`);
    }
    return v;
  }

  /** A port given as a YAML integer or a numeric string. */
  port(node: YNode, path: string, min: number, what = 'a port number'): number {
    this.refuseTag(node, path);
    if (node.kind === 'scalar' && typeof node.value === 'string' && PORT_TEXT.test(node.value)) {
      const n = Number(node.value);
      if (n >= min && n <= 65535) return n;
    }
    return this.int(node, path, min, 65535, what);
  }

  choice<T extends string>(node: YNode, path: string, allowed: readonly T[]): T {
    this.refuseTag(node, path);
    const v = node.kind === 'scalar' ? node.value : undefined;
    const hit = allowed.find((a) => a === v);
    if (hit === undefined) this.fail(path, node.line, `expected one of ${allowed.join(', ')}, got ${describe(node)}`);
    return hit;
  }

  list<T>(node: YNode, path: string, each: (node: YNode, path: string) => T): T[] {
    if (node.kind !== 'seq') return this.fail(path, node.line, `expected a list, got ${describe(node)}`);
    return node.items.map((item, i) => each(item, indexPath(path, i)));
  }

  ip(node: YNode, path: string): string {
    const text = this.string(node, path);
    const ip = canonicalIp(text);
    if (ip === undefined) this.fail(path, node.line, `'${text}' is not an IP address`);
    return ip;
  }

  cidr(node: YNode, path: string): string {
    const text = this.string(node, path);
    const cidr = canonicalCidr(text);
    if (cidr === undefined) this.fail(path, node.line, `'${text}' is not a CIDR (such as 10.0.0.0/8) or an IP address`);
    return cidr;
  }

  /** `namespace/name`-shaped text with both parts non-empty. */
  slashPair(node: YNode, path: string, shape: string): [string, string] {
    const text = this.string(node, path);
    const slash = text.indexOf('/');
    if (slash <= 0 || slash === text.length - 1 || text.indexOf('/', slash + 1) !== -1) {
      this.fail(path, node.line, `'${text}' is not of the form ${shape}`);
    }
    return [text.slice(0, slash), text.slice(slash + 1)];
  }

  /** servicePort → targetPort; keys are YAML ints or numeric strings (1-65535), targets 0-65535. */
  portMap(node: YNode, path: string): PortMap {
    if (node.kind === 'scalar' && node.value === null) return new Map();
    if (node.kind !== 'map') return this.fail(path, node.line, `expected a map of servicePort: targetPort, got ${describe(node)}`);
    const out = new Map<number, number>();
    for (const entry of node.entries) {
      const n = PORT_TEXT.test(entry.key) ? Number(entry.key) : NaN;
      if (!(n >= 1 && n <= 65535)) this.fail(path, entry.keyLine, `key '${entry.key}' is not a port number (1-65535)`);
      if (out.has(n)) this.fail(path, entry.keyLine, `port ${n} appears twice`);
      out.set(n, this.port(entry.value, indexPath(path, n), 0, 'a target port number'));
    }
    return out;
  }

  // ---- shared records

  gatewayAddress(node: YNode, path: string): GatewayAddress {
    const f = this.map(node, path, ['destination', 'hboneMtlsPort']);
    const destNode = f.get('destination');
    const [left, right] = this.slashPairAllowEmptyNetwork(destNode, f.at('destination'));
    const ip = canonicalIp(right);
    // "network/IP" is tried first, as upstream does; anything else must be namespace/hostname.
    if (ip === undefined && left === '') {
      this.fail(f.at('destination'), destNode.line, `'${left}/${right}' is neither network/IP nor namespace/hostname`);
    }
    const hboneNode = f.find('hboneMtlsPort');
    return {
      destination: ip === undefined ? `${left}/${right}` : `${left}/${ip}`,
      hboneMtlsPort: hboneNode === undefined ? DEFAULT_HBONE_MTLS_PORT : this.port(hboneNode, f.at('hboneMtlsPort'), 1),
    };
  }

  private slashPairAllowEmptyNetwork(node: YNode, path: string): [string, string] {
    const text = this.string(node, path);
    const slash = text.indexOf('/');
    if (slash === -1 || slash === text.length - 1 || text.indexOf('/', slash + 1) !== -1) {
      this.fail(path, node.line, `'${text}' is not of the form network/IP or namespace/hostname`);
    }
    return [text.slice(0, slash), text.slice(slash + 1)];
  }

  spiffeUri(node: YNode, path: string): string {
    const text = this.string(node, path);
    // Istio identities only: spiffe://<trust domain>/ns/<namespace>/sa/<service account>
    if (!/^spiffe:\/\/[^/\s]+\/ns\/[^/\s]+\/sa\/[^/\s]+$/.test(text)) {
      this.fail(path, node.line, `'${text}' is not a SPIFFE URI of the form spiffe://<trust domain>/ns/<namespace>/sa/<service account>`);
    }
    return text;
  }

  // ---- workloads

  workload(node: YNode, path: string): Workload {
    const f = this.map(node, path, WORKLOAD_KEYS);
    const namespace = f.requiredString('namespace');
    const name = f.string('name', '');
    const clusterId = f.string('clusterId', '');
    let uid = f.string('uid', '');
    if (uid === '') {
      if (name === '') this.fail(path, node.line, "missing required key 'name' (needed to derive 'uid' when 'uid' is omitted)");
      uid = `${clusterId === '' ? DEFAULT_UID_CLUSTER : clusterId}//v1/Pod/${namespace}/${name}`;
    }
    const services = new Map<string, PortMap>();
    const servicesNode = f.find('services');
    if (servicesNode !== undefined) {
      const servicesPath = f.at('services');
      for (const entry of this.entries(servicesNode, servicesPath, 'a map of namespace/hostname: {servicePort: targetPort}')) {
        const slash = entry.key.indexOf('/');
        if (slash <= 0 || slash === entry.key.length - 1 || entry.key.indexOf('/', slash + 1) !== -1) {
          this.fail(servicesPath, entry.keyLine, `key '${entry.key}' is not of the form namespace/hostname`);
        }
        services.set(entry.key, this.portMap(entry.value, childPath(servicesPath, entry.key)));
      }
    }
    return {
      uid,
      name,
      namespace,
      serviceAccount: f.string('serviceAccount', '') || DEFAULT_SERVICE_ACCOUNT,
      trustDomain: f.string('trustDomain', '') || DEFAULT_TRUST_DOMAIN,
      workloadIps: f.requiredList('workloadIps', (n, p) => this.ip(n, p)),
      hostname: f.string('hostname', ''),
      network: f.string('network', ''),
      protocol: f.choice('protocol', ['TCP', 'HBONE'] as const, 'TCP'),
      networkMode: f.choice('networkMode', ['Standard', 'HostNetwork'] as const, 'Standard'),
      node: f.string('node', ''),
      waypoint: f.optional('waypoint', (n, p) => this.gatewayAddress(n, p)),
      networkGateway: f.optional('networkGateway', (n, p) => this.gatewayAddress(n, p)),
      nativeTunnel: f.bool('nativeTunnel', false),
      applicationTunnel: f.optional('applicationTunnel', (n, p) => {
        const af = this.map(n, p, ['protocol', 'port']);
        return {
          protocol: af.choice('protocol', ['NONE', 'PROXY'] as const, 'NONE'),
          port: af.optional('port', (pn, pp) => this.port(pn, pp, 1)),
        };
      }),
      authorizationPolicies: f.list('authorizationPolicies', (n, p) => this.slashPair(n, p, 'namespace/name').join('/')),
      status: f.choice('status', HEALTH, 'Healthy'),
      clusterId,
      locality: f.optional('locality', (n, p) => {
        const lf = this.map(n, p, ['region', 'zone', 'subzone']);
        return { region: lf.requiredString('region'), zone: lf.requiredString('zone'), subzone: lf.requiredString('subzone') };
      }),
      workloadName: f.string('workloadName', ''),
      workloadType: f.string('workloadType', ''),
      canonicalName: f.string('canonicalName', ''),
      canonicalRevision: f.string('canonicalRevision', ''),
      capacity: f.optional('capacity', (n, p) => this.int(n, p, 0, MAX_U32)) ?? 1,
      services,
    };
  }

  // ---- services

  service(node: YNode, path: string): ServiceDraft {
    const f = this.map(node, path, SERVICE_KEYS);
    if (f.find('weightedWaypoints') !== undefined) {
      this.fail(f.at('weightedWaypoints'), f.get('weightedWaypoints').line, 'is not supported by ztunnel-ts (use waypoint)');
    }
    const endpoints = new Map<string, Endpoint>();
    const endpointsNode = f.find('endpoints');
    if (endpointsNode !== undefined) {
      const endpointsPath = f.at('endpoints');
      for (const entry of this.entries(endpointsNode, endpointsPath, 'a map of workload uid: endpoint')) {
        const ep = this.map(entry.value, childPath(endpointsPath, entry.key), ['workloadUid', 'port', 'status']);
        const workloadUid = ep.string('workloadUid', entry.key);
        if (workloadUid !== entry.key) {
          this.fail(ep.at('workloadUid'), entry.keyLine, `'${workloadUid}' differs from its key '${entry.key}'`);
        }
        const portNode = ep.find('port');
        endpoints.set(entry.key, {
          workloadUid,
          port: portNode === undefined ? new Map() : this.portMap(portNode, ep.at('port')),
          status: ep.choice('status', HEALTH, 'Healthy'),
        });
      }
    }
    const service: Omit<Service, 'endpoints'> = {
      name: f.requiredString('name'),
      namespace: f.requiredString('namespace'),
      hostname: f.requiredString('hostname'),
      vips: f.requiredList('vips', (n, p) => this.vip(n, p)),
      cidrVips: f.list('cidrVips', (n, p) => {
        const cf = this.map(n, p, ['network', 'cidr']);
        return { network: cf.string('network', ''), cidr: this.cidr(cf.get('cidr'), cf.at('cidr')) };
      }),
      ports: this.portMap(f.get('ports'), f.at('ports')),
      subjectAltNames: f.list('subjectAltNames', (n, p) => this.spiffeUri(n, p)),
      waypoint: f.optional('waypoint', (n, p) => this.gatewayAddress(n, p)),
      loadBalancer: f.optional('loadBalancer', (n, p) => {
        const lf = this.map(n, p, ['routingPreferences', 'mode', 'healthPolicy']);
        return {
          routingPreferences: lf.list('routingPreferences', (rn, rp) => this.choice(rn, rp, ROUTING_PREFERENCES)),
          mode: lf.choice('mode', ['Standard', 'Strict', 'Failover', 'Passthrough'] as const, 'Standard'),
          healthPolicy: lf.choice('healthPolicy', ['OnlyHealthy', 'AllowAll'] as const, 'OnlyHealthy'),
        };
      }),
      ipFamilies: f.choice('ipFamilies', ['Dual', 'IPv4', 'IPv6'] as const, undefined),
      canonical: f.bool('canonical', false),
      visibility: f.choice('visibility', ['Public', 'Namespace'] as const, 'Public'),
    };
    return { service, endpoints };
  }

  /** "network/IP", or a bare IP meaning network "". */
  vip(node: YNode, path: string): { network: string; address: string } {
    const text = this.string(node, path);
    const slash = text.indexOf('/');
    const network = slash === -1 ? '' : text.slice(0, slash);
    const address = canonicalIp(slash === -1 ? text : text.slice(slash + 1));
    if (address === undefined) this.fail(path, node.line, `'${text}' is not of the form network/IP (such as "/10.96.0.1") or an IP address`);
    return { network, address };
  }

  // ---- policies

  policy(node: YNode, path: string): Authorization {
    const f = this.map(node, path, ['name', 'namespace', 'scope', 'action', 'rules', 'dryRun']);
    return {
      name: f.requiredString('name'),
      namespace: f.requiredString('namespace'),
      scope: f.requiredChoice('scope', ['Global', 'Namespace', 'WorkloadSelector'] as const),
      action: f.requiredChoice('action', ['Allow', 'Deny'] as const),
      dryRun: f.bool('dryRun', false),
      rules: f.requiredList('rules', (rule, rp) =>
        this.list(rule, rp, (clause, cp) => this.list(clause, cp, (m, mp) => this.match(m, mp))),
      ),
    };
  }

  match(node: YNode, path: string): Match {
    const f = this.map(node, path, MATCH_KEYS);
    const strings = (key: string): StringMatch[] => f.list(key, (n, p) => this.stringMatch(n, p));
    const accounts = (key: string): ServiceAccountMatch[] =>
      f.list(key, (n, p) => {
        const sf = this.map(n, p, ['namespace', 'serviceAccount']);
        return { namespace: sf.requiredString('namespace'), serviceAccount: sf.requiredString('serviceAccount') };
      });
    const cidrs = (key: string): string[] => f.list(key, (n, p) => this.cidr(n, p));
    const ports = (key: string): number[] => f.list(key, (n, p) => this.port(n, p, 1));
    return {
      namespaces: strings('namespaces'),
      notNamespaces: strings('notNamespaces'),
      principals: strings('principals'),
      notPrincipals: strings('notPrincipals'),
      serviceAccounts: accounts('serviceAccounts'),
      notServiceAccounts: accounts('notServiceAccounts'),
      sourceIps: cidrs('sourceIps'),
      notSourceIps: cidrs('notSourceIps'),
      destinationIps: cidrs('destinationIps'),
      notDestinationIps: cidrs('notDestinationIps'),
      destinationPorts: ports('destinationPorts'),
      notDestinationPorts: ports('notDestinationPorts'),
    };
  }

  /** `{Exact: v}` / `{Prefix: v}` / `{Suffix: v}` / `{Presence: []}`, or the tag form `!Exact v`. */
  stringMatch(node: YNode, path: string): StringMatch {
    const expected = 'expected a string match: {Exact: v}, {Prefix: v}, {Suffix: v} or {Presence: []}';
    if (node.kind === 'scalar' && node.tag !== undefined && node.tag.startsWith('!')) {
      const kind = node.tag.slice(1);
      if (kind === 'Presence') return { kind: 'Presence' };
      if (kind === 'Exact' || kind === 'Prefix' || kind === 'Suffix') return { kind, value: this.string({ ...node, tag: undefined }, path) };
      return this.fail(path, node.line, `unknown tag '${node.tag}'; ${expected}`);
    }
    if (node.kind !== 'map') {
      const hint = node.kind === 'scalar' && typeof node.value === 'string' ? ` (did you mean {Exact: ${node.value}}?)` : '';
      return this.fail(path, node.line, `${expected}, got ${describe(node)}${hint}`);
    }
    const f = this.map(node, path, STRING_MATCH_KINDS);
    const [entry, extra] = node.entries;
    if (entry === undefined || extra !== undefined) {
      return this.fail(path, node.line, `${expected} (exactly one key), got ${node.entries.length} keys`);
    }
    const kind = entry.key as (typeof STRING_MATCH_KINDS)[number];
    if (kind === 'Presence') {
      const v = entry.value;
      const empty =
        (v.kind === 'scalar' && v.value === null) || (v.kind === 'seq' && v.items.length === 0) || (v.kind === 'map' && v.entries.length === 0);
      if (!empty) this.fail(f.at('Presence'), v.line, `expected [], {} or null, got ${describe(v)}`);
      return { kind };
    }
    return { kind, value: this.string(entry.value, f.at(kind)) };
  }

  // ---- the whole document

  document(root: YNode): LocalConfig {
    if (root.kind === 'scalar' && root.value === null) return EMPTY_LOCAL_CONFIG;
    const f = this.map(root, '', ['workloads', 'services', 'policies']);

    const workloads = f.list('workloads', (n, p) => this.workload(n, p));
    const uidAt = new Map<string, number>();
    workloads.forEach((w, i) => {
      const first = uidAt.get(w.uid);
      if (first !== undefined) this.fail(`workloads[${i}].uid`, this.itemLine(f, 'workloads', i), `duplicate uid '${w.uid}' (also workloads[${first}])`);
      uidAt.set(w.uid, i);
    });

    const drafts = f.list('services', (n, p) => this.service(n, p));
    const byKey = new Map<string, ServiceDraft>();
    const serviceAt = new Map<string, number>();
    drafts.forEach((d, i) => {
      const key = `${d.service.namespace}/${d.service.hostname}`;
      const first = serviceAt.get(key);
      if (first !== undefined) this.fail(`services[${i}]`, this.itemLine(f, 'services', i), `duplicate service '${key}' (also services[${first}])`);
      serviceAt.set(key, i);
      byKey.set(key, d);
    });

    const policies = f.list('policies', (n, p) => this.policy(n, p));
    const policyKeys = new Map<string, number>();
    policies.forEach((pol, i) => {
      const key = `${pol.namespace}/${pol.name}`;
      const first = policyKeys.get(key);
      if (first !== undefined) this.fail(`policies[${i}]`, this.itemLine(f, 'policies', i), `duplicate policy '${key}' (also policies[${first}])`);
      policyKeys.set(key, i);
    });

    // A workload's `services` entry makes it an endpoint with its own port mapping and
    // health, and replaces a directly given endpoint of the same uid. Naming a service
    // that does not exist is fine: upstream stages such endpoints until the service comes.
    for (const w of workloads) {
      for (const [key, port] of w.services) {
        byKey.get(key)?.endpoints.set(w.uid, { workloadUid: w.uid, port, status: w.status });
      }
    }
    const services: Service[] = drafts.map((d) => ({ ...d.service, endpoints: d.endpoints }));
    return deepFreeze({ workloads, services, policies });
  }

  private itemLine(f: Fields, key: string, i: number): number | undefined {
    const list = f.find(key);
    return list?.kind === 'seq' ? list.items[i]?.line : undefined;
  }
}

const HEALTH: readonly HealthStatus[] = ['Healthy', 'Unhealthy'];
const ROUTING_PREFERENCES = ['Region', 'Zone', 'Subzone', 'Node', 'Cluster', 'Network'] as const;
const STRING_MATCH_KINDS = ['Exact', 'Prefix', 'Suffix', 'Presence'] as const;
const WORKLOAD_KEYS = [
  'uid', 'name', 'namespace', 'serviceAccount', 'trustDomain', 'workloadIps', 'hostname', 'network',
  'protocol', 'networkMode', 'node', 'waypoint', 'networkGateway', 'nativeTunnel', 'applicationTunnel',
  'authorizationPolicies', 'status', 'clusterId', 'locality', 'workloadName', 'workloadType',
  'canonicalName', 'canonicalRevision', 'capacity', 'services',
] as const;
const SERVICE_KEYS = [
  'name', 'namespace', 'hostname', 'vips', 'cidrVips', 'ports', 'endpoints', 'subjectAltNames', 'waypoint',
  'weightedWaypoints', 'loadBalancer', 'ipFamilies', 'canonical', 'visibility',
] as const;
const MATCH_KEYS = [
  'namespaces', 'notNamespaces', 'principals', 'notPrincipals', 'serviceAccounts', 'notServiceAccounts',
  'sourceIps', 'notSourceIps', 'destinationIps', 'notDestinationIps', 'destinationPorts', 'notDestinationPorts',
] as const;

/**
 * Validates local config YAML and returns the frozen records; throws ZT_ERR_CONFIG_INVALID.
 * `source` (a file path, or 'LOCAL_XDS' for inline YAML) starts every error message.
 */
export function parseLocalConfig(text: string, source: string): LocalConfig {
  const parser = new LocalConfigParser(source);
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
  const [error] = doc.errors;
  if (error !== undefined) {
    const pos = error.linePos?.[0];
    const where = pos === undefined ? '' : ` at line ${pos.line}, column ${pos.col}`;
    const summary =
      error.code === 'MULTIPLE_DOCS'
        ? 'a local config holds exactly one YAML document (found a second one)'
        : error.code === 'RESOURCE_EXHAUSTION'
          ? // yaml reports its own stack overflow on deeply nested text this way.
            `nesting is too deep (at most ${MAX_DEPTH} levels are accepted)`
          : (error.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '');
    throw new ZtError('ZT_ERR_CONFIG_INVALID', `${source}: invalid YAML${where}: ${summary}`);
  }
  const tree = new TreeBuilder(doc, lines, (line, problem) => parser.fail('', line, problem)).build(doc.contents, 1);
  return parser.document(tree);
}

/** Reads and validates a local config file; a missing or unreadable file is a config error naming it. */
export function loadLocalConfigFile(path: string): LocalConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'no such file' : (err as Error).message;
    throw new ZtError('ZT_ERR_CONFIG_INVALID', `${path}: cannot read the local config file: ${reason}`, { cause: err });
  }
  return parseLocalConfig(text, path);
}
