// One Authorization compiled into flat, prebuilt data (CIDRs parsed, vacuous parts folded
// away) and the matcher that walks it. Semantics: https://github.com/istio/ztunnel/blob/master/src/rbac.rs
// Must never allocate while matching: matching runs for every policy on every inbound
// connection, and most policies do not match.
// Layout: a policy's rules are one flat array of CompiledMatch, each carrying the index where
// its clause and its rule end; single ports and single principals sit inline in the Match.
// With tens of thousands of Matches the scan is bound by memory latency, so every pointer
// that is not chased (nested arrays, one-element arrays) counts.
// Invariants: every CompiledMatch has at least one set group; every compiled clause has at
// least one CompiledMatch; a policy with `matchesAll` has no Matches to look at.

import type { Authorization, Match, ServiceAccountMatch, StringMatch } from '../config/types.js';
import { cidrContains, parseCidr, type Cidr, type ParsedIp } from '../util/ip.js';
import { internalize, type AuthzConnection } from './authz-connection.js';

const EXACT = 0;
const PREFIX = 1;
const SUFFIX = 2;
const PRESENCE = 3;

class CompiledStringMatch {
  readonly kind: number;
  readonly value: string;
  constructor(m: StringMatch) {
    switch (m.kind) {
      case 'Exact':
        // Exact values are compared by pointer against the (internalized) peer strings;
        // prefixes and suffixes are compared by content anyway and stay where they are,
        // next to their Match, which matters more for a long scan.
        this.kind = EXACT;
        this.value = internalize(m.value);
        break;
      case 'Prefix':
        this.kind = PREFIX;
        this.value = m.value;
        break;
      case 'Suffix':
        this.kind = SUFFIX;
        this.value = m.value;
        break;
      case 'Presence':
        this.kind = PRESENCE;
        this.value = '';
        break;
    }
  }
}

function stringHolds(kind: number, value: string, s: string): boolean {
  switch (kind) {
    case EXACT:
      return s === value;
    case PREFIX:
      return s.startsWith(value);
    case SUFFIX:
      return s.endsWith(value);
    default:
      return s.length !== 0;
  }
}

function anyString(ms: readonly CompiledStringMatch[], s: string): boolean {
  for (let i = 0; i < ms.length; i++) {
    const m = ms[i]!;
    if (stringHolds(m.kind, m.value, s)) return true;
  }
  return false;
}

function anyCidr(cs: readonly Cidr[], ip: ParsedIp): boolean {
  for (let i = 0; i < cs.length; i++) if (cidrContains(cs[i]!, ip)) return true;
  return false;
}

function anyServiceAccount(sas: readonly ServiceAccountMatch[], namespace: string, serviceAccount: string): boolean {
  for (let i = 0; i < sas.length; i++) {
    const sa = sas[i]!;
    if (sa.namespace === namespace && sa.serviceAccount === serviceAccount) return true;
  }
  return false;
}

// Bits of CompiledMatch.groups: which groups are set. Testing one integer instead of reading
// twelve array lengths keeps a non-matching Match to a cache line or two, which is what
// dominates when tens of thousands of Matches are scanned.
const G_PORTS = 1 << 0;
const G_NOT_PORTS = 1 << 1;
const G_SOURCE_IPS = 1 << 2;
const G_NOT_SOURCE_IPS = 1 << 3;
const G_DEST_IPS = 1 << 4;
const G_NOT_DEST_IPS = 1 << 5;
const G_SERVICE_ACCOUNTS = 1 << 6;
const G_NOT_SERVICE_ACCOUNTS = 1 << 7;
const G_NAMESPACES = 1 << 8;
const G_NOT_NAMESPACES = 1 << 9;
const G_PRINCIPALS = 1 << 10;
const G_NOT_PRINCIPALS = 1 << 11;
const G_NEEDS_IDENTITY = G_SERVICE_ACCOUNTS | G_PRINCIPALS;

/** Shared by every unset group, so unset groups cost no memory per Match. */
const NONE: readonly never[] = Object.freeze([]);

/** One Match with every group prebuilt; an unset group is the shared empty array. */
export class CompiledMatch {
  // Hot fields first: with ES2022 class fields, declaration order is the in-object layout.
  readonly groups: number;
  /** Index (in the policy's flat Match array) after the last Match of this clause / rule. */
  clauseEnd = 0;
  ruleEnd = 0;
  /** The only destination port, or -1 when the group has none or several. */
  readonly port: number;
  /** The only principal StringMatch inline (kind -1 when the group has none or several). */
  readonly principalKind: number;
  readonly principalValue: string;
  readonly destinationPorts: readonly number[];
  readonly notDestinationPorts: readonly number[];
  readonly sourceIps: readonly Cidr[];
  readonly notSourceIps: readonly Cidr[];
  readonly destinationIps: readonly Cidr[];
  readonly notDestinationIps: readonly Cidr[];
  readonly serviceAccounts: readonly ServiceAccountMatch[];
  readonly notServiceAccounts: readonly ServiceAccountMatch[];
  readonly namespaces: readonly CompiledStringMatch[];
  readonly notNamespaces: readonly CompiledStringMatch[];
  readonly principals: readonly CompiledStringMatch[];
  readonly notPrincipals: readonly CompiledStringMatch[];

  constructor(m: Match, onBadCidr: (cidr: string) => void) {
    const cidrs = (list: readonly string[]): readonly Cidr[] => {
      const out: Cidr[] = [];
      for (const text of list) {
        const c = parseCidr(text);
        // Upstream drops invalid CIDRs when converting policies; do the same, loudly.
        if (c === undefined) onBadCidr(text);
        else out.push(c);
      }
      return out.length === 0 ? NONE : out;
    };
    const strings = (list: readonly StringMatch[]): readonly CompiledStringMatch[] =>
      list.length === 0 ? NONE : list.map((s) => new CompiledStringMatch(s));
    const sas = (list: readonly ServiceAccountMatch[]): readonly ServiceAccountMatch[] =>
      list.length === 0 ? NONE : list.map((s) => ({ namespace: internalize(s.namespace), serviceAccount: internalize(s.serviceAccount) }));
    const ports = (list: readonly number[]): readonly number[] => (list.length === 0 ? NONE : [...list]);
    this.destinationPorts = ports(m.destinationPorts);
    this.notDestinationPorts = ports(m.notDestinationPorts);
    this.sourceIps = cidrs(m.sourceIps);
    this.notSourceIps = cidrs(m.notSourceIps);
    this.destinationIps = cidrs(m.destinationIps);
    this.notDestinationIps = cidrs(m.notDestinationIps);
    this.serviceAccounts = sas(m.serviceAccounts);
    this.notServiceAccounts = sas(m.notServiceAccounts);
    this.namespaces = strings(m.namespaces);
    this.notNamespaces = strings(m.notNamespaces);
    this.principals = strings(m.principals);
    this.notPrincipals = strings(m.notPrincipals);
    this.port = this.destinationPorts.length === 1 ? this.destinationPorts[0]! : -1;
    const onlyPrincipal = this.principals.length === 1 ? this.principals[0]! : undefined;
    this.principalKind = onlyPrincipal === undefined ? -1 : onlyPrincipal.kind;
    this.principalValue = onlyPrincipal === undefined ? '' : onlyPrincipal.value;
    const bit = (list: readonly unknown[], b: number): number => (list.length === 0 ? 0 : b);
    this.groups =
      bit(this.destinationPorts, G_PORTS) |
      bit(this.notDestinationPorts, G_NOT_PORTS) |
      bit(this.sourceIps, G_SOURCE_IPS) |
      bit(this.notSourceIps, G_NOT_SOURCE_IPS) |
      bit(this.destinationIps, G_DEST_IPS) |
      bit(this.notDestinationIps, G_NOT_DEST_IPS) |
      bit(this.serviceAccounts, G_SERVICE_ACCOUNTS) |
      bit(this.notServiceAccounts, G_NOT_SERVICE_ACCOUNTS) |
      bit(this.namespaces, G_NAMESPACES) |
      bit(this.notNamespaces, G_NOT_NAMESPACES) |
      bit(this.principals, G_PRINCIPALS) |
      bit(this.notPrincipals, G_NOT_PRINCIPALS);
  }

  get isEmpty(): boolean {
    return this.groups === 0;
  }
}

/** Every set group must hold; cheap numeric groups are checked before string groups. */
export function matchHolds(m: CompiledMatch, conn: AuthzConnection): boolean {
  const groups = m.groups;
  const id = conn.srcIdentity;
  // Without an identity no service account and no principal matches, so the positive
  // groups fail and the negative groups hold (none of their values matched).
  if (id === undefined && (groups & G_NEEDS_IDENTITY) !== 0) return false;
  if ((groups & G_PORTS) !== 0 && (m.port >= 0 ? m.port !== conn.dstPort : !m.destinationPorts.includes(conn.dstPort))) return false;
  if ((groups & G_NOT_PORTS) !== 0 && m.notDestinationPorts.includes(conn.dstPort)) return false;
  if ((groups & G_SOURCE_IPS) !== 0 && !anyCidr(m.sourceIps, conn.srcIp)) return false;
  if ((groups & G_NOT_SOURCE_IPS) !== 0 && anyCidr(m.notSourceIps, conn.srcIp)) return false;
  if ((groups & G_DEST_IPS) !== 0 && !anyCidr(m.destinationIps, conn.dstIp)) return false;
  if ((groups & G_NOT_DEST_IPS) !== 0 && anyCidr(m.notDestinationIps, conn.dstIp)) return false;
  if ((groups & ~(G_PORTS | G_NOT_PORTS | G_SOURCE_IPS | G_NOT_SOURCE_IPS | G_DEST_IPS | G_NOT_DEST_IPS)) === 0) return true;
  if (id === undefined) {
    // The namespace of a plaintext peer is ''; e.g. Prefix '' still matches it.
    if ((groups & G_NAMESPACES) !== 0 && !anyString(m.namespaces, '')) return false;
    if ((groups & G_NOT_NAMESPACES) !== 0 && anyString(m.notNamespaces, '')) return false;
    return true;
  }
  if ((groups & G_SERVICE_ACCOUNTS) !== 0 && !anyServiceAccount(m.serviceAccounts, id.namespace, id.serviceAccount)) return false;
  if ((groups & G_NOT_SERVICE_ACCOUNTS) !== 0 && anyServiceAccount(m.notServiceAccounts, id.namespace, id.serviceAccount)) return false;
  if ((groups & G_NAMESPACES) !== 0 && !anyString(m.namespaces, id.namespace)) return false;
  if ((groups & G_NOT_NAMESPACES) !== 0 && anyString(m.notNamespaces, id.namespace)) return false;
  if ((groups & G_PRINCIPALS) !== 0) {
    const holds = m.principalKind >= 0 ? stringHolds(m.principalKind, m.principalValue, id.principal) : anyString(m.principals, id.principal);
    if (!holds) return false;
  }
  if ((groups & G_NOT_PRINCIPALS) !== 0 && anyString(m.notPrincipals, id.principal)) return false;
  return true;
}

/** rules (OR) of clauses (AND) of matches (OR), with vacuous parts removed. */
export type CompiledRules = readonly (readonly (readonly CompiledMatch[])[])[];

export type AuthzDecision =
  | { readonly kind: 'allow'; readonly dryRunNotes?: readonly string[] }
  | {
      readonly kind: 'deny';
      /** `namespace/name` of the denying policy, or '' when no allow policy matched. */
      readonly policy: string;
      readonly reason: string;
      readonly dryRunNotes?: readonly string[];
    };

export class CompiledPolicy {
  readonly key: string;
  readonly name: string;
  readonly namespace: string;
  readonly scope: Authorization['scope'];
  readonly action: Authorization['action'];
  readonly dryRun: boolean;
  /** Position in the store: lower wins when several deny policies match. */
  readonly order: number;
  /** A rule with no (non-vacuous) clauses exists: the policy matches every connection. */
  readonly matchesAll: boolean;
  /** Every rule's clauses' Matches in order; see CompiledMatch.clauseEnd / ruleEnd. */
  readonly matches: readonly CompiledMatch[];
  /**
   * A necessary condition used to index the policy: when set, the policy can only match a
   * connection whose principal (resp. destination port) is in the list.
   */
  readonly guardPrincipals: readonly string[] | undefined;
  readonly guardPorts: readonly number[] | undefined;
  /** Prebuilt so that denying allocates nothing. */
  readonly denyDecision: AuthzDecision;

  constructor(p: Authorization, order: number, onBadCidr: (cidr: string) => void) {
    this.key = `${p.namespace}/${p.name}`;
    this.name = p.name;
    this.namespace = p.namespace;
    this.scope = p.scope;
    this.action = p.action;
    this.dryRun = p.dryRun;
    this.order = order;
    let matchesAll = false;
    const rules: CompiledMatch[][][] = [];
    for (const rule of p.rules) {
      const clauses: CompiledMatch[][] = [];
      let ruleCanMatch = true;
      for (const clause of rule) {
        // A clause with zero matches always holds: it adds nothing to the AND.
        if (clause.length === 0) continue;
        const matches = clause.map((m) => new CompiledMatch(m, onBadCidr)).filter((m) => !m.isEmpty);
        // Only empty Matches: they are skipped, so nothing can make this clause hold.
        if (matches.length === 0) {
          ruleCanMatch = false;
          break;
        }
        clauses.push(matches);
      }
      if (!ruleCanMatch) continue;
      if (clauses.length === 0) matchesAll = true;
      rules.push(clauses);
    }
    this.matchesAll = matchesAll;
    this.matches = matchesAll ? [] : flatten(rules);
    this.guardPrincipals = matchesAll ? undefined : buildGuard(rules, principalGuardOfClause);
    this.guardPorts = matchesAll || this.guardPrincipals !== undefined ? undefined : buildGuard(rules, portGuardOfClause);
    this.denyDecision = Object.freeze({
      kind: 'deny',
      policy: this.key,
      reason: `explicitly denied by: ${this.key}`,
    } as const);
  }
}

function flatten(rules: CompiledRules): CompiledMatch[] {
  const flat: CompiledMatch[] = [];
  for (const rule of rules) {
    const ruleStart = flat.length;
    for (const clause of rule) {
      for (const m of clause) flat.push(m);
      for (const m of clause) m.clauseEnd = flat.length;
    }
    for (let i = ruleStart; i < flat.length; i++) flat[i]!.ruleEnd = flat.length;
  }
  return flat;
}

/**
 * Walks the flat Matches: a holding Match satisfies its clause (jump to the next clause; the
 * last clause of a rule satisfied means the rule, hence the policy, matches); when the last
 * Match of a clause fails, the clause fails and so does its rule (jump to the next rule).
 */
export function policyMatches(p: CompiledPolicy, conn: AuthzConnection): boolean {
  if (p.matchesAll) return true;
  const ms = p.matches;
  let i = 0;
  while (i < ms.length) {
    const m = ms[i]!;
    if (matchHolds(m, conn)) {
      if (m.clauseEnd === m.ruleEnd) return true;
      i = m.clauseEnd;
    } else {
      i = i + 1 === m.clauseEnd ? m.ruleEnd : i + 1;
    }
  }
  return false;
}

/**
 * The union over rules of one clause's necessary values, or undefined when some rule has no
 * clause that constrains the attribute (then the policy cannot be indexed by it).
 */
function buildGuard<T>(rules: CompiledRules, ofClause: (clause: readonly CompiledMatch[]) => T[] | undefined): T[] | undefined {
  if (rules.length === 0) return undefined;
  const union = new Set<T>();
  for (const rule of rules) {
    let found: T[] | undefined;
    for (const clause of rule) {
      found = ofClause(clause);
      if (found !== undefined) break;
    }
    if (found === undefined) return undefined;
    for (const v of found) union.add(v);
  }
  return [...union];
}

/** A clause needs one of these principals when every match has only Exact principals. */
function principalGuardOfClause(clause: readonly CompiledMatch[]): string[] | undefined {
  const out: string[] = [];
  for (const m of clause) {
    if (m.principals.length === 0) return undefined;
    for (const s of m.principals) {
      if (s.kind !== EXACT) return undefined;
      out.push(s.value);
    }
  }
  return out;
}

function portGuardOfClause(clause: readonly CompiledMatch[]): number[] | undefined {
  const out: number[] = [];
  for (const m of clause) {
    if (m.destinationPorts.length === 0) return undefined;
    out.push(...m.destinationPorts);
  }
  return out;
}
