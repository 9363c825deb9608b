// X.509 through maintained libraries: @peculiar/x509 (names, extensions, parsing, CSRs) and its
// ASN.1 schema package @peculiar/asn1-x509 (the certificate structure), signed with node:crypto.
// Certificates are assembled here synchronously: @peculiar/x509's own generator only signs via
// WebCrypto, which is async and (measured in bench/identity-issuance.bench.ts) several times
// slower per certificate; the TBSCertificate is the library's, only the signature is ours.
// Every other module reaches @peculiar/x509 through this one: it must be evaluated after the
// Reflect metadata polyfill its dependency injection container (tsyringe) requires.
// Must never: sign with anything but SHA-256, emit a non-positive serial, or put a private key
// into an IssuedCertificate other than in keyPem.

import 'reflect-metadata';
import { createHash, createPublicKey, generateKeyPairSync, randomBytes, sign, webcrypto, type KeyObject } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import * as asn1X509 from '@peculiar/asn1-x509';
import * as x509 from '@peculiar/x509';
import { ZtError } from '../errors.js';
import { parseSpiffeId } from './spiffe.js';

export { x509 };

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
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  sha256WithRsa: '1.2.840.113549.1.1.11',
  organization: '2.5.4.10',
  commonName: '2.5.4.3',
} as const;

/** DER NULL: the parameters of sha256WithRSAEncryption (RFC 4055 §5). */
const DER_NULL = new Uint8Array([0x05, 0x00]).buffer;

export interface CertificateTemplate {
  /** Unsigned big-endian magnitude. */
  serial: Buffer;
  issuer: asn1X509.Name;
  subject: asn1X509.Name;
  notBefore: Date;
  notAfter: Date;
  publicKey: KeyObject;
  extensions: readonly asn1X509.Extension[];
}

/** A Name of UTF8String attributes (RFC 5280 §4.1.2.4), in the order given; {} is the empty Name. */
export function buildName(attrs: { organization?: string | undefined; commonName?: string | undefined }): asn1X509.Name {
  const rdns: Record<string, { utf8String: string }[]>[] = [];
  if (attrs.organization !== undefined) rdns.push({ [OID.organization]: [{ utf8String: attrs.organization }] });
  if (attrs.commonName !== undefined) rdns.push({ [OID.commonName]: [{ utf8String: attrs.commonName }] });
  return AsnConvert.parse(new x509.Name(rdns).toArrayBuffer(), asn1X509.Name);
}

/** The subject Name of a certificate, re-encoded from its parsed form (identical for DER input). */
export function subjectNameOf(cert: x509.X509Certificate): asn1X509.Name {
  return AsnConvert.parse(cert.rawData, asn1X509.Certificate).tbsCertificate.subject;
}

/** 16 random bytes with the top bit cleared (positive) and the next set (no leading zero octet). */
export function buildRandomSerial(): Buffer {
  const serial = randomBytes(16);
  serial[0] = ((serial[0] ?? 0) & 0x7f) | 0x40;
  return serial;
}

/** RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING's value, as hex. */
export function buildKeyIdentifier(publicKey: KeyObject): string {
  const spki = parseSpki(publicKey);
  return createHash('sha1').update(Buffer.from(spki.subjectPublicKey)).digest('hex');
}

interface SignatureScheme {
  algorithm: asn1X509.AlgorithmIdentifier;
  sign(tbs: Buffer): Buffer;
}

/** Throws RangeError for key types we do not sign with (the CA turns it into a config error). */
export function buildSignatureScheme(issuerKey: KeyObject): SignatureScheme {
  if (issuerKey.asymmetricKeyType === 'ec') {
    return {
      // ecdsa-with-SHA256 has absent parameters (RFC 5758 §3.2); the signature is the DER Ecdsa-Sig-Value.
      algorithm: new asn1X509.AlgorithmIdentifier({ algorithm: OID.ecdsaWithSha256 }),
      sign: (tbs) => sign('sha256', tbs, { key: issuerKey, dsaEncoding: 'der' }),
    };
  }
  if (issuerKey.asymmetricKeyType === 'rsa') {
    return {
      algorithm: new asn1X509.AlgorithmIdentifier({ algorithm: OID.sha256WithRsa, parameters: DER_NULL }),
      sign: (tbs) => sign('sha256', tbs, issuerKey),
    };
  }
  throw new RangeError(`unsupported CA key type ${issuerKey.asymmetricKeyType ?? 'unknown'} (need EC or RSA)`);
}

/** Builds the TBSCertificate with @peculiar/asn1-x509, signs it; returns the DER certificate. */
export function signCertificate(template: CertificateTemplate, issuerKey: KeyObject): Buffer {
  const scheme = buildSignatureScheme(issuerKey);
  const tbsCertificate = new asn1X509.TBSCertificate({
    version: asn1X509.Version.v3,
    serialNumber: toArrayBuffer(template.serial),
    signature: scheme.algorithm,
    issuer: template.issuer,
    validity: new asn1X509.Validity({ notBefore: template.notBefore, notAfter: template.notAfter }),
    subject: template.subject,
    subjectPublicKeyInfo: subjectPublicKeyInfoOf(template.publicKey),
    extensions: new asn1X509.Extensions([...template.extensions]),
  });
  const tbs = Buffer.from(AsnConvert.serialize(tbsCertificate));
  const certificate = new asn1X509.Certificate({
    tbsCertificate,
    signatureAlgorithm: scheme.algorithm,
    signatureValue: toArrayBuffer(scheme.sign(tbs)),
  });
  return Buffer.from(AsnConvert.serialize(certificate));
}

/** @peculiar/x509's extension objects in the schema form a TBSCertificate holds. */
export function toAsnExtensions(extensions: readonly x509.Extension[]): asn1X509.Extension[] {
  return extensions.map((e) => AsnConvert.parse(e.rawData, asn1X509.Extension));
}

/**
 * The extensions every workload certificate of one issuer shares: built once per CA, since
 * constructing @peculiar/x509's extension objects costs about a millisecond each.
 */
export function workloadFixedExtensions(issuerKeyId: string): asn1X509.Extension[] {
  return toAsnExtensions([
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.AuthorityKeyIdentifierExtension(issuerKeyId),
  ]);
}

/**
 * subjectAltName with one URI (an IA5String: the caller checks the URI is ASCII), made from the
 * schema classes directly, as it differs per certificate. RFC 5280 §4.2.1.6: with an empty
 * subject the extension must be critical.
 */
export function uriSanExtension(uri: string): asn1X509.Extension {
  const names = new asn1X509.SubjectAlternativeName([new asn1X509.GeneralName({ uniformResourceIdentifier: uri })]);
  return new asn1X509.Extension({
    extnID: asn1X509.id_ce_subjectAltName,
    critical: true,
    extnValue: new OctetString(AsnConvert.serialize(names)),
  });
}

/** The extensions of a self-signed root. */
export function rootExtensions(keyId: string): asn1X509.Extension[] {
  return toAsnExtensions([
    new x509.BasicConstraintsExtension(true, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    new x509.SubjectKeyIdentifierExtension(keyId),
  ]);
}

/** The AlgorithmIdentifier of P-256 public keys (id-ecPublicKey, namedCurve prime256v1), parsed once. */
let p256KeyAlgorithm: asn1X509.AlgorithmIdentifier | undefined;

/**
 * SubjectPublicKeyInfo of a key. Parsing the SPKI DER costs ~0.5 ms with the schema parser, so for
 * P-256 keys the structure is filled in from the JWK coordinates (the SEC 1 uncompressed point).
 */
function subjectPublicKeyInfoOf(publicKey: KeyObject): asn1X509.SubjectPublicKeyInfo {
  const jwk = publicKey.export({ format: 'jwk' });
  if (jwk.kty === 'EC' && jwk.crv === 'P-256' && jwk.x && jwk.y) {
    p256KeyAlgorithm ??= parseSpki(publicKey).algorithm;
    const point = Buffer.concat([Buffer.from([0x04]), Buffer.from(jwk.x, 'base64url'), Buffer.from(jwk.y, 'base64url')]);
    return new asn1X509.SubjectPublicKeyInfo({ algorithm: p256KeyAlgorithm, subjectPublicKey: toArrayBuffer(point) });
  }
  return parseSpki(publicKey);
}

function parseSpki(publicKey: KeyObject): asn1X509.SubjectPublicKeyInfo {
  return AsnConvert.parse(publicKey.export({ type: 'spki', format: 'der' }), asn1X509.SubjectPublicKeyInfo);
}

export function derToPem(der: Uint8Array, label = 'CERTIFICATE'): string {
  return `${x509.PemConverter.encode(toArrayBuffer(der), label)}\n`;
}

/** Certificates store whole seconds: truncate so the Date we report equals what is encoded. */
export function truncateToSeconds(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

export function generateP256KeyPair(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

/** URI GeneralNames in the subjectAltName extension of a DER certificate, in order. */
export function readUriSans(der: Uint8Array): string[] {
  const san = new x509.X509Certificate(toArrayBuffer(der)).getExtension(x509.SubjectAlternativeNameExtension);
  return san ? san.names.items.filter((n) => n.type === 'url').map((n) => n.value) : [];
}

const ECDSA_P256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/**
 * A PKCS #10 request for a fresh P-256 key whose only name is the SPIFFE id, as a URI SAN in an
 * extensionRequest attribute (the subject is empty, as upstream's CSRs are). For an external CA
 * (istiod's CreateCertificate); off the data path, so the library's async WebCrypto API is fine.
 */
export async function createCsr(spiffeUri: string): Promise<{ csrPem: string; keyPem: string }> {
  if (!parseSpiffeId(spiffeUri) || !/^[\x21-\x7e]+$/.test(spiffeUri)) {
    throw new ZtError('ZT_ERR_CONFIG_INVALID', `cannot request a certificate for ${JSON.stringify(spiffeUri)}: not a SPIFFE identity`);
  }
  const keys = await webcrypto.subtle.generateKey(ECDSA_P256, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      keys,
      signingAlgorithm: ECDSA_P256,
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeUri }], true)],
    },
    webcrypto as unknown as Crypto,
  );
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { csrPem: `${csr.toString('pem')}\n`, keyPem: derToPem(new Uint8Array(pkcs8), 'PRIVATE KEY') };
}

function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}

/**
 * Reads a PKCS #10 request as a CA must: the signature is verified (proof of possession),
 * then its public key and the URI SANs of its extensionRequest are returned. Throws a
 * ZtError naming what is wrong.
 */
export async function readCsr(csrPem: string): Promise<{ publicKey: KeyObject; uris: string[] }> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (err) {
    throw new ZtError('ZT_ERR_CONFIG_INVALID', `malformed certificate request: ${(err as Error).message}`, { cause: err });
  }
  if (!(await csr.verify(webcrypto as unknown as Crypto))) throw new ZtError('ZT_ERR_CONFIG_INVALID', 'certificate request signature does not verify');
  const raw = csr.extensions.find((e) => e.type === '2.5.29.17');
  const san = raw === undefined ? undefined : new x509.SubjectAlternativeNameExtension(raw.rawData);
  const uris = san ? san.names.items.filter((n) => n.type === 'url').map((n) => n.value) : [];
  const publicKey = createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' });
  return { publicKey, uris };
}
