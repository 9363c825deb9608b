// Per-identity workload certificates over a CertificateSource (the in-process CA, or istiod's CA
// through src/xds/ca-client.ts), the counterpart of upstream's SecretManager
// (https://github.com/istio/ztunnel/blob/master/src/identity/manager.rs). Asynchronous:
// - fetch(id): the identity's TLS options; concurrent callers share one in-flight request;
//   while the last attempt failed and its retry is pending ('Unavailable'), callers fail fast
//   with that error instead of hammering the CA.
// - peekTlsOptions(id) / secureContext(id): the synchronous fast path, no promise per connection:
//   the current certificate if it is still valid, else undefined.
// - prefetch(id): start issuance in the background (a local workload appeared).
// - rotation at half of the lifetime the CA answered, measured from notBefore — or from when we
//   asked, if the CA back-dated notBefore (our own CA does, by a minute, for clock skew): the
//   back-dated part is not lifetime, and a short-lived certificate would otherwise be due the
//   moment it arrives. A failed issuance is retried with jittered exponential backoff while the
//   old certificate keeps being served until it expires.
// - leader and followers (worker threads): the main thread's manager renews and reports each
//   certificate (onIssued); a data-path thread runs a follower (rotation 'pushed') that asks
//   the main thread only for an identity it does not hold and takes renewals by install().
// Must never: hand out an expired certificate, expose a private key except through the TLS
// options / SecureContext and current() / onIssued (to a follower thread of this process;
// dump(), findCertificate() and logs carry certificates only), or keep
// the process alive (timers are unref'd). The manager owns its source (close() closes it).

import { X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureContext } from 'node:tls';
import { ZtError, errorMessage } from '../errors.js';
import type { CertificateAuthority, CertificateSummary } from './ca.js';
import { LocalCaSource, type CertificateSource, type IssuedIdentity } from './cert-source.js';

export { MIN_VALIDITY_MS } from './cert-source.js';

/** setTimeout's ceiling; longer waits are re-armed when they fire. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const RETRY_INITIAL_MS = 1000;
const RETRY_MAX_MS = 150_000;
/** A certificate with less left than this is refused as unusable (it would be due at once). */
const MIN_REMAINING_MS = 200;

/** What TLS needs for one local identity: key, chain (leaf first) and the trust bundle, as PEM. */
export interface TlsIdentityOptions {
  key: string;
  cert: string;
  ca: string;
}

export interface CertificateDump {
  pem: string;
  serialNumber: string;
  validFrom: string;
  expirationTime: string;
}

export type IdentityState = 'Available' | 'Initializing' | 'Unavailable';

export interface IdentityDump {
  identity: string;
  state: IdentityState;
  certChain: CertificateDump[];
  rootCerts: CertificateDump[];
  /** The last issuance error (state Unavailable, or a failed renewal while the old certificate serves). */
  error?: string;
}

export interface SecretManagerOptions {
  /** Lifetime asked of the built-in CA (only when constructed with a CertificateAuthority). */
  validityMs?: number;
  now?: () => number;
  /** An issuance (first or renewal) failed; a retry is scheduled. Default: a process warning. */
  onRenewalError?: (spiffeUri: string, err: unknown) => void;
  /** First retry delay after a failure (default 1 s), doubled per failure up to retryMaxMs (150 s). */
  retryInitialMs?: number;
  retryMaxMs?: number;
  /** [0, 1); jitter of the retry delays (default Math.random). */
  random?: () => number;
  /** A certificate was issued (first or renewal) and is now served (worker threads get it pushed). */
  onIssued?: (issued: IssuedIdentity) => void;
  /**
   * 'self' (default): this manager renews at half-life. 'pushed': a follower (a data-path worker
   * thread) never renews on its own: it asks its source only for an identity it does not hold,
   * and its leader pushes every renewal with install().
   */
  rotation?: 'self' | 'pushed';
}

interface Held {
  issued: IssuedIdentity;
  tls: TlsIdentityOptions;
  notAfterMs: number;
  refreshAt: number;
  secureContext: SecureContext | undefined;
}

interface Entry {
  held: Held | undefined;
  inflight: Promise<TlsIdentityOptions> | undefined;
  /** The rotation timer, or the retry timer after a failure. */
  timer: NodeJS.Timeout | undefined;
  failures: number;
  lastError: ZtError | undefined;
}

export class SecretManager {
  readonly #source: CertificateSource;
  readonly #now: () => number;
  readonly #onRenewalError: (spiffeUri: string, err: unknown) => void;
  readonly #retryInitialMs: number;
  readonly #retryMaxMs: number;
  readonly #random: () => number;
  readonly #onIssued: ((issued: IssuedIdentity) => void) | undefined;
  readonly #renews: boolean;
  readonly #entries = new Map<string, Entry>();
  #closed = false;

  constructor(source: CertificateSource | CertificateAuthority, opts?: SecretManagerOptions) {
    this.#now = opts?.now ?? Date.now;
    // Duck-typed, so a worker thread's manager never loads the CA (and its X.509 library).
    this.#source = isSource(source) ? source : new LocalCaSource(source, { validityMs: opts?.validityMs, now: this.#now });
    this.#onRenewalError =
      opts?.onRenewalError ?? ((spiffeUri, err) => process.emitWarning(`certificate issuance for ${spiffeUri} failed: ${errorMessage(err)}`));
    this.#retryInitialMs = opts?.retryInitialMs ?? RETRY_INITIAL_MS;
    this.#retryMaxMs = Math.max(opts?.retryMaxMs ?? RETRY_MAX_MS, this.#retryInitialMs);
    this.#random = opts?.random ?? Math.random;
    this.#onIssued = opts?.onIssued;
    this.#renews = (opts?.rotation ?? 'self') === 'self';
  }

  /** Where certificates come from ('local CA', 'istiod CA at …'). */
  get sourceName(): string {
    return this.#source.name;
  }

  /** The identity's valid TLS options now, or undefined (none yet, or expired). No I/O, no promise. */
  peekTlsOptions(spiffeUri: string): TlsIdentityOptions | undefined {
    const entry = this.#entries.get(spiffeUri);
    return entry ? this.#valid(spiffeUri, entry)?.tls : undefined;
  }

  /** A SecureContext (TLS 1.3) for the identity's valid certificate, built once per certificate; or undefined. */
  secureContext(spiffeUri: string): SecureContext | undefined {
    const entry = this.#entries.get(spiffeUri);
    const held = entry && this.#valid(spiffeUri, entry);
    if (!held) return undefined;
    held.secureContext ??= createSecureContext({ ...held.tls, minVersion: 'TLSv1.3' });
    return held.secureContext;
  }

  /**
   * The identity's TLS options: at once when a valid certificate is held, else from the one
   * in-flight issuance (started if none). Rejects with ZT_ERR_IDENTITY_UNAVAILABLE when the
   * issuance fails, or at once while a failed one waits for its retry.
   */
  fetch(spiffeUri: string): Promise<TlsIdentityOptions> {
    if (this.#closed) return Promise.reject(new ZtError('ZT_ERR_IDENTITY_UNAVAILABLE', `no certificate for ${spiffeUri}: the secret manager is closed`));
    let entry = this.#entries.get(spiffeUri);
    if (!entry) {
      entry = { held: undefined, inflight: undefined, timer: undefined, failures: 0, lastError: undefined };
      this.#entries.set(spiffeUri, entry);
    }
    const held = this.#valid(spiffeUri, entry);
    if (held) return Promise.resolve(held.tls);
    if (entry.inflight) return entry.inflight;
    if (entry.lastError && entry.timer) return Promise.reject(entry.lastError);
    return this.#start(spiffeUri, entry);
  }

  /** Start issuing in the background (errors go to onRenewalError); no-op when held or in flight. */
  prefetch(spiffeUri: string): void {
    this.fetch(spiffeUri).catch(() => undefined);
  }

  /** 'Available' (valid certificate), 'Initializing' (first issuance in flight), 'Unavailable' (failed; retrying); undefined if unknown. */
  state(spiffeUri: string): IdentityState | undefined {
    const entry = this.#entries.get(spiffeUri);
    if (!entry) return undefined;
    if (entry.held && this.#now() < entry.held.notAfterMs) return 'Available';
    return entry.lastError && !entry.inflight ? 'Unavailable' : 'Initializing';
  }

  /** The identity's current leaf certificate, without its key; undefined if none was issued yet. */
  findCertificate(spiffeUri: string): CertificateSummary | undefined {
    const issued = this.#entries.get(spiffeUri)?.held?.issued;
    if (!issued) return undefined;
    return {
      certPem: issued.certChainPem[0] ?? '',
      serialHex: issued.serialHex,
      notBefore: issued.notBefore,
      notAfter: issued.notAfter,
      identity: issued.identity,
    };
  }

  /** The identity's valid certificate as issued (key included: for a follower thread only), or undefined. */
  current(spiffeUri: string): IssuedIdentity | undefined {
    const entry = this.#entries.get(spiffeUri);
    return entry ? this.#valid(spiffeUri, entry)?.issued : undefined;
  }

  /**
   * A follower takes a certificate its leader issued (a renewal, or an identity it will need):
   * served from now on. Refused (false) when unusable: wrong shape or about to expire.
   */
  install(issued: IssuedIdentity): boolean {
    if (this.#closed) return false;
    let held: Held;
    try {
      held = this.#accept(issued.identity, issued, this.#now());
    } catch {
      return false;
    }
    let entry = this.#entries.get(issued.identity);
    if (!entry) {
      entry = { held: undefined, inflight: undefined, timer: undefined, failures: 0, lastError: undefined };
      this.#entries.set(issued.identity, entry);
    }
    if (entry.held && entry.held.notAfterMs > held.notAfterMs) return false; // an older one arrived late
    entry.held = held;
    entry.failures = 0;
    entry.lastError = undefined;
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
    if (this.#renews) this.#arm(issued.identity, entry, held.refreshAt - this.#now());
    return true;
  }

  forget(spiffeUri: string): void {
    const entry = this.#entries.get(spiffeUri);
    if (entry?.timer) clearTimeout(entry.timer);
    this.#entries.delete(spiffeUri);
  }

  /**
   * Drop every identity not in `keep` (workloads removed or moved away): its certificate
   * is no longer renewed nor handed out. Returns the identities dropped.
   */
  retainOnly(keep: ReadonlySet<string>): string[] {
    const dropped = [...this.#entries.keys()].filter((id) => !keep.has(id));
    for (const id of dropped) this.forget(id);
    return dropped;
  }

  dump(): IdentityDump[] {
    return [...this.#entries.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([identity, entry]) => {
        const state = this.state(identity) ?? 'Initializing';
        const issued = state === 'Available' ? entry.held?.issued : undefined;
        return {
          identity,
          state,
          certChain: issued ? issued.certChainPem.map(dumpPem) : [],
          rootCerts: issued ? issued.rootsPem.map(dumpPem) : [],
          ...(entry.lastError ? { error: entry.lastError.message } : {}),
        };
      });
  }

  close(): void {
    this.#closed = true;
    for (const entry of this.#entries.values()) {
      if (entry.timer) clearTimeout(entry.timer);
      entry.timer = undefined;
    }
    this.#source.close?.();
  }

  /** The held certificate if still valid; past its refresh time (a late timer) a refresh is started. */
  #valid(spiffeUri: string, entry: Entry): Held | undefined {
    const held = entry.held;
    if (!held) return undefined;
    const now = this.#now();
    if (now >= held.refreshAt && !entry.inflight && entry.failures === 0 && !this.#closed) {
      this.#start(spiffeUri, entry).catch(() => undefined);
    }
    return now < held.notAfterMs ? held : undefined;
  }

  #start(spiffeUri: string, entry: Entry): Promise<TlsIdentityOptions> {
    const askedAt = this.#now();
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
    const p: Promise<TlsIdentityOptions> = new Promise<IssuedIdentity>((resolve) => resolve(this.#source.issue(spiffeUri))).then(
      (issued) => {
        if (entry.inflight === p) entry.inflight = undefined;
        const held = this.#accept(spiffeUri, issued, askedAt);
        if (this.#closed || this.#entries.get(spiffeUri) !== entry) return held.tls; // forgotten meanwhile: not kept
        entry.held = held;
        entry.failures = 0;
        entry.lastError = undefined;
        if (this.#renews) this.#arm(spiffeUri, entry, held.refreshAt - this.#now());
        this.#onIssued?.(issued);
        return held.tls;
      },
      (err: unknown) => {
        if (entry.inflight === p) entry.inflight = undefined;
        const zerr =
          err instanceof ZtError && err.code === 'ZT_ERR_IDENTITY_UNAVAILABLE'
            ? err
            : new ZtError('ZT_ERR_IDENTITY_UNAVAILABLE', `no certificate for ${spiffeUri} from ${this.#source.name}: ${errorMessage(err)}`, { cause: err });
        if (!this.#closed && this.#entries.get(spiffeUri) === entry) {
          entry.failures += 1;
          entry.lastError = zerr;
          this.#onRenewalError(spiffeUri, zerr);
          this.#arm(spiffeUri, entry, this.#retryDelay(entry));
        }
        throw zerr;
      },
    );
    // Nobody may be waiting (prefetch, rotation): the failure is reported above, not unhandled.
    p.catch(() => undefined);
    entry.inflight = p;
    return p;
  }

  /** Checks and shapes a certificate the source answered; throws (a failed attempt) if unusable. */
  #accept(spiffeUri: string, issued: IssuedIdentity, askedAt: number): Held {
    if (issued.identity !== spiffeUri) {
      throw new ZtError('ZT_ERR_IDENTITY_UNAVAILABLE', `${this.#source.name} answered a certificate for ${issued.identity}, not ${spiffeUri}`);
    }
    const now = this.#now();
    const notAfterMs = issued.notAfter.getTime();
    if (!(notAfterMs - now >= MIN_REMAINING_MS)) {
      throw new ZtError('ZT_ERR_IDENTITY_UNAVAILABLE', `${this.#source.name} answered a certificate for ${spiffeUri} that expires at ${issued.notAfter.toISOString()}`);
    }
    const start = Math.max(issued.notBefore.getTime(), askedAt);
    return {
      issued,
      tls: Object.freeze({ key: issued.keyPem, cert: joinPem(issued.certChainPem), ca: joinPem(issued.rootsPem) }),
      notAfterMs,
      // A follower never renews by itself (its leader pushes renewals).
      refreshAt: this.#renews ? start + (notAfterMs - start) / 2 : Infinity,
      secureContext: undefined,
    };
  }

  /** Equal jitter: half the exponential step fixed, half random; never past a held certificate's expiry. */
  #retryDelay(entry: Entry): number {
    const step = Math.min(this.#retryInitialMs * 2 ** Math.min(entry.failures - 1, 30), this.#retryMaxMs);
    let delay = step / 2 + (this.#random() * step) / 2;
    const untilExpiry = entry.held ? entry.held.notAfterMs - this.#now() : 0;
    if (untilExpiry > 0) delay = Math.min(delay, untilExpiry);
    return delay;
  }

  #arm(spiffeUri: string, entry: Entry, delayMs: number): void {
    if (this.#closed) return;
    if (entry.timer) clearTimeout(entry.timer);
    const timer = setTimeout(() => this.#onTimer(spiffeUri, entry), Math.min(Math.max(delayMs, 0), MAX_TIMER_MS));
    timer.unref();
    entry.timer = timer;
  }

  #onTimer(spiffeUri: string, entry: Entry): void {
    entry.timer = undefined;
    if (this.#closed || this.#entries.get(spiffeUri) !== entry || entry.inflight) return;
    const now = this.#now();
    // A rotation timer clamped to MAX_TIMER_MS fires early: re-arm (retries are always due).
    if (entry.failures === 0 && entry.held && now < entry.held.refreshAt) {
      this.#arm(spiffeUri, entry, entry.held.refreshAt - now);
      return;
    }
    this.#start(spiffeUri, entry).catch(() => undefined);
  }
}

function isSource(s: CertificateSource | CertificateAuthority): s is CertificateSource {
  return typeof (s as Partial<CertificateSource>).issue === 'function';
}

function joinPem(pems: readonly string[]): string {
  return pems.map((p) => (p.endsWith('\n') ? p : `${p}\n`)).join('');
}

function dumpPem(pem: string): CertificateDump {
  let serialNumber = '';
  let validFrom = '';
  let expirationTime = '';
  try {
    const cert = new X509Certificate(pem);
    serialNumber = cert.serialNumber.toUpperCase();
    validFrom = rfc3339(new Date(cert.validFrom));
    expirationTime = rfc3339(new Date(cert.validTo));
  } catch {
    // Sources hand over parsed certificates; an unparsable one is still shown, without times.
  }
  return { pem: Buffer.from(pem, 'utf8').toString('base64'), serialNumber, validFrom, expirationTime };
}

/** Certificates hold whole seconds, so drop the ".000" toISOString adds. */
function rfc3339(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
