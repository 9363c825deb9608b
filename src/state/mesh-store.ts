// The mesh state fed one resource at a time (delta xDS): workloads by uid, services by
// namespace/hostname, policies by namespace/name, with the same indexes and the same read
// API as ProxyState, so the data path can read either. An upsert or a removal touches only
// the index entries of that resource (its addresses, its VIPs, the services it is an
// endpoint of), never the whole world.
//
// Endpoints: a workload's `services` map makes it an endpoint of those services (as the YAML
// loader does). Those joins are kept per service key whether or not the service exists yet
// (staged): a service that arrives after its workloads, or is removed and re-added, gets
// them. A service's own `endpoints` (the YAML form may give them directly) are its base; a
// joined endpoint of the same uid replaces the base one.
//
// Models stay frozen: when a service's endpoint set changes, a new frozen Service object is
// made (copy-on-write) and the indexes re-pointed at it; readers holding the old object see
// it unchanged. Rebuilds are deferred to the end of a batch (applyAddresses), so a service
// whose many endpoints arrive in one response is rebuilt once. A service's `endpoints` is an
// EndpointMap (below): a frozen map split into hash buckets, so a change of k endpoints of an
// n-endpoint service copies about k·√n entries instead of n (the new map shares the other
// buckets with the old one). A change of the service itself rebuilds it whole.
//
// Tie-breaking is ProxyState's, with "first" meaning first in arrival order (a resource
// keeps its place when updated and goes last when removed and re-added), which is the order
// of `config` — so a ProxyState built from `config` answers every query the same way.
// Knows nothing of sockets or of the xDS wire. Must never throw on a well-typed model.
import type { MeshReader } from './mesh-view.js';
import type { Authorization, Endpoint, LocalConfig, PortMap, Service, Workload } from '../config/types.js';
import { parseCidr } from '../util/ip.js';
import { type CidrEntry, addrKey, findServiceByVipIn, prefixOf } from './lookup.js';

/** One Address resource's model (the same shape as src/xds/address-to-model.ts's AddressModel). */
export type MeshAddress = { kind: 'workload'; workload: Workload } | { kind: 'service'; service: Service };

/** What one Address delta did, for the follow-ups (close removed workloads' connections, certificates). */
export interface AddressChange {
  upsertedWorkloads: Workload[];
  /** Workloads that are gone or whose node changed (their local connections are closed). */
  removedOrMovedUids: string[];
}

export interface MeshUpsert<M> {
  name: string;
  model: M;
}

/** One applied delta response, as MeshStore takes it (worker threads replay the main thread's). */
export type MeshDelta =
  | { kind: 'addresses'; upserts: readonly MeshUpsert<MeshAddress>[]; removals: readonly string[] }
  | { kind: 'policies'; upserts: readonly MeshUpsert<Authorization>[]; removals: readonly string[] };

interface CidrVip extends CidrEntry {
  prefix: number;
  /** Arrival order of the service, then the CIDR's position in it: ties keep config order. */
  seq: number;
  idx: number;
}

interface VipEntry {
  service: Service;
  seq: number;
}

interface AddrEntry {
  workload: Workload;
  seq: number;
}

const EMPTY: readonly Service[] = Object.freeze([]);
/** The dirty mark of a service whose own resource changed (rebuilt whole). */
const FULL = Symbol('full');

// ------------------------------------------------------------------ EndpointMap

/** Up to this many endpoints one bucket (a plain frozen Map, copied whole on change). */
const ONE_BUCKET_MAX = 64;
const MAX_BUCKETS = 4096;

/** √n buckets (a power of two) for n entries: a change copies the bucket array and one bucket. */
function bucketsFor(n: number): number {
  if (n <= ONE_BUCKET_MAX) return 1;
  let b = 16;
  while (b * b < n && b < MAX_BUCKETS) b *= 2;
  return b;
}

/** FNV-1a of the uid, for the bucket index. */
function hashKey(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

const EMPTY_BUCKET: ReadonlyMap<string, Endpoint> = Object.freeze(new Map<string, Endpoint>());

/** Iterates the buckets one after the other (one object per iteration, no generator). */
class BucketIterator<T> implements IterableIterator<T> {
  private i = 0;
  private inner: Iterator<T> | undefined;
  constructor(
    private readonly buckets: readonly ReadonlyMap<string, Endpoint>[],
    private readonly pick: (m: ReadonlyMap<string, Endpoint>) => Iterator<T>,
  ) {}
  next(): IteratorResult<T> {
    for (;;) {
      if (this.inner) {
        const r = this.inner.next();
        if (!r.done) return r;
      }
      if (this.i >= this.buckets.length) return { done: true, value: undefined };
      this.inner = this.pick(this.buckets[this.i++] as ReadonlyMap<string, Endpoint>);
    }
  }
  [Symbol.iterator](): IterableIterator<T> {
    return this;
  }
}

const pickKeys = (m: ReadonlyMap<string, Endpoint>): Iterator<string> => m.keys();
const pickValues = (m: ReadonlyMap<string, Endpoint>): Iterator<Endpoint> => m.values();
const pickEntries = (m: ReadonlyMap<string, Endpoint>): Iterator<[string, Endpoint]> => m.entries();

/**
 * The endpoints of a service held by MeshStore: an immutable map (frozen, no mutators) of
 * workload uid → endpoint. `with()` gives a new map sharing every untouched bucket with this
 * one. Iteration order is by bucket, then insertion (Map order is not part of the contract).
 */
export class EndpointMap implements ReadonlyMap<string, Endpoint> {
  readonly size: number;
  private readonly buckets: readonly ReadonlyMap<string, Endpoint>[];

  private constructor(buckets: readonly ReadonlyMap<string, Endpoint>[], size: number) {
    this.buckets = Object.freeze(buckets);
    this.size = size;
    Object.freeze(this);
  }

  static readonly EMPTY = new EndpointMap([EMPTY_BUCKET], 0);

  static from(entries: Iterable<readonly [string, Endpoint]>): EndpointMap {
    const all = new Map<string, Endpoint>(entries);
    const n = bucketsFor(all.size);
    if (n === 1) return all.size === 0 ? EndpointMap.EMPTY : new EndpointMap([Object.freeze(all)], all.size);
    const buckets: Map<string, Endpoint>[] = [];
    for (let i = 0; i < n; i++) buckets.push(new Map());
    for (const [k, v] of all) (buckets[hashKey(k) & (n - 1)] as Map<string, Endpoint>).set(k, v);
    for (const b of buckets) Object.freeze(b);
    return new EndpointMap(buckets, all.size);
  }

  /** A new map with `changes` applied (undefined = removed); this one is left as it is. */
  with(changes: ReadonlyMap<string, Endpoint | undefined>): EndpointMap {
    if (changes.size === 0) return this;
    const n = this.buckets.length;
    const buckets = this.buckets.slice();
    const copied = new Set<number>();
    let size = this.size;
    for (const [k, v] of changes) {
      const i = n === 1 ? 0 : hashKey(k) & (n - 1);
      let b = buckets[i] as Map<string, Endpoint>;
      if (!copied.has(i)) {
        b = new Map(b);
        buckets[i] = b;
        copied.add(i);
      }
      const had = b.has(k);
      if (v === undefined) {
        if (had) {
          b.delete(k);
          size--;
        }
      } else {
        if (!had) size++;
        b.set(k, v);
      }
    }
    for (const i of copied) Object.freeze(buckets[i]);
    const want = bucketsFor(size);
    // Re-split when the bucket count is far from √size (hysteresis: not on every step).
    if (want > 2 * n || want * 4 < n || (want === 1 && n > 1)) return EndpointMap.from(new BucketIterator(buckets, pickEntries));
    return new EndpointMap(buckets, size);
  }

  private bucket(key: string): ReadonlyMap<string, Endpoint> {
    const n = this.buckets.length;
    return this.buckets[n === 1 ? 0 : hashKey(key) & (n - 1)] as ReadonlyMap<string, Endpoint>;
  }

  get(key: string): Endpoint | undefined {
    return this.bucket(key).get(key);
  }

  has(key: string): boolean {
    return this.bucket(key).has(key);
  }

  keys(): MapIterator<string> {
    if (this.buckets.length === 1) return (this.buckets[0] as ReadonlyMap<string, Endpoint>).keys();
    return new BucketIterator(this.buckets, pickKeys) as unknown as MapIterator<string>;
  }

  values(): MapIterator<Endpoint> {
    if (this.buckets.length === 1) return (this.buckets[0] as ReadonlyMap<string, Endpoint>).values();
    return new BucketIterator(this.buckets, pickValues) as unknown as MapIterator<Endpoint>;
  }

  entries(): MapIterator<[string, Endpoint]> {
    if (this.buckets.length === 1) return (this.buckets[0] as ReadonlyMap<string, Endpoint>).entries();
    return new BucketIterator(this.buckets, pickEntries) as unknown as MapIterator<[string, Endpoint]>;
  }

  [Symbol.iterator](): MapIterator<[string, Endpoint]> {
    return this.entries();
  }

  forEach(fn: (value: Endpoint, key: string, map: ReadonlyMap<string, Endpoint>) => void, thisArg?: unknown): void {
    for (const b of this.buckets) for (const [k, v] of b) fn.call(thisArg, v, k, this);
  }

  get [Symbol.toStringTag](): string {
    return 'EndpointMap';
  }

  /** The bucket count (for tests). */
  get bucketCount(): number {
    return this.buckets.length;
  }
}

function serviceKey(s: { namespace: string; hostname: string }): string {
  return `${s.namespace}/${s.hostname}`;
}

export class MeshStore implements MeshReader {
  private readonly workloads = new Map<string, Workload>();
  private readonly workloadSeq = new Map<string, number>();
  /** Services as upserted (their own endpoints = base); Map order = arrival order. */
  private readonly serviceBase = new Map<string, Service>();
  private readonly serviceSeq = new Map<string, number>();
  /** The built (base + joined endpoints) frozen Service per key. */
  private readonly services = new Map<string, Service>();
  private readonly policies = new Map<string, Authorization>();
  private nextSeq = 0;

  /** addr → every workload holding it (arrival order) and the preferred one. */
  private readonly addrEntries = new Map<string, AddrEntry[]>();
  private readonly workloadsByAddr = new Map<string, Workload>();
  /** addr → services with that VIP, in arrival order. */
  private readonly servicesByVip = new Map<string, VipEntry[]>();
  /** The arrival number each built service was indexed under. */
  private readonly indexedSeq = new Map<string, number>();
  /** Longest prefix first, then arrival order. */
  private cidrVips: CidrVip[] = [];
  private readonly cidrEntriesOf = new Map<string, CidrVip[]>();

  /** service key → uid → endpoint from workloads' `services` maps (kept while the service is absent). */
  private readonly joined = new Map<string, Map<string, Endpoint>>();
  /** uid → keys of services whose base endpoints name it. */
  private readonly directOf = new Map<string, Set<string>>();
  /** uid → its servicesOf answer: the keys and the objects; stale objects are caught on read. */
  private readonly servicesOfCache = new Map<string, { keys: readonly string[]; list: readonly Service[] }>();

  /** Service key → the uids whose endpoint changed, or FULL (the service itself changed). */
  private readonly dirty = new Map<string, Set<string> | typeof FULL>();
  private configCache: LocalConfig | undefined;

  /** Same role as ProxyState's: uid → workload. */
  get workloadsByUid(): ReadonlyMap<string, Workload> {
    return this.workloads;
  }

  /** Same role as ProxyState's: `namespace/hostname` → service (endpoints joined). */
  get servicesByKey(): ReadonlyMap<string, Service> {
    return this.services;
  }

  /**
   * Everything held, as the LocalConfig a file with the same content would give (for
   * config_dump and for building a ProxyState). Built on first read after a change: O(n).
   */
  get config(): LocalConfig {
    if (this.configCache) return this.configCache;
    const services: Service[] = [];
    for (const key of this.serviceBase.keys()) {
      const s = this.services.get(key);
      if (s) services.push(s);
    }
    this.configCache = Object.freeze({
      workloads: Object.freeze([...this.workloads.values()]) as Workload[],
      services: Object.freeze(services) as Service[],
      policies: Object.freeze([...this.policies.values()]) as Authorization[],
    });
    return this.configCache;
  }

  // ------------------------------------------------------------------ reads (ProxyState's API)

  findWorkloadByIp(network: string, ip: string): Workload | undefined {
    return this.workloadsByAddr.get(addrKey(network, ip));
  }

  /** As ProxyState: exact VIP, then longest-prefix CIDR VIP; client namespace, canonical, first. */
  findServiceByVip(network: string, ip: string, clientNamespace: string | undefined): Service | undefined {
    return findServiceByVipIn(this.servicesByVip, serviceOfEntry, this.cidrVips, network, ip, clientNamespace);
  }

  findService(namespace: string, hostname: string): Service | undefined {
    return this.services.get(`${namespace}/${hostname}`);
  }

  /** Services this workload (by uid) is an endpoint of, in arrival order. */
  servicesOf(workload: Workload): readonly Service[] {
    const uid = workload.uid;
    const cached = this.servicesOfCache.get(uid);
    // The key set is invalidated on change; a service rebuilt since (new object) is caught here.
    if (cached && cached.keys.every((k, i) => this.services.get(k) === cached.list[i])) return cached.list;
    const keys = new Set<string>();
    const w = this.workloads.get(uid);
    if (w) for (const k of w.services.keys()) if (this.services.has(k)) keys.add(k);
    const direct = this.directOf.get(uid);
    if (direct) for (const k of direct) keys.add(k);
    let out: readonly Service[] = EMPTY;
    let sorted: readonly string[] = [];
    if (keys.size > 0) {
      sorted = [...keys].sort((a, b) => (this.serviceSeq.get(a) ?? 0) - (this.serviceSeq.get(b) ?? 0));
      out = Object.freeze(sorted.map((k) => this.services.get(k) as Service));
    }
    this.servicesOfCache.set(uid, { keys: sorted, list: out });
    return out;
  }

  localWorkloads(nodeName: string | undefined): Workload[] {
    return this.config.workloads.filter((w) => nodeName === undefined || w.node === nodeName);
  }

  get size(): { workloads: number; services: number; policies: number; stagedServiceKeys: number } {
    let staged = 0;
    for (const k of this.joined.keys()) if (!this.serviceBase.has(k)) staged++;
    return { workloads: this.workloads.size, services: this.services.size, policies: this.policies.size, stagedServiceKeys: staged };
  }

  // ------------------------------------------------------------------ writes

  /**
   * One delta response for the Address type: removals (by resource name: a workload uid or a
   * service's namespace/hostname), then upserts; services rebuilt once at the end.
   */
  applyAddresses(upserts: readonly MeshUpsert<MeshAddress>[], removals: readonly string[]): AddressChange {
    const removedOrMovedUids: string[] = [];
    for (const name of removals) if (this.workloads.has(name)) removedOrMovedUids.push(name);
    const upsertedWorkloads: Workload[] = [];
    for (const u of upserts) {
      if (u.model.kind !== 'workload') continue;
      const w = u.model.workload;
      upsertedWorkloads.push(w);
      const before = this.workloads.get(w.uid);
      if (before !== undefined && before.node !== w.node) removedOrMovedUids.push(w.uid);
    }
    for (const name of removals) this.removeAddressNoFlush(name);
    for (const u of upserts) {
      if (u.model.kind === 'workload') this.upsertWorkloadNoFlush(u.model.workload);
      else this.upsertServiceNoFlush(u.model.service);
    }
    this.flush();
    return { upsertedWorkloads, removedOrMovedUids };
  }

  /** One delta response for the Authorization type (resource name `namespace/name`). */
  applyPolicies(upserts: readonly MeshUpsert<Authorization>[], removals: readonly string[]): void {
    for (const name of removals) this.policies.delete(name);
    for (const u of upserts) this.policies.set(`${u.model.namespace}/${u.model.name}`, u.model);
    if (removals.length > 0 || upserts.length > 0) this.configCache = undefined;
  }

  /**
   * Everything held, as the deltas that rebuild it in an empty store (a restarted worker thread):
   * the workloads, the services as upserted (their own endpoints; joined ones come back from the
   * workloads), the policies, each in arrival order.
   */
  snapshot(): MeshDelta[] {
    const addresses: MeshUpsert<MeshAddress>[] = [];
    for (const w of this.workloads.values()) addresses.push({ name: w.uid, model: { kind: 'workload', workload: w } });
    for (const [key, service] of this.serviceBase) addresses.push({ name: key, model: { kind: 'service', service } });
    const policies = [...this.policies].map(([name, model]) => ({ name, model }));
    return [
      { kind: 'addresses', upserts: addresses, removals: [] },
      { kind: 'policies', upserts: policies, removals: [] },
    ];
  }

  /** The policies held, in arrival order (without building the whole `config`). */
  policyList(): Authorization[] {
    return [...this.policies.values()];
  }

  upsertWorkload(w: Workload): void {
    this.upsertWorkloadNoFlush(w);
    this.flush();
  }

  removeWorkload(uid: string): boolean {
    const had = this.removeWorkloadNoFlush(uid);
    this.flush();
    return had;
  }

  upsertService(s: Service): void {
    this.upsertServiceNoFlush(s);
    this.flush();
  }

  removeService(namespace: string, hostname: string): boolean {
    const had = this.removeServiceNoFlush(`${namespace}/${hostname}`);
    this.flush();
    return had;
  }

  /** A removal by xDS resource name: the workload with that uid, else the service with that key. */
  removeAddress(name: string): boolean {
    const had = this.removeAddressNoFlush(name);
    this.flush();
    return had;
  }

  // ------------------------------------------------------------------ workloads

  private removeAddressNoFlush(name: string): boolean {
    if (this.workloads.has(name)) return this.removeWorkloadNoFlush(name);
    return this.removeServiceNoFlush(name);
  }

  private upsertWorkloadNoFlush(w: Workload): void {
    const old = this.workloads.get(w.uid);
    let seq = this.workloadSeq.get(w.uid);
    if (old) this.unindexAddresses(old);
    if (seq === undefined) {
      seq = this.nextSeq++;
      this.workloadSeq.set(w.uid, seq);
    }
    this.workloads.set(w.uid, w);
    this.indexAddresses(w, seq);
    // Endpoint joins: only services whose endpoint for this uid actually changes are rebuilt.
    if (old) {
      for (const key of old.services.keys()) {
        if (!w.services.has(key)) this.unjoin(key, w.uid);
      }
    }
    for (const [key, port] of w.services) {
      const prevPort = old?.services.get(key);
      if (old && prevPort !== undefined && old.status === w.status && samePorts(prevPort, port)) {
        continue;
      }
      this.join(key, Object.freeze({ workloadUid: w.uid, port, status: w.status }));
    }
    if (!old || !sameKeys(old.services, w.services)) this.servicesOfCache.delete(w.uid);
    this.configCache = undefined;
  }

  private removeWorkloadNoFlush(uid: string): boolean {
    const old = this.workloads.get(uid);
    if (!old) return false;
    this.unindexAddresses(old);
    for (const key of old.services.keys()) this.unjoin(key, uid);
    this.workloads.delete(uid);
    this.workloadSeq.delete(uid);
    this.servicesOfCache.delete(uid);
    this.configCache = undefined;
    return true;
  }

  private join(key: string, ep: Endpoint): void {
    let m = this.joined.get(key);
    if (!m) {
      m = new Map();
      this.joined.set(key, m);
    }
    m.set(ep.workloadUid, ep);
    if (this.serviceBase.has(key)) this.markDirty(key, ep.workloadUid);
  }

  private unjoin(key: string, uid: string): void {
    const m = this.joined.get(key);
    if (!m || !m.delete(uid)) return;
    if (m.size === 0) this.joined.delete(key);
    if (this.serviceBase.has(key)) this.markDirty(key, uid);
  }

  /** One endpoint of the service `key` changed (FULL: the service itself did). */
  private markDirty(key: string, uid: string | typeof FULL): void {
    const cur = this.dirty.get(key);
    if (cur === FULL) return;
    if (uid === FULL) this.dirty.set(key, FULL);
    else if (cur) cur.add(uid);
    else this.dirty.set(key, new Set([uid]));
  }

  private indexAddresses(w: Workload, seq: number): void {
    if (w.networkMode === 'HostNetwork') return;
    for (const ip of w.workloadIps) {
      const key = addrKey(w.network, ip);
      let list = this.addrEntries.get(key);
      if (!list) {
        list = [];
        this.addrEntries.set(key, list);
      }
      // Keep arrival order so "first of the best rank" matches ProxyState over `config`.
      let i = list.length;
      while (i > 0 && (list[i - 1] as AddrEntry).seq > seq) i--;
      list.splice(i, 0, { workload: w, seq });
      this.pickAddr(key, list);
    }
  }

  private unindexAddresses(w: Workload): void {
    if (w.networkMode === 'HostNetwork') return;
    for (const ip of w.workloadIps) {
      const key = addrKey(w.network, ip);
      const list = this.addrEntries.get(key);
      if (!list) continue;
      const i = list.findIndex((e) => e.workload === w);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) {
        this.addrEntries.delete(key);
        this.workloadsByAddr.delete(key);
      } else {
        this.pickAddr(key, list);
      }
    }
  }

  private pickAddr(key: string, list: AddrEntry[]): void {
    let best = (list[0] as AddrEntry).workload;
    let bestRank = rank(best);
    for (let i = 1; i < list.length; i++) {
      const w = (list[i] as AddrEntry).workload;
      const r = rank(w);
      if (r > bestRank) {
        best = w;
        bestRank = r;
      }
    }
    this.workloadsByAddr.set(key, best);
  }

  // ------------------------------------------------------------------ services

  private upsertServiceNoFlush(s: Service): void {
    const key = serviceKey(s);
    const old = this.serviceBase.get(key);
    if (old) this.setDirect(key, old, false);
    else this.serviceSeq.set(key, this.nextSeq++); // new, or re-added: goes last
    this.serviceBase.set(key, s);
    this.setDirect(key, s, true);
    this.markDirty(key, FULL);
    this.configCache = undefined;
  }

  private removeServiceNoFlush(key: string): boolean {
    const old = this.serviceBase.get(key);
    if (!old) return false;
    this.setDirect(key, old, false);
    this.serviceBase.delete(key);
    this.serviceSeq.delete(key);
    // Joined endpoints stay staged in `joined` for a later re-add.
    this.markDirty(key, FULL);
    this.configCache = undefined;
    return true;
  }

  private setDirect(key: string, s: Service, add: boolean): void {
    for (const uid of s.endpoints.keys()) {
      let set = this.directOf.get(uid);
      if (add) {
        if (!set) {
          set = new Set();
          this.directOf.set(uid, set);
        }
        set.add(key);
      } else if (set) {
        set.delete(key);
        if (set.size === 0) this.directOf.delete(uid);
      }
    }
  }

  /**
   * Rebuilds each changed service once: a new frozen object, indexes re-pointed. Only endpoint
   * changes: the new endpoint map is the old one with those uids replaced (buckets shared).
   */
  private flush(): void {
    if (this.dirty.size === 0) return;
    for (const [key, changed] of this.dirty) {
      const cur = this.services.get(key);
      const base = this.serviceBase.get(key);
      const seq = this.serviceSeq.get(key);
      if (changed !== FULL && cur !== undefined && base !== undefined) {
        // The service is as it was (else FULL): same VIPs, same arrival number.
        const delta = new Map<string, Endpoint | undefined>();
        const joined = this.joined.get(key);
        for (const uid of changed) {
          delta.set(uid, joined?.get(uid) ?? base.endpoints.get(uid));
          this.servicesOfCache.delete(uid);
        }
        const next: Service = Object.freeze({ ...base, endpoints: (cur.endpoints as EndpointMap).with(delta) });
        this.services.set(key, next);
        this.repointService(key, cur, next);
        continue;
      }
      // Same VIPs under the same arrival number: re-point in place; otherwise re-index.
      const inPlace = cur !== undefined && base !== undefined && seq === this.indexedSeq.get(key) && sameAddresses(cur, base);
      if (cur) {
        this.invalidateServicesOf(cur);
        if (!inPlace) this.unindexService(key, cur);
      }
      if (!base || seq === undefined) {
        this.services.delete(key);
        continue;
      }
      const next = this.build(key, base);
      this.services.set(key, next);
      this.invalidateServicesOf(next);
      if (inPlace) this.repointService(key, cur, next);
      else this.indexService(key, next, seq);
    }
    this.dirty.clear();
    this.configCache = undefined;
  }

  private build(key: string, base: Service): Service {
    // Endpoints: the service's own, then each joined workload's (replacing an own one of the same uid).
    const joined = this.joined.get(key);
    let endpoints: EndpointMap;
    if (!joined || joined.size === 0) endpoints = base.endpoints.size === 0 ? EndpointMap.EMPTY : EndpointMap.from(base.endpoints);
    else if (base.endpoints.size === 0) endpoints = EndpointMap.from(joined);
    else endpoints = EndpointMap.from(concat(base.endpoints, joined));
    return Object.freeze({ ...base, endpoints });
  }

  private invalidateServicesOf(s: Service): void {
    for (const uid of s.endpoints.keys()) this.servicesOfCache.delete(uid);
  }

  private indexService(key: string, s: Service, seq: number): void {
    this.indexedSeq.set(key, seq);
    for (const vip of s.vips) {
      const k = addrKey(vip.network, vip.address);
      let list = this.servicesByVip.get(k);
      if (!list) {
        list = [];
        this.servicesByVip.set(k, list);
      }
      let i = list.length;
      while (i > 0 && (list[i - 1] as VipEntry).seq > seq) i--;
      list.splice(i, 0, { service: s, seq });
    }
    if (s.cidrVips.length > 0) {
      const entries: CidrVip[] = [];
      s.cidrVips.forEach((c, idx) => {
        const cidr = parseCidr(c.cidr);
        if (cidr) entries.push({ network: c.network, cidr, prefix: prefixOf(c.cidr), seq, idx, service: s });
      });
      if (entries.length > 0) {
        this.cidrEntriesOf.set(key, entries);
        this.cidrVips = [...this.cidrVips, ...entries].sort(byPrefixThenArrival);
      }
    }
  }

  private unindexService(key: string, s: Service): void {
    for (const vip of s.vips) {
      const k = addrKey(vip.network, vip.address);
      const list = this.servicesByVip.get(k);
      if (!list) continue;
      const i = list.findIndex((e) => e.service === s);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.servicesByVip.delete(k);
    }
    this.indexedSeq.delete(key);
    const entries = this.cidrEntriesOf.get(key);
    if (entries) {
      this.cidrEntriesOf.delete(key);
      const gone = new Set(entries);
      this.cidrVips = this.cidrVips.filter((c) => !gone.has(c));
    }
  }

  /** Same VIPs as before: swap the object in place in every list that holds it. */
  private repointService(key: string, cur: Service, next: Service): void {
    if (cur === next) return;
    for (const vip of cur.vips) {
      const list = this.servicesByVip.get(addrKey(vip.network, vip.address));
      if (!list) continue;
      for (const e of list) if (e.service === cur) e.service = next;
    }
    const entries = this.cidrEntriesOf.get(key);
    if (entries) for (const e of entries) e.service = next;
  }
}

/** ProxyState's preference for a shared IP: pods first, then HBONE; ties keep the first. */
function rank(w: Workload): number {
  return (w.uid.includes('//Pod/') ? 2 : 0) + (w.protocol === 'HBONE' ? 1 : 0);
}

function* concat<T>(a: Iterable<T>, b: Iterable<T>): Iterable<T> {
  yield* a;
  yield* b;
}

function serviceOfEntry(e: VipEntry): Service {
  return e.service;
}

function byPrefixThenArrival(a: CidrVip, b: CidrVip): number {
  return b.prefix - a.prefix || a.seq - b.seq || a.idx - b.idx;
}

function samePorts(a: PortMap, b: PortMap): boolean {
  if (a === b) return true;
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

function sameKeys(a: ReadonlyMap<string, unknown>, b: ReadonlyMap<string, unknown>): boolean {
  if (a.size !== b.size) return false;
  for (const k of a.keys()) if (!b.has(k)) return false;
  return true;
}

/** Same VIP and CIDR VIP lists (the index entries a service occupies). */
function sameAddresses(a: Service, b: Service): boolean {
  if (a.vips.length !== b.vips.length || a.cidrVips.length !== b.cidrVips.length) return false;
  for (let i = 0; i < a.vips.length; i++) {
    const x = a.vips[i] as Service['vips'][number];
    const y = b.vips[i] as Service['vips'][number];
    if (x.network !== y.network || x.address !== y.address) return false;
  }
  for (let i = 0; i < a.cidrVips.length; i++) {
    const x = a.cidrVips[i] as Service['cidrVips'][number];
    const y = b.cidrVips[i] as Service['cidrVips'][number];
    if (x.network !== y.network || x.cidr !== y.cidr) return false;
  }
  return true;
}
