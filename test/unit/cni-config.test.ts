// Unit tests: ambit-cni's network config and CNI environment parsing (cni/config.ts, cni/environment.ts, cni/result.ts).
import test from 'ava';
import { parseConfig } from '../../cni/config.ts';
import { kubernetesPodArgs, parseCniArgs, readEnvironment } from '../../cni/environment.ts';
import { CniError } from '../../cni/errors.ts';
import { podIpsFromResult } from '../../cni/result.ts';
import { DEFAULT_AGENT_SOCKET } from '../../shared/cni-protocol.ts';

const base = { cniVersion: '1.0.0', name: 'pods', type: 'ambit-cni', clusterDir: '/var/lib/ambit/cluster' };

function cniError(t: import('ava').ExecutionContext, fn: () => unknown): CniError {
  const error = t.throws(fn, { instanceOf: CniError });
  return error as CniError;
}

test('a minimal local-mode config gets the default agent socket and log level', (t) => {
  const config = parseConfig(JSON.stringify(base));
  t.is(config.agentSocket, DEFAULT_AGENT_SOCKET);
  t.deepEqual(config.podSource, { mode: 'local', clusterDir: '/var/lib/ambit/cluster' });
  t.is(config.logLevel, 'info');
  t.is(config.prevResult, undefined);
});

test('fields other chained plugins set are tolerated', (t) => {
  const config = parseConfig(JSON.stringify({ ...base, bridge: 'cni0', ipam: { type: 'host-local' }, runtimeConfig: { portMappings: [] } }));
  t.is(config.name, 'pods');
});

test('kubeconfig selects Kubernetes mode', (t) => {
  const { clusterDir: _unused, ...rest } = base;
  t.deepEqual(parseConfig(JSON.stringify({ ...rest, kubeconfig: '/etc/ambit/kubeconfig' })).podSource, { mode: 'kubernetes', kubeconfig: '/etc/ambit/kubeconfig' });
});

test('malformed JSON is a decoding failure (6)', (t) => {
  const error = cniError(t, () => parseConfig('{"cniVersion": '));
  t.is(error.code, 6);
  t.regex(error.message, /cannot decode the network config on stdin as JSON/);
});

test('empty stdin is a decoding failure that says so', (t) => {
  t.is(cniError(t, () => parseConfig('')).details, 'stdin was empty');
});

test('an unsupported cniVersion is incompatible (1) and lists what is supported', (t) => {
  const error = cniError(t, () => parseConfig(JSON.stringify({ ...base, cniVersion: '0.2.0' })));
  t.is(error.code, 1);
  t.regex(error.message, /0\.2\.0.*1\.0\.0/);
});

test('our own fields are validated with invalid-config errors (7) that name the field', (t) => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ ...base, type: 'other' }, /"type" must be "ambit-cni"/],
    [{ ...base, agentSocket: 'relative.sock' }, /"agentSocket" must be an absolute path/],
    [{ ...base, agentSocket: 42 }, /"agentSocket" must be a non-empty string/],
    [{ ...base, kubeconfig: '/k' }, /either "clusterDir".*or "kubeconfig".*not both/],
    [{ cniVersion: '1.0.0', name: 'pods', type: 'ambit-cni' }, /set "clusterDir".*or "kubeconfig"/],
    [{ ...base, logLevel: 'loud' }, /"logLevel" must be one of/],
    [{ ...base, prevResult: [] }, /"prevResult" must be an object/],
    [{ ...base, name: undefined }, /"name"/],
    [{ ...base, cniVersion: undefined }, /"cniVersion" is missing/],
  ];
  for (const [config, message] of cases) {
    const error = cniError(t, () => parseConfig(JSON.stringify(config)));
    t.is(error.code, 7, JSON.stringify(config));
    t.regex(error.message, message);
  }
});

test('CNI_ARGS parses K=V pairs and rejects malformed ones with code 4', (t) => {
  const args = parseCniArgs('IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=u-1;K8S_POD_INFRA_CONTAINER_ID=abc');
  t.deepEqual(kubernetesPodArgs(args), { podNamespace: 'shop', podName: 'web-0', podUid: 'u-1', infraContainerId: 'abc' });
  t.is(parseCniArgs('').size, 0);
  t.is(parseCniArgs('A=b=c').get('A'), 'b=c');
  const error = cniError(t, () => parseCniArgs('IgnoreUnknown=1;garbage'));
  t.is(error.code, 4);
  t.regex(error.message, /"garbage" is not KEY=VALUE/);
});

test('a container without K8S_POD_NAME is not a Kubernetes pod; a name without a namespace is an error', (t) => {
  t.is(kubernetesPodArgs(parseCniArgs('IgnoreUnknown=1')), undefined);
  t.is(cniError(t, () => kubernetesPodArgs(parseCniArgs('K8S_POD_NAME=x'))).code, 4);
});

test('missing CNI variables name the variable (4); DEL accepts an empty CNI_NETNS', (t) => {
  t.regex(cniError(t, () => readEnvironment({})).message, /CNI_COMMAND is not set/);
  t.regex(cniError(t, () => readEnvironment({ CNI_COMMAND: 'FROB' })).message, /CNI_COMMAND=FROB is not supported/);
  const add = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: '/run/netns/x', CNI_IFNAME: 'eth0' };
  t.regex(cniError(t, () => readEnvironment({ ...add, CNI_NETNS: '' })).message, /CNI_NETNS is not set/);
  t.regex(cniError(t, () => readEnvironment({ ...add, CNI_CONTAINERID: undefined })).message, /CNI_CONTAINERID is not set/);
  t.is(readEnvironment({ ...add, CNI_COMMAND: 'DEL', CNI_NETNS: '' }).netns, '');
  t.is(readEnvironment({ CNI_COMMAND: 'VERSION' }).command, 'VERSION');
});

test('pod IPs come from prevResult.ips without prefix length', (t) => {
  t.deepEqual(podIpsFromResult({ ips: [{ address: '10.1.0.5/24' }, { address: 'fd00::5/64' }] }), ['10.1.0.5', 'fd00::5']);
  t.deepEqual(podIpsFromResult({}), []);
  t.is(cniError(t, () => podIpsFromResult({ ips: [{}] })).code, 7);
});

test('spec 1.1.0 configs are accepted; an unknown version (1.2.0) is incompatible (1) and names every supported version', (t) => {
  t.is(parseConfig(JSON.stringify({ ...base, cniVersion: '1.1.0' })).cniVersion, '1.1.0');
  const error = cniError(t, () => parseConfig(JSON.stringify({ ...base, cniVersion: '1.2.0' })));
  t.is(error.code, 1);
  t.regex(error.message, /"1\.2\.0" is not supported by ambit-cni, which supports 0\.3\.0, 0\.3\.1, 0\.4\.0, 1\.0\.0, 1\.1\.0/);
});

test('GC\'s cni.dev/valid-attachments gives the container ids; a malformed list is an invalid config (7)', (t) => {
  const attachments = [{ containerID: 'aaa', ifname: 'eth0' }, { containerID: 'bbb', ifname: 'eth0' }];
  t.deepEqual(parseConfig(JSON.stringify({ ...base, cniVersion: '1.1.0', 'cni.dev/valid-attachments': attachments })).validContainerIds, ['aaa', 'bbb']);
  t.deepEqual(parseConfig(JSON.stringify({ ...base, cniVersion: '1.1.0', 'cni.dev/valid-attachments': [] })).validContainerIds, []);
  t.is(parseConfig(JSON.stringify(base)).validContainerIds, undefined);
  for (const bad of [{}, [{ ifname: 'eth0' }], [{ containerID: '' }], ['aaa']]) {
    t.is(cniError(t, () => parseConfig(JSON.stringify({ ...base, 'cni.dev/valid-attachments': bad }))).code, 7, JSON.stringify(bad));
  }
});

test('statusRequiresAgent defaults to true and must be a boolean', (t) => {
  t.true(parseConfig(JSON.stringify(base)).statusRequiresAgent);
  t.false(parseConfig(JSON.stringify({ ...base, statusRequiresAgent: false })).statusRequiresAgent);
  t.is(cniError(t, () => parseConfig(JSON.stringify({ ...base, statusRequiresAgent: 'no' }))).code, 7);
});

test('STATUS and GC need only CNI_COMMAND (and CNI_PATH), as spec 1.1.0 sets them', (t) => {
  for (const command of ['STATUS', 'GC'] as const) {
    const environment = readEnvironment({ CNI_COMMAND: command, CNI_PATH: '/opt/cni/bin:/usr/lib/cni' });
    t.is(environment.command, command);
    t.deepEqual(environment.path, ['/opt/cni/bin', '/usr/lib/cni']);
  }
});
