/**
 * The deterministic bodies the protocol tests send and expect (test/net/helpers/protocol-*.ts), so either side can
 * check a large body by its hash. Owns: nothing beyond this.
 */
export function patternBytes(size: number): Buffer {
  const body = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) body[i] = (i * 31 + 7) & 0xff;
  return body;
}
