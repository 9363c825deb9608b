// IP address text ⇄ compact numeric form, CIDR containment, `host:port` text, and the
// canonical IP / CIDR text that config stores, so every layer compares addresses as strings.
// Parsing allocates (it runs once per connection or once per config change);
// cidrContains() never allocates, so it can run inside per-connection loops.
// Invariants: an IPv4-mapped IPv6 address (::ffff:a.b.c.d) always parses as IPv4, so a
// v4 CIDR matches a peer that reached a dual-stack socket; zone ids (`%eth0`) are rejected;
// octets with leading zeros are rejected (they are ambiguous: octal in inet_aton).
// Must never depend on DNS or on sockets: text in, values out.

/**
 * An IP address as four 32-bit words, most significant first, each an unsigned integer.
 * IPv4: `w0` holds the address (so `w0` is the usual uint32 form), `w1..w3` are 0.
 */
export interface ParsedIp {
  readonly family: 4 | 6;
  readonly w0: number;
  readonly w1: number;
  readonly w2: number;
  readonly w3: number;
  /** Canonical text: dotted quad, or RFC 5952 IPv6 (lowercase, longest zero run compressed). */
  readonly text: string;
}

/**
 * A network: `n*` are the masked network words and `m*` the mask words, both stored as
 * int32 bit patterns, because `x & m` yields an int32 and the comparison then stays on Smis.
 */
export interface Cidr {
  readonly family: 4 | 6;
  readonly prefixLength: number;
  readonly n0: number;
  readonly n1: number;
  readonly n2: number;
  readonly n3: number;
  readonly m0: number;
  readonly m1: number;
  readonly m2: number;
  readonly m3: number;
  /** Canonical `network/prefix` text (host bits cleared). */
  readonly text: string;
}

export function parseIp(text: string): ParsedIp | undefined {
  if (text.indexOf(':') === -1) {
    const v4 = parseV4(text);
    return v4 === undefined ? undefined : buildV4(v4);
  }
  const w = parseV6Words(text);
  if (w === undefined) return undefined;
  if (isMappedV4(w)) return buildV4(w[3]!);
  return buildV6(w[0]!, w[1]!, w[2]!, w[3]!);
}

/** Normalised text of an IP address, or undefined when `text` is not one. */
export function canonicalIp(text: string): string | undefined {
  return parseIp(text)?.text;
}

export function ipEquals(a: ParsedIp, b: ParsedIp): boolean {
  return a.family === b.family && a.w0 === b.w0 && a.w1 === b.w1 && a.w2 === b.w2 && a.w3 === b.w3;
}

/**
 * `a.b.c.d/n`, `v6/n` or a bare address (= /32 or /128). Host bits are cleared rather than
 * rejected, the lenient reading most CIDR parsers use. An IPv4-mapped IPv6 network with a
 * prefix of at least 96 becomes the IPv4 network it denotes, matching how addresses parse.
 */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  const addrText = slash === -1 ? text : text.slice(0, slash);
  let prefix = -1;
  if (slash !== -1) {
    prefix = parseDecimal(text.slice(slash + 1), 3);
    if (prefix < 0) return undefined;
  }
  if (addrText.indexOf(':') === -1) {
    const v4 = parseV4(addrText);
    if (v4 === undefined) return undefined;
    if (prefix === -1) prefix = 32;
    if (prefix > 32) return undefined;
    return buildCidr(4, prefix, v4, 0, 0, 0);
  }
  const w = parseV6Words(addrText);
  if (w === undefined) return undefined;
  if (prefix === -1) prefix = 128;
  if (prefix > 128) return undefined;
  if (prefix >= 96 && isMappedV4(w)) return buildCidr(4, prefix - 96, w[3]!, 0, 0, 0);
  return buildCidr(6, prefix, w[0]!, w[1]!, w[2]!, w[3]!);
}

/**
 * Canonical `address/prefix` text for configuration, or undefined when `text` is not a CIDR.
 * Unlike parseCidr().text, host bits are kept as written (upstream accepts them too; matching
 * code masks), and a prefix with a leading zero (`/08`) is refused like such an octet. A bare
 * IP becomes a host prefix; an IPv4-mapped range of /96 or longer becomes IPv4, as in parseCidr.
 */
export function canonicalCidr(text: string): string | undefined {
  const slash = text.indexOf('/');
  if (slash !== -1 && text.length - slash > 2 && text.charCodeAt(slash + 1) === 48 /* 0 */) return undefined;
  const cidr = parseCidr(text);
  if (cidr === undefined) return undefined;
  const addrText = slash === -1 ? text : text.slice(0, slash);
  // parseCidr accepted addrText. Family 6 here includes a mapped address under /96, which
  // stays IPv6 text, so the words are formatted directly rather than through parseIp.
  if (cidr.family === 4) return `${parseIp(addrText)!.text}/${cidr.prefixLength}`;
  const w = parseV6Words(addrText)!;
  return `${formatV6(w[0]!, w[1]!, w[2]!, w[3]!)}/${cidr.prefixLength}`;
}

/** 4 or 6 for a canonical IP text (as returned by canonicalIp). */
export function ipFamily(canonical: string): 4 | 6 {
  return canonical.indexOf(':') === -1 ? 4 : 6;
}

/** True for 127.0.0.0/8 and ::1 (canonical text). */
export function isLoopbackIp(canonical: string): boolean {
  return canonical === '::1' || canonical.startsWith('127.');
}

export function cidrContains(cidr: Cidr, ip: ParsedIp): boolean {
  return (
    cidr.family === ip.family &&
    (ip.w0 & cidr.m0) === cidr.n0 &&
    (ip.w1 & cidr.m1) === cidr.n1 &&
    (ip.w2 & cidr.m2) === cidr.n2 &&
    (ip.w3 & cidr.m3) === cidr.n3
  );
}

/** `1.2.3.4:80` or `[fd00::1]:80`. Accepts address text or a ParsedIp. */
export function formatHostPort(ip: string | ParsedIp, port: number): string {
  const text = typeof ip === 'string' ? ip : ip.text;
  return text.indexOf(':') === -1 ? `${text}:${port}` : `[${text}]:${port}`;
}

/**
 * Splits `ip:port` text (a socket address; no hostnames). IPv6 must be bracketed, the port
 * must be 0..65535 in decimal. `host` is returned in canonical form.
 */
export function parseHostPort(text: string): { host: string; port: number } | undefined {
  let hostText: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close === -1 || text.charCodeAt(close + 1) !== 0x3a /* : */) return undefined;
    hostText = text.slice(1, close);
    // Brackets are for IPv6 only; `[1.2.3.4]:80` is not a socket address.
    if (hostText.indexOf(':') === -1) return undefined;
    portText = text.slice(close + 2);
  } else {
    const colon = text.indexOf(':');
    if (colon === -1 || text.indexOf(':', colon + 1) !== -1) return undefined;
    hostText = text.slice(0, colon);
    portText = text.slice(colon + 1);
  }
  const ip = parseIp(hostText);
  if (ip === undefined) return undefined;
  const port = parseDecimal(portText, 5);
  if (port < 0 || port > 65535) return undefined;
  return { host: ip.text, port };
}

// ---------------------------------------------------------------- internals

function buildV4(addr: number): ParsedIp {
  const a = addr >>> 0;
  const text = `${a >>> 24}.${(a >>> 16) & 0xff}.${(a >>> 8) & 0xff}.${a & 0xff}`;
  return { family: 4, w0: a, w1: 0, w2: 0, w3: 0, text };
}

function buildV6(w0: number, w1: number, w2: number, w3: number): ParsedIp {
  return { family: 6, w0: w0 >>> 0, w1: w1 >>> 0, w2: w2 >>> 0, w3: w3 >>> 0, text: formatV6(w0, w1, w2, w3) };
}

function maskWord(prefix: number, word: number): number {
  const bits = Math.min(32, Math.max(0, prefix - 32 * word));
  return bits === 0 ? 0 : (-1 << (32 - bits)) | 0;
}

function buildCidr(family: 4 | 6, prefix: number, w0: number, w1: number, w2: number, w3: number): Cidr {
  const m0 = maskWord(prefix, 0);
  const m1 = family === 4 ? 0 : maskWord(prefix, 1);
  const m2 = family === 4 ? 0 : maskWord(prefix, 2);
  const m3 = family === 4 ? 0 : maskWord(prefix, 3);
  const n0 = w0 & m0;
  const n1 = w1 & m1;
  const n2 = w2 & m2;
  const n3 = w3 & m3;
  const addrText = family === 4 ? buildV4(n0).text : formatV6(n0, n1, n2, n3);
  return { family, prefixLength: prefix, n0, n1, n2, n3, m0, m1, m2, m3, text: `${addrText}/${prefix}` };
}

function isMappedV4(w: readonly number[]): boolean {
  return w[0] === 0 && w[1] === 0 && w[2] === 0xffff;
}

/** Non-negative decimal with at most `maxDigits` digits, or -1. */
function parseDecimal(text: string, maxDigits: number): number {
  if (text.length === 0 || text.length > maxDigits) return -1;
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    n = n * 10 + c;
  }
  return n;
}

/** Strict dotted quad → uint32, or undefined. */
function parseV4(text: string): number | undefined {
  let addr = 0;
  let octets = 0;
  let start = 0;
  for (let i = 0; i <= text.length; i++) {
    if (i < text.length && text.charCodeAt(i) !== 0x2e /* . */) continue;
    const len = i - start;
    if (len === 0 || len > 3) return undefined;
    if (len > 1 && text.charCodeAt(start) === 48) return undefined;
    const v = parseDecimal(text.slice(start, i), 3);
    if (v < 0 || v > 255) return undefined;
    addr = addr * 256 + v;
    octets++;
    start = i + 1;
  }
  return octets === 4 ? addr : undefined;
}

function parseHexGroup(text: string): number {
  if (text.length === 0 || text.length > 4) return -1;
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    let d: number;
    if (c >= 48 && c <= 57) d = c - 48;
    else if (c >= 97 && c <= 102) d = c - 87;
    else if (c >= 65 && c <= 70) d = c - 55;
    else return -1;
    n = n * 16 + d;
  }
  return n;
}

/** IPv6 text (RFC 4291 §2.2 forms, no zone) → four uint32 words, or undefined. */
function parseV6Words(text: string): number[] | undefined {
  if (text.indexOf('%') !== -1) return undefined;
  const gap = text.indexOf('::');
  if (gap !== -1 && text.indexOf('::', gap + 1) !== -1) return undefined;
  const headText = gap === -1 ? text : text.slice(0, gap);
  const tailText = gap === -1 ? '' : text.slice(gap + 2);
  const head = headText === '' ? [] : headText.split(':');
  const tail = tailText === '' ? [] : tailText.split(':');
  if (gap === -1 && head.length === 0) return undefined;

  // An embedded dotted quad is allowed only as the very last part and stands for two groups.
  const lastList = tail.length > 0 ? tail : gap === -1 ? head : undefined;
  let embeddedV4: number | undefined;
  if (lastList !== undefined) {
    const last = lastList[lastList.length - 1]!;
    if (last.indexOf('.') !== -1) {
      embeddedV4 = parseV4(last);
      if (embeddedV4 === undefined) return undefined;
      lastList.pop();
    }
  }
  const groups: number[] = [];
  for (const part of head) {
    const g = parseHexGroup(part);
    if (g < 0) return undefined;
    groups.push(g);
  }
  const tailGroups: number[] = [];
  for (const part of tail) {
    const g = parseHexGroup(part);
    if (g < 0) return undefined;
    tailGroups.push(g);
  }
  if (embeddedV4 !== undefined) tailGroups.push(embeddedV4 >>> 16, embeddedV4 & 0xffff);
  const explicit = groups.length + tailGroups.length;
  if (gap === -1) {
    if (explicit !== 8) return undefined;
  } else {
    if (explicit > 7) return undefined;
    for (let i = explicit; i < 8; i++) groups.push(0);
    // The gap's zeros sit between head and tail: move the tail to the end.
    for (let i = 0; i < tailGroups.length; i++) groups[8 - tailGroups.length + i] = tailGroups[i]!;
  }
  if (gap === -1) groups.push(...tailGroups);
  return [
    ((groups[0]! << 16) | groups[1]!) >>> 0,
    ((groups[2]! << 16) | groups[3]!) >>> 0,
    ((groups[4]! << 16) | groups[5]!) >>> 0,
    ((groups[6]! << 16) | groups[7]!) >>> 0,
  ];
}

/** RFC 5952 §4: lowercase, no leading zeros, the first longest run (≥ 2) of zero groups as `::`. */
function formatV6(w0: number, w1: number, w2: number, w3: number): string {
  const g = [w0 >>> 16, w0 & 0xffff, w1 >>> 16, w1 & 0xffff, w2 >>> 16, w2 & 0xffff, w3 >>> 16, w3 & 0xffff];
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number): string =>
    g
      .slice(from, to)
      .map((x) => x.toString(16))
      .join(':');
  if (bestStart === -1) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLen, 8)}`;
}
