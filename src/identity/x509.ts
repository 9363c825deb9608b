// X.509 v3 certificate building (RFC 5280) on top of the DER encoder, signed with node:crypto,
// plus the little certificate reading we need (subject bytes, extensions) that
// crypto.X509Certificate does not expose.
// Must never: sign with anything but SHA-256, emit a non-positive serial, or put a private key
// into an IssuedCertificate other than in keyPem.
// Invariant: an issuer Name is copied byte for byte from the issuer certificate's subject, so
// chain building (which compares encoded names) always links leaf to root.

import { createHash, randomBytes, sign, type KeyObject } from 'node:crypto';
import * as asn1 from './asn1.js';

export interface IssuedCertificate {
  certPem: string;
  keyPem: string;
  /** Upper-case hex, as crypto.X509Certificate#serialNumber prints it. */
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
  /** The URI SAN of a workload certificate, or the CN of a root. */
  identity: string;
}

export const OID = {
  ecPublicKey: '1.2.840.10045.2.1',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  rsaEncryption: '1.2.840.113549.1.1.1',
  sha256WithRsa: '1.2.840.113549.1.1.11',
  organization: '2.5.4.10',
  commonName: '2.5.4.3',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

/** RFC 5280 §4.2.1.3 bit positions. */
export const KeyUsageBit = {
  digitalSignature: 0,
  keyEncipherment: 2,
  keyCertSign: 5,
  cRLSign: 6,
} as const;

export interface Extension {
  oid: string;
  critical: boolean;
  /** DER of the extension value (what goes inside extnValue's OCTET STRING). */
  value: Buffer;
}

export interface CertificateTemplate {
  /** Unsigned big-endian magnitude. */
  serial: Buffer;
  issuer: Buffer;
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  publicKey: KeyObject;
  extensions: readonly Extension[];
}

export function buildName(attrs: { organization?: string | undefined; commonName?: string | undefined }): Buffer {
  const rdns: Buffer[] = [];
  if (attrs.organization !== undefined) {
    rdns.push(asn1.setOf(asn1.sequence(asn1.oid(OID.organization), asn1.utf8String(attrs.organization))));
  }
  if (attrs.commonName !== undefined) {
    rdns.push(asn1.setOf(asn1.sequence(asn1.oid(OID.commonName), asn1.utf8String(attrs.commonName))));
  }
  return asn1.sequence(...rdns);
}

/** 16 random bytes with the top bit cleared (positive) and the next set (no leading zero octet). */
export function buildRandomSerial(): Buffer {
  const serial = randomBytes(16);
  serial[0] = ((serial[0] ?? 0) & 0x7f) | 0x40;
  return serial;
}

/** RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING's value. */
export function buildKeyIdentifier(publicKey: KeyObject): Buffer {
  const spki = asn1.readNode(publicKey.export({ type: 'spki', format: 'der' }));
  const [, subjectPublicKey] = asn1.readChildren(spki.content);
  if (subjectPublicKey?.tag !== asn1.Tag.BIT_STRING) throw new RangeError('malformed SubjectPublicKeyInfo');
  return createHash('sha1').update(subjectPublicKey.content.subarray(1)).digest();
}

export function basicConstraintsExtension(ca: boolean): Extension {
  // cA BOOLEAN DEFAULT FALSE: DER omits a default, so CA:FALSE is an empty SEQUENCE.
  return { oid: OID.basicConstraints, critical: true, value: ca ? asn1.sequence(asn1.boolean(true)) : asn1.sequence() };
}

export function keyUsageExtension(bits: readonly number[]): Extension {
  return { oid: OID.keyUsage, critical: true, value: asn1.namedBitString(bits) };
}

export function extKeyUsageExtension(purposes: readonly string[]): Extension {
  return { oid: OID.extKeyUsage, critical: false, value: asn1.sequence(...purposes.map((p) => asn1.oid(p))) };
}

/** RFC 5280 §4.2.1.6: with an empty subject the SAN extension must be critical. */
export function uriSubjectAltNameExtension(uri: string, critical: boolean): Extension {
  asn1.assertAscii(uri);
  const generalName = asn1.implicitPrimitive(6, Buffer.from(uri, 'latin1'));
  return { oid: OID.subjectAltName, critical, value: asn1.sequence(generalName) };
}

export function subjectKeyIdentifierExtension(keyId: Buffer): Extension {
  return { oid: OID.subjectKeyIdentifier, critical: false, value: asn1.octetString(keyId) };
}

export function authorityKeyIdentifierExtension(keyId: Buffer): Extension {
  return { oid: OID.authorityKeyIdentifier, critical: false, value: asn1.sequence(asn1.implicitPrimitive(0, keyId)) };
}

function encodeExtension(ext: Extension): Buffer {
  const parts = [asn1.oid(ext.oid)];
  if (ext.critical) parts.push(asn1.boolean(true));
  parts.push(asn1.octetString(ext.value));
  return asn1.sequence(...parts);
}

interface SignatureScheme {
  algorithm: Buffer;
  sign(tbs: Buffer): Buffer;
}

/** Throws RangeError for key types we do not sign with (the CA turns it into a config error). */
export function buildSignatureScheme(issuerKey: KeyObject): SignatureScheme {
  if (issuerKey.asymmetricKeyType === 'ec') {
    return {
      // ecdsa-with-SHA256 has absent parameters (RFC 5758 §3.2).
      algorithm: asn1.sequence(asn1.oid(OID.ecdsaWithSha256)),
      sign: (tbs) => sign('sha256', tbs, { key: issuerKey, dsaEncoding: 'der' }),
    };
  }
  if (issuerKey.asymmetricKeyType === 'rsa') {
    return {
      algorithm: asn1.sequence(asn1.oid(OID.sha256WithRsa), asn1.nullValue()),
      sign: (tbs) => sign('sha256', tbs, issuerKey),
    };
  }
  throw new RangeError(`unsupported CA key type ${issuerKey.asymmetricKeyType ?? 'unknown'} (need EC or RSA)`);
}

/** Returns the DER certificate. */
export function signCertificate(template: CertificateTemplate, issuerKey: KeyObject): Buffer {
  const scheme = buildSignatureScheme(issuerKey);
  const tbs = asn1.sequence(
    asn1.explicit(0, asn1.integer(2)), // v3
    asn1.integer(template.serial),
    scheme.algorithm,
    template.issuer,
    asn1.sequence(asn1.time(template.notBefore), asn1.time(template.notAfter)),
    template.subject,
    template.publicKey.export({ type: 'spki', format: 'der' }),
    asn1.explicit(3, asn1.sequence(...template.extensions.map(encodeExtension))),
  );
  return asn1.sequence(tbs, scheme.algorithm, asn1.bitString(scheme.sign(tbs)));
}

export function derToPem(der: Buffer, label = 'CERTIFICATE'): string {
  const body = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`;
}

/** Certificates store whole seconds: truncate so the Date we report equals what is encoded. */
export function truncateToSeconds(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

// ---- reading ----

export interface ParsedCertificate {
  subject: Buffer;
  extensions: Map<string, { critical: boolean; value: Buffer }>;
}

/** Pulls the subject Name (byte-exact) and the extensions out of a DER certificate. */
export function parseCertificate(der: Buffer): ParsedCertificate {
  const cert = asn1.readNode(der);
  const [tbs] = asn1.readChildren(cert.content);
  if (tbs?.tag !== asn1.Tag.SEQUENCE) throw new RangeError('malformed certificate');
  const fields = asn1.readChildren(tbs.content);
  // version [0] is optional (absent = v1); everything after it is positional.
  const rest = fields[0]?.tag === 0xa0 ? fields.slice(1) : fields;
  const subject = rest[4];
  if (subject?.tag !== asn1.Tag.SEQUENCE) throw new RangeError('malformed certificate subject');
  const extensions = new Map<string, { critical: boolean; value: Buffer }>();
  const wrapper = rest.slice(6).find((n) => n.tag === 0xa3);
  if (wrapper) {
    const [list] = asn1.readChildren(wrapper.content);
    for (const ext of list ? asn1.readChildren(list.content) : []) {
      const parts = asn1.readChildren(ext.content);
      const id = parts[0];
      const hasCritical = parts[1]?.tag === asn1.Tag.BOOLEAN;
      const valueNode = hasCritical ? parts[2] : parts[1];
      if (id?.tag !== asn1.Tag.OID || valueNode?.tag !== asn1.Tag.OCTET_STRING) continue;
      extensions.set(asn1.decodeOid(id.content), {
        critical: hasCritical && parts[1]?.content[0] !== 0,
        value: valueNode.content,
      });
    }
  }
  return { subject: subject.raw, extensions };
}

/** Named bits set in a keyUsage extension value. */
export function readKeyUsageBits(value: Buffer): number[] {
  const node = asn1.readNode(value);
  const bits: number[] = [];
  node.content.subarray(1).forEach((octet, i) => {
    for (let b = 0; b < 8; b++) if (octet & (0x80 >> b)) bits.push(i * 8 + b);
  });
  return bits;
}

/** The keyIdentifier of a subjectKeyIdentifier extension value. */
export function readSubjectKeyIdentifier(value: Buffer): Buffer {
  return asn1.readNode(value).content;
}

/** URI GeneralNames ([6] IA5String) in a subjectAltName extension value. */
export function readUriSans(value: Buffer): string[] {
  return asn1
    .readChildren(asn1.readNode(value).content)
    .filter((n) => n.tag === 0x86)
    .map((n) => n.content.toString('latin1'));
}
