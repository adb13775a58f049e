/**
 * The DestinationRule's `outlierDetection` for one Service at the waypoint, as Envoy's outlier detector does it:
 * consecutive 5xx answers (`consecutive5xxErrors`) or consecutive gateway errors (502, 503, 504 and failures to
 * connect: `consecutiveGatewayErrors`) eject an endpoint for `baseEjectionTime` times the number of times it has
 * been ejected (capped at Envoy's max_ejection_time default, 300 s; the count drops by one for every `interval` the
 * endpoint stays in, as Envoy's sweep decrements it), unless that would eject more than
 * `maxEjectionPercent` of the endpoints (Envoy compares the share already ejected, so one endpoint can always go).
 * An ejected endpoint comes back at the first `interval` sweep after its time is up; its error counts start over.
 *
 * Owns: per-endpoint counters, ejection state and their counts. Must not know about: HTTP, how endpoints are chosen.
 */
import type { OutlierDetectionSettings } from './policy-table.ts';

/** Envoy's max_ejection_time default: an ejection never lasts longer, however often the endpoint was ejected. */
export const MAX_EJECTION_TIME_MS = 300_000;

/** What the upstream did with one request. */
export type UpstreamOutcome = number | 'connect-failure';

interface EndpointRecord {
  consecutive5xx: number;
  consecutiveGateway: number;
  /** Times ejected (the ejection time's multiplier). */
  ejections: number;
  /** performance.now() when it may come back; 0 when not ejected. */
  ejectedUntil: number;
  /** When it last came back (or its multiplier last shrank): each `interval` since, healthy, takes one off `ejections`. */
  healthySince: number;
}

export interface EjectionView {
  endpoint: string;
  ejections: number;
  ejectedForMs: number;
}

export class OutlierDetector {
  readonly #settings: OutlierDetectionSettings;
  readonly #now: () => number;
  readonly #records = new Map<string, EndpointRecord>();
  readonly #onEject: (endpoint: string) => void;
  #ejectedCount = 0;
  #ejectionsTotal = 0;
  /** The last sweep's time: ejected endpoints come back only at sweeps, every `interval`. */
  #lastSweep: number;

  constructor(settings: OutlierDetectionSettings, options: { now?: () => number; onEject?: (endpoint: string) => void } = {}) {
    this.#settings = settings;
    this.#now = options.now ?? (() => performance.now());
    this.#onEject = options.onEject ?? (() => {});
    this.#lastSweep = this.#now();
  }

  /** Endpoints ejected right now. */
  get ejectedCount(): number {
    this.#sweep();
    return this.#ejectedCount;
  }

  /** Ejections since this detector started. */
  get ejectionsTotal(): number {
    return this.#ejectionsTotal;
  }

  /** Whether `endpoint` is ejected now (it may not be chosen). */
  isEjected(endpoint: string): boolean {
    this.#sweep();
    const record = this.#records.get(endpoint);
    return record !== undefined && record.ejectedUntil !== 0;
  }

  /** Records the outcome of one request to `endpoint`, one of `endpointCount` endpoints of the Service. */
  report(endpoint: string, outcome: UpstreamOutcome, endpointCount: number): void {
    this.#sweep();
    let record = this.#records.get(endpoint);
    const status = outcome === 'connect-failure' ? 503 : outcome;
    if (status < 500) {
      if (record) record.consecutive5xx = record.consecutiveGateway = 0;
      return;
    }
    if (!record) {
      record = { consecutive5xx: 0, consecutiveGateway: 0, ejections: 0, ejectedUntil: 0, healthySince: 0 };
      this.#records.set(endpoint, record);
    }
    if (record.ejectedUntil !== 0) return;
    this.#forgive(record);
    record.consecutive5xx++;
    if (status === 502 || status === 503 || status === 504) record.consecutiveGateway++;
    else record.consecutiveGateway = 0;
    const settings = this.#settings;
    const tripped =
      (settings.consecutive5xxErrors > 0 && record.consecutive5xx >= settings.consecutive5xxErrors) ||
      (settings.consecutiveGatewayErrors > 0 && record.consecutiveGateway >= settings.consecutiveGatewayErrors);
    if (!tripped) return;
    record.consecutive5xx = record.consecutiveGateway = 0;
    if (endpointCount > 0 && (100 * this.#ejectedCount) / endpointCount >= settings.maxEjectionPercent) return;
    record.ejections++;
    record.ejectedUntil = this.#now() + Math.min(settings.baseEjectionTimeMs * record.ejections, Math.max(MAX_EJECTION_TIME_MS, settings.baseEjectionTimeMs));
    this.#ejectedCount++;
    this.#ejectionsTotal++;
    this.#onEject(endpoint);
  }

  /** Forgets endpoints that are gone from the Service. */
  retain(endpoints: ReadonlySet<string>): void {
    for (const [endpoint, record] of this.#records) {
      if (endpoints.has(endpoint)) continue;
      if (record.ejectedUntil !== 0) this.#ejectedCount--;
      this.#records.delete(endpoint);
    }
  }

  view(): EjectionView[] {
    this.#sweep();
    const now = this.#now();
    const ejected: EjectionView[] = [];
    for (const [endpoint, record] of this.#records) if (record.ejectedUntil !== 0) ejected.push({ endpoint, ejections: record.ejections, ejectedForMs: Math.max(0, Math.round(record.ejectedUntil - now)) });
    return ejected;
  }

  /** Takes one ejection off the multiplier for every whole interval the endpoint has stayed in since it came back. */
  #forgive(record: EndpointRecord): void {
    const interval = this.#settings.intervalMs;
    if (record.ejections === 0 || interval <= 0) return;
    const intervals = Math.floor((this.#now() - record.healthySince) / interval);
    if (intervals <= 0) return;
    record.ejections = Math.max(0, record.ejections - intervals);
    record.healthySince += intervals * interval;
  }

  #sweep(): void {
    if (this.#ejectedCount === 0) return;
    const now = this.#now();
    const interval = this.#settings.intervalMs;
    if (interval > 0 && now - this.#lastSweep < interval) return;
    // Sweeps happen on the interval grid, as Envoy's timer fires.
    if (interval > 0) this.#lastSweep += Math.floor((now - this.#lastSweep) / interval) * interval;
    for (const record of this.#records.values()) {
      if (record.ejectedUntil !== 0 && record.ejectedUntil <= now) {
        record.ejectedUntil = 0;
        record.healthySince = now;
        this.#ejectedCount--;
      }
    }
  }
}
