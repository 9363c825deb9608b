// Time to issue one workload certificate (fresh P-256 key + signed leaf + PEM export), the work
// SecretManager does once per local identity and again at half-life. Two ways are measured:
//  - sync: CertificateAuthority.issueWorkloadCertificate (what ztunnel-ts uses);
//  - async: the same certificate made entirely through @peculiar/x509's WebCrypto API
//    (X509CertificateGenerator.create, crypto.subtle key generation and export), for comparison.
// Run: npx tsc -p tsconfig.build.json && node dist/bench/identity-issuance.bench.js [count]

import { webcrypto } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { CertificateAuthority } from '../src/identity/ca.js';
import { x509 } from '../src/identity/x509.js';

const count = Number(process.argv[2] ?? 2000);
const ID = 'spiffe://cluster.local/ns/default/sa/bench';

function report(name: string, samples: number[]): void {
  samples.sort((a, b) => a - b);
  const at = (q: number): string => (samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] ?? 0).toFixed(3);
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  console.log(`${name.padEnd(34)} n=${samples.length} mean=${mean.toFixed(3)} ms p50=${at(0.5)} p99=${at(0.99)} ms`);
}

async function main(): Promise<void> {
  const ca = CertificateAuthority.generate();
  for (let i = 0; i < 200; i++) ca.issueWorkloadCertificate(ID); // warm-up
  const sync: number[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    ca.issueWorkloadCertificate(ID);
    sync.push(performance.now() - t0);
  }
  report('sync issueWorkloadCertificate', sync);

  x509.cryptoProvider.set(webcrypto as unknown as Crypto);
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const rootKeys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=bench root',
    keys: rootKeys,
    signingAlgorithm: alg,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
  });
  const rootSki = await x509.SubjectKeyIdentifierExtension.create(rootKeys.publicKey);
  const issueAsync = async (): Promise<string> => {
    const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
    const cert = await x509.X509CertificateGenerator.create({
      issuer: root.subjectName,
      subject: '',
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 86_400_000),
      publicKey: keys.publicKey,
      signingKey: rootKeys.privateKey,
      signingAlgorithm: alg,
      extensions: [
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: ID }], true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.AuthorityKeyIdentifierExtension(rootSki.keyId),
      ],
    });
    const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
    return cert.toString('pem') + x509.PemConverter.encode(pkcs8, 'PRIVATE KEY');
  };
  for (let i = 0; i < 200; i++) await issueAsync();
  const asyncSamples: number[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    await issueAsync();
    asyncSamples.push(performance.now() - t0);
  }
  report('async @peculiar/x509 generator', asyncSamples);

  // What each way does to the event loop while 100 certificates are issued back to back.
  for (const [name, run] of [
    ['sync', async () => void ca.issueWorkloadCertificate(ID)],
    ['async', issueAsync],
  ] as const) {
    const h = monitorEventLoopDelay({ resolution: 1 });
    h.enable();
    const t0 = performance.now();
    for (let i = 0; i < 100; i++) await run();
    const wall = performance.now() - t0;
    await new Promise((r) => setTimeout(r, 20));
    h.disable();
    console.log(`${name.padEnd(5)} x100: ${wall.toFixed(1)} ms wall, event-loop delay max ${(h.max / 1e6).toFixed(2)} ms`);
  }
}

await main();
