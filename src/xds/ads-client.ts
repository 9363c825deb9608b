// The delta ADS client: one DeltaAggregatedResources stream to istiod (TLS, bearer token)
// subscribing to Address and Authorization (wildcard: empty subscribe list, as upstream), each
// response mapped to the config model and handed to onResources, then ACKed — or NACKed with
// error_detail naming every rejected resource and why, while the good ones of the same response
// are still handed over. Reconnects with jittered exponential backoff, resending
// initial_resource_versions (name → last accepted version) so istiod sends only what changed.
// state() is the xDS part of config_dump.
// Must never: record the version of a rejected resource (istiod must re-send it), throw out of a
// stream callback, or leave a timer or channel behind after stop().

import {
  ChannelCredentials,
  Client,
  Metadata,
  status as GrpcStatus,
  type ClientDuplexStream,
  type ServiceError,
} from '@grpc/grpc-js';
import { addressBytesToModel, type AddressModel } from './address-to-model.js';
import { authorizationBytesToModel } from './authorization-to-model.js';
import {
  ADDRESS_TYPE_URL,
  AUTHORIZATION_TYPE_URL,
  DELTA_ADS_METHOD_PATH,
  DeltaDiscoveryRequestCodec,
  DeltaDiscoveryResponseCodec,
  structFromJson,
} from './protos.js';
import { resourceErrorText, type Mapped } from './resource-error.js';
import type { Authorization } from '../config/types.js';
import type { WireDeltaDiscoveryRequest, WireDeltaDiscoveryResponse, WireInit } from './wire-types.js';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export type AdsTypeUrl = typeof ADDRESS_TYPE_URL | typeof AUTHORIZATION_TYPE_URL;

/** What one accepted resource maps to, per type. */
export interface AdsModels {
  [ADDRESS_TYPE_URL]: AddressModel;
  [AUTHORIZATION_TYPE_URL]: Authorization;
}

export interface AdsUpsert<M = AddressModel | Authorization> {
  name: string;
  version: string;
  model: M;
}

export type AdsLog = (level: 'info' | 'warn' | 'error', message: string) => void;

export interface AdsClientOptions {
  /** host:port of istiod (no scheme), e.g. `istiod.istio-system.svc:15012`. */
  address: string;
  tls: {
    /** PEM root(s) the server certificate must chain to. */
    ca: string;
    /** Optional client certificate + key (PEM); istiod does not need one. */
    cert?: string | undefined;
    key?: string | undefined;
    /** Name to verify the server certificate against instead of the address host (ALT_XDS_HOSTNAME). */
    serverName?: string | undefined;
  };
  /** The bearer token, read on every connect (e.g. the projected service-account token file). */
  token: () => string | undefined;
  /** `clusterid` request header (upstream sends it with the token). */
  clusterId?: string | undefined;
  /** Extra request headers (XDS_HEADER_<name>), names lower-cased. */
  headers?: Record<string, string> | undefined;
  node: { id: string; metadata: { [key: string]: Json } };
  typeUrls: readonly AdsTypeUrl[];
  /**
   * Called once per response, before the ACK/NACK, with the accepted resources and the removed
   * names. A throw NACKs the whole response (and records none of its versions).
   */
  onResources: (typeUrl: AdsTypeUrl, upserts: AdsUpsert[], removals: string[]) => void;
  log: AdsLog;
  /** First reconnect delay (ms, default 1000), doubled per failed attempt up to maxBackoffMs (default 30000); ±20 % jitter. */
  initialBackoffMs?: number | undefined;
  maxBackoffMs?: number | undefined;
}

export interface AdsTypeState {
  typeUrl: string;
  /** Nonce of the last response received (ACKed or NACKed). */
  lastNonce: string;
  systemVersionInfo: string;
  /** Accepted resources held (name → version). */
  resources: number;
  responses: number;
  acks: number;
  nacks: number;
  lastNack: { message: string; time: string } | undefined;
}

export interface AdsState {
  address: string;
  /** A response has arrived on the current stream (a stream istiod accepted but never answered does not count). */
  connected: boolean;
  /** Streams opened since start. */
  connects: number;
  /** Consecutive attempts without a response (reset when a response arrives). */
  attempts: number;
  lastError: { message: string; time: string } | undefined;
  nextRetryMs: number | undefined;
  types: AdsTypeState[];
}

const MAX_MESSAGE_BYTES = 200 * 1024 * 1024;
const JITTER = 0.2;

type Mapper = (name: string, bytes: Uint8Array) => Mapped<AddressModel | Authorization>;
const MAPPERS: Record<AdsTypeUrl, Mapper> = {
  [ADDRESS_TYPE_URL]: addressBytesToModel,
  [AUTHORIZATION_TYPE_URL]: authorizationBytesToModel,
};

interface TypeBook {
  typeUrl: AdsTypeUrl;
  versions: Map<string, string>;
  state: AdsTypeState;
}

type Stream = ClientDuplexStream<WireInit<WireDeltaDiscoveryRequest>, WireDeltaDiscoveryResponse>;

export class AdsClient {
  private readonly o: AdsClientOptions;
  private readonly books = new Map<string, TypeBook>();
  private client: Client | undefined;
  private stream: Stream | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  private connected = false;
  private connects = 0;
  private attempts = 0;
  private lastError: { message: string; time: string } | undefined;
  private nextRetryMs: number | undefined;

  constructor(options: AdsClientOptions) {
    this.o = options;
    for (const typeUrl of options.typeUrls) {
      this.books.set(typeUrl, {
        typeUrl,
        versions: new Map(),
        state: { typeUrl, lastNonce: '', systemVersionInfo: '', resources: 0, responses: 0, acks: 0, nacks: 0, lastNack: undefined },
      });
    }
  }

  /** Opens the stream (and keeps it open, reconnecting) until stop(). */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    const { tls } = this.o;
    const creds = ChannelCredentials.createSsl(
      Buffer.from(tls.ca),
      tls.key !== undefined ? Buffer.from(tls.key) : null,
      tls.cert !== undefined ? Buffer.from(tls.cert) : null,
    );
    const channelOptions: Record<string, string | number> = {
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
    };
    if (tls.serverName !== undefined) channelOptions['grpc.ssl_target_name_override'] = tls.serverName;
    this.client = new Client(this.o.address, creds, channelOptions);
    this.connect();
  }

  /** Ends the stream, the channel and any pending retry; no callback runs afterwards. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.nextRetryMs = undefined;
    const stream = this.stream;
    this.stream = undefined;
    this.connected = false;
    if (stream !== undefined) {
      stream.removeAllListeners();
      stream.on('error', () => {});
      stream.cancel();
    }
    this.client?.close();
    this.client = undefined;
  }

  /** The xDS connection state for config_dump. */
  state(): AdsState {
    return {
      address: this.o.address,
      connected: this.connected,
      connects: this.connects,
      attempts: this.attempts,
      lastError: this.lastError,
      nextRetryMs: this.nextRetryMs,
      types: [...this.books.values()].map((b) => ({ ...b.state, resources: b.versions.size })),
    };
  }

  /** Accepted resource versions of one type (name → version): what a reconnect announces. */
  versions(typeUrl: AdsTypeUrl): ReadonlyMap<string, string> {
    return this.books.get(typeUrl)?.versions ?? new Map();
  }

  private metadata(): Metadata {
    const md = new Metadata();
    const token = this.o.token();
    if (token !== undefined && token !== '') {
      md.set('authorization', `Bearer ${token.trim()}`);
      if (this.o.clusterId !== undefined) md.set('clusterid', this.o.clusterId);
    }
    for (const [k, v] of Object.entries(this.o.headers ?? {})) md.set(k.toLowerCase(), v);
    return md;
  }

  private connect(): void {
    this.timer = undefined;
    this.nextRetryMs = undefined;
    if (this.stopped || this.client === undefined) return;
    this.attempts++;
    let md: Metadata;
    try {
      md = this.metadata();
    } catch (err) {
      this.failed(`cannot build the request headers (token): ${(err as Error).message}`);
      return;
    }
    const stream: Stream = this.client.makeBidiStreamRequest(
      DELTA_ADS_METHOD_PATH,
      (req: WireInit<WireDeltaDiscoveryRequest>) => Buffer.from(DeltaDiscoveryRequestCodec.encode(req)),
      (bytes: Buffer) => DeltaDiscoveryResponseCodec.decode(bytes),
      md,
    );
    this.stream = stream;
    this.connects++;
    let ended = false;
    const end = (message: string): void => {
      if (ended || this.stream !== stream) return;
      ended = true;
      this.stream = undefined;
      this.connected = false;
      this.failed(message);
    };
    stream.on('data', (res: WireDeltaDiscoveryResponse) => {
      if (this.stream !== stream) return;
      this.onResponse(stream, res);
    });
    stream.on('error', (err: ServiceError) => end(describeError(err, this.o.address)));
    stream.on('status', (s: { code: number; details: string }) => {
      // A clean end (OK) comes as a status without an error.
      if (s.code === GrpcStatus.OK) end('istiod ended the stream');
    });
    stream.on('end', () => {
      // 'end' precedes 'status'; the status decides (error or clean). Nothing here.
    });
    // Initial request per type: node, wildcard subscription, what we hold.
    for (const book of this.books.values()) {
      const req: WireInit<WireDeltaDiscoveryRequest> = {
        node: { id: this.o.node.id, metadata: structFromJson(this.o.node.metadata) },
        type_url: book.typeUrl,
      };
      if (book.versions.size > 0) req.initial_resource_versions = Object.fromEntries(book.versions);
      stream.write(req);
    }
  }

  private failed(message: string): void {
    this.lastError = { message, time: new Date().toISOString() };
    if (this.stopped) return;
    const initial = this.o.initialBackoffMs ?? 1000;
    const max = this.o.maxBackoffMs ?? 30_000;
    const base = Math.min(max, initial * 2 ** Math.max(0, this.attempts - 1));
    const delay = Math.max(1, Math.round(base * (1 - JITTER + 2 * JITTER * Math.random())));
    this.nextRetryMs = delay;
    this.o.log('warn', `xds: ${message}; retrying in ${(delay / 1000).toFixed(1)} s (attempt ${this.attempts})`);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  private onResponse(stream: Stream, res: WireDeltaDiscoveryResponse): void {
    if (!this.connected) this.o.log('info', `xds: connected to ${this.o.address}`);
    this.connected = true;
    this.attempts = 0;
    const book = this.books.get(res.type_url);
    if (book === undefined) {
      stream.write({ type_url: res.type_url, response_nonce: res.nonce, error_detail: { message: `unsubscribed type ${res.type_url}` } });
      return;
    }
    const st = book.state;
    st.responses++;
    st.lastNonce = res.nonce;
    st.systemVersionInfo = res.system_version_info;
    const mapper = MAPPERS[book.typeUrl];
    const upserts: AdsUpsert[] = [];
    const errors: string[] = [];
    for (const r of res.resources) {
      if (r.resource === null) {
        errors.push(`${r.name}: resource: missing`);
        continue;
      }
      const mapped = mapper(r.name, r.resource.value);
      if (mapped.ok) upserts.push({ name: r.name, version: r.version, model: mapped.value });
      else errors.push(resourceErrorText(mapped.error));
    }
    const removals = [...res.removed_resources];
    try {
      this.o.onResources(book.typeUrl, upserts, removals);
      for (const u of upserts) book.versions.set(u.name, u.version);
      for (const name of removals) book.versions.delete(name);
    } catch (err) {
      errors.push(`applying the response failed: ${(err as Error).message}`);
    }
    if (errors.length === 0) {
      st.acks++;
      stream.write({ type_url: book.typeUrl, response_nonce: res.nonce });
      return;
    }
    const message = errors.join('; ');
    st.nacks++;
    st.lastNack = { message, time: new Date().toISOString() };
    this.o.log('warn', `xds: NACK ${book.typeUrl} nonce ${res.nonce}: ${message}`);
    stream.write({ type_url: book.typeUrl, response_nonce: res.nonce, error_detail: { message } });
  }
}

/** One line saying what went wrong with the stream, in terms an operator can act on. */
function describeError(err: ServiceError, address: string): string {
  const code = GrpcStatus[err.code] ?? String(err.code);
  const details = err.details || err.message;
  if (err.code === GrpcStatus.UNAUTHENTICATED || err.code === GrpcStatus.PERMISSION_DENIED) {
    return `istiod at ${address} refused the token: ${code}: ${details}`;
  }
  if (/certificate|self.signed|verify|altname|CERT_/i.test(details)) {
    return `TLS to istiod at ${address} failed: the server certificate is not trusted (${details})`;
  }
  return `stream to istiod at ${address} failed: ${code}: ${details}`;
}
