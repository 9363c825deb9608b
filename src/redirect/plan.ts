// A redirection plan: the ordered commands that set up (or undo) capture, as plain data,
// so they can be printed (--dry-run), unit-tested, and then run by one small executor.
// Must never: go through a shell (every command is file + argv, run with spawn), or run a
// step's `add` when its check says the thing is already there (that is what makes applying
// twice add nothing twice).
// Invariant: a plan is built by pure `build…` functions; only executePlan() touches the host.

import { spawn } from 'node:child_process';

export interface Command {
  file: string;
  args: string[];
  /** Written to stdin (iptables-restore payloads). */
  input?: string;
}

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** "Present" = the check exits 0 and, when given, its stdout contains `includes`. */
export interface Check {
  cmd: Command;
  includes?: string;
}

export type Step =
  /** Idempotent by itself (ip route replace, ipset create -exist, restore of our chains). */
  | { kind: 'run'; what: string; cmd: Command }
  /** Run `cmd` only when `check` says absent. */
  | { kind: 'ensure'; what: string; check: Check; cmd: Command }
  /** Run `cmd` while `check` says present (removes duplicates too), at most a few times. */
  | { kind: 'remove'; what: string; check: Check; cmd: Command }
  /** Run and ignore a failure (the thing may already be gone). */
  | { kind: 'try'; what: string; cmd: Command };

export type Runner = (cmd: Command) => Promise<CommandResult>;

export type PlanOutcome =
  | { ok: true; ran: number }
  | { ok: false; step: Step; result: CommandResult };

const MAX_REMOVE_REPEATS = 8;

/** Runs commands directly, or inside a named netns through `ip netns exec` when given. */
export function createRunner(netns?: string): Runner {
  return (cmd) => runCommand(buildInNetns(cmd, netns));
}

export function buildInNetns(cmd: Command, netns: string | undefined): Command {
  if (netns === undefined) return cmd;
  const wrapped: Command = { file: 'ip', args: ['netns', 'exec', netns, cmd.file, ...cmd.args] };
  if (cmd.input !== undefined) wrapped.input = cmd.input;
  return wrapped;
}

export function runCommand(cmd: Command): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd.file, cmd.args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e) => resolve({ code: 127, stdout: '', stderr: e.message }));
    child.on('close', (code, signal) =>
      resolve({
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      }),
    );
    // A command that exits without reading stdin must not crash us with EPIPE.
    child.stdin.on('error', () => undefined);
    child.stdin.end(cmd.input ?? '');
  });
}

async function isPresent(check: Check, run: Runner): Promise<boolean> {
  const r = await run(check.cmd);
  if (r.code !== 0) return false;
  return check.includes === undefined || r.stdout.includes(check.includes);
}

export async function executePlan(steps: readonly Step[], run: Runner): Promise<PlanOutcome> {
  let ran = 0;
  for (const step of steps) {
    switch (step.kind) {
      case 'run': {
        const r = await run(step.cmd);
        ran++;
        if (r.code !== 0) return { ok: false, step, result: r };
        break;
      }
      case 'ensure': {
        if (await isPresent(step.check, run)) break;
        const r = await run(step.cmd);
        ran++;
        if (r.code !== 0) return { ok: false, step, result: r };
        break;
      }
      case 'remove': {
        for (let i = 0; i < MAX_REMOVE_REPEATS && (await isPresent(step.check, run)); i++) {
          const r = await run(step.cmd);
          ran++;
          if (r.code !== 0) return { ok: false, step, result: r };
        }
        break;
      }
      case 'try':
        await run(step.cmd);
        ran++;
        break;
    }
  }
  return { ok: true, ran };
}

function quote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

export function formatCommand(cmd: Command): string {
  const line = [cmd.file, ...cmd.args].map(quote).join(' ');
  return cmd.input === undefined ? line : `${line} <<'EOF'\n${cmd.input.trimEnd()}\nEOF`;
}

/** Shell-like text of a plan for --dry-run (for reading, not for piping into sh). */
export function formatPlan(steps: readonly Step[]): string {
  const lines: string[] = [];
  for (const step of steps) {
    lines.push(`# ${step.what}`);
    switch (step.kind) {
      case 'run':
        lines.push(formatCommand(step.cmd));
        break;
      case 'ensure':
        lines.push(`# only if absent: ${formatCommand(step.check.cmd)}${step.check.includes ? ` | grep -F '${step.check.includes}'` : ''}`);
        lines.push(formatCommand(step.cmd));
        break;
      case 'remove':
        lines.push(`# while present: ${formatCommand(step.check.cmd)}${step.check.includes ? ` | grep -F '${step.check.includes}'` : ''}`);
        lines.push(formatCommand(step.cmd));
        break;
      case 'try':
        lines.push(`${formatCommand(step.cmd)} || true`);
        break;
    }
  }
  return lines.join('\n') + '\n';
}

export function describeFailure(outcome: Extract<PlanOutcome, { ok: false }>): string {
  const detail = (outcome.result.stderr || outcome.result.stdout).trim();
  return `${outcome.step.what} failed (exit ${outcome.result.code}): ${formatCommand(outcome.step.cmd).split('\n')[0]}${detail ? `: ${detail}` : ''}`;
}
