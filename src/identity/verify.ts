// Peer identity checks for the HBONE TLS layer (upstream: https://github.com/istio/ztunnel/blob/master/src/tls/workload.rs): URI SAN extraction
// from a peer certificate and the two identity rules. Pure functions; chain validation itself is
// left to node:tls (rejectUnauthorized + ca = our roots).
// Must never: trust DNS names, CN or SNI for identity, or split a SAN string on commas blindly
// (Node JSON-quotes SAN values containing separators, and a naive split would let a crafted URI
// smuggle a second identity).
// Expected outcomes are values: the checks return an Error (never throw) so they can back a
// checkServerIdentity-style callback directly.

import { X509Certificate } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import { ZtError } from '../errors.js';
import { parseSpiffeId, type SpiffeId } from './spiffe.js';

export type PeerCertificateLike = PeerCertificate | X509Certificate;

/** The URI SANs in certificate order; [] for no certificate (getPeerCertificate() returns {} then). */
export function uriSansOf(cert: PeerCertificateLike | null | undefined): string[] {
  if (!cert) return [];
  const text = cert instanceof X509Certificate ? cert.subjectAltName : cert.subjectaltname;
  if (typeof text === 'string') {
    return parseSubjectAltNameText(text)
      .filter((name) => name.type === 'URI')
      .map((name) => name.value);
  }
  // No text form but the DER is there (e.g. a hand-made PeerCertificate): read the extension.
  const raw = cert instanceof X509Certificate ? cert.raw : (cert as Partial<PeerCertificate>).raw;
  if (raw instanceof Buffer && raw.length > 0) {
    try {
      return uriSansOf(new X509Certificate(raw));
    } catch {
      return [];
    }
  }
  return [];
}

/**
 * Node's SAN text: `TYPE:value` entries joined by ", ", where a value containing any separator
 * or quote is written as a JSON string literal (`URI:"spiffe://a\u002cb"`).
 */
export function parseSubjectAltNameText(text: string): { type: string; value: string }[] {
  const names: { type: string; value: string }[] = [];
  let i = 0;
  while (i < text.length) {
    while (text[i] === ' ' || text[i] === ',') i++;
    const colon = text.indexOf(':', i);
    if (colon < 0) break;
    const type = text.slice(i, colon).trim();
    let j = colon + 1;
    let value: string;
    if (text[j] === '"') {
      let k = j + 1;
      while (k < text.length && text[k] !== '"') k += text[k] === '\\' ? 2 : 1;
      const literal = text.slice(j, k + 1);
      try {
        value = JSON.parse(literal) as string;
      } catch {
        value = literal;
      }
      j = k + 1;
    } else {
      const end = text.indexOf(', ', j);
      const stop = end < 0 ? text.length : end;
      value = text.slice(j, stop);
      j = stop;
    }
    names.push({ type, value });
    i = j;
  }
  return names;
}

function spiffeIdsOf(cert: PeerCertificateLike | null | undefined): { uri: string; id: SpiffeId }[] {
  const out: { uri: string; id: SpiffeId }[] = [];
  for (const uri of uriSansOf(cert)) {
    const id = parseSpiffeId(uri);
    if (id) out.push({ uri, id });
  }
  return out;
}

/** The identity used for policy and telemetry: the first URI SAN that parses as SPIFFE. */
export function peerIdentityOf(cert: PeerCertificateLike | null | undefined): string | undefined {
  return spiffeIdsOf(cert)[0]?.uri;
}

/** Client side: one of the server's SPIFFE identities must be one of the expected identities. */
export function checkServerIdentity(
  expected: readonly string[],
  cert: PeerCertificateLike | null | undefined,
): Error | undefined {
  const got = spiffeIdsOf(cert).map((s) => s.uri);
  if (got.some((uri) => expected.includes(uri))) return undefined;
  return new ZtError(
    'ZT_ERR_IDENTITY_MISMATCH',
    `peer identity mismatch: expected one of [${expected.join(', ')}], got [${got.join(', ')}]`,
  );
}

/** Server side: at least one client SPIFFE identity in our trust domain (trust-domain aliases are not supported). */
export function checkClientTrustDomain(
  trustDomain: string,
  cert: PeerCertificateLike | null | undefined,
): Error | undefined {
  const ids = spiffeIdsOf(cert);
  if (ids.some((s) => s.id.trustDomain === trustDomain)) return undefined;
  return new ZtError(
    'ZT_ERR_IDENTITY_MISMATCH',
    `client trust domain mismatch: expected an identity in trust domain "${trustDomain}", got [${ids
      .map((s) => s.uri)
      .join(', ')}]`,
  );
}
