/**
 * Process entry of the ambit CNI plugin (run through the `ambit-cni` wrapper by the container runtime).
 *
 * Owns: reading stdin, printing the single result on stdout, the exit status.
 * Must not know about: any CNI command's logic (plugin.ts).
 */
import { CniErrorCode } from './errors.ts';
import { IMPLEMENTED_CNI_VERSION, runPlugin, type PluginOutput } from './plugin.ts';

async function readStdin(): Promise<string> {
  // VERSION may come with no stdin at all (or a terminal); it needs none.
  if (process.env.CNI_COMMAND === 'VERSION' || process.stdin.isTTY) return '';
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

let output: PluginOutput;
try {
  output = await runPlugin(process.env, await readStdin());
} catch (error) {
  // Only reading stdin can get here (runPlugin turns every failure into a result): still a spec error, no stack.
  const result = { cniVersion: IMPLEMENTED_CNI_VERSION, code: CniErrorCode.IO_FAILURE, msg: `cannot read the network config from stdin: ${(error as Error).message}` };
  output = { stdout: `${JSON.stringify(result)}\n`, exitCode: 1 };
}
process.stdout.write(output.stdout, () => process.exit(output.exitCode));
