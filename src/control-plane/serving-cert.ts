// The control plane's own TLS server certificate: DNS and IP names (what gRPC clients verify,
// e.g. `istiod.istio-system.svc`, `localhost`, `127.0.0.1`), serverAuth, signed by the mesh root
// given as PEM files — the same root the ztunnels trust as XDS_ROOT_CA. Workload certificates
// carry SPIFFE ids only, so this is a different profile from CertificateAuthority's.
// Must never: write or log the key; it is returned to the caller only.

import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { ZtError, errorMessage } from '../errors.js';
import {
  buildKeyIdentifier,
  buildName,
  buildRandomSerial,
  derToPem,
  generateP256KeyPair,
  signCertificate,
  subjectNameOf,
  toAsnExtensions,
  truncateToSeconds,
  x509,
} from '../identity/x509.js';

export interface ServingCertificate {
  cert: string;
  key: string;
}

/** A certificate for `names` (DNS names and/or IPs) valid for `days`, signed by the root in caCertPath/caKeyPath. */
export function issueServingCertificate(caCertPath: string, caKeyPath: string, names: readonly string[], days = 30): ServingCertificate {
  let caPem: string;
  let caKeyPem: string;
  try {
    caPem = readFileSync(caCertPath, 'utf8');
    caKeyPem = readFileSync(caKeyPath, 'utf8');
  } catch (err) {
    throw new ZtError('ZT_ERR_CONFIG_INVALID', `cannot read the CA for the control plane's certificate: ${errorMessage(err)}`, { cause: err });
  }
  const caKey = createPrivateKey(caKeyPem);
  const caCert = new X509Certificate(caPem);
  const issuer = subjectNameOf(new x509.X509Certificate(caPem));
  const { privateKey, publicKey } = generateP256KeyPair();
  const now = Date.now();
  const notAfter = Math.min(now + days * 86_400_000, new Date(caCert.validTo).getTime());
  const der = signCertificate(
    {
      serial: buildRandomSerial(),
      issuer,
      subject: buildName({ commonName: names[0] ?? 'ztunnel-ts control plane' }),
      notBefore: truncateToSeconds(now - 60_000),
      notAfter: truncateToSeconds(notAfter),
      publicKey,
      extensions: toAsnExtensions([
        new x509.SubjectAlternativeNameExtension(names.map((n) => (isIP(n) ? { type: 'ip' as const, value: n } : { type: 'dns' as const, value: n }))),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.AuthorityKeyIdentifierExtension(buildKeyIdentifier(createPublicKey(caCert.publicKey.export({ type: 'spki', format: 'pem' })))),
      ]),
    },
    caKey,
  );
  return { cert: derToPem(der), key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}
