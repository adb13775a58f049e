/**
 * Writes a fresh pod's IPv4 rules straight into its nf_tables (nft-batch.ts builds the batch, the addon
 * agent/native/inpod-nftables.c sends it from inside the pod's namespace): no iptables-nft-restore process on a
 * captured pod's ADD. What iptables-save and nft list print in the pod is what the process made.
 *
 * Owns: loading the addon, the batch's verdict as a result the caller acts on. Must not know about: which rules
 * (rules.ts), the general install path or the legacy backend (iptables.ts keeps both).
 */
import { createRequire } from 'node:module';
import { buildNftBatch, NftTranslationError } from './nft-batch.ts';

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

/** Applies `restoreText` (rules.ts's fresh-install text, IPv4) to the nf_tables of the namespace at `netns`. */
export function applyFreshRulesOverNetlink(netns: string, restoreText: string): NftApplyResult {
  let batch;
  try {
    batch = buildNftBatch(restoreText);
  } catch (error) {
    if (error instanceof NftTranslationError) return { applied: false, exists: false, reason: error.message };
    throw error;
  }
  const refusal = native.sendNftablesBatch(netns, batch.bytes);
  if (refusal === null) return { applied: true };
  return { applied: false, exists: refusal.code === 'EEXIST', reason: `${batch.describe(refusal.seq)}: ${refusal.code}` };
}
