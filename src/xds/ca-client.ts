// The istiod CA client: IstioCertificateService/CreateCertificate over gRPC + TLS (the root
// from XDS_ROOT_CA / CA root file), with the service-account token as a bearer. One call per
// identity: a fresh P-256 key and CSR whose only name is the SPIFFE id (src/identity/x509.ts);
// the answer is the chain, leaf first, and the root last. When the identity is a workload's
// rather than ztunnel's own, the request carries `ImpersonatedIdentity` in its metadata, as
// upstream does (https://github.com/istio/ztunnel/blob/master/src/identity/caclient.rs).
// It is a CertificateSource (src/identity/cert-source.ts): `issue()` checks the answer (the leaf
// names the identity and matches our key) and reads its validity; SecretManager does the caching,
// rotation at half-life and retries with backoff.
// Must never: log or return the private key anywhere but in the result's keyPem.
import { ChannelCredentials, Client, Metadata, type ServiceError } from '@grpc/grpc-js';
import { ZtError, errorMessage } from '../errors.js';
import { issuedFromPem, type CertificateSource, type IssuedIdentity } from '../identity/cert-source.js';
import { createCsr } from '../identity/x509.js';
import { CREATE_CERTIFICATE_METHOD_PATH, IstioCertificateRequestCodec, IstioCertificateResponseCodec, structFromJson } from './protos.js';
import type { WireIstioCertificateRequest, WireIstioCertificateResponse, WireInit } from './wire-types.js';

export interface CaClientOptions {
  /** host:port of istiod's CA (default upstream: the xDS address). */
  address: string;
  tls: { ca: string; serverName?: string | undefined };
  /** The projected service-account token, read on every call (it rotates). */
  token: () => string | undefined;
  /** ztunnel's own identity: requests for any other identity impersonate it. */
  ownIdentity?: string | undefined;
  clusterId?: string | undefined;
  /** Extra request metadata (CA_HEADER_<name>), names lower-cased. */
  headers?: Readonly<Record<string, string>> | undefined;
  /** Per-call deadline (default 10 s). */
  timeoutMs?: number | undefined;
  /** Lifetime asked for by issue() (default 86 400 s, upstream's SECRET_TTL); istiod may shorten it. */
  validitySeconds?: number | undefined;
}

export interface IssuedByCa {
  identity: string;
  keyPem: string;
  /** Leaf first, then intermediates. */
  certChainPem: string[];
  rootPem: string;
}

export class IstioCaClient implements CertificateSource {
  readonly name: string;
  private readonly o: CaClientOptions;
  private client: Client | undefined;

  constructor(o: CaClientOptions) {
    this.o = o;
    this.name = `istiod CA at ${o.address}`;
  }

  /** CertificateSource: one CreateCertificate round trip, the answer checked and summarized. */
  async issue(identity: string): Promise<IssuedIdentity> {
    const got = await this.requestCertificate(identity, this.o.validitySeconds ?? 86_400);
    return issuedFromPem({ identity, keyPem: got.keyPem, chain: got.certChainPem, roots: [got.rootPem], from: this.name });
  }

  /** One CreateCertificate round trip for `identity`; rejects with a ZtError naming the cause. */
  async requestCertificate(identity: string, validitySeconds = 86_400): Promise<IssuedByCa> {
    const { csrPem, keyPem } = await createCsr(identity);
    const impersonate = this.o.ownIdentity === undefined || identity !== this.o.ownIdentity;
    const req: WireInit<WireIstioCertificateRequest> = {
      csr: csrPem,
      validity_duration: String(validitySeconds),
      ...(impersonate ? { metadata: structFromJson({ ImpersonatedIdentity: identity }) } : {}),
    };
    const res = await this.call(req);
    const chain = res.cert_chain.filter((c) => c.trim() !== '');
    if (chain.length < 2) throw new ZtError('ZT_ERR_TLS_HANDSHAKE', `istiod CA at ${this.o.address} answered ${chain.length} certificate(s) for ${identity}; expected the chain and the root`);
    const rootPem = chain[chain.length - 1] as string;
    return { identity, keyPem, certChainPem: chain.slice(0, -1), rootPem };
  }

  close(): void {
    this.client?.close();
    this.client = undefined;
  }

  private channel(): Client {
    if (this.client) return this.client;
    const options: Record<string, string | number> = {};
    if (this.o.tls.serverName !== undefined) options['grpc.ssl_target_name_override'] = this.o.tls.serverName;
    this.client = new Client(this.o.address, ChannelCredentials.createSsl(Buffer.from(this.o.tls.ca)), options);
    return this.client;
  }

  private call(req: WireInit<WireIstioCertificateRequest>): Promise<WireIstioCertificateResponse> {
    const md = new Metadata();
    const token = this.o.token();
    if (token !== undefined && token.trim() !== '') {
      md.set('authorization', `Bearer ${token.trim()}`);
      if (this.o.clusterId !== undefined) md.set('clusterid', this.o.clusterId);
    }
    for (const [k, v] of Object.entries(this.o.headers ?? {})) md.set(k.toLowerCase(), v);
    const deadline = Date.now() + (this.o.timeoutMs ?? 10_000);
    return new Promise((resolve, reject) => {
      this.channel().makeUnaryRequest(
        CREATE_CERTIFICATE_METHOD_PATH,
        (r: WireInit<WireIstioCertificateRequest>) => Buffer.from(IstioCertificateRequestCodec.encode(r)),
        (bytes: Buffer) => IstioCertificateResponseCodec.decode(bytes),
        req,
        md,
        { deadline },
        (err: ServiceError | null, value?: WireIstioCertificateResponse) => {
          if (err || !value) {
            reject(new ZtError('ZT_ERR_TLS_HANDSHAKE', `istiod CA at ${this.o.address} refused the certificate request: ${errorMessage(err)}`, { cause: err }));
            return;
          }
          resolve(value);
        },
      );
    });
  }
}
