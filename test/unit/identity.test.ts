// Identity layer: SPIFFE ids, the CA and its certificates (checked with node:crypto and real
// TLS 1.3 handshakes on 127.0.0.1), SAN checks, the secret manager and `ca create`.
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { X509Certificate, createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { ZtError } from '../../src/errors.js';
import { CertificateAuthority } from '../../src/identity/ca.js';
import { runCaCreate } from '../../src/identity/ca-cli.js';
import { LocalCaSource, issuedFromPem, type CertificateSource, type IssuedIdentity } from '../../src/identity/cert-source.js';
import { SecretManager } from '../../src/identity/secret-manager.js';
import { formatSpiffeId, parseSpiffeId, spiffeIdOfWorkload } from '../../src/identity/spiffe.js';
import {
  checkClientTrustDomain,
  checkServerIdentity,
  parseSubjectAltNameText,
  peerIdentityOf,
  uriSansOf,
} from '../../src/identity/verify.js';
import {
  buildName,
  buildRandomSerial,
  createCsr,
  derToPem,
  signCertificate,
  subjectNameOf,
  uriSanExtension,
  x509,
} from '../../src/identity/x509.js';
import { within } from '../helpers/within.js';

const SERVER_ID = 'spiffe://cluster.local/ns/default/sa/server';
const CLIENT_ID = 'spiffe://cluster.local/ns/default/sa/client';

// One CA for the whole file: key generation is cheap but the handshakes need a shared root.
const ca = CertificateAuthority.generate({ commonName: 'identity-test root' });
const otherCa = CertificateAuthority.generate({ commonName: 'identity-test other root' });

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'zt-identity-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test('SPIFFE id parsing', async (t) => {
  const rows: [string, ReturnType<typeof parseSpiffeId>][] = [
    ['spiffe://cluster.local/ns/default/sa/bookinfo', { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'bookinfo' }],
    ['spiffe://td/ns/a-b/sa/c.d', { trustDomain: 'td', namespace: 'a-b', serviceAccount: 'c.d' }],
    ['cluster.local/ns/default/sa/x', undefined],
    ['http://cluster.local/ns/default/sa/x', undefined],
    ['SPIFFE://cluster.local/ns/default/sa/x', undefined],
    ['spiffe://cluster.local/namespace/default/sa/x', undefined],
    ['spiffe://cluster.local/ns/default/serviceaccount/x', undefined],
    ['spiffe://cluster.local/sa/default/ns/x', undefined],
    ['spiffe://cluster.local/ns/default/sa/x/extra', undefined],
    ['spiffe://cluster.local/ns/default/sa/x/', undefined],
    ['spiffe://cluster.local/ns/default/sa', undefined],
    ['spiffe:///ns/default/sa/x', undefined],
    ['spiffe://cluster.local/ns//sa/x', undefined],
    ['spiffe://cluster.local/ns/default/sa/', undefined],
    ['spiffe://cluster.local/ns/de fault/sa/x', undefined],
    ['spiffe://cluster.local/ns/default/sa/x?q', undefined],
    ['', undefined],
  ];
  for (const [uri, want] of rows) t.same(parseSpiffeId(uri), want, JSON.stringify(uri));
  const id = { trustDomain: 'cluster.local', namespace: 'ns1', serviceAccount: 'sa1' };
  t.equal(formatSpiffeId(id), 'spiffe://cluster.local/ns/ns1/sa/sa1');
  t.same(parseSpiffeId(formatSpiffeId(id)), id);
  t.equal(spiffeIdOfWorkload({ trustDomain: 'td', namespace: 'n', serviceAccount: 's' }), 'spiffe://td/ns/n/sa/s');
});

t.test('root certificate', async (t) => {
  const root = new X509Certificate(ca.rootCertPem);
  t.equal(root.ca, true);
  t.match(root.subject, /O=cluster\.local/);
  t.match(root.subject, /CN=identity-test root/);
  t.equal(root.subject, root.issuer);
  t.ok(root.verify(root.publicKey), 'self-signed');
  const parsed = new x509.X509Certificate(root.raw);
  const bc = parsed.getExtension(x509.BasicConstraintsExtension);
  t.equal(bc?.critical, true);
  t.equal(bc?.ca, true);
  const ku = parsed.getExtension(x509.KeyUsagesExtension);
  t.equal(ku?.usages, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, 'keyCertSign + cRLSign');
  t.equal(ku?.critical, true);
  t.match(parsed.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId, /^[0-9a-f]{40}$/, '20-byte SKI');
  t.equal(ca.rootCertificate.identity, 'identity-test root');
  t.equal(ca.rootCertificate.serialHex, root.serialNumber.toUpperCase());
  t.ok(ca.rootCertificate.notAfter.getTime() - Date.now() > 3600 * 24 * 3000 * 1000, 'about ten years');
  t.throws(() => CertificateAuthority.generate({ validityDays: 0 }), { code: 'ZT_ERR_CONFIG_INVALID' });
});

t.test('workload certificate', async (t) => {
  const before = Date.now();
  const issued = ca.issueWorkloadCertificate(SERVER_ID);
  const cert = new X509Certificate(issued.certPem);
  const root = new X509Certificate(ca.rootCertPem);
  t.ok(cert.checkIssued(root), 'issuer names match');
  t.ok(cert.verify(root.publicKey), 'signed by the root');
  t.equal(cert.ca, false);
  t.equal(cert.subject ?? '', '', 'empty subject');
  t.equal(cert.subjectAltName, `URI:${SERVER_ID}`);
  t.same(uriSansOf(cert), [SERVER_ID]);
  t.equal(peerIdentityOf(cert), SERVER_ID);
  t.equal(issued.identity, SERVER_ID);
  t.equal(cert.serialNumber.toUpperCase(), issued.serialHex);
  t.match(issued.serialHex, /^[4-7][0-9A-F]{31}$/, '16 positive bytes');
  t.equal(new Date(cert.validFrom).getTime(), issued.notBefore.getTime());
  t.equal(new Date(cert.validTo).getTime(), issued.notAfter.getTime());
  t.ok(Math.abs(issued.notBefore.getTime() - (before - 60_000)) < 2000, 'back-dated 60 s');
  t.ok(Math.abs(issued.notAfter.getTime() - (before + 24 * 3600_000)) < 2000, '24 h');
  t.same(cert.keyUsage, ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2'], 'EKU serverAuth + clientAuth');
  const parsed = new x509.X509Certificate(cert.raw);
  t.same(
    parsed.extensions.map((e) => [e.type, e.critical]),
    [
      ['2.5.29.17', true],
      ['2.5.29.15', true],
      ['2.5.29.37', false],
      ['2.5.29.19', true],
      ['2.5.29.35', false],
    ],
    'exactly SAN (critical), KU (critical), EKU, basicConstraints (critical), AKI',
  );
  const san = parsed.getExtension(x509.SubjectAlternativeNameExtension);
  t.same(san?.names.toJSON(), [{ type: 'url', value: SERVER_ID }], 'one URI SAN');
  t.equal(parsed.getExtension(x509.KeyUsagesExtension)?.usages, x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment);
  t.equal(parsed.getExtension(x509.BasicConstraintsExtension)?.ca, false, 'CA:FALSE');
  const rootSki = new x509.X509Certificate(root.raw).getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
  t.ok(rootSki);
  t.equal(parsed.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId, rootSki, 'AKI = root SKI');
  const key = createPrivateKey(issued.keyPem);
  t.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  t.ok(cert.checkPrivateKey(key));
  t.not(ca.issueWorkloadCertificate(SERVER_ID).serialHex, issued.serialHex, 'fresh serial each time');

  const short = ca.issueWorkloadCertificate(SERVER_ID, { validityMs: 5000, now: Date.parse('2030-01-01T00:00:00.700Z') });
  t.equal(short.notBefore.toISOString(), '2029-12-31T23:59:00.000Z');
  t.equal(short.notAfter.toISOString(), '2030-01-01T00:00:05.000Z');

  for (const bad of ['spiffe://td/ns/a/sa/b/c', 'https://x', 'spiffe://td/ns/ä/sa/b']) {
    t.throws(() => ca.issueWorkloadCertificate(bad), { code: 'ZT_ERR_CONFIG_INVALID' }, bad);
  }
  t.throws(() => ca.issueWorkloadCertificate(SERVER_ID, { validityMs: -1 }), { code: 'ZT_ERR_CONFIG_INVALID' });
});

function openssl(args: string[], input?: string): string {
  return execFileSync('openssl', args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], ...(input !== undefined && { input }) });
}

t.test('openssl accepts the root and the workload certificates', async (t) => {
  const dir = tempDir(t);
  const rootPath = join(dir, 'root.pem');
  const leafPath = join(dir, 'leaf.pem');
  writeFileSync(rootPath, ca.rootCertPem);
  writeFileSync(leafPath, ca.issueWorkloadCertificate(SERVER_ID).certPem);
  t.match(openssl(['verify', '-CAfile', rootPath, leafPath]), `${leafPath}: OK`);
  // The purpose checks need the EKU and KU to be right, not just the signature.
  t.match(openssl(['verify', '-purpose', 'sslserver', '-CAfile', rootPath, leafPath]), /OK/);
  t.match(openssl(['verify', '-purpose', 'sslclient', '-CAfile', rootPath, leafPath]), /OK/);
  const text = openssl(['x509', '-in', leafPath, '-noout', '-text']);
  t.match(text, /X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster\.local\/ns\/default\/sa\/server\n/);
  t.match(text, /X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment\n/);
  t.match(text, /X509v3 Extended Key Usage: \s+TLS Web Server Authentication, TLS Web Client Authentication\n/);
  t.match(text, /X509v3 Basic Constraints: critical\s+CA:FALSE\n/);
  t.match(text, /Signature Algorithm: ecdsa-with-SHA256/);
  t.match(text, /ASN1 OID: prime256v1/);
  t.match(text, /Subject: *\n/, 'empty subject');
  const aki = /X509v3 Authority Key Identifier: \s+(?:keyid:)?([0-9A-F:]+)\n/.exec(text)?.[1];
  const ski = /X509v3 Subject Key Identifier: \s+([0-9A-F:]+)\n/.exec(openssl(['x509', '-in', rootPath, '-noout', '-text']))?.[1];
  t.ok(ski, 'root has an SKI');
  t.equal(aki, ski, 'leaf AKI = root SKI');
  const rootText = openssl(['x509', '-in', rootPath, '-noout', '-text']);
  t.match(rootText, /X509v3 Basic Constraints: critical\s+CA:TRUE\n/);
  t.match(rootText, /X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign\n/);
  // A wrong root must fail: the check above is not vacuous.
  const otherPath = join(dir, 'other.pem');
  writeFileSync(otherPath, otherCa.rootCertPem);
  t.throws(() => openssl(['verify', '-CAfile', otherPath, leafPath]), 'another root does not verify it');
});

t.test('roots made by openssl (EC and RSA) load and issue verifiable certificates', async (t) => {
  const dir = tempDir(t);
  for (const [kind, newkey] of [
    ['ec', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384']],
    ['rsa', ['-newkey', 'rsa:2048']],
  ] as const) {
    const certPath = join(dir, `${kind}-root.pem`);
    const keyPath = join(dir, `${kind}-key.pem`);
    // PrintableString C and O, UTF8String CN: the issuer we copy must stay byte-identical.
    openssl(['req', '-x509', ...newkey, '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '2',
      '-subj', '/C=DE/O=Example Org/CN=openssl root \u00e9', '-utf8',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
    const loaded = CertificateAuthority.fromFiles(certPath, keyPath);
    const leaf = loaded.issueWorkloadCertificate(CLIENT_ID, { validityMs: 7 * 24 * 3600_000 });
    const leafPath = join(dir, `${kind}-leaf.pem`);
    writeFileSync(leafPath, leaf.certPem);
    t.match(openssl(['verify', '-CAfile', certPath, leafPath]), /OK/, `${kind}: openssl verifies the leaf`);
    const root = new X509Certificate(readFileSync(certPath));
    const cert = new X509Certificate(leaf.certPem);
    t.ok(cert.checkIssued(root) && cert.verify(root.publicKey), `${kind}: node verifies the leaf`);
    t.equal(leaf.notAfter.getTime(), new Date(root.validTo).getTime(), `${kind}: capped at the root's notAfter`);
    const text = openssl(['x509', '-in', leafPath, '-noout', '-text']);
    t.match(text, kind === 'rsa' ? /Signature Algorithm: sha256WithRSAEncryption/ : /Signature Algorithm: ecdsa-with-SHA256/);
  }
});

t.test('CSR for an external CA', async (t) => {
  const { csrPem, keyPem } = await createCsr(SERVER_ID);
  t.match(csrPem, /^-----BEGIN CERTIFICATE REQUEST-----\n[\s\S]+\n-----END CERTIFICATE REQUEST-----\n$/);
  const text = openssl(['req', '-verify', '-noout', '-text'], csrPem);
  t.match(text, /Subject: *\n/, 'empty subject');
  t.match(text, /Requested Extensions:\s+X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster\.local\/ns\/default\/sa\/server\n/);
  t.match(text, /Signature Algorithm: ecdsa-with-SHA256/);
  t.match(text, /ASN1 OID: prime256v1/);
  // Parsed back with the library: signed by its own key, and that key is the one we got.
  const csr = new x509.Pkcs10CertificateRequest(csrPem);
  t.equal(await csr.verify(), true, 'self-signature verifies');
  const san = csr.getExtension('2.5.29.17');
  t.type(san, x509.SubjectAlternativeNameExtension);
  t.same((san as x509.SubjectAlternativeNameExtension).names.toJSON(), [{ type: 'url', value: SERVER_ID }]);
  t.equal(san?.critical, true);
  t.equal(csr.extensions.length, 1, 'no other extension requested');
  const key = createPrivateKey(keyPem);
  t.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  const spkiOfKey = createPublicKeyDer(keyPem);
  t.equal(Buffer.from(csr.publicKey.rawData).toString('hex'), spkiOfKey, 'the key matches the CSR');
  t.not((await createCsr(SERVER_ID)).keyPem, keyPem, 'a fresh key each time');
  await t.rejects(createCsr('https://not-spiffe'), { code: 'ZT_ERR_CONFIG_INVALID' });
});

t.test('SAN text parsing resists crafted values', async (t) => {
  t.same(parseSubjectAltNameText('URI:spiffe://a/ns/b/sa/c, DNS:example.com, IP Address:10.0.0.1'), [
    { type: 'URI', value: 'spiffe://a/ns/b/sa/c' },
    { type: 'DNS', value: 'example.com' },
    { type: 'IP Address', value: '10.0.0.1' },
  ]);
  t.same(parseSubjectAltNameText('DNS:"a\\u002c URI:spiffe://evil/ns/x/sa/y", URI:spiffe://td/ns/a/sa/b'), [
    { type: 'DNS', value: 'a, URI:spiffe://evil/ns/x/sa/y' },
    { type: 'URI', value: 'spiffe://td/ns/a/sa/b' },
  ]);
  t.same(parseSubjectAltNameText(''), []);

  // A real certificate whose single URI SAN contains ", URI:": Node quotes it, we must not split it.
  const crafted = 'spiffe://td/ns/a/sa/b, URI:spiffe://cluster.local/ns/default/sa/admin';
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const rootKey = createPrivateKey(readCaKey(ca, t));
  const rootSubject = subjectNameOf(new x509.X509Certificate(ca.rootCertPem));
  const der = signCertificate(
    {
      serial: buildRandomSerial(),
      issuer: rootSubject,
      subject: buildName({}),
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3600_000),
      publicKey,
      extensions: [uriSanExtension(crafted)],
    },
    rootKey,
  );
  const cert = new X509Certificate(derToPem(der));
  t.ok(cert.verify(new X509Certificate(ca.rootCertPem).publicKey));
  t.same(uriSansOf(cert), [crafted]);
  t.equal(peerIdentityOf(cert), undefined, 'not a SPIFFE id');
  t.type(checkServerIdentity(['spiffe://cluster.local/ns/default/sa/admin'], cert), ZtError);
  t.same(uriSansOf({ raw: der } as unknown as tls.PeerCertificate), [crafted], 'DER fallback without text');
  t.same(uriSansOf({} as tls.PeerCertificate), [], 'no peer certificate');
  t.same(uriSansOf(undefined), []);
});

t.test('identity checks', async (t) => {
  const cert = new X509Certificate(ca.issueWorkloadCertificate(SERVER_ID).certPem);
  t.equal(checkServerIdentity([SERVER_ID], cert), undefined);
  t.equal(checkServerIdentity(['spiffe://cluster.local/ns/x/sa/y', SERVER_ID], cert), undefined);
  const err = checkServerIdentity([CLIENT_ID], cert);
  t.type(err, ZtError);
  t.equal((err as ZtError).code, 'ZT_ERR_IDENTITY_MISMATCH');
  t.match(err?.message, CLIENT_ID);
  t.match(err?.message, SERVER_ID);
  t.type(checkServerIdentity([], cert), ZtError, 'nothing expected: fail closed');
  t.type(checkServerIdentity([SERVER_ID], undefined), ZtError);
  t.equal(checkClientTrustDomain('cluster.local', cert), undefined);
  const tdErr = checkClientTrustDomain('other.local', cert);
  t.equal((tdErr as ZtError).code, 'ZT_ERR_IDENTITY_MISMATCH');
  t.match(tdErr?.message, 'other.local');
});

interface HandshakeResult {
  clientError: Error | undefined;
  clientReceived: string;
  serverError: Error | undefined;
  serverPeer: tls.PeerCertificate | undefined;
  clientPeer: tls.PeerCertificate | undefined;
}

/** One TLS 1.3 mutual-auth connection on loopback; the server answers "ok" and closes. */
async function handshake(
  t: Test,
  server: tls.TlsOptions | { secureContext: tls.SecureContext },
  client: tls.ConnectionOptions,
  check?: (cert: tls.PeerCertificate) => Error | undefined,
): Promise<HandshakeResult> {
  const result: HandshakeResult = {
    clientError: undefined,
    clientReceived: '',
    serverError: undefined,
    serverPeer: undefined,
    clientPeer: undefined,
  };
  let serverDone!: () => void;
  const serverSettled = new Promise<void>((resolve) => (serverDone = resolve));
  const onSecure = (socket: tls.TLSSocket): void => {
    result.serverPeer = socket.getPeerCertificate();
    socket.on('error', () => {});
    socket.end('ok');
    serverDone();
  };
  const onServerError = (err: Error): void => {
    result.serverError = err;
    serverDone();
  };
  let srv: tls.Server | NetServer;
  if ('secureContext' in server) {
    // Per-connection context, as the HBONE server does without SNI.
    srv = createNetServer((raw) => {
      const socket = new tls.TLSSocket(raw, {
        isServer: true,
        secureContext: server.secureContext,
        requestCert: true,
        rejectUnauthorized: true,
      });
      socket.on('secure', () => onSecure(socket));
      socket.on('error', onServerError);
    });
  } else {
    srv = tls.createServer({ ...server, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, onSecure);
    srv.on('tlsClientError', onServerError);
  }
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  t.teardown(() => srv.close());
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((resolve) => {
    const socket = tls.connect({
      ...client,
      host: '127.0.0.1',
      port,
      minVersion: 'TLSv1.3',
      ...(check && { checkServerIdentity: (_host: string, cert: tls.PeerCertificate) => check(cert) }),
    });
    socket.on('secureConnect', () => {
      result.clientPeer = socket.getPeerCertificate();
      t.equal(socket.getProtocol(), 'TLSv1.3');
    });
    socket.on('data', (d: Buffer) => (result.clientReceived += d.toString()));
    socket.on('error', (err) => (result.clientError ??= err));
    socket.on('close', () => resolve());
  });
  await Promise.race([serverSettled, new Promise((r) => setTimeout(r, 1000))]);
  return result;
}

t.test('mutual TLS 1.3 between two workloads of one CA', async (t) => {
  const sm = new SecretManager(ca);
  t.teardown(() => sm.close());
  const ok = await handshake(t, await sm.fetch(SERVER_ID), await sm.fetch(CLIENT_ID), (cert) =>
    checkServerIdentity([SERVER_ID], cert),
  );
  t.equal(ok.clientError, undefined);
  t.equal(ok.clientReceived, 'ok');
  t.equal(peerIdentityOf(ok.serverPeer), CLIENT_ID, 'server sees the client identity');
  t.equal(peerIdentityOf(ok.clientPeer), SERVER_ID, 'client sees the server identity');
  t.same(uriSansOf(ok.serverPeer!), [CLIENT_ID], 'SANs from a tls.PeerCertificate');
  t.equal(checkClientTrustDomain('cluster.local', ok.serverPeer), undefined);

  const wrong = await handshake(t, await sm.fetch(SERVER_ID), await sm.fetch(CLIENT_ID), (cert) =>
    checkServerIdentity(['spiffe://cluster.local/ns/default/sa/someone-else'], cert),
  );
  t.type(wrong.clientError, ZtError, 'client aborts on identity mismatch');
  t.equal((wrong.clientError as ZtError).code, 'ZT_ERR_IDENTITY_MISMATCH');
  t.equal(wrong.clientReceived, '');

  const viaContext = await handshake(t, { secureContext: sm.secureContext(SERVER_ID)! }, await sm.fetch(CLIENT_ID), (cert) =>
    checkServerIdentity([SERVER_ID], cert),
  );
  t.equal(viaContext.clientError, undefined);
  t.equal(viaContext.clientReceived, 'ok', 'SecureContext serves the same identity');
  t.equal(peerIdentityOf(viaContext.serverPeer), CLIENT_ID);
});

t.test('client from another trust domain of the same root', async (t) => {
  const sm = new SecretManager(ca);
  t.teardown(() => sm.close());
  const foreign = 'spiffe://other.local/ns/default/sa/x';
  const r = await handshake(t, await sm.fetch(SERVER_ID), await sm.fetch(foreign), (cert) =>
    checkServerIdentity([SERVER_ID], cert),
  );
  t.equal(peerIdentityOf(r.serverPeer), foreign, 'chain is valid, so TLS alone accepts it');
  const err = checkClientTrustDomain('cluster.local', r.serverPeer);
  t.type(err, ZtError, 'the trust-domain check rejects it');
  t.match(err?.message, foreign);
});

t.test('certificates from a different root fail the handshake', async (t) => {
  const sm = new SecretManager(ca);
  const otherSm = new SecretManager(otherCa);
  t.teardown(() => {
    sm.close();
    otherSm.close();
  });
  // Client presents a cert of the other root (but trusts ours): the server must refuse it.
  const client = { ...await otherSm.fetch(CLIENT_ID), ca: ca.rootCertPem };
  const r1 = await handshake(t, await sm.fetch(SERVER_ID), client, (cert) => checkServerIdentity([SERVER_ID], cert));
  // Node's server drops the connection (no alert) when rejectUnauthorized fails on the client
  // cert, so the error is a generic hang-up; what matters is that no secure session came up.
  t.ok(r1.serverError, 'server reports a client error');
  t.equal(r1.serverPeer, undefined, 'server never accepted the connection');
  t.equal(r1.clientReceived, '', 'client got no data');

  // Server presents a cert of the other root: the client must refuse it before any check of ours.
  let checked = false;
  const r2 = await handshake(t, { ...await otherSm.fetch(SERVER_ID), ca: ca.rootCertPem }, await sm.fetch(CLIENT_ID), () => {
    checked = true;
    return undefined;
  });
  t.ok(r2.clientError, `client rejects: ${r2.clientError?.message}`);
  t.equal(checked, false, 'identity check never reached');
  t.equal(r2.clientReceived, '');
});

t.test('CA round trip through files', async (t) => {
  const dir = join(tempDir(t), 'nested', 'ca');
  const { certPath, keyPath } = ca.writeTo(dir);
  t.equal(certPath, join(dir, 'ca-cert.pem'));
  t.equal(keyPath, join(dir, 'ca-key.pem'));
  t.equal(statSync(certPath).mode & 0o777, 0o644);
  t.equal(statSync(keyPath).mode & 0o777, 0o600);
  t.match(readFileSync(keyPath, 'utf8'), /BEGIN PRIVATE KEY/);
  t.notMatch(readFileSync(certPath, 'utf8'), /PRIVATE KEY/);

  const loaded = CertificateAuthority.fromFiles(certPath, keyPath);
  t.equal(loaded.rootCertPem, ca.rootCertPem);
  t.same(loaded.rootCertificate, ca.rootCertificate);
  const leaf = new X509Certificate(loaded.issueWorkloadCertificate(SERVER_ID).certPem);
  const root = new X509Certificate(ca.rootCertPem);
  t.ok(leaf.checkIssued(root) && leaf.verify(root.publicKey), 'loaded CA issues certs chaining to the original root');

  // Rewriting tightens a pre-existing key file's mode.
  writeFileSync(keyPath, 'x', { mode: 0o644 });
  ca.writeTo(dir);
  t.equal(statSync(keyPath).mode & 0o777, 0o600);
});

t.test('CA loading rejects bad material with clear messages', async (t) => {
  const dir = tempDir(t);
  const otherKey = readCaKey(otherCa, t);
  const ownKey = readCaKey(ca, t);
  t.throws(() => CertificateAuthority.fromPem(ca.rootCertPem, otherKey), {
    code: 'ZT_ERR_CONFIG_INVALID',
    message: /CA key does not match the public key of CA certificate/,
  });
  const leaf = ca.issueWorkloadCertificate(SERVER_ID);
  t.throws(() => CertificateAuthority.fromPem(leaf.certPem, leaf.keyPem), { code: 'ZT_ERR_CONFIG_INVALID', message: /is not a CA/ });
  t.throws(() => CertificateAuthority.fromPem('garbage', ownKey), { message: /no PEM certificate/ });
  t.throws(() => CertificateAuthority.fromPem(ca.rootCertPem, 'garbage'), { message: /cannot parse private key/ });
  t.throws(() => CertificateAuthority.fromPem(ca.rootCertPem + otherCa.rootCertPem, ownKey), { message: /2 certificates/ });

  const missing = join(dir, 'nope.pem');
  t.throws(() => CertificateAuthority.fromFiles(missing, missing), { code: 'ZT_ERR_CONFIG_INVALID', message: missing });
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  writeFileSync(certPath, ca.rootCertPem);
  writeFileSync(keyPath, otherKey);
  t.throws(() => CertificateAuthority.fromFiles(certPath, keyPath), { message: new RegExp(`CA key ${keyPath}.*${certPath}`) });
});

t.test('secret manager', async (t) => {
  let now = Date.now();
  const sm = new SecretManager(ca, { now: () => now });
  t.teardown(() => sm.close());
  t.equal(sm.peekTlsOptions(SERVER_ID), undefined, 'nothing held before the first fetch');
  const first = await sm.fetch(SERVER_ID);
  t.equal(sm.peekTlsOptions(SERVER_ID), first, 'the fast path hands out the same object');
  t.equal(await sm.fetch(SERVER_ID), first, 'cached');
  const serialOf = (pem: string): string => new X509Certificate(pem).serialNumber.toUpperCase();
  t.equal(first.ca, ca.rootCertPem, 'the roots come from the source');
  t.equal(sm.secureContext(SERVER_ID), sm.secureContext(SERVER_ID), 'context cached');
  t.equal(sm.secureContext(CLIENT_ID), undefined, 'no context for an identity not fetched');
  await sm.fetch(CLIENT_ID);

  const dump = sm.dump();
  t.same(
    dump.map((d) => d.identity),
    [CLIENT_ID, SERVER_ID],
    'sorted by identity',
  );
  const text = JSON.stringify(dump);
  t.notMatch(text, /PRIVATE KEY/);
  const server = dump[1]!;
  t.equal(server.state, 'Available');
  t.equal(server.error, undefined);
  const pem = Buffer.from(server.certChain[0]!.pem, 'base64').toString();
  t.equal(pem, first.cert);
  t.notMatch(pem + Buffer.from(server.rootCerts[0]!.pem, 'base64').toString(), /PRIVATE KEY/);
  t.equal(Buffer.from(server.rootCerts[0]!.pem, 'base64').toString(), ca.rootCertPem);
  t.equal(server.certChain[0]!.serialNumber, serialOf(first.cert));
  t.match(server.certChain[0]!.validFrom, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  t.equal(Date.parse(server.certChain[0]!.expirationTime), Date.parse(new X509Certificate(first.cert).validTo));

  // Past half-life the still-valid certificate keeps being served while its renewal runs.
  now += 12 * 3600_000 + 1000;
  t.equal(sm.peekTlsOptions(SERVER_ID), first, 'still valid: served while renewing');
  await waitFor(() => sm.peekTlsOptions(SERVER_ID) !== first, 5000, 'renewal');
  const renewed = sm.peekTlsOptions(SERVER_ID)!;
  t.not(serialOf(renewed.cert), serialOf(first.cert), 'renewed at half-life');
  t.not(sm.secureContext(SERVER_ID), undefined);

  sm.forget(SERVER_ID);
  t.same(
    sm.dump().map((d) => d.identity),
    [CLIENT_ID],
  );
  t.equal(sm.findCertificate(SERVER_ID), undefined);
  t.equal(sm.peekTlsOptions(SERVER_ID), undefined, 'forgotten: nothing handed out');
  t.not(serialOf((await sm.fetch(SERVER_ID)).cert), serialOf(renewed.cert), 'forgotten identity is reissued');
  t.notOk('keyPem' in (sm.findCertificate(SERVER_ID) ?? {}), 'summary carries no key');
  t.throws(() => new SecretManager(ca, { validityMs: 10 }), { code: 'ZT_ERR_CONFIG_INVALID' });
});

t.test('secret manager renews in the background at half-life', async (t) => {
  const sm = new SecretManager(ca, { validityMs: 2000 });
  t.teardown(() => sm.close());
  await sm.fetch(SERVER_ID);
  const before = sm.findCertificate(SERVER_ID)!.serialHex;
  await new Promise((r) => setTimeout(r, 1300));
  const after = sm.findCertificate(SERVER_ID)!.serialHex;
  t.not(after, before, 'timer replaced the certificate without a request');
  sm.close();
  await new Promise((r) => setTimeout(r, 1200));
  t.equal(sm.findCertificate(SERVER_ID)!.serialHex, after, 'no renewal after close');
});

/** A source the test drives: each issue() waits for the gate (if closed) and fails while `failing`. */
class ControlledSource implements CertificateSource {
  readonly name = 'test source';
  calls = 0;
  failing = false;
  #gate: Promise<void> | undefined;
  #open: () => void = () => undefined;
  readonly #inner: LocalCaSource;
  constructor(now: () => number) {
    this.#inner = new LocalCaSource(ca, { validityMs: 60_000, now });
  }
  hold(): void {
    this.#gate = new Promise((r) => (this.#open = r));
  }
  release(): void {
    this.#open();
    this.#gate = undefined;
  }
  async issue(identity: string): Promise<IssuedIdentity> {
    this.calls += 1;
    if (this.#gate) await this.#gate;
    if (this.failing) throw new Error(`CA down (call ${this.calls})`);
    return this.#inner.issue(identity);
  }
}

t.test('concurrent fetches of one identity share one issuance', async (t) => {
  const source = new ControlledSource(Date.now);
  const sm = new SecretManager(source);
  t.teardown(() => sm.close());
  source.hold();
  sm.prefetch(SERVER_ID);
  const waiting = [sm.fetch(SERVER_ID), sm.fetch(SERVER_ID), sm.fetch(SERVER_ID), sm.fetch(SERVER_ID)];
  sm.prefetch(SERVER_ID);
  await new Promise((r) => setImmediate(r));
  t.equal(source.calls, 1, 'one request in flight for five callers');
  t.equal(sm.state(SERVER_ID), 'Initializing');
  t.equal(sm.peekTlsOptions(SERVER_ID), undefined, 'nothing to hand out yet');
  t.same(sm.dump()[0], { identity: SERVER_ID, state: 'Initializing', certChain: [], rootCerts: [] });
  source.release();
  const got = await within(5000, Promise.all(waiting), 'the shared issuance');
  t.ok(got.every((g) => g === got[0]), 'every caller got the same certificate');
  t.equal(sm.peekTlsOptions(SERVER_ID), got[0]);
  t.equal(sm.state(SERVER_ID), 'Available');
  await sm.fetch(SERVER_ID);
  t.equal(source.calls, 1, 'still one request');
});

t.test('a failing source: backoff retries, the old certificate served until it expires, never after', async (t) => {
  let now = Date.now();
  const source = new ControlledSource(() => now);
  const errors: { at: number; message: string }[] = [];
  const sm = new SecretManager(source, {
    now: () => now,
    retryInitialMs: 200,
    random: () => 0.5,
    onRenewalError: (_id, err) => errors.push({ at: Date.now(), message: (err as Error).message }),
  });
  t.teardown(() => sm.close());
  const old = await sm.fetch(SERVER_ID);
  const oldNotAfter = sm.findCertificate(SERVER_ID)!.notAfter.getTime();
  source.failing = true;
  now += 40_000; // past half-life (60 s lifetime), before expiry
  t.equal(sm.peekTlsOptions(SERVER_ID), old, 'renewal due: the old certificate is still served');
  await waitFor(() => errors.length >= 3, 10_000, 'three failed attempts');
  // Delays with random 0.5: 150, 300, 600 ms (doubling). Timers never fire early, so the
  // second and third attempts are at least 300 + ... apart; a fixed delay would give 150.
  t.ok(errors[2]!.at - errors[1]!.at >= 280, `the delay grows (${errors[1]!.at - errors[0]!.at} ms, then ${errors[2]!.at - errors[1]!.at} ms)`);
  t.match(errors[0]!.message, /no certificate for .* from test source: CA down/);
  t.equal(sm.peekTlsOptions(SERVER_ID), old, 'still served while retries fail');
  t.equal(await sm.fetch(SERVER_ID), old);
  t.equal(sm.state(SERVER_ID), 'Available');
  t.match(sm.dump()[0]?.error, /CA down/, 'the last error is in the dump');

  now = oldNotAfter + 1; // expired
  t.equal(sm.peekTlsOptions(SERVER_ID), undefined, 'an expired certificate is never handed out');
  t.equal(sm.secureContext(SERVER_ID), undefined);
  t.equal(sm.state(SERVER_ID), 'Unavailable');
  const callsBefore = source.calls;
  const err = await sm.fetch(SERVER_ID).then(() => undefined, (e: ZtError) => e);
  t.equal(err?.code, 'ZT_ERR_IDENTITY_UNAVAILABLE', 'callers fail fast with the last error');
  t.equal(source.calls, callsBefore, 'without a request of their own');
  const dumped = sm.dump()[0]!;
  t.equal(dumped.state, 'Unavailable');
  t.same(dumped.certChain, [], 'no expired chain in the dump');
  t.match(dumped.error, /CA down/);

  source.failing = false;
  await waitFor(() => sm.peekTlsOptions(SERVER_ID) !== undefined, 10_000, 'the next retry');
  const fresh = sm.peekTlsOptions(SERVER_ID)!;
  t.not(fresh.cert, old.cert, 'a new certificate once the source recovers');
  t.equal(sm.state(SERVER_ID), 'Available');
  t.equal(sm.dump()[0]?.error, undefined, 'error cleared');
});

t.test('issuedFromPem refuses a leaf for another identity or another key', async (t) => {
  const leaf = ca.issueWorkloadCertificate(SERVER_ID);
  const other = ca.issueWorkloadCertificate(CLIENT_ID);
  const base = { identity: SERVER_ID, keyPem: leaf.keyPem, chain: [leaf.certPem], roots: [ca.rootCertPem], from: 'test CA' };
  const ok = issuedFromPem(base);
  t.equal(ok.serialHex, leaf.serialHex);
  t.equal(ok.notAfter.getTime(), leaf.notAfter.getTime());
  t.throws(() => issuedFromPem({ ...base, identity: CLIENT_ID }), { code: 'ZT_ERR_IDENTITY_UNAVAILABLE', message: /test CA answered an unusable certificate .* the leaf names/ });
  t.throws(() => issuedFromPem({ ...base, keyPem: other.keyPem }), { message: /does not match our key/ });
  t.throws(() => issuedFromPem({ ...base, roots: [] }), { message: /no root/ });
});

/** Polls `cond` every 20 ms; rejects naming `what` after `ms`. */
function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const until = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (cond()) resolve();
      else if (Date.now() > until) reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      else setTimeout(tick, 20);
    };
    tick();
  });
}

t.test('ca create', async (t) => {
  const dir = join(tempDir(t), 'out');
  const io = (): { out: string; err: string; io: { out: (s: string) => void; err: (s: string) => void } } => {
    const r = { out: '', err: '', io: { out: (s: string) => void (r.out += s), err: (s: string) => void (r.err += s) } };
    return r;
  };
  for (const argv of [[], ['--out'], ['--bogus'], ['--out', dir, 'extra'], ['--out', dir, '--validity-days', 'abc'], ['--force=1', '--out', dir]]) {
    const r = io();
    t.equal(await runCaCreate(argv, r.io), 2, `usage error: ${JSON.stringify(argv)}`);
    t.match(r.err, /usage: ztunnel-ts ca create --out DIR/);
  }
  const help = io();
  t.equal(await runCaCreate(['--help'], help.io), 0);
  t.match(help.out, /usage/);

  const first = io();
  t.equal(await runCaCreate(['--out', dir, '--common-name', 'cli root', '--validity-days', '30'], first.io), 0);
  const certPath = join(dir, 'ca-cert.pem');
  const keyPath = join(dir, 'ca-key.pem');
  t.match(first.out, certPath);
  t.match(first.out, keyPath);
  t.notMatch(first.out, /PRIVATE/);
  const loaded = CertificateAuthority.fromFiles(certPath, keyPath);
  t.equal(loaded.rootCertificate.identity, 'cli root');
  t.ok(Math.abs(loaded.rootCertificate.notAfter.getTime() - Date.now() - 30 * 86400_000) < 5000);
  const originalCert = readFileSync(certPath, 'utf8');

  const refused = io();
  t.equal(await runCaCreate([`--out=${dir}`], refused.io), 1);
  t.match(refused.err, /refusing to overwrite/);
  t.equal(readFileSync(certPath, 'utf8'), originalCert, 'untouched');

  const forced = io();
  t.equal(await runCaCreate(['--out', dir, '--force'], forced.io), 0);
  t.not(readFileSync(certPath, 'utf8'), originalCert, 'replaced with --force');
  t.equal(statSync(keyPath).mode & 0o777, 0o600);
});

function createPublicKeyDer(keyPem: string): string {
  return createPublicKey(keyPem).export({ type: 'spki', format: 'der' }).toString('hex');
}

/** The CA's key as PEM, obtained the only way the CA gives it out: writeTo. */
function readCaKey(authority: CertificateAuthority, t: Test): string {
  const dir = tempDir(t);
  return readFileSync(authority.writeTo(dir).keyPath, 'utf8');
}

t.test('leader and follower (worker threads): the leader reports what it issues, the follower never renews itself', async (t) => {
  let now = Date.now();
  const issuedSeen: IssuedIdentity[] = [];
  const leader = new SecretManager(new LocalCaSource(ca, { validityMs: 60_000, now: () => now }), {
    now: () => now,
    onIssued: (i) => issuedSeen.push(i),
  });
  t.teardown(() => leader.close());
  // The follower's source is "ask the leader", as a worker thread asks the main thread.
  let asked = 0;
  const follower = new SecretManager(
    {
      name: 'the leader',
      issue: async (id) => {
        asked += 1;
        await leader.fetch(id);
        return leader.current(id)!;
      },
    },
    { now: () => now, rotation: 'pushed' },
  );
  t.teardown(() => follower.close());

  const first = await follower.fetch(SERVER_ID);
  t.equal(asked, 1, 'the follower asked once for an identity it did not hold');
  t.equal(issuedSeen.length, 1, 'the leader reported its issuance');
  t.equal(first.cert, (await leader.fetch(SERVER_ID)).cert, 'the same certificate on both');
  t.equal(leader.current(SERVER_ID)?.identity, SERVER_ID);
  t.equal(leader.current(CLIENT_ID), undefined, 'nothing for an identity never issued');

  now += 40_000; // past half-life, before expiry
  t.equal(follower.peekTlsOptions(SERVER_ID), first, 'the follower keeps serving: renewal is not its job');
  await new Promise((r) => setTimeout(r, 50));
  t.equal(asked, 1, 'and it did not ask for a renewal');
  leader.peekTlsOptions(SERVER_ID); // a look past half-life starts the leader's renewal
  await waitFor(() => issuedSeen.length === 2, 5000, 'the leader renews at half-life');
  t.ok(follower.install(issuedSeen[1]!), 'the renewal is pushed to the follower');
  t.not(follower.peekTlsOptions(SERVER_ID)?.cert, first.cert, 'which serves it from now on');
  t.equal(follower.findCertificate(SERVER_ID)?.serialHex, leader.findCertificate(SERVER_ID)?.serialHex);
  t.notOk(follower.install(issuedSeen[0]!), 'an older certificate arriving late is ignored');
  t.equal(follower.findCertificate(SERVER_ID)?.serialHex, issuedSeen[1]!.serialHex);

  // install() also takes an identity the follower never asked for (the leader prefetched it).
  const client = await new LocalCaSource(ca, { validityMs: 60_000, now: () => now }).issue(CLIENT_ID);
  t.ok(follower.install(client));
  t.equal(follower.state(CLIENT_ID), 'Available');
  t.equal(asked, 1, 'without asking');
  // An expired push is refused.
  now = client.notAfter.getTime() + 1;
  t.notOk(follower.install(client), 'an expired certificate is refused');
});
