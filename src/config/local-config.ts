// The local config file (LOCAL_XDS_PATH / LOCAL_XDS, upstream's local config schema: https://github.com/istio/ztunnel/blob/master/examples/localhost.yaml): YAML text in, validated
// and deep-frozen LocalConfig records out. The records, their defaults and checks are the zod
// schema in schema.ts; this file turns YAML into plain values for it (guarding against alias
// bombs, self-referencing aliases and deep nesting) and turns its first issue into one message.
// Must never: accept an unknown key (upstream uses deny-unknown-fields), guess at a wrong
// type, or return a partial result. Every error names the source, the key path, the problem
// and, where the YAML gives it, the line.
// Deliberate differences from upstream's loader: workload trustDomain defaults to
// cluster.local and serviceAccount to default (as xDS does), uid is derived when omitted,
// and a workload's `services` map is kept on the workload as well as turned into endpoints.

import { readFileSync } from 'node:fs';
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import type { z } from 'zod';
import { ZtError } from '../errors.js';
import { deepFreeze } from './freeze.js';
import { localConfigSchema, pathText, problemOf, repeatedKeys, Tagged } from './schema.js';
import type { LocalConfig } from './types.js';

export const EMPTY_LOCAL_CONFIG: LocalConfig = deepFreeze({ workloads: [], services: [], policies: [] });

// Aliases are expanded while converting; this bounds "billion laughs" documents. (yaml's own
// maxAliasCount guards toJS() only, which this loader never calls: the walk below is the guard.)
const MAX_ALIAS_NODES = 100_000;
// A real config nests about ten levels (policies → rules → clauses → matches → lists). A bound
// far above that keeps the recursive walk and validation below off the end of the stack.
const MAX_DEPTH = 100;

// ------------------------------------------------------------------ YAML → plain values

type Fail = (node: unknown, problem: string) => never;

/**
 * The YAML document as plain values for the schema: maps → objects without prototype (keys as
 * text), sequences → arrays, scalars → their value, locally tagged scalars (`!Exact v`) → Tagged.
 */
class Converter {
  private expanded = 0;
  private aliasDepth = 0;
  private depth = 0;
  private readonly open = new Set<unknown>();
  // yaml's Alias.resolve() searches the whole document on every call; a document that
  // expands one alias node many times (an alias of a list of aliases) must search once per node.
  private readonly targets = new Map<unknown, unknown>();
  constructor(
    private readonly doc: Document,
    private readonly fail: Fail,
  ) {}

  value(node: unknown, at: unknown): unknown {
    if (this.aliasDepth > 0 && ++this.expanded > MAX_ALIAS_NODES) {
      this.fail(at, `aliases expand to more than ${MAX_ALIAS_NODES} nodes (an alias bomb?)`);
    }
    if (node === null || node === undefined) return null;
    if (isAlias(node)) {
      const target = this.resolve(node);
      if (this.open.has(target)) this.fail(node, `alias '*${node.source}' refers to itself`);
      this.aliasDepth++;
      try {
        return this.value(target, node);
      } finally {
        this.aliasDepth--;
      }
    }
    if (this.depth >= MAX_DEPTH) this.fail(node, `nesting is deeper than ${MAX_DEPTH} levels`);
    this.open.add(node);
    this.depth++;
    try {
      return this.plain(node);
    } finally {
      this.depth--;
      this.open.delete(node);
    }
  }

  resolve(node: unknown): unknown {
    if (!isAlias(node)) return node;
    let target = this.targets.get(node);
    if (target === undefined) {
      target = node.resolve(this.doc);
      this.targets.set(node, target);
    }
    return target;
  }

  private plain(node: unknown): unknown {
    if (isMap(node)) {
      const out = Object.create(null) as Record<string, unknown>;
      for (const pair of node.items) {
        const key = this.resolve(pair.key);
        if (!isScalar(key) || key.value === null || typeof key.value === 'object') this.fail(key ?? node, 'map keys must be plain strings or numbers');
        const name = String(key.value);
        // `80` and `"80"` are different YAML keys but the same text: the last one counts, and
        // a port map (where this matters) refuses it.
        if (name in out) repeatedKeys.set(out, name);
        out[name] = this.value(pair.value, key);
      }
      return out;
    }
    if (isSeq(node)) return node.items.map((item) => this.value(item, node));
    if (isScalar(node)) return node.tag?.startsWith('!') ? new Tagged(node.tag, node.value) : node.value;
    return this.fail(node, 'unsupported YAML node');
  }
}

// ------------------------------------------------------------------ issue → message

/** Finds lines in the YAML document for a key path of the plain values. */
class Lines {
  constructor(
    private readonly doc: Document,
    private readonly counter: LineCounter,
    private readonly converter: Converter,
  ) {}

  of(node: unknown): number | undefined {
    const range = (node as { range?: [number, number, number] | null } | null)?.range;
    return range ? this.counter.linePos(range[0]).line : undefined;
  }

  /** The line of the deepest node that exists along `path`. */
  at(path: readonly PropertyKey[]): number | undefined {
    let node: unknown = this.converter.resolve(this.doc.contents);
    let line = this.of(node) ?? 1;
    for (const seg of path) {
      const next = this.child(node, seg);
      if (next === undefined) break;
      node = this.converter.resolve(next.value);
      line = this.of(node) ?? this.of(next.key) ?? line;
    }
    return line;
  }

  /** The line of key `key` in the map at `path`. */
  keyAt(path: readonly PropertyKey[], key: string): number | undefined {
    let node: unknown = this.converter.resolve(this.doc.contents);
    for (const seg of path) {
      node = this.converter.resolve(this.child(node, seg)?.value);
    }
    return this.of(this.child(node, key)?.key) ?? this.at(path);
  }

  private child(node: unknown, seg: PropertyKey): { key: unknown; value: unknown } | undefined {
    if (isSeq(node) && typeof seg === 'number') return { key: undefined, value: node.items[seg] };
    if (!isMap(node)) return undefined;
    let found: { key: unknown; value: unknown } | undefined;
    for (const pair of node.items) {
      const key = this.converter.resolve(pair.key);
      if (isScalar(key) && String(key.value) === String(seg)) found = { key, value: pair.value };
    }
    return found;
  }
}

/** The issue to report: an unknown key first (it often explains the rest), else the first. */
function pick(issues: readonly z.core.$ZodIssue[]): z.core.$ZodIssue | undefined {
  return issues.find((i) => i.code === 'unrecognized_keys') ?? issues[0];
}

function explain(issue: z.core.$ZodIssue, lines: Lines): { path: readonly PropertyKey[]; problem: string; line: number | undefined } {
  const input = (issue as { input?: unknown }).input;
  if (input instanceof Tagged && (issue.code === 'invalid_type' || issue.code === 'invalid_value' || issue.code === 'invalid_format')) {
    const problem = `unexpected tag '${input.tag}' (tags are only used in string matches such as !Exact)`;
    return { path: issue.path, problem, line: lines.at(issue.path) };
  }
  const parent = issue.path.slice(0, -1);
  const last = String(issue.path[issue.path.length - 1]);
  if ((issue.code === 'invalid_type' || issue.code === 'invalid_value') && input === undefined) return { path: parent, problem: issue.message, line: lines.at(parent) };
  if (issue.code === 'invalid_key') return { path: parent, problem: issue.message, line: lines.keyAt(parent, last) };
  if (issue.code === 'unrecognized_keys') return { path: issue.path, problem: issue.message, line: lines.keyAt(issue.path, issue.keys[0] ?? '') };
  const keyLine = issue.code === 'custom' ? issue.params?.['keyLine'] : undefined;
  if (typeof keyLine === 'string') return { path: issue.path, problem: issue.message, line: lines.keyAt(issue.path, keyLine) };
  return { path: issue.path, problem: issue.message, line: lines.at(issue.path) };
}

function configError(source: string, path: readonly PropertyKey[], problem: string, line: number | undefined): ZtError {
  const where = pathText(path);
  return new ZtError('ZT_ERR_CONFIG_INVALID', `${source}: ${where === '' ? '' : `${where}: `}${problem}${line === undefined ? '' : ` (line ${line})`}`);
}

/**
 * Validates local config YAML and returns the frozen records; throws ZT_ERR_CONFIG_INVALID.
 * `source` (a file path, or 'LOCAL_XDS' for inline YAML) starts every error message.
 */
export function parseLocalConfig(text: string, source: string): LocalConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
  const [error] = doc.errors;
  if (error !== undefined) {
    const pos = error.linePos?.[0];
    const where = pos === undefined ? '' : ` at line ${pos.line}, column ${pos.col}`;
    const summary =
      error.code === 'MULTIPLE_DOCS'
        ? 'a local config holds exactly one YAML document (found a second one)'
        : error.code === 'RESOURCE_EXHAUSTION'
          ? // yaml reports its own stack overflow on deeply nested text this way.
            `nesting is too deep (at most ${MAX_DEPTH} levels are accepted)`
          : (error.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '');
    throw new ZtError('ZT_ERR_CONFIG_INVALID', `${source}: invalid YAML${where}: ${summary}`);
  }
  const converter = new Converter(doc, (node, problem) => {
    throw configError(source, [], problem, lines.linePos((node as { range?: [number] } | null)?.range?.[0] ?? 0).line);
  });
  const value = converter.value(doc.contents, doc.contents);
  if (value === null) return EMPTY_LOCAL_CONFIG;
  const result = localConfigSchema.safeParse(value, { error: problemOf, reportInput: true });
  if (!result.success) {
    const issue = pick(result.error.issues);
    const { path, problem, line } = issue === undefined ? { path: [], problem: 'invalid', line: undefined } : explain(issue, new Lines(doc, lines, converter));
    throw configError(source, path, problem, line);
  }
  return deepFreeze(result.data);
}

/** Reads and validates a local config file; a missing or unreadable file is a config error naming it. */
export function loadLocalConfigFile(path: string): LocalConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'no such file' : (err as Error).message;
    throw new ZtError('ZT_ERR_CONFIG_INVALID', `${path}: cannot read the local config file: ${reason}`, { cause: err });
  }
  return parseLocalConfig(text, path);
}
