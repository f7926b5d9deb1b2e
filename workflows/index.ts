/** Every workflow the control worker registers. */
export { probeHosts } from './probe-hosts';
export { collectHoldings, setAsideOrphans } from './audit';
export { hostRecord } from './host-record';
export { instance } from './instance';
export { bootInstance } from './operations/boot';
export { stopInstance, startInstance, rebootInstance } from './operations/power';
export { deleteInstance } from './operations/delete';
export { migrateInstance, confirmMigration, revertMigration } from './operations/migrate';
export { liveMigrateInstance } from './operations/live-migrate';
export { restoreTpmInstance } from './operations/restore-tpm';
export { rebuildInstance } from './operations/rebuild';
export { shelveInstance, unshelveInstance } from './operations/shelve';
