// Fuzz: the CONNECT authority parser as InboundProxy.handleStream uses it
// (parseHostPort, then canonicalIp of its host), and canonicalIp itself, against Node's own
// address checks (net.isIPv4 / net.isIPv6) and the WHATWG URL IPv6 serializer. Seeds: test/helpers/fuzz.ts.
import t from 'tap';
import fc from 'fast-check';
import net from 'node:net';
import { canonicalIp, formatHostPort, parseHostPort } from '../../src/util/ip.js';
import { fuzz } from '../helpers/fuzz.js';

/** What handleStream does with `:authority`: a target or a refusal (ZT_ERR_INBOUND_BAD_AUTHORITY). */
function authority(a: string): { ip: string; port: number } | undefined {
  const hp = parseHostPort(a);
  const ip = hp && canonicalIp(hp.host);
  return hp && ip ? { ip, port: hp.port } : undefined;
}

/** Independent model: Node's validators, a bracketed v6, a decimal port ≤ 65535, no zone. */
function model(a: string): boolean {
  const m = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/.exec(a);
  if (!m || Number(m[3]) > 65535) return false;
  if (m[1] !== undefined) return !m[1].includes('%') && net.isIPv6(m[1]);
  return net.isIPv4(m[2]!);
}

const v6Text = fc.ipV6().chain((ip) => fc.constantFrom(ip, ip.toUpperCase(), ip.replace(/(^|:)0+(?=[0-9a-f])/gi, '$1')));
const host = fc.oneof(
  fc.ipV4().map((s) => s),
  fc.ipV4Extended(),
  v6Text.map((s) => `[${s}]`),
  v6Text,
  fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF:.[]%'), maxLength: 45 }),
  fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF:.'), maxLength: 45 }).map((s) => `[${s}]`),
);
const port = fc.oneof(
  fc.integer({ min: 0, max: 70000 }).map(String),
  fc.constantFrom('0', '00080', '65535', '65536', '99999', '100000', '080', ''), // the edges
  fc.string({ unit: fc.constantFrom(...'0123456789+- x'), maxLength: 7 }),
);
const authorityText = fc.oneof(fc.tuple(host, port).map(([h, p]) => `${h}:${p}`), fc.string({ maxLength: 60 }), fc.string({ unit: 'binary', maxLength: 30 }));

t.test('CONNECT authority: accepted exactly when it is ip:port, and canonical', async (t) => {
  fuzz(t, 'authority', authorityText, (a) => {
    const got = authority(a);
    if ((got !== undefined) !== model(a)) throw new Error(`parse ${got ? 'accepted' : 'refused'} it; the model ${model(a) ? 'accepts' : 'refuses'}`);
    if (got === undefined) return;
    if (!Number.isInteger(got.port) || got.port < 0 || got.port > 65535) throw new Error(`port ${got.port}`);
    if (canonicalIp(got.ip) !== got.ip) throw new Error(`host ${got.ip} is not canonical`);
    const again = authority(formatHostPort(got.ip, got.port));
    if (again?.ip !== got.ip || again.port !== got.port) throw new Error(`formatHostPort does not round-trip: ${JSON.stringify(again)}`);
  }, { runs: 10000, perInputMs: 2000 });
});

t.test('canonicalIp: valid exactly when Node says so; RFC 5952 text; idempotent', async (t) => {
  const text = fc.oneof(fc.ipV4(), fc.ipV4Extended(), v6Text, host, fc.string({ maxLength: 40 }));
  fuzz(t, 'canonicalIp', text, (s) => {
    const c = canonicalIp(s);
    const valid = s.includes('%') ? false : net.isIP(s) !== 0;
    if ((c !== undefined) !== valid) throw new Error(`canonicalIp → ${c}; net.isIP → ${net.isIP(s)}`);
    if (c === undefined) return;
    if (canonicalIp(c) !== c) throw new Error(`not idempotent: ${c} → ${canonicalIp(c)}`);
    if (net.isIPv6(s)) {
      // WHATWG serializes IPv6 per RFC 5952 too; ours turns ::ffff:a.b.c.d into a.b.c.d.
      const whatwg = new URL(`http://[${s}]/`).hostname.slice(1, -1);
      const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(whatwg);
      const expected = mapped ? canonicalIp(`::ffff:${mapped[1]}:${mapped[2]}`) : whatwg;
      if (!mapped && c !== whatwg) throw new Error(`${c} but URL gives ${whatwg}`);
      if (mapped && (c !== expected || net.isIPv4(c) === false)) throw new Error(`mapped ${c}`);
    }
  }, { runs: 10000, perInputMs: 2000 });
});
