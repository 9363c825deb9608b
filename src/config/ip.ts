// IP address and CIDR text: strict parsing and one canonical text form, so that every
// layer can compare addresses as strings. Pure; never throws.
// Invariants: IPv4 is dotted decimal without leading zeros; IPv6 is RFC 5952 text
// (lower case, longest zero run compressed); an IPv4-mapped IPv6 address (::ffff:a.b.c.d)
// becomes plain IPv4, as Linux reports such peers to a dual-stack socket. Zone ids are refused.

const IPV4_OCTET = /^(?:0|[1-9]\d{0,2})$/;
const IPV6_GROUP = /^[0-9a-fA-F]{1,4}$/;

function parseIpv4(s: string): number[] | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const p of parts) {
    if (!IPV4_OCTET.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out.push(n);
  }
  return out;
}

/** Groups of one side of "::"; the last group may be an embedded IPv4 address. */
function parseIpv6Groups(s: string, mayEndWithIpv4: boolean): number[] | undefined {
  if (s === '') return [];
  const parts = s.split(':');
  const out: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i] as string;
    if (mayEndWithIpv4 && i === parts.length - 1 && p.includes('.')) {
      const v4 = parseIpv4(p);
      if (v4 === undefined) return undefined;
      out.push(((v4[0] as number) << 8) | (v4[1] as number), ((v4[2] as number) << 8) | (v4[3] as number));
    } else {
      if (!IPV6_GROUP.test(p)) return undefined;
      out.push(parseInt(p, 16));
    }
  }
  return out;
}

function parseIpv6(s: string): number[] | undefined {
  const gap = s.indexOf('::');
  if (gap === -1) {
    const groups = parseIpv6Groups(s, true);
    return groups !== undefined && groups.length === 8 ? groups : undefined;
  }
  if (s.indexOf('::', gap + 1) !== -1) return undefined;
  const tail = parseIpv6Groups(s.slice(gap + 2), true);
  const head = parseIpv6Groups(s.slice(0, gap), false);
  if (head === undefined || tail === undefined || head.length + tail.length > 7) return undefined;
  return [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
}

function isMapped(groups: number[]): boolean {
  return groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff;
}

function formatIpv4FromGroups(hi: number, lo: number): string {
  return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
}

function formatIpv6(groups: number[]): string {
  let bestStart = -1;
  let bestLen = 1; // RFC 5952 4.2.2: a single zero group is not compressed
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart === -1) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

type ParsedIp = { family: 4; text: string } | { family: 6; text: string; groups: number[] };

function parseIp(text: string): ParsedIp | undefined {
  if (text.includes(':')) {
    const groups = parseIpv6(text);
    if (groups === undefined) return undefined;
    return { family: 6, text: formatIpv6(groups), groups };
  }
  const v4 = parseIpv4(text);
  return v4 === undefined ? undefined : { family: 4, text: v4.join('.') };
}

/** Canonical text of an IP address, or undefined when `text` is not one. */
export function canonicalIp(text: string): string | undefined {
  const ip = parseIp(text);
  if (ip === undefined) return undefined;
  if (ip.family === 6 && isMapped(ip.groups)) return formatIpv4FromGroups(ip.groups[6] as number, ip.groups[7] as number);
  return ip.text;
}

/** 4 or 6 for a canonical IP text (as returned by canonicalIp). */
export function ipFamily(canonical: string): 4 | 6 {
  return canonical.includes(':') ? 6 : 4;
}

/** True for 127.0.0.0/8 and ::1 (canonical text). */
export function isLoopbackIp(canonical: string): boolean {
  return canonical === '::1' || /^127\./.test(canonical);
}

/**
 * Canonical "address/prefix" text, or undefined when `text` is not a CIDR. A bare IP
 * becomes a host prefix (/32 or /128). Host bits are kept as written (upstream accepts
 * them too); matching code masks. An IPv4-mapped range of /96 or longer becomes IPv4.
 */
export function canonicalCidr(text: string): string | undefined {
  const slash = text.indexOf('/');
  const ip = parseIp(slash === -1 ? text : text.slice(0, slash));
  if (ip === undefined) return undefined;
  const max = ip.family === 4 ? 32 : 128;
  let prefix = max;
  if (slash !== -1) {
    const p = text.slice(slash + 1);
    if (!/^(?:0|[1-9]\d{0,2})$/.test(p)) return undefined;
    prefix = Number(p);
    if (prefix > max) return undefined;
  }
  if (ip.family === 6 && isMapped(ip.groups) && prefix >= 96) {
    return `${formatIpv4FromGroups(ip.groups[6] as number, ip.groups[7] as number)}/${prefix - 96}`;
  }
  return `${ip.text}/${prefix}`;
}
