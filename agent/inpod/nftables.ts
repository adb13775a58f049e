/**
 * Writes a fresh pod's rules (each family's) straight into its nf_tables (nft-batch.ts builds the batch, the addon
 * agent/native/inpod-nftables.c sends it from inside the pod's namespace): no iptables-nft-restore process on a
 * captured pod's ADD. What iptables-save and nft list print in the pod is what the process made.
 *
 * Owns: loading the addon, the batch's verdict as a result the caller acts on. Must not know about: which rules
 * (rules.ts), the general install path or the legacy backend (iptables.ts keeps both).
 */
import { createRequire } from 'node:module';
import { buildNftBatch, NftTranslationError, type NftBatch } from './nft-batch.ts';
import type { IpFamily } from './rules.ts';

interface NativeInpodNftables {
  sendNftablesBatch(netns: string, batch: Buffer): null | { code: string; errno: number; seq: number };
}

const require = createRequire(import.meta.url);
const native = require('../native/build/Release/ambit_inpod_nftables.node') as NativeInpodNftables;

/**
 * What became of the batch: applied; refused by the kernel (nothing of it applied: `exists` when a chain it creates
 * was there, i.e. the namespace holds something of ours); or not translatable (the text holds something the
 * translator does not speak; the caller runs iptables-nft-restore instead).
 */
export type NftApplyResult =
  | { applied: true }
  | { applied: false; exists: boolean; reason: string };

/**
 * Built batches by their text. Nothing in a fresh install's batch is pod-specific (names, marks and ports only; the
 * sequence numbers start at 1 in every batch), and an agent renders at most four texts (inbound mode x DNS capture);
 * building one costs 1-2 ms of this thread (several hundred small buffers), the first one in a process far more
 * (66 ms cold at load 7), so every pod after the first reuses the bytes. A bound keeps an unexpected caller from
 * growing it.
 */
const batchesByText = new Map<string, NftBatch | NftTranslationError>();
const key = (restoreText: string, family: IpFamily): string => `${family}\n${restoreText}`;
const MAX_CACHED_BATCHES = 16;

function batchFor(restoreText: string, family: IpFamily): NftBatch | NftTranslationError {
  let batch = batchesByText.get(key(restoreText, family));
  if (batch === undefined) {
    try {
      batch = buildNftBatch(restoreText, family);
    } catch (error) {
      if (!(error instanceof NftTranslationError)) throw error;
      batch = error;
    }
    if (batchesByText.size >= MAX_CACHED_BATCHES) batchesByText.clear();
    batchesByText.set(key(restoreText, family), batch);
  }
  return batch;
}

/** Builds (and keeps) the batch for `restoreText` ahead of the first pod, e.g. at the agent's start. */
export function prepareFreshRulesBatch(restoreText: string, family: IpFamily): void {
  batchFor(restoreText, family);
}

/** Applies `restoreText` (rules.ts's fresh-install text for `family`) to the nf_tables of the namespace at `netns`. */
export function applyFreshRulesOverNetlink(netns: string, restoreText: string, family: IpFamily = 4): NftApplyResult {
  const batch = batchFor(restoreText, family);
  if (batch instanceof NftTranslationError) return { applied: false, exists: false, reason: batch.message };
  const refusal = native.sendNftablesBatch(netns, batch.bytes);
  if (refusal === null) return { applied: true };
  return { applied: false, exists: refusal.code === 'EEXIST', reason: `${batch.describe(refusal.seq)}: ${refusal.code}` };
}
