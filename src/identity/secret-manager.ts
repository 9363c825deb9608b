// Per-identity workload certificate cache backed by the in-process CA, the counterpart of upstream's
// SecretManager (https://github.com/istio/ztunnel/blob/master/src/identity/manager.rs):
// issue on first use, refresh at half-life, serve TLS options / SecureContexts to the HBONE layer.
// Must never expose a private key except through getTlsOptions()/getSecureContext(); dump() and
// everything else carry certificates only. Timers are unref'd: the cache never keeps the
// process alive.
// Invariant: whatever get…() returns is inside its validity window as seen by `now`; a cert past
// its half-life is replaced before being handed out, even if the renewal timer has not fired.

import { createSecureContext, type SecureContext } from 'node:tls';
import { ZtError, errorMessage } from '../errors.js';
import { DEFAULT_WORKLOAD_VALIDITY_MS, type CertificateAuthority, type CertificateSummary } from './ca.js';
import type { IssuedCertificate } from './x509.js';

/** setTimeout's ceiling; longer waits are re-armed when they fire. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const RETRY_INITIAL_MS = 1000;
/** Certificates have whole-second times; below this the half-life would be (almost) zero. */
export const MIN_VALIDITY_MS = 2000;
const RETRY_MAX_MS = 150_000;

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

export interface IdentityDump {
  identity: string;
  state: 'Available';
  certChain: CertificateDump[];
  rootCerts: CertificateDump[];
}

interface Entry {
  issued: IssuedCertificate;
  refreshAt: number;
  secureContext: SecureContext | undefined;
  timer: NodeJS.Timeout | undefined;
  retryMs: number;
}

export class SecretManager {
  readonly #ca: CertificateAuthority;
  readonly #validityMs: number;
  readonly #now: () => number;
  readonly #onRenewalError: (spiffeUri: string, err: unknown) => void;
  readonly #entries = new Map<string, Entry>();
  #closed = false;

  constructor(
    ca: CertificateAuthority,
    opts?: {
      validityMs?: number;
      now?: () => number;
      /** Background renewal failed; the old certificate keeps being served. Default: a process warning. */
      onRenewalError?: (spiffeUri: string, err: unknown) => void;
    },
  ) {
    this.#ca = ca;
    this.#validityMs = opts?.validityMs ?? DEFAULT_WORKLOAD_VALIDITY_MS;
    this.#now = opts?.now ?? Date.now;
    this.#onRenewalError =
      opts?.onRenewalError ??
      ((spiffeUri, err) => process.emitWarning(`certificate renewal for ${spiffeUri} failed: ${errorMessage(err)}`));
    if (!Number.isFinite(this.#validityMs) || this.#validityMs < MIN_VALIDITY_MS) {
      throw new ZtError('ZT_ERR_CONFIG_INVALID', `certificate validity must be at least ${MIN_VALIDITY_MS} ms, got ${this.#validityMs}`);
    }
  }

  getTlsOptions(spiffeUri: string): TlsIdentityOptions {
    const { issued } = this.#get(spiffeUri);
    return { key: issued.keyPem, cert: issued.certPem, ca: this.#ca.rootCertPem };
  }

  getSecureContext(spiffeUri: string): SecureContext {
    const entry = this.#get(spiffeUri);
    entry.secureContext ??= createSecureContext({
      key: entry.issued.keyPem,
      cert: entry.issued.certPem,
      ca: this.#ca.rootCertPem,
      minVersion: 'TLSv1.3',
    });
    return entry.secureContext;
  }

  /** The identity's current certificate, without its key; undefined if none was issued yet. */
  findCertificate(spiffeUri: string): CertificateSummary | undefined {
    const issued = this.#entries.get(spiffeUri)?.issued;
    if (!issued) return undefined;
    const { keyPem: _key, ...summary } = issued;
    return summary;
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
    const root = dumpCertificate(this.#ca.rootCertificate);
    return [...this.#entries.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([identity, entry]) => ({
        identity,
        state: 'Available' as const,
        certChain: [dumpCertificate(entry.issued)],
        rootCerts: [root],
      }));
  }

  close(): void {
    this.#closed = true;
    for (const entry of this.#entries.values()) {
      if (entry.timer) clearTimeout(entry.timer);
      entry.timer = undefined;
    }
  }

  #get(spiffeUri: string): Entry {
    const existing = this.#entries.get(spiffeUri);
    const now = this.#now();
    if (existing && now < existing.refreshAt) return existing;
    try {
      return this.#issue(spiffeUri);
    } catch (err) {
      if (existing && now < existing.issued.notAfter.getTime()) return existing;
      throw err;
    }
  }

  #issue(spiffeUri: string): Entry {
    const issuedAt = this.#now();
    const issued = this.#ca.issueWorkloadCertificate(spiffeUri, { validityMs: this.#validityMs, now: issuedAt });
    // Only once the new certificate exists: on failure the old entry keeps its timer.
    const previous = this.#entries.get(spiffeUri);
    if (previous?.timer) clearTimeout(previous.timer);
    const entry: Entry = {
      issued,
      // Half-life measured from issuance rather than from the back-dated notBefore (upstream
      // measures from notBefore): identical for day-long certificates, but short test lifetimes would otherwise
      // be past their half-life the moment they are issued and renew in a tight loop.
      refreshAt: issuedAt + (issued.notAfter.getTime() - issuedAt) / 2,
      secureContext: undefined,
      timer: undefined,
      retryMs: RETRY_INITIAL_MS,
    };
    this.#entries.set(spiffeUri, entry);
    this.#schedule(spiffeUri, entry, entry.refreshAt - this.#now());
    return entry;
  }

  #schedule(spiffeUri: string, entry: Entry, delayMs: number): void {
    if (this.#closed) return;
    const timer = setTimeout(() => this.#onTimer(spiffeUri, entry), Math.min(Math.max(delayMs, 0), MAX_TIMER_MS));
    timer.unref();
    entry.timer = timer;
  }

  #onTimer(spiffeUri: string, entry: Entry): void {
    entry.timer = undefined;
    if (this.#closed || this.#entries.get(spiffeUri) !== entry) return;
    const now = this.#now();
    if (now < entry.refreshAt) {
      this.#schedule(spiffeUri, entry, entry.refreshAt - now);
      return;
    }
    try {
      this.#issue(spiffeUri);
    } catch (err) {
      // Keep serving the still-valid certificate; retry with backoff, but not past its expiry.
      const untilExpiry = entry.issued.notAfter.getTime() - now;
      const delay = Math.max(0, Math.min(entry.retryMs, untilExpiry));
      entry.retryMs = Math.min(entry.retryMs * 2, RETRY_MAX_MS);
      this.#onRenewalError(spiffeUri, err);
      this.#schedule(spiffeUri, entry, delay);
    }
  }
}

function dumpCertificate(cert: CertificateSummary): CertificateDump {
  return {
    pem: Buffer.from(cert.certPem, 'utf8').toString('base64'),
    serialNumber: cert.serialHex,
    validFrom: rfc3339(cert.notBefore),
    expirationTime: rfc3339(cert.notAfter),
  };
}

/** Certificates hold whole seconds, so drop the ".000" toISOString adds. */
function rfc3339(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
