// The istiod CA client against a fake istiod CA on loopback: a grpc-js server with TLS (a
// server certificate for 127.0.0.1 signed by a test root) and a token check, answering
// CreateCertificate by signing the CSR with CertificateAuthority.signCsr, as istiod's CA does.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { Metadata, Server, ServerCredentials, status, type ServerUnaryCall, type sendUnaryData, type ServiceDefinition } from '@grpc/grpc-js';
import t from 'tap';
import { readUriSans } from '../../src/identity/x509.js';
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

async function fakeIstiodCa(keys: { cert: string; key: string }): Promise<{ port: number; seen: Seen[]; stop: () => void }> {
  const seen: Seen[] = [];
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
      mesh.authority.signCsr(req.csr, { expectIdentity, validityMs: Number(req.validity_duration) * 1000 }).then(
        ({ certPem }) => done(null, Buffer.from(IstioCertificateResponseCodec.encode({ cert_chain: [certPem, mesh.ca] }))),
        (err: Error) => done({ code: status.INVALID_ARGUMENT, details: err.message }),
      );
    },
  });
  const creds = ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(keys.cert), private_key: Buffer.from(keys.key) }], false);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))));
  return { port, seen, stop: () => server.forceShutdown() };
}

const ca = await fakeIstiodCa(mesh);
t.teardown(() => ca.stop());

function client(o: { token?: string; root?: string } = {}): IstioCaClient {
  const c = new IstioCaClient({
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
