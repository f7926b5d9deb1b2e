/** One real Temporal dev server per suite (the project's own CLI binary), and workers inside tests. */
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { NativeConnection, Runtime, DefaultLogger, Worker, type WorkerOptions } from '@temporalio/worker';
import { loadConfig, type Config } from '../../config';
import { allSearchAttributes } from '../../workflows/search-attributes';
import { devServerTuningArgs } from '../../scripts/stack/temporal';

let runtimeInstalled = false;

/** A dev server that keeps its data in a file on a known port, so a test can kill and restart it. */
export interface RestartableServer {
  dbFilename: string;
  port: number;
}

function installTestRuntime(): void {
  if (!runtimeInstalled) {
    // Failure-injection tests make activities fail on purpose; their warnings would drown the output.
    Runtime.install({ logger: new DefaultLogger('ERROR') });
    runtimeInstalled = true;
  }
}

/** A test environment on a Temporal server the test started itself (a cluster): no dev server. */
export async function connectTestEnvironment(
  address: string,
  namespace = 'default',
  tls?: { serverRootCACertificate: Buffer; serverNameOverride: string },
): Promise<TestWorkflowEnvironment> {
  installTestRuntime();
  return TestWorkflowEnvironment.createFromExistingServer({ address, namespace, ...(tls ? { connectionOptions: { tls } } : {}) });
}

export async function createTestEnvironment(config: Config = loadConfig(), restartable?: RestartableServer): Promise<TestWorkflowEnvironment> {
  installTestRuntime();
  return TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: config.temporal.cliPath },
      ip: '127.0.0.1',
      searchAttributes: [...allSearchAttributes],
      extraArgs: devServerTuningArgs(),
      ...(restartable === undefined ? {} : { dbFilename: restartable.dbFilename, port: restartable.port }),
    },
  });
}

/** Runs `body` while a worker with these options polls; the worker stops when `body` settles. */
export async function withWorker<T>(
  env: TestWorkflowEnvironment,
  options: Omit<WorkerOptions, 'connection'>,
  body: () => Promise<T>,
): Promise<T> {
  const worker = await Worker.create({ connection: env.nativeConnection as NativeConnection, ...options });
  return worker.runUntil(body);
}

/** Runs `body` while several workers poll. */
export async function withWorkers<T>(workers: Worker[], body: () => Promise<T>): Promise<T> {
  if (workers.length === 0) return body();
  const [first, ...rest] = workers;
  return first!.runUntil(() => withWorkers(rest, body));
}
