// `ztunnel-ts ca create --out DIR [--force] [--common-name NAME] [--validity-days N]`:
// generates a root CA and writes ca-cert.pem / ca-key.pem for FAKE_CA-style local meshes.
// Must never overwrite an existing CA file without --force (losing a root key silently breaks
// every certificate issued from it), and never print the private key.
// Exit codes: 0 written, 1 refused or failed, 2 usage error.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { errorMessage } from '../errors.js';
import { CA_CERT_FILE, CA_KEY_FILE, CertificateAuthority } from './ca.js';

export const CA_CREATE_USAGE = `usage: ztunnel-ts ca create --out DIR [--force] [--common-name NAME] [--validity-days N]

Generates a self-signed ECDSA P-256 root CA and writes DIR/${CA_CERT_FILE} (0644) and
DIR/${CA_KEY_FILE} (0600). DIR is created if missing. Existing files are kept unless --force.
`;

export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

const defaultIo: CliIo = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
};

interface CaCreateArgs {
  kind: 'run';
  out: string;
  force: boolean;
  commonName: string | undefined;
  validityDays: number | undefined;
}

export type CaCreateCommand = CaCreateArgs | { kind: 'help' } | { kind: 'usage'; message: string };

/** Parses the arguments after `ca create`. */
export function buildCaCreateArgs(argv: readonly string[]): CaCreateCommand {
  const usage = (message: string): CaCreateCommand => ({ kind: 'usage', message });
  let out: string | undefined;
  let force = false;
  let commonName: string | undefined;
  let validityDays: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const name = eq >= 0 ? arg.slice(0, eq) : arg;
    const takeValue = (): string | undefined => {
      if (eq >= 0) return arg.slice(eq + 1);
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) return undefined;
      i++;
      return next;
    };
    switch (name) {
      case '-h':
      case '--help':
        return { kind: 'help' };
      case '--force':
        if (eq >= 0) return usage('--force takes no value');
        force = true;
        break;
      case '--out': {
        const value = takeValue();
        if (!value) return usage('--out needs a directory');
        out = value;
        break;
      }
      case '--common-name': {
        const value = takeValue();
        if (!value) return usage('--common-name needs a value');
        commonName = value;
        break;
      }
      case '--validity-days': {
        const value = takeValue();
        const days = Number(value);
        if (!value || !Number.isInteger(days) || days <= 0) return usage(`--validity-days needs a positive integer, got ${value ?? 'nothing'}`);
        validityDays = days;
        break;
      }
      default:
        return usage(`unknown argument ${JSON.stringify(arg)}`);
    }
  }
  if (out === undefined) return usage('--out DIR is required');
  return { kind: 'run', out, force, commonName, validityDays };
}

/** Runs `ca create`; argv is what follows `ca create` on the command line. */
export async function runCaCreate(argv: string[], io: CliIo = defaultIo): Promise<number> {
  const args = buildCaCreateArgs(argv);
  if (args.kind === 'help') {
    io.out(CA_CREATE_USAGE);
    return 0;
  }
  if (args.kind === 'usage') {
    io.err(`ca create: ${args.message}\n${CA_CREATE_USAGE}`);
    return 2;
  }
  const existing = [CA_CERT_FILE, CA_KEY_FILE].map((f) => join(args.out, f)).filter((p) => existsSync(p));
  if (existing.length > 0 && !args.force) {
    io.err(`ca create: refusing to overwrite ${existing.join(' and ')} (use --force to replace)\n`);
    return 1;
  }
  try {
    const ca = CertificateAuthority.generate({
      ...(args.commonName !== undefined && { commonName: args.commonName }),
      ...(args.validityDays !== undefined && { validityDays: args.validityDays }),
    });
    const { certPath, keyPath } = ca.writeTo(args.out);
    io.out(`wrote CA certificate ${certPath}\nwrote CA private key ${keyPath}\n`);
    return 0;
  } catch (err) {
    io.err(`ca create: ${errorMessage(err)}\n`);
    return 1;
  }
}
