// A small local control plane speaking istiod's two protocols to ztunnels: the delta ADS stream
// (Address + Authorization, from a LocalConfig — the same YAML a standalone ztunnel reads) and
// the CA (IstioCertificateService/CreateCertificate, signed by the built-in CA). It lets a
// multi-node mesh without Kubernetes (the demo's `--xds`, the tests, a lab) exercise the exact
// code path a cluster uses: TLS to the server, the bearer token, wildcard delta subscriptions,
// ACK/NACK, initial_resource_versions on reconnect, incremental pushes, CSRs.
// It is not istiod: no Kubernetes watch, no on-demand, one root, no SDS.
//
// Versions are content hashes of a resource's bytes: a reconnecting client that announces the
// versions it holds is sent only what changed, and an unchanged resource is never re-pushed.
// Must never: accept a stream or a CSR without the expected bearer token, sign a CSR for an
// identity other than the one asked for, or throw out of a gRPC callback.

import { createHash } from 'node:crypto';
import {
  Metadata,
  Server,
  ServerCredentials,
  status as GrpcStatus,
  type sendUnaryData,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type ServiceDefinition,
} from '@grpc/grpc-js';
import type { Authorization, LocalConfig, Service, Workload } from '../config/types.js';
import { errorMessage } from '../errors.js';
import type { CertificateAuthority } from '../identity/ca.js';
import {
  ADDRESS_TYPE_URL,
  AUTHORIZATION_TYPE_URL,
  CREATE_CERTIFICATE_METHOD_PATH,
  DELTA_ADS_METHOD_PATH,
  DeltaDiscoveryRequestCodec,
  DeltaDiscoveryResponseCodec,
  IstioCertificateRequestCodec,
  IstioCertificateResponseCodec,
  structToJson,
} from '../xds/protos.js';
import type { WireDeltaDiscoveryRequest, WireResource } from '../xds/wire-types.js';
import {
  authorizationBytes,
  policyResourceName,
  serviceBytes,
  serviceResourceName,
  workloadBytes,
  workloadResourceName,
} from './model-to-wire.js';

export const CONTROL_PLANE_TYPE_URLS = [ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL] as const;
type TypeUrl = (typeof CONTROL_PLANE_TYPE_URLS)[number];

const PAYLOAD_TYPE: Record<TypeUrl, string> = {
  [ADDRESS_TYPE_URL]: ADDRESS_TYPE_URL,
  [AUTHORIZATION_TYPE_URL]: AUTHORIZATION_TYPE_URL,
};

/** One resource as served: its name, content version and Any payload bytes. */
export interface ServedResource {
  name: string;
  version: string;
  bytes: Uint8Array;
}

export type ControlPlaneLog = (level: 'info' | 'warn', message: string, fields?: Record<string, unknown>) => void;

export interface ControlPlaneOptions {
  /** Signs CSRs (CreateCertificate), and is the root the answers end with. */
  ca: CertificateAuthority;
  /** The gRPC server's own certificate (with the DNS/IP name clients dial) and key. */
  serving: { cert: string; key: string };
  /** Accepted bearer tokens; a stream or CSR without one of them is refused (UNAUTHENTICATED). */
  tokens: readonly string[];
  /** Upper bound on issued certificate lifetimes (default: whatever the CSR asks, up to 24 h). */
  maxCertificateTtlMs?: number;
  log?: ControlPlaneLog;
}

/** What a stream has told us, for tests and the CLI's status lines. */
export interface StreamInfo {
  id: number;
  nodeId: string;
  nodeMetadata: Record<string, unknown>;
  /** initial_resource_versions per type, as the client announced them on (re)connect. */
  initialVersions: Record<string, Record<string, string>>;
  acks: number;
  nacks: { typeUrl: string; message: string }[];
  open: boolean;
}

interface StreamState {
  info: StreamInfo;
  call: ServerDuplexStream<Buffer, Buffer>;
  /** Per subscribed type: name → version the client holds (as far as we know). */
  held: Map<TypeUrl, Map<string, string>>;
  nonce: number;
}

const RAW = (b: Buffer): Buffer => b;

function rawService(): ServiceDefinition {
  return {
    DeltaAggregatedResources: {
      path: DELTA_ADS_METHOD_PATH,
      requestStream: true,
      responseStream: true,
      requestSerialize: RAW,
      requestDeserialize: RAW,
      responseSerialize: RAW,
      responseDeserialize: RAW,
    },
  };
}

function rawCaService(): ServiceDefinition {
  return {
    CreateCertificate: {
      path: CREATE_CERTIFICATE_METHOD_PATH,
      requestStream: false,
      responseStream: false,
      requestSerialize: RAW,
      requestDeserialize: RAW,
      responseSerialize: RAW,
      responseDeserialize: RAW,
    },
  };
}

function versionOf(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('base64url').slice(0, 16);
}

export class ControlPlane {
  private readonly o: ControlPlaneOptions;
  private readonly server = new Server();
  private readonly resources = new Map<TypeUrl, Map<string, ServedResource>>(CONTROL_PLANE_TYPE_URLS.map((t) => [t, new Map()]));
  private readonly streams = new Set<StreamState>();
  private readonly allStreams: StreamInfo[] = [];
  private nextStream = 0;
  private port = 0;
  /** Certificates issued (identity, lifetime), for tests. */
  readonly issued: { identity: string; impersonated: string | undefined; notAfter: Date }[] = [];
  refusedStreams = 0;
  refusedCsrs = 0;

  constructor(options: ControlPlaneOptions) {
    this.o = options;
    this.server.addService(rawService(), {
      DeltaAggregatedResources: (call: ServerDuplexStream<Buffer, Buffer>) => this.onStream(call),
    });
    this.server.addService(rawCaService(), {
      CreateCertificate: (call: ServerUnaryCall<Buffer, Buffer>, done: sendUnaryData<Buffer>) => void this.onCsr(call, done),
    });
  }

  async listen(host: string, port: number): Promise<number> {
    const { cert, key } = this.o.serving;
    const creds = ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(cert), private_key: Buffer.from(key) }], false);
    const target = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    this.port = await new Promise<number>((resolve, reject) => this.server.bindAsync(target, creds, (err, p) => (err ? reject(err) : resolve(p))));
    return this.port;
  }

  get boundPort(): number {
    return this.port;
  }

  /** Serve this mesh: the difference with what was served is pushed to every open stream. */
  setMesh(mesh: LocalConfig): void {
    const addresses = new Map<string, ServedResource>();
    const add = (name: string, bytes: Uint8Array): void => void addresses.set(name, { name, version: versionOf(bytes), bytes });
    for (const w of mesh.workloads) add(workloadResourceName(w), workloadBytes(w));
    for (const s of mesh.services) add(serviceResourceName(s), serviceBytes(s));
    const policies = new Map<string, ServedResource>();
    for (const p of mesh.policies) {
      const bytes = authorizationBytes(p);
      policies.set(policyResourceName(p), { name: policyResourceName(p), version: versionOf(bytes), bytes });
    }
    this.replace(ADDRESS_TYPE_URL, addresses);
    this.replace(AUTHORIZATION_TYPE_URL, policies);
  }

  /** Upsert or remove single resources of one type (tests: a malformed resource, one workload's change). */
  pushResources(typeUrl: TypeUrl, upserts: readonly { name: string; bytes: Uint8Array }[], removals: readonly string[] = []): void {
    const next = new Map(this.resources.get(typeUrl));
    for (const u of upserts) next.set(u.name, { name: u.name, version: versionOf(u.bytes), bytes: u.bytes });
    for (const r of removals) next.delete(r);
    this.replace(typeUrl, next);
  }

  upsertWorkload(w: Workload): void {
    this.pushResources(ADDRESS_TYPE_URL, [{ name: workloadResourceName(w), bytes: workloadBytes(w) }]);
  }
  upsertService(s: Service): void {
    this.pushResources(ADDRESS_TYPE_URL, [{ name: serviceResourceName(s), bytes: serviceBytes(s) }]);
  }
  upsertPolicy(p: Authorization): void {
    this.pushResources(AUTHORIZATION_TYPE_URL, [{ name: policyResourceName(p), bytes: authorizationBytes(p) }]);
  }

  /** Every stream seen (open or not), oldest first. */
  streamInfos(): readonly StreamInfo[] {
    return this.allStreams;
  }

  /** End every open stream with UNAVAILABLE, as an istiod restart does. */
  cutStreams(): void {
    for (const s of [...this.streams]) {
      this.streams.delete(s);
      s.info.open = false;
      s.call.emit('error', { code: GrpcStatus.UNAVAILABLE, details: 'control plane restarting', metadata: new Metadata() });
    }
  }

  async close(): Promise<void> {
    this.cutStreams();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, 1000);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  // ------------------------------------------------------------------ ADS

  private log(level: 'info' | 'warn', message: string, fields?: Record<string, unknown>): void {
    this.o.log?.(level, message, fields);
  }

  private authorized(md: Metadata): boolean {
    const auth = md.get('authorization').map(String);
    return auth.length === 1 && this.o.tokens.some((t) => auth[0] === `Bearer ${t}`);
  }

  private onStream(call: ServerDuplexStream<Buffer, Buffer>): void {
    if (!this.authorized(call.metadata)) {
      this.refusedStreams++;
      this.log('warn', 'xDS stream refused: missing or wrong bearer token', { peer: call.getPeer() });
      call.emit('error', { code: GrpcStatus.UNAUTHENTICATED, details: 'authentication failure: missing or wrong bearer token', metadata: new Metadata() });
      return;
    }
    const info: StreamInfo = { id: ++this.nextStream, nodeId: '', nodeMetadata: {}, initialVersions: {}, acks: 0, nacks: [], open: true };
    const state: StreamState = { info, call, held: new Map(), nonce: 0 };
    this.streams.add(state);
    this.allStreams.push(info);
    const close = (): void => {
      info.open = false;
      this.streams.delete(state);
    };
    call.on('data', (bytes: Buffer) => {
      try {
        this.onRequest(state, DeltaDiscoveryRequestCodec.decode(bytes));
      } catch (err) {
        this.log('warn', 'bad xDS request; closing the stream', { error: errorMessage(err) });
        close();
        call.emit('error', { code: GrpcStatus.INVALID_ARGUMENT, details: errorMessage(err), metadata: new Metadata() });
      }
    });
    call.on('error', close);
    call.on('cancelled', close);
    call.on('end', () => {
      close();
      call.end();
    });
  }

  private onRequest(s: StreamState, req: WireDeltaDiscoveryRequest): void {
    if (req.node) {
      s.info.nodeId = req.node.id;
      if (req.node.metadata) s.info.nodeMetadata = structToJson(req.node.metadata);
    }
    const typeUrl = req.type_url as TypeUrl;
    if (!this.resources.has(typeUrl)) {
      this.log('warn', 'xDS request for a type this control plane does not serve', { typeUrl: req.type_url });
      return;
    }
    if (req.response_nonce !== '') {
      if (req.error_detail) {
        s.info.nacks.push({ typeUrl, message: req.error_detail.message });
        this.log('warn', 'xDS NACK', { node: s.info.nodeId, typeUrl, error: req.error_detail.message });
      } else s.info.acks++;
      return;
    }
    // A subscription (first request of the type on this stream): the client announces what it holds.
    s.info.initialVersions[typeUrl] = { ...req.initial_resource_versions };
    s.held.set(typeUrl, new Map(Object.entries(req.initial_resource_versions)));
    this.sendDiff(s, typeUrl, true);
  }

  private replace(typeUrl: TypeUrl, next: Map<string, ServedResource>): void {
    this.resources.set(typeUrl, next);
    for (const s of this.streams) if (s.held.has(typeUrl)) this.sendDiff(s, typeUrl);
  }

  /** Sends what the client lacks or holds in another version, and removes what we no longer serve. */
  private sendDiff(s: StreamState, typeUrl: TypeUrl, first = false): void {
    const held = s.held.get(typeUrl);
    const served = this.resources.get(typeUrl);
    if (!held || !served) return;
    const resources: Partial<WireResource>[] = [];
    for (const r of served.values()) {
      if (held.get(r.name) === r.version) continue;
      resources.push({ name: r.name, version: r.version, resource: { type_url: PAYLOAD_TYPE[typeUrl], value: Buffer.from(r.bytes) } });
      held.set(r.name, r.version);
    }
    const removed: string[] = [];
    for (const name of held.keys()) if (!served.has(name)) removed.push(name);
    for (const name of removed) held.delete(name);
    // The first answer of a subscription goes out even when empty: it tells the client its state is complete.
    if (resources.length === 0 && removed.length === 0 && !first) return;
    const nonce = String(++s.nonce);
    const bytes = DeltaDiscoveryResponseCodec.encode({
      type_url: typeUrl,
      system_version_info: nonce,
      nonce,
      resources,
      removed_resources: removed,
    });
    s.call.write(Buffer.from(bytes));
  }

  // ------------------------------------------------------------------ CA

  private async onCsr(call: ServerUnaryCall<Buffer, Buffer>, done: sendUnaryData<Buffer>): Promise<void> {
    if (!this.authorized(call.metadata)) {
      this.refusedCsrs++;
      this.log('warn', 'certificate request refused: missing or wrong bearer token', { peer: call.getPeer() });
      done({ code: GrpcStatus.UNAUTHENTICATED, details: 'authentication failure: missing or wrong bearer token' });
      return;
    }
    try {
      const req = IstioCertificateRequestCodec.decode(call.request);
      const meta = req.metadata ? structToJson(req.metadata) : {};
      const impersonated = typeof meta['ImpersonatedIdentity'] === 'string' ? meta['ImpersonatedIdentity'] : undefined;
      const asked = Number(req.validity_duration) * 1000;
      const cap = this.o.maxCertificateTtlMs ?? 24 * 60 * 60 * 1000;
      const validityMs = Math.min(asked > 0 ? asked : cap, cap);
      const signed = await this.o.ca.signCsr(req.csr, { validityMs, ...(impersonated !== undefined ? { expectIdentity: impersonated } : {}) });
      this.issued.push({ identity: signed.identity, impersonated, notAfter: signed.notAfter });
      done(null, Buffer.from(IstioCertificateResponseCodec.encode({ cert_chain: [signed.certPem, this.o.ca.rootCertPem] })));
    } catch (err) {
      this.log('warn', 'certificate request refused', { error: errorMessage(err) });
      done({ code: GrpcStatus.INVALID_ARGUMENT, details: errorMessage(err) });
    }
  }
}
