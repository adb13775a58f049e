// Unit tests: the CNI installer's host-install mode (cni/install.ts --host-runtime-dir, cni/host-runtime.ts) on temp
// dirs: the copied runtime runs with no node on PATH and nothing from this checkout, holds only what the plugin
// imports, is not rewritten when nothing changed, is swapped whole when something did, and is removed on uninstall.
import test from 'ava';
import { cp, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import ts from 'typescript';
import type { AmbitPluginEntry } from '../../cni/conflist.ts';
import { computeClosure, CURRENT_LINK, HostRuntimeError, importSpecifiers, installHostRuntime, MANIFEST_NAME } from '../../cni/host-runtime.ts';
import { install, uninstall } from '../../cni/install.ts';
import { run } from '../../runtime/exec.ts';
import { namespaceObject, writeNamespace, writePod } from '../../runtime/cluster-store.ts';

const REPO = path.resolve(import.meta.dirname, '../..');
const VERSION_OUTPUT = '{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}';
/** What a host's container runtime gives a plugin, at most: no node on this PATH. */
const HOST_PATH = '/usr/bin:/bin';
const PREV_RESULT = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', mac: '0a:58:0a:f4:00:05', sandbox: '/run/netns/x' }],
  ips: [{ address: '10.244.0.5/24', gateway: '10.244.0.1', interface: 0 }],
};

async function tempDir(t: import('ava').ExecutionContext, prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

interface Node {
  root: string;
  binDir: string;
  confDir: string;
  clusterDir: string;
  /** Where the host keeps the runtime (what the wrapper names). */
  hostRuntimeDir: string;
  entry: AmbitPluginEntry;
}

async function node(t: import('ava').ExecutionContext): Promise<Node> {
  const root = await tempDir(t, 'ambit-host-runtime-test-');
  const binDir = path.join(root, 'opt/cni/bin');
  const confDir = path.join(root, 'etc/cni/net.d');
  const clusterDir = path.join(root, 'cluster');
  await Promise.all([mkdir(binDir, { recursive: true }), mkdir(confDir, { recursive: true })]);
  await writeFile(path.join(confDir, '10-bridge.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'pods', plugins: [{ type: 'bridge' }] }));
  const entry: AmbitPluginEntry = { type: 'ambit-cni', agentSocket: path.join(root, 'cni.sock'), clusterDir };
  return { root, binDir, confDir, clusterDir, hostRuntimeDir: path.join(root, 'opt/ambit-cni'), entry };
}

async function sizeOf(dir: string): Promise<number> {
  let bytes = 0;
  for (const name of await readdir(dir, { recursive: true })) {
    const info = await lstat(path.join(dir, name));
    if (info.isFile()) bytes += info.size;
  }
  return bytes;
}

const megabytes = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;

test('the CLI copies a runtime the host runs with no node on PATH, and the wrapper names only that runtime', async (t) => {
  const n = await node(t);
  // The installer's container sees the host's /opt/ambit-cni at /host/opt/ambit-cni (a hostPath mount).
  const containerView = path.join(n.root, 'container/host/opt');
  await mkdir(path.dirname(containerView), { recursive: true });
  await symlink(path.join(n.root, 'opt'), containerView);
  const installer = await run(process.execPath, [
    '--no-warnings=ExperimentalWarning',
    path.join(REPO, 'cni/install.ts'),
    '--bin-dir', n.binDir,
    '--conf-dir', n.confDir,
    '--cluster-dir', n.clusterDir,
    '--host-runtime-dir', path.join(containerView, 'ambit-cni'),
    '--host-runtime-path', n.hostRuntimeDir,
  ]);
  t.is(installer.code, 0, installer.stderr);
  t.log(installer.stdout.trim());

  const wrapperFile = path.join(n.binDir, 'ambit-cni');
  const wrapper = await readFile(wrapperFile, 'utf8');
  t.regex(wrapper, new RegExp(`^AMBIT_CNI_HOME='${n.hostRuntimeDir}/current/cni'$`, 'm'));
  t.regex(wrapper, new RegExp(`^AMBIT_NODE='${n.hostRuntimeDir}/current/node'$`, 'm'));
  const absolutePaths = [...wrapper.matchAll(/'(\/[^']*)'/g)].map((match) => match[1] as string);
  t.is(absolutePaths.length, 2);
  for (const named of absolutePaths) t.true(named.startsWith(`${n.hostRuntimeDir}/`), `${named} is in the host's runtime dir`);
  t.false(wrapper.includes(REPO), 'nothing of this checkout');
  t.false(wrapper.includes('/container/'), "nothing of the installer's view");

  const version = await run(wrapperFile, [], { env: { CNI_COMMAND: 'VERSION', PATH: HOST_PATH } });
  t.is(version.code, 0, version.stderr);
  t.is(version.stdout.trim(), VERSION_OUTPUT);
});

test('ADD through the installed copy in local mode passes prevResult through, reading the cluster dir with the copied yaml', async (t) => {
  const n = await node(t);
  await install({ binDir: n.binDir, confDir: n.confDir, entry: n.entry, hostRuntime: { dir: n.hostRuntimeDir } });
  await writeNamespace(n.clusterDir, namespaceObject('plain', {}));
  await writePod(n.clusterDir, { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace: 'plain', uid: 'uid-web' }, spec: { containers: [{ name: 'app' }] } });
  const config = JSON.stringify({ cniVersion: '1.0.0', name: 'pods', ...n.entry, prevResult: PREV_RESULT });
  const env = (cniArgs: string): NodeJS.ProcessEnv => ({
    PATH: HOST_PATH,
    CNI_COMMAND: 'ADD',
    CNI_CONTAINERID: 'c0ffee',
    CNI_NETNS: '/run/netns/ambit-test-web',
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/opt/cni/bin',
    CNI_ARGS: cniArgs,
  });
  const cases: [string, string][] = [
    ['a container that is not a Kubernetes pod', 'IgnoreUnknown=1'],
    ['a pod in a namespace that is not enrolled (agent unreachable)', 'IgnoreUnknown=1;K8S_POD_NAMESPACE=plain;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=uid-web'],
  ];
  for (const [what, cniArgs] of cases) {
    const result = await run(path.join(n.binDir, 'ambit-cni'), [], { env: env(cniArgs), input: config });
    t.is(result.code, 0, `${what}: ${result.stdout}${result.stderr}`);
    t.deepEqual(JSON.parse(result.stdout), PREV_RESULT, what);
  }
});

test.serial('the copy holds only what the plugin needs (measured alone: its size and the install time)', async (t) => {
  const n = await node(t);
  const started = performance.now();
  const { hostRuntime } = await install({ binDir: n.binDir, confDir: n.confDir, entry: n.entry, hostRuntime: { dir: n.hostRuntimeDir } });
  const firstMs = performance.now() - started;
  const againStarted = performance.now();
  await install({ binDir: n.binDir, confDir: n.confDir, entry: n.entry, hostRuntime: { dir: n.hostRuntimeDir } });
  const againMs = performance.now() - againStarted;
  if (hostRuntime === undefined) return t.fail('install() reports the host runtime');

  const current = path.join(n.hostRuntimeDir, CURRENT_LINK);
  t.deepEqual((await readdir(current)).sort(), [MANIFEST_NAME, 'cni', 'node', 'node_modules', 'package.json', 'shared']);
  t.is(await readFile(path.join(current, 'package.json'), 'utf8'), '{"type":"module"}\n');
  const cni = await readdir(path.join(current, 'cni'));
  for (const needed of ['main.ts', 'plugin.ts', 'api-server-lookup.ts', 'kubeconfig.ts']) t.true(cni.includes(needed), `cni/${needed}`);
  for (const installerOnly of ['install.ts', 'host-runtime.ts', 'conflist.ts', 'service-account-kubeconfig.ts', 'ambit-cni']) {
    t.false(cni.includes(installerOnly), `no cni/${installerOnly}`);
  }
  t.deepEqual((await readdir(path.join(current, 'shared'), { recursive: true })).filter((name) => name.endsWith('.ts')).sort(), [
    'cni-protocol.ts',
    'k8s/api-request.ts',
    'k8s/cluster-dir.ts',
    'k8s/enrollment.ts',
    'k8s/objects.ts',
  ]);
  const packages = await readdir(path.join(current, 'node_modules'));
  t.true(packages.includes('pino') && packages.includes('yaml'));
  for (const unwanted of ['@grpc', '@kubernetes', '@peculiar', 'protobufjs', 'ava', 'typescript']) t.false(packages.includes(unwanted), `no ${unwanted}`);

  const nodeBytes = (await stat(path.join(current, 'node'))).size;
  const totalBytes = await sizeOf(path.join(n.hostRuntimeDir, hostRuntime.version));
  t.is(totalBytes, hostRuntime.bytes);
  t.true(totalBytes - nodeBytes < 10e6, `code and packages: ${megabytes(totalBytes - nodeBytes)}`);
  t.log(
    `host runtime: ${hostRuntime.files} files, ${megabytes(totalBytes)} (node ${megabytes(nodeBytes)}, code and ${packages.length} package dirs ${megabytes(totalBytes - nodeBytes)}); ` +
      `first install ${Math.round(firstMs)} ms, unchanged re-install ${Math.round(againMs)} ms`,
  );
});

/** A copy of the plugin's sources to change, with this checkout's node_modules. */
async function sourceTree(t: import('ava').ExecutionContext): Promise<string> {
  const source = await tempDir(t, 'ambit-host-runtime-source-');
  await cp(path.join(REPO, 'cni'), path.join(source, 'cni'), { recursive: true });
  await cp(path.join(REPO, 'shared'), path.join(source, 'shared'), { recursive: true });
  await symlink(path.join(REPO, 'node_modules'), path.join(source, 'node_modules'));
  return source;
}

test('an unchanged install writes nothing; a changed file gives a new version, swapped in whole, and the old one goes', async (t) => {
  const source = await sourceTree(t);
  const runtimeDir = path.join(await tempDir(t, 'ambit-host-runtime-dir-'), 'ambit-cni');
  const options = { runtimeDir, sourceRoot: source, entry: path.join(source, 'cni/main.ts') };
  const manifest = path.join(runtimeDir, CURRENT_LINK, MANIFEST_NAME);

  const first = await installHostRuntime(options);
  t.true(first.changed);
  const before = await stat(manifest);
  const again = await installHostRuntime(options);
  t.false(again.changed);
  t.is(again.version, first.version);
  const after = await stat(manifest);
  t.is(after.ino, before.ino, 'the same manifest file');
  t.is(after.mtimeMs, before.mtimeMs);
  t.deepEqual((await readdir(runtimeDir)).sort(), [CURRENT_LINK, first.version]);

  await writeFile(path.join(source, 'cni/result.ts'), '\n// changed\n', { flag: 'a' });
  const upgrade = installHostRuntime({ ...options, previousVersionGraceMs: 1_000 });
  let settled = false;
  void upgrade.finally(() => (settled = true));
  // While it runs, `current` always names a complete runtime; once it names the new one, the old one is still there.
  let sawSwap = false;
  while (!settled) {
    await stat(manifest).then(
      () => undefined,
      (error: Error) => t.fail(`current has no manifest during the upgrade: ${error.message}`),
    );
    const target = await readlink(path.join(runtimeDir, CURRENT_LINK));
    if (target !== first.version && !sawSwap) {
      sawSwap = true;
      t.true((await readdir(runtimeDir)).includes(first.version), 'the old version outlives the swap by the grace period');
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const upgraded = await upgrade;
  t.true(sawSwap);
  t.true(upgraded.changed);
  t.not(upgraded.version, first.version);
  t.deepEqual(upgraded.removed, [first.version]);
  t.deepEqual((await readdir(runtimeDir)).sort(), [CURRENT_LINK, upgraded.version], 'no old version, no temporary left');
  t.is(await readlink(path.join(runtimeDir, CURRENT_LINK)), upgraded.version);
  t.true((await readFile(path.join(runtimeDir, CURRENT_LINK, 'cni/result.ts'), 'utf8')).endsWith('// changed\n'));
});

test('uninstall with the host runtime dir removes it, the wrapper and our conflist entry', async (t) => {
  const n = await node(t);
  await install({ binDir: n.binDir, confDir: n.confDir, entry: n.entry, hostRuntime: { dir: n.hostRuntimeDir } });
  await uninstall(n.binDir, n.confDir, n.hostRuntimeDir);
  await t.throwsAsync(stat(n.hostRuntimeDir), { code: 'ENOENT' });
  await t.throwsAsync(stat(path.join(n.binDir, 'ambit-cni')), { code: 'ENOENT' });
  t.false((await readFile(path.join(n.confDir, '10-bridge.conflist'), 'utf8')).includes('ambit-cni'));
  await t.notThrowsAsync(uninstall(n.binDir, n.confDir, n.hostRuntimeDir), 'a second uninstall finds nothing to do');
});

/** What TypeScript's own parser says a file loads at run time (type-only imports and `import('x').T` types excluded). */
function typescriptImports(file: string, text: string): string[] {
  const specifiers: string[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) && node.importClause?.isTypeOnly !== true && ts.isStringLiteral(node.moduleSpecifier)) {
      specifiers.push(node.moduleSpecifier.text);
    } else if (ts.isExportDeclaration(node) && !node.isTypeOnly && node.moduleSpecifier !== undefined && ts.isStringLiteral(node.moduleSpecifier)) {
      specifiers.push(node.moduleSpecifier.text);
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const argument = node.arguments[0];
      specifiers.push(argument !== undefined && ts.isStringLiteral(argument) ? argument.text : '<computed>');
    }
    ts.forEachChild(node, visit);
  };
  visit(ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true));
  return specifiers.sort();
}

test("the import scan agrees with TypeScript's parser on every .ts file of the repo, and refuses what it cannot follow", async (t) => {
  const roots = ['agent', 'ambitctl', 'bench', 'cni', 'controlplane', 'demo', 'runtime', 'shared', 'test', 'waypoint'];
  let files = 0;
  for (const root of roots) {
    const names = await readdir(path.join(REPO, root), { recursive: true }).catch(() => []);
    for (const name of names.filter((n) => n.endsWith('.ts') && !n.includes('node_modules'))) {
      const file = path.join(root, name);
      const text = await readFile(path.join(REPO, file), 'utf8');
      t.deepEqual(importSpecifiers(text, file).sort(), typescriptImports(file, text), file);
      files += 1;
    }
  }
  t.true(files > 100);
  t.log(`${files} files compared`);

  t.deepEqual(importSpecifiers("// import a from './a.ts'\n/* import('./b.ts') */\nconst s = '// not a comment';\nconst r = /'/;\nimport c from './c.ts';\n", 'x.ts'), ['./c.ts']);
  const computed = t.throws(() => importSpecifiers('const m = await import(`./${name}.ts`);\n', 'cni/x.ts'), { instanceOf: HostRuntimeError });
  t.is(computed?.code, 'UNFOLLOWABLE_IMPORT');
  t.regex(computed?.message ?? '', /cni\/x\.ts:1: import\(\) of a computed specifier/);
});

test('the closure of cni/main.ts: the plugin files, the dynamic import, and pino and yaml with their dependencies', async (t) => {
  const closure = await computeClosure(REPO, path.join(REPO, 'cni/main.ts'));
  t.true(closure.sourceFiles.includes('cni/api-server-lookup.ts'), 'reached only through import()');
  t.false(closure.sourceFiles.some((file) => file.startsWith('agent/') || file.startsWith('controlplane/')));
  t.true(closure.packageDirs.includes('node_modules/pino') && closure.packageDirs.includes('node_modules/yaml'));
  t.true(closure.packageDirs.includes('node_modules/sonic-boom'), "pino's dependency");
  t.false(closure.packageDirs.some((dir) => /@grpc|@kubernetes/.test(dir)));
});
