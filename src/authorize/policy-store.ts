// PolicyStore: all Authorization policies compiled once per config change, indexed by scope
// (Namespace → per namespace, Global, WorkloadSelector → by `namespace/name` key) and, inside
// a scope, by a necessary principal or destination port so most non-matching policies are
// never visited. authorize() follows upstream's evaluation order (https://github.com/istio/ztunnel/blob/master/src/rbac.rs).
// Must never allocate on the allow path or for non-matching policies, never throw for a
// policy it was given, and never log per connection unless dry-run policies exist (or a
// workload names an unknown policy, which is warned once per name).
// Invariant: a store is immutable after construction; a config change builds a new store.

import type { Authorization, Workload } from '../config/types.js';
import type { AuthzConnection } from './authz-connection.js';
import { CompiledPolicy, policyMatches, type AuthzDecision } from './compiled-policy.js';

export type AuthzLog = (msg: string, fields: object) => void;

const NO_POLICIES: readonly CompiledPolicy[] = Object.freeze([]);

const ALLOW: AuthzDecision = Object.freeze({ kind: 'allow' } as const);
const NONE_ALLOWED: AuthzDecision = Object.freeze({
  kind: 'deny',
  policy: '',
  reason: 'allow policies exist, but none allowed',
} as const);

/** Policies of one kind (e.g. enforced Deny) in one scope, in store order, indexed by guard. */
class PolicyList {
  readonly all: readonly CompiledPolicy[];
  readonly unguarded: readonly CompiledPolicy[];
  readonly byPrincipal: ReadonlyMap<string, readonly CompiledPolicy[]>;
  readonly byPort: ReadonlyMap<number, readonly CompiledPolicy[]>;

  constructor(policies: readonly CompiledPolicy[]) {
    const unguarded: CompiledPolicy[] = [];
    const byPrincipal = new Map<string, CompiledPolicy[]>();
    const byPort = new Map<number, CompiledPolicy[]>();
    const add = <K>(index: Map<K, CompiledPolicy[]>, key: K, p: CompiledPolicy): void => {
      const list = index.get(key);
      if (list === undefined) index.set(key, [p]);
      else if (list[list.length - 1] !== p) list.push(p);
    };
    for (const p of policies) {
      if (p.guardPrincipals !== undefined) for (const v of p.guardPrincipals) add(byPrincipal, v, p);
      else if (p.guardPorts !== undefined) for (const v of p.guardPorts) add(byPort, v, p);
      else unguarded.push(p);
    }
    this.all = policies;
    this.unguarded = unguarded;
    this.byPrincipal = byPrincipal;
    this.byPort = byPort;
  }

  get size(): number {
    return this.all.length;
  }

  /** The matching policy that comes first in store order, if any. */
  findFirstMatch(conn: AuthzConnection): CompiledPolicy | undefined {
    if (this.all.length === 0) return undefined;
    let best = firstMatchIn(this.unguarded, conn);
    const byPort = this.byPort.get(conn.dstPort);
    if (byPort !== undefined) best = earlier(best, firstMatchIn(byPort, conn));
    const id = conn.srcIdentity;
    if (id !== undefined) {
      const byPrincipal = this.byPrincipal.get(id.principal);
      if (byPrincipal !== undefined) best = earlier(best, firstMatchIn(byPrincipal, conn));
    }
    return best;
  }
}

function firstMatchIn(list: readonly CompiledPolicy[], conn: AuthzConnection): CompiledPolicy | undefined {
  for (let i = 0; i < list.length; i++) {
    const p = list[i]!;
    if (policyMatches(p, conn)) return p;
  }
  return undefined;
}

function earlier(a: CompiledPolicy | undefined, b: CompiledPolicy | undefined): CompiledPolicy | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return a.order <= b.order ? a : b;
}

/** The four kinds of policy in one scope. */
class ScopePolicies {
  readonly denyEnforced: PolicyList;
  readonly denyDryRun: PolicyList;
  readonly allowEnforced: PolicyList;
  readonly allowDryRun: PolicyList;

  constructor(policies: readonly CompiledPolicy[]) {
    const pick = (action: Authorization['action'], dryRun: boolean): PolicyList =>
      new PolicyList(policies.filter((p) => p.action === action && p.dryRun === dryRun));
    this.denyEnforced = pick('Deny', false);
    this.denyDryRun = pick('Deny', true);
    this.allowEnforced = pick('Allow', false);
    this.allowDryRun = pick('Allow', true);
  }
}

const NO_SCOPE_POLICIES = new ScopePolicies(NO_POLICIES);

export class PolicyStore {
  readonly size: number;
  private readonly global: ScopePolicies;
  private readonly byNamespace: ReadonlyMap<string, ScopePolicies>;
  /** Every policy by `namespace/name`, for the names workloads list in `authorizationPolicies`. */
  private readonly byKey: ReadonlyMap<string, CompiledPolicy>;
  private readonly dryRunCount: number;
  private readonly log: AuthzLog | undefined;
  private readonly warnedUnknown: Set<string>;

  constructor(policies: readonly Authorization[], log?: AuthzLog) {
    this.log = log;
    this.warnedUnknown = new Set();
    // Like an xDS upsert, a later policy with the same key replaces the earlier one.
    const latest = new Map<string, Authorization>();
    for (const p of policies) latest.set(`${p.namespace}/${p.name}`, p);
    const compiled: CompiledPolicy[] = [];
    for (const p of latest.values()) {
      const key = `${p.namespace}/${p.name}`;
      compiled.push(
        new CompiledPolicy(p, compiled.length, (cidr) => log?.('authorization policy has an invalid CIDR; ignoring it', { policy: key, cidr })),
      );
    }
    const byKey = new Map<string, CompiledPolicy>();
    const namespaced = new Map<string, CompiledPolicy[]>();
    for (const p of compiled) {
      byKey.set(p.key, p);
      if (p.scope !== 'Namespace') continue;
      const list = namespaced.get(p.namespace);
      if (list === undefined) namespaced.set(p.namespace, [p]);
      else list.push(p);
    }
    const byNamespace = new Map<string, ScopePolicies>();
    for (const [ns, list] of namespaced) byNamespace.set(ns, new ScopePolicies(list));
    this.global = new ScopePolicies(compiled.filter((p) => p.scope === 'Global'));
    this.byNamespace = byNamespace;
    this.byKey = byKey;
    this.size = compiled.length;
    this.dryRunCount = compiled.filter((p) => p.dryRun).length;
  }

  /** Whether a policy of this key exists (any scope). */
  has(key: string): boolean {
    return this.byKey.has(key);
  }

  authorize(workload: Workload, conn: AuthzConnection): AuthzDecision {
    const ns = this.byNamespace.get(workload.namespace) ?? NO_SCOPE_POLICIES;
    const global = this.global;
    const named = workload.authorizationPolicies;
    const dryRunNotes = this.dryRunCount === 0 ? undefined : this.evaluateDryRun(workload, conn, ns);

    // Namespace scope, then Global, then named policies: the first enforced Deny match wins.
    let deny = ns.denyEnforced.findFirstMatch(conn) ?? global.denyEnforced.findFirstMatch(conn);
    if (deny === undefined) {
      for (let i = 0; i < named.length; i++) {
        const p = this.findNamed(workload, named[i]!);
        if (p !== undefined && p.action === 'Deny' && !p.dryRun && policyMatches(p, conn)) {
          deny = p;
          break;
        }
      }
    }
    if (deny !== undefined) return withNotes(deny.denyDecision, dryRunNotes);

    let allowPolicies = ns.allowEnforced.size + global.allowEnforced.size;
    if (allowPolicies !== 0 && (ns.allowEnforced.findFirstMatch(conn) ?? global.allowEnforced.findFirstMatch(conn)) !== undefined) {
      return withNotes(ALLOW, dryRunNotes);
    }
    for (let i = 0; i < named.length; i++) {
      const p = this.findNamed(workload, named[i]!);
      if (p === undefined || p.action !== 'Allow' || p.dryRun) continue;
      allowPolicies++;
      if (policyMatches(p, conn)) return withNotes(ALLOW, dryRunNotes);
    }
    return withNotes(allowPolicies === 0 ? ALLOW : NONE_ALLOWED, dryRunNotes);
  }

  /**
   * A policy named by the workload that is not already applied through its scope (a named
   * Global policy, or a Namespace policy of the workload's own namespace, counts once).
   */
  private findNamed(workload: Workload, key: string): CompiledPolicy | undefined {
    const p = this.byKey.get(key);
    if (p === undefined) {
      if (!this.warnedUnknown.has(key)) {
        this.warnedUnknown.add(key);
        this.log?.('workload names an unknown authorization policy; skipping it', {
          policy: key,
          workload: `${workload.namespace}/${workload.name}`,
        });
      }
      return undefined;
    }
    if (p.scope === 'Global' || (p.scope === 'Namespace' && p.namespace === workload.namespace)) return undefined;
    return p;
  }

  /**
   * Dry-run policies are evaluated and logged only; their outcome never decides. This path
   * may allocate, but only when a dry-run policy applies to the workload.
   */
  private evaluateDryRun(workload: Workload, conn: AuthzConnection, ns: ScopePolicies): string[] | undefined {
    let named: CompiledPolicy[] | undefined;
    for (const key of workload.authorizationPolicies) {
      const p = this.findNamed(workload, key);
      if (p !== undefined && p.dryRun) (named ??= []).push(p);
    }
    const global = this.global;
    const scoped = ns.denyDryRun.size + ns.allowDryRun.size + global.denyDryRun.size + global.allowDryRun.size;
    if (scoped === 0 && named === undefined) return undefined;
    const denies = [...ns.denyDryRun.all, ...global.denyDryRun.all, ...(named ?? []).filter((p) => p.action === 'Deny')];
    const allows = [...ns.allowDryRun.all, ...global.allowDryRun.all, ...(named ?? []).filter((p) => p.action === 'Allow')];
    const notes: string[] = [];
    const fields = (policy: string): object => ({
      policy,
      workload: `${workload.namespace}/${workload.name}`,
      src: conn.srcIp.text,
      dst: conn.dstIp.text,
      dstPort: conn.dstPort,
      srcIdentity: conn.srcIdentity?.principal,
    });
    for (const p of denies) {
      if (!policyMatches(p, conn)) continue;
      notes.push(`dry-run: would be denied by ${p.key}`);
      this.log?.('dry-run deny policy matched', fields(p.key));
    }
    let allowed = false;
    for (const p of allows) {
      if (!policyMatches(p, conn)) continue;
      allowed = true;
      notes.push(`dry-run: would be allowed by ${p.key}`);
      this.log?.('dry-run allow policy matched', fields(p.key));
    }
    if (allows.length !== 0 && !allowed) {
      notes.push('dry-run: would be denied: allow policies exist, but none allowed');
      this.log?.('dry-run allow policies exist, but none matched; would be denied', fields(''));
    }
    return notes.length === 0 ? undefined : notes;
  }
}

function withNotes(decision: AuthzDecision, notes: readonly string[] | undefined): AuthzDecision {
  return notes === undefined ? decision : { ...decision, dryRunNotes: notes };
}
