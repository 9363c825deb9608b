// The istiod CA client against a fake istiod CA on loopback: a grpc-js server with TLS (a
// server certificate for 127.0.0.1 signed by a test root) and a token check, answering
// CreateCertificate by signing the CSR with CertificateAuthority.signCsr, as istiod's CA does.
// Then the client as SecretManager's CertificateSource end to end: an HBONE server whose
// certificate is still being fetched, rotation of 5 s certificates at half-life.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { Metadata, Server, ServerCredentials, status, type ServerUnaryCall, type sendUnaryData, type ServiceDefinition } from '@grpc/grpc-js';
import t, { type Test } from 'tap';
import { SecretManager } from '../../src/identity/secret-manager.js';
import { readUriSans } from '../../src/identity/x509.js';
import { HboneServer } from '../../src/tunnel/hbone-server.js';
import { IstioCaClient } from '../../src/xds/ca-client.js';
import { CREATE_CERTIFICATE_METHOD_PATH, IstioCertificateRequestCodec, IstioCertificateResponseCodec, structToJson } from '../../src/xds/protos.js';
import type { WireIstioCertificateRequest } from '../../src/xds/wire-types.js';
import { makeServerPki } from '../helpers/server-pki.js';
import { within } from '../helpers/within.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `zt-ca-${process.pid}-`));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
const mesh = makeServerPki(tmp, 'mesh');
const other = makeServerPki(tmp, 'other');

const TOKEN = `token-${process.pid}`;
const ZTUNNEL_ID = 'spiffe://cluster.local/ns/istio-system/sa/ztunnel';
const SLEEP_ID = 'spiffe://cluster.local/ns/default/sa/sleep';

interface Seen {
  auth: string[];
  clusterId: string[];
  req: WireIstioCertificateRequest;
}

const raw = (b: Buffer): Buffer => b;
const RAW_CA: ServiceDefinition = {
  CreateCertificate: {
    path: CREATE_CERTIFICATE_METHOD_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: raw,
    requestDeserialize: raw,
    responseSerialize: raw,
    responseDeserialize: raw,
  },
};

async function fakeIstiodCa(keys: { cert: string; key: string }): Promise<{ port: number; seen: Seen[]; answerDelay: { ms: number }; stop: () => void }> {
  const seen: Seen[] = [];
  /** How long the CA takes to answer (a slow istiod). */
  const answerDelay = { ms: 0 };
  const server = new Server();
  server.addService(RAW_CA, {
    CreateCertificate: (call: ServerUnaryCall<Buffer, Buffer>, done: sendUnaryData<Buffer>) => {
      const req = IstioCertificateRequestCodec.decode(call.request);
      const md: Metadata = call.metadata;
      seen.push({ auth: md.get('authorization').map(String), clusterId: md.get('clusterid').map(String), req });
      if (!md.get('authorization').map(String).includes(`Bearer ${TOKEN}`)) {
        done({ code: status.UNAUTHENTICATED, details: 'bad token' });
        return;
      }
      // istiod: the CSR's identity must be the caller's or, for ztunnel, the impersonated one.
      const impersonated = req.metadata ? structToJson(req.metadata).ImpersonatedIdentity : undefined;
      const expectIdentity = typeof impersonated === 'string' ? impersonated : ZTUNNEL_ID;
      const signed = new Promise((r) => setTimeout(r, answerDelay.ms)).then(() =>
        mesh.authority.signCsr(req.csr, { expectIdentity, validityMs: Number(req.validity_duration) * 1000 }),
      );
      signed.then(
        ({ certPem }) => done(null, Buffer.from(IstioCertificateResponseCodec.encode({ cert_chain: [certPem, mesh.ca] }))),
        (err: Error) => done({ code: status.INVALID_ARGUMENT, details: err.message }),
      );
    },
  });
  const creds = ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(keys.cert), private_key: Buffer.from(keys.key) }], false);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))));
  return { port, seen, answerDelay, stop: () => server.forceShutdown() };
}

const ca = await fakeIstiodCa(mesh);
t.teardown(() => ca.stop());

function client(o: { token?: string; root?: string; validitySeconds?: number } = {}): IstioCaClient {
  const c = new IstioCaClient({
    ...(o.validitySeconds !== undefined ? { validitySeconds: o.validitySeconds } : {}),
    address: `127.0.0.1:${ca.port}`,
    tls: { ca: o.root ?? mesh.ca },
    token: () => o.token ?? TOKEN,
    ownIdentity: ZTUNNEL_ID,
    clusterId: 'Kubernetes',
    timeoutMs: 5_000,
  });
  t.teardown(() => c.close());
  return c;
}

t.test('a workload certificate from istiod: impersonated, chain + root, key matches, usable for TLS', async (t) => {
  const got = await within(10_000, client().requestCertificate(SLEEP_ID, 3600), 'CreateCertificate');
  const last = ca.seen.at(-1) as Seen;
  t.same(last.auth, [`Bearer ${TOKEN}`], 'bearer token sent');
  t.same(last.clusterId, ['Kubernetes']);
  t.same(last.req.metadata ? structToJson(last.req.metadata) : undefined, { ImpersonatedIdentity: SLEEP_ID }, 'impersonation metadata for a workload identity');
  t.equal(last.req.validity_duration, '3600');
  t.match(last.req.csr, /^-----BEGIN CERTIFICATE REQUEST-----/);
  t.equal(got.certChainPem.length, 1);
  t.equal(got.rootPem.trim(), mesh.ca.trim(), 'the root is taken from the response');
  const leaf = new X509Certificate(got.certChainPem[0] as string);
  t.same(readUriSans(new Uint8Array(leaf.raw)), [SLEEP_ID], 'the only name is the SPIFFE id');
  t.ok(leaf.verify(new X509Certificate(got.rootPem).publicKey), 'the leaf chains to the root');
  t.ok(leaf.checkPrivateKey(createPrivateKey(got.keyPem)), 'the key we generated matches the issued certificate');
  t.doesNotThrow(() => tls.createSecureContext({ key: got.keyPem, cert: got.certChainPem[0], ca: got.rootPem }), 'usable as a TLS identity');
  t.notMatch(JSON.stringify(last.req), /PRIVATE KEY/, 'the private key never leaves');
});

t.test("ztunnel's own identity is requested without impersonation", async (t) => {
  const got = await within(10_000, client().requestCertificate(ZTUNNEL_ID), 'CreateCertificate');
  t.equal(ca.seen.at(-1)?.req.metadata, null, 'no metadata');
  t.same(readUriSans(new Uint8Array(new X509Certificate(got.certChainPem[0] as string).raw)), [ZTUNNEL_ID]);
});

t.test('a wrong token is refused with a clear error', async (t) => {
  const err = await within(10_000, client({ token: 'nope' }).requestCertificate(SLEEP_ID).then(() => undefined, (e: Error) => e), 'refusal');
  t.match(err?.message, /istiod CA at 127\.0\.0\.1:\d+ refused the certificate request: .*UNAUTHENTICATED/);
});

t.test('an istiod certificate from another root is refused', async (t) => {
  const before = ca.seen.length;
  const err = await within(10_000, client({ root: other.ca }).requestCertificate(SLEEP_ID).then(() => undefined, (e: Error) => e), 'refusal');
  t.match(err?.message, /refused the certificate request/);
  t.equal(ca.seen.length, before, 'no request reached the CA');
});

t.test('signCsr refuses a request for another identity than the caller may have', async (t) => {
  const { createCsr } = await import('../../src/identity/x509.js');
  const { csrPem } = await createCsr(SLEEP_ID);
  await t.rejects(mesh.authority.signCsr(csrPem, { expectIdentity: ZTUNNEL_ID }), /is for spiffe:\/\/cluster\.local\/ns\/default\/sa\/sleep, not/);
  // Flip one bit of the signature (the last bytes of the DER): the request no longer verifies.
  const der = Buffer.from(csrPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  der[der.length - 2] = (der[der.length - 2] as number) ^ 0x01;
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END CERTIFICATE REQUEST-----\n`;
  await t.rejects(mesh.authority.signCsr(tampered), /malformed certificate request|does not verify/);
});

// ------------------------------------------------------------ istiod's CA behind SecretManager

const CLIENT_ID = 'spiffe://cluster.local/ns/default/sa/client';
const TUNING = { streamWindowBytes: 65535, connectionWindowBytes: 65535, frameSizeBytes: 16384 };

interface Tunnel {
  serverSerial: string;
  roundTrip: (msg: string) => Promise<string>;
  close: () => void;
}

/** One HBONE session to 127.0.0.1:port with one CONNECT stream that the server echoes. */
async function openTunnel(port: number, creds: { key: string; cert: string; ca: string }): Promise<Tunnel> {
  const session = http2.connect(`https://127.0.0.1:${port}`, {
    createConnection: () =>
      tls.connect({ host: '127.0.0.1', port, ...creds, ALPNProtocols: ['h2'], minVersion: 'TLSv1.3', checkServerIdentity: () => undefined }),
  });
  session.on('error', () => undefined);
  const stream = session.request({ ':method': 'CONNECT', ':authority': '127.0.0.1:80' }, { endStream: false });
  stream.on('error', () => undefined);
  const status = await within(
    10_000,
    new Promise<number>((resolve, reject) => {
      stream.once('response', (h) => resolve(Number(h[':status'])));
      stream.once('close', () => reject(new Error('closed before a CONNECT response')));
    }),
    'CONNECT response',
  );
  if (status !== 200) throw new Error(`CONNECT answered ${status}`);
  const serverSerial = (session.socket as tls.TLSSocket).getPeerCertificate().serialNumber.toUpperCase();
  return {
    serverSerial,
    roundTrip: (msg) => {
      stream.write(msg);
      return within(5000, new Promise<string>((r) => stream.once('data', (d: Buffer) => r(d.toString()))), `echo of ${msg}`);
    },
    close: () => session.destroy(),
  };
}

function echoServer(t: Test, sm: SecretManager, opts: { handshakeTimeoutMs?: number; identity: string }): Promise<{ port: number; rejected: string[]; waited: () => number }> {
  const rejected: string[] = [];
  let waited = 0;
  const server = new HboneServer({
    tuning: TUNING,
    trustDomain: 'cluster.local',
    identityFor: () => opts.identity,
    tlsFor: (id) => {
      const held = sm.peekTlsOptions(id);
      if (held) return held;
      waited += 1;
      return sm.fetch(id);
    },
    onStream: (stream) => {
      stream.respond({ ':status': 200 });
      stream.on('data', (d: Buffer) => stream.write(d));
    },
    onRejected: (i) => rejected.push(i.reason),
    ...(opts.handshakeTimeoutMs !== undefined ? { handshakeTimeoutMs: opts.handshakeTimeoutMs } : {}),
  });
  const l = net.createServer((s) => server.handleSocket(s));
  t.teardown(() => {
    server.destroy();
    l.close();
  });
  return new Promise((resolve) => l.listen(0, '127.0.0.1', () => resolve({ port: (l.address() as net.AddressInfo).port, rejected, waited: () => waited })));
}

t.test('istiod CA as the certificate source: mutual TLS, HBONE waits for a certificate in flight, rotation at half-life', async (t) => {
  const issuanceErrors: string[] = [];
  const sm = new SecretManager(client({ validitySeconds: 5 }), { onRenewalError: (_id, err) => issuanceErrors.push(String(err)) });
  t.teardown(() => sm.close());
  const hbone = await echoServer(t, sm, { identity: SLEEP_ID });
  const clientTls = await within(10_000, sm.fetch(CLIENT_ID), 'client certificate');
  t.equal(clientTls.ca.trim(), mesh.ca.trim(), 'the trust roots are the root istiod answered');

  // The server's certificate is not there yet, and istiod is slow: the socket waits for it.
  ca.answerDelay.ms = 700;
  const t0 = Date.now();
  const a = await openTunnel(hbone.port, clientTls);
  ca.answerDelay.ms = 0;
  t.equal(hbone.waited(), 1, 'the HBONE server had to wait for the certificate');
  t.ok(Date.now() - t0 >= 650, 'the handshake completed only once istiod answered');
  t.equal(await a.roundTrip('a1'), 'a1', 'served once the certificate arrived');
  const first = sm.findCertificate(SLEEP_ID)!;
  t.equal(a.serverSerial, first.serialHex, 'the server presented the certificate from istiod');
  const remaining = first.notAfter.getTime() - Date.now();
  t.ok(remaining > 2500 && remaining <= 5000, `a short certificate (${remaining} ms left)`);
  const lifetime = first.notAfter.getTime() - t0;

  await within(10_000, waitFor(() => sm.findCertificate(SLEEP_ID)?.serialHex !== first.serialHex), 'rotation');
  const rotatedAt = Date.now();
  t.ok(rotatedAt < first.notAfter.getTime(), `rotated before expiry (${first.notAfter.getTime() - rotatedAt} ms left)`);
  // Asked no earlier than t0, so due no earlier than half of the remaining lifetime after t0.
  t.ok(rotatedAt >= t0 + lifetime / 2 - 20, `not before half-life (${rotatedAt - t0} ms of ${lifetime})`);
  const second = sm.findCertificate(SLEEP_ID)!;

  const b = await openTunnel(hbone.port, sm.peekTlsOptions(CLIENT_ID)!);
  t.equal(b.serverSerial, second.serialHex, 'a new session gets the new certificate');
  t.not(b.serverSerial, a.serverSerial);
  t.equal(await b.roundTrip('b1'), 'b1');
  t.equal(await a.roundTrip('a2'), 'a2', 'the session made with the old certificate keeps working');
  await waitFor(() => Date.now() > first.notAfter.getTime() + 100);
  t.equal(await a.roundTrip('a3'), 'a3', '... also once the old certificate has expired');
  a.close();
  b.close();

  t.same(hbone.rejected, [], 'no connection refused');
  t.same(issuanceErrors, []);
  const dump = sm.dump();
  t.same(dump.map((d) => [d.identity, d.state]), [
    [CLIENT_ID, 'Available'],
    [SLEEP_ID, 'Available'],
  ]);
  t.equal(Buffer.from(dump[1]!.rootCerts[0]!.pem, 'base64').toString().trim(), mesh.ca.trim());
  t.notMatch(JSON.stringify(dump), /PRIVATE KEY/);
});

t.test('an HBONE socket whose certificate does not come within the handshake timeout is closed with a reason', async (t) => {
  const slowId = 'spiffe://cluster.local/ns/default/sa/slow';
  const sm = new SecretManager(client(), { onRenewalError: () => undefined });
  t.teardown(() => sm.close());
  const hbone = await echoServer(t, sm, { identity: slowId, handshakeTimeoutMs: 400 });
  const clientTls = await within(10_000, sm.fetch(CLIENT_ID), 'client certificate');
  ca.answerDelay.ms = 2000;
  t.teardown(() => void (ca.answerDelay.ms = 0));
  const err = await openTunnel(hbone.port, clientTls).then(
    (tunnel) => (tunnel.close(), undefined),
    (e: Error) => e,
  );
  t.ok(err, `the client saw the connection fail (${err?.message})`);
  t.equal(hbone.rejected.length, 1, 'reported once');
  t.match(hbone.rejected[0], /certificate for spiffe:\/\/cluster\.local\/ns\/default\/sa\/slow not ready within the handshake timeout \(400 ms\)/);
});

function waitFor(cond: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const tick = (): void => (cond() ? resolve() : void setTimeout(tick, 20));
    tick();
  });
}
