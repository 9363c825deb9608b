// iptables plumbing shared by the node and ztunnel sides: backend choice (nft or legacy),
// `iptables-restore --noflush` payloads for our own chains, and the jumps that hook them
// from the built-in chains.
// Must never: flush or edit a chain that is not ours. With --noflush, declaring a
// user-defined chain (`:ztunnel-X - [0:0]`) creates it or empties it, so restoring our
// chains is idempotent; the hook jumps are added only after `-C` says they are missing.
// Invariant: every chain we create is named `ztunnel-<BUILTIN>` and hooked from <BUILTIN>.

import { CHAIN_PREFIX } from './constants.js';
import type { Command, Runner, Step } from './plan.js';

export type IptablesBackend = 'nft' | 'legacy';
export type IptablesTable = 'mangle' | 'nat';
export type BuiltinChain = 'PREROUTING' | 'INPUT' | 'FORWARD' | 'OUTPUT' | 'POSTROUTING';

export interface ChainRules {
  table: IptablesTable;
  builtin: BuiltinChain;
  /** Rule specs without `-A <chain>`, e.g. ['-p', 'tcp', '-j', 'RETURN']. */
  rules: string[][];
}

export function buildChainName(builtin: BuiltinChain): string {
  return `${CHAIN_PREFIX}${builtin}`;
}

export function buildIptablesBinary(backend: IptablesBackend, tool: '' | '-save' | '-restore' = ''): string {
  return `iptables-${backend}${tool}`;
}

/** Counts `-A` lines of an iptables-save dump; the backend with more rules is in use. */
export function countSavedRules(dump: string): number {
  let n = 0;
  for (const line of dump.split('\n')) if (line.startsWith('-A ')) n++;
  return n;
}

/** nft unless legacy holds strictly more rules (nft also when both are empty). */
export function buildBackendChoice(nftRules: number, legacyRules: number): IptablesBackend {
  return legacyRules > nftRules ? 'legacy' : 'nft';
}

export async function detectIptablesBackend(run: Runner): Promise<IptablesBackend> {
  const count = async (backend: IptablesBackend): Promise<number> => {
    const r = await run({ file: buildIptablesBinary(backend, '-save'), args: [] });
    return r.code === 0 ? countSavedRules(r.stdout) : -1;
  };
  return buildBackendChoice(await count('nft'), await count('legacy'));
}

function quoteRuleArg(arg: string): string {
  return /^[\w@%+=:,./!-]+$/.test(arg) ? arg : `"${arg.replace(/(["\\])/g, '\\$1')}"`;
}

/** One restore payload per table, declaring (so emptying) our chains and refilling them. */
export function buildRestorePayload(table: IptablesTable, chains: readonly ChainRules[]): string {
  const mine = chains.filter((c) => c.table === table);
  const lines = [`*${table}`];
  for (const c of mine) lines.push(`:${buildChainName(c.builtin)} - [0:0]`);
  for (const c of mine) {
    for (const rule of c.rules) lines.push(`-A ${buildChainName(c.builtin)} ${rule.map(quoteRuleArg).join(' ')}`);
  }
  lines.push('COMMIT');
  return lines.join('\n') + '\n';
}

function hookArgs(c: ChainRules): string[] {
  return ['-t', c.table, c.builtin, '-j', buildChainName(c.builtin)];
}

function iptablesCmd(backend: IptablesBackend, op: '-C' | '-I' | '-D' | '-F' | '-X', c: ChainRules): Command {
  const [t, table, builtin, j, chain] = hookArgs(c) as [string, string, string, string, string];
  switch (op) {
    case '-C':
    case '-D':
      return { file: buildIptablesBinary(backend), args: ['-w', t, table, op, builtin, j, chain] };
    case '-I':
      // Position 1: our chains must see packets before other components' rules (SNAT, kube-proxy).
      return { file: buildIptablesBinary(backend), args: ['-w', t, table, op, builtin, '1', j, chain] };
    case '-F':
    case '-X':
      return { file: buildIptablesBinary(backend), args: ['-w', t, table, op, chain] };
  }
}

function tablesOf(chains: readonly ChainRules[]): IptablesTable[] {
  return [...new Set(chains.map((c) => c.table))];
}

export function buildIptablesApplySteps(backend: IptablesBackend, chains: readonly ChainRules[]): Step[] {
  const steps: Step[] = [];
  for (const table of tablesOf(chains)) {
    steps.push({
      kind: 'run',
      what: `load our ${table} chains`,
      cmd: { file: buildIptablesBinary(backend, '-restore'), args: ['-w', '--noflush'], input: buildRestorePayload(table, chains) },
    });
  }
  for (const c of chains) {
    steps.push({
      kind: 'ensure',
      what: `hook ${buildChainName(c.builtin)} from ${c.table} ${c.builtin}`,
      check: { cmd: iptablesCmd(backend, '-C', c) },
      cmd: iptablesCmd(backend, '-I', c),
    });
  }
  return steps;
}

export function buildIptablesRemoveSteps(backend: IptablesBackend, chains: readonly ChainRules[]): Step[] {
  const steps: Step[] = [];
  for (const c of chains) {
    steps.push({
      kind: 'remove',
      what: `unhook ${buildChainName(c.builtin)} from ${c.table} ${c.builtin}`,
      check: { cmd: iptablesCmd(backend, '-C', c) },
      cmd: iptablesCmd(backend, '-D', c),
    });
  }
  for (const c of chains) {
    steps.push({ kind: 'try', what: `empty ${c.table} ${buildChainName(c.builtin)}`, cmd: iptablesCmd(backend, '-F', c) });
    steps.push({ kind: 'try', what: `delete ${c.table} ${buildChainName(c.builtin)}`, cmd: iptablesCmd(backend, '-X', c) });
  }
  return steps;
}
