/**
 * A failure is printed with everything it wraps: Temporal's WorkflowUpdateFailedError and
 * WorkflowFailedError say only that something failed, the reason is in `.cause`. The errors here
 * are the SDK's own classes, nested the way the client receives them from the server.
 */
import { WorkflowFailedError, WorkflowUpdateFailedError } from '@temporalio/client';
import { ActivityFailure, ApplicationFailure, ChildWorkflowFailure, RetryState } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { causeChain, causeChainText } from '../../client/cause-chain';
import { reportError } from '../../client/cli/command';
import { ExitCode } from '../../client/cli/exit-codes';
import { Output } from '../../client/cli/output';

const injected = () => ApplicationFailure.nonRetryable('injected fault: importTpmState before it ran', 'InjectedFault');

function failedUpdate(): WorkflowUpdateFailedError {
  const activity = new ActivityFailure('Activity task failed', 'importTpmState', '7', RetryState.NON_RETRYABLE_FAILURE, 'host-agent@host-a', injected());
  return new WorkflowUpdateFailedError('Workflow Update failed', activity);
}

function failedChildWorkflow(): WorkflowFailedError {
  const child = new ChildWorkflowFailure('default', { workflowId: 'vtpm-instance-x-migrate-r1', runId: 'run' }, 'migrateInstance', RetryState.NON_RETRYABLE_FAILURE, injected());
  return new WorkflowFailedError('Workflow execution failed', child, RetryState.NON_RETRYABLE_FAILURE);
}

/** Where vtpmctl's output goes, kept as text. */
function memoryIo() {
  const io = { out: '', err: '' };
  return { io, streams: { stdout: { write: (t: string) => (io.out += t) }, stderr: { write: (t: string) => (io.err += t) } } };
}

describe('the cause chain of an error', () => {
  it('prints a failed Update with the activity that failed and the failure type and message it failed with', () => {
    expect(causeChainText(failedUpdate())).toBe(
      [
        'WorkflowUpdateFailedError: Workflow Update failed',
        '  caused by ActivityFailure (importTpmState): Activity task failed',
        '  caused by ApplicationFailure (InjectedFault): injected fault: importTpmState before it ran',
      ].join('\n'),
    );
  });

  it('prints a failed workflow with the child workflow that failed', () => {
    expect(causeChain(failedChildWorkflow())).toEqual([
      { name: 'WorkflowFailedError', type: null, message: 'Workflow execution failed' },
      { name: 'ChildWorkflowFailure', type: 'migrateInstance', message: 'Child Workflow execution failed' },
      { name: 'ApplicationFailure', type: 'InjectedFault', message: 'injected fault: importTpmState before it ran' },
    ]);
  });

  it("keeps a gRPC error's details, and stops at a cause that points back up the chain", () => {
    const grpc = Object.assign(new Error('14 UNAVAILABLE'), { details: 'No connection established' });
    const outer = new Error('Failed to query workflow', { cause: grpc });
    (grpc as { cause?: unknown }).cause = outer;
    expect(causeChainText(outer)).toBe('Error: Failed to query workflow\n  caused by Error: 14 UNAVAILABLE: No connection established');
  });

  it('prints a thrown value that is not an Error as it is', () => {
    expect(causeChainText('lost')).toBe('string: lost');
  });
});

describe('vtpmctl reporting an error it did not expect', () => {
  it('prints every level under the error before what to do next, and exits 70', () => {
    const { io, streams } = memoryIo();
    expect(reportError(new Output(streams, false), failedUpdate())).toBe(ExitCode.internal);
    expect(io.err).toBe(
      [
        'vtpmctl: internal error (WorkflowUpdateFailedError): Workflow Update failed',
        '  caused by ActivityFailure (importTpmState): Activity task failed',
        '  caused by ApplicationFailure (InjectedFault): injected fault: importTpmState before it ran',
        'next: this is a vtpmctl bug: report it with the command you ran and this message',
        '',
      ].join('\n'),
    );
  });

  it('puts the levels in the JSON document as error.causes', () => {
    const { io, streams } = memoryIo();
    reportError(new Output(streams, true), failedUpdate());
    expect(JSON.parse(io.out).error).toMatchObject({
      kind: 'internal',
      type: 'WorkflowUpdateFailedError',
      message: 'Workflow Update failed',
      causes: [
        { name: 'ActivityFailure', type: 'importTpmState', message: 'Activity task failed' },
        { name: 'ApplicationFailure', type: 'InjectedFault', message: 'injected fault: importTpmState before it ran' },
      ],
    });
  });
});
