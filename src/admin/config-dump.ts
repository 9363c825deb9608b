// Makes a config dump safe to print: a deep, JSON-ready copy in which Maps become
// objects, Sets become arrays, and key material is dropped by name. As defence in depth
// it throws if any string (or byte buffer) still contains a PEM private key.
// Must never return or log the offending value itself.
import { ZtError } from '../errors.js';

/** key, privateKey, private_key, keyPem, key_pem, privateKeyPem… (case-insensitive). */
const SECRET_KEY_NAME = /^(key|private[_-]?key([_-]?pem)?|key[_-]?pem)$/i;
const PRIVATE_KEY_MARK = 'PRIVATE KEY';

export function isSecretKeyName(name: string): boolean {
  return SECRET_KEY_NAME.test(name);
}

export function redactSecrets(obj: unknown): unknown {
  return copy(obj, new Set<object>(), '$');
}

function leak(path: string): never {
  throw new ZtError('ZT_ERR_CONFIG_INVALID', `config dump refused: private key material at ${path}`);
}

function copy(value: unknown, seen: Set<object>, path: string): unknown {
  switch (typeof value) {
    case 'string':
      if (value.includes(PRIVATE_KEY_MARK)) leak(path);
      return value;
    case 'number':
      return Number.isFinite(value) ? value : String(value);
    case 'boolean':
      return value;
    case 'bigint':
      return value.toString();
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
  }
  if (value === null) return null;
  const o = value as object;
  if (seen.has(o)) return '[Circular]';
  if (o instanceof Date) return Number.isNaN(o.getTime()) ? null : o.toISOString();
  if (o instanceof Uint8Array) {
    if (Buffer.from(o.buffer, o.byteOffset, o.byteLength).includes(PRIVATE_KEY_MARK)) leak(path);
    return Buffer.from(o.buffer, o.byteOffset, o.byteLength).toString('base64');
  }
  // crypto.KeyObject and friends: never serialisable, and possibly secret.
  if (typeof (o as { export?: unknown }).export === 'function' && 'asymmetricKeyType' in o) return undefined;
  seen.add(o);
  try {
    if (Array.isArray(o)) return o.map((v, i) => copy(v, seen, `${path}[${i}]`) ?? null);
    if (o instanceof Set) return [...o].map((v, i) => copy(v, seen, `${path}[${i}]`) ?? null);
    const out: Record<string, unknown> = {};
    // Maps, and read-only maps that are not Map instances (the mesh state's endpoint maps).
    const entries: Iterable<[unknown, unknown]> = o instanceof Map || isMapLike(o) ? o.entries() : Object.entries(o);
    for (const [k, v] of entries) {
      const name = String(k);
      if (isSecretKeyName(name)) continue;
      const c = copy(v, seen, `${path}.${name}`);
      if (c !== undefined) out[name] = c;
    }
    return out;
  } finally {
    seen.delete(o);
  }
}

function isMapLike(o: object): o is ReadonlyMap<unknown, unknown> {
  const m = o as Partial<ReadonlyMap<unknown, unknown>>;
  return typeof m.entries === 'function' && typeof m.get === 'function' && typeof m.has === 'function' && typeof m.size === 'number';
}
