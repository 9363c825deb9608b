// Root-only, end to end: the same kernel-path suite, with both ztunnels and both node agents
// taking workloads, services, policies and certificates from a control plane over delta xDS
// (`ztunnel-ts control-plane` in the first node's netns) instead of the file; the ztunnels run
// two data-path worker threads each (every delta and certificate crosses to them).
import t from 'tap';
import { runKernelPathSuite } from '../helpers/kernel-path-suite.js';

runKernelPathSuite(t, { stem: 'kx', xds: true, workerThreads: 2 });
