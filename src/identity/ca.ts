// The in-process certificate authority, standing in for upstream's FAKE_CA mode
// (https://github.com/istio/ztunnel/blob/master/src/config.rs, https://github.com/istio/ztunnel/blob/master/src/tls/mock.rs):
// one root, either generated or loaded from PEM, issuing short-lived ECDSA P-256 workload
// certificates whose only name is one critical URI SAN carrying the SPIFFE identity (empty
// subject, like the CSRs upstream sends to istiod: https://github.com/istio/ztunnel/blob/master/src/tls/csr.rs).
// Certificates are assembled with @peculiar/x509 and signed synchronously (see x509.ts for why).
// Must never: hand out the root private key (writeTo is the one deliberate exception, for
// `ca create`), issue for a string that is not a SPIFFE identity, or load a root that cannot sign
// (wrong key, not a CA) — those are configuration errors reported at start-up.
// Invariant: every issued certificate chains to rootCertPem (issuer bytes = root subject bytes,
// AKI = root SKI) and never outlives the root.

import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ZtError, errorMessage } from '../errors.js';
import { parseSpiffeId } from './spiffe.js';
import { DEFAULT_WORKLOAD_VALIDITY_MS } from './cert-source.js';
import {
  buildKeyIdentifier,
  buildName,
  buildRandomSerial,
  buildSignatureScheme,
  derToPem,
  generateP256KeyPair,
  readCsr,
  rootExtensions,
  signCertificate,
  subjectNameOf,
  truncateToSeconds,
  uriSanExtension,
  workloadFixedExtensions,
  x509,
  type IssuedCertificate,
} from './x509.js';

export const DEFAULT_ROOT_COMMON_NAME = 'ztunnel-ts root CA';
export const DEFAULT_ROOT_ORGANIZATION = 'cluster.local';
export const DEFAULT_ROOT_VALIDITY_DAYS = 3650;
export { DEFAULT_WORKLOAD_VALIDITY_MS };
/** Back-dating tolerates small clock differences between peers. */
export const NOT_BEFORE_SKEW_MS = 60 * 1000;
export const CA_CERT_FILE = 'ca-cert.pem';
export const CA_KEY_FILE = 'ca-key.pem';

const DAY_MS = 24 * 60 * 60 * 1000;

/** What may be shown about a certificate: no key. */
export interface CertificateSummary {
  certPem: string;
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
  identity: string;
}

export class CertificateAuthority {
  readonly rootCertPem: string;
  readonly rootCertificate: CertificateSummary;
  readonly #key: KeyObject;
  readonly #subject: ReturnType<typeof subjectNameOf>;
  /** Hex; becomes every issued certificate's authorityKeyIdentifier. */
  readonly #keyId: string;
  readonly #workloadExtensions: ReturnType<typeof workloadFixedExtensions>;
  readonly #emptyName = buildName({});

  private constructor(cert: X509Certificate, key: KeyObject, subject: ReturnType<typeof subjectNameOf>, keyId: string) {
    this.rootCertPem = cert.toString();
    this.rootCertificate = {
      certPem: this.rootCertPem,
      serialHex: cert.serialNumber.toUpperCase(),
      notBefore: new Date(cert.validFrom),
      notAfter: new Date(cert.validTo),
      identity: commonNameOf(cert) ?? '',
    };
    this.#key = key;
    this.#subject = subject;
    this.#keyId = keyId;
    this.#workloadExtensions = workloadFixedExtensions(keyId);
  }

  static generate(opts?: { commonName?: string; organization?: string; validityDays?: number }): CertificateAuthority {
    const validityDays = opts?.validityDays ?? DEFAULT_ROOT_VALIDITY_DAYS;
    if (!Number.isFinite(validityDays) || validityDays <= 0) {
      throw new ZtError('ZT_ERR_CONFIG_INVALID', `CA validityDays must be a positive number, got ${validityDays}`);
    }
    const { privateKey, publicKey } = generateP256KeyPair();
    const subject = buildName({
      organization: opts?.organization ?? DEFAULT_ROOT_ORGANIZATION,
      commonName: opts?.commonName ?? DEFAULT_ROOT_COMMON_NAME,
    });
    const keyId = buildKeyIdentifier(publicKey);
    const now = Date.now();
    const der = signCertificate(
      {
        serial: buildRandomSerial(),
        issuer: subject,
        subject,
        notBefore: truncateToSeconds(now - NOT_BEFORE_SKEW_MS),
        notAfter: truncateToSeconds(now + validityDays * DAY_MS),
        publicKey,
        extensions: rootExtensions(keyId),
      },
      privateKey,
    );
    return new CertificateAuthority(new X509Certificate(der), privateKey, subject, keyId);
  }

  static fromPem(certPem: string, keyPem: string): CertificateAuthority {
    return CertificateAuthority.#load(certPem, keyPem, 'CA certificate', 'CA key');
  }

  static fromFiles(certPath: string, keyPath: string): CertificateAuthority {
    const certPem = readConfigFile(certPath, 'CA certificate');
    const keyPem = readConfigFile(keyPath, 'CA key');
    return CertificateAuthority.#load(certPem, keyPem, `CA certificate ${certPath}`, `CA key ${keyPath}`);
  }

  static #load(certPem: string, keyPem: string, certName: string, keyName: string): CertificateAuthority {
    const invalid = (message: string, cause?: unknown): ZtError =>
      new ZtError('ZT_ERR_CONFIG_INVALID', message, cause === undefined ? undefined : { cause });
    const certCount = certPem.match(/-----BEGIN CERTIFICATE-----/g)?.length ?? 0;
    if (certCount === 0) throw invalid(`${certName}: no PEM certificate found`);
    if (certCount > 1) {
      throw invalid(`${certName}: holds ${certCount} certificates; only a single self-contained root CA is supported`);
    }
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(certPem);
    } catch (err) {
      throw invalid(`${certName}: cannot parse certificate: ${errorMessage(err)}`, err);
    }
    let key: KeyObject;
    try {
      key = createPrivateKey(keyPem);
    } catch (err) {
      throw invalid(`${keyName}: cannot parse private key: ${errorMessage(err)}`, err);
    }
    if (!cert.checkPrivateKey(key)) {
      throw invalid(`${keyName} does not match the public key of ${certName} (subject "${cert.subject.replace(/\n/g, ', ')}")`);
    }
    if (!cert.ca) throw invalid(`${certName} is not a CA certificate (basicConstraints CA:TRUE is missing)`);
    try {
      buildSignatureScheme(key);
    } catch (err) {
      throw invalid(`${keyName}: ${errorMessage(err)}`, err);
    }
    const notAfter = new Date(cert.validTo);
    if (!(notAfter.getTime() > Date.now())) throw invalid(`${certName} expired on ${notAfter.toISOString()}`);
    let parsed: x509.X509Certificate;
    let subject: ReturnType<typeof subjectNameOf>;
    try {
      parsed = new x509.X509Certificate(cert.raw);
      subject = subjectNameOf(parsed);
    } catch (err) {
      throw invalid(`${certName}: malformed certificate: ${errorMessage(err)}`, err);
    }
    const keyUsage = parsed.getExtension(x509.KeyUsagesExtension);
    if (keyUsage && !(keyUsage.usages & x509.KeyUsageFlags.keyCertSign)) {
      throw invalid(`${certName}: keyUsage does not allow keyCertSign`);
    }
    // Reuse the root's own SKI for our AKI: a loaded root may use a different key-id method.
    const keyId = parsed.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId ?? buildKeyIdentifier(cert.publicKey);
    return new CertificateAuthority(cert, key, subject, keyId);
  }

  /** Issues a fresh key and certificate; `now` lets a caller with its own clock stay consistent. */
  issueWorkloadCertificate(spiffeUri: string, opts?: { validityMs?: number; now?: number }): IssuedCertificate {
    if (!parseSpiffeId(spiffeUri) || !/^[\x21-\x7e]+$/.test(spiffeUri)) {
      throw new ZtError('ZT_ERR_CONFIG_INVALID', `cannot issue a certificate for ${JSON.stringify(spiffeUri)}: not a SPIFFE identity`);
    }
    const validityMs = opts?.validityMs ?? DEFAULT_WORKLOAD_VALIDITY_MS;
    if (!Number.isFinite(validityMs) || validityMs <= 0) {
      throw new ZtError('ZT_ERR_CONFIG_INVALID', `certificate validity must be a positive number of ms, got ${validityMs}`);
    }
    const now = opts?.now ?? Date.now();
    const notBefore = truncateToSeconds(now - NOT_BEFORE_SKEW_MS);
    const notAfter = truncateToSeconds(Math.min(now + validityMs, this.rootCertificate.notAfter.getTime()));
    const { privateKey, publicKey } = generateP256KeyPair();
    const serial = buildRandomSerial();
    const der = signCertificate(
      {
        serial,
        issuer: this.#subject,
        subject: this.#emptyName,
        notBefore,
        notAfter,
        publicKey,
        extensions: [uriSanExtension(spiffeUri), ...this.#workloadExtensions],
      },
      this.#key,
    );
    return {
      certPem: derToPem(der),
      keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      serialHex: serial.toString('hex').toUpperCase(),
      notBefore,
      notAfter,
      identity: spiffeUri,
    };
  }

  /**
   * Signs a certificate request as istiod's CA does for CreateCertificate: the request's
   * signature must verify and its only URI SAN must be a SPIFFE identity (equal to
   * `expectIdentity` when given); the certificate carries the request's own public key.
   */
  async signCsr(csrPem: string, opts?: { validityMs?: number; now?: number; expectIdentity?: string }): Promise<{ certPem: string; identity: string; notAfter: Date }> {
    const { publicKey, uris } = await readCsr(csrPem);
    if (uris.length !== 1 || !parseSpiffeId(uris[0] as string)) {
      throw new ZtError('ZT_ERR_CONFIG_INVALID', `certificate request must carry exactly one SPIFFE URI SAN, got ${JSON.stringify(uris)}`);
    }
    const identity = uris[0] as string;
    if (opts?.expectIdentity !== undefined && identity !== opts.expectIdentity) {
      throw new ZtError('ZT_ERR_CONFIG_INVALID', `certificate request is for ${identity}, not ${opts.expectIdentity}`);
    }
    const validityMs = opts?.validityMs ?? DEFAULT_WORKLOAD_VALIDITY_MS;
    const now = opts?.now ?? Date.now();
    const notBefore = truncateToSeconds(now - NOT_BEFORE_SKEW_MS);
    const notAfter = truncateToSeconds(Math.min(now + validityMs, this.rootCertificate.notAfter.getTime()));
    const der = signCertificate(
      {
        serial: buildRandomSerial(),
        issuer: this.#subject,
        subject: this.#emptyName,
        notBefore,
        notAfter,
        publicKey,
        extensions: [uriSanExtension(identity), ...this.#workloadExtensions],
      },
      this.#key,
    );
    return { certPem: derToPem(der), identity, notAfter };
  }

  /** Writes ca-cert.pem (0644) and ca-key.pem (0600) into dir, creating it if missing. */
  writeTo(dir: string): { certPath: string; keyPath: string } {
    mkdirSync(dir, { recursive: true });
    const certPath = join(dir, CA_CERT_FILE);
    const keyPath = join(dir, CA_KEY_FILE);
    const keyPem = this.#key.export({ type: 'pkcs8', format: 'pem' }).toString();
    // The mode option only applies when creating; chmod also tightens a pre-existing file.
    writeFileSync(keyPath, keyPem, { mode: 0o600 });
    chmodSync(keyPath, 0o600);
    writeFileSync(certPath, this.rootCertPem, { mode: 0o644 });
    chmodSync(certPath, 0o644);
    return { certPath, keyPath };
  }
}

function readConfigFile(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new ZtError('ZT_ERR_CONFIG_INVALID', `cannot read ${what} file ${path}: ${errorMessage(err)}`, { cause: err });
  }
}

function commonNameOf(cert: X509Certificate): string | undefined {
  for (const line of cert.subject.split('\n')) {
    if (line.startsWith('CN=')) return line.slice(3);
  }
  return undefined;
}
