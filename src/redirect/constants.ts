// The names, marks, routing tables and addresses of the seed's node-level capture path
// (ambient-traffic-path blog; upstream's former node-level redirection). One place, so the node side, the
// ztunnel side, the node agent and the tests agree bit for bit.
// Must never: hold anything computed at run time.

export const PODS_IPSET = 'ztunnel-pods-ips';

/** Our own iptables chains, hooked from the built-in chain of the same suffix. */
export const CHAIN_PREFIX = 'ztunnel-';

/** Node side marks (fwmark bits; each is matched with itself as the mask). */
export const NODE_MARKS = {
  /** Packet from a captured pod: route through table 101 to ztunnel's 15001. */
  outbound: 0x100,
  /** Skip all capture tables (goto main). Part of 0x210 and 0x220. */
  skip: 0x200,
  /** Sent by ztunnel with a foreign (pod) source IP; saved as connmark. */
  ztunnelSpoofed: 0x210,
  /** Sent by the host or by ztunnel with its own IP; saved as connmark. */
  hostOrZtunnel: 0x220,
  /** Reply to a ztunnel-spoofed connection: route through table 102 back to ztunnel. */
  returnToZtunnel: 0x040,
} as const;

/** ztunnel side marks, masked with 0xfff. */
export const ZTUNNEL_MARKS = {
  tproxy: 0x400,
  /** "original-source return": replies to spoofed connections, entering on eth0. */
  origSrcReturn: 0x4d3,
  mask: 0xfff,
} as const;

export const NODE_TABLES = { inbound: 100, outbound: 101, returnPath: 102 } as const;
export const ZTUNNEL_TABLES = { local: 100, outbound: 101, inbound: 102 } as const;

export const NODE_RULE_PREFS = { skip: 100, outbound: 101, returnPath: 102, inbound: 103 } as const;
/** The main table's rule; `goto 32766` jumps straight to it. */
export const MAIN_RULE_PREF = 32766;
export const ZTUNNEL_RULE_PREFS = { tproxy: 20000, origSrcReturn: 20003 } as const;

export const TUNNELS = {
  inbound: {
    nodeName: 'istioin',
    ztunnelName: 'pistioin',
    nodeIp: '192.168.126.1',
    ztunnelIp: '192.168.126.2',
    prefixLength: 30,
    geneveId: 1000,
  },
  outbound: {
    nodeName: 'istioout',
    ztunnelName: 'pistioout',
    nodeIp: '192.168.127.1',
    ztunnelIp: '192.168.127.2',
    prefixLength: 30,
    geneveId: 1001,
  },
} as const;

export const GENEVE_UDP_PORT = 6081;

/**
 * The ztunnel netns' connect() port range: the pods' kernel default (32768 60999) moved up by
 * one, so its low end is odd. Linux connect() first tries the ports of the low end's parity
 * (bind(0) the other one), so pods pick even source ports and ztunnel's spoofed upstream
 * sockets (pod IP, port chosen at connect) odd ones: the two legs of a passthrough never share a
 * 4-tuple in the node's conntrack, where simultaneous SYNs of one tuple lose one SYN (1 s RTO).
 * Same size as the default range; the other parity is used only when one is exhausted.
 */
export const ZTUNNEL_LOCAL_PORT_RANGE = { low: 32769, high: 61000 } as const;
/** The kernel default, restored on removal. */
export const KERNEL_LOCAL_PORT_RANGE = { low: 32768, high: 60999 } as const;

export const PROXY_PORTS = { outbound: 15001, inboundPlaintext: 15006, inbound: 15008 } as const;

/** TPROXY `--on-ip`: the seed uses 127.0.0.1; listeners on 0.0.0.0 or [::] match it. */
export const DEFAULT_TPROXY_ON_IP = '127.0.0.1';

export function formatMark(mark: number, mask: number = mark): string {
  return `0x${mark.toString(16)}/0x${mask.toString(16)}`;
}
