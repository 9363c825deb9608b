// Fuzz: the HBONE header code (src/tunnel/hbone-headers.ts). forwardedHost against a
// grammar-generated RFC 7239 header with a known host; buildBaggage against the W3C Baggage
// grammar (the header must be one Node's HTTP/2 stack accepts, and every value must decode back).
// Seeds: test/helpers/fuzz.ts.
import t from 'tap';
import fc from 'fast-check';
import { buildBaggage, buildForwarded, forwardedHost } from '../../src/tunnel/hbone-headers.js';
import type { Workload } from '../../src/config/types.js';
import { fuzz } from '../helpers/fuzz.js';

const TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const token = fc.string({ unit: fc.constantFrom(...TCHARS), minLength: 1, maxLength: 12 });
const qchar = fc.oneof(fc.constantFrom(...' \t;,="\\'), fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 1 }), fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)));
const ows = fc.constantFrom('', ' ', '  ', '\t');
const name = fc.oneof(fc.constantFrom('for', 'by', 'proto', 'host', 'Host', 'HOST'), token);
const value = fc.oneof(
  token.map((v) => ({ text: v, value: v })),
  fc.array(qchar, { maxLength: 10 }).map((cs) => {
    const v = cs.filter((c) => c !== '\x7f' && c >= ' ' || c === '\t').join('');
    return { text: `"${v.replace(/["\\]/g, (c) => `\\${c}`)}"`, value: v };
  }),
);
const pair = fc.tuple(name, value);
/** Elements of pairs, joined with ; and , and optional whitespace; plus the host it holds. */
const header = fc.tuple(fc.array(fc.array(fc.tuple(pair, ows, ows), { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 3 }), ows).map(([elements, lead]) => {
  let host: string | undefined;
  const text = elements
    .map((pairs) =>
      pairs
        .map(([[n, v], a, b]) => {
          if (host === undefined && n.toLowerCase() === 'host' && v.value !== '') host = v.value;
          return `${a}${n}=${v.text}${b}`;
        })
        .join(';'),
    )
    .join(',');
  return { text: lead + text, host };
});

t.test('forwardedHost: the host of a well-formed header, never one from inside a quoted string', async (t) => {
  fuzz(t, 'grammar', header, ({ text, host }) => {
    const got = forwardedHost(text);
    if (got !== host) throw new Error(`got ${JSON.stringify(got)}, expected ${JSON.stringify(host)}`);
  }, { runs: 4000, perInputMs: 2000 });
  fuzz(t, 'arbitrary', fc.oneof(fc.string({ maxLength: 80 }), fc.string({ unit: 'binary', maxLength: 40 }), header.map((h) => h.text.slice(0, -1))), (text) => {
    const got = forwardedHost(text);
    if (got !== undefined && (typeof got !== 'string' || got === '')) throw new Error(`got ${JSON.stringify(got)}`);
  }, { runs: 3000, perInputMs: 2000 });
  // Regressions. Found by this fuzzer (seed 686091654, input 'Host=!;!="",!=""'): Host= was not
  // read as a host (parameter names are case-insensitive). Found while writing the grammar model:
  // a host inside a quoted for= was taken, and a quoted host kept its quotes.
  t.equal(forwardedHost('for="10.0.0.1:5;host=evil.example"'), undefined);
  t.equal(forwardedHost('for="10.0.0.1:5";host="svc.ns.svc.cluster.local"'), 'svc.ns.svc.cluster.local');
  t.equal(forwardedHost('for="10.0.0.1:5";Host=svc.example'), 'svc.example');
  t.equal(forwardedHost(buildForwarded('[fd00::1]:4000', 'reviews.default.svc.cluster.local')), 'reviews.default.svc.cluster.local');
  t.equal(forwardedHost(buildForwarded('10.0.0.1:4000', undefined)), undefined);
  t.equal(forwardedHost(`${';'.repeat(20000)}host=${' '.repeat(20000)}x`), undefined, 'long malformed input: one pass, no match');
});

const free = fc.oneof(fc.string({ maxLength: 8 }), fc.string({ unit: 'binary', maxLength: 6 }), fc.constantFrom('', 'v1', 'default', 'a,b', 'x=y', 'p%20q', 'us-east1'));
const workload = fc.record({ clusterId: free, namespace: free, workloadType: fc.oneof(free, fc.constantFrom('Deployment', 'pod', 'CronJob')), workloadName: free, canonicalName: free, canonicalRevision: free, region: free, zone: free }).map(
  (r) => ({ ...r, locality: { region: r.region, zone: r.zone, subzone: '' } }) as unknown as Workload,
);
// W3C Baggage: list-member = key OWS "=" OWS value; key = token; value = *baggage-octet.
const MEMBER = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+=[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*$/;

t.test('buildBaggage: a W3C baggage header whose values decode back', async (t) => {
  fuzz(t, 'baggage', workload, (w) => {
    const b = buildBaggage(w);
    // Node's HTTP/2 stack refuses control characters in a header value (respond() throws).
    if (/[^\x20-\x7e]/.test(b)) throw new Error(`non-ASCII or control character in ${JSON.stringify(b)}`);
    if (b === '') return;
    const got = new Map<string, string>();
    for (const member of b.split(',')) {
      if (!MEMBER.test(member)) throw new Error(`member ${JSON.stringify(member)} is not key=baggage-octets`);
      const eq = member.indexOf('=');
      got.set(member.slice(0, eq), decodeURIComponent(member.slice(eq + 1)));
    }
    const want = (v: string): string => Buffer.from(v, 'utf8').toString('utf8'); // lone surrogates become U+FFFD
    const check = (k: string, v: string): void => {
      if (v === '') return;
      if (got.get(k) !== want(v)) throw new Error(`${k}: ${JSON.stringify(got.get(k))} != ${JSON.stringify(v)}`);
    };
    check('k8s.cluster.name', w.clusterId);
    check('k8s.namespace.name', w.namespace);
    check('service.name', w.canonicalName);
    check('service.version', w.canonicalRevision);
    if (/^[a-z0-9_-]+$/.test(w.workloadType.toLowerCase())) check(`k8s.${w.workloadType.toLowerCase()}.name`, w.workloadName);
  }, { runs: 3000, perInputMs: 2000 });
  // Regression (found by this fuzzer, seed 686090741, a region of ' '): values went out raw, so a
  // space or ',' broke the W3C grammar, and a control character makes Node's respond() throw
  // ERR_INVALID_CHAR, which refused the connection.
  const w = { clusterId: 'c', namespace: 'a,b', workloadType: 'Deployment', workloadName: 'x\ny', canonicalName: '50%', canonicalRevision: '', locality: undefined } as unknown as Workload;
  t.equal(buildBaggage(w), 'k8s.cluster.name=c,k8s.namespace.name=a%2Cb,k8s.deployment.name=x%0Ay,service.name=50%25');
  const plain = { clusterId: 'Kubernetes', namespace: 'default', workloadType: 'Deployment', workloadName: 'sleep', canonicalName: 'sleep', canonicalRevision: 'v1', locality: undefined } as unknown as Workload;
  t.equal(buildBaggage(plain), 'k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=sleep,service.name=sleep,service.version=v1', 'Kubernetes names are unchanged');
});
