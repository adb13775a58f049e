/**
 * The bookkeeping of a delta-xDS resource type the control plane sends one per Service (the waypoint's HttpRoutes
 * and DestinationPolicy): each resource decoded and checked (a malformed one is NACKed with its reason and the last
 * good value kept), kept under its Service's key (`<namespace>/<hostname>`), moved when a resource of the same name
 * names another Service, dropped when the resource is removed; `onChange` hears every Service whose value changed.
 *
 * Owns: the two maps (value by Service, Service by resource name) and the apply handler. Must not know about: what
 * the values are (the decoder makes them), HTTP, how they are used. (The L7 policies are not kept this way: they
 * are per policy, not per Service, and apply to Services through their targets: authz/policy-table.ts.)
 */
import type { XdsRejection, XdsResourceUpdate } from '../shared/xds/client.ts';

/** A decoded resource: the Service it is for and its value. Throws with a reason when the resource is malformed. */
export type ServiceResourceDecoder<T> = (resource: unknown) => { service: string; value: T };

export class ServiceResourceTable<T> {
  readonly #valueByService = new Map<string, T>();
  readonly #serviceByResourceName = new Map<string, string>();
  readonly #decode: ServiceResourceDecoder<T>;
  readonly #onChange: (service: string) => void;

  constructor(decode: ServiceResourceDecoder<T>, onChange: (service: string) => void = () => {}) {
    this.#decode = decode;
    this.#onChange = onChange;
  }

  /** The value for a Service (`<namespace>/<hostname>`), or undefined when no resource names it. */
  get(serviceKey: string): T | undefined {
    return this.#valueByService.get(serviceKey);
  }

  /** Every Service's value, for config dumps. */
  entries(): IterableIterator<[string, T]> {
    return this.#valueByService.entries();
  }

  /** The delta xDS handler for the type. */
  readonly apply = (added: XdsResourceUpdate<unknown>[], removed: string[]): { rejected?: XdsRejection[] } | undefined => {
    const rejected: XdsRejection[] = [];
    for (const update of added) {
      let decoded: { service: string; value: T };
      try {
        decoded = this.#decode(update.resource);
      } catch (error) {
        rejected.push({ name: update.name, reason: (error as Error).message });
        continue;
      }
      const previous = this.#serviceByResourceName.get(update.name);
      if (previous !== undefined && previous !== decoded.service) {
        this.#valueByService.delete(previous);
        this.#onChange(previous);
      }
      this.#serviceByResourceName.set(update.name, decoded.service);
      this.#valueByService.set(decoded.service, decoded.value);
      this.#onChange(decoded.service);
    }
    for (const name of removed) {
      const service = this.#serviceByResourceName.get(name);
      if (service === undefined) continue;
      this.#serviceByResourceName.delete(name);
      this.#valueByService.delete(service);
      this.#onChange(service);
    }
    return rejected.length > 0 ? { rejected } : undefined;
  };
}
