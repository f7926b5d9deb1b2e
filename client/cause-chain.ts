/**
 * An error and every `.cause` under it. Temporal wraps what actually went wrong: a
 * WorkflowUpdateFailedError or WorkflowFailedError says only "Workflow Update failed" or "Workflow
 * execution failed", and the ActivityFailure, ChildWorkflowFailure and ApplicationFailure that say
 * why sit in `.cause`, one inside the other. Whoever prints an error prints all of them.
 */

export interface CauseLevel {
  /** The error's class, e.g. `WorkflowUpdateFailedError`, `ActivityFailure`, `ApplicationFailure`. */
  name: string;
  /**
   * What the class alone does not say: an ApplicationFailure's failure type (`InjectedFault`), the
   * activity of an ActivityFailure (`startDomain`), the workflow of a ChildWorkflowFailure.
   */
  type: string | null;
  message: string;
}

/** Deep enough for update -> child workflow -> activity -> application failure, with room. */
const MAX_DEPTH = 12;

function stringField(value: object, field: string): string | null {
  const found = (value as Record<string, unknown>)[field];
  return typeof found === 'string' && found !== '' ? found : null;
}

function levelOf(err: unknown): CauseLevel {
  if (!(err instanceof Object)) return { name: typeof err, type: null, message: String(err) };
  const name = stringField(err, 'name') ?? err.constructor?.name ?? 'Error';
  const type = stringField(err, 'type') ?? stringField(err, 'activityType') ?? stringField(err, 'workflowType');
  let message = stringField(err, 'message') ?? '';
  // gRPC errors keep the server's own words in `details`.
  const details = stringField(err, 'details');
  if (details !== null && !message.includes(details)) message = message ? `${message}: ${details}` : details;
  return { name, type: type === name ? null : type, message };
}

/** The error first, then each cause in turn. */
export function causeChain(err: unknown): CauseLevel[] {
  const levels: CauseLevel[] = [];
  const seen = new Set<unknown>();
  for (let current = err; current !== undefined && current !== null && !seen.has(current) && levels.length < MAX_DEPTH; ) {
    seen.add(current);
    levels.push(levelOf(current));
    current = current instanceof Object ? (current as { cause?: unknown }).cause : undefined;
  }
  return levels;
}

function levelText(level: CauseLevel): string {
  return `${level.name}${level.type ? ` (${level.type})` : ''}: ${level.message}`;
}

/** The levels under an error, one line each: `  caused by ActivityFailure (startDomain): ...`. */
export function causedByLines(causes: readonly CauseLevel[]): string[] {
  return causes.map((level) => `  caused by ${levelText(level)}`);
}

/**
 * The whole chain for a person, one level a line:
 *
 *     WorkflowUpdateFailedError: Workflow Update failed
 *       caused by ApplicationFailure (InjectedFault): migrate failed at importTpmState: ...
 */
export function causeChainText(err: unknown): string {
  const [top, ...causes] = causeChain(err);
  return [top ? levelText(top) : String(err), ...causedByLines(causes)].join('\n');
}
