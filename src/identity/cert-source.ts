// Where workload certificates come from: the `CertificateSource` interface SecretManager issues
// through, and its built-in implementation over the in-process CA (`LocalCaSource`). The other
// implementation is istiod's CA (src/xds/ca-client.ts, `IstioCaClient`), as upstream's
// SecretManager sits on a CaClient (https://github.com/istio/ztunnel/blob/master/src/identity/manager.rs).
// `issuedFromPem` turns what a remote CA answered into an IssuedIdentity, checking that the leaf
// names the identity asked for and matches our key, and reading its validity window and serial.
// Must never: put the private key anywhere but IssuedIdentity.keyPem, or accept a leaf that is
// not for the identity requested or does not match the key we generated.

import { X509Certificate, createPrivateKey } from 'node:crypto';
import { ZtError, errorMessage } from '../errors.js';
import { uriSansOf } from './verify.js';

/** Upstream's SECRET_TTL default (24 h, https://github.com/istio/ztunnel/blob/master/src/config.rs) and the fake CA's lifetime. */
export const DEFAULT_WORKLOAD_VALIDITY_MS = 24 * 60 * 60 * 1000;

/** One workload identity's key, certificate chain and trust bundle, as a source issued it. */
export interface IssuedIdentity {
  identity: string;
  keyPem: string;
  /** Leaf first, then intermediates (never the root). */
  certChainPem: string[];
  /** The trust bundle peers are verified against (the root(s) of this source). */
  rootsPem: string[];
  notBefore: Date;
  notAfter: Date;
  /** Of the leaf; upper-case hex as crypto.X509Certificate#serialNumber prints it. */
  serialHex: string;
}

/** Issues certificates for SPIFFE identities; may be remote (async), may fail (rejects with a ZtError). */
export interface CertificateSource {
  /** For logs and the config dump: 'local CA', 'istiod CA at host:port'. */
  readonly name: string;
  issue(identity: string): Promise<IssuedIdentity>;
  close?(): void;
}

/**
 * What LocalCaSource needs of the built-in CA (ca.ts's CertificateAuthority), named here by
 * shape: ca.ts imports this module, and a worker thread must not load the CA's X.509 library.
 */
export interface WorkloadCertificateIssuer {
  readonly rootCertPem: string;
  issueWorkloadCertificate(
    spiffeUri: string,
    opts?: { validityMs?: number; now?: number },
  ): { certPem: string; keyPem: string; serialHex: string; notBefore: Date; notAfter: Date };
}

/** The built-in CA as a source: synchronous issuance (~1 ms) behind the async interface. */
export class LocalCaSource implements CertificateSource {
  readonly name = 'local CA';
  readonly #ca: WorkloadCertificateIssuer;
  readonly #validityMs: number;
  readonly #now: () => number;

  constructor(ca: WorkloadCertificateIssuer, opts?: { validityMs?: number | undefined; now?: (() => number) | undefined }) {
    this.#ca = ca;
    this.#validityMs = opts?.validityMs ?? DEFAULT_WORKLOAD_VALIDITY_MS;
    this.#now = opts?.now ?? Date.now;
    if (!Number.isFinite(this.#validityMs) || this.#validityMs < MIN_VALIDITY_MS) {
      throw new ZtError('ZT_ERR_CONFIG_INVALID', `certificate validity must be at least ${MIN_VALIDITY_MS} ms, got ${this.#validityMs}`);
    }
  }

  async issue(identity: string): Promise<IssuedIdentity> {
    const c = this.#ca.issueWorkloadCertificate(identity, { validityMs: this.#validityMs, now: this.#now() });
    return {
      identity,
      keyPem: c.keyPem,
      certChainPem: [c.certPem],
      rootsPem: [this.#ca.rootCertPem],
      notBefore: c.notBefore,
      notAfter: c.notAfter,
      serialHex: c.serialHex,
    };
  }
}

/** Certificates have whole-second times; below this the half-life would be (almost) zero. */
export const MIN_VALIDITY_MS = 2000;

/**
 * What a remote CA answered, checked and summarized: the leaf (first of `chain`) must carry
 * `identity` as a URI SAN and hold the public half of `keyPem`.
 */
export function issuedFromPem(a: { identity: string; keyPem: string; chain: string[]; roots: string[]; from: string }): IssuedIdentity {
  const bad = (why: string, cause?: unknown): ZtError =>
    new ZtError('ZT_ERR_IDENTITY_UNAVAILABLE', `${a.from} answered an unusable certificate for ${a.identity}: ${why}`, cause === undefined ? undefined : { cause });
  const leafPem = a.chain[0];
  if (leafPem === undefined) throw bad('no certificate');
  if (a.roots.length === 0) throw bad('no root certificate');
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(leafPem);
    for (const pem of [...a.chain.slice(1), ...a.roots]) new X509Certificate(pem);
  } catch (err) {
    throw bad(`cannot parse: ${errorMessage(err)}`, err);
  }
  const sans = uriSansOf(leaf);
  if (!sans.includes(a.identity)) throw bad(`the leaf names ${JSON.stringify(sans)}`);
  if (!leaf.checkPrivateKey(createPrivateKey(a.keyPem))) throw bad('the leaf does not match our key');
  return {
    identity: a.identity,
    keyPem: a.keyPem,
    certChainPem: a.chain,
    rootsPem: a.roots,
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
    serialHex: leaf.serialNumber.toUpperCase(),
  };
}
