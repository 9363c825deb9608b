// The mesh as istiod pushes it: one AdsClient (delta ADS, Address + Authorization) feeding a
// MeshStore incrementally (one workload changed = that workload re-indexed) and a PolicyStore
// recompiled per Authorization response. The App reads it through the same MeshView as the
// local file's; what changed is reported back so the App can prune removed workloads, prefetch
// certificates and re-authorize live connections.
// Loaded only when the mesh comes from istiod (it pulls in gRPC and protobuf).
// Must never: throw out of a response callback (the AdsClient NACKs on a throw), or block
// readiness on a type after its first response was applied.

import { PolicyStore, type AuthzLog } from './authorize/index.js';
import type { Authorization, Config } from './config/types.js';
import { readRootCa, tokenReader, xdsNode } from './istiod.js';
import { MeshStore, type AddressChange, type MeshAddress, type MeshDelta, type MeshUpsert } from './state/mesh-store.js';
import type { AddressModel } from './xds/address-to-model.js';
import { AdsClient, type AdsState, type AdsTypeUrl, type AdsUpsert } from './xds/ads-client.js';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from './xds/protos.js';

export const XDS_TYPE_URLS = [ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL] as const;


export type { AddressChange, MeshDelta };

export interface XdsMeshOptions {
  config: Config;
  log: (level: 'info' | 'warn' | 'error', message: string) => void;
  authzLog: AuthzLog;
  /** Called after each applied response of a type (the first one makes that type ready). */
  onAddresses: (change: AddressChange) => void;
  onPolicies: () => void;
  onFirstResponse: (typeUrl: AdsTypeUrl) => void;
  /** Each applied response as it came (upserts in model form, removals by name): for the worker threads' own stores. */
  onDelta?: (delta: MeshDelta) => void;
  /** Backoff bounds (tests shorten them). */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
}

export class XdsMesh {
  readonly store = new MeshStore();
  policies: PolicyStore;
  private readonly client: AdsClient;
  private readonly seen = new Set<AdsTypeUrl>();
  private readonly o: XdsMeshOptions;

  constructor(o: XdsMeshOptions) {
    this.o = o;
    const xds = o.config.xds;
    if (xds === undefined) throw new Error('XdsMesh needs config.xds');
    this.policies = new PolicyStore([], o.authzLog);
    this.client = new AdsClient({
      address: xds.address,
      tls: { ca: readRootCa(xds.rootCa, 'XDS_ROOT_CA'), serverName: xds.altHostname },
      token: tokenReader(o.config.authToken, (m) => o.log('warn', m)),
      clusterId: o.config.clusterId,
      headers: xds.headers,
      node: xdsNode(o.config),
      typeUrls: XDS_TYPE_URLS,
      onResources: (typeUrl, upserts, removals) => this.apply(typeUrl, upserts, removals),
      log: o.log,
      initialBackoffMs: o.initialBackoffMs,
      maxBackoffMs: o.maxBackoffMs,
    });
  }

  start(): void {
    this.client.start();
  }

  stop(): void {
    this.client.stop();
  }

  state(): AdsState {
    return this.client.state();
  }

  private apply(typeUrl: AdsTypeUrl, upserts: AdsUpsert[], removals: string[]): void {
    if (typeUrl === ADDRESS_TYPE_URL) this.applyAddresses(upserts as AdsUpsert<AddressModel>[], removals);
    else this.applyPolicies(upserts as AdsUpsert<Authorization>[], removals);
    if (!this.seen.has(typeUrl)) {
      this.seen.add(typeUrl);
      this.o.onFirstResponse(typeUrl);
    }
  }

  private applyAddresses(upserts: AdsUpsert<AddressModel>[], removals: string[]): void {
    // An AdsUpsert is a MeshUpsert (name + model; AddressModel and MeshAddress are one shape): no copy.
    const change = this.store.applyAddresses(upserts as readonly MeshUpsert<MeshAddress>[], removals);
    this.o.onDelta?.({ kind: 'addresses', upserts: upserts as readonly MeshUpsert<MeshAddress>[], removals });
    this.o.onAddresses(change);
  }

  private applyPolicies(upserts: AdsUpsert<Authorization>[], removals: string[]): void {
    this.store.applyPolicies(upserts, removals);
    this.policies = new PolicyStore(this.store.policyList(), this.o.authzLog);
    this.o.onDelta?.({ kind: 'policies', upserts, removals });
    this.o.onPolicies();
  }
}
