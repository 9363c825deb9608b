// Table-driven tests of L4 authorization (src/authorize): match fields, structure of rules,
// evaluation order, scopes, dry-run and the guard index. Semantics: https://github.com/istio/ztunnel/blob/master/src/rbac.rs

import t from 'tap';
import type { Authorization, Match, StringMatch, Workload } from '../../src/config/types.js';
import { buildAuthzConnection, findAuthzIdentity, PolicyStore, type AuthzConnection, type AuthzDecision } from '../../src/authorize/index.js';
import { buildMatch, buildPolicy, buildWorkload } from '../helpers/fixtures.js';

const CLIENT = 'spiffe://cluster.local/ns/default/sa/client';
const PRINCIPAL = 'cluster.local/ns/default/sa/client';

function workload(namespace = 'default', authorizationPolicies: string[] = []): Workload {
  return buildWorkload({ uid: `cluster1//v1/Pod/${namespace}/server`, namespace, authorizationPolicies });
}

/** A policy with one rule of one clause holding one Match. */
const one = (m: Partial<Match>, o: Partial<Omit<Authorization, 'rules'>> = {}): Authorization => buildPolicy([[[buildMatch(m)]]], o);

const exact = (value: string): StringMatch => ({ kind: 'Exact', value });
const prefix = (value: string): StringMatch => ({ kind: 'Prefix', value });
const suffix = (value: string): StringMatch => ({ kind: 'Suffix', value });
const presence: StringMatch = { kind: 'Presence' };

const mtls = buildAuthzConnection('10.0.0.1', '10.0.0.2', 8080, CLIENT);
const plaintext = buildAuthzConnection('10.0.0.1', '10.0.0.2', 8080, undefined);
const v6 = buildAuthzConnection('fd00::1', 'fd00::2', 8080, CLIENT);
const mappedV4 = buildAuthzConnection('::ffff:10.0.0.1', '::ffff:10.0.0.2', 8080, CLIENT);

/** 'allow', 'deny:<ns/name>', or 'deny:' for "allow policies exist, but none allowed". */
function summary(d: AuthzDecision): string {
  return d.kind === 'allow' ? 'allow' : `deny:${d.policy}`;
}

interface Row {
  name: string;
  policies: Authorization[];
  conn?: AuthzConnection;
  workload?: Workload;
  want: string;
}

/** The one assertion runRows needs, so the helper does not depend on tap's type names. */
interface Equal {
  equal(found: string, wanted: string, message: string): unknown;
}

function runRows(t: Equal, rows: Row[]): void {
  for (const row of rows) {
    const store = new PolicyStore(row.policies, () => {});
    const got = store.authorize(row.workload ?? workload(), row.conn ?? mtls);
    t.equal(summary(got), row.want, row.name);
  }
}

const DENIED = 'deny:default/p';

t.test('match fields (one Deny policy: deny ⇔ the Match holds)', async (t) => {
  const rows: Row[] = [
    // namespaces: StringMatch on the peer namespace; '' without an identity
    { name: 'namespaces Exact hit', policies: [one({ namespaces: [exact('default')] })], want: DENIED },
    { name: 'namespaces Exact miss', policies: [one({ namespaces: [exact('other')] })], want: 'allow' },
    { name: 'namespaces OR inside the group', policies: [one({ namespaces: [exact('other'), exact('default')] })], want: DENIED },
    { name: 'namespaces Prefix', policies: [one({ namespaces: [prefix('def')] })], want: DENIED },
    { name: 'namespaces Suffix', policies: [one({ namespaces: [suffix('ault')] })], want: DENIED },
    { name: 'namespaces Suffix miss', policies: [one({ namespaces: [suffix('xdefault')] })], want: 'allow' },
    { name: 'namespaces Presence', policies: [one({ namespaces: [presence] })], want: DENIED },
    { name: 'plaintext: namespaces Presence fails', policies: [one({ namespaces: [presence] })], conn: plaintext, want: 'allow' },
    { name: 'plaintext: namespaces Exact "" holds', policies: [one({ namespaces: [exact('')] })], conn: plaintext, want: DENIED },
    { name: 'plaintext: namespaces Prefix "" holds', policies: [one({ namespaces: [prefix('')] })], conn: plaintext, want: DENIED },
    { name: 'notNamespaces hit → group fails', policies: [one({ notNamespaces: [exact('default')] })], want: 'allow' },
    { name: 'notNamespaces miss → group holds', policies: [one({ notNamespaces: [exact('other')] })], want: DENIED },
    { name: 'notNamespaces: any value matching fails it', policies: [one({ notNamespaces: [exact('other'), prefix('d')] })], want: 'allow' },
    { name: 'plaintext: notNamespaces Exact default holds', policies: [one({ notNamespaces: [exact('default')] })], conn: plaintext, want: DENIED },
    { name: 'plaintext: notNamespaces Presence holds', policies: [one({ notNamespaces: [presence] })], conn: plaintext, want: DENIED },

    // principals: identity without spiffe://; nothing matches without an identity
    { name: 'principals Exact hit', policies: [one({ principals: [exact(PRINCIPAL)] })], want: DENIED },
    { name: 'principals Exact with spiffe:// never matches', policies: [one({ principals: [exact(CLIENT)] })], want: 'allow' },
    { name: 'principals Prefix', policies: [one({ principals: [prefix('cluster.local/ns/default/')] })], want: DENIED },
    { name: 'principals Prefix miss', policies: [one({ principals: [prefix('cluster.local/ns/other/')] })], want: 'allow' },
    { name: 'principals Suffix', policies: [one({ principals: [suffix('/sa/client')] })], want: DENIED },
    { name: 'principals Suffix miss', policies: [one({ principals: [suffix('/sa/other')] })], want: 'allow' },
    { name: 'principals Presence', policies: [one({ principals: [presence] })], want: DENIED },
    { name: 'plaintext: principals Presence fails', policies: [one({ principals: [presence] })], conn: plaintext, want: 'allow' },
    { name: 'plaintext: principals Prefix "" fails', policies: [one({ principals: [prefix('')] })], conn: plaintext, want: 'allow' },
    { name: 'notPrincipals hit → fails', policies: [one({ notPrincipals: [exact(PRINCIPAL)] })], want: 'allow' },
    { name: 'notPrincipals miss → holds', policies: [one({ notPrincipals: [exact('cluster.local/ns/x/sa/y')] })], want: DENIED },
    { name: 'plaintext: notPrincipals Exact holds', policies: [one({ notPrincipals: [exact(PRINCIPAL)] })], conn: plaintext, want: DENIED },
    { name: 'plaintext: notPrincipals Presence holds', policies: [one({ notPrincipals: [presence] })], conn: plaintext, want: DENIED },
    { name: 'plaintext: notPrincipals Prefix "" holds', policies: [one({ notPrincipals: [prefix('')] })], conn: plaintext, want: DENIED },

    // serviceAccounts: exact namespace + service account
    { name: 'serviceAccounts hit', policies: [one({ serviceAccounts: [{ namespace: 'default', serviceAccount: 'client' }] })], want: DENIED },
    { name: 'serviceAccounts wrong ns', policies: [one({ serviceAccounts: [{ namespace: 'other', serviceAccount: 'client' }] })], want: 'allow' },
    { name: 'serviceAccounts wrong sa', policies: [one({ serviceAccounts: [{ namespace: 'default', serviceAccount: 'other' }] })], want: 'allow' },
    {
      name: 'serviceAccounts OR',
      policies: [one({ serviceAccounts: [{ namespace: 'x', serviceAccount: 'y' }, { namespace: 'default', serviceAccount: 'client' }] })],
      want: DENIED,
    },
    {
      name: 'plaintext: serviceAccounts fails',
      policies: [one({ serviceAccounts: [{ namespace: '', serviceAccount: '' }] })],
      conn: plaintext,
      want: 'allow',
    },
    { name: 'notServiceAccounts hit → fails', policies: [one({ notServiceAccounts: [{ namespace: 'default', serviceAccount: 'client' }] })], want: 'allow' },
    { name: 'notServiceAccounts miss → holds', policies: [one({ notServiceAccounts: [{ namespace: 'default', serviceAccount: 'x' }] })], want: DENIED },
    {
      name: 'plaintext: notServiceAccounts holds',
      policies: [one({ notServiceAccounts: [{ namespace: 'default', serviceAccount: 'client' }] })],
      conn: plaintext,
      want: DENIED,
    },

    // IPs
    { name: 'sourceIps CIDR hit', policies: [one({ sourceIps: ['10.0.0.0/24'] })], want: DENIED },
    { name: 'sourceIps CIDR miss', policies: [one({ sourceIps: ['10.0.1.0/24'] })], want: 'allow' },
    { name: 'sourceIps bare IP = /32', policies: [one({ sourceIps: ['10.0.0.1'] })], want: DENIED },
    { name: 'sourceIps is the source, not the destination', policies: [one({ sourceIps: ['10.0.0.2/32'] })], want: 'allow' },
    { name: 'sourceIps OR', policies: [one({ sourceIps: ['192.168.0.0/16', '10.0.0.0/8'] })], want: DENIED },
    { name: 'sourceIps /0', policies: [one({ sourceIps: ['0.0.0.0/0'] })], want: DENIED },
    { name: 'notSourceIps hit → fails', policies: [one({ notSourceIps: ['10.0.0.0/24'] })], want: 'allow' },
    { name: 'notSourceIps miss → holds', policies: [one({ notSourceIps: ['192.168.0.0/16'] })], want: DENIED },
    { name: 'plaintext: sourceIps still apply', policies: [one({ sourceIps: ['10.0.0.1/32'] })], conn: plaintext, want: DENIED },
    { name: 'destinationIps hit', policies: [one({ destinationIps: ['10.0.0.2/32'] })], want: DENIED },
    { name: 'destinationIps is the destination, not the source', policies: [one({ destinationIps: ['10.0.0.1/32'] })], want: 'allow' },
    { name: 'notDestinationIps hit → fails', policies: [one({ notDestinationIps: ['10.0.0.0/30'] })], want: 'allow' },
    { name: 'notDestinationIps miss → holds', policies: [one({ notDestinationIps: ['10.0.0.1/32'] })], want: DENIED },

    // IPv6 and mapped IPv4
    { name: 'v6: sourceIps /64 hit', policies: [one({ sourceIps: ['fd00::/64'] })], conn: v6, want: DENIED },
    { name: 'v6: v4 CIDR never holds', policies: [one({ sourceIps: ['0.0.0.0/0'] })], conn: v6, want: 'allow' },
    { name: 'v6: notSourceIps v4 /0 holds', policies: [one({ notSourceIps: ['0.0.0.0/0'] })], conn: v6, want: DENIED },
    { name: 'v6: notSourceIps hit → fails', policies: [one({ notSourceIps: ['fd00::/64'] })], conn: v6, want: 'allow' },
    { name: 'v6: destinationIps /128', policies: [one({ destinationIps: ['fd00::2/128'] })], conn: v6, want: DENIED },
    { name: 'v6: destinationIps /127 excludes ::2', policies: [one({ destinationIps: ['fd00::/127'] })], conn: v6, want: 'allow' },
    { name: 'v6: destinationIps /126 includes ::2', policies: [one({ destinationIps: ['fd00::/126'] })], conn: v6, want: DENIED },
    { name: 'mapped v4 source matches a v4 CIDR', policies: [one({ sourceIps: ['10.0.0.0/8'] })], conn: mappedV4, want: DENIED },
    { name: 'mapped v4 destination matches a v4 CIDR', policies: [one({ destinationIps: ['10.0.0.2'] })], conn: mappedV4, want: DENIED },

    // ports: the destination (target) port
    { name: 'destinationPorts hit', policies: [one({ destinationPorts: [8080] })], want: DENIED },
    { name: 'destinationPorts OR', policies: [one({ destinationPorts: [80, 8080] })], want: DENIED },
    { name: 'destinationPorts miss', policies: [one({ destinationPorts: [80] })], want: 'allow' },
    { name: 'notDestinationPorts hit → fails', policies: [one({ notDestinationPorts: [8080] })], want: 'allow' },
    { name: 'notDestinationPorts miss → holds', policies: [one({ notDestinationPorts: [80, 443] })], want: DENIED },

    // AND across groups inside one Match
    { name: 'AND: port holds, principal does not', policies: [one({ destinationPorts: [8080], principals: [exact('x')] })], want: 'allow' },
    { name: 'AND: both hold', policies: [one({ destinationPorts: [8080], principals: [exact(PRINCIPAL)] })], want: DENIED },
    {
      name: 'AND: positive and negative groups together',
      policies: [one({ namespaces: [presence], notPrincipals: [suffix('/sa/admin')], sourceIps: ['10.0.0.0/8'], notDestinationPorts: [22] })],
      want: DENIED,
    },
    {
      name: 'AND: one failing negative group fails the Match',
      policies: [one({ namespaces: [presence], notPrincipals: [suffix('/sa/client')], sourceIps: ['10.0.0.0/8'] })],
      want: 'allow',
    },
  ];
  runRows(t, rows);
});

t.test('structure of rules, clauses and matches', async (t) => {
  const empty = buildMatch();
  const port = (p: number): Match => buildMatch({ destinationPorts: [p] });
  const ns = (n: string): Match => buildMatch({ namespaces: [exact(n)] });
  const rows: Row[] = [
    { name: 'no rules: never matches', policies: [buildPolicy([])], want: 'allow' },
    { name: 'a rule with zero clauses matches', policies: [buildPolicy([[]])], want: DENIED },
    { name: 'a clause with zero matches matches', policies: [buildPolicy([[[]]])], want: DENIED },
    { name: 'an all-empty Match is skipped: its clause cannot match', policies: [buildPolicy([[[empty]]])], want: 'allow' },
    { name: 'an all-empty Match next to a holding Match', policies: [buildPolicy([[[empty, port(8080)]]])], want: DENIED },
    { name: 'an all-empty Match next to a failing Match', policies: [buildPolicy([[[empty, port(80)]]])], want: 'allow' },
    { name: 'a vacuous clause does not rescue a failing one', policies: [buildPolicy([[[], [port(80)]]])], want: 'allow' },
    { name: 'a vacuous clause next to a holding one', policies: [buildPolicy([[[], [port(8080)]]])], want: DENIED },
    { name: 'rules are OR-ed', policies: [buildPolicy([[[port(80)]], [[port(8080)]]])], want: DENIED },
    { name: 'a never-matching rule does not stop a matching-all rule', policies: [buildPolicy([[[empty]], []])], want: DENIED },
    { name: 'clauses are AND-ed (one fails)', policies: [buildPolicy([[[port(8080)], [ns('other')]]])], want: 'allow' },
    { name: 'clauses are AND-ed (all hold)', policies: [buildPolicy([[[port(8080)], [ns('default')]]])], want: DENIED },
    { name: 'matches inside a clause are OR-ed', policies: [buildPolicy([[[port(80), ns('default')]]])], want: DENIED },
    { name: 'matches inside a clause, none holds', policies: [buildPolicy([[[port(80), ns('other')]]])], want: 'allow' },
    { name: 'an Allow policy with no rules allows nothing', policies: [buildPolicy([], { action: 'Allow' })], want: 'deny:' },
  ];
  runRows(t, rows);
});

t.test('invalid CIDRs are dropped (as upstream conversion does) and logged', async (t) => {
  const logs: string[] = [];
  const store = new PolicyStore([one({ sourceIps: ['10.0.0.0/33'] }, { name: 'a' }), one({ sourceIps: ['bogus'], destinationPorts: [8080] }, { name: 'b' })], (msg, f) =>
    logs.push(`${msg} ${JSON.stringify(f)}`),
  );
  t.equal(logs.length, 2, 'each bad CIDR logged at construction');
  t.match(logs[0], /invalid CIDR.*default\/a.*10\.0\.0\.0\/33/);
  // a: its only group is gone, the Match is empty and skipped; b: still has its port group.
  t.equal(summary(store.authorize(workload(), mtls)), 'deny:default/b');
  t.equal(summary(store.authorize(workload(), buildAuthzConnection('10.0.0.1', '10.0.0.2', 80, CLIENT))), 'allow');
});

t.test('evaluation order', async (t) => {
  const hit = { namespaces: [exact('default')] };
  const miss = { namespaces: [exact('other')] };
  const rows: Row[] = [
    { name: 'no policies ⇒ allow', policies: [], want: 'allow' },
    { name: 'only a non-matching Deny ⇒ allow', policies: [one(miss)], want: 'allow' },
    { name: 'a matching Allow ⇒ allow', policies: [one(hit, { action: 'Allow' })], want: 'allow' },
    { name: 'Allow policies, none matches ⇒ deny', policies: [one(miss, { action: 'Allow' })], want: 'deny:' },
    {
      name: 'one of two Allow policies matches ⇒ allow',
      policies: [one(miss, { action: 'Allow', name: 'a' }), one(hit, { action: 'Allow', name: 'b' })],
      want: 'allow',
    },
    { name: 'Deny beats Allow', policies: [one(hit, { action: 'Allow', name: 'a' }), one(hit, { name: 'd' })], want: 'deny:default/d' },
    { name: 'non-matching Deny + matching Allow ⇒ allow', policies: [one(miss, { name: 'd' }), one(hit, { action: 'Allow', name: 'a' })], want: 'allow' },
    { name: 'dry-run Deny does not deny', policies: [one(hit, { dryRun: true })], want: 'allow' },
    { name: 'dry-run Allow does not allow', policies: [one(hit, { action: 'Allow', dryRun: true, name: 'a' }), one(miss, { action: 'Allow', name: 'b' })], want: 'deny:' },
    { name: 'a non-matching dry-run Allow does not deny', policies: [one(miss, { action: 'Allow', dryRun: true })], want: 'allow' },
    {
      name: 'first matching Deny in store order is reported',
      policies: [one(miss, { name: 'd0', scope: 'Global' }), one(hit, { name: 'd1', scope: 'Global' }), one(hit, { name: 'd2', scope: 'Global' })],
      want: 'deny:default/d1',
    },
    {
      name: 'namespace scope is reported before Global',
      policies: [one(hit, { name: 'g', scope: 'Global', namespace: 'istio-system' }), one(hit, { name: 'n' })],
      want: 'deny:default/n',
    },
  ];
  runRows(t, rows);

  const d = new PolicyStore([one(hit, { name: 'deny-all' })]).authorize(workload(), mtls);
  t.same(d, { kind: 'deny', policy: 'default/deny-all', reason: 'explicitly denied by: default/deny-all' }, 'explicit deny decision');
  const n = new PolicyStore([one(miss, { action: 'Allow' })]).authorize(workload(), mtls);
  t.same(n, { kind: 'deny', policy: '', reason: 'allow policies exist, but none allowed' }, 'none-allowed decision');
  t.same(new PolicyStore([]).authorize(workload(), mtls), { kind: 'allow' }, 'allow decision has no notes');
});

t.test('dry-run policies are logged, never enforced', async (t) => {
  const logs: { msg: string; fields: Record<string, unknown> }[] = [];
  const log = (msg: string, fields: object): void => void logs.push({ msg, fields: fields as Record<string, unknown> });
  const hit = { principals: [exact(PRINCIPAL)] };
  const miss = { principals: [exact('nobody')] };

  const store = new PolicyStore([one(hit, { name: 'dry-deny', dryRun: true }), one(hit, { name: 'dry-allow', action: 'Allow', dryRun: true })], log);
  const d = store.authorize(workload(), mtls);
  t.equal(d.kind, 'allow');
  t.same(d.dryRunNotes, ['dry-run: would be denied by default/dry-deny', 'dry-run: would be allowed by default/dry-allow']);
  t.same(
    logs.map((l) => [l.msg, l.fields.policy]),
    [
      ['dry-run deny policy matched', 'default/dry-deny'],
      ['dry-run allow policy matched', 'default/dry-allow'],
    ],
  );
  t.equal(logs[0]?.fields.srcIdentity, PRINCIPAL);
  t.equal(logs[0]?.fields.dstPort, 8080);

  logs.length = 0;
  const d2 = new PolicyStore([one(miss, { name: 'dry-allow', action: 'Allow', dryRun: true })], log).authorize(workload(), mtls);
  t.same(d2, { kind: 'allow', dryRunNotes: ['dry-run: would be denied: allow policies exist, but none allowed'] });
  t.equal(logs.length, 1);

  logs.length = 0;
  const d3 = new PolicyStore([one(hit, { name: 'deny' }), one(hit, { name: 'dry', dryRun: true })], log).authorize(workload(), mtls);
  t.equal(summary(d3), 'deny:default/deny', 'enforced deny still decides');
  t.same(d3.dryRunNotes, ['dry-run: would be denied by default/dry']);

  logs.length = 0;
  const d4 = new PolicyStore([one(miss, { name: 'dry', dryRun: true }), one(hit, { name: 'enforced', action: 'Allow' })], log).authorize(workload(), mtls);
  t.same(d4, { kind: 'allow' }, 'a non-matching dry-run Deny leaves no note');
  t.equal(logs.length, 0, 'and logs nothing');

  logs.length = 0;
  const elsewhere = new PolicyStore([one(hit, { namespace: 'other', dryRun: true }), one(hit, { namespace: 'other', action: 'Allow', dryRun: true })], log);
  t.same(elsewhere.authorize(workload(), mtls), { kind: 'allow' }, "another namespace's dry-run policies do not apply");
  t.equal(logs.length, 0, 'and log nothing');

  logs.length = 0;
  const sel = one(hit, { name: 'sel', scope: 'WorkloadSelector', dryRun: true });
  const s = new PolicyStore([sel], log);
  t.same(s.authorize(workload(), mtls), { kind: 'allow' }, 'a dry-run selector policy not named does not apply');
  t.same(s.authorize(workload('default', ['default/sel']), mtls).dryRunNotes, ['dry-run: would be denied by default/sel'], 'named: it does');
});

t.test('scopes', async (t) => {
  const hit = { destinationPorts: [8080] };
  const rows: Row[] = [
    { name: 'Global applies to every namespace', policies: [one(hit, { scope: 'Global', namespace: 'istio-system' })], workload: workload('x'), want: 'deny:istio-system/p' },
    { name: 'Namespace applies to its own namespace', policies: [one(hit, { namespace: 'x' })], workload: workload('x'), want: 'deny:x/p' },
    { name: 'Namespace of another namespace does not apply', policies: [one(hit, { namespace: 'y' })], workload: workload('x'), want: 'allow' },
    {
      name: 'an Allow in another namespace does not make allow policies exist',
      policies: [one({ destinationPorts: [1] }, { namespace: 'y', action: 'Allow' })],
      workload: workload('x'),
      want: 'allow',
    },
    { name: 'WorkloadSelector not named: does not apply', policies: [one(hit, { scope: 'WorkloadSelector' })], want: 'allow' },
    { name: 'WorkloadSelector named: applies', policies: [one(hit, { scope: 'WorkloadSelector' })], workload: workload('default', ['default/p']), want: DENIED },
    {
      name: 'WorkloadSelector from another namespace, named: applies',
      policies: [one(hit, { scope: 'WorkloadSelector', namespace: 'y' })],
      workload: workload('default', ['y/p']),
      want: 'deny:y/p',
    },
    {
      name: 'named selector Allow that does not match ⇒ deny',
      policies: [one({ destinationPorts: [1] }, { scope: 'WorkloadSelector', action: 'Allow' })],
      workload: workload('default', ['default/p']),
      want: 'deny:',
    },
    {
      name: 'named selector Allow that matches ⇒ allow',
      policies: [one(hit, { scope: 'WorkloadSelector', action: 'Allow' })],
      workload: workload('default', ['default/p']),
      want: 'allow',
    },
    {
      name: 'an unnamed selector Allow does not make allow policies exist',
      policies: [one({ destinationPorts: [1] }, { scope: 'WorkloadSelector', action: 'Allow' })],
      want: 'allow',
    },
    {
      name: 'named selector Deny beats a namespace Allow',
      policies: [one(hit, { name: 'a', action: 'Allow' }), one(hit, { name: 's', scope: 'WorkloadSelector' })],
      workload: workload('default', ['default/s']),
      want: 'deny:default/s',
    },
    {
      name: 'a named Global policy counts once (its Allow still matches)',
      policies: [one(hit, { scope: 'Global', action: 'Allow', namespace: 'istio-system' })],
      workload: workload('default', ['istio-system/p']),
      want: 'allow',
    },
    { name: 'a later policy with the same key replaces the earlier', policies: [one(hit), one({ destinationPorts: [1] })], want: 'allow' },
  ];
  runRows(t, rows);
});

t.test('unknown policy names are skipped and warned once per name', async (t) => {
  const logs: { msg: string; fields: object }[] = [];
  const store = new PolicyStore([one({ destinationPorts: [8080] }, { scope: 'WorkloadSelector', name: 'known' })], (msg, fields) => logs.push({ msg, fields }));
  const w = workload('default', ['default/missing', 'default/known']);
  t.equal(summary(store.authorize(w, mtls)), 'deny:default/known');
  t.equal(summary(store.authorize(w, mtls)), 'deny:default/known');
  t.equal(summary(store.authorize(workload('default', ['default/missing']), mtls)), 'allow');
  t.equal(logs.length, 1, 'warned once');
  t.match(logs[0], { msg: /unknown authorization policy/, fields: { policy: 'default/missing', workload: 'default/server' } });
  t.equal(store.size, 1);
  t.ok(store.has('default/known'));
  t.notOk(store.has('default/missing'));
});

t.test('guard index gives the same answers as a full scan', async (t) => {
  const other = buildAuthzConnection('10.0.0.1', '10.0.0.2', 9090, 'spiffe://cluster.local/ns/default/sa/other');
  const g = (name: string, m: Partial<Match>): Authorization => one(m, { name, scope: 'Global' });
  const rows: Row[] = [
    { name: 'principal-guarded hit', policies: [g('a', { principals: [exact(PRINCIPAL)] })], want: 'deny:default/a' },
    { name: 'principal-guarded miss', policies: [g('a', { principals: [exact(PRINCIPAL)] })], conn: other, want: 'allow' },
    { name: 'principal-guarded, plaintext', policies: [g('a', { principals: [exact(PRINCIPAL)] })], conn: plaintext, want: 'allow' },
    { name: 'port-guarded, second port', policies: [g('a', { destinationPorts: [80, 9090] })], conn: other, want: 'deny:default/a' },
    {
      name: 'a rule without a guard disables the index for the policy',
      policies: [buildPolicy([[[buildMatch({ principals: [exact('nobody')] })]], [[buildMatch({ destinationPorts: [9090] })]]], { scope: 'Global', name: 'mixed' })],
      conn: other,
      want: 'deny:default/mixed',
    },
    {
      name: 'guarded policy earlier in order is reported before an unguarded one',
      policies: [g('guarded', { principals: [exact(PRINCIPAL)] }), g('unguarded', { namespaces: [presence] })],
      want: 'deny:default/guarded',
    },
    {
      name: 'unguarded policy earlier in order is reported before a guarded one',
      policies: [g('unguarded', { namespaces: [presence] }), g('port', { destinationPorts: [8080] }), g('guarded', { principals: [exact(PRINCIPAL)] })],
      want: 'deny:default/unguarded',
    },
    {
      name: 'port-guarded before principal-guarded',
      policies: [g('port', { destinationPorts: [8080] }), g('guarded', { principals: [exact(PRINCIPAL)] })],
      want: 'deny:default/port',
    },
    {
      name: 'a Prefix principal is not a guard',
      policies: [g('a', { principals: [exact('nobody'), prefix('cluster.local/')] })],
      want: 'deny:default/a',
    },
    {
      name: 'many non-matching guarded Allow policies, one matching',
      policies: [
        ...Array.from({ length: 50 }, (_, i) => one({ principals: [exact(`td/ns/x/sa/${i}`)] }, { name: `a${i}`, action: 'Allow', scope: 'Global' })),
        one({ principals: [exact(PRINCIPAL)], destinationPorts: [8080] }, { name: 'yes', action: 'Allow', scope: 'Global' }),
      ],
      want: 'allow',
    },
  ];
  runRows(t, rows);
});

t.test('buildAuthzConnection', async (t) => {
  t.same(findAuthzIdentity(CLIENT), { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'client', principal: PRINCIPAL });
  for (const bad of ['cluster.local/ns/default/sa/client', 'spiffe://td/ns/a/sa', 'spiffe://td/ns/a/sa/b/c', 'spiffe://td/x/a/sa/b', 'spiffe://td/ns//sa/b', 'spiffe:///ns/a/sa/b']) {
    t.equal(findAuthzIdentity(bad), undefined, `not an identity: ${bad}`);
  }
  const c = buildAuthzConnection('::ffff:10.1.2.3', 'fd00::0002', 15008, undefined);
  t.equal(c.srcIp.text, '10.1.2.3', 'mapped source becomes v4');
  t.equal(c.dstIp.text, 'fd00::2');
  t.equal(c.dstPort, 15008);
  t.equal(c.srcIdentity, undefined);
  t.throws(() => buildAuthzConnection('nope', '10.0.0.1', 1, undefined), TypeError);
  t.throws(() => buildAuthzConnection('10.0.0.1', '', 1, undefined), TypeError);
});
