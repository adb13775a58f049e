/**
 * Where and when the figures were taken: date, Node and OpenSSL versions, cores, CPU model, kernel, stunnel.
 *
 * Owns: collecting that once per run. Must not know about: the suites.
 */
import { spawnSync } from 'node:child_process';
import os from 'node:os';

export interface MachineInfo {
  date: string;
  node: string;
  openssl: string;
  cpus: number;
  cpuModel: string;
  kernel: string;
  memoryGiB: number;
  stunnel: string;
  /** 1, 5 and 15 minute load averages when the run started: how busy the machine was with other work. */
  loadAverage: number[];
  /** The same when the run ended (set by the runner). */
  loadAverageAfter?: number[];
  quick: boolean;
}

export function describeMachine(quick: boolean): MachineInfo {
  const stunnelBanner = spawnSync('stunnel4', ['-version'], { encoding: 'utf8' });
  const stunnelLine = `${stunnelBanner.stdout ?? ''}${stunnelBanner.stderr ?? ''}`.split('\n').find((line) => line.startsWith('stunnel '));
  const openSslLine = `${stunnelBanner.stdout ?? ''}${stunnelBanner.stderr ?? ''}`.split('\n').find((line) => line.startsWith('Running'));
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    node: process.version,
    openssl: process.versions.openssl ?? 'unknown',
    cpus: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
    kernel: os.release(),
    memoryGiB: Math.round(os.totalmem() / 1024 ** 3),
    stunnel: stunnelLine
      ? `${stunnelLine.split(' on ')[0]}${openSslLine ? ` (${openSslLine.replace(/^Running\s+with\s+/, '').replace(/\s+\d+ \w+ \d+$/, '')})` : ''}`
      : 'stunnel4 not installed',
    loadAverage: os.loadavg(),
    quick,
  };
}
