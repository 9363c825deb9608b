// The regular headers of an HBONE CONNECT (https://istio.io/latest/docs/ambient/architecture/hbone/): `traceparent`
// (W3C, new per downstream connection), `forwarded` (for="client ip:port"[;host=svc]) and
// `baggage` (source workload metadata, fixed key order, empty values omitted).
import { randomBytes } from 'node:crypto';
import type { Workload } from '../config/types.js';

export function buildTraceparent(): string {
  const r = randomBytes(24).toString('hex');
  return `00-${r.slice(0, 32)}-${r.slice(32, 48)}-00`;
}

/** True when the value is a well-formed 55-character traceparent. */
export function isTraceparent(v: unknown): v is string {
  return typeof v === 'string' && v.length === 55 && /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/.test(v);
}

export function buildForwarded(clientAddr: string, serviceHostname: string | undefined): string {
  return serviceHostname ? `for="${clientAddr}";host=${serviceHostname}` : `for="${clientAddr}"`;
}

export function buildBaggage(w: Workload | undefined): string {
  if (!w) return '';
  const parts: string[] = [];
  const add = (k: string, v: string): void => {
    if (v) parts.push(`${k}=${encodeBaggageValue(v)}`);
  };
  add('k8s.cluster.name', w.clusterId);
  add('k8s.namespace.name', w.namespace);
  // The type becomes part of a key, which must be a token: a type that is not one is left out.
  const type = w.workloadType.toLowerCase();
  if (type && BAGGAGE_KEY_PART.test(type)) add(`k8s.${type}.name`, w.workloadName);
  add('service.name', w.canonicalName);
  add('service.version', w.canonicalRevision);
  add('cloud.region', w.locality?.region ?? '');
  add('cloud.availability_zone', w.locality?.zone ?? '');
  return parts.join(',');
}

const BAGGAGE_KEY_PART = /^[a-z0-9_-]+$/;

/**
 * W3C Baggage (https://www.w3.org/TR/baggage/#value): a value may hold only baggage-octets
 * (printable ASCII except space, `"`, `,`, `;` and `\`); everything else, and `%` itself,
 * is percent-encoded as UTF-8. Kubernetes names never need it, but local config strings are
 * free text, and a raw `,` or a control character would corrupt or reject the header.
 */
export function encodeBaggageValue(v: string): string {
  let plain = true;
  for (let i = 0; i < v.length && plain; i++) plain = isBaggageOctet(v.charCodeAt(i)) && v.charCodeAt(i) !== 0x25;
  if (plain) return v;
  let out = '';
  for (const ch of v) {
    const c = ch.charCodeAt(0);
    if (ch.length === 1 && c !== 0x25 && isBaggageOctet(c)) out += ch;
    else for (const b of Buffer.from(ch, 'utf8')) out += `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function isBaggageOctet(c: number): boolean {
  return c >= 0x21 && c <= 0x7e && c !== 0x22 && c !== 0x2c && c !== 0x3b && c !== 0x5c;
}

/**
 * The `host` parameter of a `forwarded` header (RFC 7239 §4): the first one, in the order
 * the elements are listed. Parameter names are case-insensitive and a value is a token or a
 * quoted string (returned unquoted), so `for="a;host=b"` holds no host. A header that does not
 * follow the grammar yields undefined; one pass over the text, no backtracking.
 */
export function forwardedHost(v: unknown): string | undefined {
  if (typeof v !== 'string') return undefined;
  let host: string | undefined;
  let i = 0;
  const n = v.length;
  const skipOws = (): void => {
    while (i < n && (v.charCodeAt(i) === 0x20 || v.charCodeAt(i) === 0x09)) i++;
  };
  while (i < n) {
    skipOws();
    // Empty list elements and empty pairs (`a=b;;c=d`, `, ,`) are allowed by the grammar.
    if (i < n && (v.charCodeAt(i) === 0x3b || v.charCodeAt(i) === 0x2c)) {
      i++;
      continue;
    }
    if (i >= n) break;
    const nameStart = i;
    while (i < n && isTchar(v.charCodeAt(i))) i++;
    if (i === nameStart || v.charCodeAt(i) !== 0x3d /* = */) return undefined;
    const name = v.slice(nameStart, i).toLowerCase();
    i++;
    let value: string;
    if (v.charCodeAt(i) === 0x22 /* " */) {
      i++;
      value = '';
      for (;;) {
        if (i >= n) return undefined;
        const c = v.charCodeAt(i);
        if (c === 0x22) break;
        if (c === 0x5c /* backslash */) {
          i++;
          if (i >= n || !isQuotedChar(v.charCodeAt(i))) return undefined;
        } else if (!isQuotedChar(c)) return undefined;
        value += v[i];
        i++;
      }
      i++;
    } else {
      const start = i;
      while (i < n && isTchar(v.charCodeAt(i))) i++;
      if (i === start) return undefined;
      value = v.slice(start, i);
    }
    skipOws();
    if (i < n && v.charCodeAt(i) !== 0x3b && v.charCodeAt(i) !== 0x2c) return undefined;
    if (name === 'host' && host === undefined && value !== '') host = value;
  }
  return host;
}

/** RFC 9110 §5.6.2 tchar: a letter, a digit or one of !#$%&'*+-.^_`|~ */
function isTchar(c: number): boolean {
  if ((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)) return true;
  return c < 0x80 && TCHAR_SYMBOLS.includes(String.fromCharCode(c));
}

const TCHAR_SYMBOLS = "!#$%&'*+-.^_`|~";

/** qdtext / quoted-pair octets (RFC 9110 §5.6.4): HTAB, SP, visible ASCII and obs-text. */
function isQuotedChar(c: number): boolean {
  return c === 0x09 || (c >= 0x20 && c !== 0x7f && c <= 0xff);
}
