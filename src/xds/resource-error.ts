// What mapping a pushed resource to the model returns when the resource is invalid: a value
// naming the resource and the field, which the xDS client turns into a NACK's error_detail
// ("<resource>: <field>: <reason>", as upstream's "<name>: <reason>") while it applies the
// good resources of the same response. Plus the raw-address helpers both mappings share.
// Must never: throw for bad input (mapping returns a value), or accept an IP that is not 4 or
// 16 bytes.

import { canonicalCidr, canonicalIp } from '../util/ip.js';

export interface ResourceError {
  /** The xDS resource name (a workload uid, `namespace/hostname`, `namespace/name`). */
  resource: string;
  /** Proto field path inside the resource, e.g. `workload.addresses[1]`. */
  field: string;
  reason: string;
}

export type Mapped<T> = { ok: true; value: T } | { ok: false; error: ResourceError };

/** The text a NACK carries for one rejected resource (several are joined with "; "). */
export function resourceErrorText(e: ResourceError): string {
  return `${e.resource}: ${e.field}: ${e.reason}`;
}

/** Thrown inside a mapping only, and turned into a Mapped error value at its entry point. */
export class MappingFailure extends Error {
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
  }
}

/** Runs a mapping; a MappingFailure becomes the error value naming `resource`. */
export function runMapping<T>(resource: string, map: () => T): Mapped<T> {
  try {
    return { ok: true, value: map() };
  } catch (err) {
    if (err instanceof MappingFailure) return { ok: false, error: { resource, field: err.field, reason: err.reason } };
    throw err;
  }
}

/**
 * Raw network-order address bytes (4 for IPv4, 16 for IPv6) → IP text as written (dotted
 * quad, or eight uncompressed hex groups); any other length is refused with upstream's wording.
 */
export function ipTextFromBytes(bytes: Uint8Array, field: string): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  if (bytes.length === 16) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] as number) << 8) | (bytes[i + 1] as number)).toString(16));
    return groups.join(':');
  }
  throw new MappingFailure(field, `failed to parse address, had ${bytes.length} bytes`);
}

/**
 * Raw address bytes → canonical IP text, as the YAML loader stores it (RFC 5952 IPv6; an
 * IPv4-mapped IPv6 address becomes IPv4).
 */
export function ipFromBytes(bytes: Uint8Array, field: string): string {
  // Four bytes: the dotted quad is already canonical (no parse needed; the common case).
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  const ip = canonicalIp(ipTextFromBytes(bytes, field));
  if (ip === undefined) throw new MappingFailure(field, 'not an IP address');
  return ip;
}

/**
 * Raw address bytes + prefix length → canonical CIDR text (canonicalCidr: host bits kept as
 * sent, a mapped IPv4 range of /96 or longer becomes IPv4), or a failure naming `lengthField`.
 */
export function cidrFromBytes(bytes: Uint8Array, length: number, field: string, lengthField: string): string {
  const raw = ipTextFromBytes(bytes, field);
  const full = bytes.length === 4 ? 32 : 128;
  const cidr = Number.isInteger(length) && length >= 0 && length <= full ? canonicalCidr(`${raw}/${length}`) : undefined;
  if (cidr === undefined) throw new MappingFailure(lengthField, `${length} is not a prefix length for a ${full}-bit address (0-${full})`);
  return cidr;
}

/** A proto enum value that must be one of `table`'s keys; numbers (unknown values) are refused. */
export function enumValue<K extends string, V>(value: string | number, table: Record<K, V>, field: string): V {
  if (typeof value === 'string' && Object.hasOwn(table, value)) return table[value as K];
  const known = Object.keys(table).join(', ');
  throw new MappingFailure(field, `unsupported value ${typeof value === 'number' ? value : `'${value}'`} (expected ${known})`);
}

/** A uint32 that must be a port: 1-65535 (or 0-65535 with `allowZero`). */
export function portValue(n: number, field: string, allowZero = false): number {
  if (!Number.isInteger(n) || n > 65535 || n < (allowZero ? 0 : 1)) {
    throw new MappingFailure(field, `${n} is not a port number (${allowZero ? 0 : 1}-65535)`);
  }
  return n;
}

export function required(value: string, field: string): string {
  if (value === '') throw new MappingFailure(field, 'missing (empty)');
  return value;
}
