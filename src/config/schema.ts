// The local config model as ONE zod schema (https://zod.dev): each record's YAML form, its
// defaults, normalisation (canonical IPs and CIDRs) and checks, and the model form it becomes.
// The model types in types.ts are derived from it (z.output), so a field is written once.
// Field names follow upstream ztunnel's local config (camelCase, deny-unknown-fields):
// https://github.com/istio/ztunnel/blob/master/examples/localhost.yaml
// Messages: the schema's own texts ("is not an IP address", "is not of the form …"); the
// generic ones (wrong type, unknown key, missing key) come from `problemOf`, the error map
// local-config.ts passes to every parse. Key paths and lines are added by local-config.ts.
// Must never: accept an unknown key, guess at a wrong type, or return a partial record.
// Also validates records in model form (`validateWorkload` …), for mappers that build them.

import { z } from 'zod';
import { canonicalCidr, canonicalIp } from '../util/ip.js';

export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
export const DEFAULT_SERVICE_ACCOUNT = 'default';
const DEFAULT_UID_CLUSTER = 'cluster1';
const DEFAULT_HBONE_MTLS_PORT = 15008;
const MAX_U32 = 2 ** 32 - 1;
const PORT_TEXT = /^\d{1,5}$/;

// ------------------------------------------------------------------ YAML values

/** A scalar with a local tag (`!Exact v`): only string matches give tags a meaning. */
export class Tagged {
  constructor(
    readonly tag: string,
    readonly value: unknown,
  ) {}
}

/** Maps in which one key appeared twice once keys are text (`80` and `"80"`): map → that key. */
export const repeatedKeys = new WeakMap<object, string>();

export function describe(v: unknown): string {
  if (v instanceof Tagged) return `'${v.tag}'-tagged ${describe(v.value)}`;
  if (Array.isArray(v)) return 'a list';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'a map';
  if (typeof v === 'string') return `string '${v}'`;
  return `${typeof v} ${String(v)}`;
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

const EXPECTED: Record<string, string> = { object: 'a map', array: 'a list', string: 'a string', boolean: 'true or false', number: 'a number' };

/**
 * The error map for the generic problems (zod's issue → our wording). A schema's own `error`
 * (below) wins over it. A missing key is a wrong type or value whose input is undefined.
 */
export const problemOf: z.core.$ZodErrorMap = (iss) => {
  const last = iss.path?.[iss.path.length - 1];
  if ((iss.code === 'invalid_type' || iss.code === 'invalid_value') && iss.input === undefined) return `missing required key '${String(last)}'`;
  switch (iss.code) {
    case 'invalid_type': {
      const hint = iss.expected === 'string' && (typeof iss.input === 'number' || typeof iss.input === 'boolean') ? ' (quote it if it is meant as text)' : '';
      return `expected ${EXPECTED[iss.expected] ?? iss.expected}, got ${describe(iss.input)}${hint}`;
    }
    case 'invalid_value':
      return `expected one of ${iss.values.map(String).join(', ')}, got ${describe(iss.input)}`;
    case 'unrecognized_keys': {
      const shape = (iss.inst as { _zod?: { def?: { shape?: object } } } | undefined)?._zod?.def?.shape ?? {};
      const key = iss.keys[0] ?? '';
      return `unknown key '${key}'${suggest(key, Object.keys(shape))}`;
    }
    case 'invalid_key':
      return `key '${String(last)}' ${iss.issues[0]?.message ?? 'is not allowed'}`;
    default:
      return undefined;
  }
};

// ------------------------------------------------------------------ building blocks

type Issue = { input: unknown; path?: PropertyKey[]; params?: Record<string, unknown> };
interface Ctx {
  issues: z.core.$ZodRawIssue[];
}
function fail(ctx: Ctx, message: string, extra: Issue): typeof z.NEVER {
  ctx.issues.push({ code: 'custom', message, ...extra });
  return z.NEVER;
}

/** A record of named fields: unknown keys refused, an explicit null counted as absent. */
function fields<S extends z.core.$ZodLooseShape>(shape: S) {
  return z.preprocess(dropNulls, z.strictObject(shape));
}
function dropNulls(v: unknown): unknown {
  if (v === null || typeof v !== 'object' || Array.isArray(v) || v instanceof Tagged) return v;
  const o = v as Record<string, unknown>;
  let hasNull = false;
  for (const k in o) if (o[k] === null) hasNull = true;
  if (!hasNull) return v;
  const copy = Object.create(null) as Record<string, unknown>;
  for (const k in o) if (o[k] !== null) copy[k] = o[k];
  return copy;
}

const text = z.string();
const list = <T extends z.ZodType>(item: T) => z.array(item).default([]);
const expects = (what: string) => (iss: z.core.$ZodRawIssue) =>
  iss.code === 'invalid_type' && iss.input !== undefined ? `expected ${what}, got ${describe(iss.input)}` : undefined;

function intIn(min: number, max: number, what: string) {
  const error = (iss: z.core.$ZodRawIssue): string => `expected ${what} (${min}-${max}), got ${describe(iss.input)}`;
  return z.int({ error }).min(min, { error }).max(max, { error });
}
/** A port given as a YAML integer or a numeric string. */
function port(min: number, what = 'a port number') {
  return z.preprocess((v) => (typeof v === 'string' && PORT_TEXT.test(v) ? Number(v) : v), intIn(min, 65535, what));
}

/** Text normalised by `canon` (undefined = not valid, the message says why). */
function canonical(canon: (s: string) => string | undefined, why: (s: string) => string) {
  return text.transform((s, ctx) => canon(s) ?? fail(ctx, why(s), { input: s }));
}
const ip = canonical(canonicalIp, (s) => `'${s}' is not an IP address`);
const cidr = canonical(canonicalCidr, (s) => `'${s}' is not a CIDR (such as 10.0.0.0/8) or an IP address`);

function isSlashPair(s: string, emptyLeft = false): boolean {
  const slash = s.indexOf('/');
  return slash >= (emptyLeft ? 0 : 1) && slash !== s.length - 1 && s.indexOf('/', slash + 1) === -1;
}
const namespacedName = text.refine((s) => isSlashPair(s), { error: (iss) => `'${String(iss.input)}' is not of the form namespace/name` });
const serviceKey = text.refine((s) => isSlashPair(s), { error: 'is not of the form namespace/hostname' });
// Istio identities only: spiffe://<trust domain>/ns/<namespace>/sa/<service account>
const spiffeUri = text.regex(/^spiffe:\/\/[^/\s]+\/ns\/[^/\s]+\/sa\/[^/\s]+$/, {
  error: (iss) => `'${String(iss.input)}' is not a SPIFFE URI of the form spiffe://<trust domain>/ns/<namespace>/sa/<service account>`,
});

export const health = z.enum(['Healthy', 'Unhealthy']);
export const tunnelProtocol = z.enum(['TCP', 'HBONE']);

/** servicePort → targetPort; keys are YAML ints or numeric strings (1-65535), targets 0-65535. */
export const portMap = z
  .preprocess(
    (v, ctx) => {
      if (v === null) return {};
      const twice = typeof v === 'object' ? repeatedKeys.get(v) : undefined;
      if (twice !== undefined) fail(ctx, `port ${Number(twice)} appears twice`, { input: v, params: { keyLine: twice } });
      return v;
    },
    z.record(
      text.regex(PORT_TEXT, { error: 'is not a port number (1-65535)' }).refine((k) => Number(k) >= 1 && Number(k) <= 65535, { error: 'is not a port number (1-65535)' }),
      port(0, 'a target port number'),
      { error: expects('a map of servicePort: targetPort') },
    ),
  )
  .transform((o): ReadonlyMap<number, number> => new Map(Object.entries(o).map(([k, v]) => [Number(k), v])));

/** `network/IP` or `namespace/hostname`, plus the HBONE port (network/IP tried first, as upstream). */
export const gatewayAddress = fields({
  destination: text.refine((s) => isSlashPair(s, true), { error: (iss) => `'${String(iss.input)}' is not of the form network/IP or namespace/hostname` }),
  hboneMtlsPort: port(1).default(DEFAULT_HBONE_MTLS_PORT),
}).transform((g, ctx) => {
  const slash = g.destination.indexOf('/');
  const left = g.destination.slice(0, slash);
  const address = canonicalIp(g.destination.slice(slash + 1));
  if (address === undefined && left === '') {
    return fail(ctx, `'${g.destination}' is neither network/IP nor namespace/hostname`, { input: g.destination, path: ['destination'] });
  }
  return { destination: address === undefined ? g.destination : `${left}/${address}`, hboneMtlsPort: g.hboneMtlsPort };
});

// ------------------------------------------------------------------ workloads

export const locality = fields({ region: text, zone: text, subzone: text });

export const workloadSchema = fields({
  uid: text.default(''),
  name: text.default(''),
  namespace: text,
  serviceAccount: text.default(''),
  trustDomain: text.default(''),
  workloadIps: z.array(ip),
  hostname: text.default(''),
  network: text.default(''),
  protocol: tunnelProtocol.default('TCP'),
  networkMode: z.enum(['Standard', 'HostNetwork']).default('Standard'),
  node: text.default(''),
  waypoint: gatewayAddress.optional(),
  networkGateway: gatewayAddress.optional(),
  nativeTunnel: z.boolean().default(false),
  applicationTunnel: fields({ protocol: z.enum(['NONE', 'PROXY']).default('NONE'), port: port(1).optional() })
    .transform((a) => ({ protocol: a.protocol, port: a.port }))
    .optional(),
  /** `namespace/name` keys of WorkloadSelector policies that apply to this workload. */
  authorizationPolicies: list(namespacedName),
  status: health.default('Healthy'),
  clusterId: text.default(''),
  locality: locality.optional(),
  workloadName: text.default(''),
  workloadType: text.default(''),
  canonicalName: text.default(''),
  canonicalRevision: text.default(''),
  capacity: intIn(0, MAX_U32, 'an integer').default(1),
  /** `namespace/hostname` → servicePort → targetPort. */
  services: z
    .record(serviceKey, portMap, { error: expects('a map of namespace/hostname: {servicePort: targetPort}') })
    .default({})
    .transform((o): ReadonlyMap<string, z.output<typeof portMap>> => new Map(Object.entries(o))),
}).transform((w, ctx) => {
  let uid = w.uid;
  if (uid === '') {
    if (w.name === '') return fail(ctx, "missing required key 'name' (needed to derive 'uid' when 'uid' is omitted)", { input: w });
    uid = `${w.clusterId === '' ? DEFAULT_UID_CLUSTER : w.clusterId}//v1/Pod/${w.namespace}/${w.name}`;
  }
  return {
    ...w,
    uid,
    serviceAccount: w.serviceAccount || DEFAULT_SERVICE_ACCOUNT,
    trustDomain: w.trustDomain || DEFAULT_TRUST_DOMAIN,
    // optional in YAML, always present (maybe undefined) in the model
    waypoint: w.waypoint,
    networkGateway: w.networkGateway,
    applicationTunnel: w.applicationTunnel,
    locality: w.locality,
  };
});

// ------------------------------------------------------------------ services

const endpointSchema = fields({ workloadUid: text.optional(), port: portMap.optional(), status: health.default('Healthy') });
const NO_PORTS: ReadonlyMap<number, number> = new Map();

const endpointOf = (key: string, e: z.output<typeof endpointSchema>) => ({ workloadUid: e.workloadUid ?? key, port: e.port ?? NO_PORTS, status: e.status });

/** workload uid → endpoint; `workloadUid` defaults to, and must equal, the key. */
const endpointsSchema = z
  .record(text, endpointSchema, { error: expects('a map of workload uid: endpoint') })
  .default({})
  .transform((o, ctx): ReadonlyMap<string, ReturnType<typeof endpointOf>> => {
    const out = new Map<string, ReturnType<typeof endpointOf>>();
    for (const [key, e] of Object.entries(o)) {
      const endpoint = endpointOf(key, e);
      if (endpoint.workloadUid !== key) fail(ctx, `'${endpoint.workloadUid}' differs from its key '${key}'`, { input: endpoint.workloadUid, path: [key, 'workloadUid'] });
      out.set(key, endpoint);
    }
    return out;
  });

/** "network/IP", or a bare IP meaning network "". */
const vip = text.transform((s, ctx) => {
  const slash = s.indexOf('/');
  const address = canonicalIp(slash === -1 ? s : s.slice(slash + 1));
  if (address === undefined) return fail(ctx, `'${s}' is not of the form network/IP (such as "/10.96.0.1") or an IP address`, { input: s });
  return { network: slash === -1 ? '' : s.slice(0, slash), address };
});

export const serviceSchema = fields({
  name: text,
  namespace: text,
  hostname: text,
  vips: z.array(vip),
  cidrVips: list(fields({ network: text.default(''), cidr })),
  ports: portMap,
  /** workload uid → endpoint. Filled from workloads' `services` as well as given directly. */
  endpoints: endpointsSchema,
  subjectAltNames: list(spiffeUri),
  waypoint: gatewayAddress.optional(),
  weightedWaypoints: z.undefined({ error: 'is not supported by ztunnel-ts (use waypoint)' }).optional(),
  loadBalancer: fields({
    routingPreferences: list(z.enum(['Region', 'Zone', 'Subzone', 'Node', 'Cluster', 'Network'])),
    mode: z.enum(['Standard', 'Strict', 'Failover', 'Passthrough']).default('Standard'),
    healthPolicy: z.enum(['OnlyHealthy', 'AllowAll']).default('OnlyHealthy'),
  }).optional(),
  ipFamilies: z.enum(['Dual', 'IPv4', 'IPv6']).optional(),
  canonical: z.boolean().default(false),
  visibility: z.enum(['Public', 'Namespace']).default('Public'),
}).transform(({ weightedWaypoints: _unsupported, ...s }) => ({
  ...s,
  waypoint: s.waypoint,
  loadBalancer: s.loadBalancer,
  ipFamilies: s.ipFamilies,
}));

// ------------------------------------------------------------------ policies

const STRING_MATCH = 'expected a string match: {Exact: v}, {Prefix: v}, {Suffix: v} or {Presence: []}';
const isEmpty = (v: unknown): boolean =>
  v === null || (Array.isArray(v) && v.length === 0) || (typeof v === 'object' && !(v instanceof Tagged) && Object.keys(v).length === 0);

type Valued<K extends string> = { kind: K; value: string };

/** `{Exact: v}` / `{Prefix: v}` / `{Suffix: v}` / `{Presence: []}`, or the tag form `!Exact v`. */
export const stringMatch = z
  .preprocess(
    (v, ctx) => {
      if (v instanceof Tagged) {
        const kind = v.tag.slice(1);
        if (kind === 'Presence') return { Presence: null };
        if (kind === 'Exact' || kind === 'Prefix' || kind === 'Suffix') return { [kind]: v.value };
        return fail(ctx, `unknown tag '${v.tag}'; ${STRING_MATCH}`, { input: v });
      }
      const keys = v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.keys(v).length : 1;
      if (keys !== 1) return fail(ctx, `${STRING_MATCH} (exactly one key), got ${keys} keys`, { input: v });
      return v;
    },
    z.strictObject(
      {
        Exact: text.optional(),
        Prefix: text.optional(),
        Suffix: text.optional(),
        Presence: z.custom((v) => isEmpty(v), { error: (iss) => `expected [], {} or null, got ${describe(iss.input)}` }).optional(),
      },
      {
        error: (iss) =>
          iss.code === 'invalid_type'
            ? `${STRING_MATCH}, got ${describe(iss.input)}${typeof iss.input === 'string' ? ` (did you mean {Exact: ${iss.input}}?)` : ''}`
            : undefined,
      },
    ),
  )
  .transform((m): Valued<'Exact'> | Valued<'Prefix'> | Valued<'Suffix'> | { kind: 'Presence' } => {
    if (m.Exact !== undefined) return { kind: 'Exact' as const, value: m.Exact };
    if (m.Prefix !== undefined) return { kind: 'Prefix' as const, value: m.Prefix };
    if (m.Suffix !== undefined) return { kind: 'Suffix' as const, value: m.Suffix };
    return { kind: 'Presence' as const };
  });

export const serviceAccountMatch = fields({ namespace: text, serviceAccount: text });

/** One Match: every non-empty group must hold; values inside a group are OR'd. */
export const matchSchema = fields({
  namespaces: list(stringMatch),
  notNamespaces: list(stringMatch),
  principals: list(stringMatch),
  notPrincipals: list(stringMatch),
  serviceAccounts: list(serviceAccountMatch),
  notServiceAccounts: list(serviceAccountMatch),
  /** CIDR text, e.g. 10.0.0.0/8 (a bare IP is /32 or /128). */
  sourceIps: list(cidr),
  notSourceIps: list(cidr),
  destinationIps: list(cidr),
  notDestinationIps: list(cidr),
  destinationPorts: list(port(1)),
  notDestinationPorts: list(port(1)),
});

export const authorizationSchema = fields({
  name: text,
  namespace: text,
  scope: z.enum(['Global', 'Namespace', 'WorkloadSelector']),
  action: z.enum(['Allow', 'Deny']),
  dryRun: z.boolean().default(false),
  /** rules (OR) of clauses (AND) of matches (OR). */
  rules: z.array(z.array(z.array(matchSchema))),
});

// ------------------------------------------------------------------ the whole document

type WorkloadOut = z.output<typeof workloadSchema>;
type ServiceOut = z.output<typeof serviceSchema>;
type EndpointOut = ReturnType<typeof endpointOf>;

/** Cross-record checks (unique uids, services, policies) and the endpoint join. */
export const localConfigSchema = fields({
  workloads: list(workloadSchema),
  services: list(serviceSchema),
  policies: list(authorizationSchema),
}).transform((doc, ctx) => {
  const unique = <T>(items: readonly T[], what: string, section: string, keyOf: (x: T) => string, field?: string): void => {
    const at = new Map<string, number>();
    items.forEach((x, i) => {
      const key = keyOf(x);
      const first = at.get(key);
      if (first !== undefined) fail(ctx, `duplicate ${what} '${key}' (also ${section}[${first}])`, { input: key, path: field ? [section, i, field] : [section, i] });
      else at.set(key, i);
    });
  };
  unique(doc.workloads, 'uid', 'workloads', (w) => w.uid, 'uid');
  unique(doc.services, 'service', 'services', (s) => `${s.namespace}/${s.hostname}`);
  unique(doc.policies, 'policy', 'policies', (p) => `${p.namespace}/${p.name}`);
  // A workload's `services` entry makes it an endpoint with its own port mapping and health,
  // and replaces a directly given endpoint of the same uid. Naming a service that does not
  // exist is fine: upstream stages such endpoints until the service comes.
  const joined = new Map<string, Map<string, EndpointOut>>();
  const known = new Set(doc.services.map((s) => `${s.namespace}/${s.hostname}`));
  for (const w of doc.workloads) {
    for (const [key, port] of w.services) {
      if (!known.has(key)) continue;
      let eps = joined.get(key);
      if (eps === undefined) joined.set(key, (eps = new Map()));
      eps.set(w.uid, { workloadUid: w.uid, port, status: w.status });
    }
  }
  const services = doc.services.map((s): ServiceOut => {
    const extra = joined.get(`${s.namespace}/${s.hostname}`);
    return extra === undefined ? s : { ...s, endpoints: new Map([...s.endpoints, ...extra]) };
  });
  return { workloads: doc.workloads as WorkloadOut[], services, policies: doc.policies };
});

// ------------------------------------------------------------------ records in model form

/** A key path as the messages print it: `workloads[2].services["default/x.svc"][80]`. */
export function pathText(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number' || (typeof seg === 'string' && /^\d+$/.test(seg))) out += `[${String(seg)}]`;
    else if (typeof seg === 'string' && /^[A-Za-z_][A-Za-z0-9_]*$/.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(String(seg))}]`;
  }
  return out;
}

const objectOf = <V, W>(m: ReadonlyMap<string | number, V>, f: (v: V) => W): Record<string, W> => {
  const o: Record<string, W> = {};
  for (const [k, v] of m) o[String(k)] = f(v);
  return o;
};
const same = <V>(v: V): V => v;

/** The first place where `got` (a model record) and `want` (what the schema makes of it) differ. */
function firstDifference(got: unknown, want: unknown, path: PropertyKey[]): string | undefined {
  if (Object.is(got, want)) return undefined;
  const show = (v: unknown): string => (typeof v === 'string' ? `'${v}'` : describe(v));
  if (got instanceof Map && want instanceof Map) {
    if (got.size !== want.size) return `${pathText(path)}: has ${got.size} entries, expected ${want.size}`;
    for (const [k, v] of got) {
      const d = firstDifference(v, want.get(k), [...path, k as PropertyKey]);
      if (d !== undefined) return d;
    }
    return undefined;
  }
  if (got !== null && want !== null && typeof got === 'object' && typeof want === 'object' && Array.isArray(got) === Array.isArray(want)) {
    const keys = new Set([...Object.keys(got), ...Object.keys(want)]);
    for (const k of keys) {
      const d = firstDifference((got as Record<string, unknown>)[k], (want as Record<string, unknown>)[k], [...path, Array.isArray(got) ? Number(k) : k]);
      if (d !== undefined) return d;
    }
    return undefined;
  }
  return `${pathText(path)}: ${show(got)} is not in model form (the schema makes it ${show(want)})`;
}

/** The key path an issue is reported at: a missing key or a bad map key at its map. */
export function reportedPath(issue: z.core.$ZodIssue): readonly PropertyKey[] {
  const missing = (issue.code === 'invalid_type' || issue.code === 'invalid_value') && issue.message.startsWith('missing required key');
  return missing || issue.code === 'invalid_key' ? issue.path.slice(0, -1) : issue.path;
}

/** Runs `schema` on a record turned back into its YAML form; the result must be the record itself. */
function checkModel(schema: z.ZodType, yamlForm: unknown, model: unknown): string | undefined {
  const r = schema.safeParse(yamlForm, { error: problemOf });
  if (!r.success) {
    const issue = r.error.issues[0];
    if (issue === undefined) return 'invalid';
    const where = pathText(reportedPath(issue));
    return where === '' ? issue.message : `${where}: ${issue.message}`;
  }
  return firstDifference(model, r.data, []);
}

type PortMapOut = z.output<typeof portMap>;
const portsIn = (m: PortMapOut): Record<string, number> => objectOf(m, same);

/** Checks a Workload in model form (e.g. built from xDS) against the schema; the problem, or undefined. */
export function validateWorkload(w: WorkloadOut): string | undefined {
  return checkModel(workloadSchema, { ...w, services: objectOf(w.services, portsIn) }, w);
}

/** Checks a Service in model form against the schema; the problem, or undefined. */
export function validateService(s: ServiceOut): string | undefined {
  const yamlForm = {
    ...s,
    vips: s.vips.map((v) => `${v.network}/${v.address}`),
    ports: portsIn(s.ports),
    endpoints: objectOf(s.endpoints, (e) => ({ ...e, port: portsIn(e.port) })),
  };
  return checkModel(serviceSchema, yamlForm, s);
}

type AuthorizationOut = z.output<typeof authorizationSchema>;
type StringMatchOut = z.output<typeof stringMatch>;
const matchIn = (m: StringMatchOut): Record<string, unknown> => (m.kind === 'Presence' ? { Presence: [] } : { [m.kind]: m.value });

/** Checks an Authorization in model form against the schema; the problem, or undefined. */
export function validateAuthorization(a: AuthorizationOut): string | undefined {
  const rules = a.rules.map((rule) =>
    rule.map((clause) =>
      clause.map((m) => ({
        ...m,
        namespaces: m.namespaces.map(matchIn),
        notNamespaces: m.notNamespaces.map(matchIn),
        principals: m.principals.map(matchIn),
        notPrincipals: m.notPrincipals.map(matchIn),
      })),
    ),
  );
  return checkModel(authorizationSchema, { ...a, rules }, a);
}
