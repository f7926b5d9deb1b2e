/**
 * The custom search attributes operators filter executions by in the Temporal UI and `vtpmctl list`.
 * The stack manager registers them on the server; workflows keep them current.
 */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const VtpmInstance = defineSearchAttributeKey('VtpmInstance', SearchAttributeType.KEYWORD);
export const VtpmProject = defineSearchAttributeKey('VtpmProject', SearchAttributeType.KEYWORD);
export const VtpmHost = defineSearchAttributeKey('VtpmHost', SearchAttributeType.KEYWORD);
export const VtpmOperation = defineSearchAttributeKey('VtpmOperation', SearchAttributeType.KEYWORD);
export const VtpmLifecycleState = defineSearchAttributeKey('VtpmLifecycleState', SearchAttributeType.KEYWORD);
export const VtpmVersion = defineSearchAttributeKey('VtpmVersion', SearchAttributeType.KEYWORD);

export const allSearchAttributes = [
  VtpmInstance,
  VtpmProject,
  VtpmHost,
  VtpmOperation,
  VtpmLifecycleState,
  VtpmVersion,
] as const;
