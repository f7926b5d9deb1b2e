/** The control-plane client: what a cloud control plane imports to drive the engine. */
export { VtpmClient, operationWorkflowId } from './vtpm-client';
export type {
  ConnectOptions,
  HostSummary,
  InstanceOwner,
  InstanceSummary,
  OperationReport,
  OperationRequest,
  OperationSummary,
} from './vtpm-client';
export type { OperationHandle } from './operation-handle';
export type { AuditFinding, AuditOptions, AuditReport } from './audit';
export { connectionSettings, type ConnectionSettings, type Environment, type SettingsOptions } from './settings';
export {
  EngineUnreachable,
  InstanceNotFound,
  InvalidSettings,
  OperationFailed,
  OperationNotFound,
  OperationRefused,
  VtpmClientError,
  type ClientErrorKind,
} from './errors';
export type { OperationStatus, ProgressEvent, Step, StepFailure, Timeline } from './timeline';
export type { InstanceFilter, OperationFilter } from './visibility';
export type {
  AbortRequest,
  BootRequest,
  EvacuateRequest,
  MigrateRequest,
  OperationOutcome,
  RebootRequest,
  RebuildRequest,
  RequestOnly,
  ResizeRequest,
  ShelveRequest,
  StopRequest,
  UnshelveRequest,
} from '../workflows/instance';
