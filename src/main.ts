#!/usr/bin/env node
// Process entry: the `ztunnel-ts` command. Without a subcommand it runs the proxy
// (config from the environment); subcommands cover the certificate authority, the
// kernel redirection, the node agent and the demo. Signals: SIGTERM / SIGINT drain
// gracefully; a second SIGINT exits at once. Exit codes: 0 ok, 1 start-up failure,
// 2 usage error.
import v8 from 'node:v8';
import { App, VERSION } from './app.js';
import { loadConfig } from './config/env.js';
import { errorMessage } from './errors.js';
import { raiseFdLimit } from '../native-shims/index.js';

const USAGE = `ztunnel-ts ${VERSION} — a userspace ztunnel for the Istio ambient mesh

usage:
  ztunnel-ts [run]                       run the proxy (configured by environment variables; see README)
  ztunnel-ts ca create --out DIR         write a new mesh root CA (ca-cert.pem, ca-key.pem)
  ztunnel-ts redirect node|ztunnel ...   program the kernel capture path (--dry-run prints, --remove undoes)
  ztunnel-ts node-agent --config FILE --node NAME
                                         keep the node's ipset and pod routes in step with the config
  ztunnel-ts node-agent --xds [--node NAME]
                                         the same, from istiod's delta xDS (XDS_ADDRESS, XDS_ROOT_CA, AUTH_TOKEN)
  ztunnel-ts control-plane --config FILE --ca-dir DIR --token-file FILE [--listen IP:PORT]
                                         serve FILE over delta xDS and sign CSRs (a local istiod stand-in)
  ztunnel-ts explain SRC DST:PORT [--json] [--src-node-netns NS --src-ztunnel-netns NS --src-admin URL
                    --dst-node-netns NS --dst-ztunnel-netns NS --dst-admin URL | --topology PREFIX]
                                         every hop of a connection with the rule, route or decision deciding it;
                                         stops at the first broken hop with the fix (see explain --help)
  ztunnel-ts demo [--break]              sleep → productpage through two ztunnels in network namespaces (root)
  ztunnel-ts --version | --help
`;

/**
 * V8 starts a full GC once the bytes of buffers allocated since the last one (every socket read,
 * every decrypted TLS record) reach the old generation's growth room; a proxy allocates ~1 GB of
 * them per GB relayed, so at V8's default growth (~1.5× live) it ran 15–35 full GCs per GB per
 * side. Letting the old generation grow to 4× its live size first removes nearly all of them
 * (bench/RESULTS.md §8). Before any thread starts, so the worker threads' heaps get it too; a
 * flag given on the command line or in NODE_OPTIONS wins.
 */
function tuneV8(): void {
  const given = [...process.execArgv, process.env.NODE_OPTIONS ?? ''].some((a) => a.includes('--heap-growing-percent'));
  if (!given) v8.setFlagsFromString('--heap-growing-percent=300');
}

async function run(): Promise<number> {
  let app: App;
  tuneV8();
  try {
    const config = loadConfig(process.env);
    app = new App(config);
    // Two fds per proxied connection: the common soft default (1024) would cap us far below
    // what the hard limit allows.
    try {
      const r = raiseFdLimit();
      const fmt = (n: number): string | number => (n === Infinity ? 'unlimited' : n);
      app.telemetry.log.info(
        { scope: 'app', before: { soft: fmt(r.before.soft), hard: fmt(r.before.hard) }, after: { soft: fmt(r.after.soft), hard: fmt(r.after.hard) } },
        r.raised ? 'raised the open-files limit (RLIMIT_NOFILE)' : 'open-files limit (RLIMIT_NOFILE) already at its hard limit',
      );
    } catch (err) {
      app.telemetry.log.warn({ scope: 'app', error: errorMessage(err) }, 'could not raise the open-files limit (RLIMIT_NOFILE)');
    }
    await app.start();
  } catch (err) {
    process.stderr.write(`ztunnel-ts: cannot start: ${errorMessage(err)}\n`);
    return 1;
  }
  // Run-time errors never take the process down with everyone's connections: count them
  // (ztunnel_ts_unexpected_errors_total), log them once, and go on.
  process.on('unhandledRejection', (err) => app.telemetry.unexpected('unhandledRejection', 'app', err));
  process.on('uncaughtException', (err) => app.telemetry.unexpected('uncaughtException', 'app', err));
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    signals += 1;
    if (sig === 'SIGINT' && signals > 1) process.exit(130);
    void app.drain();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  await app.stopped;
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case undefined:
    case 'run':
      return run();
    case 'ca': {
      const { runCaCreate } = await import('./identity/ca-cli.js');
      if (rest[0] !== 'create') {
        process.stderr.write('usage: ztunnel-ts ca create --out DIR\n');
        return 2;
      }
      return runCaCreate(rest.slice(1));
    }
    case 'redirect': {
      const { runRedirectCli } = await import('./redirect/cli.js');
      return runRedirectCli(rest);
    }
    case 'node-agent': {
      if (rest.includes('--xds')) {
        const { runXdsNodeAgent } = await import('./node-agent-xds.js');
        return runXdsNodeAgent(rest);
      }
      const { runNodeAgentCli } = await import('./redirect/cli.js');
      return runNodeAgentCli(rest);
    }
    case 'control-plane': {
      const { runControlPlaneCli } = await import('./control-plane/cli.js');
      return runControlPlaneCli(rest);
    }
    case 'explain': {
      const { runExplainCli } = await import('./explain/cli.js');
      const { buildTopologyLocator } = await import('./demo/demo.js');
      return runExplainCli(rest, { topology: buildTopologyLocator });
    }
    case 'demo': {
      const { runDemo } = await import('./demo/demo.js');
      return runDemo(rest);
    }
    case '--version':
      process.stdout.write(`${VERSION}\n`);
      return 0;
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(USAGE);
      return 0;
    default:
      process.stderr.write(`ztunnel-ts: unknown command '${cmd}'\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Give async log destinations a moment to flush, then leave even if a handle lingers.
    setTimeout(() => process.exit(code), 200).unref();
  },
  (err: unknown) => {
    process.stderr.write(`ztunnel-ts: ${errorMessage(err)}\n`);
    process.exit(1);
  },
);
