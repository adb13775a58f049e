/**
 * DNS messages the agent writes itself (answers from the mesh, NXDOMAIN, FORMERR, SERVFAIL, NOTIMP), over the
 * `dns-packet` codec, and the few header reads the server does without a full decode.
 *
 * Owns: the shape of the agent's own responses: the question echoed, AA set for names it is the authority on, RD
 * copied, RA set (it recurses through its upstream), the client's EDNS OPT answered with ours, a TTL of 30 s
 * (ztunnel's), and truncation to the client's UDP payload size (TC set, records dropped, the client retries on TCP).
 * Must not know about: sockets, upstreams, how a name was resolved.
 */
import dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, OptAnswer, Question } from 'dns-packet';

/** ztunnel's DEFAULT_TTL_SECONDS: Services change rarely, and 30 s bounds how long a removed VIP is used. */
export const SERVICE_TTL_SECONDS = 30;
/** RFC 1035's UDP limit for a client without EDNS. */
export const CLASSIC_UDP_PAYLOAD = 512;
/**
 * The largest UDP answer the agent sends, whatever the client advertises: 1232 is DNS Flag Day 2020's size that
 * avoids IP fragmentation on every common path; larger answers go over TCP.
 */
export const MAX_UDP_PAYLOAD = 1232;
/** The largest message a two-byte TCP length prefix can frame. */
export const MAX_TCP_MESSAGE = 65_535;
/** A DNS header is 12 bytes; anything shorter cannot even be answered FORMERR. */
export const HEADER_LENGTH = 12;

export const RCODE = Object.freeze({ NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 });

const QR = 0x8000;
const OPCODE_MASK = 0x7800;

/** The query's header fields needed before (or without) decoding the rest. */
export interface QueryHeader {
  id: number;
  /** Raw flags word. */
  flags: number;
}

/** Reads id and flags; undefined when the message is too short to have a header. */
export function readHeader(message: Buffer): QueryHeader | undefined {
  if (message.length < HEADER_LENGTH) return undefined;
  return { id: message.readUInt16BE(0), flags: message.readUInt16BE(2) };
}

export function isResponse(header: QueryHeader): boolean {
  return (header.flags & QR) !== 0;
}

export function opcodeOf(header: QueryHeader): number {
  return (header.flags & OPCODE_MASK) >> 11;
}

/** The UDP payload size the client accepts: its EDNS size (at least 512, at most MAX_UDP_PAYLOAD), 512 without EDNS. */
export function udpLimitOf(query: DecodedPacket): number {
  const opt = ednsOf(query);
  if (opt === undefined) return CLASSIC_UDP_PAYLOAD;
  return Math.min(MAX_UDP_PAYLOAD, Math.max(CLASSIC_UDP_PAYLOAD, opt.udpPayloadSize));
}

function ednsOf(query: DecodedPacket): OptAnswer | undefined {
  for (const record of query.additionals ?? []) if (record.type === 'OPT') return record;
  return undefined;
}

export interface ResponseParts {
  rcode: number;
  authoritative: boolean;
  answers?: Answer[];
}

/**
 * Encodes the response to `query`. With `udpLimit`, an answer that does not fit is sent with TC set and no records
 * (RFC 2181 §9: the client must retry over TCP rather than use a partial answer).
 */
export function encodeResponse(query: DecodedPacket, parts: ResponseParts, udpLimit?: number): Buffer {
  const queryFlags = query.flags ?? 0;
  let flags = (queryFlags & dnsPacket.RECURSION_DESIRED) | dnsPacket.RECURSION_AVAILABLE | parts.rcode;
  if (parts.authoritative) flags |= dnsPacket.AUTHORITATIVE_ANSWER;
  const opt = ednsOf(query);
  const additionals: Answer[] = opt === undefined ? [] : [ownOpt()];
  const packet = {
    type: 'response' as const,
    id: query.id ?? 0,
    flags,
    questions: query.questions ?? [],
    answers: parts.answers ?? [],
    additionals,
  };
  const encoded = dnsPacket.encode(packet);
  if (udpLimit === undefined || encoded.length <= udpLimit) return encoded;
  return dnsPacket.encode({ ...packet, flags: flags | dnsPacket.TRUNCATED_RESPONSE, answers: [] });
}

/** Our EDNS record: the size we accept from an upstream-sized answer, no options. */
function ownOpt(): OptAnswer {
  return { type: 'OPT', name: '.', udpPayloadSize: MAX_UDP_PAYLOAD, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] };
}

/** Address records for `owner`, of the question's family only. */
export function addressRecords(owner: string, type: 'A' | 'AAAA', addresses: readonly string[]): Answer[] {
  const v6 = type === 'AAAA';
  const records: Answer[] = [];
  for (const address of addresses) {
    if (address.includes(':') !== v6) continue;
    records.push({ type, name: owner, ttl: SERVICE_TTL_SECONDS, class: 'IN', data: address });
  }
  return records;
}

export function cnameRecord(name: string, target: string): Answer {
  return { type: 'CNAME', name, ttl: SERVICE_TTL_SECONDS, class: 'IN', data: target };
}

/**
 * A bare response with only a header: for a query whose body could not be decoded (FORMERR) or whose opcode we do
 * not implement (NOTIMP). Echoes the id, RD and opcode; no question (we could not read it).
 */
export function headerOnlyResponse(header: QueryHeader, rcode: number): Buffer {
  const response = Buffer.alloc(HEADER_LENGTH);
  response.writeUInt16BE(header.id, 0);
  response.writeUInt16BE(QR | (header.flags & OPCODE_MASK) | (header.flags & dnsPacket.RECURSION_DESIRED) | rcode, 2);
  return response;
}

/** The question of a query, when it has exactly one of class IN (all the server answers). */
export function singleQuestion(query: DecodedPacket): Question | undefined {
  const questions = query.questions;
  if (questions === undefined || questions.length !== 1) return undefined;
  const question = questions[0]!;
  if (question.class !== undefined && question.class !== 'IN') return undefined;
  return question;
}
