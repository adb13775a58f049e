/**
 * Pod releases that run after the CNI DEL was answered. A DEL must neither fail nor hold up a pod's removal (Istio's
 * CNI agent answers it at once too: cleaning up after a pod is the node agent's job), so the agent answers as soon as
 * the release is queued, and the release (listeners closed, rules removed, records rewritten) goes on behind it.
 *
 * Owns: the releases in flight by pod uid, so a later capture of the same uid (a recreated sandbox) waits for the
 * release to finish before it starts, and shutdown waits for every one of them. One failure is logged, never thrown
 * at the runtime (its DEL was answered already).
 * Must not know about: what releasing does (the work it is given), CNI or HTTP.
 */
export class PodReleases {
  readonly #inFlightByUid = new Map<string, Promise<void>>();
  readonly #onError: (uid: string, error: Error) => void;

  constructor(onError: (uid: string, error: Error) => void) {
    this.#onError = onError;
  }

  /**
   * Starts `release` for `uid` after any release of the same uid already running, and returns at once. `release` is
   * called synchronously when nothing is in flight for the uid, so whatever it queues first (the capture manager's
   * per-pod queue) is queued before the caller answers.
   */
  start(uid: string, release: () => Promise<void>): void {
    const previous = this.#inFlightByUid.get(uid);
    const run = async (): Promise<void> => {
      try {
        await release();
      } catch (error) {
        this.#onError(uid, error instanceof Error ? error : new Error(String(error)));
      }
    };
    const next = previous === undefined ? run() : previous.then(run);
    this.#inFlightByUid.set(uid, next);
    void next.then(() => {
      if (this.#inFlightByUid.get(uid) === next) this.#inFlightByUid.delete(uid);
    });
  }

  /** Resolves when no release of `uid` is in flight (at once when none is). */
  settled(uid: string): Promise<void> {
    return this.#inFlightByUid.get(uid) ?? Promise.resolve();
  }

  /** How many pods have a release in flight. */
  get size(): number {
    return this.#inFlightByUid.size;
  }

  /** Resolves when every release started so far has finished (shutdown). */
  async drain(): Promise<void> {
    while (this.#inFlightByUid.size > 0) await Promise.all(this.#inFlightByUid.values());
  }
}
