/**
 * The agent's DNS proxy: one query in, one response out (or nothing, for input that cannot be answered). Service
 * names are answered from the mesh (A and AAAA, through ClusterNames and the narrow ServiceRecords lookup); every
 * other name and record type is forwarded to the upstream resolver and its reply returned unchanged.
 *
 * What a client gets for bad input: a message shorter than a header, or one that is itself a response, is dropped
 * (answering a response could loop two resolvers into each other); an opcode other than QUERY gets NOTIMP; a body
 * that does not decode, or not exactly one question of class IN, gets FORMERR. Upstream trouble gets SERVFAIL. No
 * input throws out of `answer`.
 *
 * The responses the agent builds itself are kept, keyed by the query's bytes after the id (flags, counts, question,
 * EDNS), the transport and the client's namespace, until the Service records change (their generation): a repeated
 * query, which is most of them (every pod asks for the same few names, each resolver asks A and AAAA, every ndots
 * candidate), is answered by copying the bytes and writing the new id, with no decoding, name matching or encoding.
 * Only byte-identical queries hit, so a hit is a query that already decoded cleanly.
 *
 * Owns: that decision per query, the response cache, the concurrency bound on forwarded queries, and the counters.
 * Must not know about: sockets and framing (transport.ts), the pod's rules, how Service records are stored.
 */
import dnsPacket from 'dns-packet';
import type { DecodedPacket } from 'dns-packet';
import type { SocketFactory } from '../inpod/socket-factory.ts';
import { ClusterNames } from './cluster-names.ts';
import type { DnsMetrics, DnsSource, Series, SeriesCache } from './metrics.ts';
import { DnsError } from './errors.ts';
import type { Forwarder, Transport } from './forwarder.ts';
import {
  MAX_TCP_MESSAGE, RCODE, addressRecords, cnameRecord, encodeResponse, headerOnlyResponse, isResponse, opcodeOf, readHeader, singleQuestion, udpLimitOf,
} from './messages.ts';
import type { ServiceRecords } from './service-records.ts';

/**
 * Forwarded queries in flight at once, per server. Each holds a socket in a pod's namespace for up to the upstream
 * timeout; a pod flooding unresolvable names must not exhaust the agent's descriptors. Beyond it: SERVFAIL at once.
 */
export const MAX_FORWARDS_IN_FLIGHT = 1_024;
/**
 * Responses kept per server. Names asked between two changes of the mesh are few (Services times name forms); the
 * bound only stops a client cycling through random names from growing it without limit (it is then cleared).
 */
export const RESPONSE_CACHE_ENTRIES = 10_000;
/** Queries longer than this are not cached (a normal query is 30-100 bytes; EDNS options make it longer). */
const MAX_CACHED_QUERY_BYTES = 512;

interface CachedResponse {
  response: Buffer;
  nxdomain: boolean;
  /** The question's type, for the metrics. */
  type: string;
}

/** The pod a query came from: its namespace (for the search path) and sockets in its network namespace. */
export interface DnsClient {
  namespace: string;
  sockets: SocketFactory;
  /** Its canonical service and revision, for the metrics' source labels. */
  source?: DnsSource;
  /** Its metric series, made on first use (with `metrics` on the server). */
  metricsCache?: SeriesCache;
}

/** Read by the admin view and tests; never logged per query. */
export interface DnsStats {
  /** Answered by the agent from the mesh (including empty answers for a Service without that family). */
  answered: number;
  nxdomain: number;
  forwarded: number;
  /** Forwarded queries that got SERVFAIL because no upstream answered. */
  upstreamFailures: number;
  formerr: number;
  notimp: number;
  /** Input dropped without a reply (too short, a response). */
  dropped: number;
  /** Queries that hit an unexpected error building the answer (SERVFAIL). */
  internalErrors: number;
}

export interface DnsServerOptions {
  /** Cluster domain, `cluster.local` by default. */
  domain: string;
  records: ServiceRecords;
  forwarder: Forwarder;
  /** Told once per upstream failure (rate of these is the operator's concern, not the client's). */
  onUpstreamError?: (error: DnsError) => void;
  /** Prometheus series (ztunnel's DNS metrics); none when absent. */
  metrics?: DnsMetrics;
}

export class DnsServer {
  readonly stats: DnsStats = { answered: 0, nxdomain: 0, forwarded: 0, upstreamFailures: 0, formerr: 0, notimp: 0, dropped: 0, internalErrors: 0 };
  readonly #names: ClusterNames;
  readonly #records: ServiceRecords;
  readonly #forwarder: Forwarder;
  readonly #onUpstreamError: ((error: DnsError) => void) | undefined;
  readonly #metrics: DnsMetrics | undefined;
  #forwardsInFlight = 0;
  readonly #responses = new Map<string, CachedResponse>();
  #responsesGeneration = -1;

  constructor(options: DnsServerOptions) {
    this.#names = new ClusterNames(options.domain);
    this.#records = options.records;
    this.#forwarder = options.forwarder;
    this.#onUpstreamError = options.onUpstreamError;
    this.#metrics = options.metrics;
  }

  /**
   * The response to send back, or undefined to send nothing: at once for everything the agent answers itself (no
   * promise per query on the hot path), a promise only for a forwarded query. Never throws, never rejects.
   */
  answer(message: Buffer, transport: Transport, client: DnsClient): Buffer | undefined | Promise<Buffer> {
    try {
      return this.#answer(message, transport, client);
    } catch {
      // A message the codec decoded but cannot encode back (or a bug): the client gets SERVFAIL, the agent goes on.
      this.stats.internalErrors++;
      const header = readHeader(message);
      return header === undefined ? undefined : headerOnlyResponse(header, RCODE.SERVFAIL);
    }
  }

  #answer(message: Buffer, transport: Transport, client: DnsClient): Buffer | undefined | Promise<Buffer> {
    const header = readHeader(message);
    if (header === undefined || isResponse(header)) {
      this.stats.dropped++;
      return undefined;
    }
    if (opcodeOf(header) !== 0) {
      this.stats.notimp++;
      return headerOnlyResponse(header, RCODE.NOTIMP);
    }
    const key = message.length <= MAX_CACHED_QUERY_BYTES ? cacheKey(message, transport, client.namespace) : undefined;
    if (key !== undefined) {
      const cached = this.#cachedResponse(key);
      if (cached !== undefined) {
        if (cached.nxdomain) this.stats.nxdomain++;
        else this.stats.answered++;
        if (this.#metrics && client.metricsCache) this.#metrics.series(client.metricsCache, client.source, transport, cached.type).requests.inc();
        // A copy: the one in the cache must keep its bytes while this one is sent with another id.
        const response = Buffer.allocUnsafe(cached.response.length);
        cached.response.copy(response);
        response.writeUInt16BE(header.id, 0);
        return response;
      }
    }
    let query: DecodedPacket;
    try {
      query = dnsPacket.decode(message);
    } catch {
      this.stats.formerr++;
      return headerOnlyResponse(header, RCODE.FORMERR);
    }
    // Over TCP the two-byte length bounds a message; an answer larger than that is truncated there too.
    const udpLimit = transport === 'udp' ? udpLimitOf(query) : MAX_TCP_MESSAGE;
    const question = singleQuestion(query);
    if (question === undefined) {
      this.stats.formerr++;
      return encodeResponse(query, { rcode: RCODE.FORMERR, authoritative: false }, udpLimit);
    }
    const series = this.#metrics && client.metricsCache ? this.#metrics.series(client.metricsCache, client.source, transport, question.type) : undefined;
    series?.requests.inc();
    if (question.type === 'A' || question.type === 'AAAA') {
      const resolution = this.#names.resolve(question.name, client.namespace, this.#records);
      if (resolution.kind === 'answer') {
        this.stats.answered++;
        const answers = addressRecords(resolution.owner, question.type, resolution.addresses);
        if (resolution.viaCname) answers.unshift(cnameRecord(question.name, resolution.owner));
        return this.#keep(key, encodeResponse(query, { rcode: RCODE.NOERROR, authoritative: true, answers }, udpLimit), false, question.type);
      }
      if (resolution.kind === 'nxdomain') {
        this.stats.nxdomain++;
        return this.#keep(key, encodeResponse(query, { rcode: RCODE.NXDOMAIN, authoritative: true }, udpLimit), true, question.type);
      }
    }
    return this.#forward(message, query, transport, client, udpLimit, series);
  }

  #cachedResponse(key: string): CachedResponse | undefined {
    const generation = this.#records.generation;
    if (generation !== this.#responsesGeneration) {
      this.#responses.clear();
      this.#responsesGeneration = generation;
      return undefined;
    }
    return this.#responses.get(key);
  }

  #keep(key: string | undefined, response: Buffer, nxdomain: boolean, type: string): Buffer {
    if (key === undefined) return response;
    if (this.#responses.size >= RESPONSE_CACHE_ENTRIES) this.#responses.clear();
    const kept = Buffer.allocUnsafe(response.length);
    response.copy(kept);
    this.#responses.set(key, { response: kept, nxdomain, type });
    return response;
  }

  async #forward(
    message: Buffer, query: DecodedPacket, transport: Transport, client: DnsClient, udpLimit: number | undefined, series: Series | undefined,
  ): Promise<Buffer> {
    this.stats.forwarded++;
    series?.upstreamRequests.inc();
    if (this.#forwardsInFlight >= MAX_FORWARDS_IN_FLIGHT) {
      this.stats.upstreamFailures++;
      series?.upstreamFailures.inc();
      return encodeResponse(query, { rcode: RCODE.SERVFAIL, authoritative: false }, udpLimit);
    }
    this.#forwardsInFlight++;
    const started = series ? performance.now() : 0;
    try {
      const reply = await this.#forwarder.forward(message, transport, client.sockets);
      series?.upstreamDuration.observe((performance.now() - started) / 1000);
      return reply;
    } catch (error) {
      this.stats.upstreamFailures++;
      series?.upstreamFailures.inc();
      const failure = error instanceof DnsError ? error : new DnsError('UPSTREAM_FAILED', String(error), { cause: error });
      this.#onUpstreamError?.(failure);
      return encodeResponse(query, { rcode: RCODE.SERVFAIL, authoritative: false }, udpLimit);
    } finally {
      this.#forwardsInFlight--;
    }
  }
}

/** Everything but the id (bytes 0-1) decides the response: the rest of the query, the transport, the namespace. */
function cacheKey(message: Buffer, transport: Transport, namespace: string): string {
  return `${transport}/${namespace}/${message.toString('latin1', 2)}`;
}
